"""Result-file hosting shared by the emulators: real bytes, expiring links, Range, faults."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse


@dataclass
class HostedFile:
    data: bytes
    expires_at: float
    content_type: str = "video/mp4"


@dataclass
class FileHost:
    """Serves registered bytes at ``/files/{name}``.

    Fault knobs: ``truncate_next`` (send a Content-Length for the whole file, then stop after
    half of it), ``expire_all`` (every link answers 403 as an expired signed URL would),
    ``slow_next`` (the next N bodies trickle out in four pieces over ``slow_s`` seconds).
    ``downloads`` counts GETs per name and ``ranges`` records the Range headers seen.
    """

    files: dict[str, HostedFile] = field(default_factory=dict)
    truncate_next: int = 0
    expire_all: bool = False
    slow_next: int = 0
    slow_s: float = 1.0
    downloads: dict[str, int] = field(default_factory=dict)
    ranges: list[str] = field(default_factory=list)

    def add(self, data: bytes, ttl_s: float = 3600.0, suffix: str = ".mp4",
            content_type: str = "video/mp4") -> str:
        name = f"{uuid.uuid4().hex}{suffix}"
        self.files[name] = HostedFile(data, time.time() + ttl_s, content_type)
        return name

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.downloads[name] = self.downloads.get(name, 0) + 1
        hosted = self.files.get(name)
        if hosted is None:
            return Response("not found", status_code=404)
        if self.expire_all or time.time() > hosted.expires_at:
            return Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                            status_code=403, media_type="application/xml")
        data, start, status = hosted.data, 0, 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": hosted.content_type}
        range_header = request.headers.get("range")
        if range_header:
            self.ranges.append(range_header)
            try:
                start = int(range_header.split("=", 1)[1].split("-", 1)[0])
            except (IndexError, ValueError):
                start = 0
            if start >= len(data):
                return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        if self.truncate_next > 0:
            self.truncate_next -= 1
            half = body[: len(body) // 2]

            async def partial():
                yield half
                raise ConnectionResetError("emulated truncated body")

            return StreamingResponse(partial(), status_code=status, headers=headers)
        if self.slow_next > 0:
            self.slow_next -= 1
            pause = self.slow_s / 4

            async def trickle():
                for i in range(4):
                    await asyncio.sleep(pause)
                    yield body[i * len(body) // 4:(i + 1) * len(body) // 4]

            return StreamingResponse(trickle(), status_code=status, headers=headers)
        return Response(body, status_code=status, headers=headers)

"""The files side of the EvoLink emulator (shared/reference/providers.md §5), used by ``evolink.py``.

- ``POST /api/v1/files/upload/{stream,base64,url}``: the files API; links point at ``/files/{name}``.
- ``GET /files/{name}``: real MP4/PNG bytes with expiring links (:class:`FileHost`).

It also answers what the video API must know about links to this emulator's own files
(:func:`hosted_name`, :func:`hosted_media`: gone, wrong type, or a video's length probed with PyAV).
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._files import FileHost

if TYPE_CHECKING:
    from tests.emulators.evolink import EvolinkState

IMAGE_MIMES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
MAX_UPLOAD_BYTES = 100 * 1024 * 1024


@dataclass
class Upload:
    file_id: str
    name: str
    mime_type: str
    size: int
    media_duration_s: float | None = None


class HostedProblem(ValueError):
    """A link to this emulator's files that the service could not use (the message says why)."""


def hosted_name(url: str, base: str) -> str | None:
    """The FileHost name when ``url`` points at this emulator's ``/files/``."""
    if url.startswith(base + "files/"):
        return url[len(base) + len("files/"):]
    return None


async def hosted_media(files: FileHost, url: str, base: str, param: str, media: str) -> float | None:
    """Raise :class:`HostedProblem` for links to this emulator's files that are gone or of the
    wrong type; return a hosted video's length."""
    name = hosted_name(url, base)
    if name is None:
        return None
    hosted = files.files.get(name)
    if hosted is None or time.time() > hosted.expires_at or files.expire_all:
        raise HostedProblem(f"{param}: file could not be downloaded (expired or missing): {url}")
    if media == "video":
        seconds = await run_in_threadpool(_probe_seconds, hosted.data)
        if seconds is None:
            raise HostedProblem(f"{param}: unsupported video file")
        return seconds
    if not hosted.content_type.startswith("image/"):
        raise HostedProblem(f"{param}: unsupported file type {hosted.content_type}")
    return None


def _probe_seconds(data: bytes) -> float | None:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base) if stream.duration else None
    except (av.FFmpegError, IndexError, ValueError):
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def _stored(state: EvolinkState, data: bytes, mime: str, original: str, base: str,
            upload_path: str | None) -> Response:
    if len(data) > MAX_UPLOAD_BYTES:
        return JSONResponse({"success": False, "code": 413, "msg": "File too large (max 100MB)"}, 413)
    if not (mime in IMAGE_MIMES or mime.startswith("video/")):
        return JSONResponse({"success": False, "code": 400, "msg": f"Unsupported file type: {mime}"}, 400)
    if state.upload_refusals:
        code, msg = state.upload_refusals.pop(0)
        return JSONResponse({"success": False, "code": code, "msg": msg})
    suffix = "." + (original.rsplit(".", 1)[-1] if "." in original else mime.split("/")[-1])
    name = state.files.add(data, ttl_s=state.upload_ttl_s, suffix=suffix, content_type=mime)
    file_id = f"file_{uuid.uuid4().hex[:12]}"
    now = time.time()
    state.uploads[name] = Upload(file_id, name, mime, len(data))
    folder = upload_path or ("videos" if mime.startswith("video/") else "images")
    return JSONResponse({"success": True, "code": 200, "msg": "File uploaded successfully", "data": {
        "file_id": file_id, "file_name": name, "original_name": original, "file_size": len(data),
        "mime_type": mime, "upload_path": folder, "file_url": f"{base}files/{name}",
        "download_url": f"{base}api/v1/files/download/{file_id}", "upload_time": _iso(now),
        "expires_at": _iso(now + state.upload_ttl_s)}})


def file_routes(current: Callable[[], EvolinkState], record: Callable[..., None],
                authorised: Callable[[Request], bool],
                upload_fault: Callable[[], Response | None]) -> list[Route]:
    """The files-API and download routes, sharing the app's request log, auth and fault queue.

    ``record(route, request, body=None, form=None)`` logs a request; ``upload_fault()`` answers the
    next queued ``upload`` fault, if any.
    """

    async def upload(request: Request) -> Response:
        kind = request.path_params["kind"]
        base = str(request.base_url)
        if kind not in ("stream", "base64", "url"):
            return JSONResponse({"success": False, "code": 404, "msg": f"Not found: {request.url.path}"}, 404)
        if kind == "stream":
            form = await request.form()
            upload_file = form.get("file")
            fields = {k: v for k, v in form.items() if k != "file"}
            if upload_file is None or isinstance(upload_file, str):
                record("upload", request, form=fields)
                return JSONResponse({"success": False, "code": 400, "msg": "file is required"}, 400)
            data = await upload_file.read()
            fields["file"] = {"filename": upload_file.filename, "content_type": upload_file.content_type,
                              "size": len(data)}
            record("upload", request, form=fields)
            mime = upload_file.content_type or "application/octet-stream"
            original = upload_file.filename or "file"
            path = str(fields.get("upload_path") or fields.get("uploadPath") or "") or None
        else:
            try:
                body = await request.json()
            except ValueError:
                body = None
            record("upload", request, body)
            if not isinstance(body, dict):
                return JSONResponse({"success": False, "code": 400, "msg": "body must be JSON"}, 400)
            path = body.get("upload_path") or body.get("uploadPath")
            original = body.get("file_name") or body.get("fileName") or "file"
            if kind == "base64":
                raw = str(body.get("base64_data") or "")
                mime = "application/octet-stream"
                if raw.startswith("data:") and ";base64," in raw:
                    mime, raw = raw[5:].split(";base64,", 1)
                try:
                    data = base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    return JSONResponse({"success": False, "code": 400, "msg": "invalid base64_data"}, 400)
            else:
                name = hosted_name(str(body.get("file_url") or ""), base)
                hosted = current().files.files.get(name or "")
                if hosted is None:
                    return JSONResponse({"success": False, "code": 400, "msg": "file_url could not be fetched"}, 400)
                data, mime = hosted.data, hosted.content_type
        if not authorised(request):
            return JSONResponse({"success": False, "code": 401, "msg": "Invalid or expired token"}, 401)
        fault = upload_fault()
        if fault is not None:
            return fault
        return _stored(current(), data, mime, original, base, path)

    async def download(request: Request) -> Response:
        record("download", request)
        return await current().files.handle(request)

    return [
        Route("/api/v1/files/upload/{kind:str}", upload, methods=["POST"]),
        Route("/files/{name}", download, methods=["GET"]),
    ]

"""Loopback emulator of Kling's official API for ``kling-video-o1`` (providers.md §6).

- Auth: every request needs ``Authorization: Bearer <token>``. A token is either a JWT signed with
  the secret key of a known access key (HS256; ``iss``, ``nbf``, ``exp`` checked against the
  emulator's clock, so a stale or future token gets 1004 / 1003) or, in gateway mode, one of
  ``bearer_keys``. Refusals use Kling's envelope, codes and HTTP statuses (``_kling_rules.CODES``).
- ``POST /v1/videos/omni-video``: the documented rules (``_kling_rules.check_body``); images given as
  bare Base64 are decoded and checked (jpg/png, >= 300 px, <= 10 MB); links to this emulator's own
  files are checked the same way, and hosted videos are probed (3-10 s, 720-2160 px). A reused
  ``external_task_id`` is refused with 1201. Answers ``task_status: submitted``.
- ``GET /v1/videos/omni-video/{id}``: by ``task_id`` or ``external_task_id``; one state further per
  poll: ``submitted`` -> ``processing`` -> ``succeed`` (real MP4 at ``/files/{name}``,
  ``final_unit_deduction``) or ``failed`` (``task_status_msg``). ``GET /v1/videos/omni-video`` lists.
- ``GET /files/{name}``: result bytes with expiring links (:class:`FileHost`).

[INFERRED] where the docs are silent: an unknown task id answers HTTP 404 with code 1203; results
are served at a reduced size (long side 640 px) in the requested aspect ratio; units per second are
Kling's Video-3O grid (std 0.6, pro 0.8, x1.5 with a video input), an edit billed by the input
video's length rounded to whole seconds.

Fault knobs live on :class:`KlingState` (``app.state.emulator``). Run standalone:
``python -m tests.emulators.kling --port 0 --access-key AK --secret-key SK`` prints
``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._files import FileHost
from tests.emulators._kling_rules import (
    CODES,
    Refused,
    check_body,
    check_jwt,
    check_video,
    image_from_base64,
    image_from_bytes,
)
from tests.emulators._kling_rules import Request as CreateRequest
from tests.emulators._media import mp4_bytes
from tests.emulators._server import run_forever

PATH = "/v1/videos/omni-video"
UNITS_PER_S = {"std": 0.6, "pro": 0.8}
VIDEO_FACTOR = 1.5
SIZES = {"16:9": (640, 360), "9:16": (360, 640), "1:1": (480, 480)}
POLICY_MESSAGE = "Failure to pass the risk control system"


@dataclass
class Fault:
    """One queued failure for a route (``submit``, ``poll``, ``list``): Kling ``code`` (its HTTP
    status unless ``status`` is given). ``accepted``: on submit, the task is created anyway (the
    answer is lost on the way, as when a gateway times out)."""

    code: int
    status: int | None = None
    message: str | None = None
    retry_after: str | None = None
    accepted: bool = False


@dataclass
class Recorded:
    route: str
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    claims: dict[str, Any] | None = None     # the verified JWT claims (None for a bearer key)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Task:
    task_id: str
    request: CreateRequest
    body: dict[str, Any]
    created_ms: int
    seconds: float
    size: tuple[int, int]
    units: float
    outcome: str = "succeed"                  # "succeed", "failed:<msg>" or "status:<odd status>"
    step: int = 0
    videos: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class KlingState:
    """Tasks, every request seen and the fault knobs.

    Knobs: ``fail(route, code)`` queues envelope errors (``retry_after`` adds the header);
    ``malformed[route]`` / ``truncated[route]`` (the next N answers are not JSON / stop half-way,
    after the work is done); ``slow[route]`` (seconds to hold the next answer, after the work);
    ``task_failures`` (``task_status_msg`` of the next tasks to fail); ``odd_statuses``;
    ``concurrency`` (1303 once that many tasks are unfinished); ``files.truncate_next`` /
    ``files.expire_all`` / ``result_ttl_s`` (download faults); ``clock_offset_s`` (the emulator's
    clock against the caller's).
    """

    access_keys: dict[str, str] = field(default_factory=dict)   # access key -> secret key
    bearer_keys: set[str] = field(default_factory=set)          # gateway mode
    files: FileHost = field(default_factory=FileHost)
    tasks: dict[str, Task] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    task_failures: list[str] = field(default_factory=list)
    odd_statuses: list[str] = field(default_factory=list)
    concurrency: int | None = None
    result_ttl_s: float = 30 * 24 * 3600.0
    clock_offset_s: float = 0.0
    strict_fields: bool = True

    def fail(self, route: str, code: int, *, times: int = 1, **overrides: Any) -> None:
        for _ in range(times):
            self.faults.setdefault(route, []).append(Fault(code, **overrides))

    def host(self, data: bytes, base_url: str, *, suffix: str = ".mp4", content_type: str = "video/mp4") -> str:
        """Register bytes as a public URL the caller can pass (and this emulator can check)."""
        name = self.files.add(data, ttl_s=24 * 3600.0, suffix=suffix, content_type=content_type)
        return f"{base_url.rstrip('/')}/files/{name}"

    def of(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def count(self, route: str) -> int:
        return len(self.of(route))

    def by_external_id(self, external: str) -> Task | None:
        return next((t for t in self.tasks.values() if t.request.external_task_id == external), None)

    def unfinished(self) -> int:
        return sum(1 for t in self.tasks.values() if t.step < 2)


def envelope(code: int, message: str, data: Any = None, status: int | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": f"req-{random.getrandbits(48):012x}"}
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status or (200 if code == 0 else CODES[code][0]), headers=headers)


def refused(exc: Refused) -> JSONResponse:
    return envelope(exc.code, exc.message)


def create_app(state: KlingState | None = None) -> Starlette:
    """The emulator; its state is ``app.state.emulator`` (read per request, so tests may swap it)."""

    def current() -> KlingState:
        return app.state.emulator

    def authorise(request: Request) -> dict[str, Any] | None:
        auth = request.headers.get("authorization", "")
        if not auth.strip():
            raise Refused(1001)
        if not auth.startswith("Bearer "):
            raise Refused(1002, "Authorization is invalid: use Bearer <token>")
        token = auth[len("Bearer "):].strip()
        if token in current().bearer_keys:
            return None
        return check_jwt(token, current().access_keys, time.time() + current().clock_offset_s)

    async def begin(route: str, request: Request, body: Any = None) -> Response | None:
        """Record the request; the auth refusal or queued fault it gets, if any."""
        record = Recorded(route, request.method, request.url.path, dict(request.headers), body)
        current().requests.append(record)
        try:
            record.claims = authorise(request)
        except Refused as exc:
            return refused(exc)
        return None

    def pop_fault(route: str) -> Fault | None:
        queue = current().faults.get(route) or []
        return queue.pop(0) if queue else None

    def fault_response(fault: Fault) -> Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        return envelope(fault.code, fault.message or CODES[fault.code][1], status=fault.status, headers=headers)

    async def deliver(route: str, response: JSONResponse) -> Response:
        """Apply the answer-side knobs (slow, malformed, truncated) to a response of finished work."""
        state = current()
        delay = state.slow.pop(route, 0.0)
        if delay:
            await asyncio.sleep(delay)
        if state.malformed.get(route, 0) > 0:
            state.malformed[route] -= 1
            return Response('{"code":0,"message":"SUCCEED","data":{"task_id":', media_type="application/json")
        if state.truncated.get(route, 0) > 0:
            state.truncated[route] -= 1
            return _Truncated(response.body)
        return response

    async def media_of(url: str, base: str) -> tuple[bytes, str] | None:
        """The bytes behind a link to this emulator's own files (None for any other link)."""
        prefix = base + "files/"
        if not url.startswith(prefix):
            return None
        hosted = current().files.files.get(url[len(prefix):])
        if hosted is None or time.time() > hosted.expires_at or current().files.expire_all:
            raise Refused(1201, f"the file could not be downloaded: {url}")
        return hosted.data, hosted.content_type

    async def build_task(req: CreateRequest, body: dict[str, Any], base: str) -> Task:
        first = None
        for url, kind in req.images:
            if url.startswith(("http://", "https://")):
                hosted = await media_of(url, base)
                image = await run_in_threadpool(image_from_bytes, hosted[0], "image_url") if hosted else None
            else:
                image = await run_in_threadpool(image_from_base64, url)
            if kind == "first_frame":
                first = image
        seconds, video_size = float(req.duration or 5), None
        if req.video is not None:
            hosted = await media_of(req.video.url, base)
            if hosted is not None:
                length, width, height = await run_in_threadpool(_probe, hosted[0])
                check_video(length, width, height)
                video_size = (width, height)
                if req.duration is None:
                    seconds = length
        if req.aspect_ratio:
            aspect = req.aspect_ratio
        elif req.duration is None:  # an edit follows the input video
            aspect = _closest_aspect(video_size)
        else:  # image-to-video follows the first frame
            aspect = _closest_aspect((first.width, first.height) if first else None)
        rate = UNITS_PER_S[req.mode] * (VIDEO_FACTOR if req.video is not None else 1.0)
        billed = round(seconds) if req.duration is None else req.duration
        now_ms = int(time.time() * 1000)
        task_id = str(random.randint(10**17, 10**18 - 1))
        return Task(task_id, req, body, now_ms, seconds, SIZES[aspect], round(rate * billed, 2))

    async def submit(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        early = await begin("submit", request, body)
        if early is not None:
            return early
        state = current()
        fault = pop_fault("submit")
        if fault is not None and not fault.accepted:
            return fault_response(fault)
        try:
            req = check_body(body, state.strict_fields)
            if req.external_task_id and state.by_external_id(req.external_task_id):
                raise Refused(1201, f"external_task_id {req.external_task_id} already exists")
            if state.concurrency is not None and state.unfinished() >= state.concurrency:
                raise Refused(1303)
            task = await build_task(req, body, str(request.base_url))
        except Refused as exc:
            return refused(exc)
        if state.task_failures:
            task.outcome = "failed:" + state.task_failures.pop(0)
        elif state.odd_statuses:
            task.outcome = "status:" + state.odd_statuses.pop(0)
        state.tasks[task.task_id] = task
        if fault is not None:
            return fault_response(fault)
        return await deliver("submit", envelope(0, "SUCCEED", task_json(task, "submitted")))

    def task_json(task: Task, status: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task_id": task.task_id, "task_status": status,
            "task_info": {"external_task_id": task.request.external_task_id or ""},
            "created_at": task.created_ms, "updated_at": int(time.time() * 1000),
        }
        if status == "failed":
            out["task_status_msg"] = task.outcome[len("failed:"):]
        if status == "succeed":
            out["task_result"] = {"videos": task.videos}
            out["watermark_info"] = {"enabled": False}
            out["final_unit_deduction"] = f"{task.units:g}"
        return out

    async def advance(task: Task, base: str) -> dict[str, Any]:
        step, task.step = task.step, min(task.step + 1, 2)
        if step == 0:
            return task_json(task, "submitted")
        if step == 1:
            return task_json(task, "processing")
        if task.outcome.startswith("status:"):
            return task_json(task, task.outcome[len("status:"):])
        if task.outcome.startswith("failed:"):
            return task_json(task, "failed")
        if not task.videos:
            width, height = task.size
            data = await run_in_threadpool(mp4_bytes, task.seconds, width, height)
            name = current().files.add(data, ttl_s=current().result_ttl_s)
            task.videos = [{"id": f"v-{task.task_id}", "url": f"{base}files/{name}",
                            "watermark_url": "", "duration": f"{round(task.seconds)}"}]
        return task_json(task, "succeed")

    async def poll(request: Request) -> Response:
        early = await begin("poll", request)
        if early is not None:
            return early
        fault = pop_fault("poll")
        if fault is not None:
            return fault_response(fault)
        ref = request.path_params["task_ref"]
        task = current().tasks.get(ref) or current().by_external_id(ref)
        if task is None:
            return envelope(1203, f"task not found: {ref}")
        return await deliver("poll", envelope(0, "SUCCEED", await advance(task, str(request.base_url))))

    async def listing(request: Request) -> Response:
        early = await begin("list", request)
        if early is not None:
            return early
        try:
            page, size = int(request.query_params.get("pageNum", 1)), int(request.query_params.get("pageSize", 30))
        except ValueError:
            return refused(Refused(1201, "pageNum and pageSize must be integers"))
        if not (1 <= page <= 1000 and 1 <= size <= 500):
            return refused(Refused(1201, "pageNum must be 1-1000 and pageSize 1-500"))
        tasks = list(current().tasks.values())[::-1][(page - 1) * size:page * size]
        status = {0: "submitted", 1: "processing"}
        data = [task_json(t, status.get(t.step) or _final_status(t)) for t in tasks]
        return envelope(0, "SUCCEED", data)

    async def download(request: Request) -> Response:
        current().requests.append(Recorded("download", request.method, request.url.path, dict(request.headers)))
        return await current().files.handle(request)

    app = Starlette(routes=[
        Route(PATH, submit, methods=["POST"]),
        Route(PATH, listing, methods=["GET"]),
        Route(PATH + "/{task_ref}", poll, methods=["GET"]),
        Route("/files/{name}", download, methods=["GET"]),
    ])
    app.state.emulator = state or KlingState()
    return app


def _final_status(task: Task) -> str:
    if task.outcome.startswith("status:"):
        return task.outcome[len("status:"):]
    return "failed" if task.outcome.startswith("failed:") else "succeed"


def _closest_aspect(size: tuple[int | None, int | None] | None) -> str:
    if not size or not size[0] or not size[1]:
        return "16:9"
    ratio = size[0] / size[1]
    return min(SIZES, key=lambda a: abs(SIZES[a][0] / SIZES[a][1] - ratio))


def _probe(data: bytes) -> tuple[float, int, int]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        return seconds, stream.codec_context.width, stream.codec_context.height


class _Truncated(Response):
    """Announces the whole body's Content-Length, sends half of it, then drops the connection."""

    def __init__(self, body: bytes) -> None:
        super().__init__(status_code=200, media_type="application/json")
        self._full = body
        self.headers["content-length"] = str(len(body))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self._full[: len(self._full) // 2], "more_body": True})
        raise ConnectionResetError("emulated truncated body")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--access-key", default="ak-emulator")
    parser.add_argument("--secret-key", default="sk-emulator")
    parser.add_argument("--api-key", default=None, help="also accept this bearer key (gateway mode)")
    args = parser.parse_args(argv)
    state = KlingState(access_keys={args.access_key: args.secret_key},
                       bearer_keys={args.api_key} if args.api_key else set())
    run_forever(create_app(state), args.host, args.port)


if __name__ == "__main__":
    main()

"""Loopback emulator of EvoLink's Kling O1 API and files API (shared/reference/providers.md §5).

One Starlette app serves both roots, so tests can point ``KLING_MCP_EVOLINK_BASE_URL`` and
``KLING_MCP_EVOLINK_FILES_URL`` at the same base:

- ``POST /v1/videos/generations``: validates the documented schemas of ``kling-o1-image-to-video``,
  ``kling-o1-video-edit`` and ``kling-o1-video-edit-fast``; probes hosted input videos with PyAV and
  rejects out-of-range lengths with 400 ``invalid_parameters``; answers the documented task object.
- ``GET /v1/tasks/{id}``: 400 ``invalid_task_id`` without the ``task-unified-`` prefix, 404
  ``task_not_found`` for unknown ids; otherwise the task, one state further per poll:
  ``pending`` -> ``processing`` (50) -> ``completed`` (``results``) or ``failed`` (``error``).
- ``POST /api/v1/files/upload/{stream,base64,url}``: the files API; links point at ``/files/{name}``.
- ``GET /files/{name}``: real MP4/PNG bytes with expiring links (:class:`FileHost`).

The files side (both last routes and the checks on links to hosted files) lives in ``_evolink_files.py``.

Fault knobs live on :class:`EvolinkState` (``app.state.emulator``). Deliberate strictness beyond
the docs: with ``strict_fields`` (default) fields outside the documented schema are refused, so an
adapter that sends e.g. ``duration`` to an edit model fails loudly.

Run standalone: ``python -m tests.emulators.evolink --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._evolink_files import IMAGE_MIMES as IMAGE_MIMES  # re-exported
from tests.emulators._evolink_files import MAX_UPLOAD_BYTES as MAX_UPLOAD_BYTES  # re-exported
from tests.emulators._evolink_files import HostedProblem, Upload, file_routes, hosted_media
from tests.emulators._files import FileHost
from tests.emulators._media import mp4_bytes
from tests.emulators._server import run_forever

TASK_PREFIX = "task-unified-"
MODEL_I2V = "kling-o1-image-to-video"
MODEL_EDIT = "kling-o1-video-edit"
MODEL_EDIT_FAST = "kling-o1-video-edit-fast"
INPUT_VIDEO_S = {MODEL_EDIT: (3.0, 10.0), MODEL_EDIT_FAST: (6.0, 20.0)}
FIELDS = {
    MODEL_I2V: {"model", "prompt", "image_urls", "aspect_ratio", "duration", "callback_url"},
    MODEL_EDIT: {"model", "prompt", "video_urls", "image_urls", "keep_original_sound", "callback_url"},
}
FIELDS[MODEL_EDIT_FAST] = FIELDS[MODEL_EDIT]
ASPECTS = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}
I2V_CREDITS_PER_S = 8.064
EDIT_CREDITS_PER_S = round(0.176 * 7.2036 / 0.1, 4)   # $0.176/s at $0.1 = 7.2036 credits
MAX_PROMPT = 5000

# Documented example bodies per HTTP status (kling-o1-*.json, get-task-detail.json).
HTTP_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request", "Invalid request parameters", "invalid_request_error"),
    401: ("unauthorized", "Invalid or expired token", "authentication_error"),
    402: ("insufficient_quota", "Insufficient quota. Please top up your account.", "insufficient_quota"),
    403: ("model_access_denied", "Token does not have access to model: {model}", "invalid_request_error"),
    404: ("task_not_found", "Task not found or expired", "not_found_error"),
    429: ("rate_limit_exceeded", "Too many requests, please try again later", "rate_limit_error"),
    500: ("internal_error", "Internal server error", "api_error"),
    502: ("upstream_error", "Upstream service error", "upstream_error"),
    503: ("service_unavailable", "No available channel for the requested model", "api_error"),
}
TASK_ERROR_MESSAGES = {
    "content_policy_violation": "Content policy violation.\nYour request was blocked by safety filters...",
    "invalid_parameters": "Invalid parameters: Video duration must be between 3-10 seconds",
    "quota_exceeded": "Rate limit or quota exceeded, please reduce request frequency",
    "generation_timeout": "Task processing timed out, please retry later",
    "service_unavailable": "Service temporarily unavailable",
    "resource_exhausted": "Upstream resources temporarily depleted",
}


@dataclass
class Fault:
    """One queued HTTP failure for a route (``submit``, ``poll`` or ``upload``)."""

    status: int
    code: str | int | None = None
    message: str | None = None
    type: str | None = None
    param: str | None = None
    retry_after: str | None = None


@dataclass
class Recorded:
    route: str
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    body: dict[str, Any]
    created: int
    id: str
    model: str
    credits: float
    video_duration: int
    size: tuple[int, int]
    seconds: float
    outcome: str = "completed"          # "completed", a task error code, or "status:<odd status>"
    step: int = 0
    results: list[str] = field(default_factory=list)


@dataclass
class EvolinkState:
    """Tasks, uploads, every request seen, and the fault knobs.

    Knobs: ``faults[route]`` (queued HTTP errors, see :meth:`fail`), ``malformed[route]`` (the
    next N answers are not JSON), ``task_errors`` (error codes the next tasks fail with),
    ``odd_statuses`` (statuses the next tasks report instead of finishing), ``upload_refusals``
    (files-API refusals sent inside an HTTP 200), ``files.truncate_next`` / ``files.expire_all``
    (download faults), ``result_ttl_s`` / ``upload_ttl_s`` (link lifetimes).
    """

    api_key: str | None = None            # when set, the bearer token must equal it
    files: FileHost = field(default_factory=FileHost)
    tasks: dict[str, Task] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)     # hosted file name -> upload
    requests: list[Recorded] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    task_errors: list[str] = field(default_factory=list)
    odd_statuses: list[str] = field(default_factory=list)
    upload_refusals: list[tuple[int, str]] = field(default_factory=list)
    result_ttl_s: float = 24 * 3600.0
    upload_ttl_s: float = 72 * 3600.0
    strict_fields: bool = True

    def fail(self, route: str, status: int, *, times: int = 1, **overrides: Any) -> None:
        """Queue ``times`` HTTP ``status`` answers on ``route`` (documented bodies unless overridden)."""
        for _ in range(times):
            self.faults.setdefault(route, []).append(Fault(status, **overrides))

    def host(self, data: bytes, base_url: str, *, suffix: str = ".mp4", content_type: str = "video/mp4",
             ttl_s: float | None = None) -> str:
        """Register bytes the service can fetch (as a user's public URL would be); return the URL."""
        name = self.files.add(data, ttl_s=ttl_s or self.upload_ttl_s, suffix=suffix, content_type=content_type)
        return f"{base_url.rstrip('/')}/files/{name}"

    def count(self, route: str) -> int:
        return sum(1 for r in self.requests if r.route == route)

    def of(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]


class _Refused(Exception):
    def __init__(self, status: int, code: str | int, message: str, type_: str, param: str | None = None):
        super().__init__(message)
        self.response = _error(status, code, message, type_, param)


def _error(status: int, code: str | int, message: str, type_: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    err: dict[str, Any] = {"code": code, "message": message, "type": type_}
    if param:
        err["param"] = param
    return JSONResponse({"error": err}, status_code=status, headers=headers)


def _invalid(message: str, param: str | None = None, code: str = "invalid_request") -> _Refused:
    return _Refused(400, code, message, "invalid_request_error", param)


def _fault_response(fault: Fault, route: str, model: str = "") -> Response:
    code, message, type_ = HTTP_ERRORS.get(fault.status, ("error", "Error", "api_error"))
    if route == "poll" and fault.status == 429:
        type_ = "evo_api_error"
    headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
    if route == "upload":
        body = {"success": False, "code": fault.code or fault.status,
                "msg": fault.message or message.format(model=model or "unknown")}
        return JSONResponse(body, status_code=fault.status, headers=headers)
    return _error(fault.status, fault.code or code, (fault.message or message).format(model=model or "unknown"),
                  fault.type or type_, fault.param, headers)


def _task_id(now: int) -> str:
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    return f"{TASK_PREFIX}{now}-{suffix}"


def create_app(state: EvolinkState | None = None) -> Starlette:
    """The emulator app; its state (and fault knobs) is ``app.state.emulator``.

    Handlers read ``app.state.emulator`` on every request, so a test may swap in a fresh state
    between tests while one server keeps running.
    """

    def current() -> EvolinkState:
        return app.state.emulator

    def record(route: str, request: Request, body: Any = None, form: dict[str, Any] | None = None) -> None:
        current().requests.append(Recorded(route, request.method, request.url.path, dict(request.headers),
                                           body, form or {}))

    def authorised(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return bool(token) and (current().api_key is None or token == current().api_key)

    def pop_fault(route: str) -> Fault | None:
        queue = current().faults.get(route) or []
        return queue.pop(0) if queue else None

    def malformed(route: str) -> Response | None:
        if current().malformed.get(route, 0) > 0:
            current().malformed[route] -= 1
            return Response('{"id": "task-unified-', media_type="application/json")
        return None

    async def check_hosted(url: str, base: str, param: str, media: str) -> float | None:
        """Refuse links to this emulator's files that are gone; return a hosted video's length."""
        try:
            return await hosted_media(current().files, url, base, param, media)
        except HostedProblem as problem:
            raise _invalid(str(problem), param, "invalid_parameters") from None

    def url_list(body: dict[str, Any], key: str, lo: int, hi: int) -> list[str]:
        value = body.get(key)
        if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
            raise _invalid(f"{key} must be an array of URL strings", key)
        if not lo <= len(value) <= hi:
            raise _invalid(f"{key} must contain {lo}-{hi} items; got {len(value)}" if lo != hi
                           else f"{key} must contain exactly {lo} item; got {len(value)}", key)
        for url in value:
            if urlsplit(url).scheme not in ("http", "https"):
                raise _invalid(f"{key} items must be http(s) URLs; got {url[:40]!r}", key)
        return value

    async def validate(body: Any, base: str) -> Task:
        if not isinstance(body, dict):
            raise _invalid("Request body must be a JSON object")
        model = body.get("model")
        if model not in FIELDS:
            raise _invalid(f"Unsupported model: {model}", "model")
        if current().strict_fields:
            extra = sorted(set(body) - FIELDS[model])
            if extra:
                raise _invalid(f"Unknown parameter(s) for {model}: {', '.join(extra)}", extra[0])
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _invalid("prompt is required", "prompt")
        if len(prompt) > MAX_PROMPT:
            raise _invalid(f"prompt must be at most {MAX_PROMPT} characters; got {len(prompt)}", "prompt")
        callback = body.get("callback_url")
        if callback is not None:
            _check_callback(callback)
        now = int(time.time())
        if model == MODEL_I2V:
            for url in url_list(body, "image_urls", 1, 2):
                await check_hosted(url, base, "image_urls", "image")
            aspect = body.get("aspect_ratio", "16:9")
            if aspect not in ASPECTS:
                raise _invalid(f"aspect_ratio must be one of 16:9, 9:16, 1:1; got {aspect!r}", "aspect_ratio")
            duration = body.get("duration", 5)
            if isinstance(duration, bool) or duration not in (5, 10):
                raise _invalid(f"duration must be the integer 5 or 10; got {duration!r}", "duration")
            return Task(body, now, _task_id(now), model, round(I2V_CREDITS_PER_S * duration, 4), duration,
                        ASPECTS[aspect], float(duration))
        (video,) = url_list(body, "video_urls", 1, 1)
        if "image_urls" in body:
            for url in url_list(body, "image_urls", 1, 4):
                await check_hosted(url, base, "image_urls", "image")
        sound = body.get("keep_original_sound")
        if sound is not None and not isinstance(sound, bool):
            raise _invalid("keep_original_sound must be a boolean", "keep_original_sound")
        lo, hi = INPUT_VIDEO_S[model]
        seconds = await check_hosted(video, base, "video_urls", "video")
        if seconds is not None and not lo - 0.05 <= seconds <= hi + 0.05:
            raise _invalid(f"Video duration must be between {lo:g}-{hi:g} seconds; got {seconds:.1f} seconds",
                           "video_urls", "invalid_parameters")
        # A link this emulator cannot fetch is assumed to be as short as the model bills.
        billed = min(hi, max(lo, seconds if seconds is not None else lo))
        return Task(body, now, _task_id(now), model, round(EDIT_CREDITS_PER_S * billed, 4), round(billed),
                    (320, 180), seconds if seconds is not None else lo)

    def task_json(task: Task, status: str, progress: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "created": task.created, "id": task.id, "model": task.model, "object": "video.generation.task",
            "progress": progress, "status": status,
            "task_info": {"can_cancel": status in ("pending", "processing"), "estimated_time": 300,
                          "video_duration": task.video_duration},
            "type": "video",
            "usage": {"billing_rule": "per_second", "credits_reserved": task.credits, "user_group": "default"},
        }
        return out

    async def submit(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record("submit", request, body)
        if not authorised(request):
            return _fault_response(Fault(401), "submit")
        model = body.get("model", "") if isinstance(body, dict) else ""
        fault = pop_fault("submit")
        if fault:
            return _fault_response(fault, "submit", str(model))
        if isinstance(body, str):
            return _error(400, "invalid_request", "Request body is not valid JSON", "invalid_request_error")
        try:
            task = await validate(body, str(request.base_url))
        except _Refused as refused:
            return refused.response
        if current().task_errors:
            task.outcome = current().task_errors.pop(0)
        elif current().odd_statuses:
            task.outcome = "status:" + current().odd_statuses.pop(0)
        current().tasks[task.id] = task
        garbled = malformed("submit")
        return garbled or JSONResponse(task_json(task, "pending", 0))

    async def poll(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        record("poll", request)
        if not authorised(request):
            return _fault_response(Fault(401, code=401), "poll")
        fault = pop_fault("poll")
        if fault:
            return _fault_response(fault, "poll")
        if not task_id.startswith(TASK_PREFIX):
            return _error(400, "invalid_task_id", "Invalid task ID format, must start with 'task-unified-'",
                          "invalid_request_error", "task_id")
        task = current().tasks.get(task_id)
        if task is None:
            return _error(404, "task_not_found", "Task not found or expired", "not_found_error", "task_id")
        garbled = malformed("poll")
        if garbled:
            return garbled
        step, task.step = task.step, min(task.step + 1, 2)
        if step == 0:
            return JSONResponse(task_json(task, "pending", 0))
        if step == 1:
            return JSONResponse(task_json(task, "processing", 50))
        return JSONResponse(await finish(task, str(request.base_url)))

    async def finish(task: Task, base: str) -> dict[str, Any]:
        if task.outcome.startswith("status:"):
            return task_json(task, task.outcome[len("status:"):], 100)
        if task.outcome != "completed":
            out = task_json(task, "failed", 0)
            out["error"] = {"code": task.outcome, "type": "task_error",
                            "message": TASK_ERROR_MESSAGES.get(task.outcome, f"Task failed: {task.outcome}")}
            return out
        if not task.results:
            width, height = task.size
            data = await run_in_threadpool(mp4_bytes, task.seconds, width, height)
            name = current().files.add(data, ttl_s=current().result_ttl_s)
            task.results = [f"{base}files/{name}"]
        out = task_json(task, "completed", 100)
        out["results"] = list(task.results)
        return out

    def upload_fault() -> Response | None:
        fault = pop_fault("upload")
        return _fault_response(fault, "upload") if fault else None

    app = Starlette(routes=[
        Route("/v1/videos/generations", submit, methods=["POST"]),
        Route("/v1/tasks/{task_id}", poll, methods=["GET"]),
        *file_routes(current, record, authorised, upload_fault),
    ])
    app.state.emulator = state or EvolinkState()
    return app


def _check_callback(url: Any) -> None:
    if not isinstance(url, str) or len(url) > 2048:
        raise _invalid("callback_url must be a string of at most 2048 characters", "callback_url")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise _invalid("callback_url must be an HTTPS URL", "callback_url")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if address.is_private or address.is_loopback:
        raise _invalid("callback_url must not point at an internal IP address", "callback_url")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this bearer token (default: any)")
    args = parser.parse_args(argv)
    run_forever(create_app(EvolinkState(api_key=args.api_key)), args.host, args.port)


if __name__ == "__main__":
    main()

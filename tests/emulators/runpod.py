"""Loopback emulator of Runpod's public endpoint ``kling-video-o1-r2v`` (providers.md §3, §9).

Routes (under ``/v2/kling-video-o1-r2v``): ``POST /run`` -> ``{"id","status":"IN_QUEUE"}``;
``POST /runsync`` (``?wait=<ms>``) -> the finished job, or ``IN_PROGRESS`` past the wait window;
``GET /status/{id}``; ``POST /cancel/{id}``. Result files are served at ``/files/{name}``.

Behaviour: auth by ``Authorization: Bearer <key>`` or the bare key (401 otherwise); input validated
per the model page (400 ``{"id","status":"FAILED","error"}``); each status poll advances the job one
state along ``state.progression`` (deterministic); a finished job bills ``0.112 x duration``; its
result answers 404 once the TTL has passed (30 min for /run, 1 min for /runsync).

Fault knobs live on :class:`RunpodState` (see its fields); every API request is recorded.

Run standalone: ``python -m tests.emulators.runpod --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._files import FileHost
from tests.emulators._media import mp4_bytes
from tests.emulators._server import run_forever

ENDPOINT = "kling-video-o1-r2v"
PRICE_PER_SECOND = 0.112
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
INPUT_FIELDS = {"prompt", "images", "video", "negative_prompt", "aspect_ratio", "duration", "seed",
                "enable_prompt_expansion", "enable_safety_checker"}
TOP_LEVEL_FIELDS = {"input", "webhook", "policy"}
RUN_MAX_BYTES = 10 * 1000 * 1000
RUNSYNC_MAX_BYTES = 20 * 1000 * 1000
RUN_TTL_S = 30 * 60.0
RUNSYNC_TTL_S = 60.0
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
# The error Runpod relays when the upstream Kling call fails: provider JSON inside a string.
EMBEDDED_ERROR = ('Error submitting task: 400, {"code":400,"message":"The reference image could not be '
                  'recognised as a character, prop or scene","data":null}')
DATA_URI_ERROR = ('Error submitting task: 400, {"code":400,"message":"images[0] is not a valid URL: '
                  'data URIs are not supported, pass an http(s) URL"}')
_SMALL_SIZES = {"16:9": (320, 180), "9:16": (180, 320), "1:1": (240, 240)}


@dataclass
class HttpFault:
    status: int
    retry_after: str | None = None


@dataclass
class JobFault:
    """How the next submitted job ends instead of COMPLETED."""

    status: str                     # "FAILED" or "TIMED_OUT"
    error: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class RunpodJob:
    id: str
    input: dict[str, Any]
    status: str = "IN_QUEUE"
    polls: int = 0
    ttl_s: float = RUN_TTL_S
    fault: JobFault | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: str | None = None

    def expired(self) -> bool:
        return self.finished_at is not None and time.time() >= self.finished_at + self.ttl_s


@dataclass
class RunpodState:
    """Everything the emulator knows, plus the fault knobs tests turn."""

    api_key: str = "rp-test-key"
    files: FileHost = field(default_factory=FileHost)
    jobs: dict[str, RunpodJob] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    progression: tuple[str, ...] = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    video_ttl_s: float = 7 * 24 * 3600.0
    video_seconds: float | None = None    # length of the served MP4; None: the requested duration
    # --- fault knobs -------------------------------------------------------------------------
    submit_faults: deque[HttpFault] = field(default_factory=deque)   # next submits answer these
    poll_faults: deque[HttpFault] = field(default_factory=deque)     # next status polls answer these
    job_faults: deque[JobFault] = field(default_factory=deque)       # next jobs end like this
    result_ttl_s: float | None = None     # overrides the /run TTL (0: 404 right after the result)
    malformed_polls: int = 0              # next status polls answer 200 with a body that is not JSON
    reject_data_uris: bool = False        # jobs with data: inputs end FAILED (DATA_URI_ERROR)
    runsync_completes: bool = True        # False: /runsync answers IN_PROGRESS (wait window passed)

    def fail_next_submits(self, n: int = 1, status: int = 429, retry_after: str | None = None) -> None:
        self.submit_faults.extend(HttpFault(status, retry_after) for _ in range(n))

    def fail_next_polls(self, n: int = 1, status: int = 429, retry_after: str | None = None) -> None:
        self.poll_faults.extend(HttpFault(status, retry_after) for _ in range(n))

    def next_job_fails(self, error: str = EMBEDDED_ERROR) -> None:
        self.job_faults.append(JobFault("FAILED", error))

    def next_job_times_out(self) -> None:
        self.job_faults.append(JobFault("TIMED_OUT"))

    def submissions(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(("/run", "/runsync"))]

    def polls_of(self, job_id: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(f"/status/{job_id}")]


def _error(status: int, message: str, job_id: str | None = None) -> JSONResponse:
    if job_id is None:
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse({"id": job_id, "status": "FAILED", "error": message}, status_code=status)


def _http_fault(fault: HttpFault) -> JSONResponse:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    messages = {429: "Too many requests: rate limit exceeded for this endpoint",
                500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}
    return JSONResponse({"error": messages.get(fault.status, "error")}, status_code=fault.status, headers=headers)


def _is_url(value: Any, allow_data: bool = True) -> bool:
    if not isinstance(value, str):
        return False
    if value.startswith(("http://", "https://")):
        return len(value) > 8
    return allow_data and value.startswith("data:") and ";base64," in value


def validate(body: Any) -> str | None:
    """The first problem with a request body, phrased as Runpod does, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return "Invalid request: body must be a JSON object with an 'input' object"
    extra = set(body) - TOP_LEVEL_FIELDS
    if extra:
        return f"Invalid request: unknown field(s) {sorted(extra)}"
    data = body["input"]
    unknown = set(data) - INPUT_FIELDS
    if unknown:
        return f"Invalid parameter: unknown input field(s) {sorted(unknown)}"
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        return "Invalid parameter: prompt is required"
    images = data.get("images")
    if not isinstance(images, list) or not 1 <= len(images) <= 10:
        return "Invalid parameter: images must be an array of 1-10 reference image URLs"
    for i, image in enumerate(images):
        if not _is_url(image):
            return f"Invalid parameter: images[{i}] must be a URL"
    if "video" in data and not _is_url(data["video"]):
        return "Invalid parameter: video must be a URL"
    if "negative_prompt" in data and not isinstance(data["negative_prompt"], str):
        return "Invalid parameter: negative_prompt must be a string"
    if data.get("aspect_ratio", "16:9") not in ASPECT_RATIOS:
        return f"Invalid parameter: aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}"
    duration = data.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 3 <= duration <= 10:
        return "Invalid parameter: duration must be an integer from 3 to 10"
    seed = data.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        return "Invalid parameter: seed must be an integer"
    for flag in ("enable_prompt_expansion", "enable_safety_checker"):
        if flag in data and not isinstance(data[flag], bool):
            return f"Invalid parameter: {flag} must be a boolean"
    return None


def _state(request: Request) -> RunpodState:
    # Read per request, so a test may swap in a fresh state on a running server.
    return request.app.state.emulator


class _Emulator:
    async def _record(self, request: Request) -> tuple[bytes, Any]:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw.decode("utf-8", "replace")
        _state(request).requests.append(
            Recorded(request.method, request.url.path, request.url.query, dict(request.headers), body))
        return raw, body

    def _authorized(self, request: Request) -> bool:
        value = request.headers.get("authorization", "")
        key = _state(request).api_key
        return value in (f"Bearer {key}", key)

    async def _submit(self, request: Request, sync: bool) -> Response:
        state = _state(request)
        raw, body = await self._record(request)
        if not self._authorized(request):
            return _error(401, "Unauthorized: missing or invalid API key")
        if state.submit_faults:
            return _http_fault(state.submit_faults.popleft())
        limit = RUNSYNC_MAX_BYTES if sync else RUN_MAX_BYTES
        if len(raw) > limit:
            return _error(413, f"Payload too large: the limit for /{'runsync' if sync else 'run'} is "
                               f"{limit // 1_000_000} MB")
        job_id = f"sync-{uuid.uuid4()}-u1" if sync else f"{uuid.uuid4()}-u1"
        problem = validate(body)
        if problem:
            return _error(400, problem, job_id)
        job = RunpodJob(job_id, body["input"], ttl_s=RUNSYNC_TTL_S if sync else RUN_TTL_S)
        if state.result_ttl_s is not None and not sync:
            job.ttl_s = state.result_ttl_s
        if state.reject_data_uris and any(
                isinstance(v, str) and v.startswith("data:") for v in [*job.input["images"], job.input.get("video")]):
            job.fault = JobFault("FAILED", DATA_URI_ERROR)
        elif state.job_faults:
            job.fault = state.job_faults.popleft()
        state.jobs[job_id] = job
        if not sync:
            return JSONResponse({"id": job_id, "status": "IN_QUEUE"})
        if state.runsync_completes:
            self._finish(job, request)
        else:
            job.status, job.polls = "IN_PROGRESS", 1
        return JSONResponse(self._view(job))

    async def run(self, request: Request) -> Response:
        return await self._submit(request, sync=False)

    async def runsync(self, request: Request) -> Response:
        return await self._submit(request, sync=True)

    async def status(self, request: Request) -> Response:
        state = _state(request)
        await self._record(request)
        if not self._authorized(request):
            return _error(401, "Unauthorized: missing or invalid API key")
        if state.poll_faults:
            return _http_fault(state.poll_faults.popleft())
        if state.malformed_polls > 0:
            state.malformed_polls -= 1
            return Response('{"id": "truncated', media_type="application/json")
        job = state.jobs.get(request.path_params["job_id"])
        if job is None or job.expired():
            return _error(404, "request does not exist")
        if job.status not in TERMINAL:
            job.polls += 1
            step = state.progression[min(job.polls, len(state.progression) - 1)]
            if step == "COMPLETED":
                self._finish(job, request)
            else:
                job.status = step
        return JSONResponse(self._view(job))

    async def cancel(self, request: Request) -> Response:
        state = _state(request)
        await self._record(request)
        if not self._authorized(request):
            return _error(401, "Unauthorized: missing or invalid API key")
        job = state.jobs.get(request.path_params["job_id"])
        if job is None or job.expired():
            return _error(404, "request does not exist")
        if job.status not in TERMINAL:
            job.status, job.finished_at = "CANCELLED", time.time()
        return JSONResponse({"id": job.id, "status": job.status})

    def _finish(self, job: RunpodJob, request: Request) -> None:
        state = _state(request)
        job.finished_at = time.time()
        if job.fault is not None:
            job.status, job.error = job.fault.status, job.fault.error
            return
        duration = job.input.get("duration", 5)
        width, height = _SMALL_SIZES[job.input.get("aspect_ratio", "16:9")]
        data = mp4_bytes(float(state.video_seconds or duration), width, height)
        name = state.files.add(data, ttl_s=state.video_ttl_s)
        job.status = "COMPLETED"
        job.output = {"video_url": f"{str(request.base_url).rstrip('/')}/files/{name}",
                      "cost": round(PRICE_PER_SECOND * duration, 4)}

    @staticmethod
    def _view(job: RunpodJob) -> dict[str, Any]:
        view: dict[str, Any] = {"id": job.id, "status": job.status}
        if job.status in ("IN_PROGRESS", "RUNNING") or job.status in TERMINAL:
            view["delayTime"] = 30
            view["workerId"] = "emu-worker-1"
        if job.status in TERMINAL and job.status != "CANCELLED":
            view["executionTime"] = 75432
        if job.output is not None:
            view["output"] = job.output
        if job.error is not None:
            view["error"] = job.error
        return view


def create_app(state: RunpodState | None = None) -> Starlette:
    """The emulator as a Starlette app; its state is ``app.state.emulator``."""
    state = state or RunpodState()
    emu = _Emulator()

    async def files(request: Request) -> Response:
        return await _state(request).files.handle(request)

    prefix = f"/v2/{ENDPOINT}"
    app = Starlette(routes=[
        Route(f"{prefix}/run", emu.run, methods=["POST"]),
        Route(f"{prefix}/runsync", emu.runsync, methods=["POST"]),
        Route(f"{prefix}/status/{{job_id}}", emu.status, methods=["GET"]),
        Route(f"{prefix}/cancel/{{job_id}}", emu.cancel, methods=["POST"]),
        Route("/files/{name}", files, methods=["GET"]),
    ])
    app.state.emulator = state
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Runpod kling-video-o1-r2v emulator (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="rp-test-key")
    args = parser.parse_args(argv)
    run_forever(create_app(RunpodState(api_key=args.api_key)), args.host, args.port)


if __name__ == "__main__":
    main()

"""Loopback emulator of fal.ai's queue and storage for the eight Kling O1 endpoints.

Follows shared/reference/providers.md §7 and §9:

- ``POST /{endpoint_id}`` (one of the eight ``fal-ai/kling-video/o1/...`` ids, ``Authorization: Key``)
  queues the request and answers ``request_id``, ``status_url``, ``response_url``, ``cancel_url``
  built on ``/{owner}/{alias}/requests/{id}`` only: the ``/o1/...`` part is dropped, and a status
  request under the full endpoint id finds nothing.
- ``GET .../requests/{id}/status``: ``IN_QUEUE`` -> ``IN_PROGRESS`` -> ``COMPLETED``, one step per
  poll, for failed requests too. ``GET .../requests/{id}`` is the raw output ``{"video": {...}}``, or,
  for a failed request, the only place the error shows: 422 ``{"detail": [{loc, msg, type}]}``. The
  input is checked at submit (like fal's schemas) but, as on fal, reported only there.
- ``PUT .../requests/{id}/cancel``: 202 ``CANCELLATION_REQUESTED`` (a queued request is removed and
  never processed; one in progress only gets the signal, and this Kling app finishes it), or 400
  ``ALREADY_COMPLETED``.
- ``POST /storage/auth/token?storage_type=fal-cdn-v3`` answers a token and the upload host
  (``{base}/cdn``); ``POST /cdn/files/upload`` (that token) stores raw bytes, answering ``access_url``;
  ``POST /cdn/files/upload/multipart`` starts a multipart upload (``access_url``, ``uploadId``), parts go
  to ``PUT {access_url}/multipart/{uploadId}/{n}`` (answering an ETag) and ``POST .../complete`` with
  ``{"parts": [{partNumber, etag}]}`` assembles them.
- ``GET /files/{name}``: results and uploads (:class:`FileHost`: expiring links, Range, truncation).

Fault knobs live on :class:`FalState`. Run standalone: ``python -m tests.emulators.fal --port 0``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._evolink_files import HostedProblem, hosted_media
from tests.emulators._files import FileHost, HostedFile
from tests.emulators._media import mp4_bytes
from tests.emulators._server import run_forever

API_KEY = "fal-key-id:fal-key-secret-0123"
ROOT = "fal-ai/kling-video/o1"
KINDS = ("image-to-video", "reference-to-video", "video-to-video/edit", "video-to-video/reference")
ENDPOINTS = {f"{ROOT}/{k}": k for k in KINDS} | {f"{ROOT}/standard/{k}": k for k in KINDS}
DURATIONS = tuple(str(n) for n in range(3, 11))
ASPECTS = ("16:9", "9:16", "1:1")
FIELDS = {
    "image-to-video": {"prompt", "start_image_url", "end_image_url", "duration"},
    "reference-to-video": {"prompt", "image_urls", "elements", "duration", "aspect_ratio"},
    "video-to-video/edit": {"prompt", "video_url", "image_urls", "elements", "keep_audio"},
    "video-to-video/reference": {"prompt", "video_url", "image_urls", "elements", "keep_audio", "aspect_ratio",
                                 "duration"},
}
REQUIRED = {"image-to-video": ("prompt", "start_image_url"), "reference-to-video": ("prompt",),
            "video-to-video/edit": ("prompt", "video_url"), "video-to-video/reference": ("prompt", "video_url")}
POLICY_DETAIL = [{"loc": ["body", "prompt"], "type": "content_policy_violation",
                  "msg": "The content could not be processed because it contained material flagged by a content "
                         "checker."}]


@dataclass
class HttpFault:
    status: int
    on: str = "any"          # submit | status | result | cancel | token | upload | any
    retry_after: str | None = None
    detail: str = "Internal Server Error"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FalRequest:
    id: str
    endpoint: str
    body: dict[str, Any]
    outcome: str             # ok | content_policy | unknown_status (invalid inputs: see ``issues``)
    issues: list[dict[str, Any]]
    polls: int = 0
    cancelled: bool = False
    cancel_requested: bool = False   # in progress: the signal went to the runner, which may finish anyway
    file_name: str | None = None


@dataclass
class FalState:
    """Everything the emulator knows, plus its fault knobs (tests flip them between calls).

    ``steps``: statuses before ``COMPLETED`` (submit answers the first; each status poll advances one).
    ``outcomes``: outcomes of the next requests, in order (then ``outcome``).
    ``faults``: HTTP errors for the next matching requests, each used once.
    ``malformed_next``: the next N status answers are cut-off JSON.
    ``files.truncate_next`` / ``files.slow_next`` / ``files.expire_all`` / ``result_ttl_s``: download faults.
    """

    api_key: str | None = API_KEY            # None: any non-empty Key is accepted
    steps: list[str] = field(default_factory=lambda: ["IN_QUEUE", "IN_PROGRESS"])
    outcome: str = "ok"
    outcomes: list[str] = field(default_factory=list)
    unknown_status: str = "PAUSED"
    faults: list[HttpFault] = field(default_factory=list)
    malformed_next: int = 0
    video_seconds: float = 1.0
    video_size: tuple[int, int] = (320, 180)
    result_ttl_s: float = 3600.0
    files: FileHost = field(default_factory=FileHost)
    tokens: set[str] = field(default_factory=set)
    multipart: dict[str, dict[int, tuple[str, bytes]]] = field(default_factory=dict)  # uploadId -> parts
    multipart_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # uploadId -> (name, mime)
    jobs: dict[str, FalRequest] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def fail_next(self, status: int, *, on: str = "any", times: int = 1, retry_after: str | None = None,
                  detail: str = "Internal Server Error") -> None:
        self.faults.extend(HttpFault(status, on, retry_after, detail) for _ in range(times))

    def submits(self) -> list[tuple[str, Any]]:
        """``(endpoint_id, body)`` of every queued request, in order."""
        return [(j.endpoint, j.body) for j in self.jobs.values()]

    def paths(self, method: str) -> list[str]:
        return [r.path for r in self.requests if r.method == method]


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and bool(re.match(r"^(https?://[^\s/]+|data:[\w.+-]+/[\w.+-]+;base64,)", value))


def _issue(loc: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", loc], "msg": msg, "type": kind}


async def validate(kind: str, body: Any, files: FileHost, base: str) -> list[dict[str, Any]]:
    """fal's schema checks for one O1 endpoint, as pydantic-style ``detail`` items."""
    if not isinstance(body, dict):
        return [_issue("body", "Input should be an object", "model_attributes_type")]
    issues = [_issue(name, "Field required", "missing") for name in REQUIRED[kind] if name not in body]
    issues += [_issue(name, "Extra inputs are not permitted", "extra_forbidden")
               for name in body if name not in FIELDS[kind]]
    if not isinstance(body.get("prompt", ""), str) or len(body.get("prompt", "")) > 2500:
        issues.append(_issue("prompt", "String should have at most 2500 characters", "string_too_long"))
    if "duration" in body and body["duration"] not in DURATIONS:
        issues.append(_issue("duration", f"Input should be {', '.join(repr(d) for d in DURATIONS)}", "enum"))
    if "aspect_ratio" in body and body["aspect_ratio"] not in ASPECTS:
        issues.append(_issue("aspect_ratio", "Input should be '16:9', '9:16' or '1:1'", "enum"))
    if "keep_audio" in body and not isinstance(body["keep_audio"], bool):
        issues.append(_issue("keep_audio", "Input should be a valid boolean", "bool_type"))
    images = body.get("image_urls", [])
    if not isinstance(images, list):
        issues.append(_issue("image_urls", "Input should be a valid list", "list_type"))
        images = []
    limit = 4 if "video_url" in body else 7
    if len(images) + len(body.get("elements") or []) + ("start_image_url" in body) > limit:
        issues.append(_issue("image_urls", f"at most {limit} elements and reference images in total",
                             "too_many_references"))
    if kind == "reference-to-video" and not images and not body.get("elements"):
        issues.append(_issue("image_urls", "Provide at least one reference image or element", "value_error"))
    media = [(name, body[name], "image") for name in ("start_image_url", "end_image_url") if name in body]
    media += [(f"image_urls.{i}", url, "image") for i, url in enumerate(images)]
    media += [("video_url", body["video_url"], "video")] if "video_url" in body else []
    for name, url, what in media:
        if not _is_url(url):
            issues.append(_issue(name, "Input should be a valid URL", "url_parsing"))
            continue
        try:
            seconds = await hosted_media(files, url, base, name, what)
        except HostedProblem as exc:
            issues.append(_issue(name, str(exc), "file_download_error"))
            continue
        if seconds is not None and not 3.0 <= seconds <= 10.05:
            issues.append(_issue(name, f"video must be 3-10.05 s long; got {seconds:.2f} s", "video_duration"))
    return issues


class _Emulator:
    def __init__(self, state: FalState) -> None:
        self.state = state

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        keep = ("authorization", "content-type", "x-fal-file-name", "content-length")
        self.state.requests.append(Recorded(request.method, request.url.path, dict(request.query_params),
                                            {k: v for k, v in request.headers.items() if k in keep}, body))
        return body

    def _refuse(self, request: Request, kind: str, auth: str = "Key") -> Response | None:
        header = request.headers.get("authorization") or ""
        scheme, _, secret = header.partition(" ")
        if kind == "upload":
            ok = scheme == "Bearer" and secret in self.state.tokens
        else:
            ok = scheme == auth and bool(secret) and (self.state.api_key is None or secret == self.state.api_key)
        if not ok:
            return JSONResponse({"detail": "Invalid authentication credentials"}, status_code=401)
        for fault in self.state.faults:
            if fault.on in ("any", kind):
                self.state.faults.remove(fault)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return JSONResponse({"detail": fault.detail}, status_code=fault.status, headers=headers)
        return None

    def _urls(self, request: Request, owner: str, alias: str, rid: str) -> dict[str, str]:
        base = f"{str(request.base_url).rstrip('/')}/{owner}/{alias}/requests/{rid}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _job(self, request: Request) -> FalRequest | Response:
        p = request.path_params
        job = self.state.jobs.get(p["rid"])
        if job is None or "/".join(job.endpoint.split("/")[:2]) != f"{p['owner']}/{p['alias']}":
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        return job

    async def submit(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refuse(request, "submit")
        if refused is not None:
            return refused
        p = request.path_params
        endpoint = f"{p['owner']}/{p['alias']}/{p['rest']}"
        kind = ENDPOINTS.get(endpoint)
        if kind is None:
            return JSONResponse({"detail": f"Application '{endpoint}' not found"}, status_code=404)
        state = self.state
        issues = await validate(kind, body, state.files, str(request.base_url))
        outcome = state.outcomes.pop(0) if state.outcomes else state.outcome
        job = FalRequest(str(uuid.uuid4()), endpoint, body, outcome, issues)
        state.jobs[job.id] = job
        return JSONResponse({"request_id": job.id, "gateway_request_id": job.id, "status": "IN_QUEUE",
                             "queue_position": 0, **self._urls(request, p["owner"], p["alias"], job.id)})

    async def status(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refuse(request, "status")
        if refused is not None:
            return refused
        job = self._job(request)
        if isinstance(job, Response):
            return job
        job.polls += 1
        if job.outcome == "unknown_status" and job.polls >= len(self.state.steps):
            return JSONResponse({"status": self.state.unknown_status})
        status = self.state.steps[job.polls] if job.polls < len(self.state.steps) and not job.cancelled \
            else "COMPLETED"
        if self.state.malformed_next > 0:
            self.state.malformed_next -= 1
            return Response('{"status": "IN_PRO', media_type="application/json")
        answer: dict[str, Any] = {"status": status, "request_id": job.id}
        if status == "IN_QUEUE":
            answer["queue_position"] = 0
        else:
            answer["logs"] = None
        return JSONResponse(answer)

    async def result(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refuse(request, "result")
        if refused is not None:
            return refused
        job = self._job(request)
        if isinstance(job, Response):
            return job
        if job.polls < len(self.state.steps) and not job.cancelled:
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if job.cancelled:
            return JSONResponse({"detail": "Request was cancelled by the user"}, status_code=400)
        if job.issues:
            return JSONResponse({"detail": job.issues}, status_code=422,
                                headers={"X-Fal-Error-Type": job.issues[0]["type"]})
        if job.outcome == "content_policy":
            return JSONResponse({"detail": POLICY_DETAIL}, status_code=422,
                                headers={"X-Fal-Error-Type": "content_policy_violation"})
        if job.file_name is None:
            video = mp4_bytes(self.state.video_seconds, *self.state.video_size)
            job.file_name = self.state.files.add(video, ttl_s=self.state.result_ttl_s)
        data = self.state.files.files[job.file_name].data
        url = f"{str(request.base_url).rstrip('/')}/files/{job.file_name}"
        return JSONResponse({"video": {"url": url, "content_type": "video/mp4", "file_name": "output.mp4",
                                       "file_size": len(data)}})

    async def cancel(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refuse(request, "cancel")
        if refused is not None:
            return refused
        job = self._job(request)
        if isinstance(job, Response):
            return job
        if job.polls >= len(self.state.steps) or job.cancelled:
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        job.cancel_requested = True
        if self.state.steps[job.polls] == "IN_QUEUE":       # removed from the queue, never processed
            job.cancelled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def token(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refuse(request, "token")
        if refused is not None:
            return refused
        if request.query_params.get("storage_type") != "fal-cdn-v3":
            return JSONResponse({"detail": "unknown storage_type"}, status_code=422)
        token = uuid.uuid4().hex
        self.state.tokens.add(token)
        return JSONResponse({"token": token, "token_type": "Bearer",
                             "base_url": f"{str(request.base_url).rstrip('/')}/cdn",
                             "expires_at": "2099-01-01T00:00:00+00:00"})

    async def upload(self, request: Request) -> Response:
        body = await request.body()
        self.state.requests.append(Recorded(request.method, request.url.path, dict(request.query_params),
                                            {k: v for k, v in request.headers.items()
                                             if k in ("content-type", "x-fal-file-name", "authorization")},
                                            len(body)))
        refused = self._refuse(request, "upload")
        if refused is not None:
            return refused
        if not body:
            return JSONResponse({"detail": "empty upload"}, status_code=400)
        mime = request.headers.get("content-type") or "application/octet-stream"
        suffix = ".mp4" if mime.startswith("video/") else ".png"
        name = self.state.files.add(body, ttl_s=7 * 24 * 3600, suffix=suffix, content_type=mime)
        return JSONResponse({"access_url": f"{str(request.base_url).rstrip('/')}/files/{name}"})

    async def start_multipart(self, request: Request) -> Response:
        self.state.requests.append(Recorded(request.method, request.url.path, {}, {
            k: v for k, v in request.headers.items() if k in ("content-type", "x-fal-file-name", "authorization")},
            None))
        refused = self._refuse(request, "upload")
        if refused is not None:
            return refused
        upload_id, name = uuid.uuid4().hex, uuid.uuid4().hex + ".bin"
        self.state.multipart[upload_id] = {}
        self.state.multipart_names[upload_id] = (name, request.headers.get("content-type") or "video/mp4")
        return JSONResponse({"access_url": f"{str(request.base_url).rstrip('/')}/files/{name}",
                             "uploadId": upload_id})

    async def put_part(self, request: Request) -> Response:
        body = await request.body()
        p = request.path_params
        self.state.requests.append(Recorded(request.method, request.url.path, {}, {}, len(body)))
        refused = self._refuse(request, "upload")
        if refused is not None:
            return refused
        parts = self.state.multipart.get(p["uid"])
        if parts is None or self.state.multipart_names[p["uid"]][0] != p["name"]:
            return JSONResponse({"detail": "unknown upload"}, status_code=404)
        etag = f'"{uuid.uuid4().hex[:16]}"'
        parts[int(p["part"])] = (etag, body)
        return Response(status_code=200, headers={"ETag": etag})

    async def complete_multipart(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refuse(request, "upload")
        if refused is not None:
            return refused
        uid = request.path_params["uid"]
        parts = self.state.multipart.get(uid)
        if parts is None:
            return JSONResponse({"detail": "unknown upload"}, status_code=404)
        listed = body.get("parts") if isinstance(body, dict) else None
        if not isinstance(listed, list) or sorted(p.get("partNumber") for p in listed) != sorted(parts) or any(
                parts[p["partNumber"]][0] != p.get("etag") for p in listed):
            return JSONResponse({"detail": "parts do not match the uploaded parts and their ETags"}, status_code=400)
        name, mime = self.state.multipart_names[uid]
        self.state.files.files[name] = HostedFile(b"".join(parts[n][1] for n in sorted(parts)),
                                                  time.time() + 7 * 24 * 3600, mime)
        return JSONResponse({"access_url": f"{str(request.base_url).rstrip('/')}/files/{name}"})

    async def download(self, request: Request) -> Response:
        return await self.state.files.handle(request)     # looked up per call: tests may swap the host


def create_app(state: FalState | None = None) -> Starlette:
    """The emulator app; its state (and fault knobs) is ``app.state.emulator``."""
    state = state or FalState()
    emu = _Emulator(state)
    app = Starlette(routes=[
        Route("/storage/auth/token", emu.token, methods=["POST"]),
        Route("/cdn/files/upload", emu.upload, methods=["POST"]),
        Route("/cdn/files/upload/multipart", emu.start_multipart, methods=["POST"]),
        Route("/files/{name}/multipart/{uid}/complete", emu.complete_multipart, methods=["POST"]),
        Route("/files/{name}/multipart/{uid}/{part:int}", emu.put_part, methods=["PUT"]),
        Route("/files/{name}", emu.download, methods=["GET"]),
        Route("/{owner}/{alias}/requests/{rid}/status", emu.status, methods=["GET"]),
        Route("/{owner}/{alias}/requests/{rid}/cancel", emu.cancel, methods=["PUT"]),
        Route("/{owner}/{alias}/requests/{rid}", emu.result, methods=["GET"]),
        Route("/{owner}/{alias}/{rest:path}", emu.submit, methods=["POST"]),
    ])
    app.state.emulator = state
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fal.ai (Kling O1) loopback emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=API_KEY, help="the accepted Key ('' accepts any)")
    args = parser.parse_args(argv)
    run_forever(create_app(FalState(api_key=args.api_key or None)), args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])

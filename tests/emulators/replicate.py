"""Loopback emulator of Replicate's HTTP API for ``kwaivgi/kling-o1`` (shared/reference/providers.md §7b).

- ``POST /v1/models/kwaivgi/kling-o1/predictions`` (``Authorization: Bearer``): validates the model's
  input schema (422 problem details with ``invalid_fields``), reads ``Cancel-After`` (``30m``,
  ``90s``, ``1h30m``; 400 when malformed) and answers 201 with the prediction.
- ``GET /v1/predictions/{id}``: ``starting`` -> ``processing`` -> ``succeeded`` (``output``: the video
  URL) | ``failed`` (``error``), one step per poll. A prediction that never starts stays ``starting``
  until its ``Cancel-After`` deadline on the emulator clock, then is ``aborted``.
- ``POST /v1/predictions/{id}/cancel``: ``canceled`` (a finished one is answered unchanged).
- ``POST /v1/files`` (multipart field ``content``): the Files API; ``urls.get`` is ``/v1/files/{id}``,
  which predictions may take as an input.
- ``GET /files/{name}``: outputs (:class:`FileHost`). :meth:`ReplicateState.delete_outputs` is the hour
  after which Replicate deletes them: links answer 404, predictions say ``data_removed``.

Fault knobs live on :class:`ReplicateState`. Run standalone: ``python -m tests.emulators.replicate``.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from tests.emulators._files import FileHost
from tests.emulators._media import mp4_bytes
from tests.emulators._server import run_forever

API_KEY = "r8_test_token_0123456789"
MODEL = "kwaivgi/kling-o1"
FIELDS = {"prompt", "start_image", "end_image", "reference_images", "reference_video", "video_reference_type",
          "keep_original_sound", "mode", "aspect_ratio", "duration"}
POLICY_ERROR = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
FAILED_ERROR = "Kling task failed: video generation failed due to an internal error"


@dataclass
class HttpFault:
    status: int
    on: str = "any"          # submit | poll | cancel | upload | any
    retry_after: str | None = None
    detail: str = "Internal server error"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Prediction:
    id: str
    input: dict[str, Any]
    outcome: str             # succeeded | failed | content_policy | never_starts | unknown_status
    created: float
    cancel_after_s: float | None
    polls: int = 0
    status: str = "starting"
    file_name: str | None = None
    data_removed: bool = False


@dataclass
class ReplicateState:
    """Everything the emulator knows, plus its fault knobs (tests flip them between calls).

    ``steps``: statuses before the final one (submit answers the first; each poll advances one).
    ``outcomes``: outcomes of the next predictions, in order (then ``outcome``).
    ``faults``: HTTP errors for the next matching requests, each used once.
    ``malformed_next``: the next N poll answers are cut-off JSON.
    ``clock_offset_s``: moves the emulator clock (Cancel-After deadlines).
    ``files.truncate_next`` / ``files.slow_next`` / ``files.expire_all``: download faults; :meth:`delete_outputs`: the hour is up.
    """

    api_key: str | None = API_KEY
    steps: list[str] = field(default_factory=lambda: ["starting", "processing"])
    outcome: str = "succeeded"
    outcomes: list[str] = field(default_factory=list)
    faults: list[HttpFault] = field(default_factory=list)
    malformed_next: int = 0
    clock_offset_s: float = 0.0
    video_seconds: float = 1.0
    files: FileHost = field(default_factory=FileHost)
    uploads: dict[str, str] = field(default_factory=dict)      # file id -> FileHost name
    predictions: dict[str, Prediction] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def fail_next(self, status: int, *, on: str = "any", times: int = 1, retry_after: str | None = None,
                  detail: str = "Internal server error") -> None:
        self.faults.extend(HttpFault(status, on, retry_after, detail) for _ in range(times))

    def inputs(self) -> list[dict[str, Any]]:
        return [p.input for p in self.predictions.values()]

    def delete_outputs(self) -> None:
        """What Replicate does an hour after a prediction: its files are gone."""
        for p in self.predictions.values():
            if p.file_name:
                self.files.files.pop(p.file_name, None)
                p.data_removed = True


def parse_duration(text: str) -> float | None:
    """``Cancel-After`` values such as ``30m``, ``90s``, ``1h30m`` (None when malformed)."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
    if not text.strip() or match is None:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"title": title, "detail": detail, "status": status, **extra}, status_code=status,
                        media_type="application/problem+json")


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and bool(re.match(r"^(https?://[^\s/]+|data:[\w.+-]+/[\w.+-]+;base64,)", value))


async def validate(body: Any, state: ReplicateState, base: str) -> list[dict[str, str]]:
    """The model's input schema, as Replicate's ``invalid_fields``."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return [{"type": "required", "field": "input", "description": "input is required"}]
    data = body["input"]
    bad: list[dict[str, str]] = []

    def add(name: str, text: str, kind: str = "invalid") -> None:
        bad.append({"type": kind, "field": f"input.{name}", "description": text})

    for name in data:
        if name not in FIELDS:
            add(name, "Additional property is not allowed", "additional_property_not_allowed")
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        add("prompt", "prompt is required", "required")
    if data.get("mode", "pro") not in ("std", "pro"):
        add("mode", "mode must be one of: std, pro", "enum")
    if data.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
        add("aspect_ratio", "aspect_ratio must be one of: 16:9, 9:16, 1:1", "enum")
    if data.get("video_reference_type", "feature") not in ("feature", "base"):
        add("video_reference_type", "must be one of: feature, base", "enum")
    if "keep_original_sound" in data and not isinstance(data["keep_original_sound"], bool):
        add("keep_original_sound", "Invalid type. Expected: boolean", "invalid_type")
    duration = data.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool) or not 3 <= duration <= 10:
        add("duration", "Must be an integer between 3 and 10", "number")
    elif "reference_video" not in data and not data.get("reference_images") and duration not in (5, 10):
        add("duration", "text- and image-to-video take 5 or 10 seconds", "enum")
    if "end_image" in data and "start_image" not in data:
        add("end_image", "end_image requires start_image", "dependency")
    refs = data.get("reference_images", [])
    limit = 4 if "reference_video" in data else 7
    if not isinstance(refs, list) or len(refs) > limit:
        add("reference_images", f"at most {limit} reference images{' with a reference_video' if limit == 4 else ''}",
            "array_max_items")
        refs = []
    media = [(n, data[n], "image") for n in ("start_image", "end_image") if n in data]
    media += [(f"reference_images.{i}", u, "image") for i, u in enumerate(refs)]
    media += [("reference_video", data["reference_video"], "video")] if "reference_video" in data else []
    for name, url, what in media:
        if isinstance(url, str) and url.startswith(base + "v1/files/"):
            if url.rsplit("/", 1)[-1] not in state.uploads:
                add(name, "file not found", "file")
            continue
        if not _is_url(url):
            add(name, "Does not match format 'uri'", "format")
            continue
        try:
            seconds = await hosted_media(state.files, url, base, name, what)
        except HostedProblem as exc:
            add(name, str(exc), "file")
            continue
        if seconds is not None and not 3.0 <= seconds <= 10.0:
            add(name, f"reference_video must be 3-10 seconds long; got {seconds:.2f}", "file")
    return bad


class _Emulator:
    def __init__(self, state: ReplicateState) -> None:
        self.state = state

    def _refuse(self, request: Request, kind: str) -> Response | None:
        header = request.headers.get("authorization") or ""
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        if not token or (self.state.api_key is not None and token != self.state.api_key):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        for fault in self.state.faults:
            if fault.on in ("any", kind):
                self.state.faults.remove(fault)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                response = _problem(fault.status, "Error", fault.detail)
                if headers:
                    response.headers.update(headers)
                return response
        return None

    def _record(self, request: Request, body: Any) -> None:
        keep = ("authorization", "cancel-after", "content-type", "prefer")
        self.state.requests.append(Recorded(request.method, request.url.path,
                                            {k: v for k, v in request.headers.items() if k in keep}, body))

    def _view(self, request: Request, p: Prediction) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        stamp = dt.datetime.fromtimestamp(p.created, dt.UTC).isoformat()
        output = None
        if p.status == "succeeded" and p.file_name and not p.data_removed:
            output = f"{base}/files/{p.file_name}"
        return {"id": p.id, "model": MODEL, "version": "hidden", "input": p.input, "logs": "", "output": output,
                "data_removed": p.data_removed, "error": self._error(p), "status": p.status,
                "created_at": stamp, "urls": {"get": f"{base}/v1/predictions/{p.id}",
                                              "cancel": f"{base}/v1/predictions/{p.id}/cancel"}}

    @staticmethod
    def _error(p: Prediction) -> str | None:
        if p.status != "failed":
            return None
        return POLICY_ERROR if p.outcome == "content_policy" else FAILED_ERROR

    async def create(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self._record(request, body)
        refused = self._refuse(request, "submit")
        if refused is not None:
            return refused
        cancel_after = None
        if "cancel-after" in request.headers:
            cancel_after = parse_duration(request.headers["cancel-after"])
            if cancel_after is None:
                return _problem(400, "Invalid Cancel-After", "Cancel-After must be a duration such as 30s or 5m")
        bad = await validate(body, self.state, str(request.base_url))
        if bad:
            detail = "\n".join(f"- {b['field']}: {b['description']}" for b in bad)
            return _problem(422, "Input validation failed", detail, invalid_fields=bad)
        state = self.state
        outcome = state.outcomes.pop(0) if state.outcomes else state.outcome
        p = Prediction(uuid.uuid4().hex[:26], body["input"], outcome, state.now(), cancel_after)
        p.status = state.steps[0] if state.steps else "starting"
        state.predictions[p.id] = p
        return JSONResponse(self._view(request, p), status_code=201)

    def _advance(self, p: Prediction) -> None:
        if p.status in ("succeeded", "failed", "canceled", "aborted"):
            return
        if p.outcome == "never_starts":
            if p.cancel_after_s is not None and self.state.now() > p.created + p.cancel_after_s:
                p.status = "aborted"
            return
        p.polls += 1
        steps = self.state.steps
        if p.polls < len(steps):
            p.status = steps[p.polls]
        elif p.outcome == "succeeded":
            p.status = "succeeded"
            p.file_name = self.state.files.add(mp4_bytes(self.state.video_seconds))
        elif p.outcome == "unknown_status":
            p.status = "paused"
        else:
            p.status = "failed"

    async def get(self, request: Request) -> Response:
        self._record(request, None)
        refused = self._refuse(request, "poll")
        if refused is not None:
            return refused
        p = self.state.predictions.get(request.path_params["pid"])
        if p is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        self._advance(p)
        if self.state.malformed_next > 0:
            self.state.malformed_next -= 1
            return Response('{"id": "' + p.id + '", "status": "proc', media_type="application/json")
        return JSONResponse(self._view(request, p))

    async def cancel(self, request: Request) -> Response:
        self._record(request, None)
        refused = self._refuse(request, "cancel")
        if refused is not None:
            return refused
        p = self.state.predictions.get(request.path_params["pid"])
        if p is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        if p.status in ("starting", "processing"):
            p.status = "canceled"
        return JSONResponse(self._view(request, p))

    async def upload(self, request: Request) -> Response:
        form = await request.form()
        content = form.get("content")
        self._record(request, {k: getattr(v, "filename", v) for k, v in form.items()})
        refused = self._refuse(request, "upload")
        if refused is not None:
            return refused
        if content is None or isinstance(content, str):
            return _problem(400, "Bad request", "multipart field 'content' is required")
        data = await content.read()
        mime = content.content_type or "application/octet-stream"
        name = self.state.files.add(data, ttl_s=24 * 3600, suffix=".mp4" if mime.startswith("video/") else ".png",
                                    content_type=mime)
        file_id = uuid.uuid4().hex[:24]
        self.state.uploads[file_id] = name
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"id": file_id, "name": content.filename, "content_type": mime, "size": len(data),
                             "urls": {"get": f"{base}/v1/files/{file_id}"}}, status_code=201)

    async def download(self, request: Request) -> Response:
        return await self.state.files.handle(request)


def create_app(state: ReplicateState | None = None) -> Starlette:
    """The emulator app; its state (and fault knobs) is ``app.state.emulator``."""
    state = state or ReplicateState()
    emu = _Emulator(state)
    app = Starlette(routes=[
        Route(f"/v1/models/{MODEL}/predictions", emu.create, methods=["POST"]),
        Route("/v1/predictions/{pid}", emu.get, methods=["GET"]),
        Route("/v1/predictions/{pid}/cancel", emu.cancel, methods=["POST"]),
        Route("/v1/files", emu.upload, methods=["POST"]),
        Route("/files/{name}", emu.download, methods=["GET"]),
    ])
    app.state.emulator = state
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replicate (kwaivgi/kling-o1) loopback emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=API_KEY, help="the accepted Bearer token ('' accepts any)")
    args = parser.parse_args(argv)
    run_forever(create_app(ReplicateState(api_key=args.api_key or None)), args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])

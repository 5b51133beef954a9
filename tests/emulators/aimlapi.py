"""Loopback emulator of AI/ML API's video generation endpoints for the four Kling O1 models.

Follows shared/reference/providers.md §4: ``POST /v2/video/generations`` (also ``/v1/...``)
validated against each model's OpenAPI schema, ``GET /v2/video/generations?generation_id=``,
ids ``<uuid4>:<model>``, statuses ``queued`` -> ``generating`` -> ``completed`` | ``error`` (one
step per poll), HTTP errors ``{message, path, requestId, statusCode, timestamp}``, results at
``/files/{name}`` with ``meta.usage.credits_used``. Fault knobs live on :class:`AimlState`.

Run standalone: ``python -m tests.emulators.aimlapi --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._files import FileHost
from tests.emulators._media import mp4_bytes
from tests.emulators._server import run_forever

API_KEY = "aiml-test-key"
CREDITS_PER_USD = 2_000_000
MESSAGES = {
    401: "This request requires a valid API key. You can create a new API key on the Billing page: "
         "https://aimlapi.com/app/keys",
    403: "You've run out of credits. Please top up your balance or update your payment method to continue: "
         "https://aimlapi.com/app/billing/",
    404: "Generation not found",
    429: "Too Many Requests",
    500: "The model is under maintenance. Please try again later.",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Generation timeout",
}

_I2V, _R2V = "klingai/video-o1-image-to-video", "klingai/video-o1-reference-to-video"
_EDIT, _V2V = "klingai/video-o1-video-to-video-edit", "klingai/video-o1-video-to-video-reference"
# model -> field -> rule; rules: "uri", "bool", ("enum", values), ("list", min, max), "duration", "elements"
SCHEMAS: dict[str, dict[str, Any]] = {
    _I2V: {"required": ("model", "prompt", "image_url"),
           "fields": {"image_url": "uri", "last_image_url": "uri", "duration": "duration"}},
    _R2V: {"required": ("model", "prompt"),
           "fields": {"image_list": ("list", 1, 7), "elements": "elements",
                      "aspect_ratio": ("enum", ("16:9", "9:16", "1:1")), "duration": "duration"}},
    _EDIT: {"required": ("model", "prompt", "video_url"),
            "fields": {"video_url": "uri", "image_list": ("list", 1, 7), "elements": "elements",
                       "keep_audio": "bool"}},
    _V2V: {"required": ("model", "prompt", "video_url"),
           "fields": {"video_url": "uri", "image_list": ("list", 1, 4), "elements": "elements",
                      "aspect_ratio": ("enum", ("16:9", "9:16", "1:1")), "duration": "duration",
                      "keep_audio": "bool"}},
}
COMMON_FIELDS = ("model", "prompt", "provider")
DETAIL_ERROR = {"detail": [{"loc": ["body", "image_url"], "msg": "Could not detect face in the image",
                            "type": "face_detection_error", "input": "…"}]}
NAMED_ERROR = {"name": "ContentPolicyViolation",
               "message": "The prompt was flagged by the content moderation system."}


@dataclass
class HttpFault:
    status: int
    message: str
    on: str = "any"                 # "submit", "poll" or "any"
    retry_after: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    authorization: str | None
    body: Any


@dataclass
class Generation:
    id: str
    model: str
    body: dict[str, Any]
    outcome: str                    # completed | error_named | error_detail | unknown_status
    polls: int = 0
    file_name: str | None = None


@dataclass
class AimlState:
    """Everything the emulator knows, plus its fault knobs (tests flip them between calls).

    ``steps``: statuses before the final one; submit answers ``steps[0]`` and each poll advances one.
    ``outcomes``: outcomes for the next jobs, in order (then ``outcome``).
    ``faults``: HTTP errors for the next matching requests (each used once).
    ``malformed_next``: the next N successful answers are not JSON.
    ``files.truncate_next`` / ``files.expire_all`` / ``result_ttl_s``: download faults.
    """

    api_key: str | None = API_KEY   # None: any non-empty Bearer key is accepted
    steps: list[str] = field(default_factory=lambda: ["queued", "generating"])
    outcome: str = "completed"
    outcomes: list[str] = field(default_factory=list)
    named_error: dict[str, Any] = field(default_factory=lambda: dict(NAMED_ERROR))
    detail_error: dict[str, Any] = field(default_factory=lambda: dict(DETAIL_ERROR))
    unknown_status: str = "paused"
    faults: list[HttpFault] = field(default_factory=list)
    malformed_next: int = 0
    include_usage: bool = True
    credits_per_second: int = 224_000           # $0.112/s at 2,000,000 credits per USD
    video_seconds: float = 1.0
    result_ttl_s: float = 3600.0
    files: FileHost = field(default_factory=FileHost)
    generations: dict[str, Generation] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def fail_next(self, status: int, message: str | None = None, *, on: str = "any", times: int = 1,
                  retry_after: str | None = None) -> None:
        for _ in range(times):
            self.faults.append(HttpFault(status, message or MESSAGES.get(status, "Internal server error"),
                                         on, retry_after))

    def bodies(self) -> list[Any]:
        """The JSON bodies of every submit, in order."""
        return [r.body for r in self.requests if r.method == "POST"]


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"message": message, "path": request.url.path, "requestId": str(uuid.uuid4()),
            "statusCode": status, "timestamp": dt.datetime.now(dt.UTC).isoformat()}
    return JSONResponse(body, status_code=status, headers=headers)


def _is_uri(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if re.match(r"^https?://[^\s/]+", value):
        return True
    match = re.match(r"^data:[\w.+-]+/[\w.+-]+;base64,(.+)$", value, re.S)
    if not match:
        return False
    try:
        return len(base64.b64decode(match.group(1), validate=True)) > 0
    except (binascii.Error, ValueError):
        return False


def _check(name: str, rule: Any, value: Any) -> str | None:
    """A zod-like issue for ``value`` at ``name``, or None when it is valid."""
    if rule == "uri":
        return None if _is_uri(value) else f"{name}: Invalid url"
    if rule == "bool":
        return None if isinstance(value, bool) else f"{name}: Expected boolean, received {type(value).__name__}"
    if rule == "duration":
        if value in (5, 10, "5", "10") and not isinstance(value, bool):
            return None
        return f"{name}: Invalid enum value. Expected 5 | 10, received {value!r}"
    if rule == "elements":
        if not isinstance(value, list) or len(value) > 4:
            return f"{name}: Expected an array of at most 4 elements"
        for i, element in enumerate(value):
            refs = element.get("reference_image_urls") if isinstance(element, dict) else None
            if not (isinstance(element, dict) and _is_uri(element.get("frontal_image_url"))
                    and isinstance(refs, list) and 1 <= len(refs) <= 4 and all(map(_is_uri, refs))):
                return f"{name}.{i}: frontal_image_url and 1-4 reference_image_urls are required"
        return None
    kind = rule[0]
    if kind == "enum":
        if value in rule[1]:
            return None
        expected = " | ".join(f"'{v}'" for v in rule[1])
        return f"{name}: Invalid enum value. Expected {expected}, received '{value}'"
    if kind == "list":
        _, low, high = rule
        if not isinstance(value, list):
            return f"{name}: Expected array, received {type(value).__name__}"
        if not low <= len(value) <= high:
            return f"{name}: Array must contain between {low} and {high} element(s); got {len(value)}"
        bad = [i for i, item in enumerate(value) if not _is_uri(item)]
        return f"{name}.{bad[0]}: Invalid url" if bad else None
    raise ValueError(f"unknown rule {rule!r}")


def validate(body: Any) -> list[str]:
    """Every issue with a submit body, as the API's ``Body validation error!`` would list them."""
    if not isinstance(body, dict):
        return ["Expected object, received " + type(body).__name__]
    model = body.get("model")
    if model not in SCHEMAS:
        expected = " | ".join(f"'{m}'" for m in SCHEMAS)
        return [f"model: Invalid enum value. Expected {expected}, received '{model}'"]
    schema = SCHEMAS[model]
    issues = [f"{name}: Required" for name in schema["required"] if name not in body]
    prompt = body.get("prompt")
    if "prompt" in body and not isinstance(prompt, str):
        issues.append(f"prompt: Expected string, received {type(prompt).__name__}")
    elif isinstance(prompt, str) and len(prompt) > 2500:
        issues.append("prompt: String must contain at most 2500 character(s)")
    provider = body.get("provider")
    if provider is not None and str(provider).lower() not in ("kling", "klingai", "fal", "auto"):
        issues.append(f"provider: Invalid enum value. Expected 'kling' | 'fal' | 'auto', received '{provider}'")
    for name, value in body.items():
        rule = schema["fields"].get(name)
        if rule is None:
            if name not in COMMON_FIELDS:
                issues.append(f"Unrecognized key(s) in object: '{name}'")
            continue
        issue = _check(name, rule, value)
        if issue:
            issues.append(issue)
    return issues


def _duration(body: dict[str, Any]) -> int:
    return int(body.get("duration") or 5)


class _Emulator:
    def __init__(self, state: AimlState) -> None:
        self.state = state

    def _record(self, request: Request, body: Any) -> None:
        self.state.requests.append(Recorded(
            request.method, request.url.path, request.scope.get("query_string", b"").decode("latin-1"),
            dict(request.query_params), request.headers.get("authorization"), body))

    def _fault(self, request: Request, kind: str) -> Response | None:
        auth = request.headers.get("authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token or (self.state.api_key is not None and token != self.state.api_key):
            return _error(request, 401, MESSAGES[401])
        for fault in self.state.faults:
            if fault.on in ("any", kind):
                self.state.faults.remove(fault)
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return _error(request, fault.status, fault.message, headers)
        return None

    def _answer(self, payload: dict[str, Any]) -> Response:
        if self.state.malformed_next > 0:
            self.state.malformed_next -= 1
            return Response('{"id": "' + payload["id"][:8] + '", "status": ', media_type="application/json")
        return JSONResponse(payload)

    async def submit(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            self._record(request, raw.decode("utf-8", "replace"))
            return _error(request, 400, "Body validation error! Expected JSON body")
        self._record(request, body)
        fault = self._fault(request, "submit")
        if fault is not None:
            return fault
        issues = validate(body)
        if issues:
            return _error(request, 400, "Body validation error! " + "; ".join(issues))
        state = self.state
        outcome = state.outcomes.pop(0) if state.outcomes else state.outcome
        gen = Generation(f"{uuid.uuid4()}:{body['model']}", body["model"], body, outcome)
        state.generations[gen.id] = gen
        return self._answer({"id": gen.id, "status": state.steps[0] if state.steps else "queued"})

    async def fetch(self, request: Request) -> Response:
        self._record(request, None)
        fault = self._fault(request, "poll")
        if fault is not None:
            return fault
        gen_id = request.query_params.get("generation_id")
        if not gen_id:
            return _error(request, 400, "Query validation error! generation_id: Required")
        gen = self.state.generations.get(gen_id)
        if gen is None:
            return _error(request, 404, MESSAGES[404])
        gen.polls += 1
        if gen.polls < len(self.state.steps):
            return self._answer({"id": gen.id, "status": self.state.steps[gen.polls], "video": None,
                                 "error": None, "meta": None})
        return self._answer(self._final(request, gen))

    async def download(self, request: Request) -> Response:
        return await self.state.files.handle(request)     # looked up per call: tests may swap the host

    def _final(self, request: Request, gen: Generation) -> dict[str, Any]:
        state = self.state
        if gen.outcome == "error_named":
            return {"id": gen.id, "status": "error", "video": None, "error": dict(state.named_error), "meta": None}
        if gen.outcome == "error_detail":
            return {"id": gen.id, "status": "error", "error": dict(state.detail_error)}
        if gen.outcome == "unknown_status":
            return {"id": gen.id, "status": state.unknown_status, "video": None, "error": None}
        if gen.file_name is None:
            gen.file_name = state.files.add(mp4_bytes(state.video_seconds), ttl_s=state.result_ttl_s)
        base = str(request.base_url).rstrip("/")
        payload: dict[str, Any] = {"id": gen.id, "status": "completed",
                                   "video": {"url": f"{base}/files/{gen.file_name}"}, "error": None, "meta": None}
        if state.include_usage:
            payload["meta"] = {"usage": {"credits_used": _duration(gen.body) * state.credits_per_second}}
        return payload


def create_app(state: AimlState | None = None) -> Starlette:
    """The emulator app; its state (and fault knobs) is ``app.state.emulator``."""
    state = state or AimlState()
    emulator = _Emulator(state)
    app = Starlette(routes=[
        Route("/v2/video/generations", emulator.submit, methods=["POST"]),
        Route("/v1/video/generations", emulator.submit, methods=["POST"]),
        Route("/v2/video/generations", emulator.fetch, methods=["GET"]),
        Route("/files/{name}", emulator.download, methods=["GET"]),
    ])
    app.state.emulator = state
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="AI/ML API (Kling O1) loopback emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=API_KEY, help="the accepted Bearer key ('' accepts any)")
    args = parser.parse_args(argv)
    run_forever(create_app(AimlState(api_key=args.api_key or None)), args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])

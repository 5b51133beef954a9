"""Runpod public endpoint ``kling-video-o1-r2v`` (reference images, optional reference video).

Wire protocol (shared/reference/providers.md §3): submit with ``POST {base}/kling-video-o1-r2v/run``
(not ``/runsync``: its result is kept for only one minute), poll ``GET .../status/{id}``, cancel with
``POST .../cancel/{id}``. Statuses ``IN_QUEUE``, ``IN_PROGRESS``, ``RUNNING``, ``COMPLETED``,
``FAILED``, ``CANCELLED``, ``TIMED_OUT``; a finished job carries ``output.video_url`` (kept 7 days)
and ``output.cost`` (the billed USD). The ``error`` string of a failed job may embed the upstream
JSON, whose inner ``message`` is what we surface.

Runpod documents URL inputs only; local files are sent as data URIs, and a rejection of them is
reported as such, naming the providers that upload local files instead.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors, validation
from ..catalog import PROVIDERS, REAL_PROVIDERS
from ..jobs.model import Job, RemoteVideo
from ..media import data_uri
from ..requests import MediaRef
from . import _http
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

ENDPOINT_ID = "kling-video-o1-r2v"
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
MAX_RUN_PAYLOAD_BYTES = 10 * 1000 * 1000  # /run accepts at most 10 MB (operation reference)
RESULT_TTL_TEXT = "30 minutes"  # how long /run results stay queryable after they finish

_RUNNING = {"IN_PROGRESS", "RUNNING"}
_CONTENT_POLICY = re.compile(
    r"(?i)nsfw|safety|content[ _-]?policy|moderation|sensitive|inappropriate|"
    r"risk[ _-]?control"
)
_INPUT_FORMAT = re.compile(
    r"(?i)data[ _-]?ur[il]|base64|invalid[ _-]?url|url.*invalid|not a valid url|"
    r"unsupported (?:url|scheme)|must be (?:a |an )?(?:http|url|valid)"
)


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")
    video_url: str | None = None
    cost: float | None = None


class _StatusBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    status: str | None = None
    output: Any = None
    error: Any = None
    message: Any = None


def inner_message(text: str) -> str:
    """The most specific message in a Runpod error string.

    ``"Error submitting task: 400, {\\"code\\":400,\\"message\\":\\"bad image\\"}"`` -> ``"bad image"``;
    text without embedded JSON is returned as is.
    """
    decoder = json.JSONDecoder()
    found: str | None = None
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        message = _message_in(value)
        if message:
            found = message
    return (found or text).strip()


def _message_in(value: Any) -> str | None:
    if isinstance(value, str):
        return inner_message(value) if "{" in value else value
    if isinstance(value, dict):
        for key in ("message", "msg", "error_message", "detail", "error"):
            message = _message_in(value.get(key))
            if message:
                return message
    if isinstance(value, list) and value:
        return _message_in(value[0])
    return None


def describe(body: Any) -> str | None:
    """``_http`` hook: the provider's own message from an error body."""
    if isinstance(body, dict):
        return _message_in(body)
    if isinstance(body, str) and body.strip():
        return inner_message(body)
    return None


def upload_providers(operation: str) -> list[str]:
    """Real providers that upload local files and can run ``operation`` (from the catalog)."""
    return [
        name
        for name in REAL_PROVIDERS
        if any("upload" in v.input_kinds and operation in v.operations for v in PROVIDERS[name].variants)
    ]


def _refs(job: Job) -> list[MediaRef]:
    spec = job.spec
    return [*spec.reference_images, *([spec.reference_video] if spec.reference_video else [])]


def _has_local(job: Job) -> bool:
    return any(m.kind == "file" for m in _refs(job))


def _local_file_advice(operation: str) -> str:
    others = upload_providers(operation)
    alternative = f" or use provider {' or '.join(others)} (which upload local files)" if others else ""
    return f"Pass a public http(s) URL for each local file instead{alternative}."


class RunpodProvider:
    """Adapter for Runpod's Kling Video O1 R2V public endpoint."""

    name = "runpod"
    submit_attempts = 3  # 429 on submit means "not queued", so a short retry cannot double-bill
    backoff_s = 1.0
    max_backoff_s = 5.0

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx
        self._root = f"{(ctx.base_url or DEFAULT_BASE_URL).rstrip('/')}/{ENDPOINT_ID}"
        self._secrets = (ctx.api_key,) if ctx.api_key else ()

    # --- wire helpers -------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if not self._ctx.api_key:
            raise errors.NotConfigured(
                "runpod has no API key.", hint="Set RUNPOD_API_KEY in the server's environment and restart it."
            )
        return _http.auth_headers(self._ctx.api_key)

    async def _call(self, method: str, path: str, *, submit: bool = False, **kwargs: Any) -> Any:
        return await _http.request(
            self._ctx.client,
            self.name,
            method,
            f"{self._root}/{path}",
            submit=submit,
            describe=describe,
            secrets=self._secrets,
            headers=self._headers(),
            **kwargs,
        )

    # --- request body -------------------------------------------------------------------------

    def build_body(self, job: Job) -> dict[str, Any]:
        """The documented ``{"input": {...}}`` body for ``job`` (local files become data URIs)."""
        spec = job.spec
        validation.require(spec, self.name, job.tier)  # the catalog's rules, before any request
        self._check_payload(_refs(job), spec.operation)
        body: dict[str, Any] = {"prompt": spec.prompt, "images": [self._media(m) for m in spec.reference_images]}
        if spec.reference_video is not None:
            body["video"] = self._media(spec.reference_video)
        if spec.negative_prompt:
            body["negative_prompt"] = spec.negative_prompt
        body["aspect_ratio"] = spec.aspect_ratio or "16:9"
        body["duration"] = spec.duration if spec.duration is not None else 5
        body["seed"] = spec.seed if spec.seed is not None else -1
        body["enable_prompt_expansion"] = False
        body["enable_safety_checker"] = True
        return {"input": body}

    @staticmethod
    def _media(ref: MediaRef) -> str:
        if ref.kind == "url":
            return ref.value
        try:
            return data_uri(ref.value, ref.mime_type)
        except OSError as exc:
            raise errors.InvalidInputFile(
                f"cannot read the local {ref.media} file {ref.value!r} to send to runpod: {exc.strerror or exc}."
            ) from None

    @staticmethod
    def _check_payload(refs: list[MediaRef], operation: str) -> None:
        """Refuse, before anything is sent, local files too big for /run's 10 MB payload."""
        total = 0
        for ref in refs:
            if ref.kind == "file":
                try:
                    total += 4 * math.ceil(os.path.getsize(ref.value) / 3) + 64
                except OSError:
                    continue  # _media reports unreadable files with their path
        if total > MAX_RUN_PAYLOAD_BYTES:
            raise errors.InvalidRequest(
                f"the local files add up to about {total / 1e6:.1f} MB as data URIs, but runpod accepts "
                f"at most {MAX_RUN_PAYLOAD_BYTES / 1e6:.0f} MB per request.",
                hint=_local_file_advice(operation),
            )

    # --- protocol -----------------------------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        """``POST /run``; retries a 429 (never accepted) a few times, honouring Retry-After."""
        body = await anyio.to_thread.run_sync(self.build_body, job)  # data URIs read and encode files
        delay = self.backoff_s
        for attempt in range(1, self.submit_attempts + 1):
            try:
                answer = await self._call("POST", "run", submit=True, json=body)
                break
            except errors.RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else delay
                if attempt == self.submit_attempts or wait > self.max_backoff_s:
                    raise
                await anyio.sleep(wait)
                delay = min(delay * 2, self.max_backoff_s)
            except (errors.AuthenticationFailed, errors.InsufficientCredits) as exc:
                exc.may_have_accepted = False  # refused before queueing: nothing runs, nothing is billed
                raise
            except errors.RemoteNotFound as exc:
                raise errors.ProviderRejected(
                    f"runpod has no endpoint {ENDPOINT_ID} at {self._root} ({exc.message}).",
                    hint="Check KLING_MCP_RUNPOD_BASE_URL (default https://api.runpod.ai/v2) and restart.",
                    may_have_accepted=False,
                ) from None
            except errors.ProviderRejected as exc:
                if _has_local(job) and _INPUT_FORMAT.search(exc.message):
                    raise self._rejection(job, exc.message) from None
                raise
        parsed = self._parse(answer, "run")
        if not parsed.id:
            raise errors.ProviderProtocol(f"runpod accepted the job but its answer has no id: {self._snippet(answer)}")
        if parsed.status == "FAILED":
            raise self._rejection(job, self._error_text(parsed))
        return Accepted(remote_id=parsed.id, data={"endpoint": ENDPOINT_ID})

    async def poll(self, job: Job) -> PollResult:
        """``GET /status/{id}``: Running, Done (with the billed cost) or Failed."""
        remote_id = self._remote_id(job)
        try:
            answer = await self._call("GET", f"status/{remote_id}")
        except errors.RemoteNotFound:
            raise errors.RemoteNotFound(
                f"runpod no longer knows job {remote_id}: results of /run jobs are kept for only "
                f"{RESULT_TTL_TEXT} after they finish (Runpod's TTL), and this one has expired."
            ) from None
        try:
            parsed = self._parse(answer, "status")
        except errors.ProviderProtocol as exc:
            return Failed(code=exc.code, message=exc.message, hint=exc.hint)
        status = parsed.status
        if status == "IN_QUEUE":
            return Running(queued=True)
        if status in _RUNNING:
            return Running()
        if status == "COMPLETED":
            return self._completed(parsed, remote_id)
        if status == "FAILED":
            return self._failed(job, self._error_text(parsed))
        if status == "CANCELLED":
            return Failed(
                code="cancelled",
                message=f"runpod job {remote_id} was cancelled.",
                hint="Generate again if you still want this video.",
            )
        if status == "TIMED_OUT":
            return Failed(
                code=errors.ProviderTimeout.code,
                retryable=True,
                message=f"runpod stopped job {remote_id} after its execution timeout (TIMED_OUT).",
                hint=errors.ProviderTimeout.default_hint,
            )
        return Failed(
            code=errors.ProviderProtocol.code,
            hint=errors.ProviderProtocol.default_hint,
            message=f"runpod answered an unknown job status {status!r} for job {remote_id}.",
        )

    async def cancel(self, job: Job) -> bool:
        """``POST /cancel/{id}``; True when Runpod answers CANCELLED."""
        if not job.remote_id:
            return False
        try:
            answer = await self._call("POST", f"cancel/{job.remote_id}")
        except errors.RemoteNotFound:
            return False
        return isinstance(answer, dict) and answer.get("status") == "CANCELLED"

    # --- answers ------------------------------------------------------------------------------

    def _completed(self, parsed: _StatusBody, remote_id: str) -> PollResult:
        try:
            output = _Output.model_validate(parsed.output) if isinstance(parsed.output, dict) else None
        except ValidationError:
            output = None
        if output is None or not output.video_url:
            extra = f" ({self._error_text(parsed)})" if parsed.error else ""
            return Failed(
                code=errors.ProviderProtocol.code,
                hint=errors.ProviderProtocol.default_hint,
                message=f"runpod reported job {remote_id} COMPLETED without output.video_url{extra}.",
            )
        return Done(videos=[RemoteVideo(url=output.video_url, remote_key=remote_id)], cost_usd=output.cost)

    def _rejection(self, job: Job, message: str) -> errors.ProviderRejected:
        if _has_local(job) and _INPUT_FORMAT.search(message):
            return errors.ProviderRejected(
                self._local_rejected_text(message), hint=_local_file_advice(job.spec.operation), may_have_accepted=False
            )
        return errors.ProviderRejected(f"runpod rejected the job: {message}", may_have_accepted=False)

    def _failed(self, job: Job, message: str) -> Failed:
        if _has_local(job) and _INPUT_FORMAT.search(message):
            return Failed(
                code=errors.ProviderRejected.code,
                message=self._local_rejected_text(message),
                hint=_local_file_advice(job.spec.operation),
            )
        if _CONTENT_POLICY.search(message):
            return Failed(
                code=errors.ContentPolicy.code,
                message=f"runpod's safety checker blocked the job: {message}",
                hint=errors.ContentPolicy.default_hint,
            )
        return Failed(
            code=errors.JobFailed.code,
            message=f"runpod reported the job failed: {message}",
            hint=errors.JobFailed.default_hint,
        )

    @staticmethod
    def _local_rejected_text(message: str) -> str:
        return f"runpod did not accept a local file sent as a data URI (it documents URL inputs only): {message}"

    def _error_text(self, parsed: _StatusBody) -> str:
        raw = parsed.error if parsed.error is not None else parsed.message
        text = (describe(raw) if not isinstance(raw, str) else inner_message(raw)) or "no error message given"
        return errors.redact(text, self._secrets)

    def _parse(self, answer: Any, what: str) -> _StatusBody:
        if not isinstance(answer, dict):
            raise errors.ProviderProtocol(f"runpod answered /{what} with {self._snippet(answer)}, not a JSON object.")
        try:
            return _StatusBody.model_validate(answer)
        except ValidationError:
            raise errors.ProviderProtocol(
                f"runpod answered /{what} with an unexpected shape: {self._snippet(answer)}"
            ) from None

    def _snippet(self, value: Any) -> str:
        return errors.redact(json.dumps(value)[:160] if not isinstance(value, str) else value[:160], self._secrets)

    @staticmethod
    def _remote_id(job: Job) -> str:
        if not job.remote_id:
            raise errors.ProviderProtocol(f"job {job.job_id} has no runpod id to poll; it was never accepted.")
        return job.remote_id


__all__ = ["ENDPOINT_ID", "RunpodProvider", "describe", "inner_message"]

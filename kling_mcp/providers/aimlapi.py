"""AI/ML API adapter: the four ``klingai/video-o1-*`` models behind one POST/GET pair.

Wire protocol (shared/reference/providers.md §4): ``POST /v2/video/generations`` with a JSON body
whose fields depend on the model, then ``GET /v2/video/generations?generation_id=<id>`` until the
status is ``completed`` or ``error``. Ids look like ``<uuid>:klingai/video-o1-image-to-video``.
There is no cancel endpoint and no upload endpoint: local files go inline as base64 data URIs.
The billed cost arrives as ``meta.usage.credits_used`` (1 USD = 2,000,000 credits).
"""

from __future__ import annotations

import re
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors, validation
from ..jobs.model import Job, RemoteVideo
from ..requests import MediaRef, VideoSpec
from ._http import auth_headers, request
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

DEFAULT_BASE_URL = "https://api.aimlapi.com"
GENERATIONS_PATH = "/v2/video/generations"
CREDITS_PER_USD = 2_000_000

IMAGE_TO_VIDEO = "klingai/video-o1-image-to-video"
REFERENCE_TO_VIDEO = "klingai/video-o1-reference-to-video"
VIDEO_EDIT = "klingai/video-o1-video-to-video-edit"
VIDEO_REFERENCE = "klingai/video-o1-video-to-video-reference"

PENDING = frozenset({"queued", "waiting"})
RUNNING = frozenset({"generating"})


class _Video(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str | None = None


class _Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    credits_used: float | None = None


class _Meta(BaseModel):
    model_config = ConfigDict(extra="ignore")
    usage: _Usage | None = None


class _Generation(BaseModel):
    """The one response schema shared by submit and poll."""

    model_config = ConfigDict(extra="ignore")
    id: str
    status: str
    video: _Video | None = None
    error: Any = None
    meta: _Meta | None = None


def model_for(spec: VideoSpec) -> str:
    """The AI/ML API model id for a spec that ``validation.require`` accepted."""
    if spec.operation == "image":
        return IMAGE_TO_VIDEO
    if spec.operation == "reference":
        return VIDEO_REFERENCE if spec.reference_video is not None else REFERENCE_TO_VIDEO
    return VIDEO_EDIT


def describe_error_body(body: Any) -> str | None:
    """The provider's own message from an HTTP error body ``{message, statusCode, ...}``."""
    if not isinstance(body, dict):
        return None
    message = body.get("message")
    if isinstance(message, list):
        message = "; ".join(str(m) for m in message)
    if not message and isinstance(body.get("error"), (dict, str)):
        message = job_error_text(body["error"])[1]
    if not message:
        return None
    text = str(message)
    # AI/ML API also answers 403 "You have exhausted the available ... resource limit. Update your
    # payment method"; say "credits" so the seam classifies it as InsufficientCredits, not bad auth.
    low = text.lower()
    if (
        body.get("statusCode") == 403
        and "credit" not in low
        and ("exhausted" in low or "payment" in low or "billing" in low)
    ):
        text += " (account credits or plan limit used up)"
    return text


def job_error_text(error: Any) -> tuple[str, str]:
    """``(code, message)`` for a job error in either documented shape.

    ``{"name", "message"}`` (the schema) or ``{"detail": [{"loc", "msg", "type"}]}`` (what real
    failed jobs return); anything else is shown as it came.
    """
    if isinstance(error, str):
        return "job_failed", error or "no details"
    if not isinstance(error, dict):
        return "job_failed", "the provider reported an error without details"
    detail = error.get("detail")
    if isinstance(detail, list) and detail:
        parts, code = [], ""
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = item.get("loc")
            where = ".".join(str(x) for x in loc) if isinstance(loc, list) else (str(loc) if loc else "")
            msg = str(item.get("msg") or item.get("message") or "invalid")
            parts.append(f"{where}: {msg}" if where else msg)
            code = code or str(item.get("type") or "")
        return _code(code), "; ".join(parts)
    if isinstance(detail, str) and detail:
        return _code(str(error.get("name") or error.get("type") or "")), detail
    name = str(error.get("name") or error.get("type") or error.get("code") or "")
    message = str(error.get("message") or error.get("msg") or "") or (
        f"the provider reported {name}" if name else "the provider reported an error without details"
    )
    return _code(name), message


_POLICY_WORDS = ("policy", "nsfw", "moderation", "safety", "sensitive", "inappropriate")


def _code(name: str) -> str:
    """A stable snake_case code from the provider's error name/type (``job_failed`` if none)."""
    if not name:
        return "job_failed"
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    snake = re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").lower()
    if any(word in snake for word in _POLICY_WORDS):
        return errors.ContentPolicy.code
    return snake[:64] or "job_failed"


class AimlapiProvider:
    """The :class:`~kling_mcp.providers.base.VideoProvider` for AI/ML API."""

    name = "aimlapi"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx
        self._base = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._secrets = (ctx.api_key,) if ctx.api_key else ()

    # --- wire ---------------------------------------------------------------------------------

    async def _call(self, method: str, *, submit: bool = False, **kwargs: Any) -> _Generation:
        body = await request(
            self._ctx.client,
            self.name,
            method,
            self._base + GENERATIONS_PATH,
            submit=submit,
            describe=describe_error_body,
            secrets=self._secrets,
            headers=auth_headers(self._ctx.api_key),
            **kwargs,
        )
        try:
            return _Generation.model_validate(body)
        except ValidationError:
            shown = errors.redact(str(body)[:160], self._secrets)
            raise errors.ProviderProtocol(
                f"aimlapi answered without the documented 'id' and 'status': {shown}"
            ) from None

    async def build_body(self, job: Job) -> dict[str, Any]:
        """The exact JSON body for ``job`` (public so tests can pin it)."""
        spec = job.spec
        validation.require(spec, "aimlapi", job.tier)  # the catalog's rules, before any request
        model = model_for(spec)
        body: dict[str, Any] = {"model": model, "prompt": spec.prompt}
        if model == IMAGE_TO_VIDEO:
            assert spec.first_frame is not None
            body["image_url"] = await self._media(spec.first_frame)
            if spec.last_frame is not None:
                body["last_image_url"] = await self._media(spec.last_frame)
            self._duration(body, spec)
            return body
        if model in (VIDEO_EDIT, VIDEO_REFERENCE):
            source = spec.video if model == VIDEO_EDIT else spec.reference_video
            assert source is not None
            body["video_url"] = await self._media(source)
        if spec.reference_images:
            body["image_list"] = [await self._media(ref) for ref in spec.reference_images]
        if model != VIDEO_EDIT:
            if spec.aspect_ratio:
                body["aspect_ratio"] = spec.aspect_ratio
            self._duration(body, spec)
        if model != REFERENCE_TO_VIDEO and spec.keep_original_sound is not None:
            body["keep_audio"] = spec.keep_original_sound
        return body

    @staticmethod
    def _duration(body: dict[str, Any], spec: VideoSpec) -> None:
        if spec.duration is not None:
            body["duration"] = int(spec.duration)  # the schema's integer enum, not the docs' "5"

    @staticmethod
    async def _media(ref: MediaRef) -> str:
        if ref.kind == "url":
            return ref.value
        from .. import media

        try:
            return await anyio.to_thread.run_sync(media.data_uri, ref.value, ref.mime_type)
        except OSError as exc:
            raise errors.InvalidInputFile(
                f"cannot read the local {ref.media} {ref.value!r} to send to aimlapi: {exc.strerror}."
            ) from None

    # --- VideoProvider ------------------------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        body = await self.build_body(job)
        generation = await self._call("POST", submit=True, json=body)
        return Accepted(remote_id=generation.id, data={"model": body["model"]})

    async def poll(self, job: Job) -> PollResult:
        if not job.remote_id:
            raise errors.ProviderProtocol(f"job {job.job_id} has no aimlapi generation id to poll.")
        generation = await self._call("GET", params={"generation_id": job.remote_id})
        status = generation.status.strip().lower()
        if status in PENDING:
            return Running(queued=True)
        if status in RUNNING:
            return Running()
        if status == "completed":
            url = generation.video.url if generation.video else None
            if not url:
                return Failed(
                    code=errors.ProviderProtocol.code,
                    message="aimlapi reported the generation completed but gave no video.url.",
                    hint="Generate again; report this to AI/ML API support with the job id.",
                )
            credits = generation.meta.usage.credits_used if generation.meta and generation.meta.usage else None
            cost = round(credits / CREDITS_PER_USD, 6) if credits is not None else None
            return Done(videos=[RemoteVideo(url=url, remote_key=generation.id)], cost_usd=cost)
        if status == "error":
            code, message = job_error_text(generation.error)
            message = errors.redact(f"aimlapi could not generate the video: {message}", self._secrets)
            hint = (
                errors.ContentPolicy.default_hint
                if code == errors.ContentPolicy.code
                else errors.JobFailed.default_hint
            )
            return Failed(code=code, message=message, hint=hint)
        return Failed(
            code=errors.ProviderProtocol.code,
            message=f"aimlapi reported an unknown status {generation.status[:40]!r}.",
            hint=errors.ProviderProtocol.default_hint,
        )

    async def cancel(self, job: Job) -> bool:
        """AI/ML API has no cancel endpoint: the generation runs (and is billed) to the end."""
        return False

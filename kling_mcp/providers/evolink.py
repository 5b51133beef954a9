"""EvoLink adapter: ``kling-o1-image-to-video``, ``kling-o1-video-edit`` and ``kling-o1-video-edit-fast``.

Wire protocol (shared/reference/providers.md §5): ``POST {api}/v1/videos/generations`` with the
model id in the JSON body answers a task object whose ``id`` starts with ``task-unified-``;
``GET {api}/v1/tasks/{id}`` reports ``pending`` / ``processing`` (``progress`` 0-100) /
``completed`` (``results``: links valid 24 h) / ``failed`` (``error.code``). HTTP errors carry
``{"error": {"code", "message", "type", "param"?}}``. There is no cancel endpoint.

Local inputs go through the files API (``POST {files}/api/v1/files/upload/stream``), whose links
live 72 h; uploads are cached by content hash in ``ctx.kv`` for a little less than that.
"""

from __future__ import annotations

import mimetypes
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors, validation
from ..catalog.evolink import EVOLINK, USD_PER_CREDIT
from ..jobs.model import Job, RemoteVideo
from ..media import sha256_file
from ..requests import MediaRef, VideoSpec
from . import _http
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

NAME = "evolink"
DEFAULT_API = "https://api.evolink.ai"
DEFAULT_FILES = "https://files-api.evolink.ai"
FILES_URL_VAR = "KLING_MCP_EVOLINK_FILES_URL"
TASK_PREFIX = "task-unified-"

_VARIANT = EVOLINK.variants[0]
_IMAGE = _VARIANT.operations["image"]
_EDIT = _VARIANT.operations["edit"]
MODEL_I2V = _IMAGE.model or "kling-o1-image-to-video"
MODEL_EDIT = _EDIT.model or "kling-o1-video-edit"
MODEL_EDIT_FAST = _EDIT.model_fast or "kling-o1-video-edit-fast"

FILE_LIFETIME_S = 72 * 3600.0
# Cached upload links are dropped this long before EvoLink deletes the file, so a job submitted
# with a cached link still has time for EvoLink to fetch the input.
UPLOAD_CACHE_MARGIN_S = 2 * 3600.0
UPLOAD_TIMEOUT = httpx.Timeout(60.0, write=600.0)

RETRYABLE_TASK_ERRORS = frozenset({"generation_timeout", "service_unavailable", "resource_exhausted", "service_error"})
_TEMPORARY_HINT = "This is temporary at EvoLink; submit the job again in a few minutes."
TASK_ERROR_HINTS: dict[str, str] = {
    "content_policy_violation": (
        "Rephrase the prompt or use other inputs; EvoLink's safety filter blocks real "
        "faces, celebrities, logos, minors and adult or violent content."
    ),
    "invalid_parameters": (
        "Change the parameter EvoLink named (prompt length, image <= 10 MB jpg/png/webp, "
        "input video length) and submit again."
    ),
    "image_processing_error": (
        "EvoLink could not fetch or decode an input image; pass a jpg/png/webp under "
        "10 MB, as a local file or a publicly downloadable URL."
    ),
    "image_dimension_mismatch": "Crop the image to the requested aspect_ratio, or change aspect_ratio to match it.",
    "request_cancelled": "The task was cancelled at EvoLink; submit it again if you still want it.",
    "generation_failed_no_content": "Make the prompt clearer or use other input images, then submit again.",
    "quota_exceeded": "Wait for running EvoLink tasks to finish or top up the account, then submit again.",
    "resource_not_found": "EvoLink no longer knows this task; generate the video again.",
    "generation_timeout": _TEMPORARY_HINT,
    "service_error": _TEMPORARY_HINT,
    "resource_exhausted": _TEMPORARY_HINT,
    "service_unavailable": _TEMPORARY_HINT,
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Usage(_Wire):
    billing_rule: str | None = None
    credits_reserved: float | None = None
    user_group: str | None = None


class _TaskError(_Wire):
    code: str | int | None = None
    message: str | None = None
    type: str | None = None


class _Task(_Wire):
    id: str | None = None
    model: str | None = None
    status: str | None = None
    progress: float | None = None
    results: list[str] | None = None
    result_data: list[dict[str, Any]] | None = None
    error: _TaskError | None = None
    usage: _Usage | None = None


class _FileData(_Wire):
    file_id: str | None = None
    file_url: str | None = None
    expires_at: str | None = None


class _FileResponse(_Wire):
    success: bool | None = None
    code: int | None = None
    msg: str | None = None
    data: _FileData | None = None


def describe_error(body: Any) -> str | None:
    """The provider's own message from an API or files-API error body, with its code and param."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, dict):
        message = str(err.get("message") or "").strip() or "no message"
        bits = [f"code {err['code']}"] if err.get("code") not in (None, "") else []
        if err.get("param"):
            bits.append(f"param {err['param']}")
        if err.get("fallback_suggestion"):
            bits.append(f"suggestion: {err['fallback_suggestion']}")
        return f"{message} ({', '.join(bits)})" if bits else message
    if "msg" in body:  # files API: {"success": false, "code": 400, "msg": "..."}
        return f"{body.get('msg')} (files API code {body.get('code')})"
    return None


def model_for(spec: VideoSpec) -> str:
    """The EvoLink model id for a spec that ``validation.require`` accepted (image or edit)."""
    if spec.operation == "image":
        return MODEL_I2V
    return MODEL_EDIT_FAST if spec.fast else MODEL_EDIT


class EvolinkProvider:
    """Adapter for EvoLink's Kling O1 models (see the module docstring for the protocol)."""

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self.api = (ctx.base_url or DEFAULT_API).rstrip("/")
        self.files_api = (ctx.extra_urls.get(FILES_URL_VAR) or DEFAULT_FILES).rstrip("/")
        self._secrets = (ctx.api_key,) if ctx.api_key else ()

    # --- protocol ---------------------------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        """Upload local inputs, create the task and return its ``task-unified-`` id."""
        body = await self.build_body(job)
        try:
            data = await self._call("POST", f"{self.api}/v1/videos/generations", submit=True, json=body)
        except errors.RemoteNotFound as exc:
            raise errors.ProviderRejected(
                exc.message,
                may_have_accepted=False,
                hint=f"Check KLING_MCP_EVOLINK_BASE_URL (the API root, default {DEFAULT_API}).",
            ) from None
        task = self._parse(data, "the submit answer")
        if not task.id:
            raise errors.ProviderProtocol(
                "evolink accepted the request but its answer has no task id.", may_have_accepted=True
            )
        reserved = task.usage.credits_reserved if task.usage else None
        return Accepted(remote_id=task.id, cost_usd=None, data={"credits_reserved": reserved})

    async def poll(self, job: Job) -> PollResult:
        """One ``GET /v1/tasks/{id}``: Running, Done (result links) or Failed (task error)."""
        if not job.remote_id:
            raise errors.ProviderProtocol(f"job {job.job_id} has no evolink task id to poll.")
        data = await self._call("GET", f"{self.api}/v1/tasks/{job.remote_id}")
        task = self._parse(data, "the task answer")
        status = (task.status or "").lower()
        if status in ("pending", "processing"):
            progress = None if task.progress is None else max(0.0, min(100.0, float(task.progress)))
            return Running(progress=progress, queued=status == "pending")
        if status == "completed":
            return self._done(job.remote_id, task)
        if status == "failed":
            err = task.error or _TaskError()
            code = str(err.code or "unknown_error")
            return Failed(
                code=code,
                message=err.message or f"evolink reports the task failed ({code}).",
                retryable=code in RETRYABLE_TASK_ERRORS,
                hint=TASK_ERROR_HINTS.get(code, errors.JobFailed.default_hint),
            )
        return Failed(
            code="provider_protocol",
            message=f"evolink reported an unknown task status {task.status!r}.",
            hint=errors.ProviderProtocol.default_hint,
        )

    async def cancel(self, job: Job) -> bool:
        """EvoLink documents no cancel endpoint, so nothing is sent and the task keeps running."""
        return False

    # --- request body -------------------------------------------------------------------------

    async def build_body(self, job: Job) -> dict[str, Any]:
        """The exact JSON body for ``POST /v1/videos/generations`` (uploads local inputs first)."""
        spec = job.spec
        validation.require(spec, NAME, job.tier)  # the catalog's rules, before anything is uploaded
        model = model_for(spec)
        body: dict[str, Any] = {"model": model, "prompt": spec.prompt}
        if model == MODEL_I2V:
            assert spec.first_frame is not None
            frames = [spec.first_frame] + ([spec.last_frame] if spec.last_frame else [])
            body["image_urls"] = [await self.media_url(ref) for ref in frames]
            if spec.aspect_ratio:
                body["aspect_ratio"] = spec.aspect_ratio
            if spec.duration is not None:
                body["duration"] = spec.duration
        else:
            assert spec.video is not None
            body["video_urls"] = [await self.media_url(spec.video)]
            if spec.reference_images:
                body["image_urls"] = [await self.media_url(ref) for ref in spec.reference_images]
            if spec.keep_original_sound is not None:
                body["keep_original_sound"] = spec.keep_original_sound
        return body

    # --- uploads --------------------------------------------------------------------------------

    async def media_url(self, ref: MediaRef) -> str:
        """A URL EvoLink can fetch: the URL itself, or the files-API link of an uploaded local file."""
        if ref.kind == "url":
            return ref.value
        digest = ref.sha256 or await anyio.to_thread.run_sync(sha256_file, ref.value)
        key = f"evolink:upload:{digest}"
        cached = await self.ctx.kv.kv_get(key)
        if isinstance(cached, dict) and cached.get("file_url"):
            return str(cached["file_url"])
        file_url, lifetime = await self._upload(ref)
        keep = lifetime - UPLOAD_CACHE_MARGIN_S
        if keep > 0:
            await self.ctx.kv.kv_set(key, {"file_url": file_url, "uploaded_at": time.time()}, expire_s=keep)
        return file_url

    async def _upload(self, ref: MediaRef) -> tuple[str, float]:
        """Stream one local file to the files API; return its link and its remaining lifetime (s)."""
        path = Path(ref.value)
        if not path.is_file():
            raise errors.InvalidInputFile(f"the input file {path} no longer exists; it cannot be uploaded to evolink.")
        mime = (
            ref.mime_type
            or mimetypes.guess_type(path.name)[0]
            or ("video/mp4" if ref.media == "video" else "image/png")
        )
        url = f"{self.files_api}/api/v1/files/upload/stream"
        try:
            with path.open("rb") as fh:
                data = await self._call(
                    "POST", url, files={"file": (path.name, fh, mime)}, timeout=UPLOAD_TIMEOUT, json_content=False
                )
            try:
                answer = _FileResponse.model_validate(data)
            except ValidationError:
                answer = _FileResponse()
            if answer.success is False:  # the files API can refuse inside an HTTP 200
                code = answer.code if isinstance(answer.code, int) and answer.code >= 400 else 400
                raise _http.error_for_status(
                    NAME, httpx.Response(code, json=data), submit=False, describe=describe_error, secrets=self._secrets
                )
            if answer.data is None or not answer.data.file_url:
                raise errors.ProviderProtocol(
                    f"the files API answered without a file_url: {errors.redact(str(data)[:160], self._secrets)}"
                )
        except errors.RemoteNotFound as exc:
            raise errors.ProviderRejected(
                f"uploading {path.name} to evolink's files API failed: {exc.message}",
                may_have_accepted=False,
                hint=f"Check {FILES_URL_VAR} (the files API root, default {DEFAULT_FILES}).",
            ) from None
        except errors.ProviderError as exc:
            # Nothing was submitted yet, so the job cannot have started or been billed.
            exc.message = f"uploading {path.name} to evolink's files API failed: {exc.message}"
            exc.args = (exc.message,)
            exc.may_have_accepted = False
            if isinstance(exc, errors.InsufficientCredits):
                exc.hint = (
                    "EvoLink's file storage may be full (100 files, each kept 72 h) or the account is "
                    "out of credits: delete uploaded files or top up, or pass public URLs instead."
                )
            raise
        return answer.data.file_url, _lifetime(answer.data.expires_at)

    # --- helpers --------------------------------------------------------------------------------

    async def _call(
        self, method: str, url: str, *, submit: bool = False, json_content: bool = True, **kwargs: Any
    ) -> Any:
        headers = _http.auth_headers(self.ctx.api_key)
        if not json_content:
            headers.pop("Content-Type", None)  # httpx sets the multipart boundary itself
        return await _http.request(
            self.ctx.client,
            NAME,
            method,
            url,
            submit=submit,
            describe=describe_error,
            secrets=self._secrets,
            headers=headers,
            **kwargs,
        )

    def _parse(self, data: Any, what: str) -> _Task:
        try:
            return _Task.model_validate(data)
        except ValidationError:
            raise errors.ProviderProtocol(
                f"evolink sent {what} in an unexpected shape: {errors.redact(str(data)[:160], self._secrets)}"
            ) from None

    def _done(self, remote_id: str, task: _Task) -> PollResult:
        urls = list(task.results or [])
        if not urls and task.result_data:
            urls = [str(item["video_url"]) for item in task.result_data if item.get("video_url")]
        if not urls:
            return Failed(
                code="provider_protocol",
                message="evolink reported the task completed without results.",
                hint=errors.ProviderProtocol.default_hint,
            )
        credits = task.usage.credits_reserved if task.usage else None
        cost = round(credits * USD_PER_CREDIT, 4) if credits is not None else None
        # EvoLink bills credits; the dollar figure is our conversion at the published rate, not a bill.
        return Done(
            videos=[RemoteVideo(url=u, remote_key=f"{remote_id}-{n}") for n, u in enumerate(urls)],
            cost_usd=cost,
            cost_basis="inferred",
        )


def _lifetime(expires_at: str | None) -> float:
    """Seconds until an uploaded file expires: the files API's ``expires_at``, at most 72 h."""
    if expires_at:
        try:
            stamp = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
            if stamp.tzinfo is not None:
                return min(FILE_LIFETIME_S, stamp.timestamp() - time.time())
        except ValueError:
            pass
    return FILE_LIFETIME_S

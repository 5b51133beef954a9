"""Replicate adapter: ``kwaivgi/kling-o1`` for every Kling O1 mode.

Wire protocol (shared/reference/providers.md §7b): ``POST {api}/models/kwaivgi/kling-o1/predictions``
with ``{"input": {...}}`` and ``Authorization: Bearer <REPLICATE_API_TOKEN>`` answers a prediction;
``GET {api}/predictions/{id}`` reports ``starting`` -> ``processing`` -> ``succeeded`` (``output``: the
video URL) | ``failed`` (``error``) | ``canceled`` | ``aborted``; ``POST {api}/predictions/{id}/cancel``.

Every submit carries ``Cancel-After``: a prediction that has not started by then is ``aborted``,
and Replicate bills aborted predictions nothing. Outputs are deleted after an hour, so the runner
downloads them at once. Local files go through the Files API (``POST {api}/files``, field ``content``).
``keep_original_sound`` unset is sent as an explicit ``false`` with a video (Replicate's default is true).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors, validation
from ..catalog.replicate import MODEL
from ..jobs.model import Job, RemoteVideo
from ..requests import MediaRef
from . import _http
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

NAME = "replicate"
DEFAULT_API = "https://api.replicate.com/v1"
CANCEL_AFTER = "30m"  # not started within this: aborted, not billed
UPLOAD_TIMEOUT = httpx.Timeout(60.0, write=600.0)
MAX_FILE_BYTES = 200 * 1024 * 1024  # reference_video: <= 200 MB
_POLICY_WORDS = ("sensitive", "e005", "nsfw", "policy", "flagged", "moderation", "safety")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Prediction(_Wire):
    id: str
    status: str
    output: Any = None
    error: Any = None
    data_removed: bool | None = None


class _FileUrls(_Wire):
    get: str


class _File(_Wire):
    id: str | None = None
    urls: _FileUrls


def describe_error(body: Any) -> str | None:
    """Replicate's own message: ``detail`` (string or list), with a problem-details ``title`` and
    the ``invalid_fields`` of a 422."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    parts = [str(body["title"])] if body.get("title") and body.get("title") != detail else []
    if detail:
        parts.append(str(detail))
    fields = body.get("invalid_fields")
    if isinstance(fields, list) and fields:
        parts.append(
            "; ".join(f"{f.get('field')}: {f.get('description')}" if isinstance(f, dict) else str(f) for f in fields)
        )
    return ": ".join(parts) or None


def _video_url(output: Any) -> str | None:
    if isinstance(output, str) and output:
        return output
    if isinstance(output, list) and output and isinstance(output[0], str):
        return output[0]
    return None


def _succeeded(prediction: _Prediction) -> PollResult:
    url = _video_url(prediction.output)
    if url:
        return Done(videos=[RemoteVideo(url=url, remote_key=prediction.id)])
    if prediction.data_removed:
        return Failed(
            code=errors.RemoteNotFound.code,
            message=(
                "replicate finished the prediction but has already deleted its output "
                "(it keeps files for an hour; this server was not running to fetch it)."
            ),
            hint=errors.RemoteNotFound.default_hint,
        )
    return Failed(
        code=errors.ProviderProtocol.code,
        message="replicate reports the prediction succeeded but gives no output URL.",
        hint="Generate the video again.",
    )


def _stopped(status: str, error_text: str) -> Failed:
    """The failed job for a prediction that ended without a video (or in a status we do not know)."""
    if status == "failed":
        policy = any(word in error_text.lower() for word in _POLICY_WORDS)
        return Failed(
            code=errors.ContentPolicy.code if policy else "job_failed",
            message=f"replicate could not make the video: {error_text}",
            hint=errors.ContentPolicy.default_hint if policy else errors.ProviderRejected.default_hint,
        )
    if status == "aborted":
        return Failed(
            code="aborted",
            message=(
                f"replicate aborted the prediction: it had not started within {CANCEL_AFTER} "
                "(Cancel-After). Replicate does not bill aborted predictions."
            ),
            retryable=True,
            hint="Replicate is busy; submit the job again later or choose another provider.",
        )
    if status == "canceled":
        return Failed(
            code="cancelled_at_provider",
            message="the prediction was canceled at replicate (not by this server).",
            hint="Submit the job again if you still want it.",
        )
    return Failed(
        code=errors.ProviderProtocol.code,
        message=f"replicate reported an unknown prediction status {status[:40]!r}.",
        hint=errors.ProviderProtocol.default_hint,
    )


class ReplicateProvider:
    """The :class:`~kling_mcp.providers.base.VideoProvider` for Replicate's ``kwaivgi/kling-o1``."""

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self.api = (ctx.base_url or DEFAULT_API).rstrip("/")
        self._secrets = (ctx.api_key,) if ctx.api_key else ()

    # --- VideoProvider ------------------------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        body = await self.build_body(job)
        headers = {**_http.auth_headers(self.ctx.api_key), "Cancel-After": CANCEL_AFTER}
        data = await self._call(
            "POST", f"{self.api}/models/{MODEL}/predictions", submit=True, json=body, headers=headers
        )
        prediction = self._parse(data, "the prediction it created", may_have_accepted=True)
        return Accepted(remote_id=prediction.id)

    async def poll(self, job: Job) -> PollResult:
        if not job.remote_id:
            raise errors.ProviderProtocol(f"job {job.job_id} has no replicate prediction id to poll.")
        prediction = self._parse(await self._call("GET", f"{self.api}/predictions/{job.remote_id}"), "the prediction")
        status = prediction.status.strip().lower()
        if status == "starting":
            return Running(queued=True)
        if status == "processing":
            return Running()
        if status == "succeeded":
            return _succeeded(prediction)
        return _stopped(status, errors.redact(str(prediction.error or "no details"), self._secrets))

    async def cancel(self, job: Job) -> bool:
        if not job.remote_id:
            return False
        data = await self._call("POST", f"{self.api}/predictions/{job.remote_id}/cancel")
        prediction = self._parse(data, "the canceled prediction")
        return prediction.status.strip().lower() in ("canceled", "aborted")

    # --- request body -------------------------------------------------------------------------

    async def build_body(self, job: Job) -> dict[str, Any]:
        """The exact JSON body of the prediction (uploads local inputs first)."""
        spec = job.spec
        match = validation.require(spec, NAME, job.tier)  # the catalog's rules, before any upload
        tier = match.variant.tier if match.variant else "pro"
        inputs: dict[str, Any] = {"prompt": spec.prompt, "mode": "pro" if tier == "pro" else "std"}
        if spec.first_frame is not None:
            inputs["start_image"] = await self.media_url(spec.first_frame)
        if spec.last_frame is not None:
            inputs["end_image"] = await self.media_url(spec.last_frame)
        if spec.reference_images:
            inputs["reference_images"] = [await self.media_url(ref) for ref in spec.reference_images]
        video = spec.video if spec.operation == "edit" else spec.reference_video
        if video is not None:
            inputs["reference_video"] = await self.media_url(video)
            inputs["video_reference_type"] = "base" if spec.operation == "edit" else "feature"
            inputs["keep_original_sound"] = bool(spec.keep_original_sound)  # unset = not kept (default: true)
        if spec.operation != "edit" and match.duration is not None:
            inputs["duration"] = int(match.duration)
        if spec.operation in ("text", "reference") and match.aspect_ratio:
            inputs["aspect_ratio"] = match.aspect_ratio
        return {"input": inputs}

    # --- uploads --------------------------------------------------------------------------------

    async def media_url(self, ref: MediaRef) -> str:
        """A URL Replicate can fetch: the URL itself, or the Files API link of an uploaded local file."""
        if ref.kind == "url":
            return ref.value
        path = Path(ref.value)
        if not path.is_file():
            raise errors.InvalidInputFile(
                f"the input file {path} no longer exists; it cannot be uploaded to replicate."
            )
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise errors.InvalidInputFile(
                f"{path.name} is {size / 1e6:.0f} MB; replicate accepts input files up to 200 MB.",
                hint="Shorten or compress the file, then call again.",
            )
        mime = ref.mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = _http.auth_headers(self.ctx.api_key)
        headers.pop("Content-Type")  # httpx sets the multipart boundary itself
        try:
            with path.open("rb") as handle:
                data = await self._call(
                    "POST",
                    f"{self.api}/files",
                    headers=headers,
                    files={"content": (path.name, handle, mime)},
                    timeout=UPLOAD_TIMEOUT,
                )
            try:
                return _File.model_validate(data).urls.get
            except ValidationError:
                raise errors.ProviderProtocol(
                    f"replicate's Files API answered without urls.get: {self._shown(data)}"
                ) from None
        except errors.ProviderError as exc:
            # Nothing was submitted yet, so nothing can have started or been billed.
            exc.message = f"uploading {path.name} to replicate's Files API failed: {exc.message}"
            exc.args = (exc.message,)
            exc.may_have_accepted = False
            raise

    # --- helpers --------------------------------------------------------------------------------

    async def _call(self, method: str, url: str, *, submit: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", _http.auth_headers(self.ctx.api_key))
        return await _http.request(
            self.ctx.client,
            NAME,
            method,
            url,
            submit=submit,
            describe=describe_error,
            secrets=self._secrets,
            **kwargs,
        )

    def _parse(self, data: Any, what: str, may_have_accepted: bool = False) -> _Prediction:
        try:
            return _Prediction.model_validate(data)
        except ValidationError:
            raise errors.ProviderProtocol(
                f"replicate sent {what} without an id and status: {self._shown(data)}",
                may_have_accepted=may_have_accepted,
            ) from None

    def _shown(self, data: Any) -> str:
        return errors.redact(str(data)[:160], self._secrets)

"""Runware's wire format for Kling O1: task bodies, response envelopes and error codes.

Pure functions and private models only (no I/O), so the exact JSON and every mapping can be
tested without a server. Sources: shared/seeds/runware-kling-video-o1-{pro,standard}.md and
shared/reference/providers.md §2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors
from ..catalog import ModelVariant
from ..requests import MediaRef, VideoSpec

PROVIDER = "runware"
ENV_KEY = "RUNWARE_API_KEY"
PROCESSING, SUCCESS, ERROR = "processing", "success", "error"


# --- request bodies ---------------------------------------------------------------------------


def inference_task(
    task_uuid: str, variant: ModelVariant, spec: VideoSpec, media: Callable[[MediaRef], str]
) -> dict[str, Any]:
    """The ``videoInference`` task for ``spec`` (one element of the request array).

    ``media`` turns an input into what Runware accepts (the URL, or the UUID of an upload).
    Field order follows the seed examples. Edits send neither ``duration`` nor a size: Runware
    makes the output as long and as large as the input video.
    """
    task: dict[str, Any] = {
        "taskType": "videoInference",
        "taskUUID": task_uuid,
        "model": variant.model,
        "positivePrompt": spec.prompt,
    }
    inputs: dict[str, Any] = {}
    klingai: dict[str, Any] = {}
    if spec.operation in ("text", "reference"):
        width, height = _size(variant, spec.aspect_ratio)
        task["width"], task["height"] = width, height
    if spec.operation != "edit":
        task["duration"] = _duration(variant, spec)
    if spec.operation == "image":
        frames: list[dict[str, str]] = []
        if spec.first_frame is not None:
            frames.append({"image": media(spec.first_frame), "frame": "first"})
        if spec.last_frame is not None:
            frames.append({"image": media(spec.last_frame), "frame": "last"})
        if not frames:
            raise errors.InvalidRequest(
                "an image-to-video job needs first_frame (and optionally last_frame).",
                hint="Pass first_frame as a URL or a local image path.",
            )
        inputs["frameImages"] = frames
    elif spec.operation == "reference":
        if spec.reference_images:
            inputs["referenceImages"] = [media(ref) for ref in spec.reference_images]
        if spec.reference_video is not None:
            inputs["referenceVideos"] = [media(spec.reference_video)]
            if spec.keep_original_sound is not None:
                klingai["keepOriginalSound"] = spec.keep_original_sound
    elif spec.operation == "edit":
        if spec.video is None:
            raise errors.InvalidRequest("an edit needs the video to edit.", hint="Pass video as a URL or a local path.")
        inputs["video"] = media(spec.video)
        if spec.reference_images:
            inputs["referenceImages"] = [media(ref) for ref in spec.reference_images]
        if spec.keep_original_sound is not None:
            klingai["keepOriginalSound"] = spec.keep_original_sound
        if spec.fast:
            klingai["fast"] = True
    if klingai:
        task["providerSettings"] = {"klingai": klingai}
    if inputs:
        task["inputs"] = inputs
    task.update({"deliveryMethod": "async", "outputType": "URL", "outputFormat": "MP4", "includeCost": True})
    if spec.num_videos > 1:
        task["numberResults"] = spec.num_videos
    return task


def _size(variant: ModelVariant, aspect_ratio: str | None) -> tuple[int, int]:
    return variant.sizes[aspect_ratio or "16:9"]


def _duration(variant: ModelVariant, spec: VideoSpec) -> int:
    op = variant.operations[spec.operation]
    return spec.duration if spec.duration is not None else (op.default_duration or 5)


def get_response_task(task_uuid: str) -> dict[str, Any]:
    return {"taskType": "getResponse", "taskUUID": task_uuid}


def image_upload_task(task_uuid: str, data_uri: str) -> dict[str, Any]:
    return {"taskType": "imageUpload", "taskUUID": task_uuid, "image": data_uri}


def media_upload_task(task_uuid: str, data_uri: str) -> dict[str, Any]:
    return {"taskType": "mediaStorage", "taskUUID": task_uuid, "operation": "upload", "media": data_uri}


# --- response envelopes -----------------------------------------------------------------------


class WireError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = "unknownError"
    message: str = ""
    parameter: str | None = None
    taskUUID: str | None = None
    taskType: str | None = None


class WireItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    taskType: str | None = None
    taskUUID: str | None = None
    status: str | None = None
    videoUUID: str | None = None
    videoURL: str | None = None
    cost: float | None = None
    progress: float | None = None
    error: WireError | str | None = None
    code: str | None = None  # an error object that landed in ``data``
    message: str | None = None
    imageUUID: str | None = None
    imageURL: str | None = None
    mediaUUID: str | None = None
    mediaURL: str | None = None

    def failure(self) -> WireError | None:
        """The error this item carries, if it is an error item."""
        if isinstance(self.error, WireError):
            return self.error.model_copy(update={"taskUUID": self.error.taskUUID or self.taskUUID})
        if isinstance(self.error, str) or self.code or self.status == ERROR:
            code = self.code or (self.error if isinstance(self.error, str) else None) or "taskFailed"
            return WireError(code=code, message=self.message or "", taskUUID=self.taskUUID, taskType=self.taskType)
        return None


@dataclass(frozen=True)
class Envelope:
    items: list[WireItem]
    errors: list[WireError]


def parse_envelope(body: Any) -> Envelope:
    """Read ``{"data":[...], "errors":[...]}`` (either may be absent), the SDK's pre-stream form
    ``{"error":{...}}``, or a bare list. Raises ProviderProtocol on anything else."""
    try:
        if isinstance(body, list):
            return Envelope([WireItem.model_validate(i) for i in body], [])
        if isinstance(body, dict):
            raw_errors = list(body.get("errors") or [])
            if isinstance(body.get("error"), dict):
                raw_errors.append({**body["error"], "taskUUID": body["error"].get("taskUUID", body.get("taskUUID"))})
            return Envelope(
                [WireItem.model_validate(i) for i in body.get("data") or []],
                [WireError.model_validate(e) for e in raw_errors],
            )
    except ValidationError as exc:
        raise errors.ProviderProtocol(f"runware answered with an unexpected shape: {_short(exc)}") from None
    raise errors.ProviderProtocol(f"runware answered with an unexpected body: {_short(body)}")


def describe(body: Any) -> str | None:
    """The provider's own words from an error body (for ``_http.request``)."""
    try:
        envelope = parse_envelope(body)
    except errors.ProviderProtocol:
        return None
    found = envelope.errors or [f for f in (i.failure() for i in envelope.items) if f]
    return "; ".join(error_text(e) for e in found[:3]) or None


def error_text(err: WireError) -> str:
    text = f"{err.code}: {err.message}".rstrip(": ")
    return f"{text} (parameter: {err.parameter})" if err.parameter else text


def _short(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, default=str)
        if not isinstance(value, Exception)
        else str(value)
    )
    return text[:200]


# --- error codes ------------------------------------------------------------------------------

AUTH, CREDITS, RATE, CONTENT, TIMEOUT, NOT_FOUND, INVALID, UNAVAILABLE, DUPLICATE, FAILED = (
    "auth",
    "credits",
    "rate",
    "content",
    "timeout",
    "not_found",
    "invalid",
    "unavailable",
    "duplicate",
    "failed",
)

_CONTENT_CODES = {
    "contentpolicyviolation",
    "providercontentpolicyviolation",
    "nsfwcontentdetected",
    "promptblocked",
    "imageblocked",
    "videoblocked",
    "moderationfailed",
    "safetycheckfailed",
}


def classify(code: str) -> str:
    """Runware's codes "may vary between models and providers" (providers.md §2.5), so match
    families by name, most specific first."""
    low = code.lower()
    if low in _CONTENT_CODES or "contentpolicy" in low or "nsfw" in low or low.endswith("blocked"):
        return CONTENT
    if "apikey" in low or low in ("unauthorized", "forbidden", "unauthenticated"):
        return AUTH
    if "credit" in low or low in ("quotaexceeded", "paymentrequired", "insufficientbalance"):
        return CREDITS
    if "ratelimit" in low or low == "toomanyrequests":
        return RATE
    if "duplicate" in low or "alreadyexists" in low:
        return DUPLICATE
    if "timeout" in low:
        return TIMEOUT
    if low == "taskfailedornotfound" or low.endswith("notfound") or low.endswith("expired") or low == "taskcancelled":
        return NOT_FOUND
    if low.startswith(("invalid", "missing", "unsupported")) or low in (
        "unknownparameter",
        "incompatibleparameters",
        "unknownmodel",
    ):
        return INVALID
    if low in ("noavailableserver", "modelunavailable", "serviceunavailable", "internalerror"):
        return UNAVAILABLE
    return FAILED


def request_error(
    err: WireError, secrets: tuple[str, ...], *, retry_after: float | None = None, may_have_accepted: bool = False
) -> errors.ProviderError:
    """The ProviderError for a request Runware refused (at submit, upload, or an auth/quota
    failure at poll). ``may_have_accepted`` is False: an errors envelope means no task started."""
    words = errors.redact(error_text(err), secrets)
    kind = classify(err.code)
    common: dict[str, Any] = {"may_have_accepted": may_have_accepted, "details": {"runware_code": err.code}}
    if kind == AUTH:
        return errors.AuthenticationFailed(
            f"runware rejected the API key ({words}).",
            hint=f"Set a valid {ENV_KEY} in the server's environment and restart the server.",
            **common,
        )
    if kind == CREDITS:
        return errors.InsufficientCredits(
            f"runware says the account has insufficient credits ({words}).",
            hint="Top up the Runware account (my.runware.ai), or choose another configured provider.",
            **common,
        )
    if kind == RATE:
        return errors.RateLimited(f"runware is rate limiting this key ({words}).", retry_after=retry_after, **common)
    if kind == CONTENT:
        return errors.ContentPolicy(f"runware's safety filter blocked the request ({words}).", **common)
    if kind == TIMEOUT:
        return errors.ProviderTimeout(f"runware timed out ({words}).", **common)
    if kind == UNAVAILABLE:
        return errors.ProviderUnavailable(f"runware cannot serve the model right now ({words}).", **common)
    parameter = err.parameter or "the request"
    return errors.ProviderRejected(
        f"runware rejected {_param(err.parameter)} ({words}).",
        hint=f"Change {parameter} to a value Runware accepts and submit again; nothing was billed.",
        **common,
    )


def _param(parameter: str | None) -> str:
    return f"parameter `{parameter}`" if parameter else "the request"


def job_failure(err: WireError, secrets: tuple[str, ...], *, acknowledged: bool) -> tuple[str, str, bool, str]:
    """(code, message, retryable, hint) for a task Runware reports as failed.

    ``acknowledged`` is False for a job whose submit was never confirmed: a task Runware does not
    know then means the submit never arrived (nothing billed), and the job must not be resubmitted
    automatically.
    """
    words = errors.redact(error_text(err), secrets)
    kind = classify(err.code)
    if kind == NOT_FOUND and not acknowledged:
        return (
            "interrupted",
            f"runware has no task with this id ({words}): the submit never reached Runware "
            "before the server stopped, so nothing was generated or billed.",
            True,
            "Call generate_video or edit_video again to submit it anew.",
        )
    if kind == CONTENT:
        return (
            "content_policy",
            f"runware's safety filter blocked this video ({words}).",
            False,
            errors.ContentPolicy.default_hint,
        )
    if kind == TIMEOUT:
        return (
            "provider_timeout",
            f"runware's Kling backend timed out on this task ({words}).",
            True,
            "Submit the same request again; a new job is billed again.",
        )
    if kind == INVALID:
        return (
            "provider_rejected",
            f"runware rejected {_param(err.parameter)} of this task ({words}).",
            False,
            f"Change {err.parameter or 'the request'} and submit again.",
        )
    if kind == UNAVAILABLE:
        return (
            "provider_unavailable",
            f"runware could not run this task ({words}).",
            True,
            "Try again later or choose another provider.",
        )
    if kind == NOT_FOUND:
        return (
            "remote_not_found",
            f"runware no longer reports this task ({words}).",
            False,
            errors.RemoteNotFound.default_hint,
        )
    return ("job_failed", f"runware reports the task failed ({words}).", False, errors.JobFailed.default_hint)

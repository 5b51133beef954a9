"""Kling's official API adapter: ``kling-video-o1`` through ``POST /v1/videos/omni-video``.

Protocol (providers.md §6): one endpoint serves every mode. Text-to-video sends only the prompt;
frames go in ``image_list`` typed ``first_frame``/``end_frame``; reference images go in
``image_list`` untyped; a reference video is ``video_list`` with ``refer_type: feature`` and the
video to edit is ``refer_type: base``. ``mode`` is ``std`` or ``pro``; ``duration`` is a *string*.
Images may be URLs or bare Base64 (no ``data:`` prefix); videos must be URLs.

Every request carries a fresh token: an HS256 JWT signed from ``KLING_ACCESS_KEY`` and
``KLING_SECRET_KEY`` (``_kling_wire.jwt_token``) or, for gateways that speak this format,
``KLING_API_KEY`` as is. The job id is sent as ``external_task_id``, and ``GET
/v1/videos/omni-video/{id}`` accepts either id, so a job whose submit answer was lost (a crash, a
timeout) is found again by polling its job id, never by submitting again. Kling has no cancel.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from .. import errors, validation
from ..catalog.kling import IMAGES, MODEL, USD_PER_UNIT
from ..jobs.model import Job, RemoteVideo
from ..requests import MediaRef
from . import _http
from . import _kling_wire as wire
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

NAME = wire.NAME
DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
PATH = "/v1/videos/omni-video"
SUBMIT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
POLL_TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # a query is quick; a stuck one is retried by the runner
# A job whose submit answer was lost is looked up by its external_task_id. Kling not knowing it yet
# right after the submit is not proof that the submit never arrived: wait this long before saying so.
NOT_FOUND_GRACE_S = 120.0

MAX_IMAGE_BYTES = IMAGES.image_max_bytes or 10 * 1024 * 1024  # checked again after a conversion to PNG
SENT_AS_IS = {"image/png", "image/jpeg"}  # other local images are converted to PNG


class _Capture:
    """``describe`` for ``_http.request`` that also keeps the body, so Kling's code can refine the mapping."""

    def __init__(self) -> None:
        self.body: Any = None

    def __call__(self, body: Any) -> str | None:
        self.body = body
        return wire.describe(body)


class KlingProvider:
    """The Kling official API adapter (see the module docstring)."""

    name = NAME

    def __init__(self, ctx: ProviderContext, clock: Callable[[], float] = time.time) -> None:
        self._ctx = ctx
        self._api = (ctx.base_url or DEFAULT_BASE_URL).rstrip("/")
        creds = ctx.credentials
        self._access, self._secret = creds.get("KLING_ACCESS_KEY"), creds.get("KLING_SECRET_KEY")
        self._bearer = creds.get("KLING_API_KEY") or ctx.api_key
        self._secrets = tuple(v for v in (self._access, self._secret, self._bearer) if v)
        self._clock = clock

    # --- the VideoProvider protocol -----------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        """Create the task, with our job id as its ``external_task_id``; its ``task_id`` is the remote id."""
        body = await self.build_body(job)
        try:
            envelope = await self._call("POST", self._api + PATH, submit=True, json=body, timeout=SUBMIT_TIMEOUT)
        except errors.RemoteNotFound as exc:
            raise errors.ProviderRejected(
                exc.message,
                may_have_accepted=False,
                hint=f"Check KLING_MCP_KLING_BASE_URL (the API root, default {DEFAULT_BASE_URL}).",
            ) from None
        task = wire.task_of(envelope, self._secrets)
        if not task.task_id:
            raise errors.ProviderProtocol("kling accepted the request but its answer has no task_id.")
        return Accepted(remote_id=task.task_id)

    async def poll(self, job: Job) -> PollResult:
        """One ``GET {PATH}/{id}``, by task id, or by our job id (the external id) when none was saved."""
        task_ref = job.remote_id or job.job_id
        try:
            envelope = await self._call("GET", f"{self._api}{PATH}/{quote(task_ref, safe='')}", timeout=POLL_TIMEOUT)
        except errors.RemoteNotFound:
            if task_ref != job.job_id:
                raise
            return self._unknown_external_id(job)
        task = wire.task_of(envelope, self._secrets)
        status = (task.task_status or "").lower()
        if status == "submitted":
            return Running(queued=True)
        if status == "processing":
            return Running()
        if status == "succeed":
            return self._done(task)
        if status == "failed":
            return wire.task_failure(task.task_status_msg, self._secrets)
        return Failed(
            code="provider_protocol",
            message=f"kling reported an unknown task status {task.task_status!r}.",
            hint=errors.ProviderProtocol.default_hint,
        )

    async def cancel(self, job: Job) -> bool:
        """Kling's API has no cancel endpoint: nothing is sent and the task keeps running."""
        return False

    # --- request body -------------------------------------------------------------------------

    async def build_body(self, job: Job) -> dict[str, Any]:
        """The exact JSON body of the create request; refuses, before any request, what Kling would."""
        spec = job.spec
        # The catalog's rules, media limits included (videos must be URLs, images >= 300 px, ...).
        match = validation.require(spec, NAME, job.tier)
        assert match.variant is not None and match.op is not None
        body: dict[str, Any] = {
            "model_name": MODEL,
            "prompt": spec.prompt,
            "mode": "std" if match.variant.tier == "standard" else "pro",
        }
        images: list[dict[str, str]] = []
        if spec.operation == "image":
            assert spec.first_frame is not None
            images.append({"image_url": await self._image(spec.first_frame), "type": "first_frame"})
            if spec.last_frame is not None:
                images.append({"image_url": await self._image(spec.last_frame), "type": "end_frame"})
        else:
            images += [{"image_url": await self._image(ref)} for ref in spec.reference_images]
        if images:
            body["image_list"] = images
        video = spec.video or spec.reference_video
        if video is not None:
            body["video_list"] = [
                {
                    "video_url": video.value,
                    "refer_type": "base" if spec.operation == "edit" else "feature",
                    # Unset means "not kept" on every provider; Kling's own default is not documented.
                    "keep_original_sound": "yes" if spec.keep_original_sound else "no",
                }
            ]
        if spec.operation != "edit":  # an edit's length follows the input video
            body["duration"] = str(match.duration)
            if match.op.aspect_ratios:
                body["aspect_ratio"] = match.aspect_ratio
        body["external_task_id"] = job.job_id
        return body

    async def _image(self, ref: MediaRef) -> str:
        """A URL as is; a local image as bare Base64 (Kling refuses a ``data:`` prefix)."""
        if ref.kind == "url":
            return ref.value
        raw = await anyio.to_thread.run_sync(_image_bytes, ref)
        return base64.b64encode(raw).decode("ascii")

    # --- results ------------------------------------------------------------------------------

    def _done(self, task: wire.Task) -> PollResult:
        videos = [v for v in (task.task_result.videos if task.task_result else []) if v.url]
        if not videos:
            return Failed(
                code="provider_protocol",
                message="kling reported the task succeeded without a video url.",
                hint=errors.ProviderProtocol.default_hint,
            )
        try:
            units: float | None = float(task.final_unit_deduction)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            units = None
        return Done(
            videos=[RemoteVideo(url=v.url, remote_key=v.id or f"{task.task_id}-{n}") for n, v in enumerate(videos)],
            cost_usd=None if units is None else round(units * USD_PER_UNIT, 4),
            cost_basis="inferred",  # resource-pack units at an assumed $ per unit, not a bill in dollars
        )

    def _unknown_external_id(self, job: Job) -> PollResult:
        waited = time.time() - (job.submitted_at or job.created_at)
        if waited < NOT_FOUND_GRACE_S:
            return Running(queued=True, confirmed=False)
        return Failed(
            code=errors.JobInterrupted.code,
            message=(
                f"kling has no task with external_task_id {job.job_id}: the submit never reached kling, "
                "so nothing was billed."
            ),
            retryable=True,
            hint="Generate the video again.",
        )

    # --- transport ----------------------------------------------------------------------------

    def _token(self) -> str:
        if self._access and self._secret:
            return wire.jwt_token(self._access, self._secret, self._clock())
        if self._bearer:
            return self._bearer
        raise errors.NotConfigured("provider 'kling' is not configured on this server.", hint=wire.KEYS_HINT)

    async def _call(self, method: str, url: str, *, submit: bool = False, **kwargs: Any) -> wire.Envelope:
        """Send one request with a fresh token; return the envelope of a ``code`` 0 answer, else raise."""
        token = self._token()
        secrets = (*self._secrets, token)
        capture = _Capture()
        try:
            body = await _http.request(
                self._ctx.client,
                NAME,
                method,
                url,
                submit=submit,
                describe=capture,
                secrets=secrets,
                headers=_http.auth_headers(token),
                **kwargs,
            )
        except errors.ProviderError as exc:
            envelope = wire.envelope_of(capture.body)
            refined = self._coded(envelope, submit, exc.retry_after, secrets) if envelope else None
            raise (refined or exc) from None
        envelope = wire.envelope_of(body)
        if envelope is None:
            raise errors.ProviderProtocol(
                f"kling answered without its envelope: {errors.redact(str(body)[:160], secrets)}",
                may_have_accepted=submit,
            )
        if envelope.code:  # an error code inside an HTTP 200 (some gateways answer so)
            refused = self._coded(envelope, submit, None, secrets)
            raise refused or errors.ProviderRejected(
                f"kling answered code {envelope.code}: {errors.redact(wire.describe(body) or '', secrets)}",
                may_have_accepted=False,
            )
        return envelope

    def _coded(
        self, envelope: wire.Envelope, submit: bool, retry_after: float | None, secrets: tuple[str, ...]
    ) -> errors.ProviderError | None:
        if envelope.code is None:
            return None
        detail = errors.redact(wire.describe(envelope.model_dump()) or "", secrets)
        return wire.error_for_code(envelope.code, detail, submit=submit, retry_after=retry_after)


def _image_bytes(ref: MediaRef) -> bytes:
    """A local image's bytes for Kling: PNG and JPEG as they are, other formats converted to PNG."""
    path = Path(ref.value)
    if not path.is_file():
        raise errors.InvalidInputFile(f"the input file {path} no longer exists; it cannot be sent to kling.")
    if ref.mime_type in SENT_AS_IS:
        raw = path.read_bytes()
    else:
        from PIL import Image

        with Image.open(path) as image:
            out = io.BytesIO()
            image.convert("RGBA" if "A" in image.getbands() else "RGB").save(out, format="PNG")
            raw = out.getvalue()
    if len(raw) > MAX_IMAGE_BYTES:
        raise errors.InvalidInputFile(
            f"{path.name} is {len(raw) / 2**20:.1f} MB as PNG; kling accepts images up to "
            f"{MAX_IMAGE_BYTES // 2**20} MB.",
            hint="Pass a smaller (or JPEG) image, or a public URL of it.",
        )
    return raw

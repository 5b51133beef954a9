"""Runware adapter for Kling VIDEO O1: ``klingai:kling@o1`` (pro) and ``klingai:kling@o1-standard``.

Protocol (providers.md §2): every call is a JSON array POSTed to the one endpoint. Submit sends a
``videoInference`` task with ``deliveryMethod: "async"`` and *our job id as the taskUUID*, so a job
whose acknowledgement was lost is recovered by polling that id, never by submitting again.
``getResponse`` returns the cumulative results (deduped here by ``videoUUID``). Local input files
are uploaded once (``imageUpload`` / ``mediaStorage``) and remembered by content hash.
Runware has no server-side cancel.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio

from .. import errors, validation
from ..catalog import ModelVariant, variants
from ..jobs.model import Job, RemoteVideo
from ..requests import MediaRef, VideoSpec
from . import _http
from . import _runware_wire as wire
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

DEFAULT_BASE_URL = "https://api.runware.ai/v1"
UPLOAD_CACHE_S = 20 * 24 * 3600.0  # Runware deletes uploads 30 days after their last use


class _Capture:
    """``describe`` for ``_http.request`` that also keeps the error body, so Runware's error code
    can refine the HTTP-status mapping (e.g. HTTP 400 + ``contentPolicyViolation``)."""

    def __init__(self) -> None:
        self.body: Any = None

    def __call__(self, body: Any) -> str | None:
        self.body = body
        return wire.describe(body)


class RunwareProvider:
    """The Runware adapter (see the module docstring)."""

    name = "runware"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx
        self._url = ctx.base_url or DEFAULT_BASE_URL
        self._secrets = (ctx.api_key,) if ctx.api_key else ()
        self._upload_locks: dict[str, anyio.Lock] = {}

    # --- the VideoProvider protocol -----------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        """Upload local inputs (once per content hash), then send one ``videoInference`` task."""
        variant = _variant(job)
        validation.require(job.spec, self.name, variant.tier)  # the catalog's rules, before any upload
        media = await self._resolve_media(job.spec)
        task = wire.inference_task(job.job_id, variant, job.spec, lambda ref: media[ref.value])
        try:
            body = await self._post([task], submit=True)
        except _Refusal as refusal:
            if wire.classify(refusal.error.code) == wire.DUPLICATE:
                # A retried submit: the first one reached Runware, so the task exists. Poll it.
                return Accepted(remote_id=job.job_id)
            raise refusal.exc from None
        envelope = wire.parse_envelope(body)
        for err in envelope.errors:
            if wire.classify(err.code) == wire.DUPLICATE:
                return Accepted(remote_id=job.job_id)
            raise wire.request_error(err, self._secrets)
        for item in envelope.items:
            failure = item.failure()
            if failure is not None:
                raise wire.request_error(failure, self._secrets)
        return Accepted(remote_id=job.job_id)

    async def poll(self, job: Job) -> PollResult:
        """Ask ``getResponse`` for the task; Done once ``num_videos`` distinct videos arrived.

        A job with no ``remote_id`` (submit sent, acknowledgement never saved) is polled by its
        job id, which is the taskUUID it was submitted with.
        """
        task_uuid = job.remote_id or job.job_id
        acknowledged = job.remote_id is not None
        try:
            body = await self._post([wire.get_response_task(task_uuid)], submit=False)
        except _Refusal as refusal:
            return self._task_error(refusal.error, refusal.exc, acknowledged)
        envelope = wire.parse_envelope(body)
        for err in envelope.errors:
            if err.taskUUID in (None, task_uuid):
                return self._task_error(err, None, acknowledged)
        return self._progress(job, task_uuid, envelope.items)

    async def cancel(self, job: Job) -> bool:
        """Runware has no server-side cancel: the task keeps running and is billed. No request."""
        return False

    # --- polling ------------------------------------------------------------------------------

    def _task_error(self, err: wire.WireError, exc: errors.ProviderError | None, acknowledged: bool) -> Failed:
        kind = wire.classify(err.code)
        if kind in (wire.AUTH, wire.CREDITS, wire.RATE):
            # The poll request itself was refused; the task may be fine.
            raise wire.request_error(
                err, self._secrets, may_have_accepted=True, retry_after=exc.retry_after if exc else None
            )
        code, message, retryable, hint = wire.job_failure(err, self._secrets, acknowledged=acknowledged)
        return Failed(code=code, message=message, retryable=retryable, hint=hint)

    def _progress(self, job: Job, task_uuid: str, items: list[wire.WireItem]) -> PollResult:
        wanted = max(1, job.spec.num_videos)
        videos: dict[str, wire.WireItem] = {}
        progress: list[float] = []
        for item in items:
            if item.taskUUID not in (None, task_uuid):
                continue
            failure = item.failure()
            if failure is not None:
                return self._task_error(failure, None, acknowledged=True)
            if item.status == wire.SUCCESS or (item.status is None and item.videoUUID):
                if not item.videoUUID or not item.videoURL:
                    return Failed(
                        code="provider_protocol",
                        message="runware reported a finished video without videoUUID/videoURL.",
                        hint=errors.ProviderProtocol.default_hint,
                    )
                videos.setdefault(item.videoUUID, item)
            elif item.status == wire.PROCESSING or (item.status is None and item.taskType):
                if item.progress is not None:
                    progress.append(item.progress)
            else:
                return Failed(
                    code="provider_protocol",
                    message=f"runware reported an unknown task status {item.status!r}.",
                    hint=errors.ProviderProtocol.default_hint,
                )
        if len(videos) >= wanted:
            chosen = list(videos.values())[:wanted]
            costs = [v.cost for v in chosen if v.cost is not None]
            return Done(
                videos=[RemoteVideo(url=v.videoURL, remote_key=v.videoUUID) for v in chosen],
                cost_usd=round(sum(costs), 6) if costs else None,
            )
        if videos:
            return Running(progress=round(100.0 * len(videos) / wanted, 1))
        return Running(progress=max(progress) if progress else None)

    # --- uploads ------------------------------------------------------------------------------

    async def _resolve_media(self, spec: VideoSpec) -> dict[str, str]:
        """What to send for each input: a URL as is, a local file as the UUID of its upload."""
        refs = [r for r in (spec.first_frame, spec.last_frame, spec.reference_video, spec.video) if r]
        refs += spec.reference_images
        resolved: dict[str, str] = {}
        for ref in refs:
            if ref.value not in resolved:
                resolved[ref.value] = ref.value if ref.kind == "url" else await self._upload(ref)
        return resolved

    async def _upload(self, ref: MediaRef) -> str:
        from ..media import data_uri, sha256_file

        digest: str = ref.sha256 if ref.sha256 else await anyio.to_thread.run_sync(sha256_file, ref.value)
        key = f"runware:upload:{digest}"
        lock = self._upload_locks.setdefault(digest, anyio.Lock())
        async with lock:
            cached = await self._ctx.kv.kv_get(key)
            if isinstance(cached, dict) and cached.get("uuid"):
                await self._ctx.kv.kv_set(key, cached, expire_s=UPLOAD_CACHE_S)  # each use extends Runware's retention
                return str(cached["uuid"])
            uri = await anyio.to_thread.run_sync(data_uri, ref.value, ref.mime_type)
            task_uuid = str(uuid.uuid4())
            if ref.media == "image":
                task, id_field, url_field = wire.image_upload_task(task_uuid, uri), "imageUUID", "imageURL"
            else:
                task, id_field, url_field = wire.media_upload_task(task_uuid, uri), "mediaUUID", "mediaURL"
            try:
                body = await self._post([task], submit=False)
            except _Refusal as refusal:
                raise refusal.exc from None
            envelope = wire.parse_envelope(body)
            if envelope.errors:
                raise wire.request_error(envelope.errors[0], self._secrets)
            item = next((i for i in envelope.items if getattr(i, id_field)), None)
            if item is None:
                raise errors.ProviderProtocol(
                    f"runware's {task['taskType']} answer has no {id_field}.", may_have_accepted=False
                )
            record = {"uuid": getattr(item, id_field), "url": getattr(item, url_field), "media": ref.media}
            await self._ctx.kv.kv_set(key, record, expire_s=UPLOAD_CACHE_S)
            return str(record["uuid"])

    # --- transport ----------------------------------------------------------------------------

    async def _post(self, tasks: list[dict[str, Any]], *, submit: bool) -> Any:
        """POST a task array. An error status whose body carries Runware error codes raises
        :class:`_Refusal`; anything else unmappable is raised by ``_http`` as is."""
        capture = _Capture()
        try:
            return await _http.request(
                self._ctx.client,
                self.name,
                "POST",
                self._url,
                submit=submit,
                describe=capture,
                secrets=self._secrets,
                json=tasks,
                headers=_http.auth_headers(self._ctx.api_key),
            )
        except errors.ProviderError as exc:
            refusal = self._refusal(exc, capture.body)
            if refusal is None:
                raise
            raise refusal from None

    def _refusal(self, exc: errors.ProviderError, body: Any) -> _Refusal | None:
        if body is None or isinstance(exc, (errors.RateLimited, errors.ProviderUnavailable)):
            return None  # 429 / 5xx keep their transient meaning and Retry-After
        try:
            envelope = wire.parse_envelope(body)
        except errors.ProviderProtocol:
            return None
        found = envelope.errors or [f for f in (i.failure() for i in envelope.items) if f]
        if not found:
            return None
        mapped = wire.request_error(found[0], self._secrets, retry_after=exc.retry_after)
        if wire.classify(found[0].code) == wire.FAILED:
            mapped = exc  # an unknown code: the HTTP status says more
        return _Refusal(found[0], mapped)


class _Refusal(Exception):
    """Runware refused a request with an error code (kept with the mapped ProviderError)."""

    def __init__(self, error: wire.WireError, exc: errors.ProviderError) -> None:
        super().__init__(str(exc))
        self.error = error
        self.exc = exc


def _variant(job: Job) -> ModelVariant:
    """The catalog variant the job was resolved to: by model id, else by tier."""
    known = variants("runware")
    tier = job.tier or job.spec.tier
    for variant in known:
        if variant.model == job.model:
            return variant
    for variant in known:
        if variant.tier == tier:
            return variant
    raise errors.InvalidRequest(
        f"runware serves {', '.join(v.model for v in known)}; this job asks for {job.model!r} (tier {tier!r}).",
        hint=f"Use {' or '.join(f'tier={v.tier!r}' for v in known)} with provider='runware'.",
    )

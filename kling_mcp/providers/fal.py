"""fal.ai adapter: the eight Kling O1 endpoints behind fal's queue.

Wire protocol (shared/reference/providers.md §7, §8.3): ``POST {queue}/{endpoint_id}`` with the
model's JSON input and ``Authorization: Key <FAL_KEY>`` answers ``request_id`` plus the
``status_url``, ``response_url`` and ``cancel_url`` to use; those drop the ``/o1/...`` part of the
endpoint id (``{queue}/fal-ai/kling-video/requests/{id}/status``), so they are taken from the answer
and saved on the job, never rebuilt from the endpoint id. The status is ``IN_QUEUE`` ->
``IN_PROGRESS`` -> ``COMPLETED``, for failures too: a failed request shows its error only when the
result is fetched, as a 4xx with ``detail``. ``PUT {cancel_url}`` cancels a queued request.

Local files go to fal's storage (``_fal_storage.py``): a token from ``{storage}/storage/auth/token``,
then the bytes to the upload host that answer names. Durations are strings.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors, validation
from ..jobs.model import Job, RemoteVideo
from ..requests import MediaRef
from . import _http
from ._fal_storage import FalStorage
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

NAME = "fal"
DEFAULT_QUEUE = "https://queue.fal.run"
DEFAULT_STORAGE = "https://rest.alpha.fal.ai"
STORAGE_URL_VAR = "KLING_MCP_FAL_STORAGE_URL"
_POLICY_WORDS = ("content_policy", "policy", "nsfw", "flagged", "moderation", "safety", "sensitive")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Queued(_Wire):
    request_id: str
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None


class _Status(_Wire):
    status: str
    queue_position: int | None = None


class _Video(_Wire):
    url: str


class _Output(_Wire):
    video: _Video


def describe_error(body: Any) -> str | None:
    """fal's own message: ``detail`` as a string or a list of ``{loc, msg, type}``."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = item.get("loc")
            where = ".".join(str(x) for x in loc if x != "body") if isinstance(loc, list) else ""
            msg = str(item.get("msg") or "invalid")
            kind = f" ({item['type']})" if item.get("type") else ""
            parts.append(f"{where}: {msg}{kind}" if where else f"{msg}{kind}")
        return "; ".join(parts) or None
    if isinstance(detail, str) and detail:
        return detail
    for key in ("error", "message"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])
    return None


def error_type(body: Any) -> str:
    """The first ``type`` fal gives for a failed request (``job_failed`` when there is none)."""
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            for item in detail:
                if isinstance(item, dict) and isinstance(item.get("type"), str) and item["type"]:
                    return item["type"][:64]
        if isinstance(body.get("error_type"), str) and body["error_type"]:
            return body["error_type"][:64]
    return "job_failed"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


class FalProvider:
    """The :class:`~kling_mcp.providers.base.VideoProvider` for fal.ai's Kling O1 endpoints."""

    name = NAME

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self.queue = (ctx.base_url or DEFAULT_QUEUE).rstrip("/")
        self.storage_url = (ctx.extra_urls.get(STORAGE_URL_VAR) or DEFAULT_STORAGE).rstrip("/")
        key = ctx.api_key or ""
        # A fal key is "<id>:<secret>"; an echo of either half must not leak either.
        halves = tuple(part for part in key.split(":") if len(part) >= 8 and part != key)
        self._secrets = ((key,) if key else ()) + halves

    # --- VideoProvider ------------------------------------------------------------------------

    async def submit(self, job: Job) -> Accepted:
        """Upload local inputs, queue the request, keep the URLs fal answered for later calls."""
        endpoint, body = await self.build_body(job)
        data = await self._call("POST", f"{self.queue}/{endpoint}", submit=True, json=body)
        try:
            queued = _Queued.model_validate(data)
        except ValidationError:
            raise errors.ProviderProtocol(
                f"fal queued the request but its answer has no request_id: {self._shown(data)}",
                may_have_accepted=True,
            ) from None
        return Accepted(remote_id=queued.request_id, data={"endpoint": endpoint, **self._urls(endpoint, queued)})

    async def poll(self, job: Job) -> PollResult:
        """One status request; on ``COMPLETED`` the result request says whether it worked."""
        if not job.remote_id:
            raise errors.ProviderProtocol(f"job {job.job_id} has no fal request id to poll.")
        urls = self._job_urls(job)
        data = await self._call("GET", urls["status_url"], params={"logs": "0"})
        try:
            status = _Status.model_validate(data).status.strip().upper()
        except ValidationError:
            raise errors.ProviderProtocol(
                f"fal answered a status request without a status: {self._shown(data)}"
            ) from None
        if status == "IN_QUEUE":
            return Running(queued=True)
        if status == "IN_PROGRESS":
            return Running()
        if status == "COMPLETED":
            return await self._result(job.remote_id, urls["response_url"])
        return Failed(
            code=errors.ProviderProtocol.code,
            message=f"fal reported an unknown queue status {status[:40]!r}.",
            hint=errors.ProviderProtocol.default_hint,
        )

    async def cancel(self, job: Job) -> bool:
        """``PUT {cancel_url}``. fal removes a queued request; one in progress only gets a signal the
        model may ignore, so only a request fal still had queued just before is reported as stopped
        (the job's own status is already ``cancelled`` in the store by now, so fal is asked)."""
        if not job.remote_id:
            return False
        urls = self._job_urls(job)
        try:
            data = await self._call("GET", urls["status_url"], params={"logs": "0"})
            queued = isinstance(data, dict) and str(data.get("status", "")).upper() == "IN_QUEUE"
        except errors.ProviderError:
            queued = False  # unknown: send the cancel all the same, but do not claim it stopped
        try:
            await self._call("PUT", urls["cancel_url"])
        except errors.ProviderRejected:  # 400 ALREADY_COMPLETED: nothing left to stop
            return False
        return queued

    # --- request body -------------------------------------------------------------------------

    async def build_body(self, job: Job) -> tuple[str, dict[str, Any]]:
        """The endpoint id and exact JSON input for ``job`` (uploads local inputs first)."""
        spec = job.spec
        match = validation.require(spec, NAME, job.tier)  # the catalog's rules, before any upload
        endpoint = match.model or ""
        body: dict[str, Any] = {"prompt": spec.prompt}
        uploads = self.storage()
        if spec.operation == "image":
            assert spec.first_frame is not None
            body["start_image_url"] = await uploads.url(spec.first_frame)
            if spec.last_frame is not None:
                body["end_image_url"] = await uploads.url(spec.last_frame)
        video = spec.video if spec.operation == "edit" else spec.reference_video
        if video is not None:
            body["video_url"] = await uploads.url(video)
        if spec.reference_images:
            body["image_urls"] = [await uploads.url(ref) for ref in spec.reference_images]
        if spec.operation == "reference" and match.aspect_ratio:
            body["aspect_ratio"] = match.aspect_ratio
        if spec.operation != "edit" and match.duration is not None:
            body["duration"] = str(match.duration)  # fal's O1 schemas: a string enum "3".."10"
        if video is not None and spec.keep_original_sound is not None:
            body["keep_audio"] = spec.keep_original_sound
        return endpoint, body

    # --- uploads --------------------------------------------------------------------------------

    def storage(self) -> FalStorage:
        """Uploads for one request (one storage token, fetched on the first local file)."""
        return FalStorage(self.ctx.client, self.storage_url, self._headers(), self._secrets)

    async def media_url(self, ref: MediaRef) -> str:
        """A URL fal can fetch: the URL itself, or the storage link of an uploaded local file."""
        return await self.storage().url(ref)

    # --- helpers --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.ctx.api_key or ''}", "Content-Type": "application/json"}

    async def _call(self, method: str, url: str, *, submit: bool = False, describe: Any = None, **kwargs: Any) -> Any:
        return await _http.request(
            self.ctx.client,
            NAME,
            method,
            url,
            submit=submit,
            describe=describe or describe_error,
            secrets=self._secrets,
            headers=self._headers(),
            **kwargs,
        )

    async def _result(self, request_id: str, url: str) -> PollResult:
        bodies: list[Any] = []

        def remember(body: Any) -> str | None:
            bodies.append(body)
            return describe_error(body)

        try:
            data = await self._call("GET", url, describe=remember)
        except errors.ProviderRejected as exc:
            # COMPLETED hides failures: the result request is where fal says what went wrong.
            code = error_type(bodies[-1] if bodies else None)
            text = exc.message.split(": ", 1)[-1]
            policy = any(word in f"{code} {text}".lower() for word in _POLICY_WORDS)
            return Failed(
                code=errors.ContentPolicy.code if policy else code,
                message=f"fal could not make the video: {text}",
                hint=errors.ContentPolicy.default_hint if policy else errors.ProviderRejected.default_hint,
            )
        try:
            output = _Output.model_validate(data)
        except ValidationError:
            return Failed(
                code=errors.ProviderProtocol.code,
                message=f"fal completed the request but its result has no video.url: {self._shown(data)}",
                hint=errors.ProviderProtocol.default_hint,
            )
        return Done(videos=[RemoteVideo(url=output.video.url, remote_key=request_id)])

    def _urls(self, endpoint: str, queued: _Queued) -> dict[str, str]:
        """The answer's URLs, each only if it points at the queue host (the key goes nowhere else)."""
        built = self._built_urls(endpoint, queued.request_id)
        given = {"status_url": queued.status_url, "response_url": queued.response_url, "cancel_url": queued.cancel_url}
        same_host = _origin(self.queue)
        return {k: v if v and _origin(v) == same_host else built[k] for k, v in given.items()}

    def _built_urls(self, endpoint: str, request_id: str) -> dict[str, str]:
        """What fal's own client builds: ``{queue}/{owner}/{alias}/requests/{id}`` (no ``/o1/...``)."""
        owner_alias = "/".join(endpoint.split("/")[:2])
        base = f"{self.queue}/{owner_alias}/requests/{request_id}"
        return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}

    def _job_urls(self, job: Job) -> dict[str, str]:
        """The URLs saved at submit, each only while it points at the configured queue host."""
        saved = job.provider_data or {}
        built = self._built_urls(str(saved.get("endpoint") or job.model), job.remote_id or "")
        here = _origin(self.queue)
        return {k: str(saved[k]) if saved.get(k) and _origin(str(saved[k])) == here else v for k, v in built.items()}

    def _shown(self, data: Any) -> str:
        return errors.redact(str(data)[:160], self._secrets)

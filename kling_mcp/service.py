"""VideoService: a request's spec -> the provider that serves it -> guards -> idempotency -> submit -> wait.

The service is what the MCP tools (server.py) and the CLI share. It never imports mcp; progress
is reported through a plain async callback. The spec is built in :mod:`.specs`, the spending guards are
:mod:`.spending`, the submit itself is :mod:`.submission` and cancelling is :mod:`.cancelling`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors
from .cancelling import cancel_job
from .catalog import OPERATION_LABELS, PROVIDERS, REAL_PROVIDERS
from .config import WAIT_DEFAULT_S, WAIT_MAX_S, Settings
from .jobs import open_store
from .jobs.backend import JobStore, KeyClaim, key_conflict
from .jobs.model import Job, JobStatus
from .jobs.runner import JobRunner
from .providers import ProviderContext, VideoProvider, create_provider
from .requests import (
    Budget,
    CancelResult,
    EditRequest,
    Estimate,
    EstimateRequest,
    GenerateRequest,
    JobList,
    JobView,
    MediaRef,
    VideoSpec,
)
from .specs import build_spec, request_fingerprint, resolve_ref, spec_fingerprint
from .spending import budget, confirm_match, guard_cost, usd
from .submission import Submitter
from .validation import Match, check
from .views import job_view

if TYPE_CHECKING:  # httpx is imported with the first provider call, not before initialize
    import httpx

log = logging.getLogger("kling_mcp.service")

Progress = Callable[[float, str], Awaitable[None]]


class VideoService:
    def __init__(
        self, settings: Settings, client: httpx.AsyncClient | None = None, store: JobStore | None = None
    ) -> None:
        # httpcore logs raw request/response headers at DEBUG; a provider that echoes a key in a
        # header would leak it into the log, so keep it quiet whatever the root level is.
        logging.getLogger("httpcore").setLevel(logging.WARNING)
        self.settings = settings
        self._client = client
        self._owns_client = client is None
        self.store = store or open_store(settings)
        self._providers: dict[str, VideoProvider] = {}
        self.runner = JobRunner(self.store, self.provider, lambda: self.client, settings)
        self.submitter = Submitter(self.store, self.runner, self.provider, settings, self._guard)
        from .assembly_jobs import Assemblies
        from .storyboards import Storyboards

        self.boards = Storyboards(self)
        self.assemblies = Assemblies(self)
        self.runner.drivers.update(storyboard=self.boards.drive, assemble=self.assemblies.drive)

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared HTTP client, built on first use (building it costs ~0.1 s of start-up)."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True)
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
        await self.store.close()

    def provider(self, name: str) -> VideoProvider:
        if name not in self._providers:
            cfg = self.settings.providers[name]
            self._providers[name] = create_provider(
                ProviderContext(
                    name=name,
                    api_key=cfg.api_key,
                    base_url=cfg.base_url,
                    client=self.client,
                    kv=self.store,
                    data_dir=self.settings.data_dir,
                    extra_urls=dict(cfg.extra_urls),
                    credentials=dict(cfg.credentials),
                )
            )
        return self._providers[name]

    # --- building the spec -----------------------------------------------------------------

    async def resolve_input(self, value: str, arg: str, kind: str) -> MediaRef:
        """One image/video argument as the tools take it (URL, data URI, path or ``kling://`` result)."""
        ref = await resolve_ref(self.settings, self.lookup, value, arg, kind)
        assert ref is not None
        return ref

    async def lookup(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return await self.store.get(job_id)

    async def build_spec(
        self, req: GenerateRequest | EditRequest | EstimateRequest, video_duration_s: float | None = None
    ) -> VideoSpec:
        """The normalised spec of ``req``: see :func:`specs.build_spec`."""
        return await build_spec(self.settings, self.lookup, req, video_duration_s)

    # --- choosing a provider ---------------------------------------------------------------

    def candidates(self, requested: str | None) -> tuple[str, list[str]]:
        """(the choice, the provider names it allows); a tool error for an unknown or unconfigured one."""
        return self._candidates(requested)

    def _candidates(self, requested: str | None) -> tuple[str, list[str]]:
        choice = (requested or self.settings.default_provider or "auto").strip().lower()
        if choice == "auto":
            configured = self.settings.configured
            return choice, configured or ["local"]
        if choice not in PROVIDERS:
            raise errors.InvalidRequest(
                f"provider {choice!r} is not known.", hint=f"Use auto or one of: {', '.join(self.settings.offered)}."
            )
        if not self.settings.providers[choice].configured:
            env = PROVIDERS[choice].env_key
            raise errors.NotConfigured(
                f"provider {choice!r} is not configured on this server: {env} is not set.",
                hint=f"Set {env} in the server's environment and restart it, or use one of: "
                f"{', '.join(self.settings.offered)}.",
            )
        return choice, [choice]

    def choose(self, spec: VideoSpec, requested: str | None) -> list[Match]:
        """Valid matches, cheapest first; raises a tool error listing every problem otherwise."""
        choice, names = self._candidates(requested)
        matches = [check(spec, n, spec.tier) for n in names]
        valid = sorted((m for m in matches if m.ok), key=lambda m: m.cost_usd if m.cost_usd is not None else 1e9)
        if valid:
            return valid
        label = OPERATION_LABELS[spec.operation]
        details = " ".join(f"[{m.provider}] " + " ".join(m.problems) for m in matches)
        others = [n for n in self.settings.offered if n not in names and check(spec, n, spec.tier).ok]
        unconfigured = [n for n in REAL_PROVIDERS if n not in self.settings.offered and check(spec, n, spec.tier).ok]
        hint = f"Change the arguments as described{', or use provider=' + ' or '.join(others) if others else ''}." + (
            f" Also accepted by {', '.join(unconfigured)} (not configured: set "
            f"{', '.join(str(PROVIDERS[n].env_key) for n in unconfigured)})."
            if unconfigured
            else ""
        )
        # The code depends on the request, not on which provider was asked: one that some real provider
        # serves is "unsupported by" the chosen ones; one that none serves is invalid.
        served_somewhere = any(check(spec, n, spec.tier).ok for n in REAL_PROVIDERS)
        cls = errors.UnsupportedByProvider if served_somewhere else errors.InvalidRequest
        raise cls(f"this {label} request cannot be served as given. {details}", hint=hint)

    # --- budgets ---------------------------------------------------------------------------

    async def budget(self) -> Budget:
        """The spending limits and what is left of today's budget."""
        return await budget(self.settings, self.store)

    async def _guard(self, match: Match) -> None:
        """A quick refusal with a clear message; the atomic check is the ledger's reservation at submit."""
        await self.guard_cost(match.provider, match.cost_usd, match.price.basis if match.price else "unknown")

    async def guard_cost(self, provider: str, cost: float | None, basis: str, what: str = "") -> None:
        """The budget guards for one request quoted at ``cost``: see :func:`spending.guard_cost`."""
        await guard_cost(self.settings, self.store, provider, cost, basis, what)

    # --- the tools -------------------------------------------------------------------------

    async def estimate(self, req: EstimateRequest) -> Estimate:
        spec = await self.build_spec(req, video_duration_s=req.video_duration_s)
        names = list(PROVIDERS) if (req.provider or "auto") == "auto" else [req.provider.lower()]  # type: ignore[union-attr]
        for name in names:
            if name not in PROVIDERS:
                raise errors.InvalidRequest(
                    f"provider {name!r} is not known.", hint=f"Use auto or one of: {', '.join(PROVIDERS)}."
                )
        quotes = [check(spec, n, spec.tier).quote(configured=self.settings.providers[n].configured) for n in names]
        try:
            recommended: str | None = self.choose(spec, req.provider)[0].provider
        except errors.KlingError:
            recommended = None
        dur = (
            spec.input_video_s
            if spec.operation == "edit"
            else (
                spec.duration
                or next(
                    (
                        q.billed_seconds / spec.num_videos
                        for q in quotes
                        if q.provider == recommended and q.billed_seconds
                    ),
                    None,
                )
            )
        )
        next_action = (
            f"Call {'edit_video' if spec.operation == 'edit' else 'generate_video'} with the same "
            f"arguments (provider={recommended!r} is what auto picks)."
            if recommended
            else "No configured provider accepts this request; see each quote's problems."
        )
        threshold = self.settings.confirm_above_usd
        chosen = next((q for q in quotes if q.provider == recommended), None)
        if threshold is not None and chosen is not None and chosen.provider != "local":
            if chosen.cost_usd is None or chosen.cost_usd > threshold:
                next_action += (
                    f" It is above KLING_MCP_CONFIRM_ABOVE_USD ({usd(threshold)}): the user is asked to confirm, or "
                    "the call fails with [confirmation_required] until it is repeated with confirm_cost_usd."
                )
        return Estimate(
            operation=spec.operation,
            duration_s=dur,
            quotes=quotes,
            recommended=recommended,
            budget=await self.budget(),
            next_action=next_action,
        )

    async def generate(
        self, req: GenerateRequest | EditRequest, progress: Progress | None = None
    ) -> tuple[Job, str | None]:
        started = time.monotonic()  # wait_seconds counts from here: uploads, retries and 429 waits included
        claim = None
        if req.idempotency_key:  # before anything else: a retry must find its job even if inputs moved
            claim = KeyClaim(req.idempotency_key, request_fingerprint(req))
            bound = await self.store.key_job(req.idempotency_key)
            if bound is not None:
                existing, first_use = bound
                if first_use.digest != claim.fingerprint.digest:
                    raise key_conflict(req.idempotency_key, existing.job_id, claim.fingerprint, first_use)
                return await self._wait(existing, req.wait_seconds, progress, started), (
                    f"Returned the existing job for idempotency_key={req.idempotency_key!r}; nothing new was billed."
                )
        spec = await self.build_spec(req)
        matches = self.choose(spec, req.provider)
        match = matches[0]
        filled = spec.model_copy(
            update={
                "duration": match.duration,
                "aspect_ratio": match.aspect_ratio,
                "tier": match.variant.tier if match.variant else spec.tier,
            }
        )
        fingerprint = spec_fingerprint(match.provider, filled)
        if not req.idempotency_key:
            twin = await self.store.find_twin(fingerprint)
            if twin is not None and not twin.terminal:
                return await self._wait(twin, req.wait_seconds, progress, started), (
                    f"An identical request is already running as job {twin.job_id}; returned it instead of paying "
                    "twice. Pass a new idempotency_key to start another one."
                )
        await self._guard(match)
        confirm_match(self.settings.confirm_above_usd, match, req.confirm_cost_usd)
        job = Job(
            provider=match.provider,
            model=match.model or "",
            tier=filled.tier,
            spec=filled,
            fingerprint=fingerprint,
            idempotency_key=req.idempotency_key,
            estimated_cost_usd=match.cost_usd,
        )

        async def failover_guard(target: Match) -> None:  # never past a limit, nor above what the user agreed
            await self._guard(target)
            confirm_match(self.settings.confirm_above_usd, target, req.confirm_cost_usd)

        job, note = await self.submitter.submit(
            job,
            matches,
            requested_auto=(req.provider or "auto") == "auto",
            claim=claim,
            started=started,
            guard=failover_guard,
        )
        return await self._wait(job, req.wait_seconds, progress, started), note

    async def submit_job(self, job: Job, matches: list[Match]) -> Job:
        """Create ``job`` and submit it to ``matches[0]`` (no failover) through the submit path generate uses;
        the job as submitted. A refusal is recorded on the job and raised."""
        started = time.monotonic()
        return (await self.submitter.submit(job, matches, requested_auto=False, claim=None, started=started))[0]

    async def wait_for(self, job: Job, wait_seconds: float | None, progress: Progress | None) -> Job:
        """Wait up to ``wait_seconds`` (default and cap as for the tools) for ``job`` to finish."""
        return await self._wait(job, wait_seconds, progress)

    async def _wait(
        self, job: Job, wait_seconds: float | None, progress: Progress | None, started: float | None = None
    ) -> Job:
        seconds = WAIT_DEFAULT_S if wait_seconds is None else min(max(0.0, wait_seconds), WAIT_MAX_S)
        if started is not None:
            seconds -= time.monotonic() - started
        if job.terminal or seconds <= 0:
            return job

        async def report(latest: Job) -> None:
            if progress is not None:
                # 100 means finished: a job being downloaded is not done yet.
                done = 100.0 if latest.terminal else min(latest.progress, 99.0)
                await progress(done, f"{latest.status.value} ({latest.provider})")

        return await self.runner.wait(job.job_id, seconds, report)

    async def check(self, job_id: str, wait_seconds: float | None = None, progress: Progress | None = None) -> Job:
        started = time.monotonic()
        job = await self.get(job_id)
        self.runner.ensure_tracked(job)  # drives it here only if no live process holds its lease
        return await self._wait(job, 0.0 if wait_seconds is None else wait_seconds, progress, started)

    async def view(self, job: Job, note: str | None = None) -> JobView:
        """What a caller sees of ``job`` (a storyboard's view lists its shots)."""
        if job.kind == "storyboard":
            return await self.boards.view(job, note)
        return job_view(job, note)

    async def get(self, job_id: str) -> Job:
        job = await self.store.get(job_id) if isinstance(job_id, str) and job_id else None
        if job is None:
            raise errors.UnknownJob(f"no job {job_id!r} on this server.")
        return job

    async def list_jobs(self, status: str | None = None, limit: int = 50) -> JobList:
        state = JobStatus(status) if status else None
        jobs = await self.store.list_jobs(state, max(1, min(limit, 500)))
        views = [job_view(j) for j in jobs]
        return JobList(
            jobs=views,
            count=len(views),
            next_action="Call check_job with a job_id for details." if views else "No jobs yet: call generate_video.",
        )

    async def cancel(self, job_id: str) -> CancelResult:
        """Cancel a job, a storyboard's unfinished shots or an assembly: see :func:`cancelling.cancel_job`."""
        return await cancel_job(self, job_id)

    async def video_path(self, job_id: str, index: int) -> Path:
        job = await self.get(job_id)
        for video in job.videos:
            if video.index == index:
                path = Path(video.path).resolve()
                if path.is_relative_to(self.settings.data_dir) and path.is_file():
                    return path
        raise errors.UnknownJob(f"job {job_id} has no video {index}.", hint="Call check_job to see its videos.")

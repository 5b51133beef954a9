"""VideoService: infer the operation, validate, quote, guard, submit, wait.

The service is what the MCP tools (server.py) and the CLI share. It never imports mcp; progress
is reported through a plain async callback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import errors, inputs
from .cancelling import cancel_job
from .catalog import OPERATION_LABELS, PROVIDERS, REAL_PROVIDERS
from .config import WAIT_DEFAULT_S, WAIT_MAX_S, Settings
from .jobs import open_store
from .jobs.backend import JobStore, KeyClaim, RequestFingerprint, key_conflict
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
from .spending import require_confirmation, usd
from .submission import Submitter, today
from .validation import Match, check, structural_problems
from .views import job_view

if TYPE_CHECKING:  # httpx is imported with the first provider call, not before initialize
    import httpx

log = logging.getLogger("kling_mcp.service")

Progress = Callable[[float, str], Awaitable[None]]


def infer_operation(
    *,
    video: Any = None,
    first_frame: Any = None,
    last_frame: Any = None,
    reference_images: list[Any] | None = None,
    reference_video: Any = None,
) -> str:
    """``video`` -> edit; first/last frame -> image; references -> reference; none -> text."""
    if video:
        return "edit"
    if first_frame or last_frame:
        return "image"
    if reference_images or reference_video:
        return "reference"
    return "text"


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

    async def _ref(self, value: str | None, arg: str, kind: str, probe: bool = False) -> MediaRef | None:
        if value is None:
            return None
        return await inputs.resolve(
            value,
            arg=arg,
            kind=kind,  # type: ignore[arg-type]
            data_dir=self.settings.data_dir,
            allowed_dirs=self.settings.allowed_dirs,
            probe_urls=probe,
            lookup=self.lookup,
        )

    async def resolve_input(self, value: str, arg: str, kind: str) -> MediaRef:
        """One image/video argument as the tools take it (URL, data URI, path or ``kling://`` result)."""
        ref = await self._ref(value, arg, kind)
        assert ref is not None
        return ref

    async def lookup(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return await self.store.get(job_id)

    async def build_spec(
        self, req: GenerateRequest | EditRequest | EstimateRequest, video_duration_s: float | None = None
    ) -> VideoSpec:
        video = getattr(req, "video", None)
        first, last = getattr(req, "first_frame", None), getattr(req, "last_frame", None)
        ref_video = getattr(req, "reference_video", None)
        operation = infer_operation(
            video=video,
            first_frame=first,
            last_frame=last,
            reference_images=req.reference_images,
            reference_video=ref_video,
        )
        problems = []
        if not req.prompt.strip() and not isinstance(req, EstimateRequest):
            problems.append("prompt is empty; describe the video you want.")
        if operation == "image" and (req.reference_images or ref_video):
            problems.append(
                "first_frame/last_frame cannot be combined with reference_images/reference_video; "
                "use frames (image-to-video) or references (reference-to-video)."
            )
        if operation == "edit" and (first or last or ref_video):
            problems.append(
                "an edit (video=...) takes only reference_images besides the video; remove "
                "first_frame/last_frame/reference_video."
            )
        if operation == "edit" and getattr(req, "duration", None) is not None:
            problems.append("an edit's length follows the input video; remove duration.")
        num = getattr(req, "num_videos", 1)
        if num < 1:
            problems.append(f"num_videos must be at least 1; got {num}.")
        if problems:
            raise errors.InvalidRequest(" ".join(problems))
        edit_video = await self._ref(video, "video", "video", probe=video_duration_s is None)
        if edit_video is not None and video_duration_s is not None:
            edit_video = edit_video.model_copy(update={"duration_s": video_duration_s})
        refs = [await self._ref(r, f"reference_images[{i}]", "image") for i, r in enumerate(req.reference_images)]
        spec = VideoSpec(
            operation=operation,  # type: ignore[arg-type]
            prompt=req.prompt,
            video=edit_video,
            first_frame=await self._ref(first, "first_frame", "image"),
            last_frame=await self._ref(last, "last_frame", "image"),
            reference_images=[r for r in refs if r is not None],
            reference_video=await self._ref(ref_video, "reference_video", "video", probe=True),
            aspect_ratio=getattr(req, "aspect_ratio", None),
            duration=getattr(req, "duration", None),
            tier=req.tier,
            negative_prompt=getattr(req, "negative_prompt", None),
            seed=getattr(req, "seed", None),
            num_videos=num,
            keep_original_sound=req.keep_original_sound,
            fast=getattr(req, "fast", False),
        )
        shape = structural_problems(spec)
        if shape:
            raise errors.InvalidRequest(" ".join(shape))
        return spec

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
        spent = await self.store.spent(today())
        daily = self.settings.daily_budget_usd
        return Budget(
            max_job_cost_usd=self.settings.max_job_cost_usd,
            daily_budget_usd=daily,
            spent_today_usd=round(spent, 4),
            remaining_today_usd=None if daily is None else round(max(0.0, daily - spent), 4),
        )

    async def _guard(self, match: Match) -> None:
        """A quick refusal with a clear message; the atomic check is the ledger's reservation at submit."""
        await self.guard_cost(match.provider, match.cost_usd, match.price.basis if match.price else "unknown")

    async def guard_cost(self, provider: str, cost: float | None, basis: str, what: str = "") -> None:
        """The spending guards for one request quoted at ``cost`` (a storyboard passes its total)."""
        limit, daily = self.settings.max_job_cost_usd, self.settings.daily_budget_usd
        if provider == "local" or (limit is None and daily is None):
            return
        quote = (
            f"{provider} quotes ${cost:.3f}{what} ({basis})"
            if cost is not None
            else f"{provider} gives no price for this request{what}"
        )
        if cost is None:
            raise errors.BudgetExceeded(
                f"{quote}, and a spending limit is set, so it was not submitted.",
                hint="Pass video_duration_s so it can be priced, or use another provider.",
            )
        if limit is not None and cost > limit:
            raise errors.BudgetExceeded(f"{quote}; KLING_MCP_MAX_JOB_COST_USD is ${limit:.2f}.")
        if daily is not None:
            spent = await self.store.spent(today())
            if spent + cost > daily:
                raise errors.BudgetExceeded(
                    f"{quote}; ${spent:.2f} of the ${daily:.2f} KLING_MCP_DAILY_BUDGET_USD is already spent today."
                )

    def _confirm(self, match: Match, confirmed_usd: float | None) -> None:
        if match.provider == "local":
            return
        label = OPERATION_LABELS[match.op.operation] if match.op else "request"
        seconds = f"{match.billed_seconds:g} s " if match.billed_seconds else ""
        tier = f", {match.variant.tier}" if match.variant else ""
        require_confirmation(
            self.settings.confirm_above_usd,
            match.cost_usd,
            confirmed_usd,
            provider=match.provider,
            basis=f"{match.price.basis}, {match.price.source}" if match.price else "unknown",
            what=f"This {seconds}{label} on {match.provider} ({match.model}{tier})",
        )

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
        fingerprint = _fingerprint(match.provider, filled)
        if not req.idempotency_key:
            twin = await self.store.find_twin(fingerprint)
            if twin is not None and not twin.terminal:
                return await self._wait(twin, req.wait_seconds, progress, started), (
                    f"An identical request is already running as job {twin.job_id}; returned it instead of paying "
                    "twice. Pass a new idempotency_key to start another one."
                )
        await self._guard(match)
        self._confirm(match, req.confirm_cost_usd)
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
            self._confirm(target, req.confirm_cost_usd)

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


def request_fingerprint(req: GenerateRequest | EditRequest) -> RequestFingerprint:
    """What an idempotency key is bound to: the call's own arguments (not how long it waits)."""
    args = req.model_dump(mode="json", exclude={"wait_seconds", "idempotency_key", "confirm_cost_usd"})
    return RequestFingerprint.of({"tool": "edit_video" if isinstance(req, EditRequest) else "generate_video", **args})


def _fingerprint(provider: str, spec: VideoSpec) -> str:
    data = spec.model_dump(mode="json")
    for key in ("first_frame", "last_frame", "reference_video", "video"):
        if data.get(key):
            data[key] = data[key].get("sha256") or data[key]["value"]
    data["reference_images"] = [r.get("sha256") or r["value"] for r in data["reference_images"]]
    raw = json.dumps({"provider": provider, **data}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()

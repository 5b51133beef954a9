"""The submit path: book the quote, create the job (claiming its idempotency key), hand it to a provider.

The money path, so the rules are strict (DESIGN.md §4):
- the quote is reserved in the spend ledger atomically against the daily budget before the job exists;
- the job is created ``pending`` with its key claimed and its lease held by this process, in one step;
- the provider call and the record of its answer are shielded from cancellation: a client that gives up
  mid-call still leaves a job that says what the provider answered;
- a 429 is "not accepted": waited out per ``Retry-After`` within the call's time and sent again;
- an answer that leaves acceptance unknown (a timeout, a 5xx after the request was sent) is never failed
  over. Where our job id is the provider's task id (Runware), one poll settles it; elsewhere the job fails
  with an error saying it may have been accepted;
- a refusal (nothing can have been billed) releases the reservation and the key, and may fail over.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from . import errors
from .catalog import PROVIDERS
from .config import Settings
from .jobs.backend import JobStore, KeyClaim
from .jobs.model import Job, JobStatus
from .jobs.runner import JobRunner
from .providers import VideoProvider
from .providers.base import Accepted, Failed, Running
from .requests import ErrorView
from .validation import Match

log = logging.getLogger("kling_mcp.service")

#: How long one tool call may spend submitting (429 waits included): clients cut calls at about 60 s.
SUBMIT_BUDGET_S = 50.0
_FIRST_RATE_WAIT_S = 1.0


def today() -> str:
    """The ledger's day (local date): a job is booked on the day it was submitted."""
    return dt.date.today().isoformat()


def _info(exc: errors.KlingError) -> ErrorView:
    return ErrorView(**exc.to_info())


class Refused(Exception):
    """The provider did not take the job (nothing billed); carries the error for failover or the caller."""

    def __init__(self, error: errors.KlingError) -> None:
        super().__init__(str(error))
        self.error = error


class Stopped(Exception):
    """The job ended (a cancel) before it was sent: nothing more is submitted."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.job_id)
        self.job = job


class Submitter:
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        provider_for: Callable[[str], VideoProvider],
        settings: Settings,
        guard: Callable[[Match], Awaitable[None]],
    ) -> None:
        self.store = store
        self.runner = runner
        self._provider_for = provider_for
        self._settings = settings
        self._guard = guard

    async def _reserve(self, job_id: str, match: Match) -> None:
        """Book the quote on today's ledger, refusing atomically past the daily budget."""
        if match.provider == "local":
            return
        daily = self._settings.daily_budget_usd
        booked = await self.store.reserve(job_id, today(), match.cost_usd, daily)
        if not booked.ok:
            raise errors.BudgetExceeded(
                f"{match.provider} quotes ${match.cost_usd or 0:.3f}; ${booked.spent_before:.2f} of the "
                f"${daily or 0:.2f} KLING_MCP_DAILY_BUDGET_USD is already spent or reserved today."
            )

    async def submit(
        self,
        job: Job,
        matches: list[Match],
        requested_auto: bool,
        claim: KeyClaim | None,
        started: float,
        guard: Callable[[Match], Awaitable[None]] | None = None,
    ) -> tuple[Job, str | None]:
        """Create ``job`` and submit it; returns the job and a note for the caller.

        ``started`` is the call's ``time.monotonic()`` start: waits for a 429 end within
        :data:`SUBMIT_BUDGET_S` of it. ``guard`` (default: the budget guard) vets a failover target; one that
        raises :class:`errors.BudgetExceeded` or :class:`errors.ConfirmationRequired` is not tried."""
        # From the reservation to the record of the provider's answer, a cancelled call runs on to the end.
        with anyio.CancelScope(shield=True):
            await self._reserve(job.job_id, matches[0])
            try:
                stored, created = await self.store.create(
                    job, claim, lease_owner=self.runner.owner, lease_s=self._settings.lease_s
                )
            except BaseException:
                await self.store.release(job.job_id)
                raise
            if not created:  # a concurrent call with the same key won: its job is the one
                await self.store.release(job.job_id)
                key = claim.key if claim else ""
                return stored, f"Returned the existing job for idempotency_key={key!r}; nothing new was billed."
            with self.runner.leases.submitting(stored.job_id):
                job, note = await self._attempts(
                    stored, matches, requested_auto, started + SUBMIT_BUDGET_S, guard or self._guard
                )
            if not job.terminal:
                self.runner.track(job.job_id)  # after the submit: a job being submitted is never driven
            return job, note
        raise AssertionError("unreachable: the shielded block returns or raises")

    async def _attempts(
        self,
        job: Job,
        matches: list[Match],
        requested_auto: bool,
        deadline: float,
        guard: Callable[[Match], Awaitable[None]],
    ) -> tuple[Job, str | None]:
        notes: list[str] = []
        for i, match in enumerate(matches):
            if i:
                job = await self._retarget(job, match)
            try:
                try:
                    accepted = await self._send(job, deadline)
                except errors.ProviderError as exc:  # acceptance unknown: settled by a poll, or never failed over
                    return await self._unknown(job, exc), " ".join(notes) or None
            except Stopped as stopped:  # cancelled before anything reached a provider
                await self.store.release(job.job_id)
                return stopped.job, " ".join(notes) or None
            except Refused as refusal:
                error = refusal.error
                nxt = matches[i + 1] if i + 1 < len(matches) else None
                if requested_auto and nxt is not None and isinstance(error, errors.ProviderError):
                    try:
                        await guard(nxt)
                        await self._reserve(job.job_id, nxt)
                    except (errors.BudgetExceeded, errors.ConfirmationRequired):
                        pass
                    else:
                        notes.append(
                            f"{match.provider} could not take the job ({error.message}); failed over to {nxt.provider}."
                        )
                        continue
                await self._refused(job, error)
                raise error from None
            return await self._accepted(job, accepted, " ".join(notes) or None), " ".join(notes) or None
        raise AssertionError("unreachable: matches is never empty")

    async def _send(self, job: Job, deadline: float) -> Accepted:
        """One provider's submit, with 429s waited out; raises :class:`Refused` when not accepted."""
        provider = self._provider_for(job.provider)
        pause = _FIRST_RATE_WAIT_S
        while True:
            current = await self.store.get(job.job_id)
            if current is None or current.terminal:  # cancelled meanwhile (a 429 wait, a failover)
                raise Stopped(current or job)
            try:
                return await provider.submit(job)
            except errors.ProviderError as exc:
                if exc.may_have_accepted:
                    raise
                if isinstance(exc, errors.RateLimited):
                    wait = exc.retry_after if exc.retry_after is not None else pause
                    if time.monotonic() + wait < deadline:
                        log.info(
                            "job %s: %s rate-limited the submit; retrying in %.1f s", job.job_id, job.provider, wait
                        )
                        await anyio.sleep(wait)
                        pause = min(pause * 2, 8.0)
                        continue
                raise Refused(exc) from None
            except errors.KlingError as exc:
                # The adapter refused before sending anything (an unreadable or oversized file, ...).
                raise Refused(exc) from None

    async def _retarget(self, job: Job, match: Match) -> Job:
        def update(cur: Job) -> Job | None:
            if cur.terminal:
                return None
            return cur.updated(
                provider=match.provider,
                model=match.model or "",
                tier=match.variant.tier if match.variant else cur.tier,
                estimated_cost_usd=match.cost_usd,
                spec=cur.spec.model_copy(update={"duration": match.duration, "aspect_ratio": match.aspect_ratio}),
            )

        return await self.store.transition(job.job_id, update)

    async def _accepted(self, job: Job, accepted: Accepted, note: str | None) -> Job:
        def update(cur: Job) -> Job | None:
            changes = {
                "remote_id": accepted.remote_id,
                "submitted_at": time.time(),
                "provider_data": accepted.data,
                "cost_usd": accepted.cost_usd,
                "note": note,
            }
            if cur.terminal:  # cancelled while we were submitting: keep what the provider said
                return cur.updated(**{k: v for k, v in changes.items() if k != "note"})
            return cur.moved(JobStatus.SUBMITTED, **changes)

        job = await self.store.transition(job.job_id, update)
        if accepted.cost_usd is not None:
            await self.store.settle(job.job_id, accepted.cost_usd)
        if job.status == JobStatus.CANCELLED and PROVIDERS[job.provider].can_cancel:
            try:
                await self._provider_for(job.provider).cancel(job)
            except errors.ProviderError as exc:
                log.warning(
                    "cancel %s at %s (cancelled while submitting) failed: %s", job.job_id, job.provider, exc.code
                )
        return job

    async def _refused(self, job: Job, exc: errors.KlingError) -> None:
        """Nothing was billed: the job ends, its reservation and its key are released."""
        await self.runner.finish(job.job_id, JobStatus.FAILED, error=_info(exc))
        await self.store.release(job.job_id)
        if job.idempotency_key:
            await self.store.release_key(job.idempotency_key, job.job_id)

    async def _unknown(self, job: Job, exc: errors.ProviderError) -> Job:
        """The provider may have taken the job: settle it by one poll where it knows our id, else fail it."""
        if PROVIDERS[job.provider].client_chosen_id:
            try:
                result = await self._provider_for(job.provider).poll(job)
            except errors.ProviderError:
                result = None
            if isinstance(result, Running) and not result.confirmed:
                result = None  # the provider does not know it yet: still unknown, not proof either way
            if isinstance(result, Failed) and result.code == "interrupted":
                # It has no task with our id: the submit never arrived, nothing was billed.
                raise Refused(
                    errors.ProviderUnavailable(
                        f"{exc.message}; {job.provider} has no task with this job's id, so it did not take the job",
                        may_have_accepted=False,
                        hint="Nothing was billed; call again (now or in a minute) to submit it anew.",
                    )
                )

            def tracked(cur: Job) -> Job | None:
                if cur.terminal:
                    return None
                if result is None:  # still unknown: the runner polls it by our id until the provider says
                    note = f"The submit to {cur.provider} got no clear answer ({exc.message}); tracking it by its id."
                    return cur.updated(note=note)
                note = (
                    f"The submit to {cur.provider} got no clear answer ({exc.message}), but {cur.provider} has the job."
                )
                return cur.moved(JobStatus.SUBMITTED, remote_id=cur.job_id, submitted_at=time.time(), note=note)

            return await self.store.transition(job.job_id, tracked)
        message = (
            f"the submit of job {job.job_id} to {job.provider} got no clear answer ({exc.message}); it may or may "
            f"not be running and billed at {job.provider}."
        )
        failure = errors.JobInterrupted(
            message,
            retryable=False,
            hint=f"Do not submit it again blindly: look for it in your {job.provider} dashboard first. If it is not "
            "there, call again with a new idempotency_key.",
        )
        await self.runner.finish(job.job_id, JobStatus.FAILED, error=_info(failure))
        raise failure

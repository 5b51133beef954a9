"""The few store operations storyboards and assemblies make, in one place.

Every change is a store transition: an update function applied to the job as it is in the store *now*
(never a copy read before an ``await``); the store wakes every waiter on the job, in any process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from . import errors
from .jobs.backend import KeyClaim, RequestFingerprint, key_conflict
from .jobs.model import Job, JobStatus, can_transition
from .requests import ErrorView

if TYPE_CHECKING:
    from .service import VideoService

Update = Callable[[Job], Job | None]
Claim = KeyClaim  # an idempotency key bound to the request's fingerprint


class JobState:
    def __init__(self, service: VideoService) -> None:
        self._service = service

    async def get(self, job_id: str | None) -> Job | None:
        return await self._service.store.get(job_id) if job_id else None

    async def create(self, job: Job, claim: KeyClaim | None = None, *, lease: bool = False) -> tuple[Job, bool]:
        """Insert ``job`` (claiming ``claim``'s key in the same step); with ``lease``, this process holds
        its lease from the start. ``(the job the key names, False)`` when the key was already used."""
        runner = self._service.runner
        if not lease:
            return await self._service.store.create(job, claim)
        return await self._service.store.create(
            job, claim, lease_owner=runner.owner, lease_s=self._service.settings.lease_s
        )

    async def require(self, job_id: str) -> Job:
        """The job, or an ``unknown_job`` tool error."""
        job = await self.get(job_id)
        if job is None:
            raise errors.UnknownJob(f"no job {job_id!r} on this server.")
        return job

    async def existing(self, tool: str, key: str | None, request: BaseModel) -> tuple[KeyClaim | None, Job | None]:
        """The claim for ``key`` (bound to ``tool`` and the request's arguments) and the job it already names,
        if any; raises a tool error naming the difference when the key was used for another request."""
        if not key:
            return None, None
        args = request.model_dump(mode="json", exclude={"wait_seconds", "idempotency_key", "confirm_cost_usd"})
        claim = KeyClaim(key, RequestFingerprint.of({"tool": tool, **args}))
        bound = await self._service.store.key_job(key)
        if bound is None:
            return claim, None
        job, first_use = bound
        if first_use.digest != claim.fingerprint.digest:
            raise key_conflict(key, job.job_id, claim.fingerprint, first_use)
        return claim, job

    async def twin(self, fingerprint: str) -> Job | None:
        """An unfinished job made from the same request, if any."""
        job = await self._service.store.find_twin(fingerprint)
        return job if job is not None and not job.terminal else None

    async def transition(self, job_id: str, update: Update) -> Job:
        """Apply ``update`` to the current record atomically; the stored job."""
        return await self._service.store.transition(job_id, update)

    async def move(self, job_id: str, status: JobStatus, **changes: Any) -> Job:
        """Move a job to ``status``, through ``running`` and ``downloading`` where the state machine needs
        them (one transition each); a job that has ended meanwhile keeps its ending."""
        steps = []
        if status == JobStatus.SUCCEEDED:
            steps = [JobStatus.RUNNING, JobStatus.DOWNLOADING]
        for step in steps:

            def advance(job: Job, step: JobStatus = step) -> Job | None:
                if job.terminal or job.status == step or not can_transition(job.status, step):
                    return None
                if step == JobStatus.RUNNING and job.status != JobStatus.PENDING:
                    return None
                return job.moved(step)

            await self.transition(job_id, advance)
        return await self.transition(job_id, lambda job: None if job.terminal else job.moved(status, **changes))

    async def fail(self, job_id: str, error: ErrorView, **changes: Any) -> Job:
        return await self.move(job_id, JobStatus.FAILED, error=error, **changes)

    async def set_progress(self, job_id: str, progress: float, **changes: Any) -> Job:
        def step(job: Job) -> Job | None:
            if job.terminal or (round(job.progress, 1) == round(progress, 1) and not changes):
                return None
            return job.updated(progress=progress, **changes)

        return await self.transition(job_id, step)

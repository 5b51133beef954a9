"""The few store operations storyboards and assemblies make, in one place.

Every change is an update function applied to the job as it is in the store *now* (never a copy read
before an ``await``), the same shape as the store's transition interface. Saving through the runner
wakes every waiter on the job (``check_job`` with ``wait_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from . import errors
from .jobs.model import Job, JobStatus, can_transition
from .requests import ErrorView

if TYPE_CHECKING:
    from .service import VideoService

Update = Callable[[Job], Job | None]
Claim = str  # an idempotency key (the store interface binds it to the request's fingerprint)


class JobState:
    def __init__(self, service: VideoService) -> None:
        self._service = service

    async def get(self, job_id: str | None) -> Job | None:
        return self._service.store.get(job_id) if job_id else None

    async def create(self, job: Job, claim: Claim | None = None, *, lease: bool = False) -> tuple[Job, bool]:
        """Insert ``job`` (its idempotency key is recorded with it); ``(the job, True)``. ``lease``: the
        store of this branch has no leases (one driver per process)."""
        return self._service.runner.save(job), True

    async def require(self, job_id: str) -> Job:
        """The job, or an ``unknown_job`` tool error."""
        job = await self.get(job_id)
        if job is None:
            raise errors.UnknownJob(f"no job {job_id!r} on this server.")
        return job

    async def existing(self, tool: str, key: str | None, request: BaseModel) -> tuple[Claim | None, Job | None]:
        """The claim for ``key`` and the job it already names, if any."""
        if not key:
            return None, None
        return key, self._service.store.by_idempotency_key(key)

    async def twin(self, fingerprint: str) -> Job | None:
        """An unfinished job made from the same request, if any."""
        job = self._service.store.by_fingerprint(fingerprint)
        return job if job is not None and not job.terminal else None

    async def transition(self, job_id: str, update: Update) -> Job:
        """Apply ``update`` to the current record (no await between read and write); the stored job."""
        current = self._service.store.get(job_id)
        if current is None:
            raise KeyError(job_id)
        new = update(current)
        if new is None or new == current:
            return current
        return self._service.runner.save(new.updated())

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

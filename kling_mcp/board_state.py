"""The few store operations storyboards and assemblies make, in one place.

Every change is an update function applied to the job as it is in the store *now* (never a copy read
before an ``await``), the same shape as the store's transition interface. Saving through the runner
wakes every waiter on the job (``check_job`` with ``wait_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .jobs.model import Job, JobStatus
from .requests import ErrorView

if TYPE_CHECKING:
    from .service import VideoService

Update = Callable[[Job], Job | None]


class JobState:
    def __init__(self, service: VideoService) -> None:
        self._service = service

    async def get(self, job_id: str | None) -> Job | None:
        return self._service.store.get(job_id) if job_id else None

    async def create(self, job: Job) -> Job:
        return self._service.runner.save(job)

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
        """Move a job to ``status`` (through ``downloading`` where the state machine needs it)."""

        def step(job: Job) -> Job | None:
            if job.terminal:
                return None
            if status == JobStatus.SUCCEEDED:
                if job.status == JobStatus.PENDING:
                    job = job.moved(JobStatus.RUNNING)
                if job.status != JobStatus.DOWNLOADING:
                    job = job.moved(JobStatus.DOWNLOADING)
            return job.moved(status, **changes)

        return await self.transition(job_id, step)

    async def fail(self, job_id: str, error: ErrorView, **changes: Any) -> Job:
        return await self.move(job_id, JobStatus.FAILED, error=error, **changes)

    async def set_progress(self, job_id: str, progress: float, **changes: Any) -> Job:
        def step(job: Job) -> Job | None:
            if job.terminal or (round(job.progress, 1) == round(progress, 1) and not changes):
                return None
            return job.updated(progress=progress, **changes)

        return await self.transition(job_id, step)

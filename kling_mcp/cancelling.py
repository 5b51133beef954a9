"""Cancelling a job: in the store first, so the cancel wins over any concurrent poll in any process, then at
the provider where it can be cancelled. Used by :meth:`VideoService.cancel`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import errors
from .catalog import PROVIDERS
from .jobs.model import Job, JobStatus
from .requests import CancelResult

if TYPE_CHECKING:
    from .service import VideoService

log = logging.getLogger("kling_mcp.service")


async def cancel_job(service: VideoService, job_id: str) -> CancelResult:
    """Cancel in the store first, so the cancel wins over any concurrent poll in any process; then at the
    provider. A job already downloading has finished at the provider (and is paid for): it is kept.
    A storyboard cancels its unfinished shots; an assembly stops its join."""
    before = await service.get(job_id)
    if before.kind != "video" and not before.terminal:
        return await (
            service.boards.cancel(before) if before.kind == "storyboard" else service.assemblies.cancel(before)
        )
    won = False

    def cancelled(cur: Job) -> Job | None:
        nonlocal won, before
        before = cur  # what the provider is told about: the job as it was when cancelled
        won = not (cur.terminal or cur.status == JobStatus.DOWNLOADING)
        return cur.moved(JobStatus.CANCELLED, note="Cancelled by the caller.") if won else None

    job = await service.store.transition(job_id, cancelled)
    if not won:
        return _not_cancelled(job)
    service.runner.stop_tracking(job_id)
    entry = PROVIDERS[job.provider]
    stopped = False
    if job.remote_id is not None and entry.can_cancel:
        try:
            stopped = await service.provider(job.provider).cancel(before)
        except errors.ProviderError as exc:
            log.warning("cancel %s at %s failed: %s", job_id, job.provider, exc.code)
    if stopped:
        message = f"Cancelled job {job_id} at {job.provider}."
    elif job.remote_id is None:
        message = (
            f"Cancelled job {job_id} before {job.provider} acknowledged it; if the submit still reaches "
            f"{job.provider}, it is cancelled there where {job.provider} allows it."
        )
    elif not entry.can_cancel:
        message = f"Stopped tracking job {job_id}. {entry.cancel_note} Any result it produces will not be downloaded."
    else:
        message = (
            f"Stopped tracking job {job_id}, but {job.provider} did not confirm the cancel: it may "
            "still run and be billed."
        )
    job = await service.store.transition(job_id, lambda cur: cur.updated(note=message))
    return CancelResult(
        job_id=job_id,
        status=job.status.value,
        cancelled_at_provider=stopped,
        message=message,
        next_action="Nothing more will happen for this job.",
    )


def _not_cancelled(job: Job) -> CancelResult:
    if job.status == JobStatus.DOWNLOADING:
        message = (
            f"job {job.job_id} had already finished at {job.provider} (and is paid for); its video is being "
            "downloaded and is kept, not cancelled."
        )
        next_action = f"Call check_job with job_id={job.job_id!r} to get the video."
    else:
        message = f"job {job.job_id} had already finished ({job.status.value}); nothing to cancel."
        next_action = "Nothing to do."
    return CancelResult(
        job_id=job.job_id,
        status=job.status.value,
        cancelled_at_provider=False,
        message=message,
        next_action=next_action,
    )

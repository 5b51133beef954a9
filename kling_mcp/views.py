"""What a caller sees of a job: :class:`JobView` with a one-sentence ``next_action``."""

from __future__ import annotations

from .catalog import variant_for_model
from .jobs.model import Job, JobStatus
from .requests import JobView, VideoView, short


def video_uri(job_id: str, index: int) -> str:
    return f"kling://jobs/{job_id}/videos/{index}"


def _typical(job: Job) -> float:
    return variant_for_model(job.provider, job.model).typical_seconds


def next_action(job: Job) -> str:
    if job.status == JobStatus.SUCCEEDED:
        n = len(job.videos)
        where = job.videos[0].path if job.videos else "the data dir"
        more = f" ({n} videos)" if n > 1 else ""
        return (
            f"Done{more}: show the user the video at {where}, or read resource {video_uri(job.job_id, 0)}. "
            f"For a next shot with continuity, pass first_frame={video_uri(job.job_id, 0)}/last-frame; to edit it, "
            f"video={video_uri(job.job_id, 0)}."
        )
    if job.status == JobStatus.FAILED:
        # A key always returns the job it was first used for, this failed one included.
        again = (
            f" To try again, call with a new idempotency_key (idempotency_key={job.idempotency_key!r} returns this "
            "failed job)."
            if job.idempotency_key
            else ""
        )
        if job.error is not None and job.error.retryable:
            return f"The job failed but may succeed if generated again: {job.error.hint or job.error.message}{again}"
        return f"The job failed: {job.error.hint if job.error else 'see error'}{again}"
    if job.status == JobStatus.CANCELLED:
        return "Nothing more will happen for this job."
    typical = _typical(job)
    remaining = max(5.0, typical - (job.updated_at - job.created_at))
    if job.status == JobStatus.DOWNLOADING:
        return f"The video is being downloaded; call check_job with job_id={job.job_id!r} and wait_seconds=20."
    return (
        f"Still {job.status.value}; call check_job with job_id={job.job_id!r} and wait_seconds=45 "
        f"(typically ready in about {remaining:.0f} s). Do not call generate_video again: that would bill twice."
    )


def _cost_note(job: Job) -> str | None:
    if job.cost_usd is not None and job.cost_basis == "inferred":
        return f"cost_usd is converted from {job.provider}'s credits at its published rate (inferred, not a bill)."
    return None


# The view's fields that the job record declares too, with the same type: shown as stored. The others are
# computed from the record (the status's name, rounded progress, videos with their URIs, the notes joined).
AS_STORED: tuple[str, ...] = tuple(
    name
    for name in JobView.model_fields
    if name in Job.model_fields and name not in ("status", "progress", "videos", "note")
)


def job_view(job: Job, note: str | None = None) -> JobView:
    return JobView(
        **{name: getattr(job, name) for name in AS_STORED},
        status=job.status.value,
        operation=job.operation,  # type: ignore[arg-type]
        prompt=short(job.spec.prompt),
        progress=round(job.progress, 1),
        videos=[VideoView.of(v, video_uri(job.job_id, v.index)) for v in job.videos],
        next_action=next_action(job),
        note=" ".join(n for n in (note, job.note, _cost_note(job)) if n) or None,
        storyboard_id=job.parent_id,
    )

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


def job_view(job: Job, note: str | None = None) -> JobView:
    return JobView(
        job_id=job.job_id,
        status=job.status.value,
        provider=job.provider,
        model=job.model,
        tier=job.tier,
        operation=job.operation,  # type: ignore[arg-type]
        prompt=short(job.spec.prompt),
        progress=round(job.progress, 1),
        estimated_cost_usd=job.estimated_cost_usd,
        cost_usd=job.cost_usd,
        videos=[
            VideoView(
                uri=video_uri(job.job_id, v.index),
                path=v.path,
                mime_type=v.mime_type,
                width=v.width,
                height=v.height,
                duration_s=v.duration_s,
                size_bytes=v.size_bytes,
            )
            for v in job.videos
        ],
        error=job.error,
        next_action=next_action(job),
        note=" ".join(n for n in (note, job.note, _cost_note(job)) if n) or None,
        storyboard_id=job.parent_id,
        shot=job.shot,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )

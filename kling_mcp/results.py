"""This server's results as inputs: ``kling://jobs/{job_id}/videos/{n}`` where a video is taken, and
``.../first-frame`` or ``.../last-frame`` where an image is taken.

They resolve to local files under the data dir (the video itself, or its frame as a cached PNG beside
it), which every adapter already knows how to send (upload or data URI). A URI of an unknown job, of
a job that has not succeeded, or of a video it does not have is an :class:`errors.KlingError` that
says which and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio

from . import errors
from .jobs.model import Job, JobStatus

JobLookup = Callable[[str], Awaitable[Job | None]]

_URI = re.compile(
    r"^kling://jobs/(?P<job_id>[^/?#\s]{1,100})/videos/(?P<index>\d{1,4})(?:/(?P<frame>first-frame|last-frame))?/?$"
)
FORMS = "kling://jobs/{job_id}/videos/{n}, or .../videos/{n}/first-frame or /last-frame for an image"


def frame_uri(job_id: str, index: int, which: Literal["first", "last"]) -> str:
    return f"kling://jobs/{job_id}/videos/{index}/{which}-frame"


async def resolve(value: str, *, arg: str, kind: Literal["image", "video"], lookup: JobLookup, data_dir: Path) -> Path:
    """The local file behind ``value`` (a ``kling://`` URI) for the argument ``arg``."""
    match = _URI.match(value.strip())
    if match is None:
        raise errors.InvalidInputFile(
            f"{arg}: {value[:200]!r} is not a result URI of this server.", hint=f"Use {FORMS}."
        )
    job_id, index, frame = match["job_id"], int(match["index"]), match["frame"]
    if kind == "image" and frame is None:
        raise errors.InvalidInputFile(
            f"{arg} needs an image, but {value} is a video.",
            hint=f"Pass {value}/last-frame (or /first-frame) to use one of its frames.",
        )
    if kind == "video" and frame is not None:
        raise errors.InvalidInputFile(
            f"{arg} needs a video, but {value} is a frame (an image).",
            hint=f"Pass kling://jobs/{job_id}/videos/{index} for the video itself.",
        )
    job = await lookup(job_id)
    if job is None:
        raise errors.UnknownJob(
            f"{arg}: {value} names job {job_id!r}, which this server does not know.",
            hint="Call list_jobs to see the job ids this server knows.",
        )
    video = finished_video(job, index, arg=arg, value=value)
    if frame is None:
        return video
    from . import frames

    which: Literal["first", "last"] = "first" if frame == "first-frame" else "last"
    try:
        return await anyio.to_thread.run_sync(frames.frame_png, video, which)
    except errors.KlingError:
        raise
    except Exception as exc:  # a video this server stored but cannot decode
        raise errors.InvalidInputFile(
            f"{arg}: the {which} frame of {value} could not be read ({type(exc).__name__}).",
            hint="Generate the video again, or pass an image file instead.",
        ) from None


def finished_video(job: Job, index: int, *, arg: str, value: str) -> Path:
    """The file of ``job``'s video ``index``; an error saying what to do when it has none (yet)."""
    if job.status != JobStatus.SUCCEEDED:
        if job.terminal:
            raise errors.InvalidInputFile(
                f"{arg}: job {job.job_id} ended {job.status.value}, so {value} has no video.",
                hint="Use a job that succeeded (list_jobs status='succeeded'), or generate the video again.",
            )
        raise errors.InvalidInputFile(
            f"{arg}: job {job.job_id} is not finished ({job.status.value}), so {value} does not exist yet.",
            hint=f"Call check_job with job_id={job.job_id!r} and wait_seconds=45 until it has succeeded, "
            "then pass the same URI again.",
        )
    for video in job.videos:
        if video.index == index:
            path = Path(video.path)
            if not path.is_file():
                raise errors.InvalidInputFile(
                    f"{arg}: the file of {value} ({path}) is gone from the data dir.",
                    hint="Generate the video again.",
                )
            return path
    have = ", ".join(str(v.index) for v in job.videos) or "none"
    raise errors.InvalidInputFile(
        f"{arg}: job {job.job_id} has no video {index} (it has: {have}).",
        hint=f"Use kling://jobs/{job.job_id}/videos/0.",
    )

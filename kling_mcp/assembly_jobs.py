"""``assemble_video`` as a job of its own (provider ``local``, operation ``assemble``, free), and the
joining step a storyboard shares with it.

The join itself is :func:`kling_mcp.assembly.assemble` (PyAV), run in a worker thread; its progress is
copied into the job record every half second so ``check_job`` waiters see it move.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from . import errors, media
from .board_state import JobState
from .catalog import ASPECT_RATIOS
from .download import download
from .jobs.composite import AssemblyRecord
from .jobs.model import Job, JobStatus, StoredVideo
from .requests import CancelResult, ErrorView, VideoSpec
from .storyboard_plan import fingerprint
from .vocabulary import Transition

if TYPE_CHECKING:
    from .service import Progress, VideoService
    from .storyboard_models import AssembleRequest

log = logging.getLogger("kling_mcp.assembly")

ASSEMBLE_MODEL = "assemble"


_STOPS: dict[str, threading.Event] = {}


def request_stop(job_id: str) -> None:
    """Abort the join running for ``job_id`` in this process, if any (a cancelled job)."""
    stop = _STOPS.get(job_id)
    if stop is not None:
        stop.set()


class _Stopped(Exception):
    pass


async def join_videos(
    service: VideoService,
    job_id: str,
    paths: list[Path],
    *,
    transition: Transition,
    transition_s: float,
    aspect_ratio: str | None,
    on_progress: Callable[[float], Awaitable[Any]],
) -> tuple[StoredVideo, str]:
    """Join ``paths`` into ``videos/<job_id>/0.mp4``; the stored video and how it was joined
    (``remux``, ``reencode``, or ``copy`` for a single video)."""
    from . import assembly

    dest = service.settings.data_dir / "videos" / job_id / "0.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    fraction = [0.0]
    stop = _STOPS.setdefault(job_id, threading.Event())

    def progress(value: float) -> None:
        if stop.is_set():
            raise _Stopped
        fraction[0] = float(value)

    def run() -> tuple[int | None, int | None, float | None, str]:
        if len(paths) == 1:  # a one-shot storyboard: its video is the result
            shutil.copyfile(paths[0], dest)
            info = media.probe(dest)
            return info.width, info.height, info.duration_s, "copy"
        result = assembly.assemble(
            paths,
            dest,
            transition=transition,
            transition_s=transition_s,
            aspect_ratio=aspect_ratio,
            on_progress=progress,
        )
        return result.width, result.height, result.duration_s, result.mode

    async def report() -> None:
        last = -1.0
        while True:
            await anyio.sleep(0.5)
            if fraction[0] != last:
                last = fraction[0]
                await on_progress(last)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(report)
            width, height, duration_s, mode = await anyio.to_thread.run_sync(run)
            tg.cancel_scope.cancel()
    except errors.KlingError:
        raise
    except _Stopped:
        raise errors.AssemblyFailed("the join was stopped (the job was cancelled).", retryable=False) from None
    except Exception as exc:
        log.exception("assembly of job %s failed", job_id)
        raise errors.AssemblyFailed(f"joining the videos failed: {type(exc).__name__}: {exc}") from None
    finally:
        _STOPS.pop(job_id, None)
    stored = StoredVideo(
        index=0,
        path=str(dest),
        width=width,
        height=height,
        duration_s=duration_s,
        size_bytes=dest.stat().st_size,
    )
    return stored, mode


class Assemblies:
    """Creates and drives ``assemble`` jobs."""

    def __init__(self, service: VideoService) -> None:
        self._service = service
        self._state = JobState(service)

    async def create(self, req: AssembleRequest, progress: Progress | None = None) -> tuple[Job, str | None]:
        service = self._service
        claim, existing = await self._state.existing("assemble_video", req.idempotency_key, req)
        if existing is not None:
            return await service.wait_for(existing, req.wait_seconds, progress), (
                f"Returned the existing job for idempotency_key={req.idempotency_key!r}."
            )
        inputs = [await service.resolve_input(v, f"videos[{i}]", "video") for i, v in enumerate(req.videos)]
        if req.aspect_ratio is not None and req.aspect_ratio not in ASPECT_RATIOS:
            raise errors.InvalidRequest(f"aspect_ratio {req.aspect_ratio!r} is not one of {', '.join(ASPECT_RATIOS)}.")
        record = AssemblyRecord(
            inputs=inputs, transition=req.transition, transition_s=req.transition_s, aspect_ratio=req.aspect_ratio
        )
        identity = fingerprint(
            "assemble", [r.sha256 or r.value for r in inputs], req.transition, req.transition_s, req.aspect_ratio
        )
        twin = None if req.idempotency_key else await self._state.twin(identity)
        if twin is not None:
            return await service.wait_for(twin, req.wait_seconds, progress), (
                f"An identical assembly is already running as job {twin.job_id}; returned it."
            )
        job = Job(
            kind="assemble",
            provider="local",
            model=ASSEMBLE_MODEL,
            spec=VideoSpec(
                operation="text",
                prompt=f"join {len(inputs)} videos ({req.transition})",
                aspect_ratio=req.aspect_ratio,
            ),
            fingerprint=identity,
            idempotency_key=req.idempotency_key,
            estimated_cost_usd=0.0,
            remote_id=None,
            assembly=record,
        )
        job, created = await self._state.create(job, claim, lease=True)
        if created:
            service.runner.track(job.job_id)
        return await service.wait_for(job, req.wait_seconds, progress), None

    async def drive(self, job_id: str) -> None:
        """The runner's driver for an ``assemble`` job: fetch URL inputs, join, record the result."""
        job = await self._state.get(job_id)
        if job is None or job.terminal or job.assembly is None:
            return
        record = job.assembly
        await self._state.transition(
            job_id, lambda j: j.moved(JobStatus.RUNNING) if j.status == JobStatus.PENDING else None
        )
        try:
            paths = [await self._local(job_id, n, ref.value, ref.kind) for n, ref in enumerate(record.inputs)]

            async def on_progress(fraction: float) -> None:
                await self._state.set_progress(job_id, round(99.0 * fraction, 1))

            stored, mode = await join_videos(
                self._service,
                job_id,
                paths,
                transition=record.transition,
                transition_s=record.transition_s,
                aspect_ratio=record.aspect_ratio,
                on_progress=on_progress,
            )
        except errors.KlingError as exc:
            await self._state.fail(job_id, ErrorView(**exc.to_info()))
            return
        await self._state.move(
            job_id,
            JobStatus.SUCCEEDED,
            videos=[stored],
            cost_usd=0.0,
            progress=100.0,
            assembly=record.model_copy(update={"mode": mode}),
        )

    async def cancel(self, job: Job) -> CancelResult:
        """Stop the assembly (a join already running in its worker thread finishes unseen)."""
        self._service.runner.stop_tracking(job.job_id)
        request_stop(job.job_id)
        message = f"Cancelled assembly {job.job_id}."
        done = await self._state.move(job.job_id, JobStatus.CANCELLED, note=message)
        return CancelResult(
            job_id=job.job_id,
            status=done.status.value,
            cancelled_at_provider=True,
            message=message,
            next_action="Nothing more will happen for this job.",
        )

    async def _local(self, job_id: str, n: int, value: str, kind: str) -> Path:
        if kind == "file":
            return Path(value)
        settings = self._service.settings
        dest = settings.data_dir / "work" / job_id / f"input-{n}.mp4"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            await download(
                self._service.client,
                value,
                dest,
                root=settings.data_dir,
                max_bytes=settings.max_download_bytes,
                secrets=settings.secrets(),
            )
        return dest

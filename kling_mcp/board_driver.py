"""Driving a storyboard: the runner's driver for jobs of kind ``storyboard`` (:class:`BoardDriver`).

It starts every shot that is ready (a chained shot once the previous take has succeeded, its first frame
the previous take's last frame; the others at once), waits, fails the board naming the first failed shot
once nothing else runs, and when every shot has succeeded joins them (``assemble=true``) into the board's
video. A shot's job id is recorded on the board before the shot is saved or submitted, so a restart finds
it instead of paying twice. Creating, retaking and cancelling boards is :mod:`.storyboards`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from . import errors
from .assembly_jobs import join_videos
from .board_state import JobState
from .jobs.composite import ShotPlan
from .jobs.model import Job, JobStatus, new_job_id
from .requests import ErrorView
from .results import frame_uri
from .specs import spec_identity
from .storyboard_plan import fingerprint
from .validation import check
from .vocabulary import UNSUCCESSFUL

if TYPE_CHECKING:
    from .service import VideoService

log = logging.getLogger("kling_mcp.storyboards")

ASSEMBLY_SHARE = 5.0  # percent of a board's progress that is the final join
WAKE_S = 1.0


class BoardDriver:
    """Drives storyboards: starts their shots, follows them, and finishes or fails the board."""

    def __init__(self, service: VideoService, state: JobState) -> None:
        self._service = service
        self._state = state

    async def drive(self, board_id: str) -> None:
        """Drive the board until it is finished (see the module docstring); the runner calls it under the
        board's lease, also after a restart."""
        while True:
            board = await self._state.get(board_id)
            if board is None or board.terminal or board.board is None:
                return
            plans = board.board.shots
            takes = [await self._state.get(p.job_id) for p in plans]
            if board.status == JobStatus.PENDING:
                await self._state.transition(
                    board_id, lambda j: j.moved(JobStatus.RUNNING) if j.status == JobStatus.PENDING else None
                )
            running = [t for t in takes if t is not None and not t.terminal]
            failed = [i for i, t in enumerate(takes) if t is not None and t.status in UNSUCCESSFUL]
            if failed and not running:
                await self._fail(board_id, failed[0] + 1, takes[failed[0]])
                return
            if all(t is not None and t.status == JobStatus.SUCCEEDED for t in takes):
                await self._finish(board_id)
                return
            started = False
            if not failed:  # after a failure nothing new is spent: the board fails once the rest settle
                for i in range(len(plans)):
                    if takes[i] is None and self._ready(plans, takes, i):
                        await self._start(board_id, i)
                        started = True
            await self._update_progress(board_id)
            if running:
                await self._service.runner.wait(running[0].job_id, WAKE_S)
            elif not started:
                await anyio.sleep(WAKE_S)

    @staticmethod
    def _ready(plans: list[ShotPlan], takes: list[Job | None], i: int) -> bool:
        if not plans[i].chained:
            return True
        previous = takes[i - 1]
        return previous is not None and previous.status == JobStatus.SUCCEEDED

    async def _start(self, board_id: str, i: int) -> None:
        """Record a take id on the board (or reuse one recorded before a crash), then submit the shot."""
        board = await self._state.get(board_id)
        if board is None or board.board is None:
            return
        job_id = board.board.shots[i].job_id or new_job_id()

        def claim(job: Job) -> Job | None:
            if job.terminal or job.board is None or job.board.shots[i].job_id not in (None, job_id):
                return None
            shots = list(job.board.shots)
            plan = shots[i]
            takes = plan.takes if job_id in plan.takes else [*plan.takes, job_id]
            shots[i] = plan.model_copy(update={"job_id": job_id, "takes": takes})
            return job.updated(board=job.board.model_copy(update={"shots": shots}))

        board = await self._state.transition(board_id, claim)
        if board.board is None or board.board.shots[i].job_id != job_id or board.terminal:
            return
        if await self._state.get(job_id) is not None:
            return  # already saved: the runner resumes it like any job
        await self._launch(board, i, job_id)

    async def _launch(self, board: Job, i: int, job_id: str) -> None:
        assert board.board is not None
        service = self._service
        plan = board.board.shots[i]
        spec = plan.spec
        shot_job = Job(
            job_id=job_id,
            provider=board.provider,
            model=board.model,
            tier=spec.tier,
            spec=spec,
            parent_id=board.job_id,
            shot=i + 1,
            estimated_cost_usd=plan.estimated_cost_usd,
        )
        try:
            if plan.chained:
                previous = board.board.shots[i - 1].job_id
                frame = await service.resolve_input(
                    frame_uri(str(previous), 0, "last"), f"shot {i + 1} first_frame", "image"
                )
                spec = spec.model_copy(update={"first_frame": frame})
            match = check(spec, board.provider, spec.tier)
            if not match.ok:
                raise errors.InvalidRequest(f"shot {i + 1}: " + " ".join(match.problems))
        except errors.KlingError as exc:
            saved, _ = await self._state.create(shot_job.model_copy(update={"spec": spec}))
            await self._state.fail(saved.job_id, ErrorView(**exc.to_info()))
            return
        shot_job = shot_job.model_copy(
            update={
                "spec": spec,
                "model": match.model or board.model,
                "estimated_cost_usd": match.cost_usd,
                "fingerprint": fingerprint("shot", board.provider, spec_identity(spec)),
            }
        )
        latest = await self._state.get(board.job_id)
        if latest is None or latest.terminal:  # cancelled while the frame was being prepared: spend nothing
            return
        try:
            await service.submit_job(shot_job, [match])
        except errors.KlingError as exc:
            log.info("storyboard %s: shot %d was not submitted: %s", board.job_id, i + 1, exc.code)

    async def _update_progress(self, board_id: str) -> None:
        board = await self._state.get(board_id)
        if board is None or board.board is None:
            return
        weights, done = 0.0, 0.0
        for plan in board.board.shots:
            take = await self._state.get(plan.job_id)
            weight = float(plan.spec.duration or 5)
            weights += weight
            if take is not None:
                done += weight * (100.0 if take.status == JobStatus.SUCCEEDED else take.progress)
        share = 100.0 - (ASSEMBLY_SHARE if board.board.assemble else 0.0)
        await self._state.set_progress(board_id, round(share * done / (100.0 * weights), 1))

    async def _fail(self, board_id: str, shot: int, take: Job | None) -> None:
        error = take.error if take is not None and take.error is not None else None
        reason = f"{error.message}" if error else f"it ended {take.status.value if take else 'unstarted'}"
        await self._state.fail(
            board_id,
            ErrorView(
                code=error.code if error else "job_failed",
                message=f"shot {shot} failed: {reason}",
                retryable=True,
                hint=f"Call retake_shot with job_id={board_id!r} and shot={shot} (a new prompt is allowed); "
                "the finished shots are kept.",
            ),
            cost_usd=await self._cost(board_id),
        )

    async def _cost(self, board_id: str) -> float | None:
        board = await self._state.get(board_id)
        if board is None or board.board is None:
            return None
        costs = [t.cost_usd for t in [await self._state.get(p.job_id) for p in board.board.shots] if t is not None]
        return round(sum(c for c in costs if c is not None), 6) if costs else None

    async def _finish(self, board_id: str) -> None:
        board = await self._state.get(board_id)
        if board is None or board.board is None:
            return
        record = board.board
        cost = await self._cost(board_id)
        if not record.assemble:
            await self._state.move(board_id, JobStatus.SUCCEEDED, cost_usd=cost, progress=100.0)
            return
        await self._state.transition(
            board_id,
            lambda j: None if j.terminal or j.status == JobStatus.DOWNLOADING else j.moved(JobStatus.DOWNLOADING),
        )
        takes = [await self._state.get(p.job_id) for p in record.shots]
        paths = [t.videos[0].path for t in takes if t is not None and t.videos]
        share = 100.0 - ASSEMBLY_SHARE

        async def on_progress(fraction: float) -> None:
            await self._state.set_progress(board_id, round(share + ASSEMBLY_SHARE * 0.99 * fraction, 1))

        try:
            if len(paths) != len(record.shots):
                raise errors.AssemblyFailed("a shot's video is missing from the data dir.")
            stored, mode = await join_videos(
                self._service,
                board_id,
                [Path(p) for p in paths],
                transition=record.transition,
                transition_s=record.transition_s,
                aspect_ratio=None,
                on_progress=on_progress,
            )
        except errors.KlingError as exc:
            await self._state.fail(board_id, ErrorView(**exc.to_info()), cost_usd=cost)
            return
        await self._state.move(board_id, JobStatus.SUCCEEDED, videos=[stored], cost_usd=cost, progress=100.0)

"""Storyboards: a job whose children are ordinary shot jobs, driven in the background.

``generate_storyboard`` validates and quotes every shot (:mod:`.storyboard_plan`), guards the total and
saves the board; the runner then drives it with :meth:`Storyboards.drive` (also after a restart): it
starts every shot that is ready (a chained shot once the previous take has succeeded, the others at
once), waits, fails the board naming the first failed shot once nothing else runs, and when every shot
has succeeded joins them (``assemble=true``) into the board's video. A shot's job id is recorded on the
board before the shot is saved or submitted, so a restart finds it instead of paying twice.

``retake_shot`` makes a new board from a finished one (a finished job never changes status again): the
retaken shot, every shot without a successful take and, with ``cascade``, the later chained shots get
new takes; the other shots keep theirs, and the old board and takes stay in the store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from . import errors
from .assembly_jobs import join_videos, request_stop
from .board_state import Claim, JobState
from .board_view import board_view
from .jobs.composite import BoardRecord, ShotPlan
from .jobs.model import Job, JobStatus, new_job_id
from .requests import CancelResult, ErrorView, VideoSpec
from .results import frame_uri
from .spending import require_confirmation
from .storyboard_plan import BoardQuote, build_shots, fingerprint, quote_shots, retake_plans, spec_identity
from .validation import check

if TYPE_CHECKING:
    from .service import Progress, VideoService
    from .storyboard_models import BoardView, RetakeRequest, StoryboardRequest

log = logging.getLogger("kling_mcp.storyboards")

ASSEMBLY_SHARE = 5.0  # percent of a board's progress that is the final join
WAKE_S = 1.0


class Storyboards:
    def __init__(self, service: VideoService) -> None:
        self._service = service
        self._state = JobState(service)

    # --- creating ---------------------------------------------------------------------------------

    async def create(self, req: StoryboardRequest, progress: Progress | None = None) -> tuple[Job, str | None]:
        service = self._service
        claim, existing = await self._state.existing("generate_storyboard", req.idempotency_key, req)
        if existing is not None:
            return await self._returned(existing, req.wait_seconds, progress)
        plans = await build_shots(service, req)
        quote = await quote_shots(service, plans, req.provider, req.tier)
        identity = fingerprint(
            "storyboard",
            quote.provider,
            quote.tier,
            req.continuity,
            req.transition,
            req.transition_s,
            req.assemble,
            [(p.chained, spec_identity(p.spec)) for p in quote.shots],
        )
        twin = None if req.idempotency_key else await self._state.twin(identity)
        if twin is not None:
            return await service.wait_for(twin, req.wait_seconds, progress), (
                f"An identical storyboard is already running as job {twin.job_id}; returned it instead of "
                "paying twice. Pass a new idempotency_key to start another one."
            )
        await self._guard(quote, req.confirm_cost_usd)
        record = BoardRecord(
            shots=quote.shots,
            continuity=req.continuity,
            style=req.style,
            transition=req.transition,
            transition_s=req.transition_s,
            assemble=req.assemble,
        )
        board = self._board(quote, record, identity, req.idempotency_key, req.aspect_ratio, quote.total_usd)
        note = f"Quoted {quote.describe()} (basis: {quote.basis})."
        return await self._start_board(board, claim, req.wait_seconds, progress, note)

    async def _start_board(
        self,
        board: Job,
        claim: Claim | None,
        wait_seconds: float | None,
        progress: Progress | None,
        note: str | None,
    ) -> tuple[Job, str | None]:
        stored, created = await self._state.create(board, claim, lease=True)
        if not created:  # a concurrent call with the same key won
            return await self._returned(stored, wait_seconds, progress)
        self._service.runner.track(stored.job_id)
        return await self._service.wait_for(stored, wait_seconds, progress), note

    def _board(
        self,
        quote: BoardQuote,
        record: BoardRecord,
        identity: str,
        key: str | None,
        aspect_ratio: str | None,
        estimate: float | None,
    ) -> Job:
        first = record.shots[0]
        return Job(
            kind="storyboard",
            provider=quote.provider,
            model=quote.model,
            tier=first.spec.tier,
            spec=VideoSpec(
                operation="text",
                prompt=f"{len(record.shots)}-shot storyboard: {first.prompt}",
                aspect_ratio=aspect_ratio or first.spec.aspect_ratio,
                tier=first.spec.tier,
            ),
            fingerprint=identity,
            idempotency_key=key,
            estimated_cost_usd=estimate,
            board=record,
        )

    async def _returned(
        self, existing: Job, wait_seconds: float | None, progress: Progress | None
    ) -> tuple[Job, str | None]:
        job = await self._service.wait_for(existing, wait_seconds, progress)
        return job, f"Returned the existing storyboard {job.job_id} for this idempotency_key; nothing new was billed."

    async def _guard(self, quote: BoardQuote, confirm_cost_usd: float | None, retake: bool = False) -> None:
        """The budget guards and the confirmation, on the total of the shots this call makes."""
        what = f" for {len(quote.shots)} shot(s)"
        await self._service.guard_cost(quote.provider, quote.total_usd, quote.basis, what=what)
        if quote.provider == "local":
            return
        kind = "retake of" if retake else "storyboard of"
        require_confirmation(
            self._service.settings.confirm_above_usd,
            quote.total_usd,
            confirm_cost_usd,
            provider=quote.provider,
            basis=quote.basis,
            what=f"This {kind} {len(quote.shots)} shot(s) on {quote.provider} ({quote.tier or 'default'} tier)",
        )

    # --- retakes ----------------------------------------------------------------------------------

    async def retake(self, req: RetakeRequest, progress: Progress | None = None) -> tuple[Job, str | None]:
        service = self._service
        claim, existing = await self._state.existing("retake_shot", req.idempotency_key, req)
        if existing is not None:
            return await self._returned(existing, req.wait_seconds, progress)
        old = await self._state.require(req.job_id)
        if old.kind != "storyboard" or old.board is None:
            raise errors.InvalidRequest(
                f"job {old.job_id} is not a storyboard ({old.operation}); retake_shot takes a storyboard's job_id.",
                hint="For a single video, call generate_video again; list_jobs shows storyboards.",
            )
        if not old.terminal:
            raise errors.InvalidRequest(
                f"storyboard {old.job_id} is still {old.status.value}; a shot can be retaken once it has finished.",
                hint=f"Call check_job with job_id={old.job_id!r} and wait_seconds=45, or cancel_job it first.",
            )
        record = old.board
        if req.shot > len(record.shots):
            raise errors.InvalidRequest(
                f"storyboard {old.job_id} has {len(record.shots)} shot(s); there is no shot {req.shot}.",
                hint=f"Pass shot between 1 and {len(record.shots)}.",
            )
        takes = [await self._state.get(p.job_id) for p in record.shots]
        finished = [t is not None and t.status == JobStatus.SUCCEEDED for t in takes]
        plans, redo = retake_plans(record, finished, req.shot, req.prompt, req.duration, req.cascade)
        quote = await quote_shots(service, [plans[i] for i in redo], old.provider, old.tier)
        for i, shot in zip(redo, quote.shots, strict=True):
            plans[i] = shot
        identity = fingerprint("retake", old.job_id, req.shot, req.prompt, req.duration, req.cascade)
        twin = None if req.idempotency_key else await self._state.twin(identity)
        if twin is not None:
            return await service.wait_for(twin, req.wait_seconds, progress), (
                f"This retake is already running as storyboard {twin.job_id}; returned it."
            )
        await self._guard(quote, req.confirm_cost_usd, retake=True)
        kept = sum((t.cost_usd or 0.0) for i, t in enumerate(takes) if i not in redo and t is not None)
        estimate = None if quote.total_usd is None else round(kept + quote.total_usd, 6)
        new_record = record.model_copy(update={"shots": plans, "retake_of": old.job_id})
        board = self._board(quote, new_record, identity, req.idempotency_key, old.spec.aspect_ratio, estimate)
        board = board.model_copy(update={"model": old.model, "tier": old.tier, "spec": old.spec})
        remade = ", ".join(str(i + 1) for i in redo)
        note = f"New takes of shot(s) {remade} ({quote.describe()}); the other shots keep their takes."
        return await self._start_board(board, claim, req.wait_seconds, progress, note)

    # --- driving ----------------------------------------------------------------------------------

    async def drive(self, board_id: str) -> None:
        """The runner's driver for a storyboard (see the module docstring); returns once it is finished."""
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
            failed = [i for i, t in enumerate(takes) if t is not None and t.status in _LOST]
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

    async def view(self, board: Job, note: str | None = None) -> BoardView:
        takes = [await self._state.get(p.job_id) for p in board.board.shots] if board.board else []
        return board_view(board, takes, note)

    # --- cancelling -------------------------------------------------------------------------------

    async def cancel(self, board: Job) -> CancelResult:
        """Stop driving ``board``, cancel every shot not yet finished, and record the board cancelled."""
        service = self._service
        service.runner.stop_tracking(board.job_id)
        request_stop(board.job_id)
        stopped, messages = 0, []
        for plan in board.board.shots if board.board else []:
            take = await self._state.get(plan.job_id)
            if take is not None and not take.terminal:
                result = await service.cancel(take.job_id)
                stopped += 1
                messages.append(f"shot {take.shot}: {result.message}")
        message = f"Cancelled storyboard {board.job_id}" + (
            f" and {stopped} unfinished shot(s). " + " ".join(messages) if stopped else "."
        )
        done = await self._state.move(board.job_id, JobStatus.CANCELLED, note=message)
        return CancelResult(
            job_id=board.job_id,
            status=done.status.value,
            cancelled_at_provider=bool(stopped),
            message=message,
            next_action="Finished shots are kept; call retake_shot to continue the storyboard later.",
        )


_LOST = (JobStatus.FAILED, JobStatus.CANCELLED)

"""Storyboards: a job whose children are ordinary shot jobs, driven in the background.

``generate_storyboard`` validates and quotes every shot (:mod:`.storyboard_plan`), guards the total and
saves the board; the runner then drives it with :meth:`Storyboards.drive` (also after a restart), which
is :class:`~.board_driver.BoardDriver`: it starts the shots, follows them and finishes or fails the board.

``retake_shot`` makes a new board from a finished one (a finished job never changes status again): the
retaken shot, every shot without a successful take and, with ``cascade``, the later chained shots get
new takes; the other shots keep theirs, and the old board and takes stay in the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors
from .assembly_jobs import request_stop
from .board_driver import BoardDriver
from .board_state import Claim, JobState
from .board_view import board_view
from .jobs.composite import BoardRecord
from .jobs.model import Job, JobStatus
from .requests import CancelResult, VideoSpec
from .specs import spec_identity
from .spending import require_confirmation
from .storyboard_plan import BoardQuote, build_shots, fingerprint, quote_shots, retake_plans

if TYPE_CHECKING:
    from .service import Progress, VideoService
    from .storyboard_models import BoardView, RetakeRequest, StoryboardRequest


class Storyboards:
    """The storyboard tools on a :class:`VideoService`: create, retake, view, cancel; driving is the driver's."""

    def __init__(self, service: VideoService) -> None:
        self._service = service
        self._state = JobState(service)
        self._driver = BoardDriver(service, self._state)

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

    # --- driving and viewing --------------------------------------------------------------------------

    async def drive(self, board_id: str) -> None:
        """The runner's driver for a storyboard (:meth:`BoardDriver.drive`); returns once it is finished."""
        await self._driver.drive(board_id)

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

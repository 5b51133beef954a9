"""What a caller sees of a storyboard: the job view, its shots, and a ``next_action`` that fits a board."""

from __future__ import annotations

from .jobs.model import Job, JobStatus
from .storyboard_models import BoardView, ShotView
from .views import job_view
from .vocabulary import TERMINAL_NAMES, UNSUCCESSFUL_NAMES


def board_view(board: Job, takes: list[Job | None], note: str | None = None) -> BoardView:
    """``board``'s view; ``takes`` are its shots' current take jobs (``None``: not started)."""
    assert board.board is not None
    base = job_view(board, note)
    shots = []
    for n, (plan, take) in enumerate(zip(board.board.shots, takes, strict=True), start=1):
        take_view = job_view(take) if take is not None else None
        duration = take_view.videos[0].duration_s if take_view and take_view.videos else plan.spec.duration
        shots.append(
            ShotView(
                shot=n,
                job_id=plan.job_id,
                status=take.status.value if take is not None else "pending",
                prompt=plan.prompt,
                operation=plan.spec.operation,
                duration_s=duration,
                cost_usd=take.cost_usd if take is not None else None,
                videos=take_view.videos if take_view else [],
                takes=len(plan.takes),
            )
        )
    costs = [s.cost_usd for s in shots if s.cost_usd is not None]
    cost = board.cost_usd if board.terminal else (round(sum(costs), 6) if costs else None)
    return BoardView(
        **{
            **base.model_dump(),
            "cost_usd": cost,
            "next_action": _next_action(board, shots),
        },
        shots=shots,
        continuity=board.board.continuity,
        retake_of=board.board.retake_of,
    )


def _next_action(board: Job, shots: list[ShotView]) -> str:
    job_id = board.job_id
    retake = f"retake_shot with job_id={job_id!r}"
    if board.status == JobStatus.SUCCEEDED:
        if board.videos:
            return (
                f"Done: show the user the assembled video at {board.videos[0].path}. To redo a shot, call {retake} "
                "and shot=N (cascade=true remakes the later chained shots)."
            )
        return (
            "Done: every shot's video is listed in shots. Join them with assemble_video, or redo one with "
            f"{retake} and shot=N."
        )
    if board.status == JobStatus.FAILED:
        failed = next((s.shot for s in shots if s.status in UNSUCCESSFUL_NAMES), None)
        if failed is not None:
            return (
                f"Shot {failed} failed ({board.error.message if board.error else 'see error'}): call {retake} and "
                f"shot={failed}, with a new prompt if the failure was about the content; finished shots are kept."
            )
        return f"The storyboard failed: {board.error.hint if board.error else 'see error'}"
    if board.status == JobStatus.CANCELLED:
        return f"Nothing more will happen; finished shots are kept (call {retake} to continue it)."
    active = [s.shot for s in shots if s.status != JobStatus.PENDING and s.status not in TERMINAL_NAMES]
    where = f"shot {', '.join(map(str, active))} of {len(shots)} running" if active else "working"
    return (
        f"The storyboard runs in the background ({where}); call check_job with job_id={job_id!r} and "
        "wait_seconds=45 until it finishes. Do not call generate_storyboard again: that would bill twice."
    )

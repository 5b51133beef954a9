"""What a storyboard or an assembly job stores besides the common job fields.

A storyboard is a job whose children are ordinary shot jobs: :class:`BoardRecord` keeps the plan of each
shot (its validated spec, whether it starts from the previous shot's last frame) and which job is its
current take. An assembly (``assemble_video``) keeps its inputs and options in :class:`AssemblyRecord`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..requests import MediaRef, VideoSpec
from ..vocabulary import Continuity, Transition


class ShotPlan(BaseModel):
    """One shot of a board: its spec (defaults filled), and its takes (job ids, oldest first)."""

    prompt: str  # as the caller wrote it (the spec's prompt has the style appended)
    spec: VideoSpec  # a chained shot's first_frame is filled in from the previous take when it starts
    chained: bool = False
    estimated_cost_usd: float | None = None
    job_id: str | None = None  # the current take; None until it is started
    takes: list[str] = Field(default_factory=list)


class BoardRecord(BaseModel):
    shots: list[ShotPlan]
    continuity: Continuity = "chain"
    style: str | None = None
    transition: Transition = "cut"
    transition_s: float = 0.5
    assemble: bool = True
    retake_of: str | None = None  # the board this one was made from by retake_shot


class AssemblyRecord(BaseModel):
    inputs: list[MediaRef]
    transition: Transition = "cut"
    transition_s: float = 0.5
    aspect_ratio: str | None = None
    mode: str | None = None  # how it was joined, once done: what assembly.assemble reports

"""Public models of storyboards and assemblies: the requests (``extra="forbid"``) and the board view."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .assembly import MAX_INPUTS, MAX_TRANSITION_S, MIN_INPUTS
from .requests import (
    Framed,
    GenerateRequest,
    JobStatusName,
    JobView,
    Operation,
    ShotFields,
    Submission,
    Tiered,
    VideoView,
    Waiting,
)
from .vocabulary import Continuity, Transition

MAX_SHOTS = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShotInput(_Strict, ShotFields[str]):
    # One shot as the caller describes it (no docstring: it would be published in the tool's schema).

    prompt: str = Field(min_length=1)


# Each argument's description is declared here once: the tools (server_storyboard.py) and the CLI
# (cli_storyboard.py) state it. Waiting, confirming, tier and aspect ratio are the video requests' own fields.
_TRANSITION = "How shots join."
_TRANSITION_S = "Crossfade seconds."


class StoryboardRequest(Submission, Framed, Tiered):
    shots: list[ShotInput] = Field(min_length=1, max_length=MAX_SHOTS, description="In order.")
    continuity: Continuity = Field(
        default="chain", description="chain: each shot starts from the previous one's last frame."
    )
    style: str | None = Field(default=None, description="Added to every shot's prompt.")
    reference_images: list[str] = Field(default_factory=list, description="Given to every shot.")
    provider: str | None = Field(default=None, description="auto: the cheapest provider that takes every shot.")
    transition: Transition = Field(default="cut", description=_TRANSITION)
    transition_s: float = Field(default=0.5, gt=0, le=MAX_TRANSITION_S, description=_TRANSITION_S)
    assemble: bool = Field(default=True, description="Join the shots into one MP4.")


class RetakeRequest(Submission):
    job_id: str = Field(description="The storyboard's job_id.")
    shot: int = Field(ge=1, le=MAX_SHOTS, description="The shot number (1-based).")
    prompt: str | None = Field(default=None, description="A new prompt for the shot.")
    duration: int | None = Field(default=None, description=GenerateRequest.model_fields["duration"].description)
    cascade: bool = Field(default=False, description="Also remake the later chained shots.")


class AssembleRequest(Waiting):
    videos: list[str] = Field(min_length=MIN_INPUTS, max_length=MAX_INPUTS, description="In order.")
    transition: Transition = Field(default="cut", description=_TRANSITION)
    transition_s: float = Field(default=0.5, gt=0, le=MAX_TRANSITION_S, description=_TRANSITION_S)
    aspect_ratio: str | None = Field(default=None, description="Unset: first video's.")


class ShotView(BaseModel):
    shot: int
    job_id: str | None  # None until the shot is started
    status: JobStatusName
    prompt: str
    operation: Operation
    duration_s: float | None
    cost_usd: float | None
    videos: list[VideoView] = Field(default_factory=list)
    takes: int = 0  # how many takes this board has made of the shot (older ones stay in the store)


class BoardView(JobView):
    """A storyboard: a job view plus its shots; ``videos`` is the assembled MP4 once it exists."""

    shots: list[ShotView] = Field(default_factory=list)
    continuity: Continuity = "chain"
    retake_of: str | None = None

"""Public models of storyboards and assemblies: the requests (``extra="forbid"``) and the board view."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .requests import JobStatusName, JobView, Operation, VideoView

MAX_SHOTS = 20
MIN_ASSEMBLY_INPUTS, MAX_ASSEMBLY_INPUTS = 2, 50
TRANSITION_S_MAX = 5.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShotInput(_Strict):
    # One shot as the caller describes it (no docstring: it would be published in the tool's schema).

    prompt: str = Field(min_length=1)
    duration: int | None = None
    first_frame: str | None = None
    last_frame: str | None = None
    reference_images: list[str] = Field(default_factory=list)
    negative_prompt: str | None = None


class StoryboardRequest(_Strict):
    shots: list[ShotInput] = Field(min_length=1, max_length=MAX_SHOTS)
    continuity: Literal["chain", "none"] = "chain"
    style: str | None = None
    reference_images: list[str] = Field(default_factory=list)
    aspect_ratio: str | None = None
    tier: Literal["standard", "pro"] | None = None
    provider: str | None = None
    transition: Literal["cut", "crossfade"] = "cut"
    transition_s: float = Field(default=0.5, gt=0, le=TRANSITION_S_MAX)
    assemble: bool = True
    wait_seconds: float | None = None
    idempotency_key: str | None = None
    confirm_cost_usd: float | None = None


class RetakeRequest(_Strict):
    job_id: str
    shot: int = Field(ge=1, le=MAX_SHOTS)
    prompt: str | None = None
    duration: int | None = None
    cascade: bool = False
    wait_seconds: float | None = None
    idempotency_key: str | None = None
    confirm_cost_usd: float | None = None


class AssembleRequest(_Strict):
    videos: list[str] = Field(min_length=MIN_ASSEMBLY_INPUTS, max_length=MAX_ASSEMBLY_INPUTS)
    transition: Literal["cut", "crossfade"] = "cut"
    transition_s: float = Field(default=0.5, gt=0, le=TRANSITION_S_MAX)
    aspect_ratio: str | None = None
    wait_seconds: float | None = None
    idempotency_key: str | None = None


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
    continuity: Literal["chain", "none"] = "chain"
    retake_of: str | None = None

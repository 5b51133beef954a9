"""Public request and result models. Requests reject unknown fields (``extra="forbid"``).

``VideoSpec`` is the normalised request every layer below the service works with: the operation
is inferred, inputs are resolved, defaults are filled in. It is what a job stores and what an
adapter turns into its wire format.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Operation = Literal["text", "image", "reference", "edit"]
JobOperation = Literal["text", "image", "reference", "edit", "storyboard", "assemble"]
JobStatusName = Literal["pending", "submitted", "running", "downloading", "succeeded", "failed", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Strict):
    prompt: str
    first_frame: str | None = None
    last_frame: str | None = None
    reference_images: list[str] = Field(default_factory=list)
    reference_video: str | None = None
    aspect_ratio: str | None = None
    duration: int | None = None
    tier: Literal["standard", "pro"] | None = None
    provider: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    num_videos: int = 1
    keep_original_sound: bool | None = None
    wait_seconds: float | None = None
    idempotency_key: str | None = None
    confirm_cost_usd: float | None = None


class EditRequest(_Strict):
    prompt: str
    video: str
    reference_images: list[str] = Field(default_factory=list)
    keep_original_sound: bool | None = None
    fast: bool = False
    tier: Literal["standard", "pro"] | None = None
    provider: str | None = None
    wait_seconds: float | None = None
    idempotency_key: str | None = None
    confirm_cost_usd: float | None = None


class EstimateRequest(_Strict):
    """The union of generate and edit arguments; ``video`` makes it an edit."""

    prompt: str = ""
    first_frame: str | None = None
    last_frame: str | None = None
    reference_images: list[str] = Field(default_factory=list)
    reference_video: str | None = None
    video: str | None = None
    video_duration_s: float | None = None
    aspect_ratio: str | None = None
    duration: int | None = None
    tier: Literal["standard", "pro"] | None = None
    provider: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    num_videos: int = 1
    keep_original_sound: bool | None = None
    fast: bool = False


class MediaRef(BaseModel):
    """A resolved image or video input.

    ``kind`` is ``url`` (http/https, sent as is) or ``file`` (a local file: a user path, or a
    data URI the server saved under the data dir). Adapters turn files into what their provider
    accepts (data URI or upload).
    """

    kind: Literal["url", "file"]
    value: str  # the URL, or the absolute file path
    media: Literal["image", "video"]
    mime_type: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None


class VideoSpec(BaseModel):
    """A normalised generation or edit request (what a job stores)."""

    operation: Operation
    prompt: str
    first_frame: MediaRef | None = None
    last_frame: MediaRef | None = None
    reference_images: list[MediaRef] = Field(default_factory=list)
    reference_video: MediaRef | None = None
    video: MediaRef | None = None
    aspect_ratio: str | None = None
    duration: int | None = None  # requested output seconds (None for edits)
    tier: Literal["standard", "pro"] | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    num_videos: int = 1
    keep_original_sound: bool | None = None
    fast: bool = False

    @property
    def has_video(self) -> bool:
        return self.reference_video is not None or self.video is not None

    @property
    def input_video_s(self) -> float | None:
        ref = self.video or self.reference_video
        return ref.duration_s if ref else None


class Quote(BaseModel):
    provider: str
    model: str | None
    tier: str | None
    supported: bool
    problems: list[str] = Field(default_factory=list)
    cost_usd: float | None = None
    basis: Literal["published", "inferred", "unknown"] = "unknown"
    billed_seconds: float | None = None
    configured: bool = True
    note: str = ""


class Budget(BaseModel):
    max_job_cost_usd: float | None = None
    daily_budget_usd: float | None = None
    spent_today_usd: float = 0.0
    remaining_today_usd: float | None = None


class Estimate(BaseModel):
    operation: Operation
    duration_s: float | None
    quotes: list[Quote]
    recommended: str | None
    budget: Budget
    next_action: str


class VideoView(BaseModel):
    uri: str
    path: str
    mime_type: str = "video/mp4"
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    size_bytes: int | None = None


class ErrorView(BaseModel):
    code: str
    message: str
    retryable: bool = False
    hint: str = ""


class JobView(BaseModel):
    job_id: str
    status: JobStatusName
    provider: str
    model: str
    tier: str | None = None
    operation: JobOperation
    prompt: str = ""
    progress: float = 0.0
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    videos: list[VideoView] = Field(default_factory=list)
    error: ErrorView | None = None
    next_action: str = ""
    note: str | None = None
    storyboard_id: str | None = None  # a shot's storyboard
    shot: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class JobList(BaseModel):
    jobs: list[JobView]
    count: int
    next_action: str = ""


class CancelResult(BaseModel):
    job_id: str
    status: JobStatusName
    cancelled_at_provider: bool
    message: str
    next_action: str = ""


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")

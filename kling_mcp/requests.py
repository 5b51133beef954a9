"""Public request and result models. Requests reject unknown fields (``extra="forbid"``).

``VideoSpec`` is the normalised request every layer below the service works with: the operation
is inferred, inputs are resolved, defaults are filled in. It is what a job stores and what an
adapter turns into its wire format.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .vocabulary import TIER_RESOLUTIONS, TIERS, JobOperation, JobStatusName, Operation, PriceBasis, Tier, spoken


class _Strict(BaseModel):
    # Built on first use: a request is validated in a tool call, never to start the server.
    model_config = ConfigDict(extra="forbid", defer_build=True)


_R = TypeVar("_R", bound=BaseModel)
MAX_ARG_CHARS = 300 * 1024 * 1024  # an image or video argument (a data URI, at most): a cap against abuse


# The request fields, each declared once with the one-line description every surface states: the MCP tools'
# arguments (server.py adds the limits the configured providers set), the CLI's options (cli_options.py)
# and the errors. A request model takes its fields from these groups; a new argument is one line here.


class Tiered(_Strict):
    tier: Tier | None = Field(
        default=None,
        description=f"{spoken(f'{t} ({TIER_RESOLUTIONS[t]})' for t in TIERS)}; unset: the cheapest that accepts "
        "the request.",
    )


class Framed(_Strict):
    aspect_ratio: str | None = Field(default=None, description="Output shape; unset: 16:9 where offered.")


class _Shared(Tiered):
    """The fields of every video request (generate, edit and estimate)."""

    reference_images: list[str] = Field(
        default_factory=list, description="Images of characters, props or scenes to keep."
    )
    keep_original_sound: bool | None = Field(default=None, description="Keep the input video's audio.")
    provider: str | None = Field(
        default=None, description="Which API runs it; auto: the cheapest that accepts the request."
    )


class _GenerateFields(Framed):
    """What only a generation takes."""

    first_frame: str | None = Field(default=None, description="Start image.")
    last_frame: str | None = Field(default=None, description="End image (needs first_frame).")
    reference_video: str | None = Field(default=None, description="Video whose subjects or style to follow.")
    duration: int | None = Field(default=None, description="Output seconds (each provider's choices are listed above).")
    negative_prompt: str | None = Field(default=None, description="What to avoid (where supported).")
    seed: int | None = Field(default=None, description="Seed for repeatable output (where supported); -1: random.")
    num_videos: int = Field(default=1, description="How many videos to make (where supported).")


class _EditFields(_Strict):
    """What only an edit takes (besides its video)."""

    fast: bool = Field(default=False, description="The faster edit mode, for longer inputs (where offered).")


class Waiting(_Strict):
    """How a request that makes a job is submitted and waited for."""

    wait_seconds: float | None = Field(
        default=None,
        description="Seconds to wait for the job to finish, with progress notifications; then call check_job.",
    )
    idempotency_key: str | None = Field(
        default=None, description="Your id for this request: reusing it returns the same job, never billing twice."
    )


class Submission(Waiting):
    """A request that spends: what the user agreed to pay."""

    confirm_cost_usd: float | None = Field(
        default=None, description="USD the user agreed to pay (see confirmation_required)."
    )


class GenerateRequest(Submission, _GenerateFields, _Shared):
    prompt: str = Field(description="What to show: subject, action, camera, light.")


class EditRequest(Submission, _EditFields, _Shared):
    prompt: str = Field(description="What to change.")
    video: str = Field(description="The video to edit.")


class EstimateRequest(_EditFields, _GenerateFields, _Shared):
    """The union of generate and edit arguments; ``video`` makes it an edit."""

    prompt: str = Field(default="", description="The prompt of the request to quote.")
    video: str | None = Field(default=None, description=EditRequest.model_fields["video"].description)
    video_duration_s: float | None = Field(default=None, description="To quote an edit without video: its seconds.")


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


_Media = TypeVar("_Media")


class ShotFields(BaseModel, Generic[_Media]):
    # What one shot of video is made from, declared once for a storyboard shot as the caller gives it
    # (storyboard_models.ShotInput: images as strings) and the spec a job stores (VideoSpec: images resolved
    # to MediaRef). No docstring and no descriptions: ShotInput's schema is published as it is.

    prompt: str
    duration: int | None = None  # requested output seconds (None for edits)
    first_frame: _Media | None = None
    last_frame: _Media | None = None
    reference_images: list[_Media] = Field(default_factory=list)
    negative_prompt: str | None = None


class VideoSpec(ShotFields[MediaRef]):
    """A normalised generation or edit request (what a job stores)."""

    operation: Operation
    reference_video: MediaRef | None = None
    video: MediaRef | None = None
    aspect_ratio: str | None = None
    tier: Tier | None = None
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
    basis: PriceBasis = "unknown"
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


class VideoFile(BaseModel):
    # A finished video file, as the job stores it (jobs.model.StoredVideo) and as a view shows it
    # (VideoView): its fields are declared here once. No docstring: it would be published in the schemas.

    path: str
    mime_type: str = "video/mp4"
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    size_bytes: int | None = None


class VideoView(VideoFile):
    # A stored video as a result shows it: the file plus the resource URI that reads it.

    uri: str

    @classmethod
    def of(cls, video: VideoFile, uri: str) -> VideoView:
        """The view of a stored video (every :class:`VideoFile` field, nothing it keeps to itself)."""
        return cls(uri=uri, **video.model_dump(include=set(VideoFile.model_fields)))


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


def said(model: type[BaseModel], name: str) -> str:
    """The one-line description ``model`` declares for its field ``name`` (what the tools and the CLI state)."""
    description = model.model_fields[name].description
    if not description:
        raise KeyError(f"{model.__name__}.{name} has no description")
    return description


def request_from(model: type[_R], arguments: dict[str, Any]) -> _R:
    """``model`` built from the ``arguments`` named after its fields (others ignored); an argument left
    unset (None) takes the field's default, so an omitted list is empty and an omitted count is 1."""
    return model(**{k: v for k, v in arguments.items() if k in model.model_fields and v is not None})

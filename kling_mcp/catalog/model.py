"""Types of the catalog: what each provider's Kling O1 variant accepts, produces and costs.

These are plain frozen dataclasses so the catalog stays data. Validation (``validation.py``),
quotes (``pricing.py``), tool schemas and tool descriptions are all derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from ..vocabulary import OPERATIONS as OPERATIONS  # declared once, in vocabulary.py
from ..vocabulary import TIERS as TIERS
from ..vocabulary import Operation, PriceBasis, Tier

OPERATION_LABELS: dict[Operation, str] = {
    "text": "text-to-video",
    "image": "image-to-video (first/last frame)",
    "reference": "reference-to-video",
    "edit": "video edit",
}
InputKind = Literal["url", "data_uri", "upload"]
Support = Literal["no", "optional", "required"]
AspectRatio = Literal["16:9", "9:16", "1:1"]
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)


@dataclass(frozen=True)
class Price:
    """USD per second of billed video, with where the number comes from."""

    usd_per_second: float | None
    basis: PriceBasis
    source: str

    def cost(self, seconds: float) -> float | None:
        if self.usd_per_second is None:
            return None
        return round(self.usd_per_second * seconds, 4)


@dataclass(frozen=True)
class MediaLimits:
    """Limits a provider documents for its input files, checked where the input's values are known
    (local files are probed; URL videos too; URL images are not)."""

    image_min_px: int = 0  # each side at least
    image_aspect: tuple[float, float] | None = None  # width / height
    image_max_bytes: int | None = None
    video_px: tuple[int, int] | None = None  # each side within
    video_fps: tuple[float, float] | None = None
    video_max_bytes: int | None = None
    video_types: tuple[str, ...] = ()  # accepted MIME types
    reference_video_s: tuple[float, float] | None = None  # a reference video's length (an edit's: input_video_s)


@dataclass(frozen=True)
class OperationSpec:
    """What one model variant accepts for one operation.

    Durations are output seconds; for edits the output follows the input video, whose allowed
    length is ``input_video_s`` (and ``input_video_s_fast`` with ``fast=True``).
    """

    operation: Operation
    price: Price
    durations: tuple[int, ...] = ()  # allowed output durations (empty: follows the input video)
    default_duration: int | None = None
    aspect_ratios: tuple[str, ...] = ()  # empty: not chosen by the caller (follows an input)
    reference_images: tuple[int, int] = (0, 0)  # (min, max) without a reference/input video
    reference_images_with_video: int = 0  # max when a video is present
    reference_images_with_video_min: int = 0  # min when a video is present
    reference_video: Support = "no"
    last_frame: bool = False
    input_video_s: tuple[float, float] | None = None  # edit: accepted input length
    input_video_s_fast: tuple[float, float] | None = None  # edit with fast=True
    billing_clamps_input: bool = False  # input outside the range is billed at the bound
    fast: Support = "no"
    keep_original_sound: bool = False
    negative_prompt: bool = False
    seed: bool = False
    max_videos: int = 1
    price_with_video: Price | None = None  # reference with a reference video (R2V rate)
    price_fast: Price | None = None  # edit with fast=True
    model: str | None = None  # overrides the variant's model id for this operation
    model_with_video: str | None = None  # reference with a video served by another model id
    model_fast: str | None = None  # edit with fast=True served by another model id
    note: str = ""
    media: MediaLimits | None = None  # documented input-file limits


@dataclass(frozen=True)
class ModelVariant:
    """One provider's Kling O1 offering at one tier."""

    provider: str
    model: str
    tier: Tier
    operations: dict[Operation, OperationSpec]
    sizes: dict[str, tuple[int, int]]  # aspect ratio -> output (width, height)
    max_prompt_chars: int
    input_kinds: tuple[InputKind, ...]
    url_lifetime_s: int | None  # how long the provider keeps result links
    typical_seconds: float  # typical time to a finished video, for poll pacing
    label: str = ""
    notes: tuple[str, ...] = ()
    min_prompt_chars: int = 1
    video_input_kinds: tuple[InputKind, ...] | None = None  # None: as input_kinds


@dataclass(frozen=True)
class ProviderEntry:
    """A provider: how it is configured and which variants it serves."""

    name: str
    display_name: str
    env_key: str | None  # None: needs no key (local)
    base_url_env: str | None
    default_base_url: str | None
    variants: tuple[ModelVariant, ...]
    can_cancel: bool
    cancel_note: str = ""
    client_chosen_id: bool = False  # the provider can be asked by our job id (its task id or an external id)
    docs_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # other URL overrides: env var -> default
    # Instead of env_key (then only the text naming them): sets of env vars, any complete set enables it.
    credential_sets: tuple[tuple[str, ...], ...] = ()

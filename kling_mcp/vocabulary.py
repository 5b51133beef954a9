"""The names every layer shares, each declared here once: job statuses, operations, job kinds, tiers, price
bases, and a storyboard's continuity and transitions.

The request and view models, the catalog, the job stores, the tool schemas, the CLI's choices, the inline
player and the next-action texts all take these names from here, so a new status or tier is one edit.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Literal, get_args

Operation = Literal["text", "image", "reference", "edit"]
"""What a video job does: ``text``/``image``/``reference`` generate, ``edit`` changes a video."""
OPERATIONS: tuple[Operation, ...] = get_args(Operation)
GENERATE_OPS: tuple[Operation, ...] = tuple(op for op in OPERATIONS if op != "edit")
EDIT_OPS: tuple[Operation, ...] = ("edit",)

Composite = Literal["storyboard", "assemble"]
"""A job the service drives itself (its children, or ffmpeg), never polled at a provider."""
Kind = Literal["video", Composite]
JobOperation = Literal[Operation, Composite]

Tier = Literal["standard", "pro"]
"""A quality tier; each provider's catalog entry offers one variant per tier it serves."""
TIERS: tuple[Tier, ...] = get_args(Tier)
TIER_RESOLUTIONS: dict[Tier, str] = {"standard": "720p", "pro": "1080p"}
"""How the texts and the player name each tier's output: the paid providers' 16:9 height in the catalog."""

PriceBasis = Literal["published", "inferred", "unknown"]
"""How a price is known, most certain first: the provider publishes it, it is inferred, or there is none."""
PRICE_BASES: tuple[PriceBasis, ...] = get_args(PriceBasis)

Continuity = Literal["chain", "none"]
"""How a storyboard's shots follow each other: ``chain`` starts each from the previous one's last frame."""
CONTINUITIES: tuple[Continuity, ...] = get_args(Continuity)
Transition = Literal["cut", "crossfade"]
"""How joined videos meet."""
TRANSITIONS: tuple[Transition, ...] = get_args(Transition)


class JobStatus(str, Enum):
    """A job's state: ``pending`` -> ``submitted`` -> ``running`` -> ``downloading`` -> ``succeeded``,
    or ``failed`` / ``cancelled`` from any non-terminal state."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
UNSUCCESSFUL = TERMINAL - {JobStatus.SUCCEEDED}
"""Ended without a video: failed or cancelled."""
STATUS_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus)
TERMINAL_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus if s in TERMINAL)
ACTIVE_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus if s not in TERMINAL)
UNSUCCESSFUL_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus if s in UNSUCCESSFUL)

if TYPE_CHECKING:
    JobStatusName = str
else:
    JobStatusName = Literal[STATUS_NAMES]  # the enum's values, as the JSON schemas state them


def tier_label(tier: Tier) -> str:
    """``Pro 1080p``: a tier as the player shows it."""
    return f"{tier.capitalize()} {TIER_RESOLUTIONS[tier]}"


def spoken(names: Iterable[str], last: str = "or") -> str:
    """``a, b or c``: names as a sentence reads them (status lists in the texts the model reads)."""
    listed = list(names)
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} {last} {listed[-1]}"

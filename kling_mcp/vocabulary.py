"""The names every layer shares, each declared here once: job statuses, operations and job kinds.

The request and view models, the job store, the tool schemas, the CLI's choices and the next-action
texts all take these names from here, so a new status or operation is one edit.
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
STATUS_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus)
TERMINAL_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus if s in TERMINAL)
ACTIVE_NAMES: tuple[str, ...] = tuple(s.value for s in JobStatus if s not in TERMINAL)

if TYPE_CHECKING:
    JobStatusName = str
else:
    JobStatusName = Literal[STATUS_NAMES]  # the enum's values, as the JSON schemas state them


def spoken(names: Iterable[str], last: str = "or") -> str:
    """``a, b or c``: names as a sentence reads them (status lists in the texts the model reads)."""
    listed = list(names)
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} {last} {listed[-1]}"

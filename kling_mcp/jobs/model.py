"""The job record and its state machine.

``pending`` -> ``submitted`` -> ``running`` -> ``downloading`` -> ``succeeded``, or ``failed`` /
``cancelled`` from any non-terminal state. A job is persisted as ``pending`` *before* the provider
is called, and its ``remote_id`` is saved the moment it is known.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

from ..requests import ErrorView, VideoFile, VideoSpec
from ..vocabulary import TERMINAL, JobStatus, Kind
from .composite import AssemblyRecord, BoardRecord

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(
        {JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.DOWNLOADING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUBMITTED: frozenset({JobStatus.RUNNING, JobStatus.DOWNLOADING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.DOWNLOADING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.DOWNLOADING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return src == dst or dst in _ALLOWED[src]


class StoredVideo(VideoFile):
    """A downloaded (or locally rendered) result video: the file (see :class:`VideoFile`) and its place
    in the job's results. (Records from earlier versions also hold a ``sha256``, ignored when read.)"""

    index: int


class RemoteVideo(BaseModel):
    """A result the provider reported: a link to fetch, or (local provider) a finished file."""

    url: str | None = None
    path: str | None = None
    remote_key: str | None = None  # the provider's own id for the video (dedupe key)


def new_job_id() -> str:
    """A UUID v4: also usable as a client-chosen task id (Runware ``taskUUID``)."""
    return str(uuid.uuid4())


class Job(BaseModel):
    job_id: str = Field(default_factory=new_job_id)
    version: int = 0  # set by the store: +1 on every applied change (0 = never stored)
    status: JobStatus = JobStatus.PENDING
    provider: str
    model: str
    tier: str | None = None
    spec: VideoSpec
    fingerprint: str = ""
    idempotency_key: str | None = None
    remote_id: str | None = None
    progress: float = 0.0
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    cost_basis: str | None = None  # how cost_usd is known: "billed", or "inferred" (converted from credits)
    remote_videos: list[RemoteVideo] = Field(default_factory=list)
    videos: list[StoredVideo] = Field(default_factory=list)
    error: ErrorView | None = None
    note: str | None = None
    provider_data: dict[str, Any] = Field(default_factory=dict)  # adapter's own small state
    consecutive_errors: int = 0
    polls: int = 0
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    submitted_at: float | None = None
    finished_at: float | None = None
    kind: Kind = "video"  # a storyboard or an assembly is driven by the service, not polled at a provider
    parent_id: str | None = None  # a shot's storyboard
    shot: int | None = None  # a shot's number in its storyboard (1-based)
    board: BoardRecord | None = None
    assembly: AssemblyRecord | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def operation(self) -> str:
        """``text``/``image``/``reference``/``edit`` for a video job; ``storyboard`` or ``assemble`` otherwise."""
        return self.spec.operation if self.kind == "video" else self.kind

    def moved(self, status: JobStatus, **changes: Any) -> Job:
        """A copy in ``status`` with ``changes``; raises on an illegal transition."""
        if not can_transition(self.status, status):
            raise InvalidTransition(f"job {self.job_id}: {self.status.value} -> {status.value}")
        now = time.time()
        extra: dict[str, Any] = {"status": status, "updated_at": now}
        if status in TERMINAL and self.finished_at is None:
            extra["finished_at"] = now
        return self.model_copy(update={**changes, **extra})

    def updated(self, **changes: Any) -> Job:
        return self.model_copy(update={**changes, "updated_at": time.time()})

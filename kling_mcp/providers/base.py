"""The provider seam: one small Protocol every adapter implements.

``poll`` *returns* :class:`Failed` when the provider says the job failed (a fact about the job)
and *raises* :class:`~kling_mcp.errors.ProviderError` only when the request itself failed
(transient or auth). Adapters get their key, base URL and a shared ``httpx.AsyncClient`` in a
:class:`ProviderContext`; nothing in an adapter reads the environment.

``poll`` and ``cancel`` take the whole job (not only the remote id) because some adapters need
its context: the local renderer needs the spec, Runware needs the expected number of results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..jobs.model import Job, RemoteVideo

if TYPE_CHECKING:  # httpx is imported when a provider is first used, not at start-up
    import httpx


class KeyValue(Protocol):
    """Small persistent key/value storage for adapters (e.g. upload caches)."""

    async def kv_get(self, key: str) -> Any | None: ...
    async def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None: ...


@dataclass
class ProviderContext:
    name: str
    api_key: str | None
    base_url: str | None
    client: httpx.AsyncClient
    kv: KeyValue
    data_dir: Path
    extra_urls: dict[str, str] = field(default_factory=dict)  # e.g. EvoLink files API root
    credentials: dict[str, str] = field(default_factory=dict, repr=False)  # e.g. Kling's access/secret key


@dataclass(frozen=True)
class Accepted:
    """The provider took the job. ``remote_id`` is all that resume needs."""

    remote_id: str
    cost_usd: float | None = None  # billed/reserved cost when the provider says it at submit
    data: dict[str, Any] = field(default_factory=dict)  # small adapter state saved on the job


@dataclass(frozen=True)
class Running:
    progress: float | None = None  # 0-100 when the provider reports it
    queued: bool = False
    # False: the provider does not know the job yet and may never (a lost submit, polled by our id
    # within the time it may still take to appear); not proof that the provider took it.
    confirmed: bool = True


@dataclass(frozen=True)
class Done:
    videos: list[RemoteVideo]
    cost_usd: float | None = None  # billed cost when the provider reports it
    cost_basis: str = "billed"  # "inferred" when converted from the provider's own units at a published rate


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    retryable: bool = False
    hint: str = ""


PollResult = Running | Done | Failed


@runtime_checkable
class VideoProvider(Protocol):
    name: str

    async def submit(self, job: Job) -> Accepted: ...

    async def poll(self, job: Job) -> PollResult: ...

    async def cancel(self, job: Job) -> bool:
        """Ask the provider to stop the job; False where the provider cannot."""
        ...

"""The job store interface: the one authority on job state, shared by every process.

Every backend (diskcache in :mod:`.diskcache_store`, PostgreSQL in :mod:`.postgres_store`) implements
:class:`JobStore` and passes the same contract tests (``tests/store_contract.py``). Nothing outside
``jobs/`` knows which backend runs; :func:`kling_mcp.jobs.open_store` picks one from the settings.

Guarantees every backend gives, to any number of processes sharing it:

- **Transitions, not overwrites.** A job changes only through :meth:`JobStore.transition`: an update
  function applied to the *current* record inside one store transaction (or a compare-and-set retry on
  ``Job.version``). Each applied change bumps ``version`` by one. A change the state machine forbids raises
  :class:`~kling_mcp.jobs.model.InvalidTransition`; a terminal job never changes status again.
- **Idempotency keys** are claimed atomically with the job they name (:meth:`JobStore.create`): of two
  concurrent creates with one key exactly one job exists afterwards. A key is bound to the request
  fingerprint it was first used with; the same key with another request raises
  :class:`~kling_mcp.errors.IdempotencyConflict` naming the fields that differ.
- **Leases.** A non-terminal job is driven by the one owner holding its lease; a lease is taken only when
  free, expired or already held by the same owner, and renewed by its owner.
- **The spend ledger** keeps one entry per job, booked on the day given at reservation (the submit day);
  reserving checks the day's budget and books in one atomic step, so concurrent reservations never exceed it.
- **Waits** (:meth:`JobStore.wait_for_change`) wake on a change made by any process.

Methods are ``async`` so that a backend may do network I/O; a backend connects lazily on first use, so
constructing one does no I/O that needs awaiting. Update functions passed to ``transition`` are plain,
fast, side-effect-free functions (they may run more than once under a compare-and-set retry).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import errors
from .model import InvalidTransition, Job, JobStatus, can_transition

#: An update function: the current job -> the new job, or ``None`` to leave it unchanged.
Update = Callable[[Job], Job | None]

#: How a ledger amount is known: quoted before submit, billed by the provider, inferred from the
#: provider's own units (EvoLink credits), or unknown (no price: the job is recorded, at $0).
LedgerBasis = Literal["estimate", "billed", "inferred", "unknown"]

_SHOWN_VALUE_CHARS = 60


# --- request fingerprints (what an idempotency key is bound to) -----------------------------------


@dataclass(frozen=True)
class RequestFingerprint:
    """A request's identity: one digest for equality, and a per-field summary to name differences.

    ``fields`` maps each argument name to a short display form: the value itself when it is short,
    otherwise ``sha256:<12 hex>``. Long inputs (data URIs, long prompts) are never stored whole.
    """

    digest: str
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, request: Mapping[str, Any]) -> RequestFingerprint:
        """Fingerprint a request given as its JSON-able arguments (leave out wait/retry-only ones)."""
        shown: dict[str, str] = {}
        for name in sorted(request):
            raw = json.dumps(request[name], sort_keys=True, default=str)
            shown[name] = (
                raw if len(raw) <= _SHOWN_VALUE_CHARS else "sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:12]
            )
        digest = hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()
        return cls(digest=digest, fields=shown)

    def differences(self, other: RequestFingerprint) -> list[str]:
        """Human-readable differences, ``other`` being the request of the first use."""
        out: list[str] = []
        for name in sorted(set(self.fields) | set(other.fields)):
            now, then = self.fields.get(name, "unset"), other.fields.get(name, "unset")
            if now == then:
                continue
            if now.startswith("sha256:") or then.startswith("sha256:"):
                out.append(f"{name} differs")
            else:
                out.append(f"{name} was {then}, now {now}")
        return out or ["the request differs"]

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "fields": self.fields}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestFingerprint:
        return cls(digest=str(data["digest"]), fields=dict(data.get("fields") or {}))


def key_conflict(key: str, job_id: str, now: RequestFingerprint, then: RequestFingerprint) -> errors.KlingError:
    """The tool error for a key reused with another request (every backend raises this same one)."""
    return errors.IdempotencyConflict(
        f"idempotency_key {key!r} was already used for job {job_id} with a different request: "
        f"{'; '.join(now.differences(then))}.",
        hint="Use a new idempotency_key for a different request, or repeat the original request exactly "
        f"(check_job job_id={job_id!r} shows that job).",
    )


@dataclass(frozen=True)
class KeyClaim:
    """An idempotency key and the fingerprint of the request that uses it."""

    key: str
    fingerprint: RequestFingerprint


# --- leases and the ledger ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str
    expires_at: float  # wall-clock seconds (time.time())


@dataclass(frozen=True)
class LedgerEntry:
    job_id: str
    day: str  # YYYY-MM-DD: the day the job was submitted
    usd: float  # what counts toward the day: the reservation, or the billed amount once settled
    basis: LedgerBasis
    settled: bool = False


@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`JobStore.reserve`."""

    ok: bool  # False: the day's budget would be exceeded; nothing was booked
    spent_before: float  # the day's total before this reservation (without this job's previous entry)


# --- the interface -----------------------------------------------------------------------------------


class JobStore(ABC):
    """Where jobs, idempotency keys, leases, the spend ledger and adapter state live."""

    # jobs -----------------------------------------------------------------------------------------

    @abstractmethod
    async def create(
        self, job: Job, claim: KeyClaim | None = None, *, lease_owner: str | None = None, lease_s: float = 0.0
    ) -> tuple[Job, bool]:
        """Insert a new job (version 1), claiming ``claim.key`` for it in the same atomic step.

        Returns ``(job, True)`` when created. When the key is already bound to a job with the same
        fingerprint, nothing is inserted and ``(that job, False)`` is returned; with a different
        fingerprint, raises :func:`key_conflict`'s error. ``job.job_id`` must be new. With
        ``lease_owner``, the new job's lease is taken for ``lease_s`` seconds in the same step (the
        submitting process holds it, so no other process mistakes a job being submitted for an orphan).
        """

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The current record, or ``None``."""

    @abstractmethod
    async def transition(self, job_id: str, update: Update) -> Job:
        """Apply ``update`` to the current record atomically; returns the record as stored afterwards.

        ``update`` returning ``None`` (or an equal job) changes nothing. The store checks the state
        machine (raising ``InvalidTransition``), sets ``version`` (+1) and ``updated_at``. Raises
        ``errors.UnknownJob`` when there is no such job.
        """

    @abstractmethod
    async def list_jobs(self, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        """Jobs newest first (by ``created_at``), optionally only those in ``status``."""

    @abstractmethod
    async def unfinished(self) -> list[Job]:
        """Every non-terminal job, oldest first; its cost does not grow with finished jobs."""

    @abstractmethod
    async def find_twin(self, fingerprint: str) -> Job | None:
        """The newest job whose ``Job.fingerprint`` is ``fingerprint`` (best effort; for duplicate notes)."""

    @abstractmethod
    async def key_job(self, key: str) -> tuple[Job, RequestFingerprint] | None:
        """The job an idempotency key is bound to, with the fingerprint it was bound with."""

    @abstractmethod
    async def release_key(self, key: str, job_id: str) -> None:
        """Unbind ``key`` if it is bound to ``job_id`` (a refused submission: nothing was billed)."""

    @abstractmethod
    async def count(self) -> int:
        """How many jobs are stored."""

    @abstractmethod
    async def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job | None:
        """The job once its ``version`` differs from ``version`` (at once if it already does), or after
        ``timeout`` seconds the job as it is. Wakes on a change made by any process. ``None`` if unknown."""

    # leases ---------------------------------------------------------------------------------------

    @abstractmethod
    async def claim_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        """Take the job's lease for ``seconds`` if it is free, expired or already ``owner``'s."""

    @abstractmethod
    async def renew_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        """Extend ``owner``'s lease; False when ``owner`` no longer holds it (it expired and was taken)."""

    @abstractmethod
    async def release_lease(self, job_id: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""

    @abstractmethod
    async def lease(self, job_id: str) -> Lease | None:
        """The job's live (unexpired) lease, if any."""

    @abstractmethod
    async def claimable(self, owner: str) -> list[Job]:
        """Non-terminal jobs whose lease is free, expired or ``owner``'s, oldest first."""

    async def live_leases(self) -> list[Lease]:
        """The live leases of every unfinished job (one read where the backend can; here, one per job)."""
        leases = [await self.lease(job.job_id) for job in await self.unfinished()]
        return [lease for lease in leases if lease is not None]

    # the spend ledger -------------------------------------------------------------------------------

    @abstractmethod
    async def reserve(
        self, job_id: str, day: str, usd: float | None, limit: float | None, basis: LedgerBasis = "estimate"
    ) -> Reservation:
        """Book ``usd`` for ``job_id`` on ``day`` unless the day's total would then exceed ``limit``.

        One atomic step. A job's earlier entry is replaced (a failover re-quotes). ``usd=None`` records the
        job with basis ``unknown`` at $0. ``limit=None``: no budget, always booked.
        """

    @abstractmethod
    async def settle(self, job_id: str, usd: float, basis: LedgerBasis = "billed") -> LedgerEntry | None:
        """Set the job's entry to what was billed, on its original day; ``None`` if it has no entry."""

    @abstractmethod
    async def release(self, job_id: str) -> None:
        """Drop the job's unsettled reservation (it failed unbilled). A settled entry stays."""

    @abstractmethod
    async def ledger_entry(self, job_id: str) -> LedgerEntry | None:
        """The job's ledger entry."""

    @abstractmethod
    async def spent(self, day: str) -> float:
        """USD booked on ``day`` (YYYY-MM-DD)."""

    @abstractmethod
    async def unpriced(self, day: str) -> int:
        """How many jobs of ``day`` have no known price (basis ``unknown``)."""

    # adapter key/value ----------------------------------------------------------------------------

    @abstractmethod
    async def kv_get(self, key: str) -> Any | None:
        """A small JSON-able value, or ``None`` (missing or expired)."""

    @abstractmethod
    async def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None:
        """Store a small JSON-able value, optionally expiring after ``expire_s`` seconds."""

    # lifecycle ------------------------------------------------------------------------------------

    @abstractmethod
    async def close(self) -> None:
        """Release connections and files; the store is unusable afterwards."""


def check_update(current: Job, new: Job) -> None:
    """The state-machine rule every backend enforces on a transition (raises ``InvalidTransition``)."""
    if new.job_id != current.job_id:
        raise InvalidTransition(f"job {current.job_id}: an update may not change the job id")
    if not can_transition(current.status, new.status):
        raise InvalidTransition(f"job {current.job_id}: {current.status.value} -> {new.status.value}")

"""The diskcache backend of :class:`~kling_mcp.jobs.backend.JobStore`: the only module that knows diskcache.

diskcache keeps its data in SQLite, so any number of processes on one machine may share a data dir:
every change below runs inside ``Cache.transact`` (``BEGIN IMMEDIATE``: one writer at a time across
processes), reading the current record and writing the new one in the same transaction.

Layout under ``<data_dir>/store``:
- ``job:<id>`` -> the job as JSON; ``ver:<id>`` -> its version (what waiters poll: a tiny read)
- ``open`` -> the set of non-terminal job ids (resume and take-over never scan finished jobs)
- ``idem:<key>`` -> ``{"job_id", "fingerprint"}``; ``fp:<fingerprint>`` -> newest job id with that spec
- ``lease:<id>`` -> ``[owner, expires_at]``
- ``ledger:<job_id>`` -> the job's ledger entry; ``spend:<day>`` -> the day's total; ``unpriced:<day>`` -> count
- ``kv:<key>`` -> small adapter state, with expiry
- ``count`` -> how many jobs exist
and ``<data_dir>/store/index`` holds ``<created_ns>:<id>`` keys for newest-first listing (written after the
job's transaction commits; every listed job is re-read from ``job:<id>``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import anyio
import diskcache

from .. import errors
from .backend import (
    JobStore,
    KeyClaim,
    Lease,
    LedgerBasis,
    LedgerEntry,
    RequestFingerprint,
    Reservation,
    Update,
    check_update,
    key_conflict,
)
from .model import Job, JobStatus

#: At most this long between a waiter's reads of a job's version (to see another process's change); the
#: first read comes sooner. A change in this process wakes its waiters at once.
WAIT_POLL_S = 1.0
_EPSILON = 1e-9


def _index_key(job: Job) -> str:
    return f"{int(job.created_at * 1e9):020d}:{job.job_id}"


class DiskcacheStore(JobStore):
    def __init__(self, data_dir: Path | str, *, wait_poll_s: float = WAIT_POLL_S) -> None:
        root = Path(data_dir) / "store"
        root.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(root), eviction_policy="none", size_limit=2**40)
        self._index = diskcache.Cache(str(root / "index"), eviction_policy="none", size_limit=2**40)
        self._wait_poll_s = wait_poll_s
        self._events: dict[str, anyio.Event] = {}

    async def close(self) -> None:
        self._cache.close()
        self._index.close()

    # --- jobs ------------------------------------------------------------------------------

    def _load(self, job_id: str) -> Job | None:
        raw = self._cache.get(f"job:{job_id}")
        return Job.model_validate_json(raw) if raw else None

    def _write(self, job: Job) -> None:
        self._cache.set(f"job:{job.job_id}", job.model_dump_json())
        self._cache.set(f"ver:{job.job_id}", job.version)

    def _bound(self, key: str) -> tuple[str, RequestFingerprint] | None:
        raw = self._cache.get(f"idem:{key}")
        if not raw:
            return None
        return str(raw["job_id"]), RequestFingerprint.from_json(raw["fingerprint"])

    async def create(
        self, job: Job, claim: KeyClaim | None = None, *, lease_owner: str | None = None, lease_s: float = 0.0
    ) -> tuple[Job, bool]:
        new = job.model_copy(update={"version": 1, "idempotency_key": claim.key if claim else job.idempotency_key})
        with self._cache.transact(retry=True):
            if claim is not None:
                bound = self._bound(claim.key)
                if bound is not None:
                    existing = self._load(bound[0])
                    if existing is not None:
                        if bound[1].digest != claim.fingerprint.digest:
                            raise key_conflict(claim.key, existing.job_id, claim.fingerprint, bound[1])
                        return existing, False
                self._cache.set(f"idem:{claim.key}", {"job_id": new.job_id, "fingerprint": claim.fingerprint.to_json()})
            if f"job:{new.job_id}" in self._cache:
                raise ValueError(f"job {new.job_id} already exists")
            self._write(new)
            if new.fingerprint:
                self._cache.set(f"fp:{new.fingerprint}", new.job_id)
            if not new.terminal:
                self._cache.set("open", self._cache.get("open", frozenset()) | {new.job_id})
            self._cache.set("count", int(self._cache.get("count", 0)) + 1)
            if lease_owner is not None and not new.terminal:
                self._cache.set(f"lease:{new.job_id}", [lease_owner, time.time() + lease_s])
        # After the commit; a crash just before this leaves an open job that is resumed, and listed once it ends.
        self._index.set(_index_key(new), new.status.value)
        return new, True

    async def get(self, job_id: str) -> Job | None:
        return self._load(job_id)

    async def transition(self, job_id: str, update: Update) -> Job:
        with self._cache.transact(retry=True):
            current = self._load(job_id)
            if current is None:
                raise errors.UnknownJob(f"no job {job_id!r} on this server.")
            new = update(current)
            if new is None or new == current:
                return current
            check_update(current, new)
            now = time.time()
            changes: dict[str, Any] = {"version": current.version + 1, "updated_at": now}
            if new.terminal and new.finished_at is None:
                changes["finished_at"] = now
            new = new.model_copy(update=changes)
            self._write(new)
            if new.terminal and not current.terminal:
                self._cache.set("open", self._cache.get("open", frozenset()) - {job_id})
        if new.terminal and not current.terminal:
            self._index.set(_index_key(new), new.status.value)
        self._notify(job_id)
        return new

    def _notify(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            try:
                event.set()
            except RuntimeError:  # a waiter of an event loop that has gone away
                pass

    async def list_jobs(self, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        out: list[Job] = []
        for key in self._index.iterkeys(reverse=True):
            job = self._load(str(key).split(":", 1)[1])
            if job is not None and (status is None or job.status == status):
                out.append(job)
                if len(out) >= limit:
                    break
        return out

    def _open_jobs(self) -> list[Job]:
        jobs = [self._load(job_id) for job_id in self._cache.get("open", frozenset())]
        return sorted((j for j in jobs if j is not None and not j.terminal), key=lambda j: j.created_at)

    async def unfinished(self) -> list[Job]:
        return self._open_jobs()

    async def find_twin(self, fingerprint: str) -> Job | None:
        job_id = self._cache.get(f"fp:{fingerprint}")
        return self._load(job_id) if job_id else None

    async def key_job(self, key: str) -> tuple[Job, RequestFingerprint] | None:
        bound = self._bound(key)
        job = self._load(bound[0]) if bound else None
        return (job, bound[1]) if bound and job else None

    async def release_key(self, key: str, job_id: str) -> None:
        with self._cache.transact(retry=True):
            bound = self._bound(key)
            if bound is not None and bound[0] == job_id:
                self._cache.delete(f"idem:{key}")

    async def count(self) -> int:
        return int(self._cache.get("count", 0))

    async def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job | None:
        deadline = time.monotonic() + max(0.0, timeout)
        pause = self._wait_poll_s / 2
        while True:
            current = self._cache.get(f"ver:{job_id}")
            remaining = deadline - time.monotonic()
            if current is None or current != version or remaining <= 0:
                return self._load(job_id)
            # Woken at once by a change in this process; a change by another process is seen on the next read.
            event = self._events.setdefault(job_id, anyio.Event())
            with anyio.move_on_after(min(remaining, pause)):
                await event.wait()
            pause = min(pause * 1.5, self._wait_poll_s)

    # --- leases ----------------------------------------------------------------------------

    def _live_lease(self, job_id: str, now: float) -> Lease | None:
        raw = self._cache.get(f"lease:{job_id}")
        if raw is None or raw[1] <= now:
            return None
        return Lease(job_id=job_id, owner=raw[0], expires_at=raw[1])

    async def claim_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        with self._cache.transact(retry=True):
            now = time.time()
            job = self._load(job_id)
            held = self._live_lease(job_id, now)
            if job is None or job.terminal or (held is not None and held.owner != owner):
                return False
            self._cache.set(f"lease:{job_id}", [owner, now + seconds])
            return True

    async def renew_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        with self._cache.transact(retry=True):
            now = time.time()
            held = self._live_lease(job_id, now)
            if held is None or held.owner != owner:
                return False
            self._cache.set(f"lease:{job_id}", [owner, now + seconds])
            return True

    async def release_lease(self, job_id: str, owner: str) -> None:
        with self._cache.transact(retry=True):
            raw = self._cache.get(f"lease:{job_id}")
            if raw is not None and raw[0] == owner:
                self._cache.delete(f"lease:{job_id}")

    async def lease(self, job_id: str) -> Lease | None:
        return self._live_lease(job_id, time.time())

    async def claimable(self, owner: str) -> list[Job]:
        now = time.time()
        out = []
        for job in self._open_jobs():
            held = self._live_lease(job.job_id, now)
            if held is None or held.owner == owner:
                out.append(job)
        return out

    # --- the spend ledger ------------------------------------------------------------------

    def _entry(self, job_id: str) -> LedgerEntry | None:
        raw = self._cache.get(f"ledger:{job_id}")
        return LedgerEntry(**raw) if raw else None

    def _book(self, entry: LedgerEntry, sign: int) -> None:
        """Add (sign=1) or remove (sign=-1) ``entry`` from its day's totals; inside a transaction."""
        key = f"spend:{entry.day}"
        self._cache.set(key, float(self._cache.get(key, 0.0)) + sign * entry.usd)
        if entry.basis == "unknown":
            key = f"unpriced:{entry.day}"
            self._cache.set(key, int(self._cache.get(key, 0)) + sign)

    def _put_entry(self, entry: LedgerEntry | None, job_id: str) -> None:
        if entry is None:
            self._cache.delete(f"ledger:{job_id}")
        else:
            self._cache.set(f"ledger:{job_id}", dataclasses.asdict(entry))
            self._book(entry, 1)

    async def reserve(
        self, job_id: str, day: str, usd: float | None, limit: float | None, basis: LedgerBasis = "estimate"
    ) -> Reservation:
        with self._cache.transact(retry=True):
            previous = self._entry(job_id)
            spent = float(self._cache.get(f"spend:{day}", 0.0))
            if previous is not None and previous.day == day:
                spent -= previous.usd
            amount = 0.0 if usd is None else usd
            if limit is not None and spent + amount > limit + _EPSILON:
                return Reservation(ok=False, spent_before=spent)
            if previous is not None:
                self._book(previous, -1)
            entry = LedgerEntry(job_id=job_id, day=day, usd=amount, basis="unknown" if usd is None else basis)
            self._put_entry(entry, job_id)
            return Reservation(ok=True, spent_before=spent)

    async def settle(self, job_id: str, usd: float, basis: LedgerBasis = "billed") -> LedgerEntry | None:
        with self._cache.transact(retry=True):
            previous = self._entry(job_id)
            if previous is None:
                return None
            self._book(previous, -1)
            entry = dataclasses.replace(previous, usd=usd, basis=basis, settled=True)
            self._put_entry(entry, job_id)
            return entry

    async def release(self, job_id: str) -> None:
        with self._cache.transact(retry=True):
            previous = self._entry(job_id)
            if previous is not None and not previous.settled:
                self._book(previous, -1)
                self._put_entry(None, job_id)

    async def ledger_entry(self, job_id: str) -> LedgerEntry | None:
        return self._entry(job_id)

    async def spent(self, day: str) -> float:
        return max(0.0, round(float(self._cache.get(f"spend:{day}", 0.0)), 9))

    async def unpriced(self, day: str) -> int:
        return int(self._cache.get(f"unpriced:{day}", 0))

    # --- adapter key/value -----------------------------------------------------------------

    async def kv_get(self, key: str) -> Any | None:
        return self._cache.get(f"kv:{key}")

    async def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None:
        self._cache.set(f"kv:{key}", value, expire=expire_s)

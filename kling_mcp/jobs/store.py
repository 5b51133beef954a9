"""The disk-backed job store (diskcache): the only module that knows diskcache.

Layout under ``<data_dir>/store``:
- ``job:<id>``  -> the job as JSON (O(1) lookups whatever the number of jobs)
- ``idem:<key>`` -> job id of an ``idempotency_key``; ``fp:<fingerprint>`` -> newest job id
- ``spend:<YYYY-MM-DD>`` -> USD committed that day (the spend ledger)
- ``kv:<key>`` -> small adapter state (upload caches), with expiry
and ``<data_dir>/store/index`` holds ``<created_ns>:<id>`` keys for newest-first listing.
diskcache is process-safe (SQLite), so a restarted server sees everything a killed one wrote.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache

from .model import TERMINAL, Job, JobStatus


def _today() -> str:
    return dt.date.today().isoformat()


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        root = Path(data_dir) / "store"
        root.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(root), eviction_policy="none", size_limit=2**40)
        self._index = diskcache.Cache(str(root / "index"), eviction_policy="none", size_limit=2**40)

    def close(self) -> None:
        self._cache.close()
        self._index.close()

    # --- jobs ------------------------------------------------------------------------------

    def put(self, job: Job) -> Job:
        created = f"{int(job.created_at * 1e9):020d}:{job.job_id}"
        with self._cache.transact():
            is_new = f"job:{job.job_id}" not in self._cache
            self._cache.set(f"job:{job.job_id}", job.model_dump_json())
            if is_new:
                if job.idempotency_key:
                    self._cache.set(f"idem:{job.idempotency_key}", job.job_id)
                if job.fingerprint:
                    self._cache.set(f"fp:{job.fingerprint}", job.job_id)
        if is_new or job.status in TERMINAL:
            self._index.set(created, job.status.value)
        return job

    def get(self, job_id: str) -> Job | None:
        raw = self._cache.get(f"job:{job_id}")
        return Job.model_validate_json(raw) if raw else None

    def by_idempotency_key(self, key: str) -> Job | None:
        job_id = self._cache.get(f"idem:{key}")
        return self.get(job_id) if job_id else None

    def forget_idempotency_key(self, key: str) -> None:
        """Release a key whose submission was refused (nothing was billed), so a retry may submit."""
        self._cache.delete(f"idem:{key}")

    def by_fingerprint(self, fingerprint: str) -> Job | None:
        job_id = self._cache.get(f"fp:{fingerprint}")
        return self.get(job_id) if job_id else None

    def iter_newest(self) -> Iterator[Job]:
        for key in self._index.iterkeys(reverse=True):
            job = self.get(str(key).split(":", 1)[1])
            if job is not None:
                yield job

    def list(self, status: JobStatus | None = None, limit: int = 50) -> builtins.list[Job]:
        out: builtins.list[Job] = []
        for job in self.iter_newest():
            if status is None or job.status == status:
                out.append(job)
                if len(out) >= limit:
                    break
        return out

    def unfinished(self) -> builtins.list[Job]:
        """Every non-terminal job (scanned once at start-up, for resume)."""
        out: builtins.list[Job] = []
        for key in self._index.iterkeys():
            if self._index.get(key) in {s.value for s in TERMINAL}:
                continue
            job = self.get(str(key).split(":", 1)[1])
            if job is not None and not job.terminal:
                out.append(job)
        return out

    def count(self) -> int:
        return len(self._index)

    # --- spend ledger ----------------------------------------------------------------------

    def add_spend(self, usd: float, day: str | None = None) -> float:
        key = f"spend:{day or _today()}"
        with self._cache.transact():
            total = float(self._cache.get(key, 0.0)) + usd
            self._cache.set(key, total)
        return total

    def spent(self, day: str | None = None) -> float:
        return float(self._cache.get(f"spend:{day or _today()}", 0.0))

    # --- adapter key/value (providers.base.KeyValue) ----------------------------------------

    def kv_get(self, key: str) -> Any | None:
        return self._cache.get(f"kv:{key}")

    def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None:
        self._cache.set(f"kv:{key}", value, expire=expire_s)

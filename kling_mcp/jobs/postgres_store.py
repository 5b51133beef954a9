"""The PostgreSQL job store: several servers on one or many machines share jobs, keys and the ledger.

Selected by ``KLING_MCP_STORE_URL=postgresql://…``; psycopg 3 (async, with a pool) comes with the
``postgres`` extra and is imported only here, so a server without it still starts on diskcache.

- **Jobs** are rows of ``kling_jobs`` (the record as JSON plus the columns queries use). A transition
  locks the row (``SELECT … FOR UPDATE``), applies the update to the current record and writes it
  back with ``version + 1`` in one transaction, which also sends ``NOTIFY kling_jobs, '<id>'``.
- **Waits** listen on ``kling_jobs`` on one dedicated connection (:class:`~.pg_support.Listener`): a change made
  by any replica wakes the waiters here within milliseconds; a re-read every few seconds covers a
  notification lost while that connection was down.
- **Leases** are two columns of the job row, on the database's clock. A claim of a free or expired
  lease takes the row with ``FOR UPDATE SKIP LOCKED``: of replicas claiming one job at once exactly one
  wins, and none waits; the holder's renewal waits out a row lock instead (its own transition may hold it).
- **Idempotency keys** have a unique primary key, inserted in the job's transaction.
- **The ledger**: a reservation sums the day and books under a transaction-scoped advisory lock on
  the day (``pg_advisory_xact_lock``), so concurrent replicas never book past the budget.
- **Paths** of files under ``KLING_MCP_DATA_DIR`` (videos, file inputs) are stored relative to it: every
  replica mounts the shared data dir wherever it likes.

A database that cannot be reached raises :class:`~kling_mcp.errors.StoreUnavailable` (a tool error
saying so); nothing is cached in the process, so nothing is lost when it returns. Pooled connections
the database closed while it was away are dropped and the operation runs once more on a fresh one
(the pool, the transactions and the record encoding are :mod:`.pg_base`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .. import errors
from ..vocabulary import TERMINAL_NAMES
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
from .pg_base import PgBase
from .pg_support import CHANNEL, Listener

if TYPE_CHECKING:
    from psycopg import AsyncConnection

SAFETY_REREAD_S = 3.0
# The terminal statuses as SQL: the predicate of migration 0001's partial index on unfinished jobs too (a
# migration is history, so it keeps its own copy; tests/test_vocabulary.py checks the two agree).
_TERMINAL_SQL = "(" + ", ".join(f"'{name}'" for name in TERMINAL_NAMES) + ")"
_NOW = "extract(epoch from clock_timestamp())"
_BUDGET_EPSILON = 1e-9


class PostgresStore(PgBase, JobStore):
    """:class:`JobStore` on PostgreSQL (see the module docstring for how each guarantee is kept)."""

    def __init__(self, url: str, data_dir: Path, *, max_connections: int = 10) -> None:
        super().__init__(url, data_dir, max_connections=max_connections)
        self._listener = Listener(url)

    # --- jobs ----------------------------------------------------------------------------------

    async def create(
        self, job: Job, claim: KeyClaim | None = None, *, lease_owner: str | None = None, lease_s: float = 0.0
    ) -> tuple[Job, bool]:
        for _ in range(5):
            try:
                key = claim.key if claim else job.idempotency_key
                return await self._create(
                    job.model_copy(update={"version": 1, "idempotency_key": key}), claim, lease_owner, lease_s
                )
            except _Retry:
                continue
        raise errors.StoreUnavailable(
            f"idempotency_key {claim.key if claim else ''!r} keeps changing hands; call again."
        )

    async def _create(
        self, job: Job, claim: KeyClaim | None, lease_owner: str | None, lease_s: float
    ) -> tuple[Job, bool]:
        from psycopg.types.json import Jsonb

        async def body(conn: AsyncConnection) -> tuple[Job, bool]:
            if claim is not None:
                cur = await conn.execute(
                    "INSERT INTO kling_idempotency_keys (key, job_id, fingerprint) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO NOTHING RETURNING key",
                    (claim.key, job.job_id, Jsonb(claim.fingerprint.to_json())),
                )
                if await cur.fetchone() is None:
                    cur = await conn.execute(
                        "SELECT k.fingerprint, j.record, j.version FROM kling_idempotency_keys k "
                        "JOIN kling_jobs j USING (job_id) WHERE k.key = %s",
                        (claim.key,),
                    )
                    row = await cur.fetchone()
                    if row is None:  # released between the two statements: claim it again
                        raise _Retry
                    then = RequestFingerprint.from_json(row[0])
                    existing = self._load(row[1], row[2])
                    if then.digest != claim.fingerprint.digest:
                        raise key_conflict(claim.key, existing.job_id, claim.fingerprint, then)
                    return existing, False
            cur = await conn.execute(
                "INSERT INTO kling_jobs (job_id, version, status, created_at, fingerprint, record, lease_owner, "
                f"lease_expires) VALUES (%s, 1, %s, %s, %s, %s, %s, {_NOW} + %s) "
                "ON CONFLICT (job_id) DO NOTHING RETURNING job_id",
                (
                    job.job_id,
                    job.status.value,
                    job.created_at,
                    job.fingerprint,
                    self._dump(job),
                    lease_owner,
                    float(lease_s) if lease_owner else None,
                ),
            )
            if await cur.fetchone() is None:
                raise ValueError(f"job {job.job_id} already exists")
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, job.job_id))
            return job, True

        return await self._run(body)

    async def get(self, job_id: str) -> Job | None:
        row = await self._one("SELECT record, version FROM kling_jobs WHERE job_id = %s", (job_id,))
        return self._load(row[0], row[1]) if row else None

    async def transition(self, job_id: str, update: Update) -> Job:
        async def body(conn: AsyncConnection) -> Job:
            cur = await conn.execute("SELECT record, version FROM kling_jobs WHERE job_id = %s FOR UPDATE", (job_id,))
            row = await cur.fetchone()
            if row is None:
                raise errors.UnknownJob(f"no job {job_id!r} on this server.")
            current = self._load(row[0], row[1])
            new = update(current)
            if new is None or new == current:
                return current
            check_update(current, new)
            now = time.time()
            changes: dict[str, Any] = {"version": current.version + 1, "updated_at": now}
            if new.terminal and new.finished_at is None:
                changes["finished_at"] = now
            new = new.model_copy(update=changes)
            await conn.execute(
                "UPDATE kling_jobs SET version = %s, status = %s, record = %s WHERE job_id = %s",
                (new.version, new.status.value, self._dump(new), job_id),
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, job_id))
            return new

        return await self._run(body)

    async def list_jobs(self, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        if status is None:
            rows = await self._all("SELECT record, version FROM kling_jobs ORDER BY created_at DESC LIMIT %s", (limit,))
        else:
            rows = await self._all(
                "SELECT record, version FROM kling_jobs WHERE status = %s ORDER BY created_at DESC LIMIT %s",
                (status.value, limit),
            )
        return [self._load(r[0], r[1]) for r in rows]

    async def unfinished(self) -> list[Job]:
        rows = await self._all(
            f"SELECT record, version FROM kling_jobs WHERE status NOT IN {_TERMINAL_SQL} ORDER BY created_at"
        )
        return [self._load(r[0], r[1]) for r in rows]

    async def find_twin(self, fingerprint: str) -> Job | None:
        row = await self._one(
            "SELECT record, version FROM kling_jobs WHERE fingerprint = %s AND fingerprint <> '' "
            "ORDER BY created_at DESC LIMIT 1",
            (fingerprint,),
        )
        return self._load(row[0], row[1]) if row else None

    async def key_job(self, key: str) -> tuple[Job, RequestFingerprint] | None:
        row = await self._one(
            "SELECT j.record, j.version, k.fingerprint FROM kling_idempotency_keys k "
            "JOIN kling_jobs j USING (job_id) WHERE k.key = %s",
            (key,),
        )
        return (self._load(row[0], row[1]), RequestFingerprint.from_json(row[2])) if row else None

    async def release_key(self, key: str, job_id: str) -> None:
        await self._exec("DELETE FROM kling_idempotency_keys WHERE key = %s AND job_id = %s", (key, job_id))

    async def count(self) -> int:
        row = await self._one("SELECT count(*) FROM kling_jobs")
        return int(row[0]) if row else 0

    async def wait_for_change(self, job_id: str, version: int, timeout: float) -> Job | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            event = self._listener.arm(job_id)  # armed before the read: no change slips between
            job = await self.get(job_id)
            remaining = deadline - time.monotonic()
            if job is None or job.version != version or remaining <= 0:
                return job
            listening = await self._listener.ready(min(remaining, 1.0))
            with anyio.move_on_after(min(remaining, SAFETY_REREAD_S if listening else 0.5)):
                await event.wait()

    # --- leases --------------------------------------------------------------------------------

    async def claim_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        async def body(conn: AsyncConnection) -> bool:
            # The holder renewing waits out a row lock (its own transition may hold it right now) ...
            cur = await conn.execute(
                f"UPDATE kling_jobs SET lease_expires = {_NOW} + %s "
                f"WHERE job_id = %s AND lease_owner = %s AND status NOT IN {_TERMINAL_SQL} RETURNING job_id",
                (seconds, job_id, owner),
            )
            if await cur.fetchone() is not None:
                return True
            # ... while claimers of a free or expired lease skip a locked row: whoever holds that lock wins.
            cur = await conn.execute(
                f"UPDATE kling_jobs SET lease_owner = %s, lease_expires = {_NOW} + %s "
                "WHERE job_id = (SELECT job_id FROM kling_jobs WHERE job_id = %s "
                f"AND status NOT IN {_TERMINAL_SQL} AND (lease_owner IS NULL OR lease_expires <= {_NOW}) "
                "FOR UPDATE SKIP LOCKED) RETURNING job_id",
                (owner, seconds, job_id),
            )
            return await cur.fetchone() is not None

        return await self._run(body)

    async def renew_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        row = await self._one(
            f"UPDATE kling_jobs SET lease_expires = {_NOW} + %s "
            f"WHERE job_id = %s AND lease_owner = %s AND lease_expires > {_NOW} RETURNING job_id",
            (seconds, job_id, owner),
        )
        return row is not None

    async def release_lease(self, job_id: str, owner: str) -> None:
        await self._exec(
            "UPDATE kling_jobs SET lease_owner = NULL, lease_expires = NULL WHERE job_id = %s AND lease_owner = %s",
            (job_id, owner),
        )

    async def lease(self, job_id: str) -> Lease | None:
        row = await self._one(
            f"SELECT lease_owner, lease_expires, {_NOW} FROM kling_jobs WHERE job_id = %s AND lease_owner IS NOT NULL "
            f"AND lease_expires > {_NOW}",
            (job_id,),
        )
        if row is None:
            return None
        # Expressed on this machine's clock, as the interface promises.
        return Lease(job_id=job_id, owner=row[0], expires_at=time.time() + (float(row[1]) - float(row[2])))

    async def live_leases(self) -> list[Lease]:
        rows = await self._all(
            f"SELECT job_id, lease_owner, lease_expires - {_NOW} FROM kling_jobs WHERE status NOT IN {_TERMINAL_SQL} "
            f"AND lease_owner IS NOT NULL AND lease_expires > {_NOW}"
        )
        now = time.time()
        return [Lease(job_id=r[0], owner=r[1], expires_at=now + float(r[2])) for r in rows]

    async def claimable(self, owner: str) -> list[Job]:
        rows = await self._all(
            f"SELECT record, version FROM kling_jobs WHERE status NOT IN {_TERMINAL_SQL} "
            f"AND (lease_owner IS NULL OR lease_owner = %s OR lease_expires <= {_NOW}) ORDER BY created_at",
            (owner,),
        )
        return [self._load(r[0], r[1]) for r in rows]

    # --- the spend ledger ----------------------------------------------------------------------

    async def reserve(
        self, job_id: str, day: str, usd: float | None, limit: float | None, basis: LedgerBasis = "estimate"
    ) -> Reservation:
        amount = 0.0 if usd is None else float(usd)
        basis = "unknown" if usd is None else basis

        async def body(conn: AsyncConnection) -> Reservation:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("kling-ledger:" + day,))
            cur = await conn.execute(
                "SELECT coalesce(sum(usd), 0) FROM kling_ledger WHERE day = %s AND job_id <> %s", (day, job_id)
            )
            row = await cur.fetchone()
            before = float(row[0]) if row else 0.0
            if limit is not None and before + amount > limit + _BUDGET_EPSILON:
                return Reservation(ok=False, spent_before=before)
            await conn.execute(
                "INSERT INTO kling_ledger (job_id, day, usd, basis, settled) VALUES (%s, %s, %s, %s, false) "
                "ON CONFLICT (job_id) DO UPDATE SET day = excluded.day, usd = excluded.usd, "
                "basis = excluded.basis, settled = false",
                (job_id, day, amount, basis),
            )
            return Reservation(ok=True, spent_before=before)

        return await self._run(body)

    async def settle(self, job_id: str, usd: float, basis: LedgerBasis = "billed") -> LedgerEntry | None:
        row = await self._one(
            "UPDATE kling_ledger SET usd = %s, basis = %s, settled = true WHERE job_id = %s "
            "RETURNING job_id, day, usd, basis, settled",
            (float(usd), basis, job_id),
        )
        return LedgerEntry(*row) if row else None

    async def release(self, job_id: str) -> None:
        await self._exec("DELETE FROM kling_ledger WHERE job_id = %s AND NOT settled", (job_id,))

    async def ledger_entry(self, job_id: str) -> LedgerEntry | None:
        row = await self._one("SELECT job_id, day, usd, basis, settled FROM kling_ledger WHERE job_id = %s", (job_id,))
        return LedgerEntry(*row) if row else None

    async def spent(self, day: str) -> float:
        row = await self._one("SELECT coalesce(sum(usd), 0) FROM kling_ledger WHERE day = %s", (day,))
        return float(row[0]) if row else 0.0

    async def unpriced(self, day: str) -> int:
        row = await self._one("SELECT count(*) FROM kling_ledger WHERE day = %s AND basis = 'unknown'", (day,))
        return int(row[0]) if row else 0

    # --- adapter key/value ---------------------------------------------------------------------

    async def kv_get(self, key: str) -> Any | None:
        row = await self._one(
            f"SELECT value FROM kling_kv WHERE key = %s AND (expires_at IS NULL OR expires_at > {_NOW})", (key,)
        )
        return row[0] if row else None

    async def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None:
        from psycopg.types.json import Jsonb

        await self._exec(
            f"INSERT INTO kling_kv (key, value, expires_at) VALUES (%s, %s, {_NOW} + %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            (key, Jsonb(value), expire_s),
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        await self._listener.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class _Retry(Exception):
    """Internal: an idempotency key vanished mid-claim; the create is tried again."""

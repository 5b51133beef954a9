"""What the PostgreSQL store's operations run on: a pool of connections opened on first use, one transaction
per operation (retried once on a connection the database closed), and job records as JSON with the file
paths under the data dir stored relative to it (every replica mounts the shared data dir wherever it likes).

The SQL of each store guarantee is :mod:`.postgres_store`; connecting and the start-up check are
:mod:`.pg_support`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .model import Job
from .pg_support import CONNECT_TIMEOUT_S, pool_timeout, prepare, psycopg_module, unavailable

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

T = TypeVar("T")


class PgBase:
    """The pool, the transaction runner and the record codec :class:`~.postgres_store.PostgresStore` uses."""

    def __init__(self, url: str, data_dir: Path, *, max_connections: int = 10) -> None:
        self._url = url
        self._data_dir = Path(data_dir).resolve()
        self._max = max_connections
        self._pool: AsyncConnectionPool | None = None
        self._opening: asyncio.Lock | None = None

    async def _open_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                psycopg_module()
                from psycopg_pool import AsyncConnectionPool

                await prepare(self._url)
                pool = AsyncConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._max,
                    open=False,
                    timeout=CONNECT_TIMEOUT_S,
                    kwargs={"connect_timeout": int(CONNECT_TIMEOUT_S)},
                    name="kling-mcp",
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    async def _run(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``body`` on a pooled connection inside one transaction.

        A connection the database closed (a restart) fails on its first statement: the pool is then
        checked (dropping such connections) and ``body`` runs once more. A database that stays down
        becomes :class:`~kling_mcp.errors.StoreUnavailable` within about ``CONNECT_TIMEOUT_S``.
        """
        psycopg = psycopg_module()
        for attempt in (1, 2):
            try:
                pool = await self._open_pool()
                async with pool.connection() as conn, conn.transaction():
                    return await body(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if attempt == 1 and self._pool is not None and not isinstance(exc, pool_timeout()):
                    with contextlib.suppress(Exception):
                        await self._pool.check()
                    continue
                raise unavailable(self._url, exc) from None
        raise AssertionError("unreachable")

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        async def body(conn: AsyncConnection) -> tuple[Any, ...] | None:
            cur = await conn.execute(sql.encode(), params)
            return await cur.fetchone()

        return await self._run(body)

    async def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async def body(conn: AsyncConnection) -> None:
            await conn.execute(sql.encode(), params)

        await self._run(body)

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def body(conn: AsyncConnection) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql.encode(), params)
            return await cur.fetchall()

        return await self._run(body)

    def _dump(self, job: Job) -> Any:
        """The record as JSON, with file paths under the data dir made relative to it."""
        from psycopg.types.json import Jsonb

        return Jsonb(self._rebase(job.model_dump(mode="json"), relative=True))

    def _load(self, record: dict[str, Any], version: int) -> Job:
        record = self._rebase(record, relative=False)
        record["version"] = version
        return Job.model_validate(record)

    def _rebase(self, node: Any, *, relative: bool) -> Any:
        """Every local file path in a record (videos' ``path``, file inputs' ``value``, however deep: board
        shots, assembly inputs) made relative to the data dir, or back to this replica's absolute path."""
        if isinstance(node, list):
            return [self._rebase(item, relative=relative) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: self._rebase(value, relative=relative) for key, value in node.items()}
        keys = ["path"] + (["value"] if out.get("kind") == "file" and "media" in out else [])
        for key in keys:
            value = out.get(key)
            if not isinstance(value, str) or not value:
                continue
            if relative and Path(value).is_absolute():
                with contextlib.suppress(ValueError):
                    out[key] = Path(value).resolve().relative_to(self._data_dir).as_posix()
            elif not relative and not Path(value).is_absolute():
                out[key] = str(self._data_dir / value)
        return out

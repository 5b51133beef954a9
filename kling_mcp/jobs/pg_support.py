"""PostgreSQL plumbing for the store: the lazy psycopg import, connecting with the start-up timeout,
the start-up check (:func:`prepare`, :func:`preflight`), errors that never show the password, and the
``LISTEN`` connection that wakes waiters (:class:`Listener`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio

from .. import errors, store_url
from .pg_schema import migrate

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger("kling_mcp.store")

CHANNEL = "kling_jobs"
CONNECT_TIMEOUT_S = 5.0


def psycopg_module() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise errors.NotConfigured(
            f"{store_url.ENV} selects PostgreSQL, but psycopg is not installed.",
            hint="Install the extra: pip install 'kling-mcp[postgres]', or unset KLING_MCP_STORE_URL.",
        ) from None
    return psycopg


def pool_timeout() -> type[Exception]:
    from psycopg_pool import PoolTimeout as cls

    return cls


def _detail(url: str, exc: BaseException) -> str:
    text = str(exc).strip()
    return errors.redact(text.splitlines()[0] if text else type(exc).__name__, store_url.secrets_of(url))


def unavailable(url: str, exc: BaseException) -> errors.StoreUnavailable:
    """The error for a database that cannot be reached; never contains the password."""
    return errors.StoreUnavailable(
        f"the job database at {store_url.ENV}={store_url.redacted(url)} cannot be reached: {_detail(url, exc)}"
    )


async def connect(url: str, *, autocommit: bool = True) -> AsyncConnection:
    """One connection (for migrations and listening), with the start-up timeout."""
    psycopg = psycopg_module()
    try:
        conn: AsyncConnection = await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, connect_timeout=int(CONNECT_TIMEOUT_S)
        )
    except psycopg.Error as exc:
        raise unavailable(url, exc) from None
    return conn


async def prepare(url: str) -> list[int]:
    """Check the database is reachable and bring its schema up to date (run at start-up)."""
    conn = await connect(url)
    psycopg = psycopg_module()
    try:
        return await migrate(conn)
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None
    except psycopg.Error as exc:  # reachable, but the role may not create or read kling-mcp's tables
        raise errors.StoreUnavailable(
            f"the job database at {store_url.ENV}={store_url.redacted(url)} refused kling-mcp's schema: "
            f"{_detail(url, exc)}",
            hint="Give the role in KLING_MCP_STORE_URL its own database (createdb -O <role> <db>) or CREATE "
            "rights on its schema, then start again.",
            retryable=False,
        ) from None
    finally:
        await conn.close()


def preflight(url: str) -> list[int]:
    """:func:`prepare` for the command line, before the server starts (blocking, a few seconds at most)."""
    return asyncio.run(prepare(url))


class Listener:
    """One connection doing ``LISTEN kling_jobs``; wakes local waiters by job id."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._events: dict[str, anyio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def arm(self, job_id: str) -> anyio.Event:
        """The event set at the next change of ``job_id`` (arm it *before* reading the job)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kling-mcp store listener")
        event = self._events.get(job_id)
        if event is None:
            event = self._events[job_id] = anyio.Event()
        return event

    async def ready(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            await self._ready.wait()
        return self._ready.is_set()

    def _wake(self, job_id: str | None) -> None:
        if job_id is None:
            events, self._events = list(self._events.values()), {}
        else:
            found = self._events.pop(job_id, None)
            events = [found] if found else []
        for event in events:
            event.set()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                conn = await connect(self._url)
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    self._wake(None)  # anything may have changed while we were not listening
                    backoff = 0.2
                    async for note in conn.notifies():
                        self._wake(note.payload)
                finally:
                    self._ready.clear()
                    with contextlib.suppress(Exception):
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store: listener connection lost (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._wake(None)

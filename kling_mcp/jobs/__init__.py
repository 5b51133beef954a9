"""Jobs: the record and its state machine, the store (one interface, several backends), the runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .backend import JobStore


def open_store(settings: Settings) -> JobStore:
    """The store ``settings`` name: ``KLING_MCP_STORE_URL`` unset -> diskcache under the data dir;
    ``postgresql://...`` -> PostgreSQL (imported only then). Construction does no network I/O."""
    url = settings.store_url
    if not url:
        from .diskcache_store import DiskcacheStore

        return DiskcacheStore(settings.data_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore  # imports psycopg only when asked for

        store: JobStore = PostgresStore(url, settings.data_dir)
        return store
    from .. import errors

    raise errors.InvalidRequest(
        "KLING_MCP_STORE_URL must start with postgresql:// (or be unset for the local diskcache store).",
        hint="Set KLING_MCP_STORE_URL=postgresql://user:password@host:port/dbname, or unset it.",
    )

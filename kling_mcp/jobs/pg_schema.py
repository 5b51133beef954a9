"""Versioned schema migrations for the PostgreSQL store.

The migrations are the plain SQL files ``jobs/migrations/NNNN_<name>.sql``, applied in order, each
in its own transaction together with its row in ``kling_schema_version``. The whole run holds a
session-level ``pg_advisory_lock``, so replicas starting at once apply each migration exactly once:
the others wait for the lock and then find nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger("kling_mcp.store")

#: pg_advisory_lock key of the migration run ("kling-mcp schema" as a 64-bit number).
MIGRATION_LOCK = 0x6B6C696E67_736368
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("kling_mcp.jobs").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"kling-mcp's migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


async def migrate(conn: AsyncConnection) -> list[int]:
    """Bring the schema up to date; returns the versions this call applied (usually none).

    ``conn`` must be in autocommit mode (each migration opens its own transaction).
    """
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS kling_schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM kling_schema_version")
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        known = migrations()
        if current > len(known):
            raise RuntimeError(
                f"the database's schema is version {current}, newer than this kling-mcp knows ({len(known)}); "
                "upgrade kling-mcp on every replica."
            )
        for migration in known[current:]:
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO kling_schema_version (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("store: applied migration %s", migration.name)
            applied.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied

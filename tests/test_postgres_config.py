"""KLING_MCP_STORE_URL at start-up: a malformed URL or an unreachable database stops ``kling-mcp serve``
within seconds with a message naming the variable and never the password; replicas starting at once
migrate the schema once; without the variable psycopg is never imported."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from kling_mcp.config import Settings
from tests.pg_cluster import PASSWORD, Cluster

pytestmark = pytest.mark.slow

SECRET = "s3cret-Pw-9d2f7"


def _serve(store_url: str, tmp_path, *args: str) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env.update(KLING_MCP_DATA_DIR=str(tmp_path / "data"), KLING_MCP_STORE_URL=store_url)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kling_mcp", "serve", *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://kling:{SECRET}@127.0.0.1:99999/kling",
        f"postgresql://kling:{SECRET}@127.0.0.1:notaport/kling",
        f"mysql://kling:{SECRET}@127.0.0.1/kling",
        f"postgresql://kling:{SECRET}@127.0.0.1:5432/",
        f"postgresql://kling:{SECRET}@/kling",
    ],
)
def test_a_malformed_url_stops_the_server_naming_the_variable_not_the_password(url, tmp_path) -> None:
    code, output, elapsed = _serve(url, tmp_path)
    assert code != 0 and elapsed < 20
    assert "KLING_MCP_STORE_URL" in output
    assert SECRET not in output


@pytest.mark.parametrize("transport", [[], ["--transport", "http", "--port", "0"]])
def test_an_unreachable_database_stops_the_server_within_seconds(transport, tmp_path) -> None:
    url = f"postgresql://kling:{SECRET}@127.0.0.1:{_closed_port()}/kling"
    code, output, elapsed = _serve(url, tmp_path, *transport)
    assert code != 0 and elapsed < 20, output
    assert "KLING_MCP_STORE_URL" in output and "cannot be reached" in output
    assert SECRET not in output and "kling:***@127.0.0.1" in output


def test_a_wrong_password_stops_the_server_without_printing_either_password(pg_cluster: Cluster, tmp_path) -> None:
    code, output, elapsed = _serve(pg_cluster.url(password=SECRET), tmp_path)
    assert code != 0 and elapsed < 20
    assert "KLING_MCP_STORE_URL" in output and "password authentication failed" in output
    assert SECRET not in output and PASSWORD not in output


def test_the_password_is_a_secret_of_the_settings(tmp_path) -> None:
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path),
                                  "KLING_MCP_STORE_URL": f"postgresql://kling:{SECRET}@db:5432/kling"})
    assert SECRET in settings.secrets()
    assert SECRET not in repr(settings)


def test_replicas_starting_together_apply_each_migration_once(pg_url: str) -> None:
    from kling_mcp.jobs.pg_schema import migrations
    from kling_mcp.jobs.pg_support import prepare

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(prepare(pg_url) for _ in range(6))))

    results = asyncio.run(main())
    known = [m.version for m in migrations()]
    assert sorted(v for applied in results for v in applied) == known  # each applied by exactly one
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM kling_schema_version ORDER BY version")] == known
    assert asyncio.run(prepare(pg_url)) == []  # nothing left to do on the next start


def test_without_a_store_url_psycopg_is_never_imported(tmp_path) -> None:
    code = (
        "import sys\n"
        "from kling_mcp.config import Settings\n"
        "from kling_mcp.server import create_server\n"
        "from kling_mcp.jobs import open_store\n"
        f"settings = Settings.from_env({{'KLING_MCP_DATA_DIR': {str(tmp_path)!r}}})\n"
        "create_server(settings); open_store(settings)\n"
        "assert not [m for m in sys.modules if m.startswith('psycopg')], 'psycopg imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_role_without_rights_on_the_schema_stops_the_server_saying_so(pg_cluster: Cluster, tmp_path) -> None:
    pg_cluster.psql("CREATE ROLE visitor LOGIN PASSWORD 'visitor-pw-31c9'")
    pg_cluster.psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database="postgres")
    url = f"postgresql://visitor:visitor-pw-31c9@127.0.0.1:{pg_cluster.port}/postgres"
    code, output, elapsed = _serve(url, tmp_path)
    assert code != 0 and elapsed < 20
    assert "KLING_MCP_STORE_URL" in output and "refused kling-mcp's schema" in output and "permission denied" in output
    assert "visitor-pw-31c9" not in output


def test_a_percent_encoded_password_is_masked_in_both_forms(tmp_path) -> None:
    from kling_mcp import store_url

    url = "postgresql://kling:p%40ss%3Aw0rd-77@db.internal:5432/kling"
    assert "p%40ss" not in store_url.redacted(url) and "kling:***@db.internal" in store_url.redacted(url)
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path), "KLING_MCP_STORE_URL": url})
    assert {"p%40ss%3Aw0rd-77", "p@ss:w0rd-77"} <= set(settings.secrets())

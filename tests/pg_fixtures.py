"""pytest fixtures for the throwaway PostgreSQL cluster (:mod:`tests.pg_cluster`).

``pg_cluster``: one cluster for the session, stopped at its end. ``pg_url``: a fresh, empty
database on it for one test (``postgresql://kling:...@127.0.0.1:<port>/<db>``). Without the
binaries the tests that use them skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.pg_cluster import ROLE, Cluster, start_cluster, unavailable_reason


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason:
        if _in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(reason)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_cluster.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
    yield pg_cluster.url(database=name)
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

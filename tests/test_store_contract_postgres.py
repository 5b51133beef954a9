"""The store contract (tests/store_contract.py) against the PostgreSQL backend, on a throwaway cluster."""

from __future__ import annotations

import functools

import pytest

from kling_mcp.jobs.postgres_store import PostgresStore
from tests.store_contract import *  # noqa: F403

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def store_factory(pg_url, tmp_path):
    return functools.partial(PostgresStore, pg_url, tmp_path)

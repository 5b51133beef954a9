"""The store contract (tests/store_contract.py) against the diskcache backend."""

from __future__ import annotations

import functools

import pytest

from kling_mcp.jobs.diskcache_store import DiskcacheStore
from tests.store_contract import *  # noqa: F403


@pytest.fixture
def store_factory(tmp_path):
    return functools.partial(DiskcacheStore, tmp_path)

"""The throwaway cluster itself: loopback only, password auth, one database per test."""

from __future__ import annotations

import pytest

from tests.pg_cluster import PASSWORD, Cluster

pytestmark = pytest.mark.slow


def test_cluster_answers_with_password_and_refuses_without(pg_cluster: Cluster, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT current_user, current_setting('fsync')").fetchone() == ("kling", "off")
        assert conn.execute("SELECT current_setting('listen_addresses')").fetchone() == ("127.0.0.1",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url.replace(PASSWORD, "wrong-password"), connect_timeout=5).close()

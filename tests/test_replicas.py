"""Several ``kling-mcp serve --transport http`` replicas on one PostgreSQL database and one data dir,
against the Runware emulator (its own process, counting submissions and polls per job):

- 100 jobs round-robin over three replicas, one SIGKILLed mid-run: every job succeeds, each was submitted
  once, polled about as often as one driver needs, and every video is readable from both survivors;
- one idempotency key used at once on two replicas makes one job;
- the daily budget holds across replicas;
- ``check_job(wait_seconds)`` on one replica wakes within about a second of another finishing the job;
- a ``subscriptions/listen`` stream on one replica hears about a video another replica finished.

The scenario of the first test is ``benchmarks/replicas.py``'s, so the benchmark cannot rot unnoticed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.subscriptions import ResourceUpdated

from benchmarks.replica_harness import Emulator, Replica, replica_env, start_replicas
from benchmarks.replicas import run_replicas, table

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PROCESSING_POLLS = 4  # the emulator answers "processing" this many times, so one driver needs 5 polls
LEASE_S = 3.0


def _args(n: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": f"shot {n}: a paper boat crosses a moonlit pond", "provider": "runware", "tier": "standard",
            "duration": 5, "wait_seconds": 0, **extra}


async def test_100_jobs_on_three_replicas_survive_one_being_killed(pg_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    report = await run_replicas(replicas=3, jobs=100, store_url=pg_url, data_dir=data, kill=True,
                                processing_polls=PROCESSING_POLLS, lease_s=LEASE_S, deadline_s=240)
    print(table([report]))

    assert report.succeeded == 100, report.failed
    assert report.submissions == 100 and report.max_submissions_per_job == 1
    # One driver needs PROCESSING_POLLS + 1 polls; a take-over may repeat the one that was in flight.
    assert report.polls_per_job <= (PROCESSING_POLLS + 1) * 1.2, report.polls_per_job
    assert report.max_polls <= PROCESSING_POLLS + 3, report.max_polls
    assert report.orphans >= 5, "the kill did not catch the killed replica's jobs in flight"
    # Taken over within about a lease (a sweep runs every third of it); generous for a loaded box. As root
    # each replica has a host name of its own, so this is the lease expiring, as across machines.
    assert max(report.takeover_s) < 4 * LEASE_S, sorted(report.takeover_s)[-3:]
    assert report.reads == 200 and report.unreadable == []


# --- a small cluster for the other tests -------------------------------------------------------------


@dataclass
class Cluster:
    emulator: Emulator
    replicas: list[Replica]


@contextlib.contextmanager
def cluster(pg_url: str, tmp_path: Path, count: int, **env: str) -> Iterator[Cluster]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    emulator = Emulator(PROCESSING_POLLS)
    try:
        shared = replica_env(emulator, data, pg_url, KLING_MCP_LEASE_S=str(LEASE_S),
                             KLING_MCP_POLL_INTERVAL_S="0.3", KLING_MCP_POLL_MAX_INTERVAL_S="1.0", **env)
        replicas = start_replicas(count, shared, tmp_path)
        try:
            yield Cluster(emulator, replicas)
        finally:
            for replica in replicas:
                replica.close()
    finally:
        emulator.close()


@contextlib.asynccontextmanager
async def clients(replicas: list[Replica]) -> AsyncIterator[list[Client]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Client(r.url)) for r in replicas]


async def test_one_key_on_two_replicas_at_once_makes_one_job(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path, 2) as c:
        async with clients(c.replicas) as (a, b):
            answers: dict[tuple[int, str], str] = {}

            async def call(client: Client, n: int, side: str) -> None:
                result = await client.call_tool("generate_video", _args(n, idempotency_key=f"key-{n}"))
                assert not result.is_error, result.content
                answers[(n, side)] = result.structured_content["job_id"]

            async with anyio.create_task_group() as tg:
                for n in range(6):
                    tg.start_soon(call, a, n, "a")
                    tg.start_soon(call, b, n, "b")
        stats = c.emulator.stats()
    for n in range(6):
        assert answers[(n, "a")] == answers[(n, "b")], n
    assert sorted(s["submissions"] for s in stats.values() if s["submissions"]) == [1] * 6


async def test_the_daily_budget_holds_across_replicas(pg_url: str, tmp_path: Path) -> None:
    budget = 2.0
    with cluster(pg_url, tmp_path, 3, KLING_MCP_DAILY_BUDGET_USD=str(budget)) as c:
        async with clients(c.replicas) as replicas:
            quote_args = {k: v for k, v in _args(0).items() if k != "wait_seconds"}
            estimate = await replicas[0].call_tool("estimate_cost", quote_args)
            assert not estimate.is_error, estimate.content
            (quote,) = [q for q in estimate.structured_content["quotes"] if q["provider"] == "runware"]
            fits = math.floor(budget / quote["cost_usd"] + 1e-9)
            assert 1 <= fits < 8, quote
            accepted: list[str] = []
            refused: list[str] = []

            async def call(n: int) -> None:
                result = await replicas[n % 3].call_tool("generate_video", _args(n))
                if result.is_error:
                    refused.append(str(result.content[0].text))  # type: ignore[union-attr]
                else:
                    accepted.append(result.structured_content["job_id"])

            async with anyio.create_task_group() as tg:
                for n in range(3 * fits + 3):
                    tg.start_soon(call, n)
        stats = c.emulator.stats()
    assert len(accepted) == fits, (accepted, refused[:2])
    assert len(refused) == 2 * fits + 3 and all("budget" in text.lower() for text in refused), refused[:2]
    assert sum(s["submissions"] for s in stats.values()) == fits


async def test_a_wait_on_one_replica_wakes_when_another_finishes_the_job(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path, 2) as c:
        async with clients(c.replicas) as (a, b):
            lags = []
            for n in range(3):
                submitted = await a.call_tool("generate_video", _args(n))
                job_id = submitted.structured_content["job_id"]
                waited = await b.call_tool("check_job", {"job_id": job_id, "wait_seconds": 45})
                returned_at = time.time()
                view = waited.structured_content
                assert view["status"] == "succeeded", view
                listed = await b.call_tool("list_jobs", {"limit": 10})
                assert job_id in {j["job_id"] for j in listed.structured_content["jobs"]}
                lags.append(returned_at - _finished_at(c, job_id))
    # The driver is replica A (it submitted); B's wait is woken by A's NOTIFY, not by its own polling.
    assert max(lags) < 1.5, lags


def _finished_at(c: Cluster, job_id: str) -> float:
    import psycopg

    url = c.replicas[0].env["KLING_MCP_STORE_URL"]
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT record->>'finished_at' FROM kling_jobs WHERE job_id = %s", (job_id,)).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


async def test_a_listener_on_one_replica_hears_a_video_another_replica_finished(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path, 2) as c:
        async with clients(c.replicas) as (a, b):
            submitted = await a.call_tool("generate_video", _args(1))
            job_id = submitted.structured_content["job_id"]
            uri = f"kling://jobs/{job_id}/videos/0"
            with anyio.fail_after(60):
                async with b.listen(resource_subscriptions=[uri]) as subscription:
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated) and str(event.uri) == uri:
                            break
                    heard_at = time.time()
            read = await b.read_resource(uri)
    assert len(getattr(read.contents[0], "blob", "")) > 100
    assert heard_at - _finished_at(c, job_id) < 1.5  # woken by the driving replica's NOTIFY

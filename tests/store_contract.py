"""The contract every JobStore backend passes, written once.

A backend's test module defines a ``store_factory`` fixture: a picklable zero-argument callable that
returns a new :class:`~kling_mcp.jobs.backend.JobStore` handle on one shared store (each call may be made in
another process), and star-imports this module::

    @pytest.fixture
    def store_factory(tmp_path):
        return functools.partial(DiskcacheStore, tmp_path)

    from tests.store_contract import *  # noqa: F403

Concurrency is tested across real processes (``spawn``), each with its own handle, released together
by a barrier so that they contend.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from kling_mcp import errors
from kling_mcp.jobs.backend import JobStore, KeyClaim, RequestFingerprint
from kling_mcp.jobs.model import InvalidTransition, Job, JobStatus
from kling_mcp.requests import VideoSpec

pytestmark = pytest.mark.anyio

Factory = Callable[[], JobStore]
PROCESSES = 4


def make_job(prompt: str = "p", status: JobStatus = JobStatus.PENDING, **fields: Any) -> Job:
    return Job(provider="runpod", model="m", spec=VideoSpec(operation="text", prompt=prompt), status=status, **fields)


def claim_for(key: str, **request: Any) -> KeyClaim:
    return KeyClaim(key=key, fingerprint=RequestFingerprint.of({"prompt": "p", "duration": 5, **request}))


@pytest.fixture
async def store(store_factory: Factory) -> AsyncIterator[JobStore]:
    handle = store_factory()
    try:
        yield handle
    finally:
        await handle.close()


# --- running workers in other processes ------------------------------------------------------------


def _entry(
    worker: Callable[..., Any], factory: Factory, barrier: Any, results: Any, index: int, args: tuple[Any, ...]
) -> None:
    async def main() -> Any:
        handle = factory()
        try:
            await handle.get("warm-up")  # connect before the barrier, so the workers really contend
            barrier.wait(timeout=120)
            return await worker(handle, *args)
        finally:
            await handle.close()

    try:
        results.put((index, "ok", asyncio.run(main())))
    except BaseException:
        results.put((index, "error", traceback.format_exc()))


def run_processes(factory: Factory, worker: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``worker(store, *a)`` for each ``a`` in its own process at the same moment; their results."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(len(args))
    procs = [ctx.Process(target=_entry, args=(worker, factory, barrier, results, i, a)) for i, a in enumerate(args)]
    for proc in procs:
        proc.start()
    try:
        out = sorted(results.get(timeout=180) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    failures = [text for _, kind, text in out if kind == "error"]
    assert not failures, failures[0]
    return [value for _, _, value in out]


async def _count_polls(store: JobStore, job_id: str, times: int) -> int:
    for _ in range(times):
        await store.transition(job_id, lambda j: j.updated(polls=j.polls + 1))
    return times


async def _finish_as(store: JobStore, job_id: str, status: str) -> bool:
    """Try to end the job in ``status``; True when this call's write is the one that ended it."""
    target = JobStatus(status)
    won = False

    def update(job: Job) -> Job | None:
        nonlocal won
        won = False
        if job.terminal:
            return None
        won = True
        return job.moved(target, note=status)

    await store.transition(job_id, update)
    return won


async def _create_with_key(store: JobStore, prompt: str) -> tuple[str, bool]:
    job, created = await store.create(make_job(prompt), claim_for("shared-key"))
    return job.job_id, created


async def _claim(store: JobStore, job_id: str, owner: str) -> bool:
    return await store.claim_lease(job_id, owner, 30.0)


async def _reserve_many(store: JobStore, prefix: str, count: int, day: str, limit: float) -> int:
    booked = 0
    for n in range(count):
        booked += (await store.reserve(f"{prefix}-{n}", day, 1.0, limit)).ok
    return booked


async def _touch_later(store: JobStore, job_id: str, delay: float) -> None:
    await anyio.sleep(delay)
    await store.transition(job_id, lambda j: j.moved(JobStatus.RUNNING, progress=42.0))


# --- jobs and transitions ------------------------------------------------------------------------


async def test_create_stores_version_one_and_get_reads_it(store: JobStore) -> None:
    job, created = await store.create(make_job())
    assert created and job.version == 1
    stored = await store.get(job.job_id)
    assert stored is not None and stored.version == 1 and stored.spec.prompt == "p"
    assert await store.get("no-such-job") is None
    assert await store.count() == 1


async def test_transition_applies_to_the_current_record_and_bumps_the_version(store: JobStore) -> None:
    job, _ = await store.create(make_job())
    await store.transition(job.job_id, lambda j: j.updated(polls=5))
    # ``job`` is now a stale copy; the update function is given the stored record, polls=5
    moved = await store.transition(job.job_id, lambda j: j.moved(JobStatus.SUBMITTED, polls=j.polls + 1))
    assert (moved.status, moved.polls, moved.version) == (JobStatus.SUBMITTED, 6, 3)
    unchanged = await store.transition(job.job_id, lambda j: None)
    assert unchanged.version == 3
    with pytest.raises(InvalidTransition):
        await store.transition(job.job_id, lambda j: j.model_copy(update={"status": JobStatus.PENDING}))
    assert (await store.get(job.job_id)).status == JobStatus.SUBMITTED  # type: ignore[union-attr]
    with pytest.raises(errors.UnknownJob):
        await store.transition("no-such-job", lambda j: j)


async def test_terminal_jobs_never_change_status(store: JobStore) -> None:
    job, _ = await store.create(make_job())
    done = await store.transition(job.job_id, lambda j: j.moved(JobStatus.CANCELLED, note="stopped"))
    assert done.terminal and done.finished_at is not None
    for status in (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED):
        with pytest.raises(InvalidTransition):
            await store.transition(job.job_id, lambda j, s=status: j.model_copy(update={"status": s}))
    assert (await store.get(job.job_id)).status == JobStatus.CANCELLED  # type: ignore[union-attr]
    assert job.job_id not in {j.job_id for j in await store.unfinished()}


async def test_transitions_from_several_processes_lose_no_update(store: JobStore, store_factory: Factory) -> None:
    job, _ = await store.create(make_job(status=JobStatus.RUNNING))
    per_process = 20
    run_processes(store_factory, _count_polls, [(job.job_id, per_process)] * PROCESSES)
    final = await store.get(job.job_id)
    assert final is not None
    assert final.polls == PROCESSES * per_process
    assert final.version == 1 + PROCESSES * per_process


async def test_one_terminal_write_wins_across_processes(store: JobStore, store_factory: Factory) -> None:
    job, _ = await store.create(make_job(status=JobStatus.DOWNLOADING))
    statuses = ["succeeded", "failed", "cancelled", "cancelled"]
    won = run_processes(store_factory, _finish_as, [(job.job_id, s) for s in statuses])
    assert sum(won) == 1
    final = await store.get(job.job_id)
    assert final is not None and final.status.value == statuses[won.index(True)] == final.note


# --- idempotency keys ----------------------------------------------------------------------------


async def test_a_key_returns_its_job_for_the_same_request_and_refuses_another(store: JobStore) -> None:
    first, created = await store.create(make_job("p"), claim_for("k1"))
    assert created and first.idempotency_key == "k1"
    again, created = await store.create(make_job("p"), claim_for("k1"))
    assert not created and again.job_id == first.job_id
    with pytest.raises(errors.IdempotencyConflict) as info:
        await store.create(make_job("p"), claim_for("k1", duration=10))
    assert "duration was 5, now 10" in str(info.value) and first.job_id in str(info.value)
    bound = await store.key_job("k1")
    assert bound is not None and bound[0].job_id == first.job_id
    assert await store.count() == 1


async def test_concurrent_creates_with_one_key_make_one_job(store: JobStore, store_factory: Factory) -> None:
    answers = run_processes(store_factory, _create_with_key, [("p",)] * PROCESSES)
    assert sum(created for _, created in answers) == 1
    assert len({job_id for job_id, _ in answers}) == 1
    assert await store.count() == 1


async def test_a_released_key_may_be_used_again(store: JobStore) -> None:
    first, _ = await store.create(make_job(), claim_for("k2"))
    await store.release_key("k2", "some-other-job")  # not bound to that job: nothing happens
    assert (await store.key_job("k2")) is not None
    await store.release_key("k2", first.job_id)
    assert await store.key_job("k2") is None
    second, created = await store.create(make_job(), claim_for("k2", prompt="new"))
    assert created and second.job_id != first.job_id


# --- listing -------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_a_status_filter_and_unfinished_skips_terminal(store: JobStore) -> None:
    made = []
    for n in range(5):
        job, _ = await store.create(make_job(f"p{n}", created_at=1000.0 + n))
        made.append(job.job_id)
    await store.transition(made[1], lambda j: j.moved(JobStatus.FAILED))
    await store.transition(made[3], lambda j: j.moved(JobStatus.CANCELLED))
    assert [j.job_id for j in await store.list_jobs()] == made[::-1]
    assert [j.job_id for j in await store.list_jobs(limit=2)] == made[:2:-1]
    assert [j.job_id for j in await store.list_jobs(JobStatus.FAILED)] == [made[1]]
    assert [j.job_id for j in await store.unfinished()] == [made[0], made[2], made[4]]


async def test_find_twin_returns_the_newest_job_with_a_fingerprint(store: JobStore) -> None:
    await store.create(make_job(fingerprint="fp-a"))
    newer, _ = await store.create(make_job(fingerprint="fp-a"))
    twin = await store.find_twin("fp-a")
    assert twin is not None and twin.job_id == newer.job_id
    assert await store.find_twin("fp-b") is None


# --- leases --------------------------------------------------------------------------------------


async def test_a_lease_is_held_by_one_owner_until_released(store: JobStore) -> None:
    job, _ = await store.create(make_job(status=JobStatus.RUNNING))
    other, _ = await store.create(make_job(status=JobStatus.RUNNING))
    assert await store.claim_lease(job.job_id, "a", 30)
    assert not await store.claim_lease(job.job_id, "b", 30)
    assert await store.claim_lease(job.job_id, "a", 30)  # its owner may claim again
    assert await store.renew_lease(job.job_id, "a", 30)
    assert not await store.renew_lease(job.job_id, "b", 30)
    lease = await store.lease(job.job_id)
    assert lease is not None and lease.owner == "a" and lease.expires_at > time.time() + 20
    assert {j.job_id for j in await store.claimable("b")} == {other.job_id}
    assert {j.job_id for j in await store.claimable("a")} == {job.job_id, other.job_id}
    await store.release_lease(job.job_id, "b")  # not b's: nothing happens
    assert (await store.lease(job.job_id)) is not None
    await store.release_lease(job.job_id, "a")
    assert await store.lease(job.job_id) is None
    assert await store.claim_lease(job.job_id, "b", 30)


async def test_live_leases_lists_the_unexpired_leases_of_unfinished_jobs(store: JobStore) -> None:
    held, _ = await store.create(make_job(status=JobStatus.RUNNING), lease_owner="a", lease_s=30)
    lapsed, _ = await store.create(make_job(status=JobStatus.RUNNING), lease_owner="b", lease_s=0.05)
    free, _ = await store.create(make_job(status=JobStatus.RUNNING))
    done, _ = await store.create(make_job(status=JobStatus.RUNNING), lease_owner="c", lease_s=30)
    await store.transition(done.job_id, lambda j: j.moved(JobStatus.FAILED))
    await anyio.sleep(0.2)
    leases = await store.live_leases()
    assert [(lease.job_id, lease.owner) for lease in leases] == [(held.job_id, "a")], (free, lapsed)
    assert leases[0].expires_at > time.time() + 20


async def test_create_may_take_the_new_jobs_lease_in_the_same_step(store: JobStore) -> None:
    job, _ = await store.create(make_job(), lease_owner="submitter", lease_s=30)
    lease = await store.lease(job.job_id)
    assert lease is not None and lease.owner == "submitter"
    assert not await store.claim_lease(job.job_id, "other", 30)
    assert await store.claimable("other") == []


async def test_an_expired_lease_is_taken_over_and_its_old_owner_cannot_renew(store: JobStore) -> None:
    job, _ = await store.create(make_job(status=JobStatus.RUNNING))
    assert await store.claim_lease(job.job_id, "dead", 0.3)
    assert not await store.claim_lease(job.job_id, "b", 30)
    await anyio.sleep(0.6)
    assert await store.lease(job.job_id) is None
    assert job.job_id in {j.job_id for j in await store.claimable("b")}
    assert await store.claim_lease(job.job_id, "b", 30)
    assert not await store.renew_lease(job.job_id, "dead", 30)
    lease = await store.lease(job.job_id)
    assert lease is not None and lease.owner == "b"


async def test_finished_jobs_are_neither_leased_nor_claimable(store: JobStore) -> None:
    job, _ = await store.create(make_job(status=JobStatus.RUNNING))
    await store.transition(job.job_id, lambda j: j.moved(JobStatus.FAILED))
    assert not await store.claim_lease(job.job_id, "a", 30)
    assert await store.claimable("a") == []


async def test_concurrent_lease_claims_have_one_winner(store: JobStore, store_factory: Factory) -> None:
    job, _ = await store.create(make_job(status=JobStatus.RUNNING))
    won = run_processes(store_factory, _claim, [(job.job_id, f"owner-{n}") for n in range(PROCESSES)])
    assert sum(won) == 1
    lease = await store.lease(job.job_id)
    assert lease is not None and lease.owner == f"owner-{won.index(True)}"


# --- the spend ledger ----------------------------------------------------------------------------


async def test_ledger_books_on_the_reserved_day_settles_and_releases(store: JobStore) -> None:
    day, later = "2026-01-01", "2026-01-02"
    assert (await store.reserve("j1", day, 2.0, limit=5.0)).ok
    assert (await store.reserve("j2", day, 2.0, limit=5.0)).ok
    refused = await store.reserve("j3", day, 2.0, limit=5.0)
    assert not refused.ok and refused.spent_before == pytest.approx(4.0)
    assert await store.ledger_entry("j3") is None
    assert await store.spent(day) == pytest.approx(4.0)
    assert (await store.reserve("j2", day, 3.0, limit=5.0)).ok  # re-quoted: replaces, does not add
    assert await store.spent(day) == pytest.approx(5.0)
    settled = await store.settle("j1", 1.25, basis="inferred")
    assert settled is not None and settled.day == day and settled.settled and settled.basis == "inferred"
    assert await store.spent(day) == pytest.approx(4.25) and await store.spent(later) == 0.0
    await store.release("j1")  # settled: billed money stays booked
    await store.release("j2")  # unsettled: the reservation goes
    assert await store.spent(day) == pytest.approx(1.25)
    assert await store.ledger_entry("j2") is None
    assert await store.settle("nothing", 1.0) is None


async def test_ledger_records_jobs_without_a_price(store: JobStore) -> None:
    day = "2026-01-03"
    assert (await store.reserve("u1", day, None, limit=None)).ok
    entry = await store.ledger_entry("u1")
    assert entry is not None and entry.basis == "unknown" and entry.usd == 0.0
    assert await store.unpriced(day) == 1 and await store.spent(day) == 0.0
    await store.settle("u1", 0.7)
    assert await store.unpriced(day) == 0 and await store.spent(day) == pytest.approx(0.7)


async def test_ledger_under_concurrency_never_exceeds_the_budget(store: JobStore, store_factory: Factory) -> None:
    day, limit = "2026-01-04", 13.0
    booked = run_processes(store_factory, _reserve_many, [(f"p{n}", 8, day, limit) for n in range(PROCESSES)])
    assert sum(booked) == 13
    assert await store.spent(day) == pytest.approx(13.0)


# --- waiting and adapter state -------------------------------------------------------------------


async def test_a_wait_wakes_on_a_change_made_by_another_process(store: JobStore, store_factory: Factory) -> None:
    job, _ = await store.create(make_job(status=JobStatus.SUBMITTED))
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            anyio.to_thread.run_sync, lambda: run_processes(store_factory, _touch_later, [(job.job_id, 1.0)])
        )
        started = time.monotonic()
        changed = await store.wait_for_change(job.job_id, job.version, timeout=60.0)
        waited = time.monotonic() - started
    assert changed is not None and changed.status == JobStatus.RUNNING and changed.progress == 42.0
    assert waited < 30.0  # woke on the change (spawning the process takes a few seconds on a loaded box)


async def test_a_wait_returns_at_once_on_a_newer_version_and_times_out_otherwise(store: JobStore) -> None:
    job, _ = await store.create(make_job())
    await store.transition(job.job_id, lambda j: j.updated(progress=1.0))
    started = time.monotonic()
    newer = await store.wait_for_change(job.job_id, job.version, timeout=10.0)
    assert newer is not None and newer.version == 2 and time.monotonic() - started < 2.0
    same = await store.wait_for_change(job.job_id, 2, timeout=0.5)
    assert same is not None and same.version == 2 and time.monotonic() - started >= 0.5
    assert await store.wait_for_change("no-such-job", 1, timeout=0.1) is None


async def test_a_wait_in_one_process_wakes_at_once_on_a_change_there(store: JobStore) -> None:
    job, _ = await store.create(make_job())
    async with anyio.create_task_group() as tg:

        async def change() -> None:
            await anyio.sleep(0.2)
            await store.transition(job.job_id, lambda j: j.updated(progress=5.0))

        tg.start_soon(change)
        started = time.monotonic()
        changed = await store.wait_for_change(job.job_id, job.version, timeout=20.0)
    assert changed is not None and changed.progress == 5.0 and time.monotonic() - started < 5.0


async def test_kv_values_round_trip_and_expire(store: JobStore) -> None:
    await store.kv_set("upload:abc", {"url": "https://x/y", "at": 1.5})
    await store.kv_set("short", [1, 2], expire_s=0.3)
    assert await store.kv_get("upload:abc") == {"url": "https://x/y", "at": 1.5}
    assert await store.kv_get("short") == [1, 2]
    await anyio.sleep(0.6)
    assert await store.kv_get("short") is None
    assert await store.kv_get("missing") is None

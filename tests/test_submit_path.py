"""The money path end to end against the emulators: a 429 on submit is waited out and retried on every
provider; an answer that leaves acceptance unknown is never failed over (Runware settles it with one poll);
a call cancelled while the provider call is in flight still records the job; keys are bound to their request;
the ledger books, settles and releases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import pytest
from mcp import Client

from kling_mcp import errors
from kling_mcp.requests import GenerateRequest
from kling_mcp.server import create_server
from kling_mcp.submission import today
from tests.emulators._server import serve
from tests.support import read_store
from tests.test_reliability_faults import FACTORIES, Emu, Wire, is_post, service, settings, text_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def emulator() -> Iterator[Callable[[str], Emu]]:
    """``emulator("runpod")`` starts a fresh emulator behind a recording :class:`Wire` for this test."""
    with ExitStack() as stack:

        def start(name: str) -> Emu:
            state, app = FACTORIES[name]()
            wire = Wire(app)
            return Emu(name, stack.enter_context(serve(wire)), state, wire)

        yield start


def args_for(emu: Emu, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"prompt": "a paper boat in the rain", "provider": emu.name, "duration": 5}
    if emu.name == "runpod":
        base["reference_images"] = [emu.image_url()]
    elif emu.name in ("aimlapi", "evolink"):
        base["first_frame"] = emu.image_url()
    return {**base, **extra}


def rate_limit_next_submit(emu: Emu) -> None:
    if emu.name == "runpod":
        emu.state.fail_next_submits(1, 429, retry_after="1")
    elif emu.name == "runware":
        emu.state.retry_after_s = 1
        emu.state.http_faults.append(429)
    elif emu.name == "aimlapi":
        emu.state.fail_next(429, on="submit", retry_after="1")
    else:
        emu.state.fail("submit", 429, retry_after="1")


def accepted_tasks(emu: Emu) -> int:
    field = {"runpod": "jobs", "runware": "tasks", "aimlapi": "generations", "evolink": "tasks"}[emu.name]
    return len(getattr(emu.state, field))


@pytest.mark.parametrize("provider", ["runware", "runpod", "aimlapi", "evolink"])
async def test_a_429_on_submit_is_waited_out_and_submitted_again_within_the_call(emulator, tmp_path, provider):
    emu = emulator(provider)
    rate_limit_next_submit(emu)
    started = time.monotonic()
    async with Client(create_server(settings(tmp_path, emu))) as client:
        result = await client.call_tool("generate_video", args_for(emu, wait_seconds=30))
    assert not result.is_error, text_of(result)
    view = result.structured_content
    assert view["status"] == "succeeded", view
    posts = [s for s in emu.wire.seen if s.method == "POST" and "/files" not in s.path]
    assert len(posts) >= 2 and accepted_tasks(emu) == 1
    assert time.monotonic() - started < 45


@pytest.mark.parametrize("status", [500, 502])
async def test_a_5xx_on_submit_is_never_failed_over_and_says_it_may_have_been_accepted(emulator, tmp_path, status):
    evolink, aiml = emulator("evolink"), emulator("aimlapi")
    evolink.state.fail("submit", status)
    args = {"prompt": "a lantern floats away", "first_frame": evolink.image_url(), "duration": 5, "wait_seconds": 5}
    async with Client(create_server(settings(tmp_path, evolink, aiml))) as client:
        result = await client.call_tool("generate_video", args)
        listed = (await client.call_tool("list_jobs", {})).structured_content
    text = text_of(result)
    assert result.is_error and "[interrupted]" in text and "may or may not be running and billed" in text
    assert "Do not submit it again blindly" in text
    assert aiml.wire.seen == []
    (job,) = listed["jobs"]
    assert job["status"] == "failed" and job["provider"] == "evolink"


async def test_a_runware_5xx_on_submit_is_settled_by_one_poll_then_failed_over(emulator, tmp_path):
    runware, runpod = emulator("runware"), emulator("runpod")
    runware.state.http_faults.append(502)  # answered before any task was made: Runware has no such task
    args = {"prompt": "a heron takes off", "reference_images": [runpod.image_url()], "duration": 5}
    async with Client(create_server(settings(tmp_path, runware, runpod))) as client:
        estimate = (await client.call_tool("estimate_cost", args)).structured_content
        result = await client.call_tool("generate_video", {**args, "wait_seconds": 20})
    assert estimate["recommended"] == "runware"
    view = result.structured_content
    assert not result.is_error and view["status"] == "succeeded", text_of(result)
    assert view["provider"] == "runpod" and "no task with this job's id" in view["note"]
    assert len(runware.state.sent("getResponse")) == 1 and runware.state.tasks == {}


async def test_a_call_cancelled_while_the_submit_is_in_flight_still_records_the_job(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.wire.delay(is_post("/run"), 1.5)  # the provider takes the job; its answer is late
    async with service(settings(tmp_path, runpod), timeout_s=30) as svc:
        with anyio.move_on_after(0.4) as scope:
            await svc.generate(GenerateRequest(**args_for(runpod, wait_seconds=10)))
        assert scope.cancelled_caught
        (job,) = await svc.store.list_jobs()  # recorded with the provider's answer, not left pending
        assert job.status.value in ("submitted", "running") and job.remote_id in runpod.state.jobs
        done = await svc.runner.wait(job.job_id, 30)
    assert done.status.value == "succeeded" and done.remote_id is not None
    assert len(runpod.state.submissions()) == 1


async def test_wait_seconds_counts_from_the_start_of_the_call(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.progression = ("IN_QUEUE", *["IN_PROGRESS"] * 500, "COMPLETED")
    runpod.wire.delay(is_post("/run"), 2.0)
    started = time.monotonic()
    async with Client(create_server(settings(tmp_path, runpod))) as client:
        view = (await client.call_tool("generate_video", args_for(runpod, wait_seconds=3))).structured_content
    elapsed = time.monotonic() - started
    assert view["status"] in ("submitted", "running"), view
    assert elapsed < 3 + 2.5, elapsed  # not 2 s of submit plus 3 s of waiting


async def test_a_key_is_bound_to_its_request_and_a_failed_jobs_key_says_to_use_a_new_one(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.next_job_fails()
    args = args_for(runpod, wait_seconds=20, idempotency_key="shot-7")
    async with Client(create_server(settings(tmp_path, runpod))) as client:
        first = (await client.call_tool("generate_video", args)).structured_content
        again = (await client.call_tool("generate_video", args)).structured_content
        other = await client.call_tool("generate_video", {**args, "duration": 10})
    assert first["status"] == "failed" and again["job_id"] == first["job_id"]
    assert "nothing new was billed" in again["note"]
    assert "new idempotency_key" in again["next_action"]
    assert other.is_error and "[idempotency_conflict]" in text_of(other)
    assert "duration was 5, now 10" in text_of(other)
    assert len(runpod.state.submissions()) == 1


async def test_the_ledger_books_the_quote_settles_the_bill_and_releases_a_refusal(emulator, tmp_path):
    runpod, evolink = emulator("runpod"), emulator("evolink")
    s = settings(tmp_path, runpod, evolink)
    async with Client(create_server(s)) as client:
        done = (await client.call_tool("generate_video", args_for(runpod, wait_seconds=20))).structured_content
        evo = (await client.call_tool("generate_video", args_for(evolink, wait_seconds=20))).structured_content
        runpod.state.fail_next_submits(1, 400)
        refused = await client.call_tool("generate_video", args_for(runpod, prompt="refused", wait_seconds=5))
    assert refused.is_error

    async def read(store: Any) -> Any:
        return (await store.ledger_entry(done["job_id"]), await store.ledger_entry(evo["job_id"]),
                await store.spent(today()))

    billed, inferred, spent = read_store(tmp_path / "data", read)
    assert billed.basis == "billed" and billed.usd == pytest.approx(done["cost_usd"]) and billed.day == today()
    assert inferred.basis == "inferred" and inferred.usd == pytest.approx(evo["cost_usd"])
    assert "inferred, not a bill" in evo["note"] and "inferred" not in (done["note"] or "")
    assert spent == pytest.approx(done["cost_usd"] + evo["cost_usd"])  # the refusal booked nothing


async def test_concurrent_submits_never_pass_the_daily_budget(emulator, tmp_path):
    runpod = emulator("runpod")
    s = settings(tmp_path, runpod, KLING_MCP_DAILY_BUDGET_USD="1.0")
    results: list[Any] = []
    async with Client(create_server(s)) as client:
        quote = (await client.call_tool("estimate_cost", args_for(runpod))).structured_content
        cost = next(q["cost_usd"] for q in quote["quotes"] if q["provider"] == "runpod")

        async def submit(n: int) -> None:
            results.append(await client.call_tool("generate_video", args_for(runpod, prompt=f"shot {n}",
                                                                                wait_seconds=0)))

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(submit, n)
    accepted = [r for r in results if not r.is_error]
    assert len(accepted) == int(1.0 // cost) < 6
    assert all("[budget_exceeded]" in text_of(r) for r in results if r.is_error)
    assert len(runpod.state.submissions()) == len(accepted)


async def test_the_service_refuses_a_key_reused_with_another_request_before_building_anything(emulator, tmp_path):
    runpod = emulator("runpod")
    async with service(settings(tmp_path, runpod), timeout_s=30) as svc:
        await svc.generate(GenerateRequest(**args_for(runpod, wait_seconds=0, idempotency_key="k")))
        with pytest.raises(errors.IdempotencyConflict, match="prompt was"):
            await svc.generate(GenerateRequest(**args_for(runpod, prompt="another", idempotency_key="k")))


async def test_a_cancel_after_the_provider_finished_keeps_the_paid_video_and_says_so(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.wire.delay(lambda scope: scope["method"] == "GET" and scope["path"].endswith(".mp4"), 2.0)
    async with Client(create_server(settings(tmp_path, runpod))) as client:
        job_id = (await client.call_tool("generate_video", args_for(runpod, wait_seconds=0))).structured_content[
            "job_id"
        ]
        view: dict[str, Any] = {}
        for _ in range(200):
            view = (await client.call_tool("check_job", {"job_id": job_id})).structured_content
            if view["status"] == "downloading":
                break
            await anyio.sleep(0.02)
        assert view["status"] == "downloading", view
        cancel = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
        final = (await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 20})).structured_content
    assert cancel["status"] == "downloading" and not cancel["cancelled_at_provider"]
    assert "had already finished" in cancel["message"] and "kept" in cancel["message"]
    assert final["status"] == "succeeded" and len(final["videos"]) == 1


async def test_a_cancel_wins_over_a_check_waiting_in_the_same_process(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.progression = ("IN_QUEUE", *["IN_PROGRESS"] * 500, "COMPLETED")
    async with Client(create_server(settings(tmp_path, runpod))) as client:
        job_id = (await client.call_tool("generate_video", args_for(runpod, wait_seconds=0))).structured_content[
            "job_id"
        ]
        checked: list[dict[str, Any]] = []

        async def check() -> None:
            result = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 20})
            checked.append(result.structured_content)

        async with anyio.create_task_group() as tg:
            tg.start_soon(check)
            await anyio.sleep(0.5)
            cancel = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
        await anyio.sleep(1.0)  # polls in flight, if any, land now and must not revive the job
        after = (await client.call_tool("check_job", {"job_id": job_id})).structured_content
    assert cancel["status"] == "cancelled" and cancel["cancelled_at_provider"]
    assert checked[0]["status"] == "cancelled" and after["status"] == "cancelled"
    (remote,) = runpod.state.jobs.values()
    assert remote.status == "CANCELLED"


async def test_a_check_during_the_submit_leaves_the_job_to_its_submitter(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.wire.delay(is_post("/run"), 1.5)
    async with service(settings(tmp_path, runpod), timeout_s=30) as svc:
        async with anyio.create_task_group() as tg:
            tg.start_soon(svc.generate, GenerateRequest(**args_for(runpod, wait_seconds=0)))
            await anyio.sleep(0.5)
            (pending,) = await svc.store.list_jobs()
            seen = await svc.check(pending.job_id, 0.5)  # must not take the job being submitted for an orphan
        done = await svc.runner.wait(pending.job_id, 30)
    assert seen.status.value == "pending" and seen.error is None
    assert done.status.value == "succeeded" and len(runpod.state.submissions()) == 1


async def test_a_cancel_during_a_429_wait_submits_nothing(emulator, tmp_path):
    aiml = emulator("aimlapi")
    aiml.state.fail_next(429, on="submit", retry_after="2")
    async with service(settings(tmp_path, aiml), timeout_s=30) as svc:
        results: list[Any] = []

        async def generate() -> None:
            results.append(await svc.generate(GenerateRequest(**args_for(aiml, wait_seconds=0))))

        async with anyio.create_task_group() as tg:
            tg.start_soon(generate)
            await anyio.sleep(0.7)  # the first submit was answered 429; the retry waits 2 s
            (job,) = await svc.store.list_jobs()
            cancel = await svc.cancel(job.job_id)
        ((final, _),) = results
        entry = await svc.store.ledger_entry(job.job_id)
    assert cancel.status == "cancelled" and final.status.value == "cancelled"
    assert aiml.state.generations == {} and entry is None  # nothing submitted, nothing booked

"""Spending guards: ``KLING_MCP_MAX_JOB_COST_USD`` and ``KLING_MCP_DAILY_BUDGET_USD`` are enforced
before anything is submitted, with an error that gives the quote and the limit; the spend ledger is
persisted in the store (it survives a restart) and records what was billed; ``estimate_cost`` shows
the remaining budget. Concurrent calls and failover cannot get around a limit.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.aimlapi import AimlState
from tests.emulators.aimlapi import create_app as aimlapi_app
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app
from tests.support import read_store

pytestmark = pytest.mark.anyio

RUNPOD_KEY, AIML_KEY = "rp-budget-key", "aiml-budget-key"
PER_SECOND = 0.112                                  # runpod's published price


@pytest.fixture
def runpod() -> Iterator[tuple[str, RunpodState]]:
    state = RunpodState(api_key=RUNPOD_KEY)
    with serve(runpod_app(state)) as base:
        yield base, state


def settings(tmp_path: Path, base: str, **env: str) -> Settings:
    return Settings.from_env({
        "RUNPOD_API_KEY": RUNPOD_KEY, "KLING_MCP_RUNPOD_BASE_URL": f"{base}/v2",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **env})


def job_args(base: str, state: RunpodState, duration: int, prompt: str = "a tram in the rain") -> dict[str, Any]:
    name = state.files.add(png_bytes(96, 64, (30, 120, 200)), suffix=".png", content_type="image/png")
    return {"prompt": prompt, "provider": "runpod", "reference_images": [f"{base}/files/{name}"],
            "duration": duration}


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def ledger(tmp_path: Path) -> float:
    """Today's total in the spend ledger, read from the store on disk."""
    from kling_mcp.submission import today

    return read_store(tmp_path / "data", lambda store: store.spent(today()))


async def test_a_job_over_the_per_job_limit_is_refused_before_submit_with_the_quote_and_the_limit(runpod, tmp_path):
    base, state = runpod
    s = settings(tmp_path, base, KLING_MCP_MAX_JOB_COST_USD="0.5")
    async with Client(create_server(s)) as client:
        refused = await client.call_tool("generate_video", {**job_args(base, state, 5), "wait_seconds": 0})
        allowed = await client.call_tool("generate_video", {**job_args(base, state, 4), "wait_seconds": 0})
    assert refused.is_error
    text = text_of(refused)
    assert "[budget_exceeded]" in text and "$0.560" in text and "KLING_MCP_MAX_JOB_COST_USD is $0.50" in text
    assert not allowed.is_error, allowed.content
    assert [r.body["input"]["duration"] for r in state.submissions()] == [4]   # the refused one never left


async def test_the_daily_budget_refuses_the_job_that_would_exceed_it_and_estimate_shows_what_is_left(
        runpod, tmp_path):
    base, state = runpod
    s = settings(tmp_path, base, KLING_MCP_DAILY_BUDGET_USD="1")
    async with Client(create_server(s)) as client:
        before = (await client.call_tool("estimate_cost", job_args(base, state, 5))).structured_content
        first = await client.call_tool("generate_video", {**job_args(base, state, 5), "wait_seconds": 20})
        after = (await client.call_tool("estimate_cost", job_args(base, state, 5))).structured_content
        second = await client.call_tool("generate_video", {**job_args(base, state, 5, "a tram at night"),
                                                           "wait_seconds": 0})
    assert before["budget"] == {"max_job_cost_usd": None, "daily_budget_usd": 1.0, "spent_today_usd": 0.0,
                                "remaining_today_usd": 1.0}
    assert first.structured_content["status"] == "succeeded", first.structured_content
    assert after["budget"]["spent_today_usd"] == pytest.approx(0.56)
    assert after["budget"]["remaining_today_usd"] == pytest.approx(0.44)
    assert second.is_error
    text = text_of(second)
    assert "[budget_exceeded]" in text and "$0.560" in text
    assert "$0.56 of the $1.00 KLING_MCP_DAILY_BUDGET_USD is already spent" in text
    assert len(state.submissions()) == 1


async def test_the_spend_ledger_is_persisted_across_a_restart(runpod, tmp_path):
    base, state = runpod
    s = settings(tmp_path, base, KLING_MCP_DAILY_BUDGET_USD="1")
    async with Client(create_server(s)) as client:
        done = await client.call_tool("generate_video", {**job_args(base, state, 5), "wait_seconds": 20})
    assert done.structured_content["status"] == "succeeded"
    assert ledger(tmp_path) == pytest.approx(0.56)
    async with Client(create_server(s)) as client:          # a new server process on the same data dir
        estimate = (await client.call_tool("estimate_cost", job_args(base, state, 5))).structured_content
        refused = await client.call_tool("generate_video", {**job_args(base, state, 5, "another tram"),
                                                            "wait_seconds": 0})
    assert estimate["budget"]["spent_today_usd"] == pytest.approx(0.56)
    assert refused.is_error and "[budget_exceeded]" in text_of(refused)


async def test_the_ledger_records_what_the_provider_billed_not_the_quote(tmp_path):
    state = AimlState(api_key=AIML_KEY, credits_per_second=200_000)        # bills $0.10/s; the quote is $0.112/s
    with serve(aimlapi_app(state)) as base:
        s = Settings.from_env({"AIML_API_KEY": AIML_KEY, "KLING_MCP_AIMLAPI_BASE_URL": base,
                               "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_DAILY_BUDGET_USD": "5",
                               "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})
        frame = f"{base}/files/{state.files.add(png_bytes(96, 64), suffix='.png', content_type='image/png')}"
        async with Client(create_server(s)) as client:
            view = (await client.call_tool("generate_video", {"prompt": "fog lifts", "first_frame": frame,
                                                              "duration": 5, "wait_seconds": 20})).structured_content
    assert view["status"] == "succeeded" and view["estimated_cost_usd"] == pytest.approx(0.56)
    assert view["cost_usd"] == pytest.approx(0.5)
    assert ledger(tmp_path) == pytest.approx(0.5)


async def test_refused_submits_and_repeated_idempotent_calls_cost_nothing(runpod, tmp_path):
    base, state = runpod
    s = settings(tmp_path, base, KLING_MCP_DAILY_BUDGET_USD="1")
    args = {**job_args(base, state, 5), "idempotency_key": "shot-1", "wait_seconds": 20}
    state.fail_next_submits(1, 400)
    async with Client(create_server(s)) as client:
        rejected = await client.call_tool("generate_video", args)
        assert rejected.is_error and ledger(tmp_path) == 0.0
        first = await client.call_tool("generate_video", args)
        again = await client.call_tool("generate_video", args)
    assert first.structured_content["job_id"] == again.structured_content["job_id"]
    assert ledger(tmp_path) == pytest.approx(0.56)


async def test_concurrent_calls_cannot_overrun_the_daily_budget(runpod, tmp_path):
    base, state = runpod
    s = settings(tmp_path, base, KLING_MCP_DAILY_BUDGET_USD="1")         # room for two $0.448 jobs, not three
    results: list[Any] = []
    async with Client(create_server(s)) as client:
        async def one(n: int) -> None:
            args = {**job_args(base, state, 4, f"tram number {n}"), "wait_seconds": 0}
            results.append(await client.call_tool("generate_video", args))

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(one, n)
    accepted = [r for r in results if not r.is_error]
    assert len(accepted) == 2, [text_of(r) for r in results]
    assert all("[budget_exceeded]" in text_of(r) for r in results if r.is_error)
    assert len(state.submissions()) == 2
    assert ledger(tmp_path) == pytest.approx(2 * 4 * PER_SECOND)


async def test_failover_never_goes_to_a_provider_over_the_per_job_limit(runpod, tmp_path):
    base, state = runpod
    with socket.socket() as sock:                           # runware (cheapest) refuses connections
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s = settings(tmp_path, base, RUNWARE_API_KEY="rw-budget-key", KLING_MCP_RUNWARE_BASE_URL=closed,
                 KLING_MCP_MAX_JOB_COST_USD="0.5")
    args = {**job_args(base, state, 5), "provider": "auto"}
    async with Client(create_server(s)) as client:
        estimate = (await client.call_tool("estimate_cost", args)).structured_content
        result = await client.call_tool("generate_video", {**args, "wait_seconds": 0})
    quotes = {q["provider"]: q["cost_usd"] for q in estimate["quotes"] if q["supported"]}
    assert estimate["recommended"] == "runware" and quotes["runware"] <= 0.5 < quotes["runpod"]
    assert result.is_error, result.structured_content
    assert re.search(r"\[provider_unavailable\].*runware", text_of(result))
    assert state.submissions() == [] and ledger(tmp_path) == 0.0

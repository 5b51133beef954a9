"""fal and Replicate among the other providers: ``estimate_cost`` quotes them, ``provider="auto"`` picks
and fails over between them, the budget guard stops them before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.fal import API_KEY as FAL_KEY
from tests.emulators.fal import FalState
from tests.emulators.fal import create_app as fal_app
from tests.emulators.replicate import API_KEY as REPLICATE_TOKEN
from tests.emulators.replicate import ReplicateState
from tests.emulators.replicate import create_app as replicate_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def emus() -> Iterator[tuple[str, FalState, str, ReplicateState]]:
    fal, replicate = FalState(), ReplicateState()
    with serve(fal_app(fal)) as fal_base, serve(replicate_app(replicate)) as replicate_base:
        yield fal_base, fal, replicate_base, replicate


def settings(emus: Any, tmp_path: Path, **extra: str) -> Settings:
    fal_base, _, replicate_base, _ = emus
    return Settings.from_env({
        "FAL_KEY": FAL_KEY, "KLING_MCP_FAL_BASE_URL": fal_base, "KLING_MCP_FAL_STORAGE_URL": fal_base,
        "REPLICATE_API_TOKEN": REPLICATE_TOKEN, "KLING_MCP_REPLICATE_BASE_URL": f"{replicate_base}/v1",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **extra})


def frame(emus: Any) -> str:
    fal_base, fal, _, _ = emus
    return f"{fal_base}/files/{fal.files.add(png_bytes(), suffix='.png', content_type='image/png')}"


async def test_estimate_cost_quotes_both_with_their_basis(emus, tmp_path):
    async with Client(create_server(settings(emus, tmp_path))) as client:
        image = (await client.call_tool("estimate_cost", {"prompt": "p", "first_frame": frame(emus),
                                                          "duration": 10, "tier": "pro"})).structured_content
        text = (await client.call_tool("estimate_cost", {"prompt": "p", "duration": 5})).structured_content
    quotes = {q["provider"]: q for q in image["quotes"]}
    assert quotes["fal"]["cost_usd"] == pytest.approx(1.12) and quotes["fal"]["basis"] == "published"
    assert quotes["fal"]["model"] == "fal-ai/kling-video/o1/image-to-video" and quotes["fal"]["configured"]
    assert quotes["replicate"]["cost_usd"] == pytest.approx(1.12) and quotes["replicate"]["basis"] == "inferred"
    assert image["recommended"] in ("fal", "replicate")
    quotes = {q["provider"]: q for q in text["quotes"]}
    assert not quotes["fal"]["supported"] and "text-to-video" in " ".join(quotes["fal"]["problems"])
    assert quotes["replicate"]["supported"] and quotes["replicate"]["cost_usd"] == pytest.approx(0.42)
    assert text["recommended"] == "replicate"                 # the only configured one with text-to-video


async def test_auto_fails_over_from_fal_to_replicate_when_fal_refuses_the_submit(emus, tmp_path):
    _, fal, _, replicate = emus
    fal.fail_next(503, on="submit")
    async with Client(create_server(settings(emus, tmp_path))) as client:
        result = await client.call_tool("generate_video", {"prompt": "a red kite", "first_frame": frame(emus),
                                                           "wait_seconds": 20})
    view = result.structured_content
    assert not result.is_error and view["status"] == "succeeded", result.content
    assert view["provider"] == "replicate" and "failed over to replicate" in (view.get("note") or "")
    assert fal.jobs == {} and len(replicate.predictions) == 1


async def test_the_budget_guard_stops_them_before_anything_is_sent(emus, tmp_path):
    _, fal, _, replicate = emus
    async with Client(create_server(settings(emus, tmp_path, KLING_MCP_MAX_JOB_COST_USD="0.5"))) as client:
        for provider in ("fal", "replicate"):
            result = await client.call_tool("generate_video", {"prompt": "p", "first_frame": frame(emus),
                                                               "duration": 10, "provider": provider})
            assert result.is_error and "budget_exceeded" in " ".join(getattr(c, "text", "") for c in result.content)
    assert fal.requests == [] and replicate.requests == []

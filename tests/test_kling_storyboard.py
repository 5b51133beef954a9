"""Kling across the server's features, through a real MCP client session against the Kling emulator:
a chained storyboard (shot 2 starts from shot 1's last frame, sent to Kling as bare Base64), a retake,
and the cost confirmation (a quote above the threshold is not sent until confirmed)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from starlette.applications import Starlette

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._server import serve
from tests.emulators.kling import KlingState, create_app
from tests.test_kling_adapter import AK, SK

pytestmark = pytest.mark.anyio

USD_PER_UNIT = 0.14
SHOTS = [
    {"prompt": "A paper lantern drifts over a quiet harbour at dusk", "duration": 5},
    {"prompt": "The lantern rises above the masts as the lights come on", "duration": 5},
]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Starlette]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(server: tuple[str, Starlette]) -> tuple[str, KlingState]:
    base, app = server
    app.state.emulator = KlingState(access_keys={AK: SK})
    return base, app.state.emulator


def client_for(base: str, tmp_path: Path, **env: str) -> Client:
    return Client(create_server(Settings.from_env({
        "KLING_ACCESS_KEY": AK, "KLING_SECRET_KEY": SK, "KLING_MCP_KLING_BASE_URL": base,
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **env})))


async def finished(client: Client, view: dict[str, Any]) -> dict[str, Any]:
    for _ in range(20):
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        result = await client.call_tool("check_job", {"job_id": view["job_id"], "wait_seconds": 20})
        assert not result.is_error, result.content[0].text
        view = result.structured_content
    raise AssertionError(f"job {view['job_id']} did not finish")


async def test_a_chained_board_sends_shot_1s_last_frame_as_base64_and_a_retake_remakes_it(emu, tmp_path):
    base, state = emu
    async with client_for(base, tmp_path) as client:
        result = await client.call_tool("generate_storyboard", {
            "shots": SHOTS, "provider": "kling", "tier": "standard", "aspect_ratio": "16:9", "wait_seconds": 45})
        assert not result.is_error, result.content[0].text
        board = await finished(client, result.structured_content)
        assert board["status"] == "succeeded", board
        shot_ids = [s["job_id"] for s in board["shots"]]
        last = await client.read_resource(f"kling://jobs/{shot_ids[0]}/videos/0/last-frame")
        last_png = base64.b64decode(last.contents[0].blob)

        first, second = (r.json for r in state.of("submit"))
        assert [first["external_task_id"], second["external_task_id"]] == shot_ids
        assert "image_list" not in first and first["aspect_ratio"] == "16:9"
        assert second["image_list"] == [{"image_url": base64.b64encode(last_png).decode(), "type": "first_frame"}]
        assert "aspect_ratio" not in second                       # image-to-video follows the frame
        assert board["cost_usd"] == pytest.approx(2 * 0.6 * 5 * USD_PER_UNIT)
        assert board["videos"][0]["duration_s"] == pytest.approx(10.0, abs=0.2)

        retake = await client.call_tool("retake_shot", {"job_id": board["job_id"], "shot": 2,
                                                        "prompt": "The lantern rises as the harbour lights up",
                                                        "wait_seconds": 45})
        assert not retake.is_error, retake.content[0].text
        remade = await finished(client, retake.structured_content)
    assert remade["status"] == "succeeded", remade
    third = state.of("submit")[2].json
    assert third["image_list"] == second["image_list"] and third["external_task_id"] not in shot_ids
    assert state.count("submit") == 3


async def test_a_quote_above_the_threshold_is_sent_only_once_confirmed(emu, tmp_path):
    base, state = emu
    args = {"prompt": SHOTS[0]["prompt"], "provider": "kling", "tier": "pro", "duration": 10, "wait_seconds": 30}
    async with client_for(base, tmp_path, KLING_MCP_CONFIRM_ABOVE_USD="1.00") as client:
        asked = await client.call_tool("generate_video", args)
        assert asked.is_error and "[confirmation_required]" in asked.content[0].text
        assert "1.12" in asked.content[0].text and state.requests == []
        confirmed = await client.call_tool("generate_video", {**args, "confirm_cost_usd": 1.12})
    assert not confirmed.is_error and confirmed.structured_content["status"] == "succeeded"
    assert state.count("submit") == 1

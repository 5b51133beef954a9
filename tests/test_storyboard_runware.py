"""Storyboards against the Runware emulator through a real MCP client session: what reaches the wire
(shot 2's first frame is shot 1's last frame, uploaded), what is billed, and what is never sent."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._server import serve
from tests.emulators.runware import RunwareState, create_app

pytestmark = pytest.mark.anyio

KEY = "rw-test-key-board-8675309"
SHOTS = [
    {"prompt": "A paper lantern drifts over a quiet harbour at dusk", "duration": 5},
    {"prompt": "The lantern rises above the masts as the lights come on", "duration": 5},
]


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, Any]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(_server) -> tuple[str, RunwareState]:
    base, app = _server
    app.state.emulator = RunwareState(api_keys={KEY})
    return base, app.state.emulator


def _client(base: str, tmp_path: Path, era: str = "auto", **env: str) -> Client:
    settings = Settings.from_env({
        "RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"),
        "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **env})
    return Client(create_server(settings), mode=era)


async def _finished(client: Client, view: dict[str, Any]) -> dict[str, Any]:
    for _ in range(20):
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        result = await client.call_tool("check_job", {"job_id": view["job_id"], "wait_seconds": 20})
        assert not result.is_error, result.content[0].text
        view = result.structured_content
    raise AssertionError(f"storyboard {view['job_id']} did not finish")


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_a_chained_board_sends_shot_1s_last_frame_and_costs_what_was_billed(emu, tmp_path, era):
    base, state = emu
    async with _client(base, tmp_path, era) as client:
        result = await client.call_tool("generate_storyboard", {
            "shots": SHOTS, "provider": "runware", "tier": "standard", "aspect_ratio": "16:9", "wait_seconds": 45})
        assert not result.is_error, result.content[0].text
        board = await _finished(client, result.structured_content)
        assert board["status"] == "succeeded", board
        shot_ids = [s["job_id"] for s in board["shots"]]
        last = await client.read_resource(f"kling://jobs/{shot_ids[0]}/videos/0/last-frame")
        last_png = base64.b64decode(last.contents[0].blob)

    first_task, second_task = state.sent("videoInference")
    assert first_task["taskUUID"] == shot_ids[0] and second_task["taskUUID"] == shot_ids[1]
    assert "frameImages" not in first_task.get("inputs", {})
    (frame,) = second_task["inputs"]["frameImages"]
    assert frame["frame"] == "first"
    upload = state.uploads[frame["image"]]
    assert state.files.files[upload.name].data == last_png       # exactly shot 1's last frame
    billed = sum(state.billed(job_id) for job_id in shot_ids)
    assert billed > 0
    assert board["cost_usd"] == pytest.approx(billed, abs=1e-9)
    assert board["estimated_cost_usd"] == pytest.approx(billed, abs=1e-9)
    assert [s["cost_usd"] for s in board["shots"]] == [pytest.approx(state.billed(i)) for i in shot_ids]
    assert board["videos"][0]["duration_s"] == pytest.approx(10.0, abs=0.2)


async def test_the_budget_guard_applies_to_the_whole_board(emu, tmp_path):
    base, state = emu
    # One 5 s standard shot costs $0.42 at Runware; two exceed a $0.60 per-request cap.
    async with _client(base, tmp_path, KLING_MCP_MAX_JOB_COST_USD="0.60") as client:
        refused = await client.call_tool("generate_storyboard", {
            "shots": SHOTS, "provider": "runware", "tier": "standard"})
        single = await client.call_tool("generate_storyboard", {
            "shots": SHOTS[:1], "provider": "runware", "tier": "standard", "wait_seconds": 30})
    assert refused.is_error and "budget_exceeded" in refused.content[0].text
    assert "2 shot(s)" in refused.content[0].text
    assert not single.is_error, single.content[0].text
    assert len(state.sent("videoInference")) == 1  # the refused board sent nothing


async def test_a_shot_the_provider_refuses_is_reported_before_anything_is_sent(emu, tmp_path, image_file):
    base, state = emu
    async with _client(base, tmp_path) as client:
        result = await client.call_tool("generate_storyboard", {
            "shots": [SHOTS[0], {**SHOTS[1], "duration": 7}], "provider": "runware"})
    assert result.is_error
    text = result.content[0].text
    assert "shot 2" in text and "duration 7" in text and "5 or 10" in text
    assert state.requests == []


async def test_a_failed_shot_stops_the_chain_and_a_retake_completes_the_board(emu, tmp_path):
    base, state = emu
    state.task_error_code = "contentPolicyViolation"
    async with _client(base, tmp_path) as client:
        board = await _finished(client, (await client.call_tool("generate_storyboard", {
            "shots": SHOTS, "provider": "runware", "tier": "standard", "wait_seconds": 45})).structured_content)
        assert board["status"] == "failed"
        assert board["error"]["message"].startswith("shot 1 failed") and "contentPolicyViolation" in board[
            "error"]["message"]
        assert len(state.sent("videoInference")) == 1            # shot 2 was never submitted
        state.task_error_code = None
        retake = await client.call_tool("retake_shot", {"job_id": board["job_id"], "shot": 1,
                                                        "prompt": "A paper lantern over a harbour at dusk",
                                                        "wait_seconds": 45})
        assert not retake.is_error, retake.content[0].text
        retake_view = await _finished(client, retake.structured_content)
    assert retake_view["status"] == "succeeded", retake_view
    assert len(state.sent("videoInference")) == 3
    new_ids = [s["job_id"] for s in retake_view["shots"]]
    assert retake_view["cost_usd"] == pytest.approx(sum(state.billed(i) for i in new_ids), abs=1e-9)


async def test_assemble_video_fetches_url_inputs(emu, tmp_path, video_file):
    from tests.emulators._media import mp4_bytes

    base, state = emu
    hosted = state.files.add(mp4_bytes(2.0, 320, 180, audio_hz=440.0))
    async with _client(base, tmp_path) as client:
        result = await client.call_tool("assemble_video", {
            "videos": [f"{base}/files/{hosted}", str(video_file)], "wait_seconds": 45})
        assert not result.is_error, result.content[0].text
        view = await _finished(client, result.structured_content)
    assert (view["status"], view["operation"], view["provider"]) == ("succeeded", "assemble", "local")
    assert view["videos"][0]["duration_s"] == pytest.approx(6.0, abs=0.15)
    assert state.files.downloads[hosted] >= 1 and state.requests == []  # fetched, and no provider call


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_the_confirmation_asks_about_the_whole_board(emu, tmp_path, era):
    from mcp.types import ElicitRequestParams, ElicitResult

    base, state = emu
    questions: list[ElicitRequestParams] = []

    async def user(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params)
        return ElicitResult(action="decline" if len(questions) == 1 else "accept", content={"submit": True})

    board = {"shots": SHOTS, "provider": "runware", "tier": "standard", "wait_seconds": 0}
    async with Client(create_server(Settings.from_env({
            "RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
            "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_CONFIRM_ABOVE_USD": "0.50",
            "KLING_MCP_POLL_INTERVAL_S": "0.05"})), mode=era, elicitation_callback=user) as client:
        declined = await client.call_tool("generate_storyboard", board)
        assert state.requests == []                                # declining spends nothing
        accepted = await client.call_tool("generate_storyboard", {**board, "wait_seconds": 45})
        assert not accepted.is_error, accepted.content[0].text
        view = await _finished(client, accepted.structured_content)
    assert declined.is_error and "[confirmation_declined]" in declined.content[0].text
    assert len(questions) == 2
    message = questions[0].message
    total = view["estimated_cost_usd"]
    assert total > 0.5 and f"${total:.2f}" in message and "2 shot(s)" in message and "runware" in message
    assert view["status"] == "succeeded" and len(state.sent("videoInference")) == 2


async def test_without_elicitation_confirm_cost_usd_must_cover_the_board(emu, tmp_path):
    base, state = emu
    board = {"shots": SHOTS, "provider": "runware", "tier": "standard", "wait_seconds": 0}
    async with _client(base, tmp_path, KLING_MCP_CONFIRM_ABOVE_USD="0.50") as client:
        asked = await client.call_tool("generate_storyboard", board)
        low = await client.call_tool("generate_storyboard", {**board, "confirm_cost_usd": 0.5})
        assert state.requests == []
        text = asked.content[0].text
        quote = re.search(r"confirm_cost_usd=(\d+\.\d+)", text).group(1)  # the quote the user is shown
        ok = await client.call_tool("generate_storyboard", {**board, "confirm_cost_usd": float(quote),
                                                             "wait_seconds": 45})
        assert not ok.is_error, ok.content[0].text
        view = await _finished(client, ok.structured_content)
    assert asked.is_error and "[confirmation_required]" in text and "storyboard of 2 shot(s)" in text
    assert low.is_error and "below the quote" in low.content[0].text
    assert view["status"] == "succeeded" and view["estimated_cost_usd"] == pytest.approx(float(quote))


def test_the_storyboard_command_needs_the_confirmation_flag_above_the_threshold(emu, tmp_path, monkeypatch, capsys):
    import json

    from kling_mcp.cli import main

    base, state = emu
    for name, value in {"RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
                        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_CONFIRM_ABOVE_USD": "0.5",
                        "KLING_MCP_POLL_INTERVAL_S": "0.05"}.items():
        monkeypatch.setenv(name, value)
    board = tmp_path / "board.json"
    board.write_text(json.dumps({"shots": SHOTS, "provider": "runware", "tier": "standard"}))
    assert main(["storyboard", str(board)]) == 1
    err = capsys.readouterr().err
    assert "[confirmation_required]" in err and "--confirm-cost-usd=" in err and state.requests == []
    quote = re.search(r"--confirm-cost-usd=(\d+\.\d+)", err).group(1)
    assert main(["storyboard", str(board), "--confirm-cost-usd", quote]) == 0, capsys.readouterr().err
    assert len(state.sent("videoInference")) == 2

"""Confirmation of a storyboard's total and of a retake (``KLING_MCP_CONFIRM_ABOVE_USD``), through the SDK's
in-memory client in both protocol eras against the Runware emulator, counting what reached the provider."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from tests.test_confirmation import ERAS, User, _server, emu, server, text_of  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio

SHOTS = [{"prompt": "A paper lantern drifts over a quiet harbour at dusk", "duration": 5},
         {"prompt": "The lantern rises above the masts as the lights come on", "duration": 5}]
BOARD = {"shots": SHOTS, "provider": "runware", "tier": "standard", "aspect_ratio": "16:9", "wait_seconds": 0}
TOTAL = "0.84"  # two 5 s standard shots at Runware's published $0.084/s




async def finished(client: Client, view: dict[str, Any]) -> dict[str, Any]:
    for _ in range(20):
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        result = await client.call_tool("check_job", {"job_id": view["job_id"], "wait_seconds": 20})
        view = result.structured_content
    raise AssertionError(f"storyboard {view['job_id']} did not finish")


@pytest.mark.parametrize("mode", ERAS)
async def test_the_user_is_asked_once_for_the_boards_total_and_declining_sends_no_shot(emu, tmp_path, mode):
    base, state = emu
    no, yes = User("decline"), User("accept")
    async with Client(server(base, tmp_path), mode=mode, elicitation_callback=no) as client:
        declined = await client.call_tool("generate_storyboard", BOARD)
    assert declined.is_error and "[confirmation_declined]" in text_of(declined)
    assert state.sent("videoInference") == []
    async with Client(server(base, tmp_path), mode=mode, elicitation_callback=yes) as client:
        accepted = await client.call_tool("generate_storyboard", BOARD)
        assert not accepted.is_error, text_of(accepted)
        board = await finished(client, accepted.structured_content)
    assert board["status"] == "succeeded", board
    assert len(state.sent("videoInference")) == 2  # one submission per shot, asked once for both
    for user in (no, yes):
        (question,) = user.questions
        assert "storyboard of 2 shot(s)" in question.message and f"${TOTAL}" in question.message
        assert "runware" in question.message and "published" in question.message


@pytest.mark.parametrize("mode", ERAS)
async def test_without_elicitation_a_board_needs_confirm_cost_usd_for_its_total_and_a_retake_for_its_own(
        emu, tmp_path, mode):
    base, state = emu
    async with Client(server(base, tmp_path), mode=mode) as client:
        refused = await client.call_tool("generate_storyboard", BOARD)
        too_low = await client.call_tool("generate_storyboard", {**BOARD, "confirm_cost_usd": 0.83})
        assert state.sent("videoInference") == []
        started = await client.call_tool("generate_storyboard", {**BOARD, "confirm_cost_usd": float(TOTAL)})
        board = await finished(client, started.structured_content)
        assert board["status"] == "succeeded", board
        retake = {"job_id": board["job_id"], "shot": 2, "wait_seconds": 0}
        retake_refused = await client.call_tool("retake_shot", {**retake, "duration": 10})
        retake_done = await client.call_tool("retake_shot", {**retake, "duration": 10, "confirm_cost_usd": 0.84})
        assert not retake_done.is_error, text_of(retake_done)
        assert (await finished(client, retake_done.structured_content))["status"] == "succeeded"
    assert refused.is_error and f"confirm_cost_usd={TOTAL}" in text_of(refused)
    assert too_low.is_error and "[confirmation_required]" in text_of(too_low)
    assert retake_refused.is_error and "retake of 1 shot(s)" in text_of(retake_refused) and "$0.84" in text_of(
        retake_refused)
    assert len(state.sent("videoInference")) == 3  # two shots, then one retake


async def test_a_cheap_retake_below_the_threshold_is_not_asked(emu, tmp_path):
    base, state = emu
    user = User("accept")
    async with Client(server(base, tmp_path), elicitation_callback=user) as client:
        started = await client.call_tool("generate_storyboard", BOARD)
        board = await finished(client, started.structured_content)
        retaken = await client.call_tool("retake_shot", {"job_id": board["job_id"], "shot": 1, "wait_seconds": 0})
        assert not retaken.is_error, text_of(retaken)
        assert (await finished(client, retaken.structured_content))["status"] == "succeeded"
    assert len(user.questions) == 1  # the board ($0.84) was asked; its $0.42 retake was not
    assert len(state.sent("videoInference")) == 3

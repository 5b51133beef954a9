"""Storyboards on Replicate and fal through a real MCP client session: a chained board whose later
shots start from the previous shot's last frame, uploaded through each provider's own file route."""

from __future__ import annotations

import base64
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

SHOTS = [{"prompt": "A paper lantern drifts over a harbour at dusk", "duration": 5},
         {"prompt": "The lantern rises above the masts", "duration": 5}]


@pytest.fixture
def emus() -> Iterator[tuple[str, FalState, str, ReplicateState]]:
    fal, replicate = FalState(), ReplicateState()
    with serve(fal_app(fal)) as fal_base, serve(replicate_app(replicate)) as replicate_base:
        yield fal_base, fal, replicate_base, replicate


def client(emus: Any, tmp_path: Path) -> Client:
    fal_base, _, replicate_base, _ = emus
    return Client(create_server(Settings.from_env({
        "FAL_KEY": FAL_KEY, "KLING_MCP_FAL_BASE_URL": fal_base, "KLING_MCP_FAL_STORAGE_URL": fal_base,
        "REPLICATE_API_TOKEN": REPLICATE_TOKEN, "KLING_MCP_REPLICATE_BASE_URL": f"{replicate_base}/v1",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})))


async def finished(c: Client, view: dict[str, Any]) -> dict[str, Any]:
    for _ in range(20):
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        result = await c.call_tool("check_job", {"job_id": view["job_id"], "wait_seconds": 20})
        assert not result.is_error, result.content[0].text
        view = result.structured_content
    raise AssertionError(f"storyboard {view['job_id']} did not finish")


async def test_a_chained_board_on_replicate_uploads_shot_1s_last_frame(emus, tmp_path):
    _, _, _, replicate = emus
    async with client(emus, tmp_path) as c:
        result = await c.call_tool("generate_storyboard", {"shots": SHOTS, "provider": "replicate",
                                                           "tier": "standard", "wait_seconds": 45})
        assert not result.is_error, result.content[0].text
        board = await finished(c, result.structured_content)
        assert board["status"] == "succeeded", board
        first = board["shots"][0]["job_id"]
        last_png = base64.b64decode((await c.read_resource(f"kling://jobs/{first}/videos/0/last-frame")).contents[0].blob)
    shot_1, shot_2 = replicate.inputs()
    assert "start_image" not in shot_1 and shot_1["mode"] == "std"
    file_id = shot_2["start_image"].rsplit("/", 1)[-1]
    assert replicate.files.files[replicate.uploads[file_id]].data == last_png      # exactly shot 1's last frame
    assert [s["status"] for s in board["shots"]] == ["succeeded", "succeeded"] and len(replicate.predictions) == 2


def frame_url(emus: Any) -> str:
    fal_base, fal, _, _ = emus
    return f"{fal_base}/files/{fal.files.add(png_bytes(640, 360), suffix='.png', content_type='image/png')}"


async def test_a_chained_board_on_fal_uploads_shot_1s_last_frame_to_fals_storage(emus, tmp_path):
    _, fal, _, _ = emus
    fal.video_size = (640, 360)                   # fal's start image must be >= 300 px on each side
    shots = [{**SHOTS[0], "first_frame": frame_url(emus)}, SHOTS[1]]    # fal has no text-to-video
    async with client(emus, tmp_path) as c:
        result = await c.call_tool("generate_storyboard", {"shots": shots, "provider": "fal", "wait_seconds": 45})
        assert not result.is_error, result.content[0].text
        board = await finished(c, result.structured_content)
        assert board["status"] == "succeeded", board
        first = board["shots"][0]["job_id"]
        last_png = base64.b64decode((await c.read_resource(f"kling://jobs/{first}/videos/0/last-frame")).contents[0].blob)
    (_, shot_1), (_, shot_2) = fal.submits()
    assert shot_1["start_image_url"] == shots[0]["first_frame"]
    assert fal.files.files[shot_2["start_image_url"].rsplit("/", 1)[-1]].data == last_png


async def test_a_chained_frame_below_fals_limit_fails_that_shot_before_anything_is_spent(emus, tmp_path):
    _, fal, _, _ = emus                           # results are 320x180: too small to start a fal shot from
    shots = [{**SHOTS[0], "first_frame": frame_url(emus)}, SHOTS[1]]
    async with client(emus, tmp_path) as c:
        result = await c.call_tool("generate_storyboard", {"shots": shots, "provider": "fal", "wait_seconds": 45})
        board = await finished(c, result.structured_content)
    assert board["status"] == "failed" and [s["status"] for s in board["shots"]] == ["succeeded", "failed"]
    assert "first_frame is 320x180 px; fal needs images at least 300 px" in board["error"]["message"]
    assert len(fal.jobs) == 1                      # shot 2 never reached fal

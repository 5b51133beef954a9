"""A chained storyboard with assembly on the PostgreSQL store (Runware emulator): the board, its shots
and the assembled video are ordinary rows, and another server on the same database and data dir answers
for all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._server import serve
from tests.emulators.runware import RunwareState, create_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "rw-pg-board-key"
SHOTS = [
    {"prompt": "A paper lantern drifts over a quiet harbour at dusk", "duration": 5},
    {"prompt": "The lantern rises above the masts as the lights come on", "duration": 5},
]


async def test_a_chained_board_with_assembly_runs_on_postgres_and_another_server_serves_it(pg_url, tmp_path) -> None:
    state = RunwareState(api_keys={KEY})
    with serve(create_app(state)) as base:
        env = {"RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
               "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_STORE_URL": pg_url,
               "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"}
        async with Client(create_server(Settings.from_env(env))) as a:
            made = await a.call_tool("generate_storyboard", {
                "shots": SHOTS, "provider": "runware", "tier": "standard", "aspect_ratio": "16:9", "wait_seconds": 45})
            assert not made.is_error, made.content[0].text  # type: ignore[union-attr]
            board = made.structured_content
            for _ in range(20):
                if board["status"] in ("succeeded", "failed", "cancelled"):
                    break
                board = (await a.call_tool("check_job", {"job_id": board["job_id"], "wait_seconds": 20})
                         ).structured_content
            assert board["status"] == "succeeded", board
        async with Client(create_server(Settings.from_env(env))) as b:
            seen = (await b.call_tool("check_job", {"job_id": board["job_id"]})).structured_content
            assert [s["status"] for s in seen["shots"]] == ["succeeded", "succeeded"]
            assembled = await b.read_resource(f"kling://jobs/{board['job_id']}/videos/0")
            assert len(getattr(assembled.contents[0], "blob", "")) > 100
            listed = (await b.call_tool("list_jobs", {"limit": 10})).structured_content
    assert {board["job_id"], *(s["job_id"] for s in seen["shots"])} <= {j["job_id"] for j in listed["jobs"]}
    assert len(state.sent("videoInference")) == 2
    assert Path(seen["videos"][0]["path"]).is_file()

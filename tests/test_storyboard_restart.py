"""A storyboard survives SIGKILL: the server (a real stdio subprocess) is killed while shot 2 of a chained
board renders; a new server on the same data dir resumes the board, finishes it without making any
shot twice, and assembles it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import av
import pytest
from mcp import Client, StdioServerParameters

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHOTS = [{"prompt": f"a slow sunrise over dunes, part {n}", "duration": 10} for n in (1, 2, 3)]


def _env(data_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(KLING_MCP_DATA_DIR=str(data_dir), KLING_MCP_POLL_INTERVAL_S="0.1", KLING_MCP_POLL_MAX_INTERVAL_S="0.3")
    return env


class _Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.next_id = 1

    def request(self, method: str, params: dict, timeout: float = 60.0) -> dict:
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.notify(method, params, request_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("the server exited")
            message = json.loads(line)
            if message.get("id") == request_id:
                return message["result"]
        raise AssertionError(f"no answer to {method}")

    def notify(self, method: str, params: dict | None = None, request_id: int | None = None) -> None:
        message: dict = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if request_id is not None:
            message["id"] = request_id
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def tool(self, name: str, arguments: dict) -> dict:
        result = self.request("tools/call", {"name": name, "arguments": arguments})
        assert not result.get("isError"), result
        return result["structuredContent"]


async def test_a_board_killed_mid_shot_resumes_after_restart_without_making_a_shot_twice(tmp_path):
    env = _env(tmp_path / "data")
    server = _Server(env)
    try:
        server.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "0"}})
        server.notify("notifications/initialized")
        board = server.tool("generate_storyboard", {"shots": SHOTS, "tier": "pro", "wait_seconds": 0})
        for _ in range(100):  # until shot 1 has finished and shot 2 is under way
            board = server.tool("check_job", {"job_id": board["job_id"], "wait_seconds": 0.3})
            if board["shots"][1]["job_id"] and board["shots"][0]["status"] == "succeeded":
                break
        else:
            raise AssertionError(f"shot 2 never started: {board}")
        assert board["status"] == "running" and board["shots"][2]["job_id"] is None
    finally:
        server.proc.kill()  # SIGKILL: no cleanup, no terminal record
        server.proc.wait(timeout=10)
    assert server.proc.returncode == -9
    before = [s["job_id"] for s in board["shots"][:2]]

    params = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=env)
    async with Client(params, mode="legacy") as client:
        for _ in range(30):
            result = await client.call_tool("check_job", {"job_id": board["job_id"], "wait_seconds": 10})
            view = result.structured_content
            if view["status"] in ("succeeded", "failed", "cancelled"):
                break
        listed = (await client.call_tool("list_jobs", {"limit": 100})).structured_content["jobs"]
    assert view["status"] == "succeeded", view
    assert [s["job_id"] for s in view["shots"][:2]] == before
    assert [s["takes"] for s in view["shots"]] == [1, 1, 1]
    shots = [j for j in listed if j["storyboard_id"] == board["job_id"]]
    assert sorted(j["shot"] for j in shots) == [1, 2, 3] and {j["status"] for j in shots} == {"succeeded"}
    with av.open(view["videos"][0]["path"]) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
    assert (stream.codec_context.width, stream.codec_context.height) == (960, 540)
    assert frames / float(stream.average_rate) == pytest.approx(30.0, abs=0.1)

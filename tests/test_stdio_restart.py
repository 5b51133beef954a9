"""The server as a real stdio subprocess: generate on ``local``, SIGKILL it mid-job, restart it on
the same data dir, and still get the video."""

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


def _env(data_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(KLING_MCP_DATA_DIR=str(data_dir), KLING_MCP_POLL_INTERVAL_S="0.1", KLING_MCP_POLL_MAX_INTERVAL_S="0.3")
    return env


def _rpc(proc: subprocess.Popen, message: dict) -> None:
    proc.stdin.write((json.dumps(message) + "\n").encode())
    proc.stdin.flush()


def _read_result(proc: subprocess.Popen, request_id: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        msg = json.loads(line)
        if msg.get("id") == request_id:
            return msg
    raise AssertionError("no answer in time")


async def test_kill_mid_job_then_restart_still_delivers_the_video(tmp_path):
    env = _env(tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _rpc(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        assert "result" in _read_result(proc, 1)
        _rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _rpc(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "generate_video", "arguments": {"prompt": "a slow sunrise over dunes", "duration": 10,
                                                   "tier": "pro", "num_videos": 2, "wait_seconds": 0}}})
        answer = _read_result(proc, 2)["result"]
        job = answer["structuredContent"]
        assert job["status"] in ("pending", "submitted", "running"), job
        time.sleep(0.5)                      # let the background render start
    finally:
        proc.kill()                          # SIGKILL: no cleanup, no terminal record
        proc.wait(timeout=10)
    assert proc.returncode == -9

    params = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=env)
    async with Client(params, mode="legacy") as client:
        status = None
        for _ in range(20):
            result = await client.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 10})
            status = result.structured_content["status"]
            if status in ("succeeded", "failed", "cancelled"):
                break
        assert status == "succeeded", result.structured_content
        videos = result.structured_content["videos"]
        assert len(videos) == 2
        for video in videos:
            with av.open(video["path"]) as container:
                stream = container.streams.video[0]
                frames = sum(1 for _ in container.decode(video=0))
                assert (stream.codec_context.width, stream.codec_context.height) == (960, 540)
                assert frames == 240 and float(stream.average_rate) == 24.0
        read = await client.read_resource(videos[1]["uri"])
        assert read.contents[0].mime_type == "video/mp4"
        assert not list((tmp_path / "data" / "videos").rglob("*.part"))

"""A real MCP client: the MCP Inspector CLI (@modelcontextprotocol/inspector 0.21.2, Node) drives
`python -m kling_mcp serve` over stdio: tools/list, generate_video on `local` then check_job until it
succeeds, and resources/read of the video.

Every Inspector call starts a fresh server process on the same data dir, so the round trip also
proves that a job started by one process is resumed and finished by the next.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_conformance import ROOT, node_tools, server_env  # noqa: F401 - node_tools is a fixture

TOOLS = {"generate_video", "edit_video", "check_job", "estimate_cost", "list_jobs", "cancel_job"}

pytestmark = pytest.mark.slow


def inspect(bin_dir: Path, data_dir: Path, *args: str) -> dict[str, Any]:
    """Run one Inspector CLI method against a fresh stdio server; returns its JSON output."""
    command = [str(bin_dir / "mcp-inspector"), "--cli", "-e", f"KLING_MCP_DATA_DIR={data_dir}",
               sys.executable, "-m", "kling_mcp", "serve", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=server_env(data_dir))
    assert done.returncode == 0, f"inspector {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_tools_list_has_six_tools_with_schemas(node_tools, tmp_path):  # noqa: F811
    listed = inspect(node_tools, tmp_path / "data", "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool["inputSchema"]["type"] == "object", name
        assert tool["outputSchema"]["type"] == "object", name
    assert "prompt" in tools["generate_video"]["inputSchema"]["required"]
    assert "job_id" in tools["generate_video"]["outputSchema"]["properties"]


def test_generate_check_and_read_the_video(node_tools, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    started = inspect(node_tools, data, "--method", "tools/call", "--tool-name", "generate_video",
                      "--tool-arg", "prompt=a paper boat crossing a moonlit lake", "provider=local", "duration=3",
                      "aspect_ratio=16:9", "wait_seconds=0")
    assert started["isError"] is False, started
    job = started["structuredContent"]
    assert job["provider"] == "local" and job["status"] in ("submitted", "running", "downloading", "succeeded")

    for _ in range(6):                         # each call waits up to 30 s in a new server process
        if job["status"] == "succeeded":
            break
        assert job["status"] not in ("failed", "cancelled"), job
        checked = inspect(node_tools, data, "--method", "tools/call", "--tool-name", "check_job",
                          "--tool-arg", f"job_id={job['job_id']}", "wait_seconds=30")
        assert checked["isError"] is False, checked
        job = checked["structuredContent"]
    assert job["status"] == "succeeded", job
    video = job["videos"][0]
    assert video["uri"] == f"kling://jobs/{job['job_id']}/videos/0"
    assert video["width"] == 640 and video["height"] == 360

    read = inspect(node_tools, data, "--method", "resources/read", "--uri", video["uri"])
    content = read["contents"][0]
    assert content["mimeType"] == "video/mp4"
    mp4 = base64.b64decode(content["blob"])
    assert mp4[4:8] == b"ftyp"
    assert len(mp4) == video["size_bytes"] == Path(video["path"]).stat().st_size


def test_unknown_video_is_a_clear_error(node_tools, tmp_path):  # noqa: F811
    command = [str(node_tools / "mcp-inspector"), "--cli", "-e", f"KLING_MCP_DATA_DIR={tmp_path}",
               sys.executable, "-m", "kling_mcp", "serve", "--method", "resources/read",
               "--uri", "kling://jobs/nope/videos/0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=server_env(tmp_path))
    assert done.returncode != 0
    assert "no video 0 for job nope" in done.stdout + done.stderr

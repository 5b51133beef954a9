"""Real MCP clients over stdio, and the examples.

The MCP Inspector CLI (@modelcontextprotocol/inspector 0.21.2, Node) drives `python -m kling_mcp serve`:
tools/list, generate_video on `local` then check_job until it succeeds, and resources/read of the video.
Every Inspector call starts a fresh server process on the same data dir, so the round trip also proves
that a job started by one process is resumed and finished by the next.

examples/storyboard_agent.py (the MCP Python client) makes a three-shot board with continuity; the client
configurations in examples/ are checked for what users copy from them; benchmarks/run.py gets a
--quick smoke run (its figures are not asserted: benchmarks are not tests).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kling_mcp.catalog import PROVIDERS
from tests.support import read_store
from tests.test_conformance import ROOT, node_tools, server_env  # noqa: F401 - node_tools is a fixture

TOOLS = {"generate_video", "edit_video", "check_job", "estimate_cost", "list_jobs", "cancel_job",
         "generate_storyboard", "retake_shot", "assemble_video"}

pytestmark = pytest.mark.slow


def inspect(bin_dir: Path, data_dir: Path, *args: str) -> dict[str, Any]:
    """Run one Inspector CLI method against a fresh stdio server; returns its JSON output."""
    command = [str(bin_dir / "mcp-inspector"), "--cli", "-e", f"KLING_MCP_DATA_DIR={data_dir}",
               sys.executable, "-m", "kling_mcp", "serve", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=server_env(data_dir))
    assert done.returncode == 0, f"inspector {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_tools_list_has_every_tool_with_schemas(node_tools, tmp_path):
    listed = inspect(node_tools, tmp_path / "data", "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool["inputSchema"]["type"] == "object", name
        assert tool["outputSchema"]["type"] == "object", name
    assert "prompt" in tools["generate_video"]["inputSchema"]["required"]
    assert "job_id" in tools["generate_video"]["outputSchema"]["properties"]


def test_generate_check_and_read_the_video(node_tools, tmp_path):
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


def test_unknown_video_is_a_clear_error(node_tools, tmp_path):
    command = [str(node_tools / "mcp-inspector"), "--cli", "-e", f"KLING_MCP_DATA_DIR={tmp_path}",
               sys.executable, "-m", "kling_mcp", "serve", "--method", "resources/read",
               "--uri", "kling://jobs/nope/videos/0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=server_env(tmp_path))
    assert done.returncode != 0
    assert "no video 0 for job nope" in done.stdout + done.stderr


# --- examples ---------------------------------------------------------------------------------------------

def test_storyboard_agent_makes_a_board_with_continuity_over_mcp_only(tmp_path):
    from kling_mcp.frames import frame_png

    data = tmp_path / "data"
    command = [sys.executable, str(ROOT / "examples" / "storyboard_agent.py"), "a paper boat's journey",
               "--duration", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=server_env(data))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split() for line in done.stdout.splitlines()]
    assert len(lines) == 4                      # the joined video, then the three shots
    job_ids = []
    for uri, path in lines:
        match = re.fullmatch(r"kling://jobs/([0-9a-f-]{36})/videos/0", uri)
        assert match, uri
        job_ids.append(match.group(1))
        assert Path(path).read_bytes()[4:8] == b"ftyp"
    assert "estimated total for 3 shots: $0.000" in done.stderr
    assert "joined video: 9.0 s" in done.stderr

    async def read(store):
        return [await store.get(j) for j in job_ids]

    board, *shots = read_store(data, read)
    assert board.kind == "storyboard" and [s.parent_id for s in shots] == [board.job_id] * 3
    assert [s.spec.operation for s in shots] == ["text", "image", "image"]
    for n in (1, 2):          # shot n+1 starts on the last frame of shot n
        frame = frame_png(Path(lines[n][1]), "last")
        assert shots[n].spec.first_frame.sha256 == hashlib.sha256(frame.read_bytes()).hexdigest()

    again = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=server_env(data))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == done.stdout          # the idempotency key: the same board, nothing paid twice


def test_client_configs_launch_the_server():
    desktop = json.loads((ROOT / "examples" / "claude_desktop_config.json").read_text())
    server = desktop["mcpServers"]["kling"]
    assert [server["command"], *server["args"]] == ["kling-mcp", "serve"]
    provider_vars = {e.env_key for e in PROVIDERS.values() if e.env_key}
    provider_vars |= {var for e in PROVIDERS.values() for group in e.credential_sets for var in group}
    known = provider_vars | {"KLING_MCP_MAX_JOB_COST_USD", "KLING_MCP_DAILY_BUDGET_USD"}
    assert {"FAL_KEY", "REPLICATE_API_TOKEN", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"} <= set(server["env"])
    assert set(server["env"]) <= known
    guide = (ROOT / "examples" / "claude_code.md").read_text()
    assert "kling -- kling-mcp serve" in guide
    assert "claude mcp add --transport http kling http://127.0.0.1:8000/mcp" in guide


def test_benchmark_script_quick_smoke_run(tmp_path):
    out = tmp_path / "latest.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("\n| ") >= 15 and "| section | measurement | median | p99 |" in done.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["machine"]["nproc"] >= 1
    sections = {r["section"].split(" (")[0] for r in report["results"]}
    assert sections == {"cold start", "tool latency", "check_job vs store size", "20 concurrent jobs",
                        "20 concurrent jobs, server on stdio", "download 20 MB", "assembly"}
    assert all(r["median"] and r["median"] > 0 for r in report["results"])

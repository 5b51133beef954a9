"""The newest real clients, beside the pinned ones: MCP Inspector 2.12 CLI, the conformance suite 0.1.16
and the official TypeScript SDK client 1.32 (which validates every structuredContent against the tool's
outputSchema), each on the Node 22 that scripts/install-node-tools.sh installs from npm into .tools/node22.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_conformance import ROOT, http_server, node_tools, server_env  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

NODE22 = ROOT / ".tools" / "node22"
TOOLS = {"generate_video", "edit_video", "check_job", "estimate_cost", "list_jobs", "cancel_job"}


@pytest.fixture(scope="session")
def node22(node_tools: Path) -> Path:
    """The Node 22 tree; returns its root. The TypeScript client script is copied in so it resolves the SDK."""
    node = NODE22 / "node_modules" / "node" / "bin" / "node"
    assert node.exists(), "scripts/install-node-tools.sh did not install Node 22 into .tools/node22"
    shutil.copy(ROOT / "tests" / "node" / "ts_client.mjs", NODE22 / "ts_client.mjs")
    return NODE22


def node22_env(data_dir: Path) -> dict[str, str]:
    env = server_env(data_dir)
    env["PATH"] = f"{NODE22 / 'node_modules' / 'node' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def ts_client(root: Path, data_dir: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run([str(root / "node_modules" / "node" / "bin" / "node"), str(root / "ts_client.mjs"), *args],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=node22_env(data_dir))
    assert done.returncode == 0, f"TypeScript client exited {done.returncode}: {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_clean_session(seen: dict[str, Any]) -> None:
    assert TOOLS <= set(seen["tools"]) and set(seen["withOutputSchema"]) == set(seen["tools"])
    assert seen["finalStatus"] == "succeeded", seen
    assert all(not call["isError"] for call in seen["calls"].values()), seen["calls"]
    assert seen["calls"]["estimate_cost"]["structured"]["recommended"] == "local"
    assert seen["video"]["mimeType"] == "video/mp4" and seen["video"]["bytes"] > 1000
    assert seen["unknownJob"]["isError"] and "[unknown_job]" in seen["unknownJob"]["text"]


def test_typescript_sdk_client_over_stdio(node22: Path, tmp_path: Path) -> None:
    assert_clean_session(ts_client(node22, tmp_path / "data", "stdio", sys.executable, str(tmp_path / "data")))


def test_typescript_sdk_client_over_streamable_http(node22: Path, http_server: str, tmp_path: Path) -> None:
    assert_clean_session(ts_client(node22, tmp_path / "data", "http", http_server))


def test_newest_inspector_cli(node22: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"

    def inspect(*args: str) -> dict[str, Any]:
        command = [str(node22 / "node_modules" / ".bin" / "mcp-inspector"), "--cli", "-e", f"KLING_MCP_DATA_DIR={data}",
                   sys.executable, "-m", "kling_mcp", "serve", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=node22_env(data))
        assert done.returncode == 0, f"inspector {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
        return json.loads(done.stdout)

    listed = inspect("--method", "tools/list")
    assert TOOLS <= {t["name"] for t in listed["tools"]}
    made = inspect("--method", "tools/call", "--tool-name", "generate_video", "--tool-arg", "prompt=a red kite",
                   "provider=local", "duration=3", "wait_seconds=45")
    assert made["isError"] is False and made["structuredContent"]["status"] == "succeeded", made
    prompt = inspect("--method", "prompts/get", "--prompt-name", "storyboard", "--prompt-args", "topic=a fox")
    assert "a fox" in json.dumps(prompt)


def test_newest_conformance_suite(node22: Path, http_server: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(node22 / "node_modules" / ".bin" / "conformance"), "server", "--url", http_server, "--expected-failures",
         str(ROOT / "tests" / "conformance-expected-failures.yml"), "-o", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=node22_env(tmp_path / "data"))
    summary = done.stdout[done.stdout.rfind("=== SUMMARY ==="):]
    assert done.returncode == 0, f"conformance 0.1.16 failed (exit {done.returncode}):\n{summary}\n{done.stderr[-2000:]}"
    assert "Baseline check passed" in summary

"""Protocol conformance: the server_extras features through the in-memory client in both protocol
eras, and the official @modelcontextprotocol/conformance suite against `kling-mcp serve --transport
http` with tests/conformance-expected-failures.yml as the baseline.

The Node tools come from scripts/install-node-tools.sh (run by the `node_tools` fixture; quick when
they are already installed). Without node/npm these tests fail and say what to install.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import PromptReference, ResourceTemplateReference, ResourceUpdatedNotification

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from kling_mcp.server_extras import VIDEO_TEMPLATE, install_extras, mcp_level

ROOT = Path(__file__).resolve().parents[1]
# Where scripts/install-node-tools.sh puts the pinned tools (KLING_MCP_NODE_TOOLS moves them, as it does there).
NODE_BIN = Path(os.environ.get("KLING_MCP_NODE_TOOLS") or ROOT / ".tools" / "node") / "node_modules" / ".bin"
NODE22_BIN = ROOT / ".tools" / "node22" / "node_modules" / "node" / "bin"
ERAS = ["auto", "legacy"]
STORYBOARD = PromptReference(type="ref/prompt", name="storyboard")
VIDEOS = ResourceTemplateReference(type="ref/resource", uri=VIDEO_TEMPLATE)

pytestmark = pytest.mark.anyio


# --- shared helpers (test_inspector.py imports them) ---------------------------------------------

@pytest.fixture(scope="session")
def node_tools() -> Path:
    """Install (or verify) the pinned conformance suite and Inspector; returns their bin dir."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("node and npm (Node.js 20+) are required for the MCP conformance and Inspector tests; "
                    "install Node.js 20+ and run `bash scripts/install-node-tools.sh`.")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-node-tools.sh")], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"scripts/install-node-tools.sh failed ({done.returncode}): {done.stderr[-2000:]}")
    return NODE_BIN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(data_dir: Path) -> dict[str, str]:
    """The environment of a server subprocess: no provider keys, data in ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env["KLING_MCP_DATA_DIR"] = str(data_dir)
    # The Node tools run on the Node 22 that scripts/install-node-tools.sh brings (the machine may have 20).
    env["PATH"] = f"{NODE22_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), **env})


async def finished_job(client: Client) -> str:
    result = await client.call_tool("generate_video", {"prompt": "a paper boat", "provider": "local", "duration": 3,
                                                       "wait_seconds": 45})
    assert result.structured_content["status"] == "succeeded", result.structured_content
    return result.structured_content["job_id"]


async def running_job(client: Client) -> str:
    result = await client.call_tool("generate_video", {"prompt": "a red kite", "provider": "local", "duration": 3,
                                                       "wait_seconds": 0})
    assert result.structured_content["status"] not in ("succeeded", "failed"), result.structured_content
    return result.structured_content["job_id"]


async def legacy_call(method: Any, *args: Any) -> Any:
    """Await a 2025-era client method whose MCPDeprecationWarning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return await method(*args)


# --- capabilities and start-up checks -------------------------------------------------------------

@pytest.mark.parametrize("mode", ERAS)
async def test_capabilities_advertised(tmp_path, mode):
    async with Client(create_server(settings(tmp_path)), mode=mode) as client:
        caps = client.server_capabilities
        assert caps.completions is not None
        assert caps.resources is not None and caps.resources.subscribe is True
        if mode == "legacy":
            assert caps.logging is not None


def test_install_extras_fails_loudly_without_the_sdk_seams(tmp_path):
    class NotAnMCPServer:
        def __init__(self) -> None:
            self.middleware: list = []

    with pytest.raises(RuntimeError, match="_lowlevel_server"):
        install_extras(NotAnMCPServer(), settings(tmp_path))


def test_install_script_says_what_to_install_without_npm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([str(bin_dir / "bash"), str(ROOT / "scripts" / "install-node-tools.sh")],
                          env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 127
    assert "node and npm are required" in done.stderr and "install Node.js 20+" in done.stderr


def test_mcp_level_mapping():
    assert [mcp_level(n) for n in (5, 10, 20, 25, 30, 40, 50, 55, 60)] == [
        "debug", "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


# --- completions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ERAS)
async def test_storyboard_completions(tmp_path, mode):
    async with Client(create_server(settings(tmp_path)), mode=mode) as client:
        ratio = await client.complete(STORYBOARD, {"name": "aspect_ratio", "value": "1"})
        assert ratio.completion.values == ["16:9", "1:1"]
        every = await client.complete(STORYBOARD, {"name": "aspect_ratio", "value": ""})
        assert set(every.completion.values) == {"16:9", "9:16", "1:1"}
        shots = await client.complete(STORYBOARD, {"name": "shots", "value": ""})
        assert shots.completion.values[:3] == ["1", "2", "3"]
        assert (await client.complete(STORYBOARD, {"name": "topic", "value": "dra"})).completion.values == []
        with pytest.raises(MCPError, match="no argument 'style'"):
            await client.complete(STORYBOARD, {"name": "style", "value": ""})
        with pytest.raises(MCPError, match="no prompt named 'other'"):
            await client.complete(PromptReference(type="ref/prompt", name="other"), {"name": "x", "value": ""})


@pytest.mark.parametrize("mode", ERAS)
async def test_video_template_completions_come_from_the_store(tmp_path, mode):
    async with Client(create_server(settings(tmp_path)), mode=mode) as client:
        empty = await client.complete(VIDEOS, {"name": "job_id", "value": ""})
        assert empty.completion.values == []
        job_id = await finished_job(client)
        ids = await client.complete(VIDEOS, {"name": "job_id", "value": job_id[:4]})
        assert ids.completion.values == [job_id]
        assert (await client.complete(VIDEOS, {"name": "job_id", "value": "zz"})).completion.values == []
        index = await client.complete(VIDEOS, {"name": "index", "value": ""}, {"job_id": job_id})
        assert index.completion.values == ["0"]
        with pytest.raises(MCPError, match="no resource template"):
            await client.complete(ResourceTemplateReference(type="ref/resource", uri="kling://nope/{x}"),
                                  {"name": "x", "value": ""})


# --- logging/setLevel ------------------------------------------------------------------------------

async def test_set_level_forwards_server_logs_at_or_above_the_level(tmp_path):
    received: list[Any] = []

    async def on_log(params: Any) -> None:
        received.append(params)

    server = create_server(settings(tmp_path, RUNWARE_API_KEY="sk-live-abcdef123456"))
    async with Client(server, mode="legacy", logging_callback=on_log) as client:
        logger = logging.getLogger("kling_mcp.test_conformance")
        logger.warning("before setLevel: not sent")
        assert await legacy_call(client.set_logging_level, "warning") is not None
        logger.info("below the level: not sent")
        logger.warning("key %s leaked?", "sk-live-abcdef123456")
        logger.error("second")
        with anyio.fail_after(10):
            while len(received) < 2:
                await anyio.sleep(0.02)
        await anyio.sleep(0.1)
    assert [(p.level, p.data) for p in received] == [("warning", "key *** leaked?"), ("error", "second")]
    assert received[0].logger == "kling_mcp.test_conformance"


async def test_set_level_does_not_exist_in_the_2026_era(tmp_path):
    async with Client(create_server(settings(tmp_path))) as client:
        with pytest.raises(MCPError, match="Method not found"):
            await legacy_call(client.set_logging_level, "info")


# --- subscriptions --------------------------------------------------------------------------------

async def test_legacy_subscribe_notifies_when_the_job_finishes(tmp_path):
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    async with Client(create_server(settings(tmp_path)), mode="legacy", message_handler=on_message) as client:
        job_id = await running_job(client)
        uri, other = f"kling://jobs/{job_id}/videos/0", f"kling://jobs/{job_id}/videos/1"
        await legacy_call(client.subscribe_resource, uri)
        with pytest.raises(MCPError, match=r"has videos 0 only") as refused:   # one video asked for
            await legacy_call(client.subscribe_resource, other)
        assert refused.value.error.code == -32602
        await legacy_call(client.unsubscribe_resource, other)
        with anyio.fail_after(45):
            while not updates:
                await anyio.sleep(0.05)
        assert updates == [uri]
        read = await client.read_resource(uri)
        assert read.contents[0].mime_type == "video/mp4"


async def test_legacy_subscribe_rejects_what_cannot_change(tmp_path):
    async with Client(create_server(settings(tmp_path)), mode="legacy") as client:
        with pytest.raises(MCPError, match="only kling://jobs/"):
            await legacy_call(client.subscribe_resource, "kling://catalog")
        with pytest.raises(MCPError, match="no job 'nope'"):
            await legacy_call(client.subscribe_resource, "kling://jobs/nope/videos/0")
        job_id = await finished_job(client)          # finished: accepted, nothing will ever change
        await legacy_call(client.subscribe_resource, f"kling://jobs/{job_id}/videos/0")
        with pytest.raises(MCPError, match=r"has videos 0 only"):   # an index the job does not have
            await legacy_call(client.subscribe_resource, f"kling://jobs/{job_id}/videos/3")


async def test_listen_notifies_when_the_job_finishes(tmp_path):
    async with Client(create_server(settings(tmp_path))) as client:
        assert client.protocol_version == "2026-07-28"
        job_id = await running_job(client)
        uri = f"kling://jobs/{job_id}/videos/0"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            with anyio.fail_after(45):
                async for event in sub:
                    assert event.uri == uri
                    break
        status = await client.call_tool("check_job", {"job_id": job_id})
        assert status.structured_content["status"] == "succeeded"


async def test_listen_refuses_a_video_index_the_job_does_not_have(tmp_path):
    async with Client(create_server(settings(tmp_path))) as client:
        job_id = await running_job(client)
        with pytest.raises(MCPError, match=r"has videos 0 only") as refused:
            async with client.listen(resource_subscriptions=[f"kling://jobs/{job_id}/videos/2"]):
                pass
        assert refused.value.error.code == -32602


# --- the official conformance suite ----------------------------------------------------------------

@pytest.fixture
def http_server(tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve", "--transport", "http", "--host",
                             "127.0.0.1", "--port", str(port)], env=server_env(tmp_path / "data"), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kling-mcp serve --transport http exited {proc.returncode}: "
                        f"{(tmp_path / 'server.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("kling-mcp serve --transport http did not listen within 30 s")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.slow
def test_official_conformance_suite(node_tools, http_server, tmp_path):
    done = subprocess.run(
        [str(node_tools / "conformance"), "server", "--url", http_server, "--expected-failures",
         str(ROOT / "tests" / "conformance-expected-failures.yml"), "-o", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    summary = done.stdout[done.stdout.rfind("=== SUMMARY ==="):]
    assert done.returncode == 0, f"conformance suite failed (exit {done.returncode}):\n{summary}\n{done.stderr[-2000:]}"
    assert "logging-set-level: 1 passed, 0 failed" in summary
    assert "Baseline check passed" in summary

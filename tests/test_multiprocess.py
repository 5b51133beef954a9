"""Several processes on one data dir, as users run them: two stdio servers (two assistants) and the CLI,
against the Runpod emulator (in this process, so its counters see every request).

Each job is submitted once and driven by one process (polls per job are not doubled, each video is
downloaded once and intact); one idempotency key makes one job across processes and is refused for another
request; a cancel from the CLI stays cancelled while another server checks the job; and when a server is
killed, the other finishes its jobs within the lease.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "rp-multi-key"
LEASE_S = 3.0
STEPS = 5  # polls a single driver makes per job: IN_QUEUE -> 4 x IN_PROGRESS -> COMPLETED


@pytest.fixture
def runpod() -> Iterator[tuple[str, RunpodState]]:
    state = RunpodState(api_key=KEY, video_seconds=1.0)
    state.progression = ("IN_QUEUE", *["IN_PROGRESS"] * (STEPS - 1), "COMPLETED")
    with serve(runpod_app(state)) as base:
        yield base, state


def env_for(base: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN")) and k != "FAL_KEY"}
    env.update(
        RUNPOD_API_KEY=KEY,
        KLING_MCP_RUNPOD_BASE_URL=f"{base}/v2",
        KLING_MCP_DATA_DIR=str(data_dir),
        KLING_MCP_POLL_INTERVAL_S="0.1",
        KLING_MCP_POLL_MAX_INTERVAL_S="0.2",
        KLING_MCP_LEASE_S=str(LEASE_S),
        **extra,
    )
    return env


def job_args(base: str, state: RunpodState, prompt: str, **extra: Any) -> dict[str, Any]:
    name = state.files.add(png_bytes(96, 64, (30, 120, 200)), suffix=".png", content_type="image/png")
    return {"prompt": prompt, "provider": "runpod", "reference_images": [f"{base}/files/{name}"], "duration": 3,
            "wait_seconds": 0, **extra}


@asynccontextmanager
async def stdio_server(env: dict[str, str], era: str) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=env)
    async with Client(params, mode=era) as client:
        yield client


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([sys.executable, "-m", "kling_mcp", *args], env=env, check=False)


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def wait_done(client: Client, job_id: str, seconds: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = await call(client, "check_job", {"job_id": job_id, "wait_seconds": 10})
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
    raise AssertionError(f"job {job_id} did not finish: {view}")


def served_sha256(state: RunpodState) -> set[str]:
    return {hashlib.sha256(f.data).hexdigest() for f in state.files.files.values() if f.content_type == "video/mp4"}


def assert_intact(view: dict[str, Any], state: RunpodState) -> None:
    assert view["status"] == "succeeded", view
    (video,) = view["videos"]
    data = Path(video["path"]).read_bytes()
    assert len(data) == video["size_bytes"] and data[4:8] == b"ftyp"
    assert hashlib.sha256(data).hexdigest() in served_sha256(state)  # byte for byte what was served


def assert_driven_once(state: RunpodState) -> None:
    for remote_id in state.jobs:
        assert len(state.polls_of(remote_id)) == STEPS, (remote_id, len(state.polls_of(remote_id)))
    assert all(count == 1 for count in state.files.downloads.values() if count), state.files.downloads


# --- two servers and the CLI --------------------------------------------------------------------------


async def test_two_servers_and_the_cli_submit_each_job_once_and_poll_it_from_one_process(runpod, tmp_path):
    base, state = runpod
    env = env_for(base, tmp_path / "data")
    async with stdio_server(env, "legacy") as first, stdio_server(env, "auto") as second:
        ids = []
        for n, client in enumerate([first, second, first, second]):
            ids.append((await call(client, "generate_video", job_args(base, state, f"shot {n}")))["job_id"])
        made = await cli(env, "generate", "a kite from the terminal", "--provider", "runpod", "--duration", "3",
                         "--reference-image", job_args(base, state, "")["reference_images"][0], "--no-wait")
        assert made.returncode == 0, made.stderr.decode()[-2000:]
        ids.append(made.stdout.decode().split()[0])
        # Each server checks (and waits on) the other's jobs; the CLI waits on one with check --wait.
        checked = await cli(env, "check", ids[0], "--wait", "90", "--json")
        assert checked.returncode == 0, checked.stderr.decode()[-2000:]
        views = [await wait_done(second if n % 2 == 0 else first, job_id) for n, job_id in enumerate(ids)]
        listed = await call(first, "list_jobs", {})
    assert json.loads(checked.stdout)["status"] == "succeeded"
    for view in views:
        assert_intact(view, state)
    assert len(state.submissions()) == len(ids) == len(state.jobs)
    assert_driven_once(state)
    assert {j["job_id"] for j in listed["jobs"]} == set(ids)
    assert not list((tmp_path / "data" / "videos").rglob("*.part"))


async def test_one_key_from_two_servers_at_once_makes_one_job_and_another_request_is_refused(runpod, tmp_path):
    base, state = runpod
    env = env_for(base, tmp_path / "data")
    args = job_args(base, state, "the same shot twice", idempotency_key="board-1-shot-1")
    async with stdio_server(env, "legacy") as first, stdio_server(env, "auto") as second:
        views: list[dict[str, Any]] = []

        async def submit(client: Client) -> None:
            views.append(await call(client, "generate_video", args))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, first)
            tg.start_soon(submit, second)
        other = await second.call_tool("generate_video", {**args, "prompt": "a different shot"})
        done = await wait_done(first, views[0]["job_id"])
    assert views[0]["job_id"] == views[1]["job_id"]
    assert len(state.submissions()) == 1
    assert_intact(done, state)
    text = " ".join(getattr(c, "text", "") for c in other.content)
    assert other.is_error and "[idempotency_conflict]" in text and "prompt was" in text
    assert views[0]["job_id"] in text


async def test_a_cancel_from_the_cli_stays_cancelled_while_another_server_checks(runpod, tmp_path):
    base, state = runpod
    state.progression = ("IN_QUEUE", *["IN_PROGRESS"] * 200, "COMPLETED")
    env = env_for(base, tmp_path / "data")
    async with stdio_server(env, "legacy") as first, stdio_server(env, "auto") as second:
        job_id = (await call(first, "generate_video", job_args(base, state, "a long take")))["job_id"]
        statuses: list[str] = []

        async def keep_checking() -> None:
            for _ in range(6):
                statuses.append((await call(second, "check_job", {"job_id": job_id, "wait_seconds": 1}))["status"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_checking)
            await anyio.sleep(1.0)
            cancelled = await cli(env, "cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr.decode()[-2000:]
        (remote_id,) = state.jobs
        polls_after_cancel = len(state.polls_of(remote_id))
        await anyio.sleep(2.0)
        final = [await call(c, "check_job", {"job_id": job_id}) for c in (first, second)]
    assert cancelled.stdout.decode().strip() == "cancelled"
    assert [v["status"] for v in final] == ["cancelled", "cancelled"]
    assert statuses[-1] == "cancelled"
    assert state.jobs[remote_id].status == "CANCELLED"
    assert len(state.polls_of(remote_id)) <= polls_after_cancel + 1  # at most one poll was already in flight


# --- a server killed mid-job ----------------------------------------------------------------------------


class RawServer:
    """A stdio server driven by hand (JSON-RPC lines), so that the test can SIGKILL it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.next_id = 0
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "the server exited"
            message = json.loads(line)
            if message.get("id") == self.next_id:
                return message["result"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@contextmanager
def raw_server(env: dict[str, str]) -> Iterator[RawServer]:
    server = RawServer(env)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.kill()


async def test_when_one_of_two_servers_is_killed_the_other_finishes_its_jobs_within_the_lease(runpod, tmp_path):
    base, state = runpod
    state.progression = ("IN_QUEUE", *["IN_PROGRESS"] * 30, "COMPLETED")  # about 6 s at 0.2 s a poll
    env = env_for(base, tmp_path / "data")
    async with AsyncExitStack() as stack:
        survivor = await stack.enter_async_context(stdio_server(env, "auto"))
        with raw_server(env) as doomed:
            ids = [
                doomed.request("tools/call", {"name": "generate_video",
                                              "arguments": job_args(base, state, f"kill test {n}")})
                ["structuredContent"]["job_id"]
                for n in range(3)
            ]
            await anyio.sleep(1.0)  # the doomed server is polling them
            assert all(job.polls >= 1 for job in state.jobs.values())
            doomed.kill()
        killed_at = time.monotonic()
        views = [await wait_done(survivor, job_id, seconds=60) for job_id in ids]
        finished_in = time.monotonic() - killed_at
    for view in views:
        assert_intact(view, state)
    assert len(state.submissions()) == 3
    # Taken over at once (the dead process is on this machine) or at worst after the lease, plus the
    # remaining ~6 s of polling; never a second submission.
    assert finished_in < LEASE_S * 1.5 + 6 * 0.3 + 20, finished_in


async def test_a_stalled_server_loses_its_jobs_after_the_lease_and_leaves_them_alone_when_it_wakes(runpod, tmp_path):
    """SIGSTOP (the process is alive, so only the lease's expiry frees its jobs), take-over, then SIGCONT."""
    base, state = runpod
    state.progression = ("IN_QUEUE", *["IN_PROGRESS"] * 20, "COMPLETED")
    env = env_for(base, tmp_path / "data")
    async with AsyncExitStack() as stack:
        survivor = await stack.enter_async_context(stdio_server(env, "auto"))
        with raw_server(env) as stalled:
            job_id = stalled.request("tools/call", {"name": "generate_video",
                                                    "arguments": job_args(base, state, "stall test")}
                                     )["structuredContent"]["job_id"]
            await anyio.sleep(0.8)
            stalled.proc.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                view = await wait_done(survivor, job_id, seconds=60)
                taken_in = time.monotonic() - stopped_at
            finally:
                stalled.proc.send_signal(signal.SIGCONT)
            await anyio.sleep(LEASE_S)  # the woken server finds the job finished and someone else's
            after = await call(survivor, "check_job", {"job_id": job_id})
    assert_intact(view, state)
    assert after["status"] == "succeeded" and after["videos"] == view["videos"]
    assert_intact(after, state)
    assert len(state.submissions()) == 1
    assert taken_in > LEASE_S * 0.5  # not before the stalled server's lease could expire
    assert all(count == 1 for count in state.files.downloads.values() if count), state.files.downloads

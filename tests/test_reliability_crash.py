"""SIGKILL the server (a real ``python -m kling_mcp serve`` subprocess) while it has a job at every
stage (persisted but unanswered, just accepted, polling, half downloaded), restart it on the same
data dir, and prove that every job ends in a terminal state, that the providers saw exactly one
submission per job, and that no partial download is ever presented as a video.

The emulators run in threads of the pytest process, so they outlive the killed server. Small ASGI
wrappers make the stages observable: :class:`Hold` keeps a submit's answer (or the submit itself)
from ever reaching the server, :class:`Throttle` trickles result files out so the test can kill
the server while a ``.part`` file is half written.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from mcp import Client, StdioServerParameters

from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app
from tests.emulators.runware import RunwareState
from tests.emulators.runware import create_app as runware_app
from tests.support import read_store

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUNPOD_KEY = "rp-crash-test-key"
RUNWARE_KEY = "rw-crash-test-key"
TERMINAL = {"succeeded", "failed", "cancelled"}
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


# --- ASGI wrappers that make the stages observable ------------------------------------------------


@dataclass
class Hold:
    """Requests for which ``match(path, body)`` is true are held.

    ``before_app=False``: the emulator handles the request (the job exists at the provider) but its
    answer is held back, as when a connection dies after the provider accepted a job.
    ``before_app=True``: the request never reaches the emulator (it died on the way).
    Held requests wait until ``release`` is set (at teardown), so the server never sees an answer.
    """

    app: ASGIApp
    match: Callable[[str, bytes], bool]
    before_app: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while not self.release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if not self.match(scope["path"], body):
            return await self.app(scope, replay, send)
        self.arrived.set()
        if self.before_app:
            await self._wait()
            return None

        async def held_send(message: dict[str, Any]) -> None:
            await self._wait()
            await send(message)

        return await self.app(scope, replay, held_send)


@dataclass
class Throttle:
    """Result files (``/files/...``) are sent in ``chunk``-byte pieces, ``delay_s`` apart."""

    app: ASGIApp
    chunk: int = 4096
    delay_s: float = 0.1

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/files/"):
            return await self.app(scope, receive, send)

        async def slow_send(message: dict[str, Any]) -> None:
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= self.chunk:
                return await send(message)
            for start in range(0, len(body), self.chunk):
                await send({"type": "http.response.body", "body": body[start:start + self.chunk], "more_body": True})
                await asyncio.sleep(self.delay_s)
            await send({"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)})

        return await self.app(scope, receive, slow_send)


# --- the server as a subprocess, spoken to in raw JSON-RPC ---------------------------------------


class StdioServer:
    """``python -m kling_mcp serve`` with a reader thread, so the test decides when to SIGKILL."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()
        answer = self.result(self.send("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                      "clientInfo": {"name": "crash-test", "version": "0"}}))
        assert "result" in answer, answer
        self.notify("notifications/initialized")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def notify(self, method: str) -> None:
        self._write({"jsonrpc": "2.0", "method": method})

    def send(self, method: str, params: dict[str, Any]) -> int:
        self._next += 1
        self._write({"jsonrpc": "2.0", "id": self._next, "method": method, "params": params})
        return self._next

    def call(self, tool: str, arguments: dict[str, Any]) -> int:
        return self.send("tools/call", {"name": tool, "arguments": arguments})

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def result(self, request_id: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.proc.poll() is None, "the server exited"
                continue
            if message.get("id") == request_id:
                return message
        raise AssertionError(f"no answer to request {request_id} within {timeout} s")

    def job(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        answer = self.result(self.call(tool, arguments))["result"]
        assert not answer.get("isError"), answer
        return answer["structuredContent"]

    def kill(self) -> None:
        self.proc.kill()                                    # SIGKILL: no cleanup, no terminal record
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -9


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def restart_and_finish_all(env: dict[str, str], job_ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Restart the server on the same data dir and wait (bounded) until every job is terminal.

    Every intermediate answer is checked too: a job that has not succeeded shows no videos.
    """
    params = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=env)
    views: dict[str, dict[str, Any]] = {}
    async with Client(params, mode="legacy") as client:
        for name, job_id in job_ids.items():
            for _ in range(10):
                result = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 10})
                assert not result.is_error, result.content
                view = views[name] = result.structured_content
                if view["status"] in TERMINAL:
                    break
                assert view["videos"] == [], view
            assert view["status"] in TERMINAL, (name, view)
            if view["videos"]:
                read = await client.read_resource(view["videos"][0]["uri"])
                assert read.contents[0].mime_type == "video/mp4"
    return views


def assert_no_partial_video_presented(data_dir: Path) -> None:
    """Every .mp4 under videos/ decodes completely; a partial download is only ever a .part."""
    for path in (data_dir / "videos").rglob("*.mp4"):
        with av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames > 0, path


# --- the scenario --------------------------------------------------------------------------------

PROMPTS = {
    "runpod-held": "stage A: runpod got the submit, its answer never arrived",
    "runware-held": "stage B: runware got the submit, its answer never arrived",
    "runware-lost": "stage C: the submit to runware never arrived",
    "accepted": "stage D: runpod accepted the job, nothing polled yet",
    "polling": "stage E: runpod is running the job and we are polling",
    "downloading": "stage F: the result is half downloaded",
}


def _prompt_in(stage: str) -> Callable[[str, bytes], bool]:
    needle = json.dumps(PROMPTS[stage]).encode()
    return lambda path, body: needle in body


def _never_finishes() -> tuple[str, ...]:
    """Queued for a few polls, then running until the test moves a job on (_finish_on_next_poll)."""
    return ("IN_QUEUE",) * 4 + ("IN_PROGRESS",) * 10_000 + ("COMPLETED",)


def _finish_on_next_poll(state: RunpodState, remote_id: str) -> None:
    state.jobs[remote_id].polls = len(state.progression) - 2


@dataclass
class Emulators:
    runpod_base: str
    runware_base: str
    runpod: RunpodState
    runware: RunwareState
    holds: dict[str, Hold]
    throttle: Throttle

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
        env.update(KLING_MCP_DATA_DIR=str(data_dir), KLING_MCP_POLL_INTERVAL_S="0.05",
                   KLING_MCP_POLL_MAX_INTERVAL_S="0.2",
                   RUNPOD_API_KEY=RUNPOD_KEY, KLING_MCP_RUNPOD_BASE_URL=f"{self.runpod_base}/v2",
                   RUNWARE_API_KEY=RUNWARE_KEY, KLING_MCP_RUNWARE_BASE_URL=f"{self.runware_base}/v1")
        return env

    def runpod_args(self, stage: str) -> dict[str, Any]:
        name = self.runpod.files.add(png_bytes(96, 64, (30, 120, 200)), suffix=".png", content_type="image/png")
        return {"prompt": PROMPTS[stage], "provider": "runpod", "duration": 3, "wait_seconds": 0,
                "reference_images": [f"{self.runpod_base}/files/{name}"]}

    def runpod_job(self, stage: str) -> Any:
        (job,) = [j for j in self.runpod.jobs.values() if j.input["prompt"] == PROMPTS[stage]]
        return job

    def runpod_submits(self, stage: str) -> int:
        return sum(1 for r in self.runpod.submissions() if r.body["input"]["prompt"] == PROMPTS[stage])


@pytest.fixture
def emulators() -> Iterator[Emulators]:
    runpod = RunpodState(api_key=RUNPOD_KEY, progression=_never_finishes())
    throttle = Throttle(runpod_app(runpod), chunk=2048, delay_s=0.2)         # ~48 KB in ~5 s
    runpod_held = Hold(throttle, _prompt_in("runpod-held"))
    runware = RunwareState(api_keys={RUNWARE_KEY}, processing_polls=2)
    runware_lost = Hold(runware_app(runware), _prompt_in("runware-lost"), before_app=True)
    runware_held = Hold(runware_lost, _prompt_in("runware-held"))
    holds = {"runpod-held": runpod_held, "runware-held": runware_held, "runware-lost": runware_lost}
    with serve(runpod_held) as runpod_base, serve(runware_held) as runware_base:
        try:
            yield Emulators(runpod_base, runware_base, runpod, runware, holds, throttle)
        finally:
            for hold in holds.values():
                hold.release.set()


def stored_jobs(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every job in the store by prompt, read straight from disk (the server is dead)."""
    async def read(store):
        return {job.spec.prompt: job.model_dump(mode="json") for job in await store.list_jobs(limit=100)}

    return read_store(data_dir, read)


def run_until_every_stage_then_sigkill(emu: Emulators, data_dir: Path) -> dict[str, dict[str, Any]]:
    """Start one job per stage in one server, SIGKILL it once all are in place; the stored jobs."""
    server = StdioServer(emu.env(data_dir))
    try:
        # F: accepted, completed at the next poll, then a throttled download (~5 s) that the kill cuts.
        downloading = server.job("generate_video", emu.runpod_args("downloading"))
        _finish_on_next_poll(emu.runpod, emu.runpod_job("downloading").id)
        part = data_dir / "videos" / downloading["job_id"] / "0.mp4.part"
        wait_for(lambda: part.exists() and part.stat().st_size >= 4096, "the download to be under way")
        # E: accepted and polled into IN_PROGRESS.
        server.job("generate_video", emu.runpod_args("polling"))
        polling = emu.runpod_job("polling")
        wait_for(lambda: polling.status == "IN_PROGRESS", "the polling job to be running")
        # A, B, C: submits whose answers never come back.
        server.call("generate_video", emu.runpod_args("runpod-held"))
        for stage in ("runware-held", "runware-lost"):
            server.call("generate_video", {"prompt": PROMPTS[stage], "provider": "runware", "duration": 5,
                                           "wait_seconds": 0})
        for stage, hold in emu.holds.items():
            wait_for(hold.arrived.is_set, f"the {stage} submit to arrive")
        wait_for(lambda: len(emu.runware.tasks) == 1, "runware to create the held task")
        # D: accepted (queued) just before the kill.
        accepted = server.job("generate_video", emu.runpod_args("accepted"))
        assert accepted["status"] == "submitted", accepted
    finally:
        server.kill()
    return stored_jobs(data_dir)


async def test_sigkill_at_every_stage_then_restart_ends_each_job_once_and_never_shows_a_partial_video(
        emulators: Emulators, tmp_path: Path) -> None:
    emu, data_dir = emulators, tmp_path / "data"
    jobs = run_until_every_stage_then_sigkill(emu, data_dir)
    stored = {stage: jobs[prompt] for stage, prompt in PROMPTS.items()}

    # What the dead server left: pending before any answer, remote ids saved the moment they came.
    for stage in ("runpod-held", "runware-held", "runware-lost"):
        assert (stored[stage]["status"], stored[stage]["remote_id"]) == ("pending", None), stage
    assert stored["accepted"]["status"] == "submitted" and stored["accepted"]["remote_id"]
    assert stored["polling"]["status"] == "running"
    assert stored["downloading"]["status"] == "downloading"
    part = data_dir / "videos" / stored["downloading"]["job_id"] / "0.mp4.part"
    written = part.stat().st_size
    served_file = emu.runpod_job("downloading").output["video_url"].rsplit("/", 1)[1]
    served = emu.runpod.files.files[served_file].data
    assert 0 < written < len(served)
    assert not list((data_dir / "videos").rglob("*.mp4")), "a partial download was renamed into place"

    # The providers finish what they were running; the restarted server collects it.
    for stage in ("accepted", "polling"):
        _finish_on_next_poll(emu.runpod, emu.runpod_job(stage).id)
    emu.throttle.delay_s = 0.0
    views = await restart_and_finish_all(emu.env(data_dir), {s: j["job_id"] for s, j in stored.items()})

    # No remote id and no client-chosen id: failed as interrupted, never resubmitted.
    assert (views["runpod-held"]["status"], views["runpod-held"]["error"]["code"]) == ("failed", "interrupted")
    assert "may or may not be" in views["runpod-held"]["error"]["hint"]
    # Runware: our job id is its taskUUID, so the lost answer is recovered by polling it...
    assert views["runware-held"]["status"] == "succeeded", views["runware-held"]
    assert [t["taskUUID"] for t in emu.runware.sent("videoInference")] == [stored["runware-held"]["job_id"]]
    # ...and a submit that never arrived is reported as such, without sending it again.
    assert (views["runware-lost"]["status"], views["runware-lost"]["error"]["code"]) == ("failed", "interrupted")
    assert "never reached" in views["runware-lost"]["error"]["message"]
    # Accepted, polling and downloading jobs all end with their video.
    for stage in ("accepted", "polling", "downloading"):
        assert views[stage]["status"] == "succeeded", (stage, views[stage])
        assert len(views[stage]["videos"]) == 1, stage
    # Exactly one submission per job, whatever the stage of the kill.
    for stage in ("runpod-held", "accepted", "polling", "downloading"):
        assert emu.runpod_submits(stage) == 1, stage
    # The download resumed from the bytes the dead server had written, and the result is whole.
    (video,) = views["downloading"]["videos"]
    assert Path(video["path"]).read_bytes() == served
    resumed_from = [int(r.split("=", 1)[1].split("-", 1)[0]) for r in emu.runpod.files.ranges]
    assert resumed_from and min(resumed_from) >= written, emu.runpod.files.ranges
    assert not list((data_dir / "videos").rglob("*.part"))
    assert_no_partial_video_presented(data_dir)

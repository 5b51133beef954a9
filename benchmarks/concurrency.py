"""Concurrent jobs against the provider emulators (real loopback HTTP, separate processes).

N ``generate_video`` calls (wait_seconds=0) go to the in-process server at once, split between the
Runpod (reference-to-video) and AI/ML API (image-to-video) emulators, then the runner polls and
downloads them all. Measured: wall time until every job is finished, CPU seconds of the kling-mcp
process (the in-memory client's 200 calls included; completion is watched by reading the job store,
not through MCP) and of the emulators, and polls per job (from the job store).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from ._common import ROOT, Row, clean_env

KEY = "bench-key"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Emulator:
    """``python -m tests.emulators.<name> --port 0`` as a subprocess; ``url`` once it is READY."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", f"tests.emulators.{name}", "--port", "0",
                                      "--api-key", KEY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT, env=clean_env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the {name} emulator did not start (said {line!r})")
        self.url = line.split(" ", 1)[1]

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _run(n: int, tmp: Path) -> list[Row]:
    from mcp import Client

    from kling_mcp.config import Settings
    from kling_mcp.jobs.store import JobStore
    from kling_mcp.server import create_server
    from tests.emulators._media import png_bytes

    image = tmp / "frame.png"
    image.write_bytes(png_bytes(320, 180, (40, 110, 190)))
    runpod, aiml = Emulator("runpod"), Emulator("aimlapi")
    try:
        settings = Settings.from_env({
            "RUNPOD_API_KEY": KEY, "KLING_MCP_RUNPOD_BASE_URL": f"{runpod.url}/v2",
            "AIML_API_KEY": KEY, "KLING_MCP_AIMLAPI_BASE_URL": aiml.url,
            "KLING_MCP_DATA_DIR": str(tmp / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.5",
            "KLING_MCP_POLL_MAX_INTERVAL_S": "2"})
        calls = [{"prompt": f"shot {i}: a paper boat, take {i}", "provider": "runpod", "duration": 5,
                  "reference_images": [str(image)], "wait_seconds": 0} if i % 2 == 0 else
                 {"prompt": f"shot {i}: a paper boat, take {i}", "provider": "aimlapi", "duration": 5,
                  "first_frame": str(image), "wait_seconds": 0} for i in range(n)]
        async with Client(create_server(settings)) as client:
            emu_cpu, cpu, started = runpod.cpu() + aiml.cpu(), time.process_time(), time.perf_counter()

            async def submit(args: dict[str, Any]) -> None:
                result = await client.call_tool("generate_video", args)
                if result.is_error:
                    raise RuntimeError(f"generate_video failed: {result.content}")

            async with anyio.create_task_group() as tg:
                for args in calls:
                    tg.start_soon(submit, args)
            submitted = time.perf_counter() - started
            watcher = JobStore(tmp / "data")          # a second handle: reading it is not MCP traffic
            try:
                while watcher.count() < n or watcher.unfinished():      # unfinished(): only those are read
                    await anyio.sleep(0.25)
            finally:
                watcher.close()
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            emu_cpu = runpod.cpu() + aiml.cpu() - emu_cpu
        store = JobStore(tmp / "data")
        try:
            jobs = store.list(None, n)
        finally:
            store.close()
    finally:
        runpod.close()
        aiml.close()
    ok = sum(j.status.value == "succeeded" for j in jobs)
    if ok != n:
        failed = [(j.provider, j.error) for j in jobs if j.status.value != "succeeded"][:3]
        raise RuntimeError(f"{n - ok} of {n} jobs did not succeed: {failed}")
    polls = sum(j.polls for j in jobs) / len(jobs)
    section = f"{n} concurrent jobs (emulators)"
    return [Row(section, "wall time, submit to all downloaded", "s", round(wall, 2), None, n,
                extra={"submit_s": round(submitted, 2)}),
            Row(section, "kling-mcp CPU (server + client, one process)", "s", round(cpu, 2), None, n,
                extra={"cpu_per_job_ms": round(1000 * cpu / n, 1)}),
            Row(section, "emulators CPU (2 processes)", "s", round(emu_cpu, 2), None, n),
            Row(section, "polls per job", "polls", round(polls, 2), float(max(j.polls for j in jobs)), n,
                extra={"poll_interval": "0.5 s x1.5 up to 2 s"})]


def run(n: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        return anyio.run(_run, n, Path(tmp))

"""Server CPU per job: ``kling-mcp serve`` as its own process on stdio drives N jobs to completion.

``load.py`` runs the server in the benchmark's own process, so its CPU figure also holds the client and
its ``check_job`` loop. Here the server is a subprocess, as a host launches it; the client submits N
``generate_video`` calls (``wait_seconds=0``) at once, split between the Runpod and AI/ML API emulators,
and then watches the job store from *its* process (diskcache is process-safe) instead of calling the
server, so the server's CPU (``/proc/<pid>/stat``, from just before the first submit until the last video
is on disk) is the cost of the jobs alone: the submit calls, the polls, the downloads and the finishing.

    python -m benchmarks.server_cpu --jobs 200
    python -m benchmarks.server_cpu --jobs 200 --profile /tmp/server.html   # the server under pyinstrument
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ._common import ROOT, Row, clean_env
from .load import KEY, PROVIDERS, Emulator, _calls

BUDGET_MS = 15.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pid(data: Path) -> int:
    """The pid of the ``kling-mcp serve`` child whose data dir is ``data`` (found through /proc)."""
    needle = f"KLING_MCP_DATA_DIR={data}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if b"kling_mcp" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError("cannot find the server process in /proc (this benchmark needs Linux)")


@dataclass
class ServerCpuReport:
    jobs: int
    succeeded: int
    wall_s: float
    server_cpu_s: float
    emulator_cpu_s: float
    polls_per_job: float

    @property
    def cpu_per_job_ms(self) -> float:
        return 1000 * self.server_cpu_s / self.jobs


async def run_server_cpu(jobs: int = 200, poll_s: float = 0.5, max_poll_s: float = 2.0,
                         deadline_s: float = 180.0, profile: Path | None = None) -> ServerCpuReport:
    from mcp import Client, StdioServerParameters

    from kling_mcp.jobs.diskcache_store import DiskcacheStore as JobStore

    emulators = {name: Emulator(name) for name in PROVIDERS}
    try:
        with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
            data = Path(tmp) / "data"
            env = clean_env(RUNPOD_API_KEY=KEY, KLING_MCP_RUNPOD_BASE_URL=f"{emulators['runpod'].url}/v2",
                            AIML_API_KEY=KEY, KLING_MCP_AIMLAPI_BASE_URL=emulators["aimlapi"].url,
                            KLING_MCP_DATA_DIR=str(data), KLING_MCP_POLL_INTERVAL_S=str(poll_s),
                            KLING_MCP_POLL_MAX_INTERVAL_S=str(max_poll_s))
            args = ["-m", "kling_mcp", "--log-level", "WARNING", "serve"]
            if profile is not None:
                renderer = "html" if profile.suffix == ".html" else "text"
                args = ["-m", "pyinstrument", "-r", renderer, "-o", str(profile), *args]
            params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=ROOT)
            calls = _calls(jobs, {name: f"{emu.url}/files/ref-{name}.png" for name, emu in emulators.items()})
            job_ids: list[str] = []
            async with Client(params) as client:
                pid = _server_pid(data)
                await client.list_tools()
                emu0, cpu0, started = sum(e.cpu_s() for e in emulators.values()), _cpu_s(pid), time.perf_counter()

                async def submit(arguments: dict[str, Any]) -> None:
                    result = await client.call_tool("generate_video", arguments)
                    if result.is_error:
                        raise RuntimeError(f"generate_video failed: {result.content}")
                    job_ids.append(result.structured_content["job_id"])

                async with anyio.create_task_group() as tg:
                    for arguments in calls:
                        tg.start_soon(submit, arguments)
                watcher = JobStore(data)
                try:
                    with anyio.fail_after(deadline_s):
                        while await watcher.unfinished():
                            await anyio.sleep(0.25)
                    wall_s, cpu_s = time.perf_counter() - started, _cpu_s(pid) - cpu0
                    emulator_cpu_s = sum(e.cpu_s() for e in emulators.values()) - emu0
                    finished = [await watcher.get(job_id) for job_id in job_ids]
                finally:
                    await watcher.close()
    finally:
        for emu in emulators.values():
            emu.close()
    done = [j for j in finished if j is not None]
    return ServerCpuReport(jobs=jobs, succeeded=sum(j.status.value == "succeeded" for j in done), wall_s=wall_s,
                           server_cpu_s=cpu_s, emulator_cpu_s=emulator_cpu_s,
                           polls_per_job=sum(j.polls for j in done) / max(1, len(done)))


def run(n: int, runs: int = 1) -> list[Row]:
    """``runs`` repetitions; the row's median is over them."""
    reports = [anyio.run(lambda: run_server_cpu(n)) for _ in range(runs)]
    for report in reports:
        if report.succeeded != report.jobs:
            raise RuntimeError(f"{report.jobs - report.succeeded} of {n} jobs did not succeed")
    section = f"{n} concurrent jobs, server on stdio"
    per_job = [r.cpu_per_job_ms / 1000 for r in reports]
    return [Row.of(section, "server CPU per job, submit to video on disk", per_job, budget=f"<= {BUDGET_MS:g} ms",
                   wall_s=round(sorted(r.wall_s for r in reports)[len(reports) // 2], 2),
                   polls_per_job=round(reports[0].polls_per_job, 2))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="profile the server (pyinstrument): .html or text")
    args = parser.parse_args(argv)
    for _ in range(args.runs):
        report = anyio.run(lambda: run_server_cpu(args.jobs, profile=args.profile))
        print(f"{report.succeeded}/{report.jobs} succeeded, wall {report.wall_s:.2f} s, server CPU "
              f"{report.server_cpu_s:.2f} s = {report.cpu_per_job_ms:.1f} ms/job, emulators {report.emulator_cpu_s:.2f}"
              f" s, polls/job {report.polls_per_job:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load: one kling-mcp server drives N concurrent jobs to completion while check_job keeps answering.

The server runs in this process (the SDK's in-memory client, as an agent's host would hold it); the
Runpod and AI/ML API emulators run as separate processes on loopback, each behind a small stats
endpoint so submissions can be counted from outside. N ``generate_video`` calls (``wait_seconds=0``)
go out at once, split between the two providers; while the runner polls and downloads them, a
client keeps calling ``check_job`` (no wait) on random jobs and times every answer.

Reported: wall time (first submit to last download), CPU seconds of the kling-mcp process and of the
emulators, polls per job, submissions per job, and ``check_job`` latency (median, p99) under load, for
every call and for calls about jobs still in flight (the first look at a finished job also renders
its poster frame).

    python benchmarks/load.py                 # 200 jobs
    python benchmarks/load.py --jobs 50 --json load.json

``tests/test_load.py`` runs the same scenario and asserts on it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
KEY = "load-bench-key"
PROVIDERS = ("runpod", "aimlapi")
STATS_PATH = "/_load/stats"


# --- the emulators, in their own processes, with a stats endpoint --------------------------------


def _stats(name: str, state: Any) -> dict[str, Any]:
    """Submissions seen, jobs accepted, and the most submissions any one prompt got."""
    if name == "runpod":
        prompts = [r.body["input"]["prompt"] for r in state.submissions() if isinstance(r.body, dict)]
        accepted = len(state.jobs)
    else:
        prompts = [b["prompt"] for b in state.bodies() if isinstance(b, dict)]
        accepted = len(state.generations)
    per_prompt: dict[str, int] = {}
    for prompt in prompts:
        per_prompt[prompt] = per_prompt.get(prompt, 0) + 1
    return {"submissions": len(prompts), "accepted": accepted,
            "max_submissions_per_prompt": max(per_prompt.values(), default=0)}


def serve_emulator(name: str) -> None:
    """Run one emulator on a free loopback port; print ``READY <url>`` (the --serve-emulator mode)."""
    if name == "runpod":
        from tests.emulators.runpod import RunpodState, create_app

        state: Any = RunpodState(api_key=KEY)
    else:
        from tests.emulators.aimlapi import AimlState, create_app  # type: ignore[assignment]

        state = AimlState(api_key=KEY)
    app = create_app(state)

    from benchmarks._common import serve_with_stats  # lazily, like percentile below

    serve_with_stats(app, STATS_PATH, lambda: _stats(name, state))


class Emulator:
    """``python benchmarks/load.py --serve-emulator <name>`` as a subprocess."""

    def __init__(self, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-emulator", name],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the {name} emulator did not start (said {line!r})")
        self.url = line.split(" ", 1)[1]

    def cpu_s(self) -> float:
        """utime + stime from /proc (Linux; 0.0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}{STATS_PATH}", timeout=10).json()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- the run -------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    jobs: int
    succeeded: int
    failed: list[str]
    wall_s: float
    submit_s: float
    cpu_s: float
    emulator_cpu_s: float
    polls_per_job: float
    max_polls: int
    emulators: dict[str, dict[str, Any]]
    check_latencies_s: list[float] = field(default_factory=list)
    check_statuses: list[str] = field(default_factory=list)      # the status each check_job answered

    @property
    def check_median_s(self) -> float:
        return statistics.median(self.check_latencies_s)

    @property
    def check_p99_s(self) -> float:
        return _p99(self.check_latencies_s)

    @property
    def in_flight_latencies_s(self) -> list[float]:
        """check_job answers for jobs not finished yet (no video, no poster to render)."""
        return [t for t, s in zip(self.check_latencies_s, self.check_statuses)
                if s not in ("succeeded", "failed", "cancelled")]

    @property
    def max_submissions_per_job(self) -> int:
        return max(s["max_submissions_per_prompt"] for s in self.emulators.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("check_latencies_s")
        data.pop("check_statuses")
        in_flight = self.in_flight_latencies_s
        return {**data, "check_calls": len(self.check_latencies_s), "check_median_ms": 1000 * self.check_median_s,
                "check_p99_ms": 1000 * self.check_p99_s, "check_in_flight_calls": len(in_flight),
                "check_in_flight_median_ms": 1000 * statistics.median(in_flight) if in_flight else None,
                "check_in_flight_p99_ms": 1000 * _p99(in_flight) if in_flight else None,
                "max_submissions_per_job": self.max_submissions_per_job}


def _p99(samples: list[float]) -> float:
    from benchmarks._common import percentile  # lazily: run as a script, ROOT joins sys.path in __main__

    return percentile(samples, 99)


def _calls(n: int, image_urls: dict[str, str]) -> list[dict[str, Any]]:
    calls = []
    for i in range(n):
        provider = PROVIDERS[i % len(PROVIDERS)]
        args: dict[str, Any] = {"prompt": f"shot {i}: a paper boat crosses the pond", "provider": provider,
                                "wait_seconds": 0}
        if provider == "runpod":
            args.update(reference_images=[image_urls["runpod"]], duration=3)
        else:
            args.update(first_frame=image_urls["aimlapi"], duration=5)
        calls.append(args)
    return calls


async def run_load(jobs: int = 200, data_dir: Path | None = None, poll_s: float = 0.2, max_poll_s: float = 1.0,
                   deadline_s: float = 120.0, check_every_s: float = 0.01) -> LoadReport:
    """Run the scenario (see the module docstring) and return its figures."""
    from mcp import Client

    from kling_mcp.config import Settings
    from kling_mcp.jobs.diskcache_store import DiskcacheStore as JobStore
    from kling_mcp.server import create_server

    owned = tempfile.TemporaryDirectory(prefix="kling-load-") if data_dir is None else None
    data = Path(owned.name) if owned else Path(data_dir)  # type: ignore[arg-type]
    emulators = {name: Emulator(name) for name in PROVIDERS}
    try:
        settings = Settings.from_env({
            "RUNPOD_API_KEY": KEY, "KLING_MCP_RUNPOD_BASE_URL": f"{emulators['runpod'].url}/v2",
            "AIML_API_KEY": KEY, "KLING_MCP_AIMLAPI_BASE_URL": emulators["aimlapi"].url,
            "KLING_MCP_DATA_DIR": str(data), "KLING_MCP_POLL_INTERVAL_S": str(poll_s),
            "KLING_MCP_POLL_MAX_INTERVAL_S": str(max_poll_s)})
        # The image URLs point at nothing: neither kling-mcp nor these emulators fetch input images.
        calls = _calls(jobs, {name: f"{emu.url}/files/ref-{name}.png" for name, emu in emulators.items()})
        job_ids: list[str] = []
        latencies: list[float] = []
        statuses: list[str] = []
        async with Client(create_server(settings)) as client:
            emu_cpu0, cpu0, started = sum(e.cpu_s() for e in emulators.values()), time.process_time(), \
                time.perf_counter()

            async def submit(args: dict[str, Any]) -> None:
                result = await client.call_tool("generate_video", args)
                if result.is_error:
                    raise RuntimeError(f"generate_video failed: {result.content}")
                job_ids.append(result.structured_content["job_id"])

            async with anyio.create_task_group() as tg:
                for args in calls:
                    tg.start_soon(submit, args)
            submit_s = time.perf_counter() - started

            watcher = JobStore(data)            # a second handle: reading it is not MCP traffic
            try:
                rng = random.Random(7)
                with anyio.fail_after(deadline_s):
                    while await watcher.unfinished():
                        t0 = time.perf_counter()
                        checked = await client.call_tool("check_job", {"job_id": rng.choice(job_ids)})
                        latencies.append(time.perf_counter() - t0)
                        if checked.is_error:
                            raise RuntimeError(f"check_job failed: {checked.content}")
                        statuses.append(checked.structured_content["status"])
                        await anyio.sleep(check_every_s)
            finally:
                await watcher.close()
            wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu0
            emulator_cpu_s = sum(e.cpu_s() for e in emulators.values()) - emu_cpu0
        store = JobStore(data)
        try:
            finished = [await store.get(job_id) for job_id in job_ids]
        finally:
            await store.close()
        stats = {name: emu.stats() for name, emu in emulators.items()}
    finally:
        for emu in emulators.values():
            emu.close()
        if owned is not None:
            owned.cleanup()
    done = [j for j in finished if j is not None]
    return LoadReport(
        jobs=jobs, succeeded=sum(j.status.value == "succeeded" for j in done),
        failed=[f"{j.job_id} {j.status.value} {j.error}" for j in done if j.status.value != "succeeded"][:5],
        wall_s=wall_s, submit_s=submit_s, cpu_s=cpu_s, emulator_cpu_s=emulator_cpu_s,
        polls_per_job=statistics.mean(j.polls for j in done) if done else 0.0,
        max_polls=max((j.polls for j in done), default=0), emulators=stats, check_latencies_s=latencies,
        check_statuses=statuses)


def table(report: LoadReport) -> str:
    in_flight = report.in_flight_latencies_s
    rows = [
        ("jobs succeeded", f"{report.succeeded} / {report.jobs}"),
        ("wall time, first submit to last download", f"{report.wall_s:.2f} s"),
        ("  of which submitting all jobs", f"{report.submit_s:.2f} s"),
        ("kling-mcp CPU (server + client, one process)", f"{report.cpu_s:.2f} s "
                                                         f"({1000 * report.cpu_s / report.jobs:.1f} ms/job)"),
        ("emulators CPU (2 processes)", f"{report.emulator_cpu_s:.2f} s"),
        ("polls per job (mean / max)", f"{report.polls_per_job:.2f} / {report.max_polls}"),
        ("submissions per job (max)", str(report.max_submissions_per_job)),
        ("check_job calls during the run (job in flight)", f"{len(report.check_latencies_s)} ({len(in_flight)})"),
        ("check_job latency under load, median / p99", f"{1000 * report.check_median_s:.1f} ms / "
                                                       f"{1000 * report.check_p99_s:.1f} ms"),
        ("  job in flight, median / p99", f"{1000 * statistics.median(in_flight):.1f} ms / "
                                          f"{1000 * _p99(in_flight):.1f} ms" if in_flight else "-"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measurement'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--poll", type=float, default=0.2, help="first poll interval, seconds")
    parser.add_argument("--max-poll", type=float, default=1.0, help="largest poll interval, seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--serve-emulator", choices=PROVIDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulator:
        serve_emulator(args.serve_emulator)
        return 0
    report = anyio.run(lambda: run_load(args.jobs, poll_s=args.poll, max_poll_s=args.max_poll))
    print(f"{args.jobs} concurrent jobs, one kling-mcp process, Runpod + AI/ML API emulators "
          f"(poll {args.poll:g} s x1.5 up to {args.max_poll:g} s), {os.cpu_count()} CPUs\n")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    return 0 if report.succeeded == report.jobs else 1


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())

"""The ``concurrency`` section of ``run.py``: ``load.py``'s 200-concurrent-jobs scenario as table rows.

N ``generate_video`` calls (wait_seconds=0) go to one in-process server at once, split between the
Runpod and AI/ML API emulators (separate processes, loopback HTTP); the runner polls and downloads
them all while ``check_job`` is called in a loop. The scenario lives in ``load.py`` alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from ._common import Row
from .load import run_load

POLL_S, MAX_POLL_S = 0.5, 2.0


def run(n: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        report = anyio.run(lambda: run_load(n, data_dir=Path(tmp) / "data", poll_s=POLL_S, max_poll_s=MAX_POLL_S))
    if report.succeeded != report.jobs:
        raise RuntimeError(f"{report.jobs - report.succeeded} of {n} jobs did not succeed: {report.failed[:3]}")
    section = f"{n} concurrent jobs (emulators)"
    return [Row(section, "wall time, submit to all downloaded", "s", round(report.wall_s, 2), None, n,
                extra={"submit_s": round(report.submit_s, 2)}),
            Row(section, "kling-mcp CPU (server + client, one process)", "s", round(report.cpu_s, 2), None, n,
                extra={"cpu_per_job_ms": round(1000 * report.cpu_s / n, 1)}),
            Row(section, "emulators CPU (2 processes)", "s", round(report.emulator_cpu_s, 2), None, n),
            Row(section, "polls per job", "polls", round(report.polls_per_job, 2), float(report.max_polls), n,
                extra={"poll_interval": f"{POLL_S:g} s x1.5 up to {MAX_POLL_S:g} s"}),
            Row(section, "check_job while they run", "ms", round(1000 * report.check_median_s, 2),
                round(1000 * report.check_p99_s, 2), len(report.check_latencies_s))]

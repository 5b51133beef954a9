"""Load: one kling-mcp process drives 200 concurrent jobs to completion against the Runpod and AI/ML
API emulators (separate processes), each submitted exactly once, while ``check_job`` keeps answering
fast. The scenario is ``benchmarks/load.py``'s, so the benchmark cannot rot unnoticed.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from benchmarks.load import PROVIDERS, run_load, table

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

JOBS = 200


async def test_200_concurrent_jobs_all_succeed_with_one_submission_each_while_check_job_stays_fast(
        tmp_path: Path) -> None:
    report = await run_load(JOBS, data_dir=tmp_path / "data", deadline_s=120)
    print(table(report))            # shown with -s, and in the report of a failure

    assert report.succeeded == JOBS, report.failed
    for name in PROVIDERS:
        stats = report.emulators[name]
        assert stats["submissions"] == stats["accepted"] == JOBS // len(PROVIDERS), (name, stats)
    assert report.max_submissions_per_job == 1
    # Both emulators finish a job on its second poll; nothing polls much more than that.
    assert report.polls_per_job == pytest.approx(2.0, abs=0.5) and report.max_polls <= 4

    everything, in_flight = report.check_latencies_s, report.in_flight_latencies_s
    assert len(everything) >= 20 and len(in_flight) >= 10, (len(everything), len(in_flight))
    assert statistics.median(everything) < 0.05
    # Generous bounds for a shared 2-core machine: a blocked event loop (a synchronous download,
    # hash or sleep) would take seconds. A first look at a finished job also renders its poster.
    assert max(in_flight) < 0.5, sorted(in_flight)[-5:]
    assert report.check_p99_s < 1.0, sorted(everything)[-5:]

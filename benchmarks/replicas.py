"""Replicas: N ``kling-mcp serve --transport http`` processes on one store and one data dir drive M jobs.

The Runware emulator runs in its own process and counts, per job, the submissions and the polls (with
their times). M ``generate_video`` calls (``wait_seconds=0``) go out round-robin over the replicas;
optionally one replica is SIGKILLed as soon as every job is submitted, and the others must take its
jobs over (``KLING_MCP_LEASE_S``). While the jobs run, ``check_job`` (no wait) is timed on random jobs
through random live replicas. At the end every video is read (``resources/read``) from every live
replica. Run as root, each replica gets a host name of its own (a UTS namespace), so they look like separate
machines to each other and a killed replica's jobs are taken over when its leases expire.

Reported: submissions per second, ``check_job`` p50/p99, polls and submissions per job, and the
take-over time (from the kill to the first poll of each orphaned job by a survivor). The benchmark
runs the scenario on PostgreSQL and on diskcache (N processes on one machine) in the same run.

    python benchmarks/replicas.py                      # 3 replicas x 100 jobs, kill one, PG vs diskcache
    python benchmarks/replicas.py --replicas 4 --jobs 200 --store-url postgresql://...  --json out.json

Without ``--store-url`` a throwaway cluster is started (``tests/pg_cluster.py``: needs Debian's
postgresql). ``tests/test_replicas.py`` runs the same scenario and asserts on it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.replica_harness import (  # noqa: E402
    Emulator,
    Replica,
    can_separate_hosts,
    replica_env,
    start_replicas,
)


@dataclass
class ReplicaReport:
    backend: str
    replicas: int
    jobs: int
    succeeded: int
    failed: list[str]
    submit_s: float
    wall_s: float
    submissions: int
    max_submissions_per_job: int
    polls_per_job: float
    max_polls: int
    killed: bool
    own_hosts: bool
    orphans: int = 0
    takeover_s: list[float] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    reads: int = 0
    check_latencies_s: list[float] = field(default_factory=list)
    idle_check_latencies_s: list[float] = field(default_factory=list)

    @property
    def submissions_per_s(self) -> float:
        return self.jobs / self.submit_s if self.submit_s else 0.0

    def check_ms(self, q: float, idle: bool = False) -> float | None:
        from benchmarks._common import percentile

        samples = self.idle_check_latencies_s if idle else self.check_latencies_s
        return 1000 * percentile(samples, q) if samples else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("check_latencies_s")
        data.pop("idle_check_latencies_s")
        return {**data, "submissions_per_s": self.submissions_per_s, "check_calls": len(self.check_latencies_s),
                "check_p50_ms": self.check_ms(50), "check_p99_ms": self.check_ms(99),
                "idle_check_p50_ms": self.check_ms(50, idle=True), "idle_check_p99_ms": self.check_ms(99, idle=True),
                "takeover_max_s": max(self.takeover_s, default=None)}


async def run_replicas(
    *, replicas: int = 3, jobs: int = 100, store_url: str | None, data_dir: Path, kill: bool = True,
    processing_polls: int = 4, poll_s: float = 0.3, max_poll_s: float = 1.0, lease_s: float = 3.0,
    concurrency: int = 16, deadline_s: float = 240.0, read_videos: bool = True, idle_checks: int = 200,
    own_hosts: bool | None = None,
) -> ReplicaReport:
    """Run the scenario of the module docstring once and return its figures."""
    from mcp import Client

    from kling_mcp.config import Settings
    from kling_mcp.jobs import open_store

    own_hosts = can_separate_hosts() if own_hosts is None else own_hosts
    emulator = Emulator(processing_polls)
    env = replica_env(emulator, data_dir, store_url, KLING_MCP_LEASE_S=str(lease_s),
                      KLING_MCP_POLL_INTERVAL_S=str(poll_s), KLING_MCP_POLL_MAX_INTERVAL_S=str(max_poll_s))
    servers: list[Replica] = []
    store = open_store(Settings.from_env(env))
    try:
        servers = start_replicas(replicas, env, data_dir.parent, own_hosts=own_hosts)
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(r.url)) for r in servers]
            job_ids: list[str] = []
            via: dict[str, int] = {}
            limit = anyio.Semaphore(concurrency)

            async def submit(n: int) -> None:
                async with limit:
                    result = await clients[n % replicas].call_tool("generate_video", {
                        "prompt": f"shot {n}: a paper boat crosses a moonlit pond", "provider": "runware",
                        "tier": "standard", "duration": 5, "wait_seconds": 0})
                if result.is_error:
                    raise RuntimeError(f"generate_video on replica {n % replicas} failed: {result.content}")
                job_id = result.structured_content["job_id"]
                job_ids.append(job_id)
                via[job_id] = n % replicas

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for n in range(jobs):
                    tg.start_soon(submit, n)
            submit_s = time.perf_counter() - started
            killed_at = None
            if kill:
                killed_at = time.time()
                servers[0].kill()
            live = [i for i, s in enumerate(servers) if s.alive]

            latencies: list[float] = []
            rng = random.Random(7)
            with anyio.fail_after(deadline_s):
                while await store.unfinished():
                    client = clients[rng.choice(live)]
                    t0 = time.perf_counter()
                    checked = await client.call_tool("check_job", {"job_id": rng.choice(job_ids)})
                    latencies.append(time.perf_counter() - t0)
                    if checked.is_error:
                        raise RuntimeError(f"check_job failed: {checked.content}")
                    await anyio.sleep(0.02)
            wall_s = time.perf_counter() - started
            idle: list[float] = []
            for _ in range(idle_checks):  # every job finished: what a check costs without load
                t0 = time.perf_counter()
                await clients[live[0]].call_tool("check_job", {"job_id": rng.choice(job_ids)})
                idle.append(time.perf_counter() - t0)

            unreadable: list[str] = []
            reads = 0
            if read_videos:
                for job_id in job_ids:
                    for index in live:
                        reads += 1
                        try:
                            got = await clients[index].read_resource(f"kling://jobs/{job_id}/videos/0")
                            blob = getattr(got.contents[0], "blob", "")
                            if len(blob) < 100:
                                unreadable.append(f"{job_id} on replica {index}: empty")
                        except Exception as exc:
                            unreadable.append(f"{job_id} on replica {index}: {exc}")
        finished = [await store.get(job_id) for job_id in job_ids]
        stats = emulator.stats()
    finally:
        await store.close()
        for server in servers:
            server.close()
        emulator.close()
    done = [j for j in finished if j is not None]
    mine = [stats.get(job_id, {"submissions": 0, "polls": []}) for job_id in job_ids]
    takeover: list[float] = []
    if killed_at is not None:
        for job_id in job_ids:
            later = [t for t in stats.get(job_id, {}).get("polls", []) if t > killed_at]
            if via[job_id] == 0 and later:
                takeover.append(min(later) - killed_at)
    return ReplicaReport(
        backend="postgresql" if store_url else "diskcache", replicas=replicas, jobs=jobs,
        succeeded=sum(j.status.value == "succeeded" for j in done),
        failed=[f"{j.job_id} {j.status.value} {j.error}" for j in done if j.status.value != "succeeded"][:5],
        submit_s=submit_s, wall_s=wall_s, submissions=sum(m["submissions"] for m in mine),
        max_submissions_per_job=max((m["submissions"] for m in mine), default=0),
        polls_per_job=statistics.mean(len(m["polls"]) for m in mine) if mine else 0.0,
        max_polls=max((len(m["polls"]) for m in mine), default=0), killed=kill, own_hosts=own_hosts,
        orphans=len(takeover),
        takeover_s=takeover, unreadable=unreadable, reads=reads, check_latencies_s=latencies,
        idle_check_latencies_s=idle)


def table(reports: list[ReplicaReport]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    rows: list[tuple[str, ...]] = [("measurement", *(r.backend for r in reports))]
    rows += [
        ("jobs succeeded", *(f"{r.succeeded} / {r.jobs}" for r in reports)),
        ("submissions per second (all replicas)", *(f"{r.submissions_per_s:.1f}" for r in reports)),
        ("wall time, first submit to last download", *(f"{r.wall_s:.1f} s" for r in reports)),
        ("submissions per job (max)", *(str(r.max_submissions_per_job) for r in reports)),
        ("polls per job (mean / max)", *(f"{r.polls_per_job:.2f} / {r.max_polls}" for r in reports)),
        ("check_job p50 / p99 (no wait, under load)", *(f"{ms(r.check_ms(50))} / {ms(r.check_ms(99))}"
                                                      for r in reports)),
        ("check_job p50 / p99 (no wait, idle, finished job)",
         *(f"{ms(r.check_ms(50, True))} / {ms(r.check_ms(99, True))}" for r in reports)),
        ("killed replica's jobs taken over", *(str(r.orphans) if r.killed else "-" for r in reports)),
        ("take-over time after SIGKILL, median / max",
         *(f"{statistics.median(r.takeover_s):.1f} s / {max(r.takeover_s):.1f} s" if r.takeover_s else "-"
           for r in reports)),
        ("videos read from every survivor", *(f"{r.reads - len(r.unreadable)} / {r.reads}" for r in reports)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--lease", type=float, default=3.0, help="KLING_MCP_LEASE_S, seconds")
    parser.add_argument("--no-kill", action="store_true", help="keep every replica alive")
    parser.add_argument("--store-url", help="a PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    cluster = None
    url = args.store_url
    if not url:
        from tests.pg_cluster import start_cluster

        cluster = start_cluster()
        url = cluster.url()
    reports = []
    try:
        for store_url in (url, None):
            with tempfile.TemporaryDirectory(prefix="kling-replicas-") as tmp:
                data_dir = Path(tmp) / "data"
                data_dir.mkdir()
                run = functools.partial(
                    run_replicas, replicas=args.replicas, jobs=args.jobs, store_url=store_url, data_dir=data_dir,
                    kill=not args.no_kill, lease_s=args.lease)
                reports.append(anyio.run(run))
    finally:
        if cluster is not None:
            cluster.destroy()
    print(f"{args.replicas} replicas x {args.jobs} jobs, Runware emulator, lease {args.lease:g} s, "
          f"{'one replica SIGKILLed after submitting' if not args.no_kill else 'no kill'}, "
          f"{'each replica its own host name' if reports[0].own_hosts else 'one host'}\n")
    print(table(reports))
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in reports], indent=1))
    return 0 if all(r.succeeded == r.jobs for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

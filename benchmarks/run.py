#!/usr/bin/env python3
"""Run the kling-mcp benchmarks and print a markdown table; writes bench-results/latest.json.

    python benchmarks/run.py            # the full set (a few minutes on 2 cores)
    python benchmarks/run.py --quick    # small sizes, a smoke run (about half a minute)
    python benchmarks/run.py --only cold_start latency
    python benchmarks/run.py --only download --runs 7      # more repetitions where the machine is noisy

Sections: cold_start (stdio spawn -> initialize, vs a bare MCPServer with one tool), latency
(estimate_cost and check_job in-process and over stdio, vs the bare server's echo), store (check_job
with 10,000 jobs stored vs 10), concurrency (200 jobs against the Runpod and AI/ML API emulators, in
process), server_cpu (the same jobs with the server on stdio: its CPU per job), download (200 MB from a
loopback server, vs curl), assembly (remux of 10 x 5 s 720p shots vs copying the bytes; crossfade
re-encode as a multiple of real time). Every ratio compares two numbers measured in the
same run on the same machine. Benchmarks are not tests: they never fail on a slow number.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):                   # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

import anyio

from benchmarks._common import ROOT, Row, machine, markdown, to_json

SECTIONS = ("cold_start", "latency", "store", "concurrency", "server_cpu", "download", "assembly")
FULL = {"cold_runs": 15, "calls": 500, "stdio_calls": 300, "store_sizes": (10, 10_000), "jobs": 200,
        "server_cpu_runs": 3, "download_mb": 200, "download_runs": 5, "assembly": (10, 5.0, 7, 4, 3)}
QUICK = {"cold_runs": 3, "calls": 50, "stdio_calls": 30, "store_sizes": (10, 500), "jobs": 20,
         "server_cpu_runs": 1, "download_mb": 20, "download_runs": 1, "assembly": (3, 2.0, 2, 2, 1)}


def _section(name: str, p: dict) -> list[Row]:
    if name == "cold_start":
        from benchmarks import cold_start

        return cold_start.run(p["cold_runs"])
    if name == "latency":
        from benchmarks import latency

        return anyio.run(latency.run_in_process, p["calls"]) + anyio.run(latency.run_stdio, p["stdio_calls"])
    if name == "store":
        from benchmarks import latency

        return anyio.run(latency.run_store_scale, p["calls"], p["store_sizes"])
    if name == "concurrency":
        from benchmarks import concurrency

        return concurrency.run(p["jobs"])
    if name == "server_cpu":
        from benchmarks import server_cpu

        return server_cpu.run(p["jobs"], p["server_cpu_runs"])
    if name == "assembly":
        from benchmarks import assembly

        return assembly.run(*p["assembly"])
    from benchmarks import download_bench

    return download_bench.run(p["download_mb"], p["download_runs"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures to quote")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "latest.json"))
    parser.add_argument("--runs", type=int, help="repetitions of cold_start, server_cpu and download")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    params = dict(QUICK if args.quick else FULL)
    if args.runs:
        params.update(cold_runs=args.runs, server_cpu_runs=args.runs, download_runs=args.runs)
    rows: list[Row] = []
    started = time.time()
    for name in SECTIONS:
        if name in args.only:
            for noisy in ("httpx", "kling_mcp", "mcp"):    # MCPServer() sets the root logger to INFO
                logging.getLogger(noisy).setLevel(logging.ERROR)
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows += _section(name, params)
    info = machine()
    print(f"kling-mcp benchmarks{' (--quick)' if args.quick else ''}: {info['cpu']}, {info['nproc']} CPUs, "
          f"Python {info['python']}, mcp {info['mcp']}, {info['os']}\n")
    print(markdown(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "started": started, "seconds": round(time.time() - started, 1),
                               "machine": info, "params": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in params.items()},
                               "results": to_json(rows)}, indent=1))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

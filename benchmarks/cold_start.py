"""Cold start over stdio: spawn the server, send ``initialize``, time until the answer arrives.

kling-mcp (``python -m kling_mcp serve`` on an existing data dir) against ``bare_server.py`` (a bare
MCPServer with one tool), interleaved run by run so both see the same machine state.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import ROOT, Row, clean_env

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"


CPU_S: list[float] = []  # CPU seconds each timed process had used when its answer arrived (Linux)


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_initialize(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``command`` to reading its answer to ``initialize`` (its CPU seconds until
    then are appended to CPU_S: unlike wall time, they do not grow with other work on the machine)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=ROOT, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(INITIALIZE)
        proc.stdin.flush()
        answer = proc.stdout.readline()
        elapsed = time.perf_counter() - started
        cpu = _cpu_s(proc.pid)
        if cpu is not None:
            CPU_S.append(cpu)
        reply = json.loads(answer)
        if reply.get("id") != 1 or "result" not in reply:
            raise RuntimeError(f"{command} answered initialize with {answer[:300]!r}")
        return elapsed
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(runs: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        env = clean_env(KLING_MCP_DATA_DIR=str(Path(tmp) / "data"))
        # An installed package has its .pyc files: with PYTHONDONTWRITEBYTECODE set (some CI and agent
        # shells), the warm-up could not write them and every run would compile kling_mcp from source.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        kling = [sys.executable, "-m", "kling_mcp", "serve"]
        bare = [sys.executable, str(ROOT / "benchmarks" / "bare_server.py")]
        time_initialize(kling, env)            # warm-up: page cache, .pyc files, the data dir
        time_initialize(bare, env)
        ours, base, ours_cpu, base_cpu = [], [], [], []
        for _ in range(runs):
            CPU_S.clear()
            base.append(time_initialize(bare, env))
            ours.append(time_initialize(kling, env))
            if len(CPU_S) == 2:
                base_cpu.append(CPU_S[0])
                ours_cpu.append(CPU_S[1])
    cpu = {}
    if base_cpu and ours_cpu:
        cpu = {"cpu_ms": round(1000 * statistics.median(ours_cpu)),
               "bare_cpu_ms": round(1000 * statistics.median(base_cpu)),
               "cpu_ratio": round(statistics.median(ours_cpu) / statistics.median(base_cpu), 2)}
    baseline = Row.of("cold start (stdio)", "bare MCPServer, 1 tool", base)
    return [baseline, Row.of("cold start (stdio)", "kling-mcp serve", ours, budget="<= 1.10x", **cpu).against(baseline)]

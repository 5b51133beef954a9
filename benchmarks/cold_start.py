"""Cold start over stdio: spawn the server, send ``initialize``, time until the answer arrives.

kling-mcp (``python -m kling_mcp serve`` on an existing data dir) against ``bare_server.py`` (a bare
MCPServer with one tool), interleaved run by run so both see the same machine state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import ROOT, Row, clean_env

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"


def time_initialize(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``command`` to reading its answer to ``initialize``."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=ROOT, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(INITIALIZE)
        proc.stdin.flush()
        answer = proc.stdout.readline()
        elapsed = time.perf_counter() - started
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
        kling = [sys.executable, "-m", "kling_mcp", "serve"]
        bare = [sys.executable, str(ROOT / "benchmarks" / "bare_server.py")]
        time_initialize(kling, env)            # warm-up: page cache, .pyc files, the data dir
        time_initialize(bare, env)
        ours, base = [], []
        for _ in range(runs):
            base.append(time_initialize(bare, env))
            ours.append(time_initialize(kling, env))
    baseline = Row.of("cold start (stdio)", "bare MCPServer, 1 tool", base)
    return [baseline, Row.of("cold start (stdio)", "kling-mcp serve", ours, budget="<= 1.10x").against(baseline)]

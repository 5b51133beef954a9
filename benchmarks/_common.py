"""Shared helpers: sample statistics, result rows, the markdown table, the machine description."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without provider keys or kling-mcp settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return {**env, **extra}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); with few samples p99 is the maximum."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class Row:
    """One line of the results table. ``median``/``p99`` are in ``unit``; ``ratio`` is vs ``baseline``."""

    section: str
    name: str
    unit: str
    median: float | None = None
    p99: float | None = None
    n: int = 0
    baseline: str | None = None
    ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, section: str, name: str, samples: list[float], unit: str = "ms", scale: float = 1000.0,
           **extra: Any) -> Row:
        scaled = [s * scale for s in samples]
        return cls(section, name, unit, statistics.median(scaled), percentile(scaled, 99), len(samples),
                   extra=extra)

    def against(self, base: Row) -> Row:
        self.baseline = base.name
        if self.median is not None and base.median:
            self.ratio = self.median / base.median
        return self


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(rows: list[Row]) -> str:
    head = "| section | measurement | median | p99 | n | vs baseline | notes |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        ratio = f"{r.ratio:.2f}x {r.baseline}" if r.ratio is not None else "-"
        notes = ", ".join(f"{k} {_num(v) if isinstance(v, float) else v}" for k, v in r.extra.items())
        p99 = f"{_num(r.p99)} {r.unit}" if r.p99 is not None else "-"
        lines.append(f"| {r.section} | {r.name} | {_num(r.median)} {r.unit} | {p99} | {r.n} | {ratio} | "
                     f"{notes or '-'} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    return {"cpu": cpu, "nproc": os.cpu_count(), "python": sys.version.split()[0], "os": platform.platform(),
            "mcp": version("mcp"), "kling-mcp": version("kling-mcp"), "httpx": version("httpx")}


def to_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def serve_with_stats(app: Any, stats_path: str, stats: Callable[[], Any]) -> None:
    """Serve ``app`` on a free loopback port, answering ``GET stats_path`` with ``stats()`` as JSON; print
    ``READY <url>`` once listening, then serve until killed (the emulator subprocess of a benchmark)."""
    import uvicorn
    from starlette.responses import JSONResponse

    async def with_stats(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == stats_path:
            return await JSONResponse(stats())(scope, receive, send)
        return await app(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(with_stats, log_level="warning", lifespan="off", access_log=False))

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])

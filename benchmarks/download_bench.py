"""Download throughput and memory: ``kling_mcp.download.download`` against ``curl -o`` on the same
file from the same loopback HTTP server (``python -m http.server`` in a subprocess).

Each client runs as its own process so its peak RSS (VmHWM) is its own: curl's is sampled while it
runs, the kling-mcp child reports its own, with its growth during the download (after the imports)
and, in a separate run, the tracemalloc peak (Python heap). Our download fsyncs the file before it
returns (a job is marked succeeded only once its video is durable); curl does not.

``python -m benchmarks.download_bench child URL DEST [--tracemalloc]`` is the child's entry point.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import ROOT, Row, clean_env


def _write_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)


def _hwm_mb(pid: int | str = "self") -> float:
    """Peak RSS (VmHWM) of a live process in MB. Unlike ru_maxrss it starts afresh at exec, so a child
    does not inherit this (large) benchmark process's figure."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status; this benchmark needs Linux")


def _wait(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for a child, sampling its peak RSS until it exits; returns (exit code, peak RSS MB)."""
    peak = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, _hwm_mb(proc.pid))
        except (OSError, RuntimeError, ValueError):
            pass                                # exiting between poll() and the read
        time.sleep(0.002)
    return proc.returncode, peak


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _curl(url: str, dest: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(["curl", "-sS", "--fail", "-o", str(dest), url])
    code, rss = _wait(proc)
    if code != 0:
        raise RuntimeError(f"curl exited {code}")
    return time.perf_counter() - started, rss


def _ours(url: str, dest: Path, tracemalloc: bool = False) -> tuple[float, float, dict]:
    command = [sys.executable, "-m", "benchmarks.download_bench", "child", url, str(dest)]
    started = time.perf_counter()
    proc = subprocess.Popen([*command, *(["--tracemalloc"] if tracemalloc else [])], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=clean_env())
    assert proc.stdout is not None
    report = proc.stdout.read()
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"the download child exited {code}: {report[-500:]}")
    parsed = json.loads(report)
    return time.perf_counter() - started, parsed["peak_rss_mb"], parsed


def run(size_mb: int, runs: int) -> list[Row]:
    if subprocess.run(["curl", "--version"], capture_output=True).returncode != 0:
        raise RuntimeError("curl is not installed; install it to compare download throughput.")
    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        _write_file(root / "www" / "video.mp4", size_mb << 20)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(root / "www")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/video.mp4"
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the loopback file server did not start") from None
                    time.sleep(0.05)
            _curl(url, root / "warm.bin")                       # page cache warm for both
            curl_s, curl_rss, ours_s, ours_rss, child = [], [], [], [], []
            for i in range(runs):
                t, rss = _curl(url, root / f"curl-{i}.bin")
                curl_s.append(t)
                curl_rss.append(rss)
                (root / f"curl-{i}.bin").unlink()
                t, rss, report = _ours(url, root / "data" / f"ours-{i}.mp4")
                ours_s.append(t)
                ours_rss.append(rss)
                child.append(report)
                (root / "data" / f"ours-{i}.mp4").unlink()
            _, _, traced = _ours(url, root / "data" / "traced.mp4", tracemalloc=True)
        finally:
            server.terminate()
            server.wait(5)
    section = f"download {size_mb} MB (loopback)"
    mb = float(size_mb)
    base = Row(section, "curl -o", "MB/s", round(mb / statistics.median(curl_s), 1),
               None, runs, extra={"peak_rss_mb": round(max(curl_rss), 1)})
    ours = Row(section, "kling_mcp.download (fsync)", "MB/s",
               round(mb / statistics.median(r["seconds"] for r in child), 1), None, runs,
               extra={"budget": ">= 0.8x", "with_process_start_MBps": round(mb / statistics.median(ours_s), 1),
                      "peak_rss_mb": round(max(ours_rss), 1),
                      "rss_growth_mb": round(max(r["rss_growth_mb"] for r in child), 1),
                      "tracemalloc_peak_mb": round(traced["tracemalloc_peak_mb"], 2)}).against(base)
    return [base, ours]


def _child(url: str, dest: str, traced: bool) -> None:
    import anyio
    import httpx

    from kling_mcp.download import download

    if traced:
        import tracemalloc

        tracemalloc.start()
    before = _hwm_mb()

    async def go() -> float:
        async with httpx.AsyncClient(timeout=60) as client:
            started = time.perf_counter()
            result = await download(client, url, Path(dest), root=Path(dest).parent, max_bytes=4 << 30)
            assert result.size_bytes > 0
            return time.perf_counter() - started

    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    seconds = anyio.run(go)
    report = {"seconds": seconds, "peak_rss_mb": _hwm_mb(), "rss_growth_mb": _hwm_mb() - before}
    if traced:
        report["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(report))


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "child":
    _child(sys.argv[2], sys.argv[3], "--tracemalloc" in sys.argv[4:])

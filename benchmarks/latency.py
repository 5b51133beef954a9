"""Tool latency: ``estimate_cost`` and ``check_job`` (no wait), in-process (the SDK's in-memory client)
and over stdio (a real subprocess), against the bare server's ``echo`` tool measured the same way and
interleaved call by call;
and ``check_job`` with 10,000 jobs in the store against 10.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import ROOT, Row, clean_env

ESTIMATE = {"prompt": "a paper boat on a moonlit lake", "duration": 5, "aspect_ratio": "16:9"}


async def _timed(calls: int, timed: dict[str, tuple[Any, str, dict[str, Any]]]) -> dict[str, list[float]]:
    """``calls`` rounds; each round times one call of every entry (name -> client, tool, arguments), so
    the baseline and the tools see the same machine load (a shared machine drifts within seconds)."""
    for client, tool, args in timed.values():                # warm-up
        for _ in range(max(3, calls // 20)):
            await client.call_tool(tool, args)
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(calls):
        for name, (client, tool, args) in timed.items():
            started = time.perf_counter()
            result = await client.call_tool(tool, args)
            samples[name].append(time.perf_counter() - started)
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content}")
    return samples


async def _finished_job(client: Any) -> str:
    result = await client.call_tool("generate_video", {"prompt": "bench", "provider": "local", "duration": 3,
                                                       "wait_seconds": 50})
    job = result.structured_content or {}
    if job.get("status") != "succeeded":
        raise RuntimeError(f"the local job did not finish: {job}")
    return job["job_id"]


async def _measure(kling: Any, bare: Any, transport: str, calls: int) -> list[Row]:
    section = f"tool latency ({transport})"
    job_id = await _finished_job(kling)
    budget = {"budget": "<= 1.5x"} if transport == "stdio" else {}
    samples = await _timed(calls, {"echo": (bare, "echo", {"text": "hi"}),
                                   "estimate": (kling, "estimate_cost", ESTIMATE),
                                   "check": (kling, "check_job", {"job_id": job_id})})
    base = Row.of(section, "bare echo", samples["echo"])
    est = Row.of(section, "estimate_cost", samples["estimate"], **budget)
    chk = Row.of(section, "check_job (no wait)", samples["check"], **budget)
    return [base, est.against(base), chk.against(base)]


async def run_in_process(calls: int) -> list[Row]:
    from mcp import Client

    from kling_mcp.config import Settings
    from kling_mcp.server import create_server

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bare_server import mcp as bare_server

    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        server = create_server(Settings.from_env({"KLING_MCP_DATA_DIR": str(Path(tmp) / "data")}))
        async with Client(server) as kling, Client(bare_server) as bare:
            return await _measure(kling, bare, "in-process", calls)


async def run_stdio(calls: int) -> list[Row]:
    from mcp import Client, StdioServerParameters

    with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
        env = clean_env(KLING_MCP_DATA_DIR=str(Path(tmp) / "data"))
        kling = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=env, cwd=ROOT)
        bare = StdioServerParameters(command=sys.executable, args=[str(ROOT / "benchmarks" / "bare_server.py")],
                                     env=env, cwd=ROOT)
        async with Client(kling) as k, Client(bare) as b:
            return await _measure(k, b, "stdio", calls)


async def _fill(data_dir: Path, n: int) -> list[str]:
    """``n`` finished jobs written straight into a store (what months of use leave behind)."""
    from kling_mcp.jobs.diskcache_store import DiskcacheStore
    from kling_mcp.jobs.model import Job, JobStatus, StoredVideo
    from kling_mcp.requests import VideoSpec

    store = DiskcacheStore(data_dir)
    ids = []
    try:
        now = time.time()
        for i in range(n):
            job = Job(provider="local", model="local-preview", tier="standard", status=JobStatus.SUCCEEDED,
                      spec=VideoSpec(operation="text", prompt=f"stored job {i}", duration=5, aspect_ratio="16:9"),
                      fingerprint=f"fp-{i}", progress=100.0, cost_usd=0.0, created_at=now - n + i,
                      videos=[StoredVideo(index=0, path=str(data_dir / "videos" / f"{i}.mp4"), width=640,
                                          height=360, duration_s=5.0, size_bytes=1000)])
            await store.create(job)
            ids.append(job.job_id)
    finally:
        await store.close()
    return ids


async def run_store_scale(calls: int, sizes: tuple[int, int]) -> list[Row]:
    from mcp import Client

    from kling_mcp.config import Settings
    from kling_mcp.server import create_server

    rows: list[Row] = []
    section = "check_job vs store size (in-process)"
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="kling-bench-") as tmp:
            data = Path(tmp) / "data"
            filled = time.perf_counter()
            ids = await _fill(data, size)
            filled = time.perf_counter() - filled
            rng = random.Random(size)
            server = create_server(Settings.from_env({"KLING_MCP_DATA_DIR": str(data)}))
            async with Client(server) as client:
                for job_id in rng.sample(ids, min(len(ids), 5)):
                    await client.call_tool("check_job", {"job_id": job_id})
                samples = []
                for _ in range(calls):
                    job_id = rng.choice(ids)
                    started = time.perf_counter()
                    result = await client.call_tool("check_job", {"job_id": job_id})
                    samples.append(time.perf_counter() - started)
                    assert (result.structured_content or {}).get("job_id") == job_id
            rows.append(Row.of(section, f"check_job, {size:,} jobs stored", samples, fill_s=round(filled, 1)))
    rows[1].against(rows[0])
    return rows

"""``kling-mcp demo``: the main job end to end through a real MCP client session over stdio, on the
free ``local`` provider: quote, generate, wait (polling check_job), print the video's path."""

from __future__ import annotations

import os
import sys
import time

import anyio

from .vocabulary import TERMINAL_NAMES


async def _demo(prompt: str, duration: int, aspect_ratio: str) -> int:
    from mcp import Client, StdioServerParameters

    env = dict(os.environ)
    params = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=env)
    started = time.monotonic()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        say(f"  progress {progress:5.1f}% {message or ''}")

    async with Client(params) as client:
        say(f"connected to kling-mcp over stdio ({client.protocol_version})")
        args = {"prompt": prompt, "duration": duration, "aspect_ratio": aspect_ratio, "provider": "local"}
        quote = await client.call_tool("estimate_cost", args)
        if quote.is_error:
            say(f"estimate_cost failed: {quote.content[0].text}")  # type: ignore[union-attr]
            return 1
        for q in quote.structured_content["quotes"]:
            say(f"  quote {q['provider']}: ${q['cost_usd']} ({q['basis']})")
        result = await client.call_tool("generate_video", {**args, "wait_seconds": 30}, progress_callback=on_progress)
        while not result.is_error and result.structured_content["status"] not in TERMINAL_NAMES:
            job_id = result.structured_content["job_id"]
            result = await client.call_tool(
                "check_job", {"job_id": job_id, "wait_seconds": 30}, progress_callback=on_progress
            )
        if result.is_error:
            say(f"generate_video failed: {result.content[0].text}")  # type: ignore[union-attr]
            return 1
        job = result.structured_content
        if job["status"] != "succeeded":
            say(f"job {job['job_id']} ended {job['status']}: {job['error']}")
            return 1
        video = job["videos"][0]
        say(
            f"job {job['job_id']} succeeded in {time.monotonic() - started:.1f} s: {video['width']}x"
            f"{video['height']}, {video['duration_s']} s, {video['size_bytes']} bytes, resource {video['uri']}"
        )
        print(video["path"], flush=True)
        return 0


def run_demo(prompt: str, duration: int = 5, aspect_ratio: str = "16:9") -> int:
    return anyio.run(_demo, prompt, duration, aspect_ratio)

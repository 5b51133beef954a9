#!/usr/bin/env python3
"""A storyboard agent: plans shots, quotes them, then generates them with continuity through kling-mcp.

It talks to the server the way any MCP host does: it launches ``python -m kling_mcp serve`` over stdio
and uses only MCP requests (prompts/get, completion/complete, tools/call, resources/read). The last
frame of shot N becomes the ``first_frame`` of shot N+1, so the shots join up. Every shot has an
``idempotency_key`` (``<topic>-shot-<n>``): running the agent again, or retrying after a timeout, returns
the same jobs instead of paying twice.

    python examples/storyboard_agent.py "a paper boat's journey to the sea"              # free, local
    python examples/storyboard_agent.py "a fox in the snow" --provider aimlapi --tier pro # needs AIML_API_KEY

It prints the plan, the quote, progress, and finally the resource links of the shots in order (on
stdout, one per line: ``<kling:// uri> <local path>``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import PromptReference, ResourceLink

TERMINAL = ("succeeded", "failed", "cancelled")
BEATS = [  # (what happens, camera) for each shot; the topic and the previous frame keep them consistent
    ("establishing shot: the scene and the main subject, calm and wide", "slow aerial push-in"),
    ("the main action: the subject moves through the scene, the key moment of the story", "tracking shot"),
    ("resolution: the subject arrives, the light settles, a quiet final image", "slow pull-back"),
    ("an epilogue detail that echoes the first shot", "close-up, shallow depth of field"),
]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def plan_shots(topic: str, shots: int, style: str) -> list[str]:
    """One prompt per shot: subject, action, camera and lighting, with the same look in every shot."""
    beats = [BEATS[min(i, len(BEATS) - 1)] for i in range(shots)]
    return [f"{topic}. Shot {n} of {shots}, {what}. Camera: {camera}. {style}"
            for n, (what, camera) in enumerate(beats, start=1)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "storyboard"


async def wait_for(client: Client, result: Any, shot: int) -> Any:
    """Poll check_job (the server waits up to wait_seconds per call) until the job is finished."""
    async def progress(value: float, total: float | None, message: str | None) -> None:
        say(f"  shot {shot}: {value:5.1f}% {message or ''}")

    while (result.structured_content or {}).get("status") not in TERMINAL:
        job_id = result.structured_content["job_id"]
        result = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 45},
                                        progress_callback=progress)
        if result.is_error:
            raise RuntimeError(f"check_job failed: {result.content[0].text}")
    return result


def save_last_frame(video_path: str, out_dir: Path, shot: int) -> Path:
    """The video's last frame as a PNG (the server and the agent share this machine's files)."""
    from kling_mcp.media import last_frame_png

    path = out_dir / f"shot-{shot}-last-frame.png"
    path.write_bytes(last_frame_png(video_path))
    return path


def placeholder_frame(out_dir: Path, aspect_ratio: str) -> Path:
    """A plain image of the right shape, to quote shots 2+ as image-to-video before frame 1 exists."""
    from PIL import Image

    w, h = (int(x) for x in aspect_ratio.split(":"))
    path = out_dir / f"placeholder-{w}x{h}.png"
    Image.new("RGB", (512 * w // max(w, h), 512 * h // max(w, h)), (128, 128, 128)).save(path)
    return path


async def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    server = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "serve"], env=dict(os.environ))
    async with Client(server) as client:
        say(f"connected to kling-mcp ({client.protocol_version})")
        # 1. Plan: the server's storyboard prompt is the brief an LLM would follow; we follow it in code.
        ratios = await client.complete(PromptReference(type="ref/prompt", name="storyboard"),
                                       {"name": "aspect_ratio", "value": ""})
        if args.aspect_ratio not in ratios.completion.values:
            say(f"--aspect-ratio must be one of {', '.join(ratios.completion.values)}")
            return 2
        brief = await client.get_prompt("storyboard", {"topic": args.topic, "shots": str(args.shots),
                                                       "aspect_ratio": args.aspect_ratio})
        text = brief.messages[0].content.text  # type: ignore[union-attr]
        say("storyboard brief from the server:\n  " + text.replace("\n", "\n  "))
        prompts = plan_shots(args.topic, args.shots, args.style)
        for n, prompt in enumerate(prompts, start=1):
            say(f"shot {n}: {prompt}")

        # 2. Quote every shot before spending anything (shots 2+ are image-to-video: first_frame).
        common = {"provider": args.provider, "duration": args.duration, "aspect_ratio": args.aspect_ratio}
        if args.tier:
            common["tier"] = args.tier
        total = 0.0
        placeholder = placeholder_frame(out_dir, args.aspect_ratio)
        for n, prompt in enumerate(prompts, start=1):
            frame = {"first_frame": str(placeholder)} if n > 1 else {}
            quote = await client.call_tool("estimate_cost", {**common, **frame, "prompt": prompt})
            if quote.is_error:
                say(f"estimate_cost refused shot {n}: {quote.content[0].text}")  # type: ignore[union-attr]
                return 1
            estimate = quote.structured_content or {}
            chosen = next((q for q in estimate["quotes"] if q["provider"] == estimate["recommended"]), None)
            if chosen is None:
                say(f"no configured provider accepts shot {n}: " + "; ".join(
                    f"{q['provider']}: {' '.join(q['problems'])}" for q in estimate["quotes"] if q["problems"]))
                return 1
            total += chosen["cost_usd"] or 0.0
        say(f"estimated total for {len(prompts)} shots: ${total:.3f}")

        # 3. Generate with continuity: shot N+1 starts on shot N's last frame.
        links: list[tuple[str, str]] = []
        first_frame: Path | None = None
        for n, prompt in enumerate(prompts, start=1):
            call = {**common, "prompt": prompt, "idempotency_key": f"{slug(args.topic)}-shot-{n}",
                    "wait_seconds": 45}
            if first_frame is not None:
                call["first_frame"] = str(first_frame)
            started = time.monotonic()
            result = await client.call_tool("generate_video", call)
            if result.is_error:
                say(f"generate_video refused shot {n}: {result.content[0].text}")  # type: ignore[union-attr]
                return 1
            result = await wait_for(client, result, n)
            job = result.structured_content
            if job["status"] != "succeeded":
                say(f"shot {n} {job['status']}: {job['error']}. {job['next_action']}")
                return 1
            link = next(c for c in result.content if isinstance(c, ResourceLink))
            video = job["videos"][0]
            say(f"shot {n} done in {time.monotonic() - started:.1f} s: {video['width']}x{video['height']}, "
                f"{video['duration_s']} s ({link.uri})")
            links.append((str(link.uri), video["path"]))
            first_frame = save_last_frame(video["path"], out_dir, n)

        # 4. The deliverable: the resource links in shot order (resources/read serves each MP4).
        check = await client.read_resource(links[0][0])
        say(f"resources/read {links[0][0]}: {check.contents[0].mime_type}")
        for uri, path in links:
            print(f"{uri} {path}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="a paper boat's journey from a puddle to the open sea")
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--provider", default="local", help="local (free preview, default), auto, or a provider")
    parser.add_argument("--tier", choices=["standard", "pro"])
    parser.add_argument("--duration", type=int, default=5, help="seconds per shot")
    parser.add_argument("--aspect-ratio", default="16:9")
    parser.add_argument("--style", default="Warm golden-hour light, watercolour look, consistent colours.")
    parser.add_argument("--out", default="storyboard-frames", help="folder for the continuity frames")
    args = parser.parse_args(argv)
    if not 1 <= args.shots <= 8:
        parser.error("--shots must be between 1 and 8")
    return anyio.run(run, args)


if __name__ == "__main__":
    raise SystemExit(main())

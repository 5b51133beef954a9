#!/usr/bin/env python3
"""A storyboard agent: plans shots and has kling-mcp make them as one board, with continuity and a joined MP4.

It talks to the server the way any MCP host does: it launches ``python -m kling_mcp serve`` over stdio
and uses only MCP requests (prompts/get, completion/complete, tools/call, resources/read). One
``generate_storyboard`` call validates every shot and quotes the whole board before anything is billed;
the server then makes the shots in the background, each starting from the previous shot's last frame
(``continuity="chain"``), and joins them. The board has an ``idempotency_key`` (``<topic>-board``):
running the agent again, or retrying after a timeout, returns the same board instead of paying twice.
A failed shot is retaken once with ``retake_shot``.

    python examples/storyboard_agent.py "a paper boat's journey to the sea"              # free, local
    python examples/storyboard_agent.py "a fox in the snow" --provider aimlapi --tier pro # needs AIML_API_KEY

It prints the plan, the quote and progress on stderr, and on stdout ``<kling:// uri> <local path>`` of the
joined video, then one such line per shot in order.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import PromptReference

TERMINAL = ("succeeded", "failed", "cancelled")
BEATS = [  # (what happens, camera) for each shot; the style and the previous frame keep them consistent
    ("establishing shot: the scene and the main subject, calm and wide", "slow aerial push-in"),
    ("the main action: the subject moves through the scene, the key moment of the story", "tracking shot"),
    ("resolution: the subject arrives, the light settles, a quiet final image", "slow pull-back"),
    ("an epilogue detail that echoes the first shot", "close-up, shallow depth of field"),
]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def plan_shots(topic: str, shots: int, duration: int) -> list[dict[str, Any]]:
    """One shot per beat: subject, action and camera (the board's style adds the shared look)."""
    beats = [BEATS[min(i, len(BEATS) - 1)] for i in range(shots)]
    return [{"prompt": f"{topic}. Shot {n} of {shots}, {what}. Camera: {camera}.", "duration": duration}
            for n, (what, camera) in enumerate(beats, start=1)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "storyboard"


async def follow(client: Client, board: dict[str, Any]) -> dict[str, Any]:
    """Poll check_job (the server waits up to wait_seconds per call) until the board is finished."""
    seen: dict[int, str] = {}

    def report(view: dict[str, Any]) -> None:
        for shot in view.get("shots", []):
            if seen.get(shot["shot"]) != shot["status"]:
                seen[shot["shot"]] = shot["status"]
                say(f"  shot {shot['shot']}: {shot['status']}")

    report(board)
    while board["status"] not in TERMINAL:
        result = await client.call_tool("check_job", {"job_id": board["job_id"], "wait_seconds": 45})
        if result.is_error:
            raise RuntimeError(f"check_job failed: {result.content[0].text}")  # type: ignore[union-attr]
        board = result.structured_content
        report(board)
    return board


async def run(args: argparse.Namespace) -> int:
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
        say("storyboard brief from the server:\n  " + brief.messages[0].content.text.replace(  # type: ignore[union-attr]
            "\n", "\n  "))
        shots = plan_shots(args.topic, args.shots, args.duration)
        for n, shot in enumerate(shots, start=1):
            say(f"shot {n}: {shot['prompt']}")

        # 2. One call: every shot is checked and the whole board quoted before anything is billed.
        call: dict[str, Any] = {"shots": shots, "style": args.style, "aspect_ratio": args.aspect_ratio,
                                "provider": args.provider, "idempotency_key": f"{slug(args.topic)}-board",
                                "wait_seconds": 45}
        if args.tier:
            call["tier"] = args.tier
        result = await client.call_tool("generate_storyboard", call)
        if result.is_error:
            say(f"generate_storyboard refused the board: {result.content[0].text}")  # type: ignore[union-attr]
            return 1
        board = result.structured_content
        say(f"storyboard {board['job_id']} on {board['provider']}: estimated total for {len(shots)} shots: "
            f"${board['estimated_cost_usd'] or 0:.3f}")

        # 3. Wait; a failed shot is retaken once (the finished shots are kept).
        board = await follow(client, board)
        if board["status"] == "failed":
            failed = next(s["shot"] for s in board["shots"] if s["status"] in ("failed", "cancelled"))
            say(f"shot {failed} failed ({board['error']['message']}); retaking it")
            retake = await client.call_tool("retake_shot", {"job_id": board["job_id"], "shot": failed,
                                                            "wait_seconds": 45})
            if retake.is_error:
                say(f"retake_shot refused: {retake.content[0].text}")  # type: ignore[union-attr]
                return 1
            board = await follow(client, retake.structured_content)
        if board["status"] != "succeeded":
            say(f"storyboard {board['status']}: {board['error']}. {board['next_action']}")
            return 1

        # 4. The deliverable: the joined video, then each shot (resources/read serves every MP4).
        video = board["videos"][0]
        check = await client.read_resource(video["uri"])
        say(f"joined video: {video['duration_s']} s, {video['width']}x{video['height']} "
            f"({check.contents[0].mime_type}); cost ${board['cost_usd'] or 0:.3f}")
        print(f"{video['uri']} {video['path']}", flush=True)
        for shot in board["shots"]:
            print(f"{shot['videos'][0]['uri']} {shot['videos'][0]['path']}", flush=True)
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
    args = parser.parse_args(argv)
    if not 1 <= args.shots <= 8:
        parser.error("--shots must be between 1 and 8")
    return anyio.run(run, args)


if __name__ == "__main__":
    raise SystemExit(main())

"""``kling-mcp storyboard FILE.json`` and ``kling-mcp assemble VIDEO VIDEO ...``: the storyboard tools on the
command line (same service, same data dir, same quotes and guards as the MCP tools).

``FILE.json`` holds the ``generate_storyboard`` arguments: an object with ``shots`` (and optionally
``continuity``, ``style``, ``reference_images``, ``aspect_ratio``, ``tier``, ``provider``, ``transition``,
``transition_s``, ``assemble``), or just the list of shots; flags override the file. ``kling-mcp retake
BOARD SHOT`` is ``retake_shot``. Progress is one line
per shot change on stderr; the result (the assembled MP4, or each shot's video) goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import catalog, errors
from .cli_commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RUNNING,
    EXIT_USAGE,
    _command,
    _output,
    _say,
    _with_service,
    cli_text,
    save_copies,
)
from .config import Settings

STORYBOARD_COMMANDS = ("storyboard", "retake", "assemble")
_CLI_WORDS = {"retake_shot with job_id=": "`kling-mcp retake` with the storyboard id ", "shot=": "shot "}


def add_storyboard_commands(sub: Any) -> None:
    board = _command(sub, "storyboard", "make a multi-shot video from a JSON file of shots, joined into one MP4")
    board.add_argument("file", help="JSON: {'shots': [{'prompt': ..., 'duration': ...}, ...], ...} or a list of shots")
    board.add_argument("--provider", choices=["auto", *catalog.PROVIDER_NAMES])
    board.add_argument("--tier", choices=["standard", "pro"])
    board.add_argument("--aspect-ratio", choices=list(catalog.ASPECT_RATIOS))
    board.add_argument(
        "--continuity",
        choices=["chain", "none"],
        help="chain (default): each shot starts from the previous shot's last frame",
    )
    board.add_argument("--style", help="appended to every shot's prompt")
    _joining(board)
    board.add_argument("--no-assemble", action="store_true", help="keep the shots separate (no joined MP4)")
    _waiting(board)
    _confirming(board)

    retake = _command(sub, "retake", "redo one shot of a finished storyboard and join the shots again")
    retake.add_argument("job_id", help="the storyboard's job id")
    retake.add_argument("shot", type=int, help="the shot number (1-based)")
    retake.add_argument("--prompt", help="a new prompt for the shot")
    retake.add_argument("--duration", type=int, help="a new length for the shot (seconds)")
    retake.add_argument("--cascade", action="store_true", help="also remake the later chained shots")
    _waiting(retake)
    _confirming(retake)

    join = _command(sub, "assemble", "join 2-50 videos in order into one MP4 on this machine (free)")
    join.add_argument("videos", nargs="+", metavar="VIDEO", help="paths, URLs or kling://jobs/... results")
    _joining(join)
    join.add_argument("--aspect-ratio", choices=list(catalog.ASPECT_RATIOS), help="default: the first video's")
    _waiting(join)


def _joining(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transition", choices=["cut", "crossfade"])
    p.add_argument("--transition-s", type=float, metavar="S", help="crossfade length (default 0.5)")


def _confirming(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--confirm-cost-usd",
        type=float,
        metavar="USD",
        help="agree to pay up to USD for the shots (needed for quotes above KLING_MCP_CONFIRM_ABOVE_USD)",
    )


def _waiting(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("--idempotency-key", help="repeating a command with the same key returns the same job")
    p.add_argument("--no-wait", action="store_true", help="print the job id and exit once it is saved")
    p.add_argument("--timeout", type=float, metavar="S", help="stop waiting after S seconds (exit 3)")
    p.add_argument("--json", action="store_true", help="print the job as JSON instead of the video paths")


def _board_request(args: argparse.Namespace) -> Any:
    from .storyboard_models import StoryboardRequest

    try:
        data = json.loads(Path(args.file).expanduser().read_text())
    except (OSError, ValueError) as exc:
        raise errors.InvalidRequest(f"cannot read {args.file}: {exc}", hint="Pass a JSON file of shots.") from None
    fields = {"shots": data} if isinstance(data, list) else dict(data)
    flags = {
        "provider": args.provider,
        "tier": args.tier,
        "aspect_ratio": args.aspect_ratio,
        "continuity": args.continuity,
        "style": args.style,
        "transition": args.transition,
        "transition_s": args.transition_s,
        "idempotency_key": args.idempotency_key,
        "confirm_cost_usd": args.confirm_cost_usd,
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    if args.no_assemble:
        fields["assemble"] = False
    try:
        return StoryboardRequest(**fields, wait_seconds=0.0)
    except ValueError as exc:
        raise errors.InvalidRequest(f"{args.file} is not a valid storyboard: {exc}") from None


def _shot_lines(view: Any, seen: dict[int, str]) -> None:
    """One line on stderr for every shot whose status changed."""
    for shot in view.shots:
        if seen.get(shot.shot) != shot.status:
            seen[shot.shot] = shot.status
            where = f" (job {shot.job_id})" if shot.job_id else ""
            _say(f"shot {shot.shot}/{len(view.shots)}: {shot.status}{where} {shot.prompt[:60]}")


async def _follow(service: Any, job: Any, timeout: float | None, shots: bool) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: dict[int, str] = {}
    last = -1.0
    while True:
        view = await service.view(job)
        if shots:
            _shot_lines(view, seen)
        if view.progress // 10 != last // 10 or job.terminal:
            last = view.progress
            _say(f"{view.operation} {job.job_id}: {view.status} {view.progress:.0f}%")
        if job.terminal or (deadline is not None and time.monotonic() >= deadline):
            return job
        step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
        job = await service.runner.wait(job.job_id, step)


def _report(view: Any, as_json: bool, output: str | None) -> int:
    if as_json:
        print(view.model_dump_json(indent=1))
    if view.note:
        _say(cli_text(view.note))
    if view.status == "succeeded":
        paths = [v.path for v in view.videos] or [v.path for s in getattr(view, "shots", []) for v in s.videos]
        cost = "?" if view.cost_usd is None else f"${view.cost_usd:.3f}"
        _say(f"{view.operation} {view.job_id} succeeded ({cost}).")
        if output:
            paths = [str(p) for p in save_copies(paths, output)]
            _say(f"  saved to {', '.join(paths)}")
        if not as_json:
            for path in paths:
                print(path)
        return EXIT_OK
    if view.status in ("failed", "cancelled"):
        reason = f"[{view.error.code}] {view.error.message}" if view.error else view.status
        text = f"kling-mcp: {view.operation} {view.job_id} {view.status}: {reason}. {view.next_action}"
        for word, cli in _CLI_WORDS.items():
            text = text.replace(word, cli)
        _say(cli_text(text))
        return EXIT_FAILED
    _say(f"{view.job_id} is {view.status}. Run `kling-mcp check {view.job_id} --wait 300` to wait for it.")
    return EXIT_RUNNING


async def _make(service: Any, args: argparse.Namespace) -> int:
    if args.command == "storyboard":
        job, note = await service.boards.create(_board_request(args))
    elif args.command == "retake":
        from .cli_commands import resolve_job_id
        from .storyboard_models import RetakeRequest

        job, note = await service.boards.retake(
            RetakeRequest(
                job_id=await resolve_job_id(service, args.job_id),
                shot=args.shot,
                prompt=args.prompt,
                duration=args.duration,
                cascade=args.cascade,
                idempotency_key=args.idempotency_key,
                confirm_cost_usd=args.confirm_cost_usd,
                wait_seconds=0.0,
            )
        )
    else:
        from .storyboard_models import AssembleRequest

        job, note = await service.assemblies.create(
            AssembleRequest(
                videos=args.videos,
                transition=args.transition or "cut",
                transition_s=args.transition_s or 0.5,
                aspect_ratio=args.aspect_ratio,
                idempotency_key=args.idempotency_key,
                wait_seconds=0.0,
            )
        )
    if note:
        _say(cli_text(note))
    if args.no_wait:
        print(job.job_id)
        _say(
            f"saved {job.job_id}; it runs while a kling-mcp server (or `kling-mcp check {job.job_id} --wait 300`) "
            "runs on this data dir."
        )
        return EXIT_OK
    job = await _follow(service, job, args.timeout, shots=args.command != "assemble")
    return _report(await service.view(job), args.json, args.output)


def run(args: argparse.Namespace) -> int:
    import anyio

    try:
        settings = Settings.from_env()
    except errors.KlingError as exc:
        _say(f"kling-mcp: {exc}")
        return EXIT_USAGE
    if args.command == "assemble" and not 2 <= len(args.videos) <= 50:
        _say("kling-mcp assemble: give 2-50 videos, in the order they should play.")
        return EXIT_USAGE
    try:
        return anyio.run(_with_service, settings, lambda s: _make(s, args), True)
    except errors.KlingError as exc:
        _say(f"kling-mcp {args.command}: {cli_text(str(exc))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("\nkling-mcp: stopped waiting; the job resumes when a kling-mcp server runs on this data dir.")
        return 130

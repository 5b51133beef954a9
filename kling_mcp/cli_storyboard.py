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
from .assembly import MAX_INPUTS, MIN_INPUTS
from .cli_commands import _command, _output, _with_service
from .cli_options import request_of
from .cli_output import EXIT_FAILED, EXIT_OK, EXIT_RUNNING, EXIT_USAGE, cli_text, save_copies, say
from .config import Settings
from .requests import said
from .vocabulary import UNSUCCESSFUL_NAMES

STORYBOARD_COMMANDS = ("storyboard", "retake", "assemble")
_CLI_WORDS = {"retake_shot with job_id=": "`kling-mcp retake` with the storyboard id ", "shot=": "shot "}


def _fields(p: argparse.ArgumentParser, model: Any, skip: tuple[str, ...]) -> None:
    """The request's options, derived from its model's fields (storyboard_models.py)."""
    from .cli_options import add_options

    add_options(
        p,
        model,
        skip=(*skip, "wait_seconds"),  # the command waits itself (--no-wait, --timeout)
        choices={"provider": ["auto", *catalog.PROVIDER_NAMES], "aspect_ratio": catalog.ASPECT_RATIOS},
        words=cli_text,
    )


def add_storyboard_commands(sub: Any) -> None:
    from .storyboard_models import AssembleRequest, RetakeRequest, StoryboardRequest

    board = _command(sub, "storyboard", "make a multi-shot video from a JSON file of shots, joined into one MP4")
    board.add_argument("file", help="JSON: {'shots': [{'prompt': ..., 'duration': ...}, ...], ...} or a list of shots")
    _fields(board, StoryboardRequest, skip=("shots", "assemble"))
    board.add_argument("--no-assemble", action="store_true", help="keep the shots separate (no joined MP4)")
    _waiting(board)

    retake = _command(sub, "retake", "redo one shot of a finished storyboard and join the shots again")
    retake.add_argument("job_id", help=said(RetakeRequest, "job_id"))
    retake.add_argument("shot", type=int, help=said(RetakeRequest, "shot"))
    _fields(retake, RetakeRequest, skip=("job_id", "shot"))
    _waiting(retake)

    join = _command(
        sub, "assemble", f"join {MIN_INPUTS}-{MAX_INPUTS} videos in order into one MP4 on this machine (free)"
    )
    join.add_argument("videos", nargs="+", metavar="VIDEO", help="paths, URLs or kling://jobs/... results")
    _fields(join, AssembleRequest, skip=("videos",))
    _waiting(join)


def _waiting(p: argparse.ArgumentParser) -> None:
    _output(p)
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
    # The options override the file; an option not given (None, or no --reference-image) leaves it.
    flags = {k: v for k, v in vars(args).items() if k in StoryboardRequest.model_fields and v not in (None, [])}
    fields.update(flags)
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
            say(f"shot {shot.shot}/{len(view.shots)}: {shot.status}{where} {shot.prompt[:60]}")


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
            say(f"{view.operation} {job.job_id}: {view.status} {view.progress:.0f}%")
        if job.terminal or (deadline is not None and time.monotonic() >= deadline):
            return job
        step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
        job = await service.runner.wait(job.job_id, step)


def _report(view: Any, as_json: bool, output: str | None) -> int:
    if as_json:
        print(view.model_dump_json(indent=1))
    if view.note:
        say(cli_text(view.note))
    if view.status == "succeeded":
        paths = [v.path for v in view.videos] or [v.path for s in getattr(view, "shots", []) for v in s.videos]
        cost = "?" if view.cost_usd is None else f"${view.cost_usd:.3f}"
        say(f"{view.operation} {view.job_id} succeeded ({cost}).")
        if output:
            paths = [str(p) for p in save_copies(paths, output)]
            say(f"  saved to {', '.join(paths)}")
        if not as_json:
            for path in paths:
                print(path)
        return EXIT_OK
    if view.status in UNSUCCESSFUL_NAMES:
        reason = f"[{view.error.code}] {view.error.message}" if view.error else view.status
        text = f"kling-mcp: {view.operation} {view.job_id} {view.status}: {reason}. {view.next_action}"
        for word, cli in _CLI_WORDS.items():
            text = text.replace(word, cli)
        say(cli_text(text))
        return EXIT_FAILED
    say(f"{view.job_id} is {view.status}. Run `kling-mcp check {view.job_id} --wait 300` to wait for it.")
    return EXIT_RUNNING


async def _make(service: Any, args: argparse.Namespace) -> int:
    if args.command == "storyboard":
        job, note = await service.boards.create(_board_request(args))
    elif args.command == "retake":
        from .cli_commands import resolve_job_id
        from .storyboard_models import RetakeRequest

        job_id = await resolve_job_id(service, args.job_id)
        job, note = await service.boards.retake(request_of(RetakeRequest, args, job_id=job_id, wait_seconds=0.0))
    else:
        from .storyboard_models import AssembleRequest

        job, note = await service.assemblies.create(request_of(AssembleRequest, args, wait_seconds=0.0))
    if note:
        say(cli_text(note))
    if args.no_wait:
        print(job.job_id)
        say(
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
        say(f"kling-mcp: {exc}")
        return EXIT_USAGE
    if args.command == "assemble" and not MIN_INPUTS <= len(args.videos) <= MAX_INPUTS:
        say(f"kling-mcp assemble: give {MIN_INPUTS}-{MAX_INPUTS} videos, in the order they should play.")
        return EXIT_USAGE
    try:
        return anyio.run(_with_service, settings, lambda s: _make(s, args), True)
    except errors.KlingError as exc:
        say(f"kling-mcp {args.command}: {cli_text(str(exc))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("\nkling-mcp: stopped waiting; the job resumes when a kling-mcp server runs on this data dir.")
        return 130

"""``kling-mcp estimate | generate | edit | jobs | check | cancel | last-frame``: the tools, no MCP client.

The commands use :class:`VideoService` directly (the layer the MCP tools share), so they validate,
quote, deduplicate and bill exactly as the server does, on the same data dir (``KLING_MCP_DATA_DIR``).
Results go to stdout (video paths, one per line; or JSON with ``--json``); tables, progress and
errors go to stderr, so ``kling-mcp generate ... | xargs open`` works (what is printed is :mod:`.cli_output`).

Exit codes: 0 done (or submitted with ``--no-wait``); 1 refused, failed or cancelled (the reason is
on stderr and says what to change); 2 bad arguments or settings; 3 still running (``check``, or a
``--timeout`` that ran out: run ``kling-mcp check JOB_ID --wait 300`` later).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import catalog, errors
from .cli_options import add_options, request_of
from .cli_output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ProgressBar, cli_text, jobs_table, quote_table, report, say
from .config import Settings
from .requests import EditRequest, EstimateRequest, GenerateRequest, said
from .vocabulary import STATUS_NAMES, TIERS

COMMANDS = ("estimate", "generate", "edit", "jobs", "check", "cancel", "last-frame")
EPILOG = (
    "exit codes: 0 done (or submitted with --no-wait); 1 refused, failed or cancelled (stderr says why "
    "and what to change); 2 bad arguments or settings; 3 still running (run `kling-mcp check JOB_ID --wait "
    "300`). Results (video paths) go to stdout, progress and messages to stderr. Data dir: "
    "KLING_MCP_DATA_DIR; provider keys: AIML_API_KEY, RUNWARE_API_KEY, RUNPOD_API_KEY, EVOLINK_API_KEY, "
    "FAL_KEY, REPLICATE_API_TOKEN."
)
STATUSES = STATUS_NAMES  # the job statuses, declared in vocabulary.py


# --- argument parsing --------------------------------------------------------------------------------


def _fields(p: argparse.ArgumentParser, model: Any) -> None:
    """The request's options, derived from its model's fields (``prompt`` is positional, the CLI waits itself)."""
    add_options(
        p,
        model,
        skip=("prompt", "wait_seconds"),
        choices={"provider": ["auto", *catalog.PROVIDER_NAMES], "aspect_ratio": catalog.bounds()["aspect_ratios"]},
        defaults={"provider": "auto"},
        words=cli_text,
    )


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="also save the finished video here (a folder, or a file name; several videos get -1, -2, ... suffixes)",
    )


def _waiting(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("--no-wait", action="store_true", help="print the job id and exit once it is submitted")
    p.add_argument("--timeout", type=float, metavar="S", help="stop waiting after S seconds (exit 3)")
    p.add_argument("--json", action="store_true", help="print the job as JSON instead of the video paths")


def _data_dir_line() -> str:
    import os

    from .config import _data_dir

    return f" Data dir now: {_data_dir(os.environ)}."


def _command(sub: Any, name: str, summary: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", epilog=EPILOG + _data_dir_line()
    )


def add_commands(sub: Any) -> None:
    """Register the commands on the ``kling-mcp`` subparsers object."""
    est = _command(sub, "estimate", "quote a request on every provider (never spends)")
    est.add_argument("prompt", nargs="?", default="", help=said(EstimateRequest, "prompt"))
    _fields(est, EstimateRequest)
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")

    gen = _command(sub, "generate", "generate a video and wait for it with a progress bar")
    gen.add_argument("prompt", help=said(GenerateRequest, "prompt"))
    _fields(gen, GenerateRequest)
    _waiting(gen)

    edit = _command(sub, "edit", "edit a video with an instruction and wait for it")
    edit.add_argument("prompt", help=said(EditRequest, "prompt"))
    _fields(edit, EditRequest)
    _waiting(edit)

    jobs = _command(sub, "jobs", "list jobs, newest first")
    jobs.add_argument("--status", choices=STATUSES)
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")

    check = _command(sub, "check", "show a job; with --wait, wait for it to finish")
    check.add_argument("job_id")
    check.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds")
    check.add_argument("--json", action="store_true")
    _output(check)

    cancel = _command(sub, "cancel", "cancel a job (at the provider where it can be cancelled)")
    cancel.add_argument("job_id")

    last = _command(sub, "last-frame", "save a video's last frame as PNG (continuity: the next shot's --first-frame)")
    last.add_argument("video")
    last.add_argument("-o", "--output", help="PNG path (default: next to the video, <name>.last.png)")


# --- running -------------------------------------------------------------------------------------------


async def _with_service(settings: Settings, body: Callable[[Any], Awaitable[int]], run_jobs: bool) -> int:
    """Run ``body(service)``; with ``run_jobs`` the background runner polls and downloads meanwhile."""
    import anyio
    import httpx

    from .service import VideoService

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as client:
        service = VideoService(settings, client)
        try:
            if not run_jobs:
                return await body(service)
            failure: errors.KlingError | None = None
            async with anyio.create_task_group() as tg:
                await service.runner.start(tg, adopt=False)  # drive only the jobs this command asks about
                try:
                    code = await body(service)
                except errors.KlingError as exc:  # raised outside the group, not as an ExceptionGroup
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
            if failure is not None:
                raise failure
            return code
        finally:
            await service.aclose()


async def _wait(service: Any, job: Any, timeout: float | None, bar: ProgressBar) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not job.terminal and (deadline is None or time.monotonic() < deadline):
            step = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            job = await service.runner.wait(job.job_id, step)
            bar.update(job)
    finally:
        bar.close()
    return job


def _request(args: argparse.Namespace, kind: str) -> Any:
    if kind == "estimate":
        return request_of(EstimateRequest, args)
    return request_of(EditRequest if kind == "edit" else GenerateRequest, args, wait_seconds=0.0)


async def _estimate(service: Any, args: argparse.Namespace) -> int:
    """Quote every provider; without --tier, at each tier in turn, so rows compare like with like."""
    tiers = [args.tier] if args.tier else list(TIERS)
    estimates = []
    for tier in tiers:
        args.tier = tier
        estimates.append(await service.estimate(_request(args, "estimate")))
    accepted = any(e.recommended for e in estimates)
    if args.json:
        print(
            estimates[0].model_dump_json(indent=1)
            if len(estimates) == 1
            else "[" + ",\n".join(e.model_dump_json(indent=1) for e in estimates) + "]"
        )
        return EXIT_OK if accepted else EXIT_FAILED
    first = estimates[0]
    seconds = f", {first.duration_s:g} s" if first.duration_s else ""
    print(f"{first.operation}{seconds}")
    for tier, estimate in zip(tiers, estimates, strict=True):
        print(f"\n{tier} tier:\n{quote_table(estimate)}")
    command = "edit" if first.operation == "edit" else "generate"
    print()
    for tier, estimate in zip(tiers, estimates, strict=True):
        if estimate.recommended:
            print(f"{tier}: auto picks {estimate.recommended}: run `kling-mcp {command} --tier {tier}` (same flags).")
    if not accepted:
        say("kling-mcp estimate: no configured provider accepts this request; see the problems above.")
    return EXIT_OK if accepted else EXIT_FAILED


async def _generate(service: Any, args: argparse.Namespace, kind: str) -> int:
    job, note = await service.generate(_request(args, kind))
    renders_here = job.provider == "local"
    if args.no_wait:
        if note:
            say(cli_text(note))
        print(job.job_id)
        if renders_here:
            say(
                f"submitted job {job.job_id} to local. The local provider renders inside a kling-mcp process, so it "
                f"pauses when this command exits and goes on when a server or `kling-mcp check {job.job_id} --wait "
                "300` runs."
            )
        else:
            say(f"submitted job {job.job_id} to {job.provider}; run `kling-mcp check {job.job_id} --wait 300`.")
        return EXIT_OK
    stop = "pauses the render until the next check --wait" if renders_here else "stops waiting, not the job"
    say(f"job {job.job_id} on {job.provider} ({job.model}); waiting (Ctrl-C {stop}).")
    args.current_job = job
    job = await _wait(service, job, args.timeout, ProgressBar(sys.stderr))
    return report(job, note, args.json, args.output)


async def resolve_job_id(service: Any, given: str) -> str:
    """``given`` itself when it is a job id, else the one job id it is a unique prefix of."""
    if await service.store.get(given) is not None or len(given) < 4:
        return given
    matches = [v.job_id for v in (await service.list_jobs(None, 500)).jobs if v.job_id.startswith(given)]
    if len(matches) > 1:
        raise errors.InvalidRequest(
            f"job id prefix {given!r} matches {len(matches)} jobs: {', '.join(matches[:5])}.",
            hint="Give more characters of the job id.",
        )
    return matches[0] if matches else given


async def _check(service: Any, args: argparse.Namespace) -> int:
    job = await service.check(await resolve_job_id(service, args.job_id), 0.0)
    if args.wait > 0 and not job.terminal:
        job = await _wait(service, job, args.wait, ProgressBar(sys.stderr))
    return report(job, None, args.json, args.output)


async def _jobs(service: Any, args: argparse.Namespace) -> int:
    listing = await service.list_jobs(args.status, args.limit)
    if args.json:
        print(listing.model_dump_json(indent=1))
    elif listing.jobs:
        print(jobs_table(listing.jobs))
    else:
        say(
            "No jobs"
            + (f" with status {args.status}" if args.status else "")
            + f' in {service.settings.data_dir}. Run `kling-mcp generate "..."` to make one.'
        )
    return EXIT_OK


async def _cancel(service: Any, args: argparse.Namespace) -> int:
    result = await service.cancel(await resolve_job_id(service, args.job_id))
    say(cli_text(result.message))
    print(result.status)
    return EXIT_OK


def _last_frame(args: argparse.Namespace) -> int:
    from . import media

    video = Path(args.video).expanduser()
    out = Path(args.output).expanduser() if args.output else video.with_name(video.stem + ".last.png")
    out.write_bytes(media.last_frame_png(video))
    print(out.resolve())
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; returns the exit code."""
    import anyio

    try:
        if args.command == "last-frame":
            return _last_frame(args)
        try:
            settings = Settings.from_env()
        except errors.KlingError as exc:
            say(f"kling-mcp: {exc}")
            return EXIT_USAGE
        body: dict[str, Callable[[Any], Awaitable[int]]] = {
            "estimate": lambda s: _estimate(s, args),
            "jobs": lambda s: _jobs(s, args),
            "generate": lambda s: _generate(s, args, "generate"),
            "edit": lambda s: _generate(s, args, "edit"),
            "check": lambda s: _check(s, args),
            "cancel": lambda s: _cancel(s, args),
        }
        run_jobs = args.command in ("generate", "edit", "check")  # these wait, so the runner must poll
        return anyio.run(_with_service, settings, body[args.command], run_jobs)
    except errors.KlingError as exc:
        say(f"kling-mcp {args.command}: {cli_text(str(exc))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        job = getattr(args, "current_job", None)
        job_id = job.job_id if job is not None else "JOB_ID"
        if job is not None and job.provider == "local":
            say(
                f"\nkling-mcp: stopped. The local render of job {job_id} pauses until a server or "
                f"`kling-mcp check {job_id} --wait 300` resumes it."
            )
        else:
            say(f"\nkling-mcp: stopped waiting; the job goes on. Run `kling-mcp check {job_id} --wait 300` for it.")
        return 130

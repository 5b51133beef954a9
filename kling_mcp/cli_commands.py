"""``kling-mcp estimate | generate | edit | jobs | check | cancel | last-frame``: the tools, no MCP client.

The commands use :class:`VideoService` directly (the layer the MCP tools share), so they validate,
quote, deduplicate and bill exactly as the server does, on the same data dir (``KLING_MCP_DATA_DIR``).
Results go to stdout (video paths, one per line; or JSON with ``--json``); tables, progress and
errors go to stderr, so ``kling-mcp generate ... | xargs open`` works.

Exit codes: 0 done (or submitted with ``--no-wait``); 1 refused, failed or cancelled (the reason is
on stderr and says what to change); 2 bad arguments or settings; 3 still running (``check``, or a
``--timeout`` that ran out: run ``kling-mcp check JOB_ID --wait 300`` later).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from . import catalog, errors
from .config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNNING = 0, 1, 2, 3
COMMANDS = ("estimate", "generate", "edit", "jobs", "check", "cancel", "last-frame")
EPILOG = (
    "exit codes: 0 done (or submitted with --no-wait); 1 refused, failed or cancelled (stderr says why "
    "and what to change); 2 bad arguments or settings; 3 still running (run `kling-mcp check JOB_ID --wait "
    "300`). Results (video paths) go to stdout, progress and messages to stderr. Data dir: "
    "KLING_MCP_DATA_DIR; provider keys: AIML_API_KEY, RUNWARE_API_KEY, RUNPOD_API_KEY, EVOLINK_API_KEY, "
    "FAL_KEY, REPLICATE_API_TOKEN."
)
STATUSES = ("pending", "submitted", "running", "downloading", "succeeded", "failed", "cancelled")


# --- argument parsing --------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, edit: bool, estimate: bool = False) -> None:
    providers = ["auto", *catalog.PROVIDER_NAMES]
    p.add_argument(
        "--reference-image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="reference image (path, URL or data URI); repeat for several",
    )
    p.add_argument("--tier", choices=["standard", "pro"], help="standard (720p) or pro (1080p)")
    p.add_argument(
        "--provider",
        choices=providers,
        default="auto",
        help="auto (default) picks the cheapest configured provider that accepts the request",
    )
    p.add_argument("--keep-original-sound", action=argparse.BooleanOptionalAction, default=None)
    if edit or estimate:
        p.add_argument("--fast", action="store_true", help="the faster edit mode, where a provider has one")
    if not edit or estimate:
        p.add_argument("--first-frame", metavar="IMAGE", help="image-to-video: the opening frame")
        p.add_argument("--last-frame", metavar="IMAGE", help="image-to-video: the closing frame (needs --first-frame)")
        p.add_argument("--reference-video", metavar="VIDEO")
        p.add_argument("--duration", type=int, help="output seconds")
        p.add_argument("--aspect-ratio", choices=list(catalog.bounds()["aspect_ratios"]))
        p.add_argument("--negative-prompt")
        p.add_argument("--seed", type=int)
        p.add_argument("--num-videos", type=int, default=1)


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="also save the finished video here (a folder, or a file name; several videos get -1, -2, ... suffixes)",
    )


def _waiting(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("--idempotency-key", help="repeating a command with the same key returns the same job")
    p.add_argument(
        "--confirm-cost-usd",
        type=float,
        metavar="USD",
        help="agree to pay up to USD (needed for quotes above KLING_MCP_CONFIRM_ABOVE_USD)",
    )
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
    est.add_argument("prompt", nargs="?", default="")
    est.add_argument("--video", metavar="VIDEO", help="quote an edit of this video")
    est.add_argument("--video-duration", type=float, metavar="S", help="the input video's length, if not probed")
    _common(est, edit=False, estimate=True)
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")

    gen = _command(sub, "generate", "generate a video and wait for it with a progress bar")
    gen.add_argument("prompt")
    _common(gen, edit=False)
    _waiting(gen)

    edit = _command(sub, "edit", "edit a video with an instruction and wait for it")
    edit.add_argument("prompt")
    edit.add_argument("--video", required=True, metavar="VIDEO", help="the video to edit (path, URL, data URI)")
    _common(edit, edit=True)
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


# --- rendering -----------------------------------------------------------------------------------------


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain-text table; the last column is not padded (it may be long)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    rule = ["-" * w for w in widths[:-1]] + ["-" * len(headers[-1])]
    for row in [headers, rule, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    return "?" if value is None else f"${value:.3f}"


def _shown_cost(view: Any) -> str:
    """The billed cost; a quote only while the job may still be billed (a failed or cancelled job with no
    billed cost shows "-", not its quote as if it had been charged)."""
    if view.cost_usd is not None:
        return _usd(view.cost_usd)
    if view.status in ("failed", "cancelled"):
        return "-"
    return "~" + _usd(view.estimated_cost_usd)


def quote_table(estimate: Any) -> str:
    rows = []
    for q in estimate.quotes:
        supported = "yes" if q.supported else "no"
        env = catalog.PROVIDERS[q.provider].env_key
        if q.supported and not q.configured and env:
            supported += f" (set {env})"
        rows.append(
            [
                q.provider,
                q.tier or "-",
                q.model or "-",
                supported,
                _usd(q.cost_usd),
                q.basis,
                "; ".join(q.problems) or "-",
            ]
        )
    return table(rows, ["provider", "tier", "model", "supported", "cost", "basis", "problems"])


def jobs_table(views: list[Any]) -> str:
    rows = [
        [
            v.job_id,
            v.status,
            v.provider,
            v.operation,
            f"{v.progress:.0f}%",
            _shown_cost(v),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at)),
            v.prompt,
        ]
        for v in views
    ]
    return table(rows, ["job_id", "status", "provider", "operation", "progress", "cost", "created", "prompt"])


class ProgressBar:
    """A one-line progress bar redrawn with ``\\r`` on a terminal; one line per change otherwise."""

    def __init__(self, stream: TextIO, tty: bool | None = None, width: int = 30) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self.started = time.monotonic()
        self._last: tuple[str, int] | None = None
        self._drawn = False

    def line(self, job: Any) -> str:
        filled = int(self.width * min(max(job.progress, 0.0), 100.0) / 100)
        bar = "#" * filled + "." * (self.width - filled)
        return (
            f"[{bar}] {job.progress:5.1f}%  {job.status.value:<11} {job.provider} "
            f"{time.monotonic() - self.started:6.1f} s"
        )

    def update(self, job: Any) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(job))
            self._drawn = True
        else:
            key = (job.status.value, int(job.progress // 10))
            if key != self._last:
                self.stream.write(self.line(job) + "\n")
            self._last = key
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# --- running -------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


_CLI_WORDS = {
    "generate_video": "`kling-mcp generate`",
    "edit_video": "`kling-mcp edit`",
    "check_job": "`kling-mcp check`",
    "list_jobs": "`kling-mcp jobs`",
    "estimate_cost": "`kling-mcp estimate`",
    "cancel_job": "`kling-mcp cancel`",
    "first_frame": "--first-frame",
    "last_frame": "--last-frame",
    "reference_images": "--reference-image",
    "reference_video": "--reference-video",
    "aspect_ratio": "--aspect-ratio",
    "num_videos": "--num-videos",
    "video_duration_s": "--video-duration",
    "idempotency_key": "--idempotency-key",
    "confirm_cost_usd": "--confirm-cost-usd",
    "negative_prompt": "--negative-prompt",
    "keep_original_sound": "--keep-original-sound",
    "wait_seconds": "--wait",
}
_CLI_PATTERN = re.compile(r"\b(" + "|".join(_CLI_WORDS) + r")\b")


def cli_text(message: str) -> str:
    """An error written for MCP callers, in command-line terms (tool names -> commands, args -> flags)."""
    return _CLI_PATTERN.sub(lambda m: _CLI_WORDS[m.group(1)], message)


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


def save_copies(paths: list[str], output: str) -> list[Path]:
    """Copy finished videos to ``output`` (a folder, or a file name: ``clip.mp4``, ``clip-1.mp4``, ...)."""
    import shutil

    target = Path(output).expanduser()
    copies = []
    for n, source in enumerate(paths):
        if target.is_dir() or output.endswith(("/", "\\")):
            dest = target / Path(source).name if len(paths) == 1 else target / f"{Path(source).stem}-{n}.mp4"
        else:
            dest = target if len(paths) == 1 else target.with_name(f"{target.stem}-{n}{target.suffix or '.mp4'}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        copies.append(dest.resolve())
    return copies


def _report(job: Any, note: str | None, as_json: bool, output: str | None = None) -> int:
    from .views import job_view

    view = job_view(job, note)
    if as_json:
        print(view.model_dump_json(indent=1))
    if view.note:
        _say(cli_text(view.note))
    if view.status == "succeeded":
        cost = _usd(view.cost_usd if view.cost_usd is not None else view.estimated_cost_usd)
        _say(f"job {view.job_id} succeeded on {view.provider} ({cost}).")
        for v in view.videos:
            _say(f"  {v.width}x{v.height}, {v.duration_s} s, {v.size_bytes} bytes, resource {v.uri}")
        paths = [v.path for v in view.videos]
        if output:
            paths = [str(p) for p in save_copies(paths, output)]
            _say(f"  saved to {', '.join(paths)}")
        if not as_json:
            for path in paths:
                print(path)
        return EXIT_OK
    if view.status in ("failed", "cancelled"):
        reason = f"[{view.error.code}] {view.error.message}" if view.error else view.status
        _say(cli_text(f"kling-mcp: job {view.job_id} {view.status}: {reason}. {view.next_action}"))
        return EXIT_FAILED
    _say(
        f"job {view.job_id} is {view.status} ({view.progress:.0f}%). Run `kling-mcp check {view.job_id} "
        "--wait 300` to wait for it."
    )
    return EXIT_RUNNING


def _request(args: argparse.Namespace, kind: str) -> Any:
    from .requests import EditRequest, EstimateRequest, GenerateRequest

    fields: dict[str, Any] = {
        "prompt": args.prompt,
        "reference_images": args.reference_image,
        "tier": args.tier,
        "provider": args.provider,
        "keep_original_sound": args.keep_original_sound,
    }
    if kind != "edit":
        fields.update(
            first_frame=args.first_frame,
            last_frame=args.last_frame,
            reference_video=args.reference_video,
            duration=args.duration,
            aspect_ratio=args.aspect_ratio,
            negative_prompt=args.negative_prompt,
            seed=args.seed,
            num_videos=args.num_videos,
        )
    if kind != "generate":
        fields.update(video=args.video, fast=args.fast)
    if kind == "estimate":
        return EstimateRequest(**fields, video_duration_s=args.video_duration)
    fields.update(wait_seconds=0.0, idempotency_key=args.idempotency_key, confirm_cost_usd=args.confirm_cost_usd)
    return (EditRequest if kind == "edit" else GenerateRequest)(**fields)


async def _estimate(service: Any, args: argparse.Namespace) -> int:
    """Quote every provider; without --tier, at each tier in turn, so rows compare like with like."""
    tiers = [args.tier] if args.tier else ["standard", "pro"]
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
        _say("kling-mcp estimate: no configured provider accepts this request; see the problems above.")
    return EXIT_OK if accepted else EXIT_FAILED


async def _generate(service: Any, args: argparse.Namespace, kind: str) -> int:
    job, note = await service.generate(_request(args, kind))
    renders_here = job.provider == "local"
    if args.no_wait:
        if note:
            _say(cli_text(note))
        print(job.job_id)
        if renders_here:
            _say(
                f"submitted job {job.job_id} to local. The local provider renders inside a kling-mcp process, so it "
                f"pauses when this command exits and goes on when a server or `kling-mcp check {job.job_id} --wait "
                "300` runs."
            )
        else:
            _say(f"submitted job {job.job_id} to {job.provider}; run `kling-mcp check {job.job_id} --wait 300`.")
        return EXIT_OK
    stop = "pauses the render until the next check --wait" if renders_here else "stops waiting, not the job"
    _say(f"job {job.job_id} on {job.provider} ({job.model}); waiting (Ctrl-C {stop}).")
    args.current_job = job
    job = await _wait(service, job, args.timeout, ProgressBar(sys.stderr))
    return _report(job, note, args.json, args.output)


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
    return _report(job, None, args.json, args.output)


async def _jobs(service: Any, args: argparse.Namespace) -> int:
    listing = await service.list_jobs(args.status, args.limit)
    if args.json:
        print(listing.model_dump_json(indent=1))
    elif listing.jobs:
        print(jobs_table(listing.jobs))
    else:
        _say(
            "No jobs"
            + (f" with status {args.status}" if args.status else "")
            + f' in {service.settings.data_dir}. Run `kling-mcp generate "..."` to make one.'
        )
    return EXIT_OK


async def _cancel(service: Any, args: argparse.Namespace) -> int:
    result = await service.cancel(await resolve_job_id(service, args.job_id))
    _say(cli_text(result.message))
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
            _say(f"kling-mcp: {exc}")
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
        _say(f"kling-mcp {args.command}: {cli_text(str(exc))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        job = getattr(args, "current_job", None)
        job_id = job.job_id if job is not None else "JOB_ID"
        if job is not None and job.provider == "local":
            _say(
                f"\nkling-mcp: stopped. The local render of job {job_id} pauses until a server or "
                f"`kling-mcp check {job_id} --wait 300` resumes it."
            )
        else:
            _say(f"\nkling-mcp: stopped waiting; the job goes on. Run `kling-mcp check {job_id} --wait 300` for it.")
        return 130

"""What the commands show: tables, the progress bar, a finished job's report, messages in command-line terms.

Results (video paths, or JSON) go to stdout; tables of quotes and jobs too; progress, notes and errors go to
stderr. A report returns the command's exit code (:data:`EXIT_OK` ... :data:`EXIT_RUNNING`, described in
:mod:`.cli_commands`).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from . import catalog
from .cli_options import flag_words
from .requests import EditRequest, EstimateRequest, GenerateRequest
from .vocabulary import UNSUCCESSFUL_NAMES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNNING = 0, 1, 2, 3


# --- tables and the progress bar -----------------------------------------------------------------------


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
    if view.status in UNSUCCESSFUL_NAMES:
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


# --- messages and reports ------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


_CLI_WORDS = {
    "generate_video": "`kling-mcp generate`",
    "edit_video": "`kling-mcp edit`",
    "check_job": "`kling-mcp check`",
    "list_jobs": "`kling-mcp jobs`",
    "estimate_cost": "`kling-mcp estimate`",
    "cancel_job": "`kling-mcp cancel`",
    **flag_words([GenerateRequest, EditRequest, EstimateRequest]),
    "wait_seconds": "--wait",
}
_CLI_PATTERN = re.compile(r"\b(" + "|".join(_CLI_WORDS) + r")\b")


def cli_text(message: str) -> str:
    """An error written for MCP callers, in command-line terms (tool names -> commands, args -> flags)."""
    return _CLI_PATTERN.sub(lambda m: _CLI_WORDS[m.group(1)], message)


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


def report(job: Any, note: str | None, as_json: bool, output: str | None = None) -> int:
    from .views import job_view

    view = job_view(job, note)
    if as_json:
        print(view.model_dump_json(indent=1))
    if view.note:
        say(cli_text(view.note))
    if view.status == "succeeded":
        cost = _usd(view.cost_usd if view.cost_usd is not None else view.estimated_cost_usd)
        say(f"job {view.job_id} succeeded on {view.provider} ({cost}).")
        for v in view.videos:
            say(f"  {v.width}x{v.height}, {v.duration_s} s, {v.size_bytes} bytes, resource {v.uri}")
        paths = [v.path for v in view.videos]
        if output:
            paths = [str(p) for p in save_copies(paths, output)]
            say(f"  saved to {', '.join(paths)}")
        if not as_json:
            for path in paths:
                print(path)
        return EXIT_OK
    if view.status in UNSUCCESSFUL_NAMES:
        reason = f"[{view.error.code}] {view.error.message}" if view.error else view.status
        say(cli_text(f"kling-mcp: job {view.job_id} {view.status}: {reason}. {view.next_action}"))
        return EXIT_FAILED
    say(
        f"job {view.job_id} is {view.status} ({view.progress:.0f}%). Run `kling-mcp check {view.job_id} "
        "--wait 300` to wait for it."
    )
    return EXIT_RUNNING

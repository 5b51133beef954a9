"""What the model sees when a request is wrong, and how long waits report progress (MCP edge).

- A tool call whose arguments the schema refuses answers one ``[invalid_request]`` tool error from
  :mod:`kling_mcp.argument_errors` (the rule, the value, the providers that accept it) instead of
  pydantic's dump. The arguments are validated again only after the SDK refused them, so a valid
  call costs nothing extra. Every tool error starts with its ``[code]`` (the SDK's "Error executing
  tool X:" prefix is dropped).
- ``prompts/get`` with an unknown prompt, a missing or an unknown argument answers JSON-RPC
  ``-32602`` (invalid params) with a readable message (the SDK answers ``-32603``).
- ``resources/read`` of a video over :data:`MAX_INLINE_VIDEO_BYTES` answers a short ``text/plain``
  note with the file's path and its preview resource, instead of loading the file into memory.
- :func:`reporting` wraps a tool's wait: progress values strictly increase (100 at most once, for a
  finished job) and, during a wait, a notification with the status and the elapsed time goes out at
  least every :data:`HEARTBEAT_S` seconds even when the provider is silent.

Part of the server layer; the private seam it uses (the tool manager) is checked at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS
from pydantic import ValidationError

HEARTBEAT_S = 4.0
MAX_INLINE_VIDEO_BYTES = 50 * 2**20  # resources/read of a larger video answers a note, not the bytes
_NOTE_PREFIX = "This video is"
T = TypeVar("T")


def install_checks(mcp: Any, configured: list[str]) -> None:
    """Add the argument-error and prompts/get middleware to ``mcp`` (an MCPServer)."""
    tools = getattr(getattr(mcp, "_tool_manager", None), "_tools", None)
    if not isinstance(tools, dict) or not isinstance(getattr(mcp, "middleware", None), list):
        raise RuntimeError("mcp SDK layout changed: cannot reach the tool manager or the middleware list")

    async def checks(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            return await _checked(ctx, call_next)
        finally:
            answered = getattr(getattr(ctx, "lifespan_context", None), "request_answered", None)
            if callable(answered):
                answered()  # the server's AppState opens the job store after the first answer

    async def _checked(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        if ctx.method == "prompts/get":
            await _check_prompt(mcp, params)
            return await call_next(ctx)
        if ctx.method == "resources/read":
            return _label_notes(await call_next(ctx))
        result = await call_next(ctx)
        if ctx.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
            name, arguments = params.get("name"), params.get("arguments") or {}
            tool = tools.get(name)
            if tool is not None and isinstance(arguments, Mapping):
                text = _argument_error(tool, dict(arguments), configured)
                if text is not None:
                    result["content"] = [{"type": "text", "text": text}]
            _strip_prefix(result, f"Error executing tool {name}: ")
        return result

    mcp.middleware.append(checks)


def too_big_to_read(path: Path, uri: str) -> str | None:
    """The text ``resources/read`` answers instead of a video over MAX_INLINE_VIDEO_BYTES; None: send it."""
    size = path.stat().st_size
    if size <= MAX_INLINE_VIDEO_BYTES:
        return None
    return (
        f"{_NOTE_PREFIX} {size / 2**20:.0f} MB, more than the {MAX_INLINE_VIDEO_BYTES / 2**20:.0f} MB this server "
        f"returns inline. The file is {path} on the server's machine; read {uri}/preview for a small rendition."
    )


def _label_notes(result: Any) -> Any:
    """A video answered by :func:`too_big_to_read`'s note is text/plain, not video/mp4."""
    for item in (result.get("contents") or ()) if isinstance(result, dict) else ():
        if isinstance(item, dict) and str(item.get("text", "")).startswith(_NOTE_PREFIX):
            item["mimeType"] = "text/plain"
    return result


def _strip_prefix(result: dict[str, Any], prefix: str) -> None:
    """Our errors start with their ``[code]``: drop the SDK's "Error executing tool X: " before it."""
    for item in result.get("content") or ():
        text = item.get("text") if isinstance(item, dict) else None
        if isinstance(text, str) and text.startswith(prefix) and text[len(prefix) :].startswith("["):
            item["text"] = text[len(prefix) :]


def _argument_error(tool: Any, arguments: dict[str, Any], configured: list[str]) -> str | None:
    """Our error text when ``arguments`` fail ``tool``'s argument model; None when they pass."""
    from .argument_errors import describe  # only when a call was refused

    metadata = tool.fn_metadata
    try:
        metadata.arg_model.model_validate(metadata.pre_parse_json(arguments))
    except ValidationError as exc:
        names = [n for n in tool.parameters.get("properties", {})]
        return str(describe(tool.name, exc.errors(include_url=False), names, configured))
    return None


async def _check_prompt(mcp: Any, params: Mapping[str, Any]) -> None:
    name, given = params.get("name"), params.get("arguments") or {}
    prompts = {p.name: p for p in await mcp.list_prompts()}
    prompt = prompts.get(name)
    if prompt is None:
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"There is no prompt named {name!r}; this server offers: {', '.join(prompts) or 'none'}.",
        )
    accepted = [a.name for a in prompt.arguments or ()]
    missing = [a.name for a in prompt.arguments or () if a.required and a.name not in given]
    unknown = [k for k in given if k not in accepted] if isinstance(given, Mapping) else []
    problems = []
    if missing:
        problems.append(f"it needs {', '.join(missing)}")
    if unknown:
        problems.append(f"it has no argument {', '.join(unknown)}")
    if problems:
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"The {name} prompt cannot be rendered: {'; '.join(problems)} (it takes {', '.join(accepted)}).",
        )


# --- progress ------------------------------------------------------------------------------------


class ProgressReporter:
    """Sends a wait's progress (0-100) so that every value is larger than the last one sent."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._started = time.monotonic()
        self._sent_at = self._started
        self._last: float | None = None
        self._status = "starting"
        self._lock = anyio.Lock()

    async def __call__(self, progress: float, message: str) -> None:
        """A change reported by the service: ``progress`` is 100 only for a finished job."""
        self._status = message
        await self._send(progress)

    async def _send(self, progress: float) -> None:
        async with self._lock:
            last = self._last
            if last is not None and last >= 100:
                return  # 100 is sent once, for the finished job
            if progress >= 100:
                value = 100.0
            elif last is None or progress > last:
                value = progress
            else:  # no news: a little more, never reaching 100
                value = last + max((100.0 - last) * 0.01, 1e-6)
            self._last, self._sent_at = value, time.monotonic()
            elapsed = self._sent_at - self._started
            await self._ctx.report_progress(value, 100.0, f"{self._status}, {elapsed:.0f} s elapsed")

    async def beat(self) -> None:
        """Send the status and elapsed time whenever nothing else was sent for HEARTBEAT_S seconds."""
        while True:
            await anyio.sleep(max(0.0, self._sent_at + HEARTBEAT_S - time.monotonic()))
            if time.monotonic() - self._sent_at >= HEARTBEAT_S - 0.01:
                await self._send(self._last or 0.0)


async def reporting(ctx: Any, work: Callable[[ProgressReporter], Awaitable[T]], *, waits: bool) -> T:
    """Run ``work(reporter)``; when it ``waits`` for a job, heartbeats go out while it runs.

    (A caller that did not ask for progress gets none: the SDK drops them.) Exceptions from ``work``
    propagate as they are, not wrapped in an ExceptionGroup.
    """
    reporter = ProgressReporter(ctx)
    if not waits:
        return await work(reporter)
    failure: BaseException | None = None
    result: T | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(reporter.beat)
        try:
            result = await work(reporter)
        except BaseException as exc:  # re-raised below, unwrapped
            failure = exc
        finally:
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result  # type: ignore[return-value]

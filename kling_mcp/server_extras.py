"""Protocol features beyond tools/resources/prompts: logging/setLevel, completions, subscriptions.

Part of the server layer: with server.py, the only code that knows MCP.

MCPServer 2.3 has no public API for ``logging/setLevel`` or ``resources/subscribe``, and its
``@mcp.completion()`` handler gets no request context (so it cannot reach the job store). These are
registered on the low-level server with ``add_request_handler``, exactly as ``MCPServer.completion``
and the SDK's own everything-server do. :func:`install_extras` checks every private seam it uses and
raises at start-up when an SDK upgrade removed one, instead of serving a server that silently lacks it.

- ``logging/setLevel`` (2025 era; the 2026 era has no such method): the connection's minimum level.
  The server's own ``kling_mcp`` log records at or above it (retries, resumed jobs, failures) are sent
  to that client as ``notifications/message``, with secrets redacted. Only records the operator's
  ``--log-level`` lets through exist to be sent (default INFO).
- ``completion/complete``: the storyboard prompt's ``aspect_ratio`` and ``shots``, and the video
  template's ``job_id`` (recent jobs with videos) and ``index`` (that job's videos).
- ``resources/subscribe``/``unsubscribe`` (2025 era) and ``subscriptions/listen`` (2026 era) on
  ``kling://jobs/{job_id}/videos/{index}``: one ``resources/updated`` when the job finishes: the video
  is ready to read, or will never be (``check_job`` says why).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, get_args

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp.types import (
    INVALID_PARAMS,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmptyResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    ResourceUpdatedNotificationParams,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

from . import catalog, errors

log = logging.getLogger("kling_mcp.extras")

VIDEO_TEMPLATE = "kling://jobs/{job_id}/videos/{index}"
_VIDEO_URI = re.compile(r"^kling://jobs/(?P<job_id>[^/?#]{1,100})/videos/(?P<index>\d{1,4})$")
MCP_LEVELS: tuple[str, ...] = get_args(LoggingLevel)  # debug < info < notice < ... < emergency
_PY_LEVEL = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO + 5,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL + 5,
    "emergency": logging.CRITICAL + 10,
}
SHOTS = tuple(str(n) for n in range(1, 9))
MAX_COMPLETIONS = 100  # the spec's cap on completion values
_LOG_BACKLOG = 1000  # log records waiting to be sent; beyond that they are dropped


def mcp_level(levelno: int) -> str:
    """The MCP log level for a Python ``logging`` level number."""
    for name in reversed(MCP_LEVELS):
        if levelno >= _PY_LEVEL[name]:
            return name
    return "debug"


def _filter(values: list[str] | tuple[str, ...], prefix: str) -> Completion:
    hits = [v for v in values if v.lower().startswith(prefix.lower())]
    return Completion(values=hits[:MAX_COMPLETIONS], total=len(hits), has_more=len(hits) > MAX_COMPLETIONS)


def _connection(session: Any) -> Any:
    """The connection a request came in on: what log levels and subscriptions are kept per."""
    conn = getattr(session, "_connection", None)
    if conn is None:
        raise RuntimeError(
            "mcp's ServerSession no longer has _connection; kling_mcp.server_extras needs "
            "updating for this mcp version (pin mcp==2.3.* meanwhile)."
        )
    return conn


class _Live:
    """Per-lifespan state: the extras' task group and who asked for logs and updates."""

    def __init__(self, state: Any, tg: anyio.abc.TaskGroup, bus: Any, secrets: tuple[str, ...]) -> None:
        self.state = state  # the server's AppState: ``await state.service()`` once the store is open
        self.tg = tg
        self.bus = bus
        self.secrets = secrets
        self.loop = asyncio.get_running_loop()
        self.log_levels: dict[Any, tuple[Any, int]] = {}  # connection -> (session, min level)
        self.subscribers: dict[str, dict[Any, Any]] = {}  # uri -> connection -> session (2025 era)
        self.listened: set[str] = set()  # uris in open listen streams (2026 era)
        self.watching: set[str] = set()  # job ids with a watcher task
        self._send, self._recv = anyio.create_memory_object_stream[tuple[int, str, str]](_LOG_BACKLOG)

    # --- logging -----------------------------------------------------------------------------

    def offer(self, record: logging.LogRecord) -> None:
        """Queue a log record for the clients that asked for its level (any thread)."""
        levels = list(self.log_levels.values())  # one atomic copy: emit may run in any thread
        if not levels or record.levelno < min(lv for _, lv in levels):
            return
        item = (record.levelno, record.name, errors.redact(record.getMessage(), self.secrets))
        try:
            self.loop.call_soon_threadsafe(self._push, item)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass

    def _push(self, item: tuple[int, str, str]) -> None:
        try:
            self._send.send_nowait(item)
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            pass  # a client that cannot keep up loses log lines, never the server

    async def forward_logs(self) -> None:
        async with self._recv:
            async for levelno, name, text in self._recv:
                note = LoggingMessageNotification(
                    params=LoggingMessageNotificationParams(level=mcp_level(levelno), logger=name, data=text)  # type: ignore[arg-type]
                )
                for conn, (session, minimum) in list(self.log_levels.items()):
                    if levelno >= minimum and not await self._send_to(session, note):
                        self.log_levels.pop(conn, None)

    @staticmethod
    async def _send_to(session: Any, notification: Any) -> bool:
        try:
            await session.send_notification(notification)
            return True
        except Exception:
            return False

    # --- job watchers (subscriptions) --------------------------------------------------------

    def watch(self, job_id: str) -> None:
        if job_id not in self.watching:
            self.watching.add(job_id)
            self.tg.start_soon(self._watch, job_id)

    async def _watch(self, job_id: str) -> None:
        try:
            service = await self.state.service()
            job = None
            while job is None or not job.terminal:
                try:
                    job = await (service.get(job_id) if job is None else service.runner.wait(job_id, 3600.0))
                except errors.StoreUnavailable:  # the database is away: keep watching once it is back
                    await anyio.sleep(2.0)
        except errors.KlingError:
            return
        finally:
            self.watching.discard(job_id)
        prefix = f"kling://jobs/{job_id}/videos/"
        for uri in [u for u in self.subscribers if u.startswith(prefix)]:
            note = ResourceUpdatedNotification(params=ResourceUpdatedNotificationParams(uri=uri))
            for session in list(self.subscribers.pop(uri, {}).values()):
                await self._send_to(session, note)
        for uri in [u for u in self.listened if u.startswith(prefix)]:
            self.listened.discard(uri)
            await self.bus.publish(ResourceUpdated(uri=uri))


class _ClientLogHandler(logging.Handler):
    """Hands ``kling_mcp`` log records to every running server's :class:`_Live`."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lives: list[_Live] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == log.name:
            return  # never forward the forwarder's own records
        for live in list(self.lives):
            live.offer(record)


_HANDLER = _ClientLogHandler()
_HANDLER_LOCK = threading.Lock()


def _attach(live: _Live) -> None:
    with _HANDLER_LOCK:
        if not _HANDLER.lives:
            logging.getLogger("kling_mcp").addHandler(_HANDLER)
        _HANDLER.lives.append(live)


def _detach(live: _Live) -> None:
    with _HANDLER_LOCK:
        if live in _HANDLER.lives:
            _HANDLER.lives.remove(live)
        if not _HANDLER.lives:
            logging.getLogger("kling_mcp").removeHandler(_HANDLER)


def _lowlevel(mcp: Any) -> Any:
    """The SDK's low-level server, after checking every private seam this module relies on."""
    low = getattr(mcp, "_lowlevel_server", None)
    bus = getattr(mcp, "_subscriptions", None)
    missing = [
        name
        for name, ok in [
            ("MCPServer._lowlevel_server", low is not None),
            ("Server.add_request_handler", callable(getattr(low, "add_request_handler", None))),
            ("Server.lifespan", callable(getattr(low, "lifespan", None))),
            ("MCPServer._subscriptions.publish", callable(getattr(bus, "publish", None))),
            ("MCPServer.middleware", isinstance(getattr(mcp, "middleware", None), list)),
        ]
        if not ok
    ]
    if missing:
        raise RuntimeError(
            f"this mcp version lacks {', '.join(missing)}, which kling_mcp.server_extras uses for "
            "logging/setLevel, completions and subscriptions; install mcp 2.3.x or update "
            "kling_mcp/server_extras.py."
        )
    return low


def install_extras(mcp: Any, settings: Any) -> None:
    """Register logging/setLevel, completion/complete and resource subscriptions on ``mcp``.

    Raises RuntimeError at start-up if the installed mcp lacks a seam this needs.
    """
    low = _lowlevel(mcp)
    lives: dict[int, _Live] = {}
    inner = low.lifespan

    @asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[Any]:
        async with inner(server) as state, anyio.create_task_group() as tg:
            live = _Live(state, tg, mcp._subscriptions, settings.secrets())
            lives[id(state)] = live
            _attach(live)
            tg.start_soon(live.forward_logs)
            try:
                yield state
            finally:
                _detach(live)
                lives.pop(id(state), None)
                tg.cancel_scope.cancel()

    low.lifespan = lifespan

    def live_of(ctx: Any) -> _Live:
        return lives[id(ctx.lifespan_context)]

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        live = live_of(ctx)
        live.log_levels[_connection(ctx.session)] = (ctx.session, _PY_LEVEL[params.level])
        return EmptyResult()

    async def complete(ctx: Any, params: CompleteRequestParams) -> CompleteResult:
        return CompleteResult(completion=await _complete(await live_of(ctx).state.service(), params))

    def video_uri(uri: str) -> tuple[str, int]:
        match = _VIDEO_URI.match(str(uri))
        if match is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=(
                    f"cannot subscribe to {uri}: only {VIDEO_TEMPLATE} resources change while the server runs "
                    "(kling://catalog does not); pass a video URI from a generate_video or check_job result."
                ),
            )
        return match["job_id"], int(match["index"])

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        live = live_of(ctx)
        job_id, index = video_uri(str(params.uri))
        try:
            job = await (await live.state.service()).get(job_id)
        except errors.KlingError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"cannot subscribe to {params.uri}: {exc}") from None
        _refuse_missing_index(str(params.uri), job, index)
        if not job.terminal:  # a finished job's videos never change: nothing to notify
            live.subscribers.setdefault(str(params.uri), {})[_connection(ctx.session)] = ctx.session
            live.watch(job_id)
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        video_uri(str(params.uri))
        live_of(ctx).subscribers.get(str(params.uri), {}).pop(_connection(ctx.session), None)
        return EmptyResult()

    async def on_listen(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        """2026 era: a ``subscriptions/listen`` naming job video URIs starts watching those jobs."""
        listen = ctx.method == "subscriptions/listen" and isinstance(ctx.params, Mapping)
        if listen and id(ctx.lifespan_context) in lives:
            live = live_of(ctx)
            wanted = (ctx.params.get("notifications") or {}).get("resourceSubscriptions") or []
            for uri in wanted if isinstance(wanted, list) else []:
                match = _VIDEO_URI.match(str(uri))
                job = await (await live.state.service()).store.get(match["job_id"]) if match else None
                if job is not None and match is not None:
                    _refuse_missing_index(str(uri), job, int(match["index"]))
                if job is not None and not job.terminal:
                    live.listened.add(str(uri))
                    live.watch(job.job_id)
        return await call_next(ctx)

    low.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    low.add_request_handler("completion/complete", CompleteRequestParams, complete)
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    mcp.middleware.append(on_listen)


def _refuse_missing_index(uri: str, job: Any, index: int) -> None:
    """A subscription to a video index the job does not have (will not have) is refused: -32602."""
    has = [v.index for v in job.videos] if job.terminal else list(range(job.spec.num_videos))
    if index not in has:
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"cannot subscribe to {uri}: job {job.job_id} "
            + (f"has videos {', '.join(map(str, has))} only." if has else "has no videos."),
        )


async def _complete(service: Any, params: CompleteRequestParams) -> Completion:
    """Completions for the storyboard prompt and the job video template."""
    ref, arg = params.ref, params.argument
    given = (params.context.arguments if params.context else None) or {}
    if isinstance(ref, PromptReference):
        if ref.name != "storyboard":
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"no prompt named {ref.name!r}; completions exist for the storyboard prompt.",
            )
        if arg.name == "aspect_ratio":
            return _filter(list(catalog.bounds()["aspect_ratios"]), arg.value)
        if arg.name == "shots":
            return _filter(SHOTS, arg.value)
        if arg.name == "topic":
            return Completion(values=[], total=0, has_more=False)  # free text
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"the storyboard prompt has no argument {arg.name!r}; it takes topic, shots and aspect_ratio.",
        )
    if isinstance(ref, ResourceTemplateReference) and ref.uri == VIDEO_TEMPLATE:
        if arg.name == "job_id":
            ids = [j.job_id for j in await service.store.list_jobs(None, 500) if j.videos]
            return _filter(ids, arg.value)
        if arg.name == "index":
            job = await service.store.get(given.get("job_id") or "")
            return _filter([str(v.index) for v in job.videos] if job else [], arg.value)
        raise MCPError(
            code=INVALID_PARAMS, message=f"{VIDEO_TEMPLATE} has no variable {arg.name!r}; it takes job_id and index."
        )
    raise MCPError(
        code=INVALID_PARAMS,
        message=f"no resource template {getattr(ref, 'uri', ref)!r}; completions exist for {VIDEO_TEMPLATE}.",
    )

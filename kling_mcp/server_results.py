"""The server's lifespan state and how a job becomes a tool result (text, resource links, a poster).

Part of the MCP edge (with server.py): the service is built after ``initialize`` is answered
(:class:`AppState`), and tools reach it through :func:`service_of`.
"""

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent

from .config import Settings
from .requests import EditRequest, GenerateRequest, JobView, dump
from .server_checks import reporting

if TYPE_CHECKING:  # the service's modules and the job model load in a worker thread after start-up (AppState.open)
    from .jobs.model import Job
    from .service import VideoService

log = logging.getLogger("kling_mcp.server")


class AppState:
    """What the lifespan yields. The service (its modules, the job store, the runner) is built in a
    worker thread once the first request (``initialize``) is answered, or after a second without one,
    so answering it never waits for the store or shares the CPU with building it; a request that needs
    the service waits for it (once, for a few tens of milliseconds)."""

    def __init__(self) -> None:
        self._ready = anyio.Event()
        self._answered = anyio.Event()
        self._built: VideoService | None = None

    def request_answered(self) -> None:
        """Called by the middleware after each request: the first one lets the service open."""
        self._answered.set()

    async def service(self) -> "VideoService":
        if not self._ready.is_set():
            await self._ready.wait()
        assert self._built is not None
        return self._built

    async def open(self, settings: Settings, tg: anyio.abc.TaskGroup) -> None:
        """Build the service off the event loop, then resume unfinished jobs; a failure stops the server."""

        def build() -> None:
            from .service import VideoService  # its HTTP client is built on first use

            self._built = VideoService(settings)

        with anyio.move_on_after(1.0):
            await self._answered.wait()
        await anyio.sleep(0.01)  # the answer's write goes first
        await anyio.to_thread.run_sync(build)
        assert self._built is not None
        resumed = await self._built.runner.start(tg)
        if resumed:
            log.info("resumed %d unfinished job(s)", resumed)
        self._ready.set()

    async def aclose(self) -> None:
        if self._built is not None:
            await self._built.aclose()


def lifespan_for(settings: Settings) -> Callable[[MCPServer], Any]:
    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[AppState]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        state = AppState()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(state.open, settings, tg)
                try:
                    yield state
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await state.aclose()

    return lifespan


async def service_of(ctx: Context) -> "VideoService":
    return await cast(AppState, ctx.request_context.lifespan_context).service()


async def _poster(service: "VideoService", job: "Job") -> ImageContent | None:
    if not job.videos:
        return None
    from . import poster

    data = poster.remembered(job.videos[0].path)
    if data is None:
        try:
            data = await anyio.to_thread.run_sync(poster.poster_jpeg_cached, job.videos[0].path)
        except Exception:
            log.warning("no poster for job %s", job.job_id)
            return None
    return ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=poster.MIME_TYPE)


def _summary(view: JobView) -> str:
    cost = (
        f"${view.cost_usd:.3f} billed"
        if view.cost_usd is not None
        else (f"~${view.estimated_cost_usd:.3f} estimated" if view.estimated_cost_usd is not None else "cost unknown")
    )
    head = (
        f"Job {view.job_id}: {view.status} ({view.provider} {view.model}, {view.operation}, "
        f"{view.progress:.0f}%, {cost})."
    )
    lines = [head]
    if view.note:
        lines.append(view.note)
    for v in view.videos:
        lines.append(f"Video: {v.path} ({v.width}x{v.height}, {v.duration_s} s) resource {v.uri}")
    for shot in getattr(view, "shots", []):  # a storyboard
        made = f" {shot.videos[0].uri}" if shot.videos else ""
        lines.append(f"Shot {shot.shot}: {shot.status} ({shot.operation}, job {shot.job_id}){made}")
    if view.error:
        lines.append(f"Error [{view.error.code}]: {view.error.message}")
    lines.append(f"Next: {view.next_action}")
    return "\n".join(lines)


async def job_result(service: "VideoService", job: "Job", note: str | None = None) -> CallToolResult:
    view = await service.view(job, note)
    content: list[Any] = [TextContent(type="text", text=_summary(view))]
    # A storyboard without an assembled video links its shots' videos instead.
    for v in view.videos or [v for shot in getattr(view, "shots", []) for v in shot.videos]:
        content.append(
            ResourceLink(
                type="resource_link",
                uri=v.uri,
                name=f"{view.job_id}-{v.uri.rsplit('/', 1)[1]}.mp4",
                mime_type=v.mime_type,
                size=v.size_bytes,
                description=f"{view.provider} video for: {view.prompt}",
            )
        )
    poster = await _poster(service, job) if job.videos else None
    if poster is not None:
        content.append(poster)
    return CallToolResult(content=content, structured_content=dump(view))


def submitter(
    service: "VideoService", req: GenerateRequest | EditRequest, ctx: Context
) -> Callable[[float | None], Awaitable[tuple["Job", str | None]]]:
    """``req`` submitted with a given ``confirm_cost_usd`` (what the user agreed to pay)."""

    async def submit(confirmed_usd: float | None) -> tuple["Job", str | None]:
        confirmed = req.model_copy(update={"confirm_cost_usd": confirmed_usd})
        return await reporting(ctx, lambda report: service.generate(confirmed, report), waits=req.wait_seconds != 0)

    return submit

"""The MCP server: tools, resources and prompts over the VideoService. The ONLY module that
imports mcp. Tool schemas (enums, minimum/maximum) and descriptions are derived from the catalog
and the configured providers when the server is built.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import (
    CallToolResult,
    ImageContent,
    InputRequiredResult,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field

from . import __version__, catalog, errors
from .config import WAIT_DEFAULT_S, WAIT_MAX_S, Settings
from .inputs import MAX_ARG_CHARS
from .jobs.model import Job
from .prompts_text import INSTRUCTIONS, STORYBOARD, tool_descriptions
from .requests import (
    CancelResult,
    EditRequest,
    Estimate,
    EstimateRequest,
    GenerateRequest,
    JobList,
    JobView,
    dump,
)
from .server_apps import PLAYER_META, PlayerApps, install_preview
from .server_confirm import with_confirmation
from .service import VideoService
from .views import job_view

log = logging.getLogger("kling_mcp.server")


@dataclass
class AppState:
    service: VideoService


def _lifespan(settings: Settings) -> Callable[[MCPServer], Any]:
    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[AppState]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        service = VideoService(settings)  # its HTTP client is built on first use, not before initialize
        try:
            async with anyio.create_task_group() as tg:
                resumed = await service.runner.start(tg)
                if resumed:
                    log.info("resumed %d unfinished job(s)", resumed)
                try:
                    yield AppState(service)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await service.aclose()

    return lifespan


def _service(ctx: Context) -> VideoService:
    return cast(AppState, ctx.request_context.lifespan_context).service


async def _poster(service: VideoService, job: Job) -> ImageContent | None:
    if not job.videos:
        return None
    try:
        from . import media

        png = await anyio.to_thread.run_sync(media.poster_png_cached, job.videos[0].path)
    except Exception:
        log.warning("no poster for job %s", job.job_id)
        return None
    import base64

    return ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png")


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
    if view.error:
        lines.append(f"Error [{view.error.code}]: {view.error.message}")
    lines.append(f"Next: {view.next_action}")
    return "\n".join(lines)


async def _job_result(service: VideoService, job: Job, note: str | None = None) -> CallToolResult:
    view = job_view(job, note)
    content: list[Any] = [TextContent(type="text", text=_summary(view))]
    for v in view.videos:
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


def _progress(ctx: Context) -> Callable[[float, str], Awaitable[None]]:
    async def report(progress: float, message: str) -> None:
        await ctx.report_progress(progress, 100.0, message)

    return report


def _submitter(
    service: VideoService, req: GenerateRequest | EditRequest, ctx: Context
) -> Callable[[float | None], Awaitable[tuple[Job, str | None]]]:
    """``req`` submitted with a given ``confirm_cost_usd`` (what the user agreed to pay)."""

    async def submit(confirmed_usd: float | None) -> tuple[Job, str | None]:
        return await service.generate(req.model_copy(update={"confirm_cost_usd": confirmed_usd}), _progress(ctx))

    return submit


def create_server(settings: Settings | None = None) -> MCPServer:
    """Build the server for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    bounds = catalog.bounds()
    offered = ["auto", *settings.offered]
    ProviderArg = Literal[tuple(offered)]  # type: ignore[valid-type]
    AspectArg = Literal[tuple(bounds["aspect_ratios"])]  # type: ignore[valid-type]
    Tier = Literal["standard", "pro"]
    Duration = Annotated[
        int,
        Field(
            ge=bounds["duration_min"],
            le=bounds["duration_max"],
            description="Output seconds; each provider accepts a subset (see the tool description).",
        ),
    ]
    Wait = Annotated[
        float,
        Field(
            ge=0,
            le=WAIT_MAX_S,
            allow_inf_nan=False,
            description=(
                f"Seconds to wait for the result before returning the job as it is (default {WAIT_DEFAULT_S:g}, "
                f"max {WAIT_MAX_S:g}: clients cut tool calls at about 60 s)."
            ),
        ),
    ]
    Prompt = Annotated[str, Field(min_length=1, max_length=bounds["prompt_max"], description="What to show.")]
    Refs = Annotated[
        list[str],
        Field(
            max_length=bounds["reference_images_max"],
            description=("Reference images (characters, props, scenes): URLs, data URIs or local paths."),
        ),
    ]
    Media = Annotated[str, Field(max_length=MAX_ARG_CHARS, description="URL, data URI or local file path.")]
    Key = Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description=(
                "Your id for this request: repeating a call with the same key returns the same job instead of paying "
                "twice. Use a new key to deliberately start another job."
            ),
        ),
    ]
    ConfirmCost = Annotated[
        float,
        Field(
            ge=0,
            le=1_000_000,
            allow_inf_nan=False,
            description=(
                "The most the user agreed to pay for this call, in USD. Needed only when the server asks for a "
                "confirmation ([confirmation_required], quotes above KLING_MCP_CONFIRM_ABOVE_USD): repeat the "
                "call with the quote the user accepted."
            ),
        ),
    ]
    docs = tool_descriptions(settings)

    mcp = MCPServer(
        "kling-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=_lifespan(settings),
        extensions=[PlayerApps()],
    )
    spending = ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    )
    reading = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

    @mcp.tool(title="Generate a video", description=docs["generate_video"], annotations=spending, meta=PLAYER_META)
    async def generate_video(
        prompt: Prompt,
        ctx: Context,
        first_frame: Media | None = None,
        last_frame: Media | None = None,
        reference_images: Refs | None = None,
        reference_video: Media | None = None,
        aspect_ratio: AspectArg | None = None,  # type: ignore[valid-type]
        duration: Duration | None = None,
        tier: Tier | None = None,
        provider: ProviderArg = "auto",  # type: ignore[valid-type]
        negative_prompt: Annotated[str, Field(max_length=bounds["prompt_max"])] | None = None,
        seed: Annotated[int, Field(ge=-1, le=2**31 - 1)] | None = None,
        num_videos: Annotated[int, Field(ge=1, le=bounds["num_videos_max"])] = 1,
        keep_original_sound: bool | None = None,
        wait_seconds: Wait | None = None,
        idempotency_key: Key | None = None,
        confirm_cost_usd: ConfirmCost | None = None,
    ) -> Annotated[CallToolResult, JobView] | InputRequiredResult:
        service = _service(ctx)
        try:
            req = GenerateRequest(
                prompt=prompt,
                first_frame=first_frame,
                last_frame=last_frame,
                reference_images=reference_images or [],
                reference_video=reference_video,
                aspect_ratio=aspect_ratio,
                duration=duration,
                tier=tier,
                provider=provider,
                negative_prompt=negative_prompt,
                seed=seed,
                num_videos=num_videos,
                keep_original_sound=keep_original_sound,
                wait_seconds=wait_seconds,
                idempotency_key=idempotency_key,
            )
            outcome = await with_confirmation(ctx, _submitter(service, req, ctx), confirm_cost_usd)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(outcome, InputRequiredResult):
            return outcome
        return await _job_result(service, *outcome)

    @mcp.tool(title="Edit a video", description=docs["edit_video"], annotations=spending, meta=PLAYER_META)
    async def edit_video(
        prompt: Prompt,
        video: Media,
        ctx: Context,
        reference_images: Refs | None = None,
        keep_original_sound: bool | None = None,
        fast: bool = False,
        tier: Tier | None = None,
        provider: ProviderArg = "auto",  # type: ignore[valid-type]
        wait_seconds: Wait | None = None,
        idempotency_key: Key | None = None,
        confirm_cost_usd: ConfirmCost | None = None,
    ) -> Annotated[CallToolResult, JobView] | InputRequiredResult:
        service = _service(ctx)
        try:
            req = EditRequest(
                prompt=prompt,
                video=video,
                reference_images=reference_images or [],
                keep_original_sound=keep_original_sound,
                fast=fast,
                tier=tier,
                provider=provider,
                wait_seconds=wait_seconds,
                idempotency_key=idempotency_key,
            )
            outcome = await with_confirmation(ctx, _submitter(service, req, ctx), confirm_cost_usd)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(outcome, InputRequiredResult):
            return outcome
        return await _job_result(service, *outcome)

    @mcp.tool(title="Check a job", description=docs["check_job"], annotations=reading, meta=PLAYER_META)
    async def check_job(
        job_id: Annotated[str, Field(min_length=1, max_length=100)], ctx: Context, wait_seconds: Wait | None = None
    ) -> Annotated[CallToolResult, JobView]:
        service = _service(ctx)
        try:
            job = await service.check(job_id, wait_seconds, _progress(ctx))
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        return await _job_result(service, job)

    @mcp.tool(title="Estimate the cost", description=docs["estimate_cost"], annotations=reading)
    async def estimate_cost(
        ctx: Context,
        prompt: Annotated[str, Field(max_length=bounds["prompt_max"])] = "",
        first_frame: Media | None = None,
        last_frame: Media | None = None,
        reference_images: Refs | None = None,
        reference_video: Media | None = None,
        video: Media | None = None,
        video_duration_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] | None = None,
        aspect_ratio: AspectArg | None = None,  # type: ignore[valid-type]
        duration: Duration | None = None,
        tier: Tier | None = None,
        provider: Literal[tuple(["auto", *catalog.PROVIDER_NAMES])] = "auto",  # type: ignore[valid-type]
        negative_prompt: Annotated[str, Field(max_length=bounds["prompt_max"])] | None = None,
        seed: Annotated[int, Field(ge=-1, le=2**31 - 1)] | None = None,
        num_videos: Annotated[int, Field(ge=1, le=bounds["num_videos_max"])] = 1,
        keep_original_sound: bool | None = None,
        fast: bool = False,
    ) -> Estimate:
        try:
            return await _service(ctx).estimate(
                EstimateRequest(
                    prompt=prompt,
                    first_frame=first_frame,
                    last_frame=last_frame,
                    reference_images=reference_images or [],
                    reference_video=reference_video,
                    video=video,
                    video_duration_s=video_duration_s,
                    aspect_ratio=aspect_ratio,
                    duration=duration,
                    tier=tier,
                    provider=provider,
                    negative_prompt=negative_prompt,
                    seed=seed,
                    num_videos=num_videos,
                    keep_original_sound=keep_original_sound,
                    fast=fast,
                )
            )
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None

    @mcp.tool(title="List jobs", description=docs["list_jobs"], annotations=reading)
    async def list_jobs(
        ctx: Context,
        status: Literal["pending", "submitted", "running", "downloading", "succeeded", "failed", "cancelled"]
        | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
    ) -> JobList:
        return _service(ctx).list_jobs(status, limit)

    @mcp.tool(
        title="Cancel a job",
        description=docs["cancel_job"],
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def cancel_job(job_id: Annotated[str, Field(min_length=1, max_length=100)], ctx: Context) -> CancelResult:
        try:
            return await _service(ctx).cancel(job_id)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None

    @mcp.resource(
        "kling://jobs/{job_id}/videos/{index}",
        name="job-video",
        mime_type="video/mp4",
        description="A finished video of a job (MP4 bytes).",
    )
    async def job_video(job_id: str, index: str, ctx: Context) -> bytes:
        try:
            path = _service(ctx).video_path(job_id, int(index))
        except (errors.KlingError, ValueError) as exc:
            raise ResourceNotFoundError(f"no video {index} for job {job_id}: {exc}") from None
        return await anyio.Path(path).read_bytes()

    install_preview(mcp, lambda ctx, job_id, index: _service(ctx).video_path(job_id, index))

    @mcp.resource(
        "kling://catalog",
        name="catalog",
        mime_type="application/json",
        description="Every provider's Kling O1 variants: operations, limits, sizes and prices.",
    )
    def catalog_resource() -> str:
        import json

        return json.dumps(catalog.catalog_json(), indent=1)

    @mcp.prompt(title="Storyboard", description="Plan and generate a multi-shot video with continuity.")
    def storyboard(topic: str, shots: str = "3", aspect_ratio: str = "16:9") -> str:
        return STORYBOARD.format(topic=topic, shots=shots, aspect_ratio=aspect_ratio)

    _forbid_unknown_arguments(mcp)
    from .server_extras import install_extras

    install_extras(mcp, settings)
    return mcp


def _forbid_unknown_arguments(mcp: MCPServer) -> None:
    """Reject misspelled or unknown arguments instead of silently ignoring them.

    MCPServer's argument models ignore extra keys; a typo such as ``durations=10`` would then be
    dropped without a word. There is no public hook, so this reaches into the tool manager and
    fails loudly at start-up if the SDK's layout changes.
    """
    tools = getattr(getattr(mcp, "_tool_manager", None), "_tools", None)
    if not isinstance(tools, dict) or not tools:
        raise RuntimeError("mcp SDK layout changed: cannot reach the tool manager to forbid unknown arguments")
    for tool in tools.values():
        model = tool.fn_metadata.arg_model
        model.model_config["extra"] = "forbid"
        model.model_rebuild(force=True)
        tool.parameters["additionalProperties"] = False

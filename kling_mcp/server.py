"""The MCP server: tools, resources and prompts over the VideoService. The ONLY module that
imports mcp. Tool schemas (enums, minimum/maximum) and descriptions are derived from the catalog
and the configured providers when the server is built.
"""

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.types import (
    CallToolResult,
    ImageContent,
    InputRequiredResult,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field, WithJsonSchema

from . import __version__, catalog, errors, server_checks
from .config import WAIT_DEFAULT_S, WAIT_MAX_S, Settings
from .estimate_text import estimate_text
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
from .server_checks import install_checks, reporting
from .server_confirm import with_confirmation
from .tool_limits import EDIT_OPS, GENERATE_OPS, Bounds, bounds, limit_providers, offering
from .tool_schemas import compact_tool_schemas, share_output_schema, summarize_items

if TYPE_CHECKING:  # the service's modules load in a worker thread after start-up (AppState.open)
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


def _lifespan(settings: Settings) -> Callable[[MCPServer], Any]:
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


async def _service(ctx: Context) -> "VideoService":
    return await cast(AppState, ctx.request_context.lifespan_context).service()


async def _poster(service: "VideoService", job: Job) -> ImageContent | None:
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


async def _job_result(service: "VideoService", job: Job, note: str | None = None) -> CallToolResult:
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


def _submitter(
    service: "VideoService", req: GenerateRequest | EditRequest, ctx: Context
) -> Callable[[float | None], Awaitable[tuple[Job, str | None]]]:
    """``req`` submitted with a given ``confirm_cost_usd`` (what the user agreed to pay)."""

    async def submit(confirmed_usd: float | None) -> tuple[Job, str | None]:
        confirmed = req.model_copy(update={"confirm_cost_usd": confirmed_usd})
        return await reporting(ctx, lambda report: service.generate(confirmed, report), waits=req.wait_seconds != 0)

    return submit


def create_server(settings: Settings | None = None) -> MCPServer:
    """Build the server for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    limited_by = limit_providers(settings.configured)
    gen, edit = bounds(limited_by, GENERATE_OPS), bounds(limited_by, EDIT_OPS)
    est = bounds(limited_by, GENERATE_OPS + EDIT_OPS)

    def provider_arg(ops: tuple[str, ...]) -> Any:
        return Annotated[
            Literal[tuple(["auto", *offering(settings.offered, ops)])],
            Field(description="Which API runs it; auto: the cheapest that accepts the request."),
        ]

    Tier = Annotated[
        Literal["standard", "pro"],
        Field(description="standard (720p) or pro (1080p); unset: the cheapest that accepts the request."),
    ]

    def aspect(b: Bounds) -> Any:
        return Annotated[
            Literal[tuple(b.aspect_ratios)],
            Field(description="Output shape; unset: 16:9 where offered."),
        ]

    def duration(b: Bounds) -> Any:
        return Annotated[
            int,
            Field(
                ge=b.duration_min,
                le=b.duration_max,
                description="Output seconds (each provider's choices are listed above).",
            ),
        ]

    def wait(default: float, what: str) -> Any:
        return Annotated[
            float,
            Field(
                ge=0,
                le=WAIT_MAX_S,
                allow_inf_nan=False,
                json_schema_extra={"default": default},
                description=f"Seconds to wait for the job to finish, with progress notifications{what}.",
            ),
        ]

    Wait = wait(WAIT_DEFAULT_S, "; then call check_job")
    CheckWait = wait(0.0, "; 0: at once")

    def prompt(b: Bounds, what: str, min_length: int = 1) -> Any:
        return Annotated[str, Field(min_length=min_length, max_length=b.prompt_max, description=what or None)]

    def refs(b: Bounds) -> Any:
        return Annotated[
            list[str],
            Field(
                max_length=b.reference_images_max,
                description="Images of characters, props or scenes to keep.",
            ),
        ]

    def media(what: str) -> Any:
        return Annotated[str, Field(max_length=MAX_ARG_CHARS, description=f"{what}." if what else None)]

    def negative(b: Bounds) -> Any:
        return Annotated[str, Field(max_length=b.prompt_max, description="What to avoid (where supported).")]

    def count(b: Bounds) -> Any:
        return Annotated[
            int, Field(ge=1, le=b.num_videos_max, description="How many videos to make (where supported).")
        ]

    Seed = Annotated[
        int, Field(ge=-1, le=2**31 - 1, description="Seed for repeatable output (where supported); -1: random.")
    ]
    Sound = Annotated[bool, Field(description="Keep the input video's audio.")]
    Fast = Annotated[bool, Field(description="The faster edit mode, for longer inputs (where offered).")]
    JobId = Annotated[
        str, Field(min_length=1, max_length=100, description="The job_id a generate or edit call returned.")
    ]

    As = Field(description="As in generate_video.")  # the description only; the limits are edit_video's own

    def same(kind: Any, json_type: str, tool: str = "generate_video") -> Any:
        """``kind``, validated as in ``tool`` but published as "as in <tool>": each limit is stated once."""
        shown: dict[str, Any] = {"type": json_type, "description": f"As in {tool}"}
        if json_type == "array":
            shown["items"] = {"type": "string"}
        return Annotated[kind, WithJsonSchema(shown)]

    Key = Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description="Your id for this request: reusing it returns the same job, never billing twice.",
        ),
    ]
    ConfirmCost = Annotated[
        float, Field(ge=0, allow_inf_nan=False, description="USD the user agreed to pay (see confirmation_required).")
    ]
    docs = tool_descriptions(settings)

    mcp = MCPServer(
        "kling-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=_lifespan(settings),
        # Replicas must share the keys that seal request state (a retry may land on another replica).
        request_state_security=RequestStateSecurity(keys=list(settings.request_state_keys))
        if settings.request_state_keys
        else None,
        extensions=[PlayerApps()],
    )
    # Only the hints that differ from the spec's defaults (read_only false, destructive true,
    # idempotent false, open_world true): every tool is listed in every prompt.
    spending = ToolAnnotations(destructive_hint=False)
    reading = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

    @mcp.tool(title="Generate a video", description=docs["generate_video"], annotations=spending, meta=PLAYER_META)
    async def generate_video(
        prompt: prompt(gen, "What to show: subject, action, camera, light."),  # type: ignore[valid-type]
        ctx: Context,
        first_frame: media("Start image") | None = None,  # type: ignore[valid-type]
        last_frame: media("End image (needs first_frame)") | None = None,  # type: ignore[valid-type]
        reference_images: refs(gen) | None = None,  # type: ignore[valid-type]
        reference_video: media("Video whose subjects or style to follow") | None = None,  # type: ignore[valid-type]
        aspect_ratio: aspect(gen) | None = None,  # type: ignore[valid-type]
        duration: duration(gen) | None = None,  # type: ignore[valid-type]
        tier: Tier | None = None,
        provider: provider_arg(GENERATE_OPS) = "auto",  # type: ignore[valid-type]
        negative_prompt: negative(gen) | None = None,  # type: ignore[valid-type]
        seed: Seed | None = None,
        num_videos: count(gen) = 1,  # type: ignore[valid-type]
        keep_original_sound: Sound | None = None,
        wait_seconds: Wait | None = None,  # type: ignore[valid-type]
        idempotency_key: Key | None = None,
        confirm_cost_usd: ConfirmCost | None = None,
    ) -> Annotated[CallToolResult, JobView] | InputRequiredResult:
        service = await _service(ctx)
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
        prompt: prompt(edit, "What to change."),  # type: ignore[valid-type]
        video: media("The video to edit"),  # type: ignore[valid-type]
        ctx: Context,
        reference_images: Annotated[refs(edit), As] | None = None,  # type: ignore[valid-type]
        keep_original_sound: Sound | None = None,
        fast: Fast = False,
        tier: Annotated[Tier, As] | None = None,
        provider: Annotated[provider_arg(EDIT_OPS), As] = "auto",  # type: ignore[valid-type]
        wait_seconds: Annotated[Wait, As] | None = None,  # type: ignore[valid-type]
        idempotency_key: Annotated[Key, As] | None = None,
        confirm_cost_usd: Annotated[ConfirmCost, As] | None = None,
    ) -> Annotated[CallToolResult, JobView] | InputRequiredResult:
        service = await _service(ctx)
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
        job_id: JobId,
        ctx: Context,
        wait_seconds: CheckWait | None = None,  # type: ignore[valid-type]
    ) -> Annotated[CallToolResult, JobView]:
        service = await _service(ctx)
        try:
            job = await reporting(
                ctx, lambda report: service.check(job_id, wait_seconds, report), waits=bool(wait_seconds)
            )
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        return await _job_result(service, job)

    @mcp.tool(title="Estimate the cost", description=docs["estimate_cost"], annotations=reading)
    async def estimate_cost(
        ctx: Context,
        prompt: same(prompt(est, "", 0), "string") = "",  # type: ignore[valid-type]
        first_frame: same(media(""), "string") | None = None,  # type: ignore[valid-type]
        last_frame: same(media(""), "string") | None = None,  # type: ignore[valid-type]
        reference_images: same(refs(est), "array") | None = None,  # type: ignore[valid-type]
        reference_video: same(media(""), "string") | None = None,  # type: ignore[valid-type]
        video: same(media(""), "string", "edit_video") | None = None,  # type: ignore[valid-type]
        video_duration_s: Annotated[
            float,
            Field(gt=0, le=3600, allow_inf_nan=False, description="To quote an edit without video: its seconds."),
        ]
        | None = None,
        aspect_ratio: same(aspect(est), "string") | None = None,  # type: ignore[valid-type]
        duration: same(duration(gen), "integer") | None = None,  # type: ignore[valid-type]
        tier: same(Tier, "string") | None = None,  # type: ignore[valid-type]
        provider: Annotated[
            Literal[tuple(["auto", *catalog.PROVIDER_NAMES])],  # type: ignore[valid-type]
            Field(description="Quote only this provider; auto: all."),
        ] = "auto",
        negative_prompt: same(negative(gen), "string") | None = None,  # type: ignore[valid-type]
        seed: same(Seed, "integer") | None = None,  # type: ignore[valid-type]
        num_videos: same(count(gen), "integer") = 1,  # type: ignore[valid-type]
        keep_original_sound: same(Sound, "boolean") | None = None,  # type: ignore[valid-type]
        fast: same(Fast, "boolean", "edit_video") = False,  # type: ignore[valid-type]
    ) -> Annotated[CallToolResult, Estimate]:
        try:
            est = await (await _service(ctx)).estimate(
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
        return CallToolResult(content=[TextContent(type="text", text=estimate_text(est))], structured_content=dump(est))

    @mcp.tool(title="List jobs", description=docs["list_jobs"], annotations=reading)
    async def list_jobs(
        ctx: Context,
        status: Annotated[
            Literal["pending", "submitted", "running", "downloading", "succeeded", "failed", "cancelled"],
            Field(description="Only jobs in this status."),
        ]
        | None = None,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many jobs.")] = 50,
    ) -> JobList:
        return await (await _service(ctx)).list_jobs(status, limit)

    @mcp.tool(
        title="Cancel a job",
        description=docs["cancel_job"],
        annotations=ToolAnnotations(idempotent_hint=True),
    )
    async def cancel_job(job_id: JobId, ctx: Context) -> CancelResult:
        try:
            return await (await _service(ctx)).cancel(job_id)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None

    @mcp.resource(
        "kling://jobs/{job_id}/videos/{index}",
        name="job-video",
        mime_type="video/mp4",
        description="A finished video of a job (MP4 bytes; above 50 MB a text with its path and preview).",
    )
    async def job_video(job_id: str, index: str, ctx: Context) -> bytes | str:
        try:
            path = await (await _service(ctx)).video_path(job_id, int(index))
        except (errors.KlingError, ValueError) as exc:
            raise ResourceNotFoundError(f"no video {index} for job {job_id}: {exc}") from None
        too_big = server_checks.too_big_to_read(path, f"kling://jobs/{job_id}/videos/{index}")
        return too_big if too_big is not None else await anyio.Path(path).read_bytes()

    async def video_path(ctx: Context, job_id: str, index: int) -> Any:
        return await (await _service(ctx)).video_path(job_id, index)

    install_preview(mcp, video_path)

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

    from .server_storyboard import install_storyboard

    install_storyboard(
        mcp,
        docs,
        # The shared arguments say "As in generate_video." there: each is described once.
        Wait=Annotated[Wait, As],
        Key=Annotated[Key, As],
        Tier=Annotated[Tier, As],
        Provider=provider_arg(GENERATE_OPS),
        Aspect=Annotated[aspect(gen), As],
        Media=media(""),
        Duration=duration(gen),
        Confirm=Annotated[ConfirmCost, As],
    )
    _forbid_unknown_arguments(mcp)
    from .server_extras import install_extras

    install_extras(mcp, settings)
    install_checks(mcp, settings.configured)
    compact_tool_schemas(mcp)
    share_output_schema(mcp, owner="check_job")
    summarize_items(mcp, "estimate_cost", "quotes")
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

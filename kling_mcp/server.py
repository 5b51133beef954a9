"""The MCP server: tools, resources and prompts over the VideoService. The ONLY module that
imports mcp. Tool schemas (enums, minimum/maximum) and descriptions are derived from the catalog
and the configured providers when the server is built.
"""

import logging
from typing import Annotated, Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.types import (
    CallToolResult,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field, WithJsonSchema

from . import __version__, catalog, errors, server_checks, vocabulary
from .config import WAIT_DEFAULT_S, WAIT_MAX_S, Settings
from .estimate_text import estimate_text
from .prompts_text import INSTRUCTIONS, STORYBOARD, tool_descriptions
from .requests import (
    MAX_ARG_CHARS,
    CancelResult,
    EditRequest,
    Estimate,
    EstimateRequest,
    GenerateRequest,
    JobList,
    JobStatusName,
    JobView,
    dump,
    request_from,
    said,
)
from .server_apps import PLAYER_META, PlayerApps, install_preview
from .server_checks import install_checks, reporting
from .server_confirm import with_confirmation
from .server_results import job_result, lifespan_for, service_of, submitter
from .tool_limits import EDIT_OPS, GENERATE_OPS, Bounds, bounds, limit_providers, offering
from .tool_schemas import compact_tool_schemas, share_output_schema, summarize_items

log = logging.getLogger("kling_mcp.server")

# The tools that answer a job as check_job does (validated against JobView): registered without an output
# schema, they get check_job's output model and a short schema that points to it (share_output_schema).
ANSWER_JOBS = ("generate_video", "edit_video", "generate_storyboard", "retake_shot", "assemble_video")


def create_server(settings: Settings | None = None) -> MCPServer:
    """Build the server for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    limited_by = limit_providers(settings.configured)
    G = GenerateRequest  # each argument's description is its request field's (requests.py), stated once
    gen, edit = bounds(limited_by, GENERATE_OPS), bounds(limited_by, EDIT_OPS)
    est = bounds(limited_by, GENERATE_OPS + EDIT_OPS)

    def provider_arg(ops: tuple[str, ...]) -> Any:
        return Annotated[
            Literal[tuple(["auto", *offering(settings.offered, ops)])],
            Field(description=said(G, "provider")),
        ]

    Tier = Annotated[
        vocabulary.Tier,
        Field(description=said(G, "tier")),
    ]

    def aspect(b: Bounds) -> Any:
        return Annotated[
            Literal[tuple(b.aspect_ratios)],
            Field(description=said(G, "aspect_ratio")),
        ]

    def duration(b: Bounds) -> Any:
        return Annotated[
            int,
            Field(
                ge=b.duration_min,
                le=b.duration_max,
                description=said(G, "duration"),
            ),
        ]

    def wait(default: float, description: str) -> Any:
        return Annotated[
            float,
            Field(
                ge=0,
                le=WAIT_MAX_S,
                allow_inf_nan=False,
                json_schema_extra={"default": default},
                description=description,
            ),
        ]

    Wait = wait(WAIT_DEFAULT_S, said(G, "wait_seconds"))
    CheckWait = wait(0.0, "Seconds to wait for the job to finish, with progress notifications; 0: at once.")

    def prompt(b: Bounds, description: str | None, min_length: int = 1) -> Any:
        return Annotated[str, Field(min_length=min_length, max_length=b.prompt_max, description=description)]

    def refs(b: Bounds) -> Any:
        return Annotated[
            list[str],
            Field(
                max_length=b.reference_images_max,
                description=said(G, "reference_images"),
            ),
        ]

    def media(description: str | None) -> Any:
        return Annotated[str, Field(max_length=MAX_ARG_CHARS, description=description)]

    def negative(b: Bounds) -> Any:
        return Annotated[str, Field(max_length=b.prompt_max, description=said(G, "negative_prompt"))]

    def count(b: Bounds) -> Any:
        return Annotated[int, Field(ge=1, le=b.num_videos_max, description=said(G, "num_videos"))]

    Seed = Annotated[int, Field(ge=-1, le=2**31 - 1, description=said(G, "seed"))]
    Sound = Annotated[bool, Field(description=said(G, "keep_original_sound"))]
    Fast = Annotated[bool, Field(description=said(EditRequest, "fast"))]
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
            description=said(G, "idempotency_key"),
        ),
    ]
    ConfirmCost = Annotated[float, Field(ge=0, allow_inf_nan=False, description=said(G, "confirm_cost_usd"))]
    docs = tool_descriptions(settings)

    mcp = MCPServer(
        "kling-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan_for(settings),
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
        prompt: prompt(gen, said(G, "prompt")),  # type: ignore[valid-type]
        ctx: Context,
        first_frame: media(said(G, "first_frame")) | None = None,  # type: ignore[valid-type]
        last_frame: media(said(G, "last_frame")) | None = None,  # type: ignore[valid-type]
        reference_images: refs(gen) | None = None,  # type: ignore[valid-type]
        reference_video: media(said(G, "reference_video")) | None = None,  # type: ignore[valid-type]
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
    ) -> CallToolResult | InputRequiredResult:  # the job: see ANSWER_JOBS
        service = await service_of(ctx)
        try:
            req = request_from(GenerateRequest, locals())  # the arguments are the request fields
            outcome = await with_confirmation(ctx, submitter(service, req, ctx), confirm_cost_usd)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(outcome, InputRequiredResult):
            return outcome
        return await job_result(service, *outcome)

    @mcp.tool(title="Edit a video", description=docs["edit_video"], annotations=spending, meta=PLAYER_META)
    async def edit_video(
        prompt: prompt(edit, said(EditRequest, "prompt")),  # type: ignore[valid-type]
        video: media(said(EditRequest, "video")),  # type: ignore[valid-type]
        ctx: Context,
        reference_images: Annotated[refs(edit), As] | None = None,  # type: ignore[valid-type]
        keep_original_sound: Sound | None = None,
        fast: Fast = False,
        tier: Annotated[Tier, As] | None = None,
        provider: Annotated[provider_arg(EDIT_OPS), As] = "auto",  # type: ignore[valid-type]
        wait_seconds: Annotated[Wait, As] | None = None,  # type: ignore[valid-type]
        idempotency_key: Annotated[Key, As] | None = None,
        confirm_cost_usd: Annotated[ConfirmCost, As] | None = None,
    ) -> CallToolResult | InputRequiredResult:  # the job: see ANSWER_JOBS
        service = await service_of(ctx)
        try:
            req = request_from(EditRequest, locals())
            outcome = await with_confirmation(ctx, submitter(service, req, ctx), confirm_cost_usd)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(outcome, InputRequiredResult):
            return outcome
        return await job_result(service, *outcome)

    @mcp.tool(title="Check a job", description=docs["check_job"], annotations=reading, meta=PLAYER_META)
    async def check_job(
        job_id: JobId,
        ctx: Context,
        wait_seconds: CheckWait | None = None,  # type: ignore[valid-type]
    ) -> Annotated[CallToolResult, JobView]:
        service = await service_of(ctx)
        try:
            job = await reporting(
                ctx, lambda report: service.check(job_id, wait_seconds, report), waits=bool(wait_seconds)
            )
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        return await job_result(service, job)

    @mcp.tool(title="Estimate the cost", description=docs["estimate_cost"], annotations=reading)
    async def estimate_cost(
        ctx: Context,
        prompt: same(prompt(est, None, 0), "string") = "",  # type: ignore[valid-type]
        first_frame: same(media(None), "string") | None = None,  # type: ignore[valid-type]
        last_frame: same(media(None), "string") | None = None,  # type: ignore[valid-type]
        reference_images: same(refs(est), "array") | None = None,  # type: ignore[valid-type]
        reference_video: same(media(None), "string") | None = None,  # type: ignore[valid-type]
        video: same(media(None), "string", "edit_video") | None = None,  # type: ignore[valid-type]
        video_duration_s: Annotated[
            float,
            Field(gt=0, le=3600, allow_inf_nan=False, description=said(EstimateRequest, "video_duration_s")),
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
            est = await (await service_of(ctx)).estimate(request_from(EstimateRequest, locals()))
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        return CallToolResult(content=[TextContent(type="text", text=estimate_text(est))], structured_content=dump(est))

    @mcp.tool(title="List jobs", description=docs["list_jobs"], annotations=reading)
    async def list_jobs(
        ctx: Context,
        status: Annotated[
            JobStatusName,
            Field(description="Only jobs in this status."),
        ]
        | None = None,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many jobs.")] = 50,
    ) -> JobList:
        return await (await service_of(ctx)).list_jobs(status, limit)

    @mcp.tool(
        title="Cancel a job",
        description=docs["cancel_job"],
        annotations=ToolAnnotations(idempotent_hint=True),
    )
    async def cancel_job(job_id: JobId, ctx: Context) -> CancelResult:
        try:
            return await (await service_of(ctx)).cancel(job_id)
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
            path = await (await service_of(ctx)).video_path(job_id, int(index))
        except (errors.KlingError, ValueError) as exc:
            raise ResourceNotFoundError(f"no video {index} for job {job_id}: {exc}") from None
        too_big = server_checks.too_big_to_read(path, f"kling://jobs/{job_id}/videos/{index}")
        return too_big if too_big is not None else await anyio.Path(path).read_bytes()

    async def video_path(ctx: Context, job_id: str, index: int) -> Any:
        return await (await service_of(ctx)).video_path(job_id, index)

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
        Media=media(None),
        Duration=duration(gen),
        Confirm=Annotated[ConfirmCost, As],
    )
    _forbid_unknown_arguments(mcp)
    from .server_extras import install_extras

    install_extras(mcp, settings)
    install_checks(mcp, settings.configured)
    compact_tool_schemas(mcp)
    share_output_schema(mcp, owner="check_job", answering=ANSWER_JOBS)
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

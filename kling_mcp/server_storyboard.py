"""The storyboard tools (``generate_storyboard``, ``retake_shot``, ``assemble_video``) and the frame
resources (``kling://jobs/{job_id}/videos/{index}/first-frame`` and ``/last-frame``).

Part of the server layer (it knows MCP); :func:`install_storyboard` is called by ``create_server`` with
the argument types it derives from the catalog, so these tools take the same values as the others.
"""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field

from . import errors, vocabulary
from .assembly import MAX_INPUTS, MAX_TRANSITION_S, MIN_INPUTS
from .requests import request_from, said
from .server_apps import PLAYER_META
from .server_checks import reporting
from .server_confirm import with_confirmation
from .storyboard_models import (
    MAX_SHOTS,
    AssembleRequest,
    RetakeRequest,
    ShotInput,
    StoryboardRequest,
)

if TYPE_CHECKING:  # loaded with the service, after start-up
    from .jobs.model import Job

R = TypeVar("R", StoryboardRequest, RetakeRequest)


def _confirmed(
    make: Callable[[R, Any], Awaitable[tuple["Job", str | None]]], req: R, ctx: Context
) -> Callable[[float | None], Awaitable[tuple["Job", str | None]]]:
    """``make(req)`` with a given ``confirm_cost_usd`` (what the user agreed to pay), with progress."""

    async def attempt(confirmed_usd: float | None) -> tuple["Job", str | None]:
        confirmed = req.model_copy(update={"confirm_cost_usd": confirmed_usd})
        return await reporting(ctx, lambda report: make(confirmed, report), waits=req.wait_seconds != 0)

    return attempt


def install_storyboard(
    mcp: MCPServer,
    docs: dict[str, str],
    *,
    Wait: Any,
    Key: Any,
    Tier: Any,
    Provider: Any,
    Aspect: Any,
    Media: Any,
    Duration: Any,
    Confirm: Any,
) -> None:
    """Register the storyboard tools and the frame resources on ``mcp``."""
    from .server_results import job_result, service_of

    spending = ToolAnnotations(destructive_hint=False)

    def said_by(model: type[BaseModel], name: str) -> Any:
        """The field's description, as the request model declares it (storyboard_models.py)."""
        return Field(description=said(model, name))

    Transition = Annotated[vocabulary.Transition, said_by(StoryboardRequest, "transition")]
    Seconds = Annotated[
        float,
        Field(gt=0, le=MAX_TRANSITION_S, allow_inf_nan=False, description=said(StoryboardRequest, "transition_s")),
    ]
    Continuity = Annotated[vocabulary.Continuity, said_by(StoryboardRequest, "continuity")]
    Style = Annotated[Annotated[str, Field(max_length=1000)] | None, said_by(StoryboardRequest, "style")]
    SharedRefs = Annotated[
        Annotated[list[Media], Field(max_length=10)] | None, said_by(StoryboardRequest, "reference_images")
    ]
    Assemble = Annotated[bool, said_by(StoryboardRequest, "assemble")]
    BoardId = Annotated[str, Field(min_length=1, max_length=100, description=said(RetakeRequest, "job_id"))]
    ShotNumber = Annotated[int, Field(ge=1, le=MAX_SHOTS, description=said(RetakeRequest, "shot"))]
    NewPrompt = Annotated[Annotated[str, Field(min_length=1, max_length=5000)] | None, said_by(RetakeRequest, "prompt")]
    Cascade = Annotated[bool, said_by(RetakeRequest, "cascade")]

    @mcp.tool(
        title="Generate a storyboard", description=docs["generate_storyboard"], annotations=spending, meta=PLAYER_META
    )
    async def generate_storyboard(
        shots: Annotated[
            list[ShotInput],
            Field(
                min_length=1,
                max_length=MAX_SHOTS,
                description=said(StoryboardRequest, "shots"),
            ),
        ],
        ctx: Context,
        continuity: Continuity = "chain",
        style: Style = None,
        reference_images: SharedRefs = None,
        aspect_ratio: Aspect | None = None,
        tier: Tier | None = None,
        provider: Annotated[Provider, said_by(StoryboardRequest, "provider")] = "auto",
        transition: Transition = "cut",
        transition_s: Seconds = 0.5,
        assemble: Assemble = True,
        wait_seconds: Wait | None = None,
        idempotency_key: Key | None = None,
        confirm_cost_usd: Confirm | None = None,
    ) -> CallToolResult | InputRequiredResult:  # the job, plus shots: see server.ANSWER_JOBS and the description
        service = await service_of(ctx)
        try:
            req = request_from(StoryboardRequest, locals())  # the arguments are the request fields
            outcome = await with_confirmation(ctx, _confirmed(service.boards.create, req, ctx), confirm_cost_usd)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(outcome, InputRequiredResult):
            return outcome
        return await job_result(service, *outcome)

    @mcp.tool(title="Retake a shot", description=docs["retake_shot"], annotations=spending, meta=PLAYER_META)
    async def retake_shot(
        job_id: BoardId,
        shot: ShotNumber,
        ctx: Context,
        prompt: NewPrompt = None,
        duration: Duration | None = None,
        cascade: Cascade = False,
        wait_seconds: Wait | None = None,
        idempotency_key: Key | None = None,
        confirm_cost_usd: Confirm | None = None,
    ) -> CallToolResult | InputRequiredResult:  # the job, plus shots: see server.ANSWER_JOBS and the description
        service = await service_of(ctx)
        try:
            req = request_from(RetakeRequest, locals())
            outcome = await with_confirmation(ctx, _confirmed(service.boards.retake, req, ctx), confirm_cost_usd)
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(outcome, InputRequiredResult):
            return outcome
        return await job_result(service, *outcome)

    @mcp.tool(
        title="Join videos",
        description=docs["assemble_video"],
        annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False),
        meta=PLAYER_META,
    )
    async def assemble_video(
        videos: Annotated[
            list[Media],
            Field(
                min_length=MIN_INPUTS,
                max_length=MAX_INPUTS,
                description=said(AssembleRequest, "videos"),
            ),
        ],
        ctx: Context,
        transition: Transition = "cut",
        transition_s: Seconds = 0.5,
        aspect_ratio: Annotated[Aspect, said_by(AssembleRequest, "aspect_ratio")] | None = None,
        wait_seconds: Wait | None = None,
        idempotency_key: Key | None = None,
    ) -> CallToolResult:  # the job: see server.ANSWER_JOBS
        service = await service_of(ctx)
        try:
            req = request_from(AssembleRequest, locals())
            job, note = await reporting(
                ctx, lambda report: service.assemblies.create(req, report), waits=wait_seconds != 0
            )
        except errors.KlingError as exc:
            raise ToolError(str(exc)) from None
        return await job_result(service, job, note)

    async def frame(ctx: Context, job_id: str, index: str, which: Literal["first", "last"]) -> bytes:
        from . import frames, results

        uri = f"kling://jobs/{job_id}/videos/{index}/{which}-frame"
        try:
            job = await (await service_of(ctx)).lookup(job_id)
            if job is None:
                raise errors.UnknownJob(f"no job {job_id!r} on this server.")
            path = results.finished_video(job, int(index), arg="uri", value=uri)
            png = await anyio.to_thread.run_sync(frames.frame_png, path, which)
        except (errors.KlingError, ValueError) as exc:
            raise ResourceNotFoundError(f"no {which} frame of video {index} of job {job_id}: {exc}") from None
        return await anyio.Path(png).read_bytes()

    @mcp.resource(
        "kling://jobs/{job_id}/videos/{index}/first-frame",
        name="job-video-first-frame",
        mime_type="image/png",
        description="The first frame of a finished video (PNG). The URI also works as an image input.",
    )
    async def first_frame(job_id: str, index: str, ctx: Context) -> bytes:
        return await frame(ctx, job_id, index, "first")

    @mcp.resource(
        "kling://jobs/{job_id}/videos/{index}/last-frame",
        name="job-video-last-frame",
        mime_type="image/png",
        description="The last frame of a finished video (PNG). Pass the URI as first_frame to continue from it.",
    )
    async def last_frame(job_id: str, index: str, ctx: Context) -> bytes:
        return await frame(ctx, job_id, index, "last")

"""The inline player (MCP Apps, ``io.modelcontextprotocol/ui``): the MCP edge of it.

- ``ui://kling-mcp/player.html`` (``text/html;profile=mcp-app``): one static page shipped in the package
  (``assets/player.html``), no network access needed (the spec's default CSP allows ``data:`` media); the
  names it reads (statuses, how operations and tiers are shown) are filled in from :mod:`.vocabulary`;
- ``PLAYER_META``: the ``_meta`` that binds a tool to it (``ui.resourceUri``; the flat ``ui/resourceUri`` key
  of pre-GA hosts is left out: tools/list is read in every prompt);
- ``kling://jobs/{job_id}/videos/{index}/preview``: a small rendition (<= 480p, a few MB, made once and
  cached beside the video) that the page plays as a ``data:`` URI, so a 100 MB original never goes
  through the conversation;
- for a client that negotiated Apps, tool results carry their videos' links in the text and the
  structured content only, never as ``resource_link`` blocks: claude.ai gives the page no tool result
  when the content holds one (anthropics/claude-ai-mcp#753). Every result stays complete as text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.apps import Apps, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.types import CallToolRequestParams, CallToolResult, ResourceLink

from . import errors
from .catalog.model import OPERATION_LABELS
from .vocabulary import ACTIVE_NAMES, TERMINAL_NAMES, TIERS, JobOperation, tier_label

PLAYER_URI = "ui://kling-mcp/player.html"
PLAYER_META: dict[str, Any] = {"ui": {"resourceUri": PLAYER_URI}}
PREVIEW_TEMPLATE = "kling://jobs/{job_id}/videos/{index}/preview"
VOCABULARY_SLOT = "__KLING_MCP_VOCABULARY__"  # in the page's <script type="application/json" id="vocabulary">

# How the page titles each operation: the catalog's labels ("text-to-video" -> "Text to video"), and the two
# kinds of job that are not a provider operation.
OPERATION_TITLES: dict[JobOperation, str] = {
    **{op: label.replace("-", " ").capitalize() for op, label in OPERATION_LABELS.items()},
    "storyboard": "Storyboard",
    "assemble": "Assembly",
}


def player_vocabulary() -> dict[str, Any]:
    """The names the page reads, so it holds no copy of its own: which statuses are finished and which
    still move, and how operations and tiers are shown."""
    return {
        "terminal": list(TERMINAL_NAMES),
        "active": list(ACTIVE_NAMES),
        "operations": dict(OPERATION_TITLES),
        "tiers": {tier: tier_label(tier) for tier in TIERS},
    }


def player_html() -> str:
    """The page as shipped in the package, with :func:`player_vocabulary` filled in."""
    page = resources.files("kling_mcp").joinpath("assets", "player.html").read_text(encoding="utf-8")
    data = json.dumps(player_vocabulary(), separators=(",", ":")).replace("<", "\\u003c")  # never ends the <script>
    return page.replace(VOCABULARY_SLOT, data, 1)


class PlayerApps(Apps):
    """MCP Apps with the player page, and without ``resource_link`` blocks for clients that render it."""

    def __init__(self) -> None:
        super().__init__()
        self.add_html_resource(
            PLAYER_URI,
            player_html(),
            name="player",
            title="Kling video player",
            description="Shows a job's progress, plays finished videos inline and a storyboard's shots.",
            prefers_border=True,
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if isinstance(result, CallToolResult) and client_supports_apps(ctx):
            kept = [block for block in result.content if not isinstance(block, ResourceLink)]
            if len(kept) != len(result.content):
                return result.model_copy(update={"content": kept})
        return result


def install_preview(mcp: MCPServer, video_path: Callable[[Context, str, int], Awaitable[Path]]) -> None:
    """Serve the preview rendition; ``video_path(ctx, job_id, index)`` is the finished video's file."""

    @mcp.resource(
        PREVIEW_TEMPLATE,
        name="job-video-preview",
        mime_type="video/mp4",
        description=(
            "A small rendition of a finished video (at most 480p, a few MB; made once and cached) for inline "
            "players. The full file is kling://jobs/{job_id}/videos/{index}."
        ),
    )
    async def job_video_preview(job_id: str, index: str, ctx: Context) -> bytes:
        try:
            path = await video_path(ctx, job_id, int(index))
        except (errors.KlingError, ValueError) as exc:
            raise ResourceNotFoundError(f"no video {index} for job {job_id}: {exc}") from None
        from . import rendition

        try:
            preview = await anyio.to_thread.run_sync(rendition.preview_rendition, path)
        except errors.KlingError as exc:
            raise ResourceError(f"no preview of video {index} of job {job_id}: {exc}") from None
        return await anyio.Path(preview).read_bytes()


__all__ = [
    "PLAYER_META",
    "PLAYER_URI",
    "PREVIEW_TEMPLATE",
    "PlayerApps",
    "install_preview",
    "player_html",
    "player_vocabulary",
]

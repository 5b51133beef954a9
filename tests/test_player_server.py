"""The inline player's server side (MCP Apps), through the SDK's in-memory client in both protocol eras:
the ``ui://`` page and its binding to the tools, the Apps capability, the preview rendition resource,
and results without ``resource_link`` blocks for clients that negotiated Apps (their text stays complete).
The page itself is tested in a real browser by tests/test_player_browser.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mcp import Client
from mcp.client import advertise
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceLink

from kling_mcp import media
from kling_mcp.config import Settings
from kling_mcp.server import create_server
from kling_mcp.server_apps import PLAYER_URI

pytestmark = pytest.mark.anyio

ERAS = ["auto", "legacy"]
APP_MIME = "text/html;profile=mcp-app"
APPS = advertise("io.modelcontextprotocol/ui", {"mimeTypes": [APP_MIME]})
BOUND = {"generate_video", "edit_video", "check_job", "generate_storyboard", "retake_shot", "assemble_video"}


def server(tmp_path: Path):
    return create_server(Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data")}))


async def finished(client: Client, **extra) -> dict:
    result = await client.call_tool("generate_video", {"prompt": "a paper boat on a pond", "provider": "local",
                                                       "duration": 3, "wait_seconds": 45, **extra})
    assert result.structured_content["status"] == "succeeded", result.structured_content
    return result


@pytest.mark.parametrize("mode", ERAS)
async def test_the_player_page_is_a_ui_resource_bound_to_the_job_tools(tmp_path, mode):
    async with Client(server(tmp_path), mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        read = await client.read_resource(PLAYER_URI)
        extensions = client.server_capabilities.extensions
    bound = {name for name, tool in tools.items() if (tool.meta or {}).get("ui", {}).get("resourceUri") == PLAYER_URI}
    assert {"generate_video", "edit_video", "check_job"} <= bound
    assert bound == BOUND & set(tools)  # every job tool that exists, and nothing else
    (page,) = read.contents
    assert page.mime_type == APP_MIME
    html = page.text
    assert html.startswith("<!doctype html>") and "<video" in html and "ui/initialize" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing loaded from the network
    assert "fetch(" not in html and "XMLHttpRequest" not in html
    assert len(html) < 40_000
    # The SDK advertises SEP-2133 extensions only from 2026-07-28 on (2025-11-25 capabilities have no such
    # field); hosts of either era find the page through the tools' _meta.ui.
    if mode == "auto":
        assert "io.modelcontextprotocol/ui" in (extensions or {})


@pytest.mark.parametrize("mode", ERAS)
async def test_an_apps_client_gets_the_links_in_text_and_structured_content_not_as_resource_links(tmp_path, mode):
    async with Client(server(tmp_path), mode=mode, extensions=[APPS]) as apps_client:
        with_apps = await finished(apps_client)
    async with Client(server(tmp_path), mode=mode) as plain_client:
        plain = await finished(plain_client, prompt="a paper boat on a lake")
    assert not any(isinstance(block, ResourceLink) for block in with_apps.content)
    video = with_apps.structured_content["videos"][0]
    text = with_apps.content[0].text
    assert video["path"] in text and video["uri"] in text  # the text result stays complete
    assert any(block.type == "image" for block in with_apps.content)  # the poster frame is still there
    assert [block.uri for block in plain.content if isinstance(block, ResourceLink)] == [
        plain.structured_content["videos"][0]["uri"]]


@pytest.mark.parametrize("mode", ERAS)
async def test_the_preview_rendition_is_small_made_once_and_served_as_mp4(tmp_path, mode):
    async with Client(server(tmp_path), mode=mode) as client:
        done = await client.call_tool("generate_video", {"prompt": "a lantern over a harbour", "provider": "local",
                                                         "tier": "pro", "duration": 3, "wait_seconds": 45})
        video = done.structured_content["videos"][0]
        first = await client.read_resource(video["uri"] + "/preview")
        again = await client.read_resource(video["uri"] + "/preview")
        with pytest.raises(MCPError, match="no video 7"):
            await client.read_resource(video["uri"].rsplit("/", 1)[0] + "/7/preview")
    (content,) = first.contents
    assert content.mime_type == "video/mp4"
    assert again.contents[0].blob == content.blob
    previews = list(Path(video["path"]).parent.glob("*.preview.mp4"))
    assert len(previews) == 1  # made once, cached beside the video
    info = media.probe(previews[0])
    assert info.height <= 480 and info.codec == "h264"
    assert (video["width"], video["height"]) == (960, 540)  # the original stays full size

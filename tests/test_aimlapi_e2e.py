"""End to end through a real MCP client session: tools -> service -> AI/ML API adapter -> emulator.

One job per Kling O1 variant (image, reference, reference with a video, edit), local files sent as
data URIs, and the failure paths a caller sees (a failed job is data; an unsupported request is a
tool error).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.aimlapi import API_KEY, AimlState, create_app

pytestmark = pytest.mark.anyio

CREDITS_PER_SECOND = 200_000          # $0.10/s billed, unlike the catalog's inferred $0.112/s quote


@pytest.fixture
def emu() -> Iterator[tuple[str, AimlState]]:
    state = AimlState(credits_per_second=CREDITS_PER_SECOND)
    with serve(create_app(state)) as base:
        yield base, state


def settings(base: str, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "AIML_API_KEY": API_KEY, "KLING_MCP_AIMLAPI_BASE_URL": base, "KLING_MCP_DATA_DIR": str(tmp_path / "data"),
        "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})


def hosted(base: str, state: AimlState, data: bytes, suffix: str, content_type: str) -> str:
    return f"{base}/files/{state.files.add(data, suffix=suffix, content_type=content_type)}"


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


async def call(base: str, tmp_path: Path, tool: str, args: dict[str, Any], mode: str = "auto") -> dict[str, Any]:
    async with Client(create_server(settings(base, tmp_path)), mode=mode) as client:
        result = await client.call_tool(tool, {"provider": "aimlapi", "wait_seconds": 20, **args})
    assert not result.is_error, result.content
    return result.structured_content


def assert_succeeded(view: dict[str, Any], state: AimlState, model: str, seconds: int | None,
                     estimated: float) -> None:
    assert view["status"] == "succeeded", view
    assert view["provider"] == "aimlapi" and view["model"] == model
    assert view["error"] is None
    assert view["estimated_cost_usd"] == pytest.approx(estimated)                # the catalog's inferred price
    billed = (seconds or 5) * CREDITS_PER_SECOND / 2_000_000
    assert view["cost_usd"] == pytest.approx(billed)                            # meta.usage.credits_used
    [video] = view["videos"]
    assert video["uri"] == f"kling://jobs/{view['job_id']}/videos/0"
    assert Path(video["path"]).read_bytes() == mp4_bytes(state.video_seconds)
    [body] = state.bodies()
    assert body["model"] == model


@pytest.mark.parametrize("mode", ["auto", "legacy"])     # both protocol eras
async def test_image_to_video_with_urls(emu, tmp_path, mode):
    base, state = emu
    first = hosted(base, state, png_bytes(96, 64, (10, 20, 30)), ".png", "image/png")
    last = hosted(base, state, png_bytes(96, 64, (200, 20, 30)), ".png", "image/png")
    view = await call(base, tmp_path, "generate_video", {
        "prompt": "Mona Lisa puts on glasses with her hands.", "first_frame": first, "last_frame": last,
        "duration": 5}, mode)
    assert_succeeded(view, state, "klingai/video-o1-image-to-video", 5, 0.112 * 5)
    assert state.bodies() == [{"model": "klingai/video-o1-image-to-video",
                               "prompt": "Mona Lisa puts on glasses with her hands.",
                               "image_url": first, "last_image_url": last, "duration": 5}]


async def test_reference_with_local_images_sent_as_data_uris(emu, tmp_path, image_file, image_file2):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {
        "prompt": "the two mascots shake hands", "reference_images": [str(image_file), str(image_file2)],
        "aspect_ratio": "9:16", "duration": 10})
    assert_succeeded(view, state, "klingai/video-o1-reference-to-video", 10, 0.112 * 10)
    assert state.bodies() == [{"model": "klingai/video-o1-reference-to-video",
                               "prompt": "the two mascots shake hands",
                               "image_list": [data_uri(image_file, "image/png"), data_uri(image_file2, "image/png")],
                               "aspect_ratio": "9:16", "duration": 10}]


async def test_reference_with_a_local_video(emu, tmp_path, video_file, image_file):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {
        "prompt": "same camera move, on the moon", "reference_video": str(video_file),
        "reference_images": [str(image_file)], "aspect_ratio": "1:1", "duration": 5, "keep_original_sound": True})
    assert_succeeded(view, state, "klingai/video-o1-video-to-video-reference", 5, 0.168 * 5)
    [body] = state.bodies()
    assert body == {"model": "klingai/video-o1-video-to-video-reference", "prompt": "same camera move, on the moon",
                    "video_url": data_uri(video_file, "video/mp4"), "image_list": [data_uri(image_file, "image/png")],
                    "aspect_ratio": "1:1", "duration": 5, "keep_audio": True}


async def test_edit_with_a_video_url(emu, tmp_path):
    base, state = emu
    source = hosted(base, state, mp4_bytes(4.0, 320, 180), ".mp4", "video/mp4")
    view = await call(base, tmp_path, "edit_video", {"prompt": "make it snow", "video": source})
    assert_succeeded(view, state, "klingai/video-o1-video-to-video-edit", None, 0.168 * 4)
    assert state.bodies() == [{"model": "klingai/video-o1-video-to-video-edit", "prompt": "make it snow",
                               "video_url": source}]


async def test_data_uri_argument_is_sent_as_the_same_data_uri(emu, tmp_path, image_file):
    base, state = emu
    frame = data_uri(image_file, "image/png")
    view = await call(base, tmp_path, "generate_video", {"prompt": "the lake at dawn", "first_frame": frame,
                                                         "duration": 10})
    assert_succeeded(view, state, "klingai/video-o1-image-to-video", 10, 0.112 * 10)
    assert state.bodies() == [{"model": "klingai/video-o1-image-to-video", "prompt": "the lake at dawn",
                               "image_url": frame, "duration": 10}]


async def test_failed_job_is_data_with_the_providers_reason(emu, tmp_path):
    base, state = emu
    state.outcome = "error_detail"
    first = hosted(base, state, png_bytes(96, 64, (10, 20, 30)), ".png", "image/png")
    async with Client(create_server(settings(base, tmp_path))) as client:
        result = await client.call_tool("generate_video", {"prompt": "a portrait smiles", "first_frame": first,
                                                           "provider": "aimlapi", "wait_seconds": 20})
    assert not result.is_error
    view = result.structured_content
    assert view["status"] == "failed"
    assert view["error"]["code"] == "face_detection_error"
    assert "Could not detect face in the image" in view["error"]["message"]
    assert view["videos"] == [] and view["next_action"]


async def test_text_to_video_on_aimlapi_is_a_tool_error_naming_alternatives(emu, tmp_path):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path))) as client:
        result = await client.call_tool("generate_video", {"prompt": "a cat surfs", "provider": "aimlapi",
                                                           "wait_seconds": 0})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "text-to-video" in text and "runware" in text
    assert state.requests == []


async def test_transient_poll_errors_and_a_truncated_download_still_succeed(emu, tmp_path):
    base, state = emu
    first = hosted(base, state, png_bytes(96, 64, (10, 20, 30)), ".png", "image/png")
    state.fail_next(429, on="poll", retry_after="0")
    state.fail_next(500, on="poll")
    state.files.truncate_next = 1
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves roll in", "first_frame": first,
                                                         "duration": 5})
    assert_succeeded(view, state, "klingai/video-o1-image-to-video", 5, 0.112 * 5)
    assert state.faults == [] and state.files.truncate_next == 0
    [generation] = state.generations.values()
    polls = [r for r in state.requests if r.method == "GET" and r.path == "/v2/video/generations"]
    assert len(polls) >= 4 and generation.polls >= 2               # two failed polls, then generating, completed
    assert state.files.downloads[generation.file_name] >= 2        # the truncated body was fetched again


async def test_expired_result_link_fails_the_job_with_a_download_error(emu, tmp_path):
    base, state = emu
    first = hosted(base, state, png_bytes(96, 64, (10, 20, 30)), ".png", "image/png")
    state.result_ttl_s = -1.0
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves roll in", "first_frame": first,
                                                         "duration": 5, "wait_seconds": 5})
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "download_failed"
    assert view["videos"] == []

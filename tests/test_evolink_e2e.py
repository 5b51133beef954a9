"""End to end through a real MCP client session: tools -> service -> EvoLink adapter -> emulator.

One job per EvoLink model (image-to-video, video edit, fast video edit) with local files uploaded
through the emulated files API, progress notifications, failed jobs as data, and out-of-range input
videos refused as tool errors before any request reaches EvoLink.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from starlette.applications import Starlette

from kling_mcp.catalog.evolink import USD_PER_CREDIT
from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes
from tests.emulators._server import serve
from tests.emulators.evolink import EDIT_CREDITS_PER_S, I2V_CREDITS_PER_S, EvolinkState, create_app

pytestmark = pytest.mark.anyio

KEY = "evo-test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Starlette]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(server: tuple[str, Starlette]) -> tuple[str, EvolinkState]:
    base, app = server
    app.state.emulator = EvolinkState(api_key=KEY)
    return base, app.state.emulator


def settings(base: str, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "EVOLINK_API_KEY": KEY, "KLING_MCP_EVOLINK_BASE_URL": base, "KLING_MCP_EVOLINK_FILES_URL": base,
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})


def video_at(tmp_path: Path, seconds: float) -> Path:
    path = tmp_path / f"clip-{seconds:g}s.mp4"
    path.write_bytes(mp4_bytes(seconds, 160, 90))
    return path


async def call(base: str, tmp_path: Path, tool: str, args: dict[str, Any],
               progress: list[tuple[float, float | None, str | None]] | None = None) -> Any:
    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append((value, total, message))

    async with Client(create_server(settings(base, tmp_path))) as client:
        return await client.call_tool(tool, {"provider": "evolink", "wait_seconds": 20, **args},
                                      progress_callback=on_progress)


def succeeded(result: Any, model: str, seconds: float) -> dict[str, Any]:
    assert not result.is_error, result.content
    view = result.structured_content
    assert view["status"] == "succeeded", view
    assert (view["provider"], view["model"], view["error"]) == ("evolink", model, None)
    [video] = view["videos"]
    assert video["uri"] == f"kling://jobs/{view['job_id']}/videos/0"
    assert Path(video["path"]).is_file() and video["size_bytes"] == Path(video["path"]).stat().st_size
    assert video["duration_s"] == pytest.approx(seconds, abs=0.1)
    return view


async def test_image_to_video_with_local_frames(emu, tmp_path, image_file, image_file2) -> None:
    base, state = emu
    progress: list[tuple[float, float | None, str | None]] = []
    result = await call(base, tmp_path, "generate_video", {
        "prompt": "The frame comes alive", "first_frame": str(image_file), "last_frame": str(image_file2),
        "aspect_ratio": "16:9", "duration": 5}, progress)
    view = succeeded(result, "kling-o1-image-to-video", 5.0)
    assert Path(view["videos"][0]["path"]).read_bytes() == mp4_bytes(5.0, 320, 180)
    assert [u.form["file"]["filename"] for u in state.of("upload")] == ["frame.png", "frame2.png"]
    assert [r.json for r in state.of("submit")] == [{
        "model": "kling-o1-image-to-video", "prompt": "The frame comes alive",
        "image_urls": [f"{base}/files/{name}" for name in state.uploads], "aspect_ratio": "16:9", "duration": 5}]
    assert view["cost_usd"] == pytest.approx(I2V_CREDITS_PER_S * 5 * USD_PER_CREDIT, abs=1e-4)
    assert view["estimated_cost_usd"] == pytest.approx(0.112 * 5, abs=0.001)
    values = [p[0] for p in progress]
    assert 50.0 in values and values[-1] == 100.0 and values == sorted(values)
    assert all(total == 100.0 for _, total, _ in progress)
    assert state.count("poll") >= 3


async def test_video_edit_with_reference_and_sound(emu, tmp_path, video_file, image_file) -> None:
    base, state = emu
    result = await call(base, tmp_path, "edit_video", {
        "prompt": "Make it snow", "video": str(video_file), "reference_images": [str(image_file)],
        "keep_original_sound": True})
    view = succeeded(result, "kling-o1-video-edit", 4.0)
    [body] = [r.json for r in state.of("submit")]
    uploaded = {u.form["file"]["filename"]: f"{base}/files/{name}"
                for u, name in zip(state.of("upload"), state.uploads)}
    assert body == {"model": "kling-o1-video-edit", "prompt": "Make it snow", "video_urls": [uploaded["input.mp4"]],
                    "image_urls": [uploaded["frame.png"]], "keep_original_sound": True}
    assert view["cost_usd"] == pytest.approx(EDIT_CREDITS_PER_S * 4 * USD_PER_CREDIT, abs=1e-4)
    assert view["estimated_cost_usd"] == pytest.approx(0.176 * 4, abs=0.001)


async def test_fast_video_edit(emu, tmp_path) -> None:
    base, state = emu
    clip = video_at(tmp_path, 8.0)
    result = await call(base, tmp_path, "edit_video", {"prompt": "Make it cinematic", "video": str(clip),
                                                        "fast": True})
    view = succeeded(result, "kling-o1-video-edit-fast", 8.0)
    [body] = [r.json for r in state.of("submit")]
    assert body == {"model": "kling-o1-video-edit-fast", "prompt": "Make it cinematic",
                    "video_urls": [f"{base}/files/{next(iter(state.uploads))}"]}
    assert view["cost_usd"] == pytest.approx(0.176 * 8, abs=0.001)


@pytest.mark.parametrize(("seconds", "fast"), [(2.0, False), (4.0, True)])
async def test_out_of_range_input_video_is_a_tool_error_before_any_request(emu, tmp_path, seconds, fast) -> None:
    base, state = emu
    clip = video_at(tmp_path, seconds)
    result = await call(base, tmp_path, "edit_video", {"prompt": "Make it snow", "video": str(clip), "fast": fast})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert ("6-20 s" if fast else "3-10 s") in text and f"{seconds:g} s" in text and "evolink" in text
    assert state.requests == []


async def test_failed_task_is_data_not_an_error(emu, tmp_path, image_file) -> None:
    base, state = emu
    state.task_errors.append("content_policy_violation")
    result = await call(base, tmp_path, "generate_video", {"prompt": "A famous actor", "first_frame": str(image_file)})
    assert not result.is_error, result.content
    view = result.structured_content
    assert view["status"] == "failed" and view["videos"] == []
    assert view["error"]["code"] == "content_policy_violation" and view["error"]["retryable"] is False
    assert "safety" in view["error"]["message"] and view["next_action"]


async def test_truncated_download_is_resumed(emu, tmp_path, image_file) -> None:
    base, state = emu
    state.files.truncate_next = 1
    result = await call(base, tmp_path, "generate_video", {"prompt": "Waves", "first_frame": str(image_file)})
    view = succeeded(result, "kling-o1-image-to-video", 5.0)
    assert Path(view["videos"][0]["path"]).read_bytes() == mp4_bytes(5.0, 320, 180)


async def test_expired_result_link_fails_the_job_with_a_download_error(emu, tmp_path, image_file) -> None:
    base, state = emu
    state.result_ttl_s = -1.0              # EvoLink's links last 24 h; these are already stale
    result = await call(base, tmp_path, "generate_video", {"prompt": "Waves", "first_frame": str(image_file),
                                                           "wait_seconds": 5})
    assert not result.is_error, result.content
    view = result.structured_content
    assert view["status"] == "failed" and view["error"]["code"] == "download_failed", view
    assert state.count("download") >= 1


async def test_submit_refusal_is_a_tool_error_and_keeps_the_key_secret(emu, tmp_path, image_file) -> None:
    base, state = emu
    state.fail("submit", 402)
    result = await call(base, tmp_path, "generate_video", {"prompt": "Waves", "first_frame": str(image_file)})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "insufficient_quota" in text and KEY not in text
    assert state.count("submit") == 1

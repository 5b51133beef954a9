"""End to end through a real MCP client session: tools -> service -> fal adapter -> fal emulator.

Every O1 endpoint (pro and standard), local files through fal's storage upload, the queue URLs the
submit answer gives (without ``/o1/...``), the failure hidden behind ``COMPLETED``, cancel, and each
fault knob ending in the right terminal state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.providers import _fal_storage as fal_storage
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.fal import API_KEY, FalState, create_app

pytestmark = pytest.mark.anyio

PRO, STD = "fal-ai/kling-video/o1", "fal-ai/kling-video/o1/standard"
SIDE = 720                                 # fal takes input videos of 720-2160 px on each side


def clip(seconds: float = 4.0, fps: int = 24) -> bytes:
    return mp4_bytes(seconds, SIDE, SIDE, fps)


@pytest.fixture
def big_image(tmp_path: Path) -> Path:
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(400, 300, (30, 120, 200)))   # fal's start image: >= 300 px, aspect 0.40-2.50
    return path


@pytest.fixture
def big_video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip())
    return path


@pytest.fixture
def emu() -> Iterator[tuple[str, FalState]]:
    state = FalState()
    with serve(create_app(state)) as base:
        yield base, state


def settings(base: str, tmp_path: Path, key: str = API_KEY) -> Settings:
    return Settings.from_env({
        "FAL_KEY": key, "KLING_MCP_FAL_BASE_URL": base, "KLING_MCP_FAL_STORAGE_URL": base,
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})


def hosted(base: str, state: FalState, data: bytes, suffix: str = ".png", content_type: str = "image/png") -> str:
    return f"{base}/files/{state.files.add(data, suffix=suffix, content_type=content_type)}"


def image(base: str, state: FalState, color: tuple[int, int, int] = (10, 20, 30)) -> str:
    return hosted(base, state, png_bytes(96, 64, color))


async def call_raw(base: str, tmp_path: Path, tool: str, args: dict[str, Any], mode: str = "auto") -> Any:
    async with Client(create_server(settings(base, tmp_path)), mode=mode) as client:
        return await client.call_tool(tool, {"provider": "fal", "wait_seconds": 20, **args})


async def call(base: str, tmp_path: Path, tool: str, args: dict[str, Any], mode: str = "auto") -> dict[str, Any]:
    result = await call_raw(base, tmp_path, tool, args, mode)
    assert not result.is_error, result.content
    return result.structured_content


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def assert_succeeded(view: dict[str, Any], state: FalState, endpoint: str, estimated: float) -> None:
    assert view["status"] == "succeeded", view
    assert view["provider"] == "fal" and view["model"] == endpoint
    assert view["estimated_cost_usd"] == pytest.approx(estimated)
    [video] = view["videos"]
    assert Path(video["path"]).read_bytes() == mp4_bytes(state.video_seconds)
    [(sent_to, _)] = state.submits()
    assert sent_to == endpoint
    # The queue URLs fal answered were used: owner/alias only, never the /o1/... endpoint path.
    gets = state.paths("GET")
    assert any(p.startswith("/fal-ai/kling-video/requests/") and p.endswith("/status") for p in gets)
    assert not [p for p in gets if "/o1/" in p]
    assert all(r.headers.get("authorization") == f"Key {API_KEY}" for r in state.requests
               if r.path.startswith("/fal-ai/"))


@pytest.mark.parametrize("mode", ["auto", "legacy"])     # both protocol eras
async def test_image_to_video_pro_with_url_frames(emu, tmp_path, mode):
    base, state = emu
    first, last = image(base, state), image(base, state, (200, 20, 30))
    view = await call(base, tmp_path, "generate_video", {"prompt": "@Image1 turns into @Image2", "first_frame": first,
                                                         "last_frame": last, "duration": 7, "tier": "pro"}, mode)
    assert_succeeded(view, state, f"{PRO}/image-to-video", 0.112 * 7)
    assert state.submits()[0][1] == {"prompt": "@Image1 turns into @Image2", "start_image_url": first,
                                     "end_image_url": last, "duration": "7"}


async def test_image_to_video_standard_uploads_local_frames_to_fal_storage(emu, tmp_path, big_image):
    image_file = big_image
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {"prompt": "a kite rises", "first_frame": str(image_file),
                                                         "tier": "standard"})
    assert_succeeded(view, state, f"{STD}/image-to-video", 0.084 * 5)
    [token_call] = [r for r in state.requests if r.path == "/storage/auth/token"]
    assert token_call.query == {"storage_type": "fal-cdn-v3"}
    assert token_call.headers["authorization"] == f"Key {API_KEY}"
    [upload] = [r for r in state.requests if r.path == "/cdn/files/upload"]    # the host the token answer named
    assert upload.headers["authorization"].startswith("Bearer ") and API_KEY not in upload.headers["authorization"]
    assert upload.headers["x-fal-file-name"] == image_file.name and upload.headers["content-type"] == "image/png"
    body = state.submits()[0][1]
    assert body["duration"] == "5" and set(body) == {"prompt", "start_image_url", "duration"}
    name = body["start_image_url"].rsplit("/", 1)[-1]
    assert state.files.files[name].data == image_file.read_bytes()


async def test_reference_to_video_with_local_images(emu, tmp_path, image_file, image_file2):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {
        "prompt": "@Image1 and @Image2 shake hands", "reference_images": [str(image_file), str(image_file2)],
        "aspect_ratio": "9:16", "duration": 10, "tier": "pro"})
    assert_succeeded(view, state, f"{PRO}/reference-to-video", 0.112 * 10)
    body = state.submits()[0][1]
    assert body["aspect_ratio"] == "9:16" and body["duration"] == "10" and len(body["image_urls"]) == 2
    assert len([r for r in state.requests if r.path == "/storage/auth/token"]) == 1   # one token per request


async def test_video_to_video_reference_with_a_local_video_keeps_the_sound(emu, tmp_path, big_video, image_file):
    video_file = big_video
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {
        "prompt": "same camera move as @Video1, on the moon", "reference_video": str(video_file),
        "reference_images": [str(image_file)], "aspect_ratio": "1:1", "duration": 5, "keep_original_sound": True,
        "tier": "standard"})
    assert_succeeded(view, state, f"{STD}/video-to-video/reference", 0.126 * 5)
    body = state.submits()[0][1]
    assert body["keep_audio"] is True and body["duration"] == "5" and body["aspect_ratio"] == "1:1"
    assert state.files.files[body["video_url"].rsplit("/", 1)[-1]].data == video_file.read_bytes()


@pytest.mark.parametrize(("tier", "root", "rate"), [("pro", PRO, 0.168), ("standard", STD, 0.126)])
async def test_video_edit_with_a_url(emu, tmp_path, tier, root, rate):
    base, state = emu
    source = hosted(base, state, clip(), ".mp4", "video/mp4")
    view = await call(base, tmp_path, "edit_video", {"prompt": "make it snow", "video": source, "tier": tier})
    assert_succeeded(view, state, f"{root}/video-to-video/edit", rate * 4)
    assert state.submits()[0][1] == {"prompt": "make it snow", "video_url": source}   # keep_audio: fal's false


async def test_a_failure_hidden_behind_completed_is_a_failed_job_with_fals_text(emu, tmp_path):
    base, state = emu
    state.outcome = "content_policy"
    view = await call(base, tmp_path, "generate_video", {"prompt": "something flagged",
                                                         "first_frame": image(base, state)})
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "content_policy"
    assert "flagged by a content checker" in view["error"]["message"]
    assert view["videos"] == [] and view["next_action"]


async def test_an_input_fal_cannot_fetch_fails_the_job_with_the_detail_from_the_result(emu, tmp_path):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {"prompt": "a portrait smiles",
                                                         "first_frame": f"{base}/files/gone.png"})
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "file_download_error"
    assert "start_image_url" in view["error"]["message"] and "gone.png" in view["error"]["message"]


async def test_cancel_a_queued_request(emu, tmp_path):
    base, state = emu
    state.steps = ["IN_QUEUE"] * 50
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "waves", "provider": "fal", "wait_seconds": 0,
                                                            "first_frame": image(base, state)})
        job_id = started.structured_content["job_id"]
        cancelled = await client.call_tool("cancel_job", {"job_id": job_id})
        assert cancelled.structured_content["cancelled_at_provider"] is True, cancelled.content
        checked = await client.call_tool("check_job", {"job_id": job_id})
    assert checked.structured_content["status"] == "cancelled"
    [put] = [r for r in state.requests if r.method == "PUT"]
    [job] = state.jobs.values()
    assert put.path == f"/fal-ai/kling-video/requests/{job.id}/cancel" and job.cancelled


async def test_cancel_of_a_running_request_is_not_reported_as_stopped(emu, tmp_path):
    base, state = emu
    state.steps = ["IN_QUEUE"] + ["IN_PROGRESS"] * 10_000
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "waves", "provider": "fal", "wait_seconds": 3,
                                                            "first_frame": image(base, state)})
        assert started.structured_content["status"] == "running", started.structured_content
        cancelled = await client.call_tool("cancel_job", {"job_id": started.structured_content["job_id"]})
    answer = cancelled.structured_content
    assert answer["cancelled_at_provider"] is False and "may still run and be billed" in answer["message"]
    [job] = state.jobs.values()
    assert job.cancel_requested and not job.cancelled               # the signal was sent all the same


async def test_transient_faults_and_broken_bodies_still_end_in_one_video(emu, tmp_path):
    base, state = emu
    state.fail_next(429, on="status", retry_after="0")
    state.fail_next(503, on="status")
    state.fail_next(500, on="result")
    state.malformed_next = 1
    state.files.truncate_next = 1
    state.files.slow_next, state.files.slow_s = 1, 0.4
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves roll in", "first_frame": image(base, state)})
    assert view["status"] == "succeeded", view
    assert state.faults == [] and state.malformed_next == 0 and state.files.truncate_next == 0
    assert state.files.slow_next == 0
    [job] = state.jobs.values()
    assert state.files.downloads[job.file_name] >= 2                  # the truncated body was fetched again
    assert len(state.submits()) == 1                                  # never submitted twice


async def test_a_rate_limited_submit_is_waited_out_and_queued_once(emu, tmp_path):
    base, state = emu
    state.fail_next(429, on="submit", retry_after="1")
    result = await call_raw(base, tmp_path, "generate_video", {"prompt": "x y", "first_frame": image(base, state)})
    assert not result.is_error, text(result)
    assert len(state.jobs) == 1


async def test_a_submit_rate_limited_past_the_calls_time_is_a_tool_error_and_nothing_is_queued(emu, tmp_path):
    base, state = emu
    state.fail_next(429, on="submit", retry_after="120")
    result = await call_raw(base, tmp_path, "generate_video", {"prompt": "x y", "first_frame": image(base, state)})
    assert result.is_error and "rate_limited" in text(result)
    assert state.jobs == {}


async def test_a_rejected_key_is_a_tool_error_naming_fal_key(emu, tmp_path):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path, key="wrong:key-0000000000"))) as client:
        result = await client.call_tool("generate_video", {"prompt": "x y", "provider": "fal", "wait_seconds": 5,
                                                           "first_frame": image(base, state)})
    assert result.is_error and "FAL_KEY" in text(result) and "wrong:key" not in text(result)


async def test_an_upload_failure_is_a_tool_error_before_anything_is_queued(emu, tmp_path, big_image):
    image_file = big_image
    base, state = emu
    state.fail_next(500, on="upload")
    result = await call_raw(base, tmp_path, "generate_video", {"prompt": "x y", "first_frame": str(image_file)})
    assert result.is_error and "fal's storage" in text(result)
    assert state.jobs == {}


async def test_an_expired_result_link_fails_the_job_with_a_download_error(emu, tmp_path):
    base, state = emu
    state.result_ttl_s = -1.0
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves", "first_frame": image(base, state)})
    assert view["status"] == "failed" and view["error"]["code"] == "download_failed", view


async def test_an_unknown_queue_status_fails_the_job_instead_of_polling_forever(emu, tmp_path):
    base, state = emu
    state.outcome = "unknown_status"
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves", "first_frame": image(base, state)})
    assert view["status"] == "failed" and view["error"]["code"] == "provider_protocol", view
    assert "PAUSED" in view["error"]["message"]


@pytest.mark.parametrize(("tool", "args", "words"), [
    ("generate_video", {"prompt": "a cat surfs"}, "text-to-video"),
    ("generate_video", {"prompt": "x y", "first_frame": "IMG", "aspect_ratio": "1:1"}, "aspect_ratio"),
    ("generate_video", {"prompt": "x y", "reference_images": ["IMG"] * 5, "reference_video": "VID"},
     "0-4 reference_images"),
    ("generate_video", {"prompt": "x y", "reference_images": ["IMG"] * 8},
     "reference_images=[8 items]: must have at most 7 items"),
    ("generate_video", {"prompt": "x" * 2501, "first_frame": "IMG"}, "at most 2500"),
    ("edit_video", {"prompt": "x y", "video": "SHORT"}, "3-10.05 s"),
    ("edit_video", {"prompt": "x y", "video": "VID", "fast": True}, "no fast edit"),
    ("edit_video", {"prompt": "x y", "video": "SMALL"}, "720-2160 px on each side"),
    ("edit_video", {"prompt": "x y", "video": "SLOW"}, "24-60 fps"),
    ("generate_video", {"prompt": "x y", "reference_video": "SMALL"}, "720-2160 px on each side"),
    ("generate_video", {"prompt": "x y", "reference_video": "SHORT"}, "accepts 3-10.05 s"),
    ("generate_video", {"prompt": "x y", "first_frame": "TINY_FILE"}, "at least 300 px on each side"),
    ("generate_video", {"prompt": "x y", "first_frame": "WIDE_FILE"}, "accepts 0.40-2.50"),
])
async def test_every_documented_rule_is_checked_before_anything_is_sent(emu, tmp_path, tool, args, words):
    base, state = emu
    tiny, wide = tmp_path / "tiny.png", tmp_path / "wide.png"
    tiny.write_bytes(png_bytes(96, 64))
    wide.write_bytes(png_bytes(900, 300))
    media = {"IMG": image(base, state), "VID": hosted(base, state, clip(), ".mp4", "video/mp4"),
             "SHORT": hosted(base, state, clip(2.0), ".mp4", "video/mp4"),
             "SMALL": hosted(base, state, mp4_bytes(4.0, 320, 180), ".mp4", "video/mp4"),
             "SLOW": hosted(base, state, clip(4.0, fps=12), ".mp4", "video/mp4"),
             "TINY_FILE": str(tiny), "WIDE_FILE": str(wide)}

    def fill(value: Any) -> Any:
        return [fill(v) for v in value] if isinstance(value, list) else media.get(value, value)

    result = await call_raw(base, tmp_path, tool, {k: fill(v) for k, v in args.items()})
    assert result.is_error, result.structured_content
    assert words in text(result)
    assert state.requests == []


async def test_a_restarted_server_resumes_the_request_with_the_saved_queue_urls(emu, tmp_path):
    base, state = emu
    state.steps = ["IN_QUEUE"] * 10_000
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "waves", "provider": "fal", "wait_seconds": 0,
                                                            "first_frame": image(base, state)})
    job_id = started.structured_content["job_id"]
    state.steps = ["IN_QUEUE", "IN_PROGRESS"]                    # it runs while the server is down
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = (await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 20})).structured_content
    assert view["status"] == "succeeded", view
    assert len(state.jobs) == 1                                     # polled, never resubmitted
    assert not [p for p in state.paths("GET") if "/o1/" in p]


async def test_a_large_local_video_goes_up_in_parts(emu, tmp_path, big_video, monkeypatch):
    monkeypatch.setattr(fal_storage, "MULTIPART_THRESHOLD", 1024)
    monkeypatch.setattr(fal_storage, "PART_BYTES", 64 * 1024)
    base, state = emu
    view = await call(base, tmp_path, "edit_video", {"prompt": "make it snow", "video": str(big_video)})
    assert view["status"] == "succeeded", view
    puts = [r for r in state.requests if r.method == "PUT" and "/multipart/" in r.path]
    assert len(puts) == -(-big_video.stat().st_size // (64 * 1024)) > 1
    body = state.submits()[0][1]
    assert state.files.files[body["video_url"].rsplit("/", 1)[-1]].data == big_video.read_bytes()


@pytest.mark.parametrize("tier", ["pro", "standard"])
@pytest.mark.parametrize(("kind", "tool", "rate_index"), [
    ("image-to-video", "generate_video", 0), ("reference-to-video", "generate_video", 0),
    ("video-to-video/reference", "generate_video", 1), ("video-to-video/edit", "edit_video", 1),
])
async def test_all_eight_endpoints_end_to_end(emu, tmp_path, tier, kind, tool, rate_index):
    base, state = emu
    rate = {"pro": (0.112, 0.168), "standard": (0.084, 0.126)}[tier][rate_index]
    source = hosted(base, state, clip(), ".mp4", "video/mp4")
    args: dict[str, Any] = {"prompt": f"{kind} at {tier}", "tier": tier}
    if kind == "image-to-video":
        args.update(first_frame=image(base, state), duration=6)
    elif kind == "reference-to-video":
        args.update(reference_images=[image(base, state)] * 7, duration=6)
    elif kind == "video-to-video/reference":
        args.update(reference_video=source, reference_images=[image(base, state)] * 4, duration=6)
    else:
        args.update(video=source, reference_images=[image(base, state)] * 4)
    view = await call(base, tmp_path, tool, args)
    root = PRO if tier == "pro" else STD
    assert_succeeded(view, state, f"{root}/{kind}", rate * (4 if kind.endswith("edit") else 6))

"""End to end through a real MCP client session: tools -> service -> Replicate adapter -> emulator.

Every mode of ``kwaivgi/kling-o1`` at both modes (std/pro), local files through the Files API, the
``Cancel-After`` deadline, cancel, outputs deleted after the hour (the video was already saved), and
each fault knob ending in the right terminal state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.providers.replicate import CANCEL_AFTER
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.replicate import API_KEY, ReplicateState, create_app

pytestmark = pytest.mark.anyio

MODEL = "kwaivgi/kling-o1"


@pytest.fixture
def emu() -> Iterator[tuple[str, ReplicateState]]:
    state = ReplicateState()
    with serve(create_app(state)) as base:
        yield base, state


def settings(base: str, tmp_path: Path, key: str = API_KEY) -> Settings:
    return Settings.from_env({
        "REPLICATE_API_TOKEN": key, "KLING_MCP_REPLICATE_BASE_URL": f"{base}/v1",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})


def hosted(base: str, state: ReplicateState, data: bytes, suffix: str = ".png", mime: str = "image/png") -> str:
    return f"{base}/files/{state.files.add(data, suffix=suffix, content_type=mime)}"


def image(base: str, state: ReplicateState, color: tuple[int, int, int] = (10, 20, 30)) -> str:
    return hosted(base, state, png_bytes(96, 64, color))


def video(base: str, state: ReplicateState, seconds: float = 4.0) -> str:
    return hosted(base, state, mp4_bytes(seconds, 320, 180), ".mp4", "video/mp4")


async def call_raw(base: str, tmp_path: Path, tool: str, args: dict[str, Any], mode: str = "auto") -> Any:
    async with Client(create_server(settings(base, tmp_path)), mode=mode) as client:
        return await client.call_tool(tool, {"provider": "replicate", "wait_seconds": 20, **args})


async def call(base: str, tmp_path: Path, tool: str, args: dict[str, Any], mode: str = "auto") -> dict[str, Any]:
    result = await call_raw(base, tmp_path, tool, args, mode)
    assert not result.is_error, result.content
    return result.structured_content


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def assert_succeeded(view: dict[str, Any], state: ReplicateState, estimated: float) -> dict[str, Any]:
    """The view succeeded with the emulator's bytes; returns the one prediction's input."""
    assert view["status"] == "succeeded", view
    assert view["provider"] == "replicate" and view["model"] == MODEL
    assert view["estimated_cost_usd"] == pytest.approx(estimated)
    [saved] = view["videos"]
    assert Path(saved["path"]).read_bytes() == mp4_bytes(state.video_seconds)
    [create] = [r for r in state.requests if r.path.endswith("/predictions")]
    assert create.headers["authorization"] == f"Bearer {API_KEY}"
    assert create.headers["cancel-after"] == CANCEL_AFTER
    [inputs] = state.inputs()
    return inputs


@pytest.mark.parametrize(("mode", "tier", "rate"), [("auto", "pro", 0.112), ("legacy", "standard", 0.084)])
async def test_text_to_video_in_both_modes(emu, tmp_path, mode, tier, rate):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {"prompt": "a cat surfs at dawn", "duration": 10,
                                                         "aspect_ratio": "9:16", "tier": tier}, mode)
    inputs = assert_succeeded(view, state, rate * 10)
    assert inputs == {"prompt": "a cat surfs at dawn", "mode": "pro" if tier == "pro" else "std", "duration": 10,
                      "aspect_ratio": "9:16"}


async def test_image_to_video_with_start_and_end_url(emu, tmp_path):
    base, state = emu
    first, last = image(base, state), image(base, state, (200, 10, 10))
    view = await call(base, tmp_path, "generate_video", {"prompt": "it blooms", "first_frame": first,
                                                         "last_frame": last, "tier": "pro"})
    inputs = assert_succeeded(view, state, 0.112 * 5)
    assert inputs == {"prompt": "it blooms", "mode": "pro", "start_image": first, "end_image": last, "duration": 5}


async def test_reference_images_from_local_files_go_through_the_files_api(emu, tmp_path, image_file, image_file2):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {
        "prompt": "<<<image_1>>> meets <<<image_2>>>", "reference_images": [str(image_file), str(image_file2)],
        "duration": 3, "aspect_ratio": "1:1"})
    inputs = assert_succeeded(view, state, 0.084 * 3)                      # auto tier: the cheaper std mode
    assert inputs["mode"] == "std" and inputs["duration"] == 3 and inputs["aspect_ratio"] == "1:1"
    assert [u.rsplit("/", 1)[-1] for u in inputs["reference_images"]] == list(state.uploads)
    sent = [state.files.files[state.uploads[i]].data for i in state.uploads]
    assert sent == [image_file.read_bytes(), image_file2.read_bytes()]
    uploads = [r for r in state.requests if r.path == "/v1/files"]
    assert len(uploads) == 2 and all(r.headers["content-type"].startswith("multipart/form-data") for r in uploads)


async def test_reference_video_is_a_feature_reference_with_the_sound_off_unless_asked(emu, tmp_path, video_file):
    base, state = emu
    view = await call(base, tmp_path, "generate_video", {"prompt": "same move as <<<video_1>>>",
                                                         "reference_video": str(video_file), "tier": "pro"})
    inputs = assert_succeeded(view, state, 0.168 * 5)
    assert inputs["video_reference_type"] == "feature"
    assert inputs["keep_original_sound"] is False                  # unset = not kept; Replicate's default is true
    assert inputs["reference_video"].rsplit("/", 1)[-1] in state.uploads


@pytest.mark.parametrize(("keep", "sent"), [(None, False), (True, True)])
async def test_edit_is_a_base_reference_video(emu, tmp_path, image_file, keep, sent):
    base, state = emu
    source = video(base, state)
    args = {"prompt": "make it snow", "video": source, "reference_images": [str(image_file)], "tier": "standard"}
    if keep is not None:
        args["keep_original_sound"] = keep
    view = await call(base, tmp_path, "edit_video", args)
    inputs = assert_succeeded(view, state, 0.126 * 4)
    assert inputs["reference_video"] == source and inputs["video_reference_type"] == "base"
    assert inputs["keep_original_sound"] is sent and inputs["mode"] == "std"
    assert "duration" not in inputs and "aspect_ratio" not in inputs


async def test_outputs_deleted_after_the_hour_do_not_matter_because_the_video_was_saved(emu, tmp_path):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path))) as client:
        done = await client.call_tool("generate_video", {"prompt": "a red kite", "provider": "replicate",
                                                         "wait_seconds": 20})
        view = done.structured_content
        assert view["status"] == "succeeded", view
    state.delete_outputs()                                         # the hour is up: Replicate's link is gone
    [prediction] = state.predictions.values()
    assert prediction.data_removed and not state.files.files
    async with Client(create_server(settings(base, tmp_path))) as client:   # a restarted server
        checked = await client.call_tool("check_job", {"job_id": view["job_id"]})
        resource = await client.read_resource(view["videos"][0]["uri"])
    assert checked.structured_content["status"] == "succeeded"
    blob = resource.contents[0]
    import base64

    assert base64.b64decode(blob.blob) == mp4_bytes(state.video_seconds)


async def test_a_prediction_that_never_starts_is_aborted_by_cancel_after_and_not_billed(emu, tmp_path):
    base, state = emu
    state.outcome = "never_starts"
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "queued forever", "provider": "replicate",
                                                            "wait_seconds": 1})
        job_id = started.structured_content["job_id"]
        assert started.structured_content["status"] in ("submitted", "pending")
        state.clock_offset_s = 31 * 60                              # past the 30m Cancel-After deadline
        view = (await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 10})).structured_content
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "aborted" and view["error"]["retryable"] is True
    assert "not bill" in view["error"]["message"]


async def test_cancel_a_running_prediction(emu, tmp_path):
    base, state = emu
    state.steps = ["starting"] + ["processing"] * 50
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "waves", "provider": "replicate",
                                                            "wait_seconds": 0})
        job_id = started.structured_content["job_id"]
        cancelled = await client.call_tool("cancel_job", {"job_id": job_id})
        assert cancelled.structured_content["cancelled_at_provider"] is True, cancelled.content
    [prediction] = state.predictions.values()
    assert prediction.status == "canceled"
    assert any(r.path == f"/v1/predictions/{prediction.id}/cancel" and r.method == "POST" for r in state.requests)


@pytest.mark.parametrize(("outcome", "code", "words"), [
    ("content_policy", "content_policy", "flagged as sensitive"),
    ("failed", "job_failed", "internal error"),
    ("unknown_status", "provider_protocol", "paused"),
])
async def test_a_failed_prediction_is_data_with_replicates_reason(emu, tmp_path, outcome, code, words):
    base, state = emu
    state.outcome = outcome
    view = await call(base, tmp_path, "generate_video", {"prompt": "a portrait smiles"})
    assert view["status"] == "failed", view
    assert view["error"]["code"] == code and words in view["error"]["message"]


async def test_transient_faults_and_a_truncated_download_still_end_in_one_video(emu, tmp_path):
    base, state = emu
    state.fail_next(429, on="poll", retry_after="0")
    state.fail_next(502, on="poll")
    state.malformed_next = 1
    state.files.truncate_next = 1
    state.files.slow_next, state.files.slow_s = 1, 0.4
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves roll in"})
    assert view["status"] == "succeeded", view
    assert state.faults == [] and state.malformed_next == 0 and state.files.truncate_next == 0
    assert state.files.slow_next == 0
    assert len(state.predictions) == 1
    [prediction] = state.predictions.values()
    assert state.files.downloads[prediction.file_name] >= 2


async def test_an_expired_output_link_fails_the_job_with_a_download_error(emu, tmp_path):
    base, state = emu
    state.files.expire_all = True
    view = await call(base, tmp_path, "generate_video", {"prompt": "waves"})
    assert view["status"] == "failed" and view["error"]["code"] == "download_failed", view


@pytest.mark.parametrize(("status", "words"), [(429, "rate_limited"), (402, "insufficient_credits"),
                                               (422, "provider_rejected")])
async def test_a_refused_submit_is_a_tool_error_and_nothing_runs(emu, tmp_path, status, words):
    base, state = emu
    # A 429 whose Retry-After is past the call's time is not waited out.
    state.fail_next(status, on="submit", retry_after="300", detail="refused for the test")
    result = await call_raw(base, tmp_path, "generate_video", {"prompt": "x y"})
    assert result.is_error and words in text(result) and "refused for the test" in text(result)
    assert state.predictions == {}


async def test_a_rejected_token_is_a_tool_error_naming_the_env_var(emu, tmp_path):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path, key="r8_wrong_0000000000"))) as client:
        result = await client.call_tool("generate_video", {"prompt": "x y", "provider": "replicate",
                                                           "wait_seconds": 5})
    assert result.is_error and "REPLICATE_API_TOKEN" in text(result) and "r8_wrong" not in text(result)


async def test_an_upload_failure_is_a_tool_error_before_any_prediction(emu, tmp_path, image_file):
    base, state = emu
    state.fail_next(500, on="upload")
    result = await call_raw(base, tmp_path, "generate_video", {"prompt": "x y", "first_frame": str(image_file)})
    assert result.is_error and "Files API" in text(result)
    assert state.predictions == {}


@pytest.mark.parametrize(("tool", "args", "words"), [
    ("generate_video", {"prompt": "x y", "duration": 7}, "use 5 or 10 s"),
    ("generate_video", {"prompt": "x y", "first_frame": "IMG", "duration": 3}, "use 5 or 10 s"),
    ("generate_video", {"prompt": "x y", "first_frame": "IMG", "aspect_ratio": "1:1"}, "aspect_ratio"),
    ("generate_video", {"prompt": "x y", "reference_images": ["IMG"] * 5, "reference_video": "VID"},
     "0-4 reference_images"),
    ("generate_video", {"prompt": "x y", "reference_images": ["IMG"] * 8},
     "reference_images=[8 items]: must have at most 7 items"),
    ("generate_video", {"prompt": "x y", "negative_prompt": "blur"}, "negative_prompt"),
    ("generate_video", {"prompt": "x y", "num_videos": 2}, "num_videos"),
    ("edit_video", {"prompt": "x y", "video": "SHORT"}, "3-10 s"),
    ("generate_video", {"prompt": "x y", "reference_video": "SHORT"}, "reference_video is 2 s long"),
    ("generate_video", {"prompt": "x y", "reference_video": "LONG"}, "accepts 3-10 s: trim it"),
])
async def test_every_documented_rule_is_checked_before_anything_is_sent(emu, tmp_path, tool, args, words):
    base, state = emu
    media = {"IMG": image(base, state), "VID": video(base, state), "SHORT": video(base, state, 2.0),
             "LONG": video(base, state, 11.0)}

    def fill(value: Any) -> Any:
        return [fill(v) for v in value] if isinstance(value, list) else media.get(value, value)

    result = await call_raw(base, tmp_path, tool, {k: fill(v) for k, v in args.items()})
    assert result.is_error, result.structured_content
    assert words in text(result)
    assert state.requests == []


async def test_a_restarted_server_resumes_the_prediction_by_polling_it(emu, tmp_path):
    base, state = emu
    state.steps = ["starting"] + ["processing"] * 10_000
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "a red kite", "provider": "replicate",
                                                            "wait_seconds": 0})
    job_id = started.structured_content["job_id"]
    [prediction] = state.predictions.values()
    state.steps = ["starting", "processing"]                      # it finishes while the server is down
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = (await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 20})).structured_content
    assert view["status"] == "succeeded", view
    assert len(state.predictions) == 1 and prediction.status == "succeeded"    # polled, never resubmitted


async def test_an_output_deleted_while_the_server_was_down_fails_the_job_clearly(emu, tmp_path):
    base, state = emu
    state.steps = ["starting"] + ["processing"] * 10_000
    async with Client(create_server(settings(base, tmp_path))) as client:
        started = await client.call_tool("generate_video", {"prompt": "a red kite", "provider": "replicate",
                                                            "wait_seconds": 0})
    [prediction] = state.predictions.values()
    prediction.status, prediction.file_name = "succeeded", "long-gone.mp4"     # finished over an hour ago
    state.delete_outputs()
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = (await client.call_tool("check_job", {"job_id": started.structured_content["job_id"],
                                                     "wait_seconds": 20})).structured_content
    assert view["status"] == "failed" and view["error"]["code"] == "remote_not_found", view
    assert "deleted its output" in view["error"]["message"]


@pytest.mark.parametrize("tier", ["pro", "standard"])
@pytest.mark.parametrize("operation", ["text", "image", "reference", "reference_video", "edit"])
async def test_every_mode_at_both_modes_end_to_end(emu, tmp_path, tier, operation):
    base, state = emu
    args: dict[str, Any] = {"prompt": f"{operation} at {tier}", "tier": tier}
    seconds, with_video = 5, operation in ("reference_video", "edit")
    if operation == "image":
        args.update(first_frame=image(base, state), last_frame=image(base, state, (9, 9, 9)))
    elif operation == "reference":
        args.update(reference_images=[image(base, state)] * 7, duration=3)
        seconds = 3
    elif operation == "reference_video":
        args.update(reference_video=video(base, state), reference_images=[image(base, state)] * 4, duration=8)
        seconds = 8
    elif operation == "edit":
        args.update(video=video(base, state), reference_images=[image(base, state)] * 4)
        seconds = 4
    rate = {"pro": (0.112, 0.168), "standard": (0.084, 0.126)}[tier][with_video]
    view = await call(base, tmp_path, "edit_video" if operation == "edit" else "generate_video", args)
    inputs = assert_succeeded(view, state, rate * seconds)
    assert inputs["mode"] == ("pro" if tier == "pro" else "std")
    if with_video:
        assert inputs["video_reference_type"] == ("base" if operation == "edit" else "feature")

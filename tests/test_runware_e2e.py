"""End to end through a real MCP client session: tools -> service -> runner -> Runware adapter ->
loopback emulator. Every mode on both tiers, with the quote checked against what the emulator
billed; uploads of local files; cancel; a failed job; and recovery of a job whose submit reached
Runware but whose acknowledgement was never saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.jobs.diskcache_store import DiskcacheStore as JobStore
from kling_mcp.jobs.model import Job, JobStatus
from kling_mcp.requests import VideoSpec
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.runware import RunwareState, create_app

pytestmark = pytest.mark.anyio

KEY = "rw-test-key-e2e-5551212"
PROMPT = "A paper lantern drifts over a quiet harbour at dusk"
MODELS = {"pro": "klingai:kling@o1", "standard": "klingai:kling@o1-standard"}
SIZES = {"pro": {"16:9": (1920, 1080), "1:1": (1440, 1440), "9:16": (1080, 1920)},      # the seed pages' tables
         "standard": {"16:9": (1280, 720), "1:1": (960, 960), "9:16": (720, 1280)}}


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, Any]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(_server) -> tuple[str, RunwareState]:
    base, app = _server
    app.state.emulator = RunwareState(api_keys={KEY})
    return base, app.state.emulator


def settings(base: str, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"),
        "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})


@pytest.fixture
def media_files(tmp_path: Path, image_file: Path, image_file2: Path, video_file: Path) -> dict[str, Path]:
    long = tmp_path / "long.mp4"
    long.write_bytes(mp4_bytes(6.5, 320, 180))
    return {"image": image_file, "image2": image_file2, "video": video_file, "long": long}


def hosted_image(base: str, state: RunwareState) -> str:
    """A public image URL (served by the emulator's file host), sent to Runware as is."""
    return f"{base}/files/{state.files.add(png_bytes(64, 64, (10, 200, 90)), suffix='.png', content_type='image/png')}"


def arguments(mode: str, files: dict[str, Path], url: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(tool, its arguments, the expected task fields) for one mode."""
    if mode == "text":
        return "generate_video", {"aspect_ratio": "9:16", "duration": 5, "num_videos": 2}, {"numberResults": 2}
    if mode == "image":
        return "generate_video", {"first_frame": str(files["image"]), "last_frame": str(files["image2"]),
                                  "duration": 10}, {"duration": 10}
    if mode == "reference":
        return "generate_video", {"reference_images": [str(files["image"]), url], "aspect_ratio": "1:1",
                                  "duration": 3}, {"duration": 3}
    if mode == "reference_video":
        return ("generate_video", {"reference_images": [str(files["image"])], "reference_video": str(files["video"]),
                                   "keep_original_sound": True, "duration": 6},
                {"providerSettings": {"klingai": {"keepOriginalSound": True}}})
    if mode == "edit":
        return ("edit_video", {"video": str(files["video"]), "reference_images": [str(files["image2"])],
                               "keep_original_sound": False, "fast": False},
                {"providerSettings": {"klingai": {"keepOriginalSound": False}}})
    if mode == "edit_fast":
        return "edit_video", {"video": str(files["long"]), "fast": True}, {"providerSettings": {"klingai": {
            "fast": True}}}
    raise AssertionError(mode)


MODES = [(m, t) for m in ("text", "image", "reference", "reference_video", "edit") for t in ("pro", "standard")]
MODES.append(("edit_fast", "pro"))


@pytest.mark.parametrize("mode,tier", MODES)
async def test_every_mode_and_tier_bills_what_was_quoted(mode, tier, emu, tmp_path, media_files):
    base, state = emu
    url = hosted_image(base, state)
    tool, args, expected = arguments(mode, media_files, url)
    args = {"prompt": PROMPT, "provider": "runware", "tier": tier, **args}
    async with Client(create_server(settings(base, tmp_path))) as client:
        estimate = await client.call_tool("estimate_cost", {k: v for k, v in args.items()})
        assert not estimate.is_error, estimate.content
        assert state.requests == []                      # a quote never calls the provider
        result = await client.call_tool(tool, {**args, "wait_seconds": 20})
    assert not result.is_error, result.content
    view = result.structured_content
    assert view["status"] == "succeeded", view
    assert (view["provider"], view["model"], view["error"]) == ("runware", MODELS[tier], None)

    (task,) = state.sent("videoInference")
    assert task["taskUUID"] == view["job_id"] and task["model"] == MODELS[tier]
    assert {k: task[k] for k in expected} == expected
    assert task["includeCost"] is True and task["deliveryMethod"] == "async"
    if "aspect_ratio" in args:
        assert (task["width"], task["height"]) == SIZES[tier][args["aspect_ratio"]]
    if mode == "reference":
        assert task["inputs"]["referenceImages"][1] == url and task["inputs"]["referenceImages"][0] in state.uploads
    (quote,) = [q for q in estimate.structured_content["quotes"] if q["provider"] == "runware"]
    assert quote["supported"] and quote["tier"] == tier and quote["model"] == MODELS[tier]
    billed = state.billed(view["job_id"])
    assert quote["cost_usd"] == pytest.approx(billed, abs=1e-9)
    assert view["cost_usd"] == pytest.approx(billed, abs=1e-9)
    assert view["estimated_cost_usd"] == pytest.approx(billed, abs=1e-9)

    served = {name: hosted.data for name, hosted in state.files.files.items()}
    delivered = state.tasks[view["job_id"]].delivered
    assert len(view["videos"]) == len(delivered) == task.get("numberResults", 1)
    for n, (video, item) in enumerate(zip(view["videos"], delivered)):
        assert video["uri"] == f"kling://jobs/{view['job_id']}/videos/{n}"
        assert Path(video["path"]).read_bytes() == served[item["videoURL"].rsplit("/", 1)[1]]
    seconds = {"edit": 4.0, "edit_fast": 6.5}.get(mode, args.get("duration"))
    assert view["videos"][0]["duration_s"] == pytest.approx(seconds, abs=0.3)


@pytest.mark.parametrize("era", ["auto", "legacy"])
async def test_local_inputs_are_uploaded_once_across_jobs(era, emu, tmp_path, image_file, video_file):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path)), mode=era) as client:
        for n in range(2):
            view = (await client.call_tool("edit_video", {
                "prompt": f"{PROMPT}, take {n}", "video": str(video_file), "reference_images": [str(image_file)],
                "provider": "runware", "tier": "standard", "wait_seconds": 20})).structured_content
            assert view["status"] == "succeeded", view
    assert len(state.sent("videoInference")) == 2
    assert len(state.sent("imageUpload")) == 1 and len(state.sent("mediaStorage")) == 1
    first, second = (t["inputs"] for t in state.sent("videoInference"))
    assert first == second and first["video"] in state.uploads


async def test_cancel_says_runware_keeps_running_and_billing(emu, tmp_path):
    base, state = emu
    state.never_finish = True
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = (await client.call_tool("generate_video", {
            "prompt": PROMPT, "provider": "runware", "tier": "pro", "wait_seconds": 0.3})).structured_content
        assert view["status"] in ("submitted", "running"), view
        cancelled = await client.call_tool("cancel_job", {"job_id": view["job_id"]})
    assert not cancelled.is_error, cancelled.content
    body = cancelled.structured_content
    assert body["status"] == "cancelled" and body["cancelled_at_provider"] is False
    assert "Runware has no server-side cancel" in body["message"] and "billed" in body["message"]
    assert {r["taskType"] for r in state.requests} == {"videoInference", "getResponse"}


async def test_a_content_policy_failure_is_data_not_a_tool_error(emu, tmp_path):
    base, state = emu
    state.task_error_code = "contentPolicyViolation"
    async with Client(create_server(settings(base, tmp_path))) as client:
        result = await client.call_tool("generate_video", {
            "prompt": PROMPT, "provider": "runware", "tier": "standard", "wait_seconds": 20})
    assert not result.is_error
    view = result.structured_content
    assert view["status"] == "failed" and view["error"]["code"] == "content_policy"
    assert "contentPolicyViolation" in view["error"]["message"] and view["next_action"]


async def test_a_rejected_submit_is_a_tool_error_naming_the_parameter(emu, tmp_path):
    base, state = emu
    state.http_faults.append(402)
    async with Client(create_server(settings(base, tmp_path))) as client:
        result = await client.call_tool("generate_video", {
            "prompt": PROMPT, "provider": "runware", "tier": "pro", "wait_seconds": 5})
    assert result.is_error
    text = " ".join(c.text for c in result.content if hasattr(c, "text"))
    assert "insufficient_credits" in text and KEY not in text


async def test_a_lost_acknowledgement_is_recovered_by_polling_after_restart(emu, tmp_path):
    """The submit reached Runware, then the server died before saving the acknowledgement: on
    restart the job is polled by its taskUUID, never submitted again."""
    base, state = emu
    cfg = settings(base, tmp_path)
    spec = VideoSpec(operation="text", prompt=PROMPT, duration=5, aspect_ratio="16:9", tier="pro")
    job = Job(provider="runware", model=MODELS["pro"], tier="pro", spec=spec, estimated_cost_usd=0.56)
    store = JobStore(cfg.data_dir)
    await store.create(job)                                    # persisted as pending, no remote_id
    await store.close()
    import httpx

    task = {"taskType": "videoInference", "taskUUID": job.job_id, "model": MODELS["pro"], "positivePrompt": PROMPT,
            "width": 1920, "height": 1080, "duration": 5, "deliveryMethod": "async", "includeCost": True}
    assert httpx.post(f"{base}/v1", json=[task], headers={"Authorization": f"Bearer {KEY}"}).status_code == 200

    async with Client(create_server(cfg)) as client:
        view = (await client.call_tool("check_job", {"job_id": job.job_id, "wait_seconds": 20})).structured_content
    assert view["status"] == "succeeded", view
    assert view["cost_usd"] == pytest.approx(0.56)
    assert len(state.sent("videoInference")) == 1


async def test_a_submit_that_never_arrived_fails_as_interrupted_after_restart(emu, tmp_path):
    base, state = emu
    cfg = settings(base, tmp_path)
    spec = VideoSpec(operation="text", prompt=PROMPT, duration=5, aspect_ratio="16:9", tier="standard")
    job = Job(provider="runware", model=MODELS["standard"], tier="standard", spec=spec)
    store = JobStore(cfg.data_dir)
    await store.create(job)
    await store.close()
    async with Client(create_server(cfg)) as client:
        view = (await client.call_tool("check_job", {"job_id": job.job_id, "wait_seconds": 20})).structured_content
    assert view["status"] == JobStatus.FAILED.value and view["error"]["code"] == "interrupted", view
    assert state.sent("videoInference") == []

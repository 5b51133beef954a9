"""End to end through a real MCP client session: tools -> service -> Kling adapter -> emulator.

Every mode of ``kling-video-o1`` at both tiers, the rule that videos must be URLs (refused before
anything is sent), each fault knob's terminal state, and a submit whose answer was lost, recovered
through ``external_task_id`` with a single submission.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from starlette.applications import Starlette

from kling_mcp.config import Settings
from kling_mcp.jobs.model import Job, JobStatus
from kling_mcp.providers import kling as adapter_module
from kling_mcp.providers._kling_wire import jwt_token
from kling_mcp.requests import VideoSpec
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.kling import KlingState, create_app
from tests.support import read_store
from tests.test_kling_adapter import AK, BEARER, SK, image_at

pytestmark = pytest.mark.anyio

PROMPT = "A paper boat drifts down a rainy street"
USD_PER_UNIT = 0.14


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Starlette]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(server: tuple[str, Starlette]) -> tuple[str, KlingState]:
    base, app = server
    app.state.emulator = KlingState(access_keys={AK: SK}, bearer_keys={BEARER})
    return base, app.state.emulator


def settings(base: str, tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({
        "KLING_ACCESS_KEY": AK, "KLING_SECRET_KEY": SK, "KLING_MCP_KLING_BASE_URL": base,
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
        "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **env})


async def call(base: str, tmp_path: Path, tool: str, args: dict[str, Any], **env: str) -> Any:
    async with Client(create_server(settings(base, tmp_path, **env))) as client:
        return await client.call_tool(tool, {"provider": "kling", "wait_seconds": 20, **args})


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def succeeded(result: Any, tier: str, size: tuple[int, int], seconds: float) -> dict[str, Any]:
    assert not result.is_error, result.content
    view = result.structured_content
    assert view["status"] == "succeeded", view
    assert (view["provider"], view["model"], view["tier"], view["error"]) == ("kling", "kling-video-o1", tier, None)
    [video] = view["videos"]
    assert Path(video["path"]).is_file() and (video["width"], video["height"]) == size
    assert video["duration_s"] == pytest.approx(seconds, abs=0.1)
    return view


def hosted_image(state: KlingState, base: str, size: tuple[int, int] = (640, 360)) -> str:
    return state.host(png_bytes(*size), base, suffix=".png", content_type="image/png")


def hosted_video(state: KlingState, base: str, seconds: float = 4.0) -> str:
    return state.host(mp4_bytes(seconds, 1280, 720), base)


# --- every mode, both tiers --------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "mode", "duration", "aspect", "size"), [
    ("standard", "std", 5, "16:9", (640, 360)), ("pro", "pro", 10, "9:16", (360, 640))])
async def test_text_to_video(emu, tmp_path, tier, mode, duration, aspect, size):
    base, state = emu
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "tier": tier, "duration": duration,
                                                           "aspect_ratio": aspect})
    view = succeeded(result, tier, size, duration)
    [submit] = state.of("submit")
    assert submit.json == {"model_name": "kling-video-o1", "prompt": PROMPT, "mode": mode, "duration": str(duration),
                           "aspect_ratio": aspect, "external_task_id": view["job_id"]}
    units = {"std": 0.6, "pro": 0.8}[mode] * duration
    assert view["cost_usd"] == pytest.approx(units * USD_PER_UNIT) == view["estimated_cost_usd"]
    assert "converted from kling's credits" in view["note"] and "inferred" in view["note"]
    assert state.count("poll") >= 3


async def test_first_and_last_frame_from_local_files(emu, tmp_path):
    base, state = emu
    first, last = image_at(tmp_path, "first.png"), image_at(tmp_path, "last.jpg", fmt="JPEG", color=(200, 30, 30))
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "tier": "pro", "first_frame": str(first),
                                                           "last_frame": str(last)})
    succeeded(result, "pro", (640, 360), 5)
    [submit] = state.of("submit")
    assert submit.json["image_list"] == [
        {"image_url": base64.b64encode(first.read_bytes()).decode(), "type": "first_frame"},
        {"image_url": base64.b64encode(last.read_bytes()).decode(), "type": "end_frame"}]
    assert "aspect_ratio" not in submit.json and submit.json["duration"] == "5"


async def test_reference_images_local_and_url(emu, tmp_path):
    base, state = emu
    local = image_at(tmp_path, "ref.png", size=(400, 400))
    url = hosted_image(state, base)
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "tier": "standard", "duration": 3,
                                                           "aspect_ratio": "1:1",
                                                           "reference_images": [str(local), url]})
    view = succeeded(result, "standard", (480, 480), 3)
    [submit] = state.of("submit")
    assert submit.json["image_list"] == [{"image_url": base64.b64encode(local.read_bytes()).decode()},
                                         {"image_url": url}]
    assert view["cost_usd"] == pytest.approx(0.6 * 3 * USD_PER_UNIT)


async def test_reference_video_as_a_feature(emu, tmp_path):
    base, state = emu
    video, image = hosted_video(state, base), hosted_image(state, base)
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "tier": "pro", "reference_video": video,
                                                           "reference_images": [image], "keep_original_sound": True})
    view = succeeded(result, "pro", (640, 360), 5)
    [submit] = state.of("submit")
    assert submit.json["video_list"] == [{"video_url": video, "refer_type": "feature", "keep_original_sound": "yes"}]
    assert view["cost_usd"] == pytest.approx(0.8 * 1.5 * 5 * USD_PER_UNIT) == view["estimated_cost_usd"]


@pytest.mark.parametrize(("tier", "mode", "units"), [("standard", "std", 0.6), ("pro", "pro", 0.8)])
async def test_edit_a_base_video(emu, tmp_path, tier, mode, units):
    base, state = emu
    video = hosted_video(state, base, 4.0)
    result = await call(base, tmp_path, "edit_video", {"prompt": "Make it snow", "video": video, "tier": tier})
    view = succeeded(result, tier, (640, 360), 4.0)
    [submit] = state.of("submit")
    assert submit.json == {"model_name": "kling-video-o1", "prompt": "Make it snow", "mode": mode,
                           "video_list": [{"video_url": video, "refer_type": "base", "keep_original_sound": "no"}],
                           "external_task_id": view["job_id"]}
    assert view["cost_usd"] == pytest.approx(units * 1.5 * 4 * USD_PER_UNIT) == view["estimated_cost_usd"]


async def test_a_gateway_key_works_end_to_end(emu, tmp_path):
    base, state = emu
    async with Client(create_server(Settings.from_env({
            "KLING_API_KEY": BEARER, "KLING_MCP_KLING_BASE_URL": base, "KLING_MCP_DATA_DIR": str(tmp_path / "d"),
            "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"}))) as client:
        result = await client.call_tool("generate_video", {"prompt": PROMPT, "wait_seconds": 20})
    assert result.structured_content["provider"] == "kling"          # auto: the only configured provider
    succeeded(result, "standard", (640, 360), 5)
    assert {r.headers["authorization"] for r in state.requests if r.route != "download"} == {f"Bearer {BEARER}"}


# --- refused before anything is sent -----------------------------------------------------------------


@pytest.mark.parametrize(("tool", "arg"), [("edit_video", "video"), ("generate_video", "reference_video")])
async def test_a_local_video_is_a_tool_error_before_any_request(emu, tmp_path, tool, arg):
    base, state = emu
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(mp4_bytes(4.0, 1280, 720))
    result = await call(base, tmp_path, tool, {"prompt": "Make it snow", arg: str(clip)})
    assert result.is_error
    assert "only as URLs" in text_of(result) and arg in text_of(result)
    assert state.requests == []
    async with Client(create_server(settings(base, tmp_path))) as client:
        quote = (await client.call_tool("estimate_cost", {"prompt": "x", arg: str(clip), "provider": "kling"}))
    [kling] = quote.structured_content["quotes"]
    assert not kling["supported"] and "only as URLs" in " ".join(kling["problems"])


async def test_a_too_small_image_is_a_tool_error_before_any_request(emu, tmp_path, image_file):
    base, state = emu
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "first_frame": str(image_file)})
    assert result.is_error and "at least 300 px" in text_of(result)
    async with Client(create_server(settings(base, tmp_path))) as client:
        quote = await client.call_tool("estimate_cost", {"prompt": PROMPT, "first_frame": str(image_file)})
    [kling] = [q for q in quote.structured_content["quotes"] if q["provider"] == "kling"]
    assert not kling["supported"] and "at least 300 px" in " ".join(kling["problems"])
    assert state.requests == []


# --- fault knobs: the terminal state each one ends in ---------------------------------------------------


@pytest.mark.parametrize("code", [1302, 1303])
async def test_a_rate_limited_submit_is_waited_out_and_submitted_again(emu, tmp_path, code):
    base, state = emu
    state.fail("submit", code, retry_after="1" if code == 1302 else None)
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT})
    succeeded(result, "standard", (640, 360), 5)
    assert state.count("submit") == 2 and len(state.tasks) == 1


@pytest.mark.parametrize(("code", "error"), [(1102, "insufficient_credits"), (1301, "content_policy"),
                                             (5000, "provider_unavailable")])
async def test_a_refused_submit_is_a_tool_error_and_is_not_retried(emu, tmp_path, code, error):
    base, state = emu
    state.fail("submit", code)
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT})
    assert result.is_error and f"[{error}]" in text_of(result) and f"code {code}" in text_of(result)
    assert state.count("submit") == 1 and state.tasks == {}
    async with Client(create_server(settings(base, tmp_path))) as client:
        [job] = (await client.call_tool("list_jobs", {})).structured_content["jobs"]
    assert job["status"] == "failed" and job["error"]["code"] == error


@pytest.mark.parametrize("knob", ["malformed", "truncated", "slow", "accepted-504"])
async def test_a_submit_answer_that_is_lost_is_settled_by_the_external_id(emu, tmp_path, monkeypatch, knob):
    base, state = emu
    if knob == "slow":
        monkeypatch.setattr(adapter_module, "SUBMIT_TIMEOUT", httpx.Timeout(0.5, connect=5.0))
        state.slow["submit"] = 2.0
    elif knob == "accepted-504":
        state.fail("submit", 5002, accepted=True)
    else:
        getattr(state, knob)["submit"] = 1
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT})
    view = succeeded(result, "standard", (640, 360), 5)
    # One poll by the external id settles it, or (the task not visible yet) the runner goes on polling by it.
    assert "kling has the job" in view["note"] or "tracking it by its id" in view["note"]
    assert state.count("submit") == 1
    assert state.of("poll")[0].path.endswith("/" + view["job_id"])


async def test_a_lost_submit_kling_never_got_is_tracked_not_claimed_then_refused_once_known(emu, tmp_path,
                                                                                            monkeypatch):
    """A 504 with no task behind it: right after it, Kling not knowing the external id proves nothing
    (the task may still appear), so the job is tracked by its id, not said to be at Kling; once the
    grace is over, the same answer means the submit never arrived: a tool error, nothing billed."""
    base, state = emu
    state.fail("submit", 5002)
    view = (await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "wait_seconds": 1})).structured_content
    assert view["status"] in ("pending", "submitted") and "tracking it by its id" in view["note"], view
    assert "has the job" not in view["note"] and state.tasks == {}
    monkeypatch.setattr(adapter_module, "NOT_FOUND_GRACE_S", 0.0)
    state.fail("submit", 5002)
    result = await call(base, tmp_path, "generate_video", {"prompt": "another " + PROMPT})
    assert result.is_error and "did not take the job" in text_of(result) and "Nothing was billed" in text_of(result)
    assert state.count("submit") == 2 and state.tasks == {}


async def test_429_with_retry_after_while_polling_is_waited_out(emu, tmp_path):
    base, state = emu
    state.fail("poll", 1302, retry_after="1")
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT})
    succeeded(result, "standard", (640, 360), 5)
    first, second = state.of("poll")[:2]
    assert second.at - first.at >= 1.0


@pytest.mark.parametrize(("knob", "times", "status"), [("fault", 1, "succeeded"), ("malformed", 1, "succeeded"),
                                                       ("truncated", 1, "succeeded"), ("slow", 1, "succeeded"),
                                                       ("fault", 10, "failed")])
async def test_transient_poll_faults_are_retried_then_given_up(emu, tmp_path, monkeypatch, knob, times, status):
    base, state = emu
    if knob == "fault":
        state.fail("poll", 5000, times=times)
    elif knob == "slow":
        monkeypatch.setattr(adapter_module, "POLL_TIMEOUT", httpx.Timeout(0.5, connect=5.0))
        state.slow["poll"] = 2.0
    else:
        getattr(state, knob)["poll"] = times
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT})
    view = result.structured_content
    assert not result.is_error and view["status"] == status, view
    if status == "failed":
        assert view["error"]["code"] == "provider_unavailable" and "consecutive" in view["error"]["message"]


@pytest.mark.parametrize(("failure", "code", "retryable"), [
    ("Failure to pass the risk control system", "content_policy", False),
    ("Generation failed, please retry", "job_failed", True)])
async def test_a_failed_task_is_data(emu, tmp_path, failure, code, retryable):
    base, state = emu
    state.task_failures.append(failure)
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT})
    view = result.structured_content
    assert not result.is_error and view["status"] == "failed" and view["videos"] == []
    assert (view["error"]["code"], view["error"]["retryable"]) == (code, retryable)
    assert failure in view["error"]["message"] and view["next_action"]


async def test_an_unknown_status_fails_as_a_protocol_error(emu, tmp_path):
    base, state = emu
    state.odd_statuses.append("paused")
    view = (await call(base, tmp_path, "generate_video", {"prompt": PROMPT})).structured_content
    assert view["status"] == "failed" and view["error"]["code"] == "provider_protocol"


async def test_a_truncated_download_is_resumed(emu, tmp_path):
    base, state = emu
    state.files.truncate_next = 1
    succeeded(await call(base, tmp_path, "generate_video", {"prompt": PROMPT}), "standard", (640, 360), 5)
    assert state.files.ranges


async def test_an_expired_result_link_fails_the_job_with_a_download_error(emu, tmp_path):
    base, state = emu
    state.result_ttl_s = -1.0
    view = (await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "wait_seconds": 10})).structured_content
    assert view["status"] == "failed" and view["error"]["code"] == "download_failed", view


async def test_a_quote_over_the_job_limit_is_refused_before_any_request(emu, tmp_path):
    base, state = emu
    result = await call(base, tmp_path, "generate_video", {"prompt": PROMPT, "tier": "pro"},
                        KLING_MCP_MAX_JOB_COST_USD="0.5")
    assert result.is_error and "[budget_exceeded]" in text_of(result) and "$0.560 (inferred)" in text_of(result)
    assert state.requests == []


async def test_cancel_says_kling_keeps_running(emu, tmp_path):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path))) as client:
        job = (await client.call_tool("generate_video", {"prompt": PROMPT, "provider": "kling",
                                                         "wait_seconds": 0})).structured_content
        cancelled = (await client.call_tool("cancel_job", {"job_id": job["job_id"]})).structured_content
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at_provider"] is False
    assert "no cancel endpoint" in cancelled["message"]


# --- a crash between submit and save -------------------------------------------------------------------


def pending_job(cfg: Settings) -> Job:
    spec = VideoSpec(operation="text", prompt=PROMPT, duration=5, aspect_ratio="16:9", tier="pro")
    job = Job(provider="kling", model="kling-video-o1", tier="pro", spec=spec, estimated_cost_usd=0.56)
    read_store(cfg.data_dir, lambda store: store.create(job))  # persisted as pending, no remote_id
    return job


async def test_a_submit_whose_answer_was_never_saved_is_recovered_by_external_id_after_restart(emu, tmp_path):
    base, state = emu
    cfg = settings(base, tmp_path)
    job = pending_job(cfg)
    # The submit reached Kling, then the server died before it could save the answer.
    token = jwt_token(AK, SK, time.time())
    sent = httpx.post(f"{base}/v1/videos/omni-video", headers={"Authorization": f"Bearer {token}"},
                      json={"model_name": "kling-video-o1", "prompt": PROMPT, "mode": "pro", "duration": "5",
                            "aspect_ratio": "16:9", "external_task_id": job.job_id})
    assert sent.json()["code"] == 0
    async with Client(create_server(cfg)) as client:
        view = (await client.call_tool("check_job", {"job_id": job.job_id, "wait_seconds": 20})).structured_content
    assert view["status"] == "succeeded", view
    assert view["cost_usd"] == pytest.approx(0.8 * 5 * USD_PER_UNIT)
    assert state.count("submit") == 1
    assert all(r.path.endswith("/" + job.job_id) for r in state.of("poll"))


async def test_a_submit_that_never_arrived_fails_as_interrupted_without_resubmitting(emu, tmp_path, monkeypatch):
    base, state = emu
    monkeypatch.setattr(adapter_module, "NOT_FOUND_GRACE_S", 0.0)
    cfg = settings(base, tmp_path)
    job = pending_job(cfg)
    async with Client(create_server(cfg)) as client:
        view = (await client.call_tool("check_job", {"job_id": job.job_id, "wait_seconds": 20})).structured_content
    assert view["status"] == JobStatus.FAILED.value and view["error"]["code"] == "interrupted", view
    assert "nothing was billed" in view["error"]["message"]
    assert state.count("submit") == 0 and state.count("poll") >= 1


# --- across providers ----------------------------------------------------------------------------------


async def test_auto_quotes_kling_and_fails_over_to_it_when_another_provider_cannot_take_the_job(emu, tmp_path):
    from tests.emulators.runware import RunwareState
    from tests.emulators.runware import create_app as runware_app

    base, state = emu
    runware = RunwareState(api_keys={"rw-key"}, http_faults=[503])
    with serve(runware_app(runware)) as runware_base:
        cfg = settings(base, tmp_path, RUNWARE_API_KEY="rw-key", KLING_MCP_RUNWARE_BASE_URL=f"{runware_base}/v1")
        async with Client(create_server(cfg)) as client:
            quotes = (await client.call_tool("estimate_cost", {"prompt": PROMPT})).structured_content["quotes"]
            result = await client.call_tool("generate_video", {"prompt": PROMPT, "wait_seconds": 20})
    [kling] = [q for q in quotes if q["provider"] == "kling"]
    assert kling["supported"] and kling["configured"] and kling["basis"] == "inferred"
    assert kling["cost_usd"] == pytest.approx(0.084 * 5)
    view = succeeded(result, "standard", (640, 360), 5)
    assert "failed over to kling" in view["note"]
    assert state.count("submit") == 1


@pytest.mark.parametrize("env", [{}, {"KLING_ACCESS_KEY": AK}, {"KLING_SECRET_KEY": SK}])
async def test_kling_needs_the_whole_key_pair_or_a_gateway_key(tmp_path, env):
    from kling_mcp import errors
    from kling_mcp.requests import GenerateRequest
    from kling_mcp.service import VideoService

    cfg = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), **env})
    assert not cfg.providers["kling"].configured and "kling" not in cfg.configured
    service = VideoService(cfg)
    try:
        with pytest.raises(errors.NotConfigured) as caught:
            await service.generate(GenerateRequest(prompt=PROMPT, provider="kling"))
    finally:
        await service.aclose()
    assert "KLING_ACCESS_KEY + KLING_SECRET_KEY (or KLING_API_KEY)" in str(caught.value)
    for value in env.values():
        assert value not in str(caught.value) and value not in repr(cfg)


async def test_the_tool_descriptions_list_kling_and_say_videos_must_be_urls(emu, tmp_path):
    async with Client(create_server(settings(emu[0], tmp_path))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("generate_video", "edit_video"):
        [line] = [line for line in (tools[name].description or "").splitlines() if line.startswith("kling ")]
        assert line.startswith("kling (pro|standard; prompt <= 2500") and "videos only as http(s) URLs" in line, line
        assert "kling" in tools[name].input_schema["properties"]["provider"]["enum"]

"""End to end through a real MCP client session: tools -> service -> Runpod adapter -> emulator.

A reference job from a URL and from a local file (sent as a data URI), the billed cost against
the quote, cancel, and the failures a caller sees (a failed job is data, not a tool error).
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
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.runpod import RunpodState, create_app

pytestmark = pytest.mark.anyio

KEY = "rp-test-key"
PROMPT = "The robot is dancing with the teddy bear"


@pytest.fixture
def emu() -> Iterator[tuple[str, RunpodState]]:
    state = RunpodState(api_key=KEY)
    with serve(create_app(state)) as base:
        yield base, state


def settings(base: str, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "RUNPOD_API_KEY": KEY, "KLING_MCP_RUNPOD_BASE_URL": f"{base}/v2",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"),
        "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})


def hosted_image(base: str, state: RunpodState, color: tuple[int, int, int] = (30, 120, 200)) -> str:
    name = state.files.add(png_bytes(96, 64, color), suffix=".png", content_type="image/png")
    return f"{base}/files/{name}"


async def generate(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("generate_video", {"prompt": PROMPT, "provider": "runpod", "wait_seconds": 20,
                                                       **args})
    assert not result.is_error, result.content
    return result.structured_content


def billed(state: RunpodState, view: dict[str, Any]) -> float:
    (job,) = state.jobs.values()
    assert job.output is not None, job
    return job.output["cost"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_generate_from_a_url_reference_bills_what_was_quoted(emu, tmp_path, mode):
    base, state = emu
    image = hosted_image(base, state)
    args = {"reference_images": [image], "duration": 5}
    async with Client(create_server(settings(base, tmp_path)), mode=mode) as client:
        quote = await client.call_tool("estimate_cost", {"prompt": PROMPT, "provider": "runpod", **args})
        assert state.requests == []                     # a quote never calls the provider
        view = await generate(client, **args)
    assert view["status"] == "succeeded", view
    assert view["provider"] == "runpod" and view["model"] == "kling-video-o1-r2v" and view["error"] is None
    (runpod_quote,) = [q for q in quote.structured_content["quotes"] if q["provider"] == "runpod"]
    assert runpod_quote["supported"] and runpod_quote["basis"] == "published"
    assert runpod_quote["cost_usd"] == pytest.approx(billed(state, view)) == pytest.approx(0.56)
    assert view["cost_usd"] == pytest.approx(billed(state, view))
    assert view["estimated_cost_usd"] == pytest.approx(runpod_quote["cost_usd"])
    (submission,) = state.submissions()
    assert submission.path == "/v2/kling-video-o1-r2v/run"
    assert submission.headers["authorization"] == f"Bearer {KEY}"
    assert submission.body == {"input": {"prompt": PROMPT, "images": [image], "aspect_ratio": "16:9",
                                         "duration": 5, "seed": -1, "enable_prompt_expansion": False,
                                         "enable_safety_checker": True}}
    (video,) = view["videos"]
    assert video["uri"] == f"kling://jobs/{view['job_id']}/videos/0"
    (job,) = state.jobs.values()
    served = state.files.files[job.output["video_url"].rsplit("/", 1)[1]].data
    assert Path(video["path"]).read_bytes() == served
    assert video["duration_s"] == pytest.approx(5.0, abs=0.1) and (video["width"], video["height"]) == (320, 180)


async def test_generate_from_a_local_file_sends_a_data_uri(emu, tmp_path, image_file, image_file2):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = await generate(client, reference_images=[str(image_file), str(image_file2)], duration=3,
                              aspect_ratio="9:16", negative_prompt="blur", seed=7)
    assert view["status"] == "succeeded", view
    assert view["cost_usd"] == pytest.approx(0.336)
    (submission,) = state.submissions()
    data = submission.body["input"]
    assert [base64.b64decode(i.removeprefix("data:image/png;base64,")) for i in data["images"]] == [
        image_file.read_bytes(), image_file2.read_bytes()]
    assert (data["aspect_ratio"], data["duration"], data["seed"], data["negative_prompt"]) == ("9:16", 3, 7, "blur")
    assert (view["videos"][0]["width"], view["videos"][0]["height"]) == (180, 320)


async def test_a_refused_local_file_fails_the_job_with_advice(emu, tmp_path, image_file):
    base, state = emu
    state.reject_data_uris = True
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = await generate(client, reference_images=[str(image_file)])
    assert view["status"] == "failed", view
    error = view["error"]
    assert error["code"] == "provider_rejected"
    assert "runpod did not accept a local file" in error["message"]
    assert "public http(s) URL" in error["hint"] and "runware" in error["hint"]
    assert view["videos"] == [] and view["next_action"]


async def test_a_failed_job_is_data_with_the_inner_message(emu, tmp_path):
    base, state = emu
    state.next_job_fails()
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = await generate(client, reference_images=[hosted_image(base, state)])
    assert view["status"] == "failed" and view["error"]["code"] == "job_failed"
    assert view["error"]["message"].endswith("could not be recognised as a character, prop or scene")
    assert "Error submitting task" not in view["error"]["message"]


async def test_a_timed_out_job_is_retryable(emu, tmp_path):
    base, state = emu
    state.next_job_times_out()
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = await generate(client, reference_images=[hosted_image(base, state)])
    assert view["status"] == "failed"
    assert view["error"]["code"] == "provider_timeout" and view["error"]["retryable"] is True


async def test_rate_limits_and_a_truncated_download_still_end_in_one_video(emu, tmp_path):
    base, state = emu
    state.fail_next_submits(1, 429, retry_after="0")
    state.fail_next_polls(1, 503)
    state.files.truncate_next = 1
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = await generate(client, reference_images=[hosted_image(base, state)], duration=4)
    assert view["status"] == "succeeded", view
    assert len(state.submissions()) == 2 and len(state.jobs) == 1
    assert state.files.truncate_next == 0 and state.files.ranges       # the cut fired; the rest was resumed
    (job,) = state.jobs.values()
    assert Path(view["videos"][0]["path"]).read_bytes() == state.files.files[
        job.output["video_url"].rsplit("/", 1)[1]].data


async def test_cancel_a_queued_job(emu, tmp_path):
    base, state = emu
    state.progression = ("IN_QUEUE",) * 10_000 + ("COMPLETED",)
    async with Client(create_server(settings(base, tmp_path))) as client:
        view = await generate(client, reference_images=[hosted_image(base, state)], wait_seconds=0)
        assert view["status"] == "submitted", view
        cancelled = await client.call_tool("cancel_job", {"job_id": view["job_id"]})
        assert not cancelled.is_error, cancelled.content
        assert cancelled.structured_content["cancelled_at_provider"] is True
        assert cancelled.structured_content["status"] == "cancelled"
        checked = await client.call_tool("check_job", {"job_id": view["job_id"], "wait_seconds": 5})
    assert checked.structured_content["status"] == "cancelled"
    (job,) = state.jobs.values()
    assert job.status == "CANCELLED"
    assert [r.path for r in state.requests if "/cancel/" in r.path] == [f"/v2/kling-video-o1-r2v/cancel/{job.id}"]


async def test_a_request_runpod_cannot_serve_is_a_tool_error_naming_who_can(emu, tmp_path):
    base, state = emu
    async with Client(create_server(settings(base, tmp_path))) as client:
        result = await client.call_tool("generate_video", {"prompt": PROMPT, "provider": "runpod",
                                                           "first_frame": hosted_image(base, state)})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "runpod" in text and "runware" in text
    assert state.requests == []


async def test_a_rejected_key_is_a_tool_error_that_never_shows_or_stores_the_key(emu, tmp_path):
    base, state = emu
    state.api_key = "rp-the-right-key"
    async with Client(create_server(settings(base, tmp_path))) as client:
        result = await client.call_tool("generate_video", {"prompt": PROMPT, "provider": "runpod",
                                                           "reference_images": [hosted_image(base, state)]})
        listed = await client.call_tool("list_jobs", {})
    assert result.is_error
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "RUNPOD_API_KEY" in text and KEY not in text
    (failed,) = listed.structured_content["jobs"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "auth_failed"
    assert KEY not in str(listed.structured_content)
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path

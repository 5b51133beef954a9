"""Every tool path through the SDK's in-memory client, in both protocol eras, on ``local``."""

from __future__ import annotations

import base64
import json

import av
import pytest
from mcp import Client

from kling_mcp.catalog import PROVIDERS
from kling_mcp.config import Settings
from kling_mcp.server import create_server

pytestmark = pytest.mark.anyio

ERAS = ["auto", "legacy"]


def _settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
                              "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **env})


def _client(tmp_path, era: str, **env) -> Client:
    return Client(create_server(_settings(tmp_path, **env)), mode=era)


def _decode(path: str) -> tuple[int, int, float, float]:
    with av.open(path) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return s.codec_context.width, s.codec_context.height, frames / float(s.average_rate), float(s.average_rate)


@pytest.mark.parametrize("era", ERAS)
async def test_tools_list_has_nine_tools_with_schemas_and_annotations(tmp_path, era):
    async with _client(tmp_path, era) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == {"generate_video", "edit_video", "check_job", "estimate_cost", "list_jobs", "cancel_job",
                          "generate_storyboard", "retake_shot", "assemble_video"}
    gen = tools["generate_video"].input_schema["properties"]
    assert gen["provider"]["enum"] == ["auto", "local"]
    duration = gen["duration"]
    assert (duration["type"], duration["minimum"], duration["maximum"]) == ("integer", 3, 10)
    for name in ("check_job", "estimate_cost", "list_jobs"):
        assert tools[name].annotations.read_only_hint and tools[name].annotations.idempotent_hint
    for t in tools.values():
        assert t.output_schema, t.name
    assert "runware" in tools["generate_video"].description and "RUNWARE_API_KEY" in tools["generate_video"].description


async def test_configured_providers_appear_in_the_enum(tmp_path):
    async with _client(tmp_path, "auto", RUNPOD_API_KEY="k") as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    schema = json.dumps(tools["generate_video"].input_schema["properties"]["provider"])
    assert '"runpod"' in schema and '"local"' in schema and '"runware"' not in schema


@pytest.mark.parametrize("era", ERAS)
async def test_text_to_video_end_to_end(tmp_path, era):
    updates: list[float] = []

    async def on_progress(progress, total, message):
        updates.append(progress)

    async with _client(tmp_path, era) as c:
        r = await c.call_tool("generate_video", {"prompt": "a lighthouse in a storm", "duration": 3,
                                                 "aspect_ratio": "9:16", "wait_seconds": 30},
                              progress_callback=on_progress)
        assert not r.is_error, r.content
        job = r.structured_content
        assert job["status"] == "succeeded" and job["provider"] == "local" and job["operation"] == "text"
        assert job["cost_usd"] == 0.0 and job["estimated_cost_usd"] == 0.0
        video = job["videos"][0]
        width, height, seconds, fps = _decode(video["path"])
        assert (width, height, fps) == (360, 640, 24.0) and abs(seconds - 3) < 0.05
        assert (video["width"], video["height"]) == (360, 640)
        kinds = [b.type for b in r.content]
        assert kinds[0] == "text" and "resource_link" in kinds and "image" in kinds
        link = next(b for b in r.content if b.type == "resource_link")
        assert str(link.uri) == video["uri"] == f"kling://jobs/{job['job_id']}/videos/0"
        assert link.mime_type == "video/mp4"
        read = await c.read_resource(video["uri"])
        blob = base64.b64decode(read.contents[0].blob)
        assert blob[4:8] == b"ftyp" and len(blob) == video["size_bytes"]
        checked = await c.call_tool("check_job", {"job_id": job["job_id"]})
        assert checked.structured_content["status"] == "succeeded"
    assert updates, "no progress notifications"


@pytest.mark.parametrize("era", ERAS)
async def test_image_reference_and_edit_on_local(tmp_path, era, image_file, image_file2, video_file):
    async with _client(tmp_path, era) as c:
        image = await c.call_tool("generate_video", {"prompt": "morph", "first_frame": str(image_file),
                                                     "last_frame": str(image_file2), "duration": 3,
                                                     "wait_seconds": 30})
        assert image.structured_content["operation"] == "image", image.content
        assert image.structured_content["status"] == "succeeded"
        ref = await c.call_tool("generate_video", {"prompt": "the two friends", "duration": 3, "wait_seconds": 30,
                                                   "reference_images": [str(image_file), str(image_file2)]})
        assert ref.structured_content["operation"] == "reference"
        assert ref.structured_content["status"] == "succeeded"
        edit = await c.call_tool("edit_video", {"prompt": "make it snow", "video": str(video_file),
                                                "wait_seconds": 30})
        job = edit.structured_content
        assert job["operation"] == "edit" and job["status"] == "succeeded", edit.content
        _, _, seconds, _ = _decode(job["videos"][0]["path"])
        assert abs(seconds - 4.0) < 0.1          # the edit follows the input's length


async def test_data_uri_input_is_accepted(tmp_path, image_file):
    uri = "data:image/png;base64," + base64.b64encode(image_file.read_bytes()).decode()
    async with _client(tmp_path, "auto") as c:
        r = await c.call_tool("generate_video", {"prompt": "x", "first_frame": uri, "duration": 3, "wait_seconds": 30})
    assert r.structured_content["status"] == "succeeded", r.content


@pytest.mark.parametrize("args,expect", [
    ({"prompt": "x", "duration": 11}, "duration=11: must be at most 10."),
    ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"prompt": "x", "provider": "runpod"}, "provider"),
    ({"prompt": "x", "bogus": 1}, "bogus"),
    ({"prompt": "x", "first_frame": "file:///etc/passwd"}, "file: scheme"),
    ({"prompt": "x", "first_frame": "/no/such/file.png"}, "does not exist"),
    ({"prompt": "x", "last_frame": "https://example.test/last.png"}, "needs a first_frame"),
    ({"prompt": "   "}, "prompt is empty"),
])
async def test_invalid_requests_are_tool_errors_that_say_what_to_change(tmp_path, args, expect):
    async with _client(tmp_path, "auto") as c:
        r = await c.call_tool("generate_video", args)
    assert r.is_error
    assert expect in r.content[0].text, r.content[0].text


async def test_non_image_file_and_directory_are_refused(tmp_path, video_file):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    async with _client(tmp_path, "auto") as c:
        r1 = await c.call_tool("generate_video", {"prompt": "x", "first_frame": str(text)})
        r2 = await c.call_tool("generate_video", {"prompt": "x", "first_frame": str(tmp_path)})
        r3 = await c.call_tool("generate_video", {"prompt": "x", "first_frame": str(video_file)})
    assert r1.is_error and "invalid_input_file" in r1.content[0].text
    assert r2.is_error and "not a regular file" in r2.content[0].text
    assert r3.is_error and "needs a image" in r3.content[0].text


async def test_allowed_dirs_confine_local_inputs(tmp_path, image_file):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    async with _client(tmp_path, "auto", KLING_MCP_ALLOWED_DIRS=str(allowed)) as c:
        r = await c.call_tool("generate_video", {"prompt": "x", "first_frame": str(image_file)})
    assert r.is_error and "KLING_MCP_ALLOWED_DIRS" in r.content[0].text


async def test_unknown_job_and_unknown_resource(tmp_path):
    async with _client(tmp_path, "auto") as c:
        r = await c.call_tool("check_job", {"job_id": "nope"})
        assert r.is_error and "unknown_job" in r.content[0].text and "list_jobs" in r.content[0].text
        r = await c.call_tool("cancel_job", {"job_id": "nope"})
        assert r.is_error
        with pytest.raises(Exception):
            await c.read_resource("kling://jobs/nope/videos/0")


@pytest.mark.parametrize("era", ERAS)
async def test_cancel_and_list(tmp_path, era):
    async with _client(tmp_path, era) as c:
        r = await c.call_tool("generate_video", {"prompt": "slow", "duration": 10, "wait_seconds": 0})
        job_id = r.structured_content["job_id"]
        assert r.structured_content["status"] in ("submitted", "running", "pending")
        assert "check_job" in r.structured_content["next_action"]
        cancelled = await c.call_tool("cancel_job", {"job_id": job_id})
        assert cancelled.structured_content["status"] == "cancelled"
        again = await c.call_tool("check_job", {"job_id": job_id, "wait_seconds": 1})
        assert again.structured_content["status"] == "cancelled"
        listed = await c.call_tool("list_jobs", {})
        assert listed.structured_content["jobs"][0]["job_id"] == job_id
        only = await c.call_tool("list_jobs", {"status": "succeeded"})
        assert only.structured_content["count"] == 0


async def test_idempotent_repeats_never_start_a_second_job(tmp_path):
    async with _client(tmp_path, "auto") as c:
        args = {"prompt": "same", "duration": 3, "wait_seconds": 0, "idempotency_key": "shot-1"}
        first = (await c.call_tool("generate_video", args)).structured_content
        second = (await c.call_tool("generate_video", args)).structured_content
        assert first["job_id"] == second["job_id"] and "idempotency_key" in second["note"]
        plain = {"prompt": "twin", "duration": 3, "wait_seconds": 0}
        a = (await c.call_tool("generate_video", plain)).structured_content
        b = (await c.call_tool("generate_video", plain)).structured_content
        assert a["job_id"] == b["job_id"] and "already running" in b["note"]
        fresh = (await c.call_tool("generate_video", {**plain, "idempotency_key": "new"})).structured_content
        assert fresh["job_id"] != a["job_id"]
        listed = (await c.call_tool("list_jobs", {})).structured_content
        assert listed["count"] == 3


async def test_estimate_cost_quotes_every_provider_and_probes_edit_length(tmp_path, video_file):
    async with _client(tmp_path, "auto") as c:
        r = await c.call_tool("estimate_cost", {"prompt": "make it snow", "video": str(video_file)})
        est = r.structured_content
        assert est["operation"] == "edit" and est["duration_s"] == pytest.approx(4.0, abs=0.1)
        quotes = {q["provider"]: q for q in est["quotes"]}
        assert set(quotes) == set(PROVIDERS)
        assert est["recommended"] == "local"
        assert not quotes["kling"]["supported"] and "only as URLs" in " ".join(quotes["kling"]["problems"])
        assert quotes["evolink"]["cost_usd"] == pytest.approx(0.176 * 4.0, abs=0.02)
        assert quotes["evolink"]["configured"] is False
        assert not quotes["runpod"]["supported"] and quotes["runpod"]["problems"]
        r = await c.call_tool("estimate_cost", {"prompt": "make it snow", "video": "https://example.test/v.mp4",
                                                "video_duration_s": 6})
        quotes = {q["provider"]: q for q in r.structured_content["quotes"]}
        assert quotes["runware"]["cost_usd"] == pytest.approx(6 * 0.126)
        r = await c.call_tool("estimate_cost", {"prompt": "make it snow", "video": "https://example.test/v.mp4",
                                                "video_duration_s": float("nan")})
        assert r.is_error


async def test_catalog_resource_and_storyboard_prompt(tmp_path):
    async with _client(tmp_path, "auto") as c:
        data = json.loads((await c.read_resource("kling://catalog")).contents[0].text)
        assert set(data["providers"]) == set(PROVIDERS)
        assert {"runware", "runpod", "aimlapi", "evolink", "fal", "replicate", "kling", "local"} <= set(PROVIDERS)
        prompt = await c.get_prompt("storyboard", {"topic": "a fox's day", "shots": "3"})
        text = prompt.messages[0].content.text
        assert "a fox's day" in text and "generate_storyboard" in text and "retake_shot" in text

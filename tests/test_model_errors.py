"""Errors and progress the model sees, through the MCP client: schema failures in the error vocabulary,
prompts/get failures as -32602, progress that strictly increases with a heartbeat while nothing happens."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from kling_mcp import server_checks
from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app

pytestmark = pytest.mark.anyio

KEY = "rp-progress-key"


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), **env})


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_refused_argument_comes_back_as_one_error_naming_rule_value_and_providers(tmp_path: Path) -> None:
    async with Client(create_server(settings(tmp_path, AIML_API_KEY="k"))) as client:
        result = await client.call_tool("generate_video", {"prompt": "a kite", "duration": 3, "aspect_ratio": "4:3"})
    text = text_of(result)
    assert result.is_error
    assert text.startswith("[invalid_request] generate_video refused its arguments:"), text
    assert "duration=3: must be at least 5." in text  # aimlapi's 5|10 s bound the schema
    accepted = text[text.index("duration=3"):text.index("would accept it (not configured here)")]
    for provider, key in (("runware", "RUNWARE_API_KEY"), ("runpod", "RUNPOD_API_KEY"), ("fal", "FAL_KEY"),
                          ("replicate", "REPLICATE_API_TOKEN")):
        assert f"{provider} ({key})" in accepted, text
    assert "aimlapi" not in accepted and "evolink" not in accepted
    assert "aspect_ratio='4:3': must be one of '16:9', '9:16' or '1:1'. No Kling provider accepts it." in text
    assert "Hint:" in text
    for pydantic_words in ("validation error", "errors.pydantic.dev", "Arguments", "input_type"):
        assert pydantic_words not in text, text


async def test_unknown_and_misspelled_arguments_and_providers_are_named(tmp_path: Path) -> None:
    async with Client(create_server(settings(tmp_path))) as client:
        typo = await client.call_tool("generate_video", {"prompt": "a kite", "durations": 5})
        edit = await client.call_tool("edit_video", {"prompt": "blue", "video": "x.mp4", "provider": "runpod"})
        missing = await client.call_tool("check_job", {})
    assert "durations is not an argument of generate_video. Did you mean duration?" in text_of(typo)
    assert "provider='runpod'" in text_of(edit) and "'runpod' does not offer this; runware, aimlapi" in text_of(edit)
    assert text_of(missing).startswith("[invalid_request]") and "job_id is required." in text_of(missing)


async def test_a_valid_call_that_fails_later_keeps_its_own_error(tmp_path: Path) -> None:
    async with Client(create_server(settings(tmp_path))) as client:
        result = await client.call_tool("check_job", {"job_id": "nope"})
    assert result.is_error and text_of(result).startswith("[unknown_job]")


@pytest.mark.parametrize(
    ("name", "arguments", "words"),
    [
        ("nope", {}, "There is no prompt named 'nope'; this server offers: storyboard"),
        ("storyboard", {}, "it needs topic"),
        ("storyboard", {"topic": "tea", "colour": "red"}, "it has no argument colour"),
    ],
)
async def test_prompts_get_failures_are_invalid_params_with_a_readable_message(
    tmp_path: Path, name: str, arguments: dict[str, str], words: str
) -> None:
    async with Client(create_server(settings(tmp_path))) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt(name, arguments)
        rendered = await client.get_prompt("storyboard", {"topic": "tea"})
    assert caught.value.error.code == -32602
    assert words in caught.value.error.message and "{" not in caught.value.error.message
    assert "tea" in rendered.messages[0].content.text


async def test_progress_strictly_increases_and_reaches_100_once(tmp_path: Path) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(create_server(settings(tmp_path))) as client:
        result = await client.call_tool(
            "generate_video", {"prompt": "a kite", "provider": "local", "duration": 3, "wait_seconds": 45},
            progress_callback=on_progress)
    assert result.structured_content["status"] == "succeeded"
    values = [p for p, _, _ in seen]
    assert values and all(b > a for a, b in zip(values, values[1:])), values
    assert values.count(100.0) == 1 and values[-1] == 100.0
    assert all(total == 100.0 and message and "elapsed" in message for _, total, message in seen)


@pytest.fixture
def slow_runpod() -> Iterator[str]:
    state = RunpodState(api_key=KEY)
    with serve(runpod_app(state)) as base:
        yield base


async def test_a_wait_sends_a_heartbeat_while_the_provider_reports_nothing(
    tmp_path: Path, slow_runpod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_checks, "HEARTBEAT_S", 0.3)
    seen: list[tuple[float, float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((time.monotonic(), progress, message or ""))

    # One poll every 2.5 s: long silences between the provider's state changes.
    env = {"RUNPOD_API_KEY": KEY, "KLING_MCP_RUNPOD_BASE_URL": f"{slow_runpod}/v2", "KLING_MCP_POLL_INTERVAL_S": "2.5",
           "KLING_MCP_POLL_MAX_INTERVAL_S": "2.5"}
    async with Client(create_server(settings(tmp_path, **env))) as client:
        image = f"data:image/png;base64,{base64.b64encode(png_bytes()).decode()}"
        started = time.monotonic()
        await client.call_tool(
            "generate_video", {"prompt": "a kite", "provider": "runpod", "reference_images": [image], "duration": 3,
                               "wait_seconds": 2.0}, progress_callback=on_progress)
    times = [started] + [t for t, _, _ in seen]
    assert len(seen) >= 4, seen
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 0.3 + 1.0, gaps  # generous: a loaded 2-core machine
    values = [p for _, p, _ in seen]
    assert all(b > a for a, b in zip(values, values[1:])) and max(values) < 100, values
    assert all("elapsed" in message for _, _, message in seen)


async def test_reading_a_video_over_the_cap_answers_its_path_and_preview_not_its_bytes(tmp_path: Path) -> None:
    async with Client(create_server(settings(tmp_path))) as client:
        done = await client.call_tool(
            "generate_video", {"prompt": "a kite", "provider": "local", "duration": 3, "wait_seconds": 45})
        job = done.structured_content
        uri, path = job["videos"][0]["uri"], Path(job["videos"][0]["path"])
        small = (await client.read_resource(uri)).contents[0]
        os.truncate(path, server_checks.MAX_INLINE_VIDEO_BYTES + 1)  # sparse: 50 MB without writing them
        large = (await client.read_resource(uri)).contents[0]
    assert small.mime_type == "video/mp4" and len(base64.b64decode(small.blob)) < 5_000_000
    assert large.mime_type == "text/plain"
    assert str(path) in large.text and f"{uri}/preview" in large.text and "50 MB" in large.text
    assert len(large.text) < 400


async def test_a_finished_job_carries_a_small_jpeg_poster(tmp_path: Path) -> None:
    from PIL import Image

    async with Client(create_server(settings(tmp_path))) as client:
        done = await client.call_tool(
            "generate_video", {"prompt": "a kite", "provider": "local", "duration": 3, "wait_seconds": 45})
        again = await client.call_tool("check_job", {"job_id": done.structured_content["job_id"]})
    for result in (done, again):
        images = [c for c in result.content if getattr(c, "type", "") == "image"]
        assert len(images) == 1 and images[0].mime_type == "image/jpeg"
        data = base64.b64decode(images[0].data)
        assert len(data) < 30_000
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and max(image.size) == 320
    assert images[0].data == next(c for c in done.content if getattr(c, "type", "") == "image").data


async def test_estimate_cost_answers_one_line_per_provider_beside_its_structured_quotes(tmp_path: Path) -> None:
    async with Client(create_server(settings(tmp_path, RUNWARE_API_KEY="k"))) as client:
        result = await client.call_tool("estimate_cost", {"prompt": "a kite", "duration": 5})
    lines = result.content[0].text.splitlines()
    quotes = result.structured_content["quotes"]
    assert lines[0] == "Quote for a 5 s text-to-video; auto picks runware."
    assert "runware standard: $0.420 (published)" in lines
    assert any(line.startswith("runpod standard: no (runpod does not offer text-to-video") for line in lines)
    assert len(lines) == len(quotes) + 3 and lines[-1].startswith("Next: ")
    assert not result.content[0].text.lstrip().startswith("{")  # not the JSON again

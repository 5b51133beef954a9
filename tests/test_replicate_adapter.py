"""Replicate adapter: exact prediction inputs per mode and every response/error mapping, on
``httpx.MockTransport``. The protocol against a live emulator is in ``test_replicate_emulator.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.jobs.model import Job
from kling_mcp.providers import replicate as replicate_module
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.replicate import CANCEL_AFTER, ReplicateProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.support import MemoryKV

pytestmark = pytest.mark.anyio

KEY = "r8_SECRET_abcdefghijklmnop"
API = "https://api.replicate.test/v1"
PID = "q8y0r2s3ksrm80cm0h1b9j9b2c"
IMG = "https://example.test/a.png"
VID = MediaRef(kind="url", value="https://example.test/v.mp4", media="video", duration_s=6.0)


class Wire:
    def __init__(self, *responses: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.responses:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.responses.pop(0)
        return answer(request) if callable(answer) else answer

    def body(self, index: int = 0) -> Any:
        return json.loads(self.requests[index].content)


def provider(wire: Wire, tmp_path: Path) -> ReplicateProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    return ReplicateProvider(ProviderContext(name="replicate", api_key=KEY, base_url=API, client=client,
                                             kv=MemoryKV(), data_dir=tmp_path))


def url(value: str = IMG) -> MediaRef:
    return MediaRef(kind="url", value=value, media="image")


def job(tier: str = "pro", remote_id: str | None = None, **spec: Any) -> Job:
    return Job(provider="replicate", model="kwaivgi/kling-o1", tier=tier, spec=VideoSpec(**spec),
               remote_id=remote_id)


def prediction(status: str = "starting", **extra: Any) -> httpx.Response:
    return httpx.Response(201, json={"id": PID, "model": "kwaivgi/kling-o1", "version": "hidden", "input": {},
                                     "output": None, "error": None, "logs": "", "status": status,
                                     "urls": {"get": f"{API}/predictions/{PID}"}, **extra})


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("standard", {"operation": "text", "prompt": "p", "duration": 10, "aspect_ratio": "9:16"},
     {"prompt": "p", "mode": "std", "duration": 10, "aspect_ratio": "9:16"}),
    ("pro", {"operation": "image", "prompt": "p", "first_frame": url(), "last_frame": url(IMG + "?e"), "duration": 5},
     {"prompt": "p", "mode": "pro", "start_image": IMG, "end_image": IMG + "?e", "duration": 5}),
    ("pro", {"operation": "reference", "prompt": "p", "reference_images": [url()] * 7, "duration": 4,
             "aspect_ratio": "1:1"},
     {"prompt": "p", "mode": "pro", "reference_images": [IMG] * 7, "duration": 4, "aspect_ratio": "1:1"}),
    ("standard", {"operation": "reference", "prompt": "p", "reference_video": VID, "duration": 6,
                  "keep_original_sound": True},
     {"prompt": "p", "mode": "std", "reference_video": VID.value, "video_reference_type": "feature",
      "keep_original_sound": True, "duration": 6, "aspect_ratio": "16:9"}),
    ("pro", {"operation": "edit", "prompt": "p", "video": VID, "reference_images": [url()]},
     {"prompt": "p", "mode": "pro", "reference_images": [IMG], "reference_video": VID.value,
      "video_reference_type": "base", "keep_original_sound": False}),
]


@pytest.mark.parametrize(("tier", "spec", "inputs"), CASES)
async def test_each_mode_gets_its_exact_input_and_a_cancel_after_deadline(tmp_path, tier, spec, inputs):
    wire = Wire(prediction())
    accepted = await provider(wire, tmp_path).submit(job(tier, **spec))
    [request] = wire.requests
    assert request.method == "POST" and str(request.url) == f"{API}/models/kwaivgi/kling-o1/predictions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["cancel-after"] == CANCEL_AFTER
    assert wire.body() == {"input": inputs}
    assert accepted.remote_id == PID


async def test_the_catalogs_rules_are_checked_before_any_request(tmp_path):
    wire = Wire()
    with pytest.raises(errors.UnsupportedByProvider, match="5 or 10"):
        await provider(wire, tmp_path).submit(job(operation="text", prompt="p", duration=7))
    with pytest.raises(errors.UnsupportedByProvider, match="3-10 s"):
        short = VID.model_copy(update={"duration_s": 11.0})
        await provider(wire, tmp_path).submit(job(operation="edit", prompt="p", video=short))
    assert wire.requests == []


def polled(status: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": PID, "status": status, "output": None, "error": None, **extra})


@pytest.mark.parametrize(("answer", "expected"), [
    (polled("starting"), Running(queued=True)),
    (polled("processing", logs="50%"), Running()),
])
async def test_running_states(tmp_path, answer, expected):
    wire = Wire(answer)
    assert await provider(wire, tmp_path).poll(job(remote_id=PID, operation="text", prompt="p")) == expected
    assert str(wire.requests[0].url) == f"{API}/predictions/{PID}"


@pytest.mark.parametrize("output", ["https://replicate.delivery/x/out.mp4", ["https://replicate.delivery/x/out.mp4"]])
async def test_succeeded_gives_the_output_url(tmp_path, output):
    result = await provider(Wire(polled("succeeded", output=output)), tmp_path).poll(
        job(remote_id=PID, operation="text", prompt="p"))
    assert isinstance(result, Done) and result.videos[0].url == "https://replicate.delivery/x/out.mp4"


@pytest.mark.parametrize(("answer", "code", "words", "retryable"), [
    (polled("failed", error="The input or output was flagged as sensitive. (E005)"), "content_policy",
     "flagged as sensitive", False),
    (polled("failed", error="CUDA out of memory"), "job_failed", "CUDA out of memory", False),
    (polled("aborted"), "aborted", "does not bill", True),
    (polled("canceled"), "cancelled_at_provider", "canceled at replicate", False),
    (polled("succeeded", output=None, data_removed=True), "remote_not_found", "already deleted", False),
    (polled("succeeded", output=None), "provider_protocol", "no output URL", False),
    (polled("paused"), "provider_protocol", "'paused'", False),
])
async def test_terminal_failures_are_data(tmp_path, answer, code, words, retryable):
    result = await provider(Wire(answer), tmp_path).poll(job(remote_id=PID, operation="text", prompt="p"))
    assert isinstance(result, Failed) and result.code == code and words in result.message, result
    assert result.retryable is retryable


async def test_a_422_lists_the_invalid_fields(tmp_path):
    body = {"title": "Input validation failed", "status": 422, "detail": "- input.duration: Must be <= 10",
            "invalid_fields": [{"type": "number", "field": "input.duration", "description": "Must be <= 10"}]}
    wire = Wire(httpx.Response(422, json=body))
    with pytest.raises(errors.ProviderRejected, match="input.duration: Must be <= 10") as caught:
        await provider(wire, tmp_path).submit(job(operation="text", prompt="p", duration=5))
    assert caught.value.may_have_accepted is False


@pytest.mark.parametrize(("response", "error"), [
    (httpx.Response(401, json={"title": "Unauthenticated", "detail": "Invalid token"}), errors.AuthenticationFailed),
    (httpx.Response(402, json={"title": "Payment required", "detail": "add billing"}), errors.InsufficientCredits),
    (httpx.Response(429, headers={"Retry-After": "9"}, json={"detail": "throttled"}), errors.RateLimited),
    (httpx.Response(503, text="upstream down"), errors.ProviderUnavailable),
    (httpx.Response(200, content=b'{"id": "x", "sta'), errors.ProviderUnavailable),
])
async def test_request_failures_raise_the_vocabulary(tmp_path, response, error):
    with pytest.raises(error) as caught:
        await provider(Wire(response), tmp_path).poll(job(remote_id=PID, operation="text", prompt="p"))
    if error is errors.AuthenticationFailed:
        assert "REPLICATE_API_TOKEN" in caught.value.hint
    if error is errors.RateLimited:
        assert caught.value.retry_after == 9


@pytest.mark.parametrize(("status", "stopped"), [("canceled", True), ("succeeded", False)])
async def test_cancel_posts_and_reads_the_answer(tmp_path, status, stopped):
    wire = Wire(polled(status))
    assert await provider(wire, tmp_path).cancel(job(remote_id=PID, operation="text", prompt="p")) is stopped
    assert wire.requests[0].method == "POST" and str(wire.requests[0].url) == f"{API}/predictions/{PID}/cancel"


async def test_local_files_go_through_the_files_api(tmp_path, image_file, video_file):
    seen: list[httpx.Request] = []

    def files(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": f"f{len(seen)}", "urls": {"get": f"{API}/files/f{len(seen)}"}})

    wire = Wire(files, files, prediction())
    frame = MediaRef(kind="file", value=str(image_file), media="image", mime_type="image/png")
    clip = MediaRef(kind="file", value=str(video_file), media="video", mime_type="video/mp4", duration_s=4.0)
    await provider(wire, tmp_path).submit(job(operation="reference", prompt="p", reference_images=[frame],
                                              reference_video=clip, duration=5))
    assert [str(r.url) for r in seen] == [f"{API}/files"] * 2
    assert all(r.headers["content-type"].startswith("multipart/form-data") for r in seen)
    assert b'name="content"; filename="frame.png"' in seen[0].content and image_file.read_bytes() in seen[0].content
    assert b'filename="input.mp4"' in seen[1].content
    inputs = wire.body(2)["input"]
    assert inputs["reference_images"] == [f"{API}/files/f1"] and inputs["reference_video"] == f"{API}/files/f2"


async def test_an_upload_refusal_says_nothing_was_submitted(tmp_path, image_file):
    wire = Wire(httpx.Response(500, json={"detail": "boom"}))
    frame = MediaRef(kind="file", value=str(image_file), media="image", mime_type="image/png")
    with pytest.raises(errors.ProviderUnavailable, match="Files API failed") as caught:
        await provider(wire, tmp_path).submit(job(operation="image", prompt="p", first_frame=frame, duration=5))
    assert caught.value.may_have_accepted is False and len(wire.requests) == 1


async def test_a_file_over_200_mb_is_refused_before_any_request(tmp_path, image_file, monkeypatch):
    monkeypatch.setattr(replicate_module, "MAX_FILE_BYTES", 10)
    wire = Wire()
    frame = MediaRef(kind="file", value=str(image_file), media="image", mime_type="image/png")
    with pytest.raises(errors.InvalidInputFile, match="200 MB"):
        await provider(wire, tmp_path).submit(job(operation="image", prompt="p", first_frame=frame, duration=5))
    assert wire.requests == []


async def test_an_echoed_token_is_redacted_from_errors_and_failures(tmp_path):
    wire = Wire(httpx.Response(400, json={"detail": f"token {KEY} is malformed"}),
                polled("failed", error=f"upstream said {KEY}"))
    with pytest.raises(errors.ProviderRejected) as caught:
        await provider(wire, tmp_path).submit(job(operation="text", prompt="p", duration=5))
    assert KEY not in str(caught.value)
    result = await provider(wire, tmp_path).poll(job(remote_id=PID, operation="text", prompt="p"))
    assert isinstance(result, Failed) and KEY not in result.message

"""AI/ML API adapter: exact request bodies per model and every response/error mapping.

The wire is ``httpx.MockTransport`` (no sockets); the protocol against a live emulator is in
``test_aimlapi_emulator.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.catalog import PROVIDERS
from kling_mcp.jobs.model import Job, RemoteVideo
from kling_mcp.providers.aimlapi import AimlapiProvider
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.requests import MediaRef, VideoSpec
from tests.support import MemoryKV

KEY = "aiml-secret-key-0123456789"
BASE = "https://api.aimlapi.test"
GEN_ID = "ee188bbb-47f1-41b1-b0d6-24ad799e3205:klingai/video-o1-image-to-video"
SEED_IMAGE = "https://raw.githubusercontent.com/aimlapi/api-docs/main/reference-files/mona_lisa_extended.jpg"

pytestmark = pytest.mark.anyio


class Wire:
    """Records requests and answers each with the next scripted response."""

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


def provider(wire: Wire, tmp_path: Path, base_url: str | None = BASE) -> tuple[AimlapiProvider, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    ctx = ProviderContext(name="aimlapi", api_key=KEY, base_url=base_url, client=client, kv=MemoryKV(),
                          data_dir=tmp_path)
    return AimlapiProvider(ctx), client


def url(value: str, media: str = "image") -> MediaRef:
    return MediaRef(kind="url", value=value, media=media)  # type: ignore[arg-type]


def file(path: Path, media: str, mime: str) -> MediaRef:
    return MediaRef(kind="file", value=str(path), media=media, mime_type=mime)  # type: ignore[arg-type]


def job(model: str, remote_id: str | None = None, **spec: Any) -> Job:
    return Job(provider="aimlapi", model=model, spec=VideoSpec(**spec), remote_id=remote_id)


def accepted(gen_id: str = GEN_ID, status: str = "queued") -> httpx.Response:
    return httpx.Response(200, json={"id": gen_id, "status": status})


def b64(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


# --- exact request bodies ------------------------------------------------------------------------


async def test_seed_image_to_video_example(tmp_path):
    """The docs' own example, except ``duration`` as the schema's integer (the docs send "5")."""
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path)
    async with client:
        result = await adapter.submit(job("klingai/video-o1-image-to-video", operation="image",
                                          prompt="Mona Lisa puts on glasses with her hands.",
                                          first_frame=url(SEED_IMAGE), duration=5))
    assert result.remote_id == GEN_ID
    sent = wire.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/v2/video/generations"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert wire.body() == {"model": "klingai/video-o1-image-to-video",
                           "prompt": "Mona Lisa puts on glasses with her hands.",
                           "image_url": SEED_IMAGE, "duration": 5}


async def test_image_with_local_last_frame_sends_data_uri(tmp_path, image_file, image_file2):
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path)
    async with client:
        await adapter.submit(job("klingai/video-o1-image-to-video", operation="image", prompt="dusk falls",
                                 first_frame=file(image_file, "image", "image/png"),
                                 last_frame=file(image_file2, "image", "image/png"), duration=10))
    assert wire.body() == {"model": "klingai/video-o1-image-to-video", "prompt": "dusk falls",
                           "image_url": b64(image_file, "image/png"),
                           "last_image_url": b64(image_file2, "image/png"), "duration": 10}


async def test_reference_with_images(tmp_path):
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path)
    images = [f"https://img.example/{i}.png" for i in range(7)]
    async with client:
        await adapter.submit(job("klingai/video-o1-reference-to-video", operation="reference",
                                 prompt="the two characters meet", reference_images=[url(u) for u in images],
                                 aspect_ratio="9:16", duration=10, keep_original_sound=True))
    # reference-to-video has no keep_audio field: it is not sent even when asked for
    assert wire.body() == {"model": "klingai/video-o1-reference-to-video", "prompt": "the two characters meet",
                           "image_list": images, "aspect_ratio": "9:16", "duration": 10}


async def test_reference_with_video(tmp_path, video_file, image_file):
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path)
    async with client:
        await adapter.submit(job("klingai/video-o1-video-to-video-reference", operation="reference",
                                 prompt="same camera move, new scene",
                                 reference_video=file(video_file, "video", "video/mp4"),
                                 reference_images=[file(image_file, "image", "image/png"),
                                                   url("https://img.example/b.jpg")],
                                 aspect_ratio="1:1", duration=5, keep_original_sound=False))
    assert wire.body() == {"model": "klingai/video-o1-video-to-video-reference",
                           "prompt": "same camera move, new scene", "video_url": b64(video_file, "video/mp4"),
                           "image_list": [b64(image_file, "image/png"), "https://img.example/b.jpg"],
                           "aspect_ratio": "1:1", "duration": 5, "keep_audio": False}


async def test_edit(tmp_path):
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path)
    async with client:
        await adapter.submit(job("klingai/video-o1-video-to-video-edit", operation="edit",
                                 prompt="add a small fairy rider", video=url("https://v.example/in.mp4", "video"),
                                 reference_images=[url("https://img.example/fairy.png")],
                                 keep_original_sound=True))
    # the edit schema has no duration/aspect_ratio (output follows the input video)
    assert wire.body() == {"model": "klingai/video-o1-video-to-video-edit", "prompt": "add a small fairy rider",
                           "video_url": "https://v.example/in.mp4",
                           "image_list": ["https://img.example/fairy.png"], "keep_audio": True}


async def test_edit_without_optionals_and_default_base_url(tmp_path, video_file):
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path, base_url=None)
    async with client:
        await adapter.submit(job("klingai/video-o1-video-to-video-edit", operation="edit", prompt="make it snow",
                                 video=file(video_file, "video", "video/mp4")))
    assert str(wire.requests[0].url) == PROVIDERS["aimlapi"].default_base_url + "/v2/video/generations"
    assert wire.body() == {"model": "klingai/video-o1-video-to-video-edit", "prompt": "make it snow",
                           "video_url": b64(video_file, "video/mp4")}


@pytest.mark.parametrize(("operation", "inputs", "expected"), [
    ("image", {"first_frame": url(SEED_IMAGE)}, "klingai/video-o1-image-to-video"),
    ("reference", {"reference_images": [url(SEED_IMAGE)]}, "klingai/video-o1-reference-to-video"),
    ("reference", {"reference_video": url("https://v.example/r.mp4", "video")},
     "klingai/video-o1-video-to-video-reference"),
    ("edit", {"video": url("https://v.example/e.mp4", "video")}, "klingai/video-o1-video-to-video-edit"),
])
async def test_model_derived_from_spec_when_job_model_is_not_an_o1_id(tmp_path, operation, inputs, expected):
    wire = Wire(accepted())
    adapter, client = provider(wire, tmp_path)
    async with client:
        await adapter.submit(job("kling-video-o1", operation=operation, prompt="p", **inputs))
    assert wire.body()["model"] == expected


async def test_text_job_is_unsupported_and_names_providers_that_have_it(tmp_path):
    wire = Wire()
    adapter, client = provider(wire, tmp_path)
    async with client:
        with pytest.raises(errors.UnsupportedByProvider) as info:
            await adapter.submit(job("klingai/video-o1-image-to-video", operation="text", prompt="a cat"))
    assert "text-to-video" in str(info.value)
    assert "runware" in info.value.hint
    assert wire.requests == []


async def test_missing_inputs_are_rejected_before_any_request(tmp_path):
    wire = Wire()
    adapter, client = provider(wire, tmp_path)
    async with client:
        with pytest.raises(errors.InvalidRequest, match="first_frame"):
            await adapter.submit(job("klingai/video-o1-image-to-video", operation="image", prompt="p",
                                     last_frame=url(SEED_IMAGE)))
        with pytest.raises(errors.InvalidRequest, match="reference_images"):
            await adapter.submit(job("klingai/video-o1-reference-to-video", operation="reference", prompt="p"))
        with pytest.raises(errors.InvalidInputFile, match="cannot read"):
            await adapter.submit(job("klingai/video-o1-video-to-video-edit", operation="edit", prompt="p",
                                     video=file(tmp_path / "gone.mp4", "video", "video/mp4")))
    assert wire.requests == []


# --- poll: every status ---------------------------------------------------------------------------


def generation(status: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": GEN_ID, "status": status, **extra})


async def poll(tmp_path: Path, *responses: httpx.Response) -> tuple[Any, Wire]:
    wire = Wire(*responses)
    adapter, client = provider(wire, tmp_path)
    async with client:
        result = await adapter.poll(job("klingai/video-o1-image-to-video", remote_id=GEN_ID, operation="image",
                                        prompt="p", first_frame=url(SEED_IMAGE)))
    return result, wire


async def test_poll_request_encodes_the_id(tmp_path):
    _, wire = await poll(tmp_path, generation("queued"))
    sent = wire.requests[0]
    assert sent.method == "GET"
    assert sent.url.path == "/v2/video/generations"
    assert sent.url.query == (b"generation_id=ee188bbb-47f1-41b1-b0d6-24ad799e3205"
                              b"%3Aklingai%2Fvideo-o1-image-to-video")
    assert sent.url.params["generation_id"] == GEN_ID
    assert sent.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("status", "queued"), [("queued", True), ("waiting", True), ("generating", False)])
async def test_pending_statuses(tmp_path, status, queued):
    result, _ = await poll(tmp_path, generation(status, video=None, error=None, meta=None))
    assert result == Running(progress=None, queued=queued)


async def test_completed_with_credits(tmp_path):
    video = "https://cdn.aimlapi.com/flamingo/files/b/0a8740c6/abc_output.mp4"
    result, _ = await poll(tmp_path, generation("completed", video={"url": video}, error=None,
                                                meta={"usage": {"credits_used": 1_120_000}}))
    assert result == Done(videos=[RemoteVideo(url=video, remote_key=GEN_ID)], cost_usd=0.56)


async def test_completed_without_usage_has_no_cost(tmp_path):
    result, _ = await poll(tmp_path, generation("completed", video={"url": "https://cdn.example/x.mp4"}))
    assert isinstance(result, Done)
    assert result.cost_usd is None
    result, _ = await poll(tmp_path, generation("completed", video={"url": "https://cdn.example/x.mp4"},
                                                meta={"usage": None}))
    assert isinstance(result, Done) and result.cost_usd is None


async def test_completed_without_video_is_a_protocol_failure(tmp_path):
    result, _ = await poll(tmp_path, generation("completed", video=None))
    assert isinstance(result, Failed)
    assert result.code == "provider_protocol"
    assert "video.url" in result.message


async def test_error_with_name_and_message(tmp_path):
    result, _ = await poll(tmp_path, generation("error", error={"name": "GenerationFailed",
                                                                "message": "Upstream task failed"}))
    assert isinstance(result, Failed)
    assert result.code == "generation_failed"
    assert "Upstream task failed" in result.message
    assert result.retryable is False and result.hint


async def test_error_with_content_policy_name(tmp_path):
    result, _ = await poll(tmp_path, generation("error", error={"name": "ContentPolicyViolation",
                                                                "message": "flagged by moderation"}))
    assert isinstance(result, Failed)
    assert result.code == "content_policy"
    assert "flagged by moderation" in result.message
    assert result.hint == errors.ContentPolicy.default_hint


async def test_error_with_detail_list(tmp_path):
    result, _ = await poll(tmp_path, generation("error", error={"detail": [
        {"loc": ["body", "image_url"], "msg": "Could not detect face in the image",
         "type": "face_detection_error", "input": "…"},
        {"loc": ["body", "prompt"], "msg": "too vague", "type": "value_error"}]}))
    assert isinstance(result, Failed)
    assert result.code == "face_detection_error"
    assert result.message.endswith("body.image_url: Could not detect face in the image; body.prompt: too vague")


async def test_error_without_details(tmp_path):
    result, _ = await poll(tmp_path, generation("error", error=None))
    assert isinstance(result, Failed)
    assert result.code == "job_failed"
    assert "without details" in result.message


async def test_unknown_status_fails_instead_of_hanging(tmp_path):
    result, _ = await poll(tmp_path, generation("paused"))
    assert isinstance(result, Failed)
    assert result.code == "provider_protocol"
    assert "'paused'" in result.message


async def test_cancel_makes_no_request(tmp_path):
    wire = Wire()
    adapter, client = provider(wire, tmp_path)
    async with client:
        assert await adapter.cancel(job("klingai/video-o1-image-to-video", remote_id=GEN_ID, operation="image",
                                        prompt="p", first_frame=url(SEED_IMAGE))) is False
    assert wire.requests == []


# --- HTTP errors ----------------------------------------------------------------------------------


def http_error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={
        "message": message, "path": "/v2/video/generations", "requestId": "5b1c0e7e-0d2b-4c2a-9a36-0c1f",
        "statusCode": status, "timestamp": "2025-12-02T10:00:00.000Z"})


async def submit_error(tmp_path: Path, response: httpx.Response) -> errors.ProviderError:
    wire = Wire(response)
    adapter, client = provider(wire, tmp_path)
    async with client:
        with pytest.raises(errors.ProviderError) as info:
            await adapter.submit(job("klingai/video-o1-image-to-video", operation="image", prompt="p",
                                     first_frame=url(SEED_IMAGE), duration=5))
    assert KEY not in str(info.value) and KEY not in repr(info.value.to_info())
    return info.value


@pytest.mark.parametrize(("status", "message", "cls", "may_have_accepted"), [
    (400, "Body validation error! duration: Invalid enum value. Expected 5 | 10, received 7",
     errors.ProviderRejected, False),
    (401, "This request requires a valid API key. You can create a new API key on the Billing page: "
          "https://aimlapi.com/app/keys", errors.AuthenticationFailed, False),
    (403, "You've run out of credits. Please top up your balance or update your payment method to continue: "
          "https://aimlapi.com/app/billing/", errors.InsufficientCredits, False),
    (403, "You have exhausted the available [plan.rule:api_token] resource limit. Update your payment method "
          "to continue using the service.", errors.InsufficientCredits, False),
    (500, "The model is under maintenance. Please try again later.", errors.ProviderUnavailable, True),
    (502, "Bad gateway", errors.ProviderUnavailable, True),
    (503, "Service unavailable", errors.ProviderUnavailable, False),
    (504, "Generation timeout", errors.ProviderTimeout, True),
])
async def test_http_error_mapping(tmp_path, status, message, cls, may_have_accepted):
    exc = await submit_error(tmp_path, http_error(status, message))
    assert type(exc) is cls
    assert message[:40] in str(exc)
    if cls is not errors.InsufficientCredits and cls is not errors.AuthenticationFailed:
        assert exc.may_have_accepted is may_have_accepted


async def test_429_honours_retry_after(tmp_path):
    exc = await submit_error(tmp_path, http_error(429, "Too Many Requests", {"Retry-After": "7"}))
    assert isinstance(exc, errors.RateLimited)
    assert exc.retry_after == 7.0
    assert exc.may_have_accepted is False


async def test_provider_text_echoing_the_key_is_redacted(tmp_path):
    exc = await submit_error(tmp_path, http_error(400, f"Body validation error! header Bearer {KEY} not allowed"))
    assert "***" in str(exc)


async def test_malformed_json_is_a_transient_error(tmp_path):
    exc = await submit_error(tmp_path, httpx.Response(200, content=b'{"id": "ee188bbb", "status": ',
                                                      headers={"content-type": "application/json"}))
    assert isinstance(exc, errors.ProviderUnavailable)
    assert exc.may_have_accepted is True


async def test_json_without_id_is_a_protocol_error(tmp_path):
    exc = await submit_error(tmp_path, httpx.Response(200, json={"status": "queued"}))
    assert isinstance(exc, errors.ProviderProtocol)


async def test_poll_errors_raise(tmp_path):
    with pytest.raises(errors.RemoteNotFound):
        await poll(tmp_path, http_error(404, "Generation not found"))
    with pytest.raises(errors.ProviderTimeout):
        await poll(tmp_path, http_error(504, "Generation timeout"))
    with pytest.raises(errors.ProviderUnavailable, match="under maintenance"):
        await poll(tmp_path, http_error(500, "The model is under maintenance."))

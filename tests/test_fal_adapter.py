"""fal adapter: exact requests per endpoint and every response/error mapping, on ``httpx.MockTransport``.

The protocol against a live emulator is in ``test_fal_emulator.py``; end to end in ``test_fal_e2e.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.jobs.model import Job
from kling_mcp.providers import _fal_storage as fal_storage
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.fal import FalProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.support import MemoryKV

pytestmark = pytest.mark.anyio

KEY = "0a1b2c3d-key-id:5e6f7a8b9c0d-key-secret"
QUEUE = "https://queue.fal.test"
STORAGE = "https://rest.fal.test"
RID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
REQ = f"{QUEUE}/fal-ai/kling-video/requests/{RID}"
IMG = "https://example.test/a.png"
VID = MediaRef(kind="url", value="https://example.test/v.mp4", media="video", duration_s=5.0)


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


def provider(wire: Wire, tmp_path: Path) -> FalProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    return FalProvider(ProviderContext(name="fal", api_key=KEY, base_url=QUEUE, client=client, kv=MemoryKV(),
                                       data_dir=tmp_path, extra_urls={"KLING_MCP_FAL_STORAGE_URL": STORAGE}))


def url(value: str = IMG) -> MediaRef:
    return MediaRef(kind="url", value=value, media="image")


def job(tier: str = "pro", remote_id: str | None = None, data: dict[str, Any] | None = None, **spec: Any) -> Job:
    return Job(provider="fal", model="fal-ai/kling-video/o1/image-to-video", tier=tier, spec=VideoSpec(**spec),
               remote_id=remote_id, provider_data=data or {})


def queued(endpoint: str = "fal-ai/kling-video/o1/image-to-video", **urls: str) -> httpx.Response:
    given = {"response_url": REQ, "status_url": f"{REQ}/status", "cancel_url": f"{REQ}/cancel"} | urls
    return httpx.Response(200, json={"request_id": RID, "gateway_request_id": RID, "status": "IN_QUEUE",
                                     "queue_position": 0, **given})


SPECS: dict[str, dict[str, Any]] = {
    "image-to-video": {"operation": "image", "prompt": "p", "first_frame": url(), "last_frame": url(IMG + "?2"),
                       "duration": 8},
    "reference-to-video": {"operation": "reference", "prompt": "p", "reference_images": [url()],
                           "aspect_ratio": "1:1", "duration": 3},
    "video-to-video/edit": {"operation": "edit", "prompt": "p", "video": VID, "reference_images": [url()],
                            "keep_original_sound": True},
    "video-to-video/reference": {"operation": "reference", "prompt": "p", "reference_video": VID, "duration": 10,
                                 "keep_original_sound": False},
}
BODIES: dict[str, dict[str, Any]] = {
    "image-to-video": {"prompt": "p", "start_image_url": IMG, "end_image_url": IMG + "?2", "duration": "8"},
    "reference-to-video": {"prompt": "p", "image_urls": [IMG], "aspect_ratio": "1:1", "duration": "3"},
    "video-to-video/edit": {"prompt": "p", "video_url": VID.value, "image_urls": [IMG], "keep_audio": True},
    "video-to-video/reference": {"prompt": "p", "video_url": VID.value, "aspect_ratio": "16:9", "duration": "10",
                                 "keep_audio": False},
}


@pytest.mark.parametrize("tier", ["pro", "standard"])
@pytest.mark.parametrize("kind", list(SPECS))
async def test_each_of_the_eight_endpoints_gets_its_exact_body(tmp_path, tier, kind):
    endpoint = f"fal-ai/kling-video/o1/{'' if tier == 'pro' else 'standard/'}{kind}"
    wire = Wire(queued(endpoint))
    accepted = await provider(wire, tmp_path).submit(job(tier, **SPECS[kind]))
    [request] = wire.requests
    assert request.method == "POST" and str(request.url) == f"{QUEUE}/{endpoint}"
    assert request.headers["authorization"] == f"Key {KEY}"
    assert wire.body() == BODIES[kind]
    assert accepted.remote_id == RID
    assert accepted.data == {"endpoint": endpoint, "status_url": f"{REQ}/status", "response_url": REQ,
                             "cancel_url": f"{REQ}/cancel"}


async def test_the_catalogs_rules_are_checked_before_any_request(tmp_path):
    wire = Wire()
    with pytest.raises(errors.UnsupportedByProvider, match="text-to-video"):
        await provider(wire, tmp_path).submit(job(operation="text", prompt="p"))
    with pytest.raises(errors.UnsupportedByProvider, match="0-4 reference_images"):
        await provider(wire, tmp_path).submit(job(operation="reference", prompt="p", reference_video=VID,
                                                  reference_images=[url()] * 5, duration=5))
    assert wire.requests == []


async def test_answer_urls_on_another_host_are_replaced_so_the_key_goes_nowhere_else(tmp_path):
    wire = Wire(queued(status_url="https://evil.test/steal/status", response_url="http://queue.fal.test/x"))
    accepted = await provider(wire, tmp_path).submit(job(**SPECS["image-to-video"]))
    assert accepted.data["status_url"] == f"{REQ}/status"        # rebuilt: owner/alias only
    assert accepted.data["response_url"] == REQ                  # another scheme is another origin
    assert accepted.data["cancel_url"] == f"{REQ}/cancel"


async def test_poll_uses_the_saved_urls_and_maps_the_queue_states(tmp_path):
    saved = {"status_url": f"{REQ}/status", "response_url": REQ, "cancel_url": f"{REQ}/cancel"}
    video = {"video": {"url": "https://v3b.fal.media/files/x/output.mp4", "content_type": "video/mp4"}}
    wire = Wire(httpx.Response(200, json={"status": "IN_QUEUE", "queue_position": 3}),
                httpx.Response(200, json={"status": "IN_PROGRESS", "logs": []}),
                httpx.Response(200, json={"status": "COMPLETED", "logs": None, "metrics": {}}),
                httpx.Response(200, json=video))
    fal = provider(wire, tmp_path)
    j = job(remote_id=RID, data=saved, **SPECS["image-to-video"])
    assert await fal.poll(j) == Running(queued=True)
    assert await fal.poll(j) == Running()
    done = await fal.poll(j)
    assert isinstance(done, Done) and done.videos[0].url == video["video"]["url"] and done.cost_usd is None
    assert [str(r.url) for r in wire.requests] == [f"{REQ}/status?logs=0"] * 3 + [REQ]
    assert all(r.headers["authorization"] == f"Key {KEY}" for r in wire.requests)


async def test_without_saved_urls_poll_builds_owner_alias_urls_like_fals_client(tmp_path):
    wire = Wire(httpx.Response(200, json={"status": "IN_PROGRESS"}))
    j = job(remote_id=RID, data={"endpoint": "fal-ai/kling-video/o1/standard/video-to-video/edit"},
            **SPECS["image-to-video"])
    await provider(wire, tmp_path).poll(j)
    assert str(wire.requests[0].url) == f"{REQ}/status?logs=0"


async def test_saved_urls_on_another_host_than_the_configured_queue_are_not_used(tmp_path):
    wire = Wire(httpx.Response(200, json={"status": "IN_PROGRESS"}))
    j = job(remote_id=RID, data={"endpoint": "fal-ai/kling-video/o1/image-to-video",
                                 "status_url": f"https://old-proxy.test/fal-ai/kling-video/requests/{RID}/status"},
            **SPECS["image-to-video"])
    await provider(wire, tmp_path).poll(j)                       # e.g. KLING_MCP_FAL_BASE_URL changed since
    assert str(wire.requests[0].url) == f"{REQ}/status?logs=0"


def completed() -> httpx.Response:
    return httpx.Response(200, json={"status": "COMPLETED"})


@pytest.mark.parametrize(("status", "body", "code", "words"), [
    (422, {"detail": [{"loc": ["body", "start_image_url"], "msg": "Image too small", "type": "image_too_small"}]},
     "image_too_small", "start_image_url: Image too small (image_too_small)"),
    (422, {"detail": [{"loc": ["body"], "msg": "flagged by a content checker", "type": "content_policy_violation"}]},
     "content_policy", "flagged by a content checker"),
    (400, {"detail": "Request was cancelled by the user"}, "job_failed", "cancelled by the user"),
])
async def test_a_failure_hidden_behind_completed_becomes_a_failed_job(tmp_path, status, body, code, words):
    wire = Wire(completed(), httpx.Response(status, json=body))
    result = await provider(wire, tmp_path).poll(job(remote_id=RID, **SPECS["image-to-video"]))
    assert isinstance(result, Failed) and result.code == code and words in result.message, result


@pytest.mark.parametrize(("response", "error"), [
    (httpx.Response(500, json={"detail": "runner crashed"}), errors.ProviderUnavailable),
    (httpx.Response(429, headers={"Retry-After": "4"}, json={"detail": "slow down"}), errors.RateLimited),
    (httpx.Response(401, json={"detail": "bad key"}), errors.AuthenticationFailed),
])
async def test_transport_errors_on_the_result_request_raise(tmp_path, response, error):
    wire = Wire(completed(), response)
    with pytest.raises(error) as caught:
        await provider(wire, tmp_path).poll(job(remote_id=RID, **SPECS["image-to-video"]))
    if error is errors.RateLimited:
        assert caught.value.retry_after == 4
    if error is errors.AuthenticationFailed:
        assert "FAL_KEY" in caught.value.hint


@pytest.mark.parametrize(("responses", "expected"), [
    ([httpx.Response(200, json={"status": "FAILED"})], "unknown queue status 'FAILED'"),
    ([completed(), httpx.Response(200, json={"images": []})], "no video.url"),
])
async def test_answers_outside_the_protocol_fail_the_job_instead_of_hanging(tmp_path, responses, expected):
    result = await provider(Wire(*responses), tmp_path).poll(job(remote_id=RID, **SPECS["image-to-video"]))
    assert isinstance(result, Failed) and result.code == "provider_protocol" and expected in result.message


async def test_a_malformed_status_body_is_a_transient_error(tmp_path):
    wire = Wire(httpx.Response(200, content=b'{"status": "IN_PR'))
    with pytest.raises(errors.ProviderUnavailable):
        await provider(wire, tmp_path).poll(job(remote_id=RID, **SPECS["image-to-video"]))


@pytest.mark.parametrize(("status", "response", "stopped"), [
    ({"status": "IN_QUEUE"}, httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"}), True),
    ({"status": "IN_PROGRESS"}, httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"}), False),  # a signal
    ({"status": "COMPLETED"}, httpx.Response(400, json={"status": "ALREADY_COMPLETED"}), False),
])
async def test_cancel_asks_the_status_then_puts_to_the_cancel_url(tmp_path, status, response, stopped):
    wire = Wire(httpx.Response(200, json=status), response)
    j = job(remote_id=RID, data={"status_url": f"{REQ}/status", "cancel_url": f"{REQ}/cancel"},
            **SPECS["image-to-video"])
    assert await provider(wire, tmp_path).cancel(j) is stopped
    assert [(r.method, str(r.url)) for r in wire.requests] == [("GET", f"{REQ}/status?logs=0"),
                                                               ("PUT", f"{REQ}/cancel")]


async def test_cancel_is_sent_even_when_the_status_request_fails_but_not_claimed(tmp_path):
    wire = Wire(httpx.Response(503, json={"detail": "busy"}), httpx.Response(202, json={}))
    j = job(remote_id=RID, data={"cancel_url": f"{REQ}/cancel"}, **SPECS["image-to-video"])
    assert await provider(wire, tmp_path).cancel(j) is False
    assert wire.requests[1].method == "PUT"


async def test_local_files_go_to_the_upload_host_the_token_names(tmp_path, image_file, video_file):
    uploads: list[httpx.Request] = []

    def upload(request: httpx.Request) -> httpx.Response:
        uploads.append(request)
        return httpx.Response(200, json={"access_url": f"https://v3.fal.media/files/u{len(uploads)}"})

    token = {"token": "tok-123", "token_type": "Bearer", "base_url": "https://v3.upload.test",
             "expires_at": "2099-01-01T00:00:00Z"}
    wire = Wire(httpx.Response(200, json=token), upload, upload, queued("fal-ai/kling-video/o1/video-to-video/edit"))
    frame = MediaRef(kind="file", value=str(image_file), media="image", mime_type="image/png")
    clip = MediaRef(kind="file", value=str(video_file), media="video", mime_type="video/mp4", duration_s=4.0)
    await provider(wire, tmp_path).submit(job(operation="edit", prompt="p", video=clip, reference_images=[frame]))
    token_req = wire.requests[0]
    assert str(token_req.url) == f"{STORAGE}/storage/auth/token?storage_type=fal-cdn-v3"
    assert token_req.headers["authorization"] == f"Key {KEY}"
    assert [str(r.url) for r in uploads] == ["https://v3.upload.test/files/upload"] * 2
    assert all(r.headers["authorization"] == "Bearer tok-123" for r in uploads)
    assert [r.headers["x-fal-file-name"] for r in uploads] == ["input.mp4", "frame.png"]
    assert [r.headers["content-type"] for r in uploads] == ["video/mp4", "image/png"]
    assert uploads[0].content == video_file.read_bytes() and uploads[1].content == image_file.read_bytes()
    assert wire.body(3) == {"prompt": "p", "video_url": "https://v3.fal.media/files/u1",
                            "image_urls": ["https://v3.fal.media/files/u2"]}


async def test_an_upload_refusal_says_nothing_was_queued(tmp_path, image_file):
    wire = Wire(httpx.Response(503, json={"detail": "storage down"}))
    frame = MediaRef(kind="file", value=str(image_file), media="image", mime_type="image/png")
    with pytest.raises(errors.ProviderUnavailable, match="fal's storage failed") as caught:
        await provider(wire, tmp_path).submit(job(operation="image", prompt="p", first_frame=frame, duration=5))
    assert caught.value.may_have_accepted is False and len(wire.requests) == 1


async def test_a_file_over_the_threshold_goes_up_in_parts(tmp_path, image_file, monkeypatch):
    monkeypatch.setattr(fal_storage, "MULTIPART_THRESHOLD", 10)
    monkeypatch.setattr(fal_storage, "PART_BYTES", 64)
    data = image_file.read_bytes()
    count = -(-len(data) // 64)
    access = "https://v3.fal.media/files/big.png"
    parts: list[httpx.Request] = []

    def part(request: httpx.Request) -> httpx.Response:
        parts.append(request)
        return httpx.Response(200, headers={"ETag": f'"e{len(parts)}"'})

    wire = Wire(httpx.Response(200, json={"token": "tok", "token_type": "Bearer", "base_url": "https://up.test"}),
                httpx.Response(200, json={"access_url": access, "uploadId": "u-1"}),
                *[part] * count, httpx.Response(200, json={}), queued())
    frame = MediaRef(kind="file", value=str(image_file), media="image", mime_type="image/png")
    await provider(wire, tmp_path).submit(job(operation="image", prompt="p", first_frame=frame, duration=5))
    create = wire.requests[1]
    assert str(create.url) == "https://up.test/files/upload/multipart"
    assert create.headers["x-fal-file-name"] == "frame.png" and create.headers["authorization"] == "Bearer tok"
    assert [str(r.url) for r in parts] == [f"{access}/multipart/u-1/{n}" for n in range(1, count + 1)]
    assert b"".join(r.content for r in parts) == data
    complete = wire.requests[2 + count]
    assert str(complete.url) == f"{access}/multipart/u-1/complete"
    assert json.loads(complete.content) == {"parts": [{"partNumber": n, "etag": f'"e{n}"'} for n in range(1, count + 1)]}
    assert wire.body(3 + count)["start_image_url"] == access


async def test_an_echoed_key_or_either_half_of_it_is_redacted(tmp_path):
    key_id, secret = KEY.split(":")
    wire = Wire(httpx.Response(422, json={"detail": f"key {KEY} / id {key_id} / secret {secret} is odd"}))
    with pytest.raises(errors.ProviderRejected) as caught:
        await provider(wire, tmp_path).submit(job(**SPECS["image-to-video"]))
    assert key_id not in str(caught.value) and secret not in str(caught.value)
    assert caught.value.may_have_accepted is False


async def test_a_non_ascii_file_name_is_sent_percent_encoded(tmp_path, image_file):
    named = tmp_path / "фото кадр.png"
    named.write_bytes(image_file.read_bytes())
    token = {"token": "tok", "token_type": "Bearer", "base_url": "https://up.test"}
    wire = Wire(httpx.Response(200, json=token), httpx.Response(200, json={"access_url": "https://v3.fal.media/f"}),
                queued())
    frame = MediaRef(kind="file", value=str(named), media="image", mime_type="image/png")
    await provider(wire, tmp_path).submit(job(operation="image", prompt="p", first_frame=frame, duration=5))
    assert wire.requests[1].headers["x-fal-file-name"] == "%D1%84%D0%BE%D1%82%D0%BE%20%D0%BA%D0%B0%D0%B4%D1%80.png"

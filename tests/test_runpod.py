"""Runpod adapter: exact request bodies and every status/error mapping, against httpx.MockTransport."""

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
from kling_mcp.providers import create_provider
from kling_mcp.providers.base import Accepted, Done, Failed, ProviderContext, Running
from kling_mcp.providers.runpod import RunpodProvider, describe, inner_message
from kling_mcp.requests import MediaRef, VideoSpec
from tests.support import MemoryKV

KEY = "rp-secret-key-123456"
BASE = PROVIDERS["runpod"].default_base_url
ROOT = f"{BASE}/kling-video-o1-r2v"

pytestmark = pytest.mark.anyio


def url_ref(url: str, media: str = "image") -> MediaRef:
    return MediaRef(kind="url", value=url, media=media)  # type: ignore[arg-type]


def file_ref(path: Path, mime: str, media: str = "image") -> MediaRef:
    return MediaRef(kind="file", value=str(path), media=media, mime_type=mime)  # type: ignore[arg-type]


def make_job(remote_id: str | None = None, **spec: Any) -> Job:
    values: dict[str, Any] = {"operation": "reference", "prompt": "The robot is dancing with the teddy bear",
                              "reference_images": [url_ref("https://example.com/robot.png"),
                                                   url_ref("https://example.com/teddy-bear.png")],
                              "aspect_ratio": "16:9", "duration": 5}
    values.update(spec)
    return Job(provider="runpod", model="kling-video-o1-r2v", spec=VideoSpec(**values), remote_id=remote_id)


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler answering from a queue, recording every request."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer


def provider(tmp_path: Path, recorder: Recorder, key: str | None = KEY) -> RunpodProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    ctx = ProviderContext(name="runpod", api_key=key, base_url=BASE, client=client, kv=MemoryKV(),
                          data_dir=tmp_path)
    adapter = create_provider(ctx)
    assert isinstance(adapter, RunpodProvider)
    adapter.backoff_s = 0.01
    return adapter


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


# --- request bodies ------------------------------------------------------------------------------


async def test_submit_sends_the_seed_example_to_run(tmp_path):
    rec = Recorder(ok({"id": "eaebd6e7-u1", "status": "IN_QUEUE"}))
    accepted = await provider(tmp_path, rec).submit(make_job())
    assert accepted == Accepted(remote_id="eaebd6e7-u1", data={"endpoint": "kling-video-o1-r2v"})
    (request,) = rec.requests
    assert request.method == "POST"
    assert str(request.url) == f"{ROOT}/run"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    # The seed's curl example, plus the two documented flags at the values we always send.
    assert json.loads(request.content) == {"input": {
        "prompt": "The robot is dancing with the teddy bear",
        "images": ["https://example.com/robot.png", "https://example.com/teddy-bear.png"],
        "aspect_ratio": "16:9", "duration": 5, "seed": -1,
        "enable_prompt_expansion": False, "enable_safety_checker": True}}


async def test_submit_maps_every_optional_field(tmp_path):
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    job = make_job(reference_images=[url_ref("https://cdn.test/a.png")],
                   reference_video=url_ref("https://cdn.test/ref.mp4", "video"),
                   negative_prompt="blurry, text", aspect_ratio="9:16", duration=10, seed=42)
    await provider(tmp_path, rec).submit(job)
    body = json.loads(rec.requests[0].content)
    assert list(body) == ["input"]
    assert body["input"] == {"prompt": job.spec.prompt, "images": ["https://cdn.test/a.png"],
                             "video": "https://cdn.test/ref.mp4", "negative_prompt": "blurry, text",
                             "aspect_ratio": "9:16", "duration": 10, "seed": 42,
                             "enable_prompt_expansion": False, "enable_safety_checker": True}


async def test_defaults_when_the_spec_leaves_them_open(tmp_path):
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    await provider(tmp_path, rec).submit(make_job(aspect_ratio=None, duration=3, negative_prompt=""))
    data = json.loads(rec.requests[0].content)["input"]
    assert data["aspect_ratio"] == "16:9" and data["duration"] == 3 and data["seed"] == -1
    assert "negative_prompt" not in data and "video" not in data


async def test_local_files_are_sent_as_data_uris(tmp_path, image_file, video_file):
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    job = make_job(reference_images=[file_ref(image_file, "image/png"), url_ref("https://cdn.test/b.png")],
                   reference_video=file_ref(video_file, "video/mp4", "video"))
    await provider(tmp_path, rec).submit(job)
    data = json.loads(rec.requests[0].content)["input"]
    prefix = "data:image/png;base64,"
    assert data["images"][0].startswith(prefix)
    assert base64.b64decode(data["images"][0][len(prefix):]) == image_file.read_bytes()
    assert data["images"][1] == "https://cdn.test/b.png"
    assert base64.b64decode(data["video"].removeprefix("data:video/mp4;base64,")) == video_file.read_bytes()


async def test_local_files_over_the_run_payload_limit_are_refused_before_sending(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 8_000_000)
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    with pytest.raises(errors.InvalidRequest) as info:
        await provider(tmp_path, rec).submit(make_job(reference_images=[file_ref(big, "image/png")]))
    assert rec.requests == []
    assert "10 MB" in str(info.value) and "runware" in info.value.hint and "URL" in info.value.hint


async def test_unreadable_local_file_names_the_path(tmp_path):
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    missing = tmp_path / "gone.png"
    with pytest.raises(errors.InvalidInputFile, match="gone.png"):
        await provider(tmp_path, rec).submit(make_job(reference_images=[file_ref(missing, "image/png")]))
    assert rec.requests == []


@pytest.mark.parametrize("operation", ["text", "image", "edit"])
async def test_non_reference_jobs_are_unsupported_and_name_who_can(tmp_path, operation):
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    spec: dict[str, Any] = {"operation": operation, "reference_images": []}
    if operation == "image":      # as the service fills it: the output follows the frame
        spec.update(first_frame=url_ref("https://cdn.test/f.png"), aspect_ratio=None)
    if operation == "edit":       # an edit's length and shape follow the input video
        spec.update(video=url_ref("https://cdn.test/v.mp4", "video"), aspect_ratio=None, duration=None)
    with pytest.raises(errors.UnsupportedByProvider) as info:
        await provider(tmp_path, rec).submit(make_job(**spec))
    assert rec.requests == []
    assert "runware" in str(info.value) and "runpod does not offer" in str(info.value)
    if operation == "edit":
        assert "evolink" in str(info.value)


async def test_missing_key_is_not_configured(tmp_path):
    rec = Recorder(ok({"id": "j1", "status": "IN_QUEUE"}))
    with pytest.raises(errors.NotConfigured, match="RUNPOD_API_KEY"):
        await provider(tmp_path, rec, key=None).submit(make_job())
    assert rec.requests == []


# --- submit errors -------------------------------------------------------------------------------


async def test_submit_429_is_retried_with_retry_after_then_accepted(tmp_path):
    rec = Recorder(ok({"error": "rate limited"}, 429, {"Retry-After": "0"}),
                   ok({"error": "rate limited"}, 429), ok({"id": "j9", "status": "IN_QUEUE"}))
    accepted = await provider(tmp_path, rec).submit(make_job())
    assert accepted.remote_id == "j9" and len(rec.requests) == 3


async def test_submit_429_gives_up_after_the_attempts(tmp_path):
    rec = Recorder(ok({"error": "Too many requests"}, 429))
    with pytest.raises(errors.RateLimited) as info:
        await provider(tmp_path, rec).submit(make_job())
    assert len(rec.requests) == RunpodProvider.submit_attempts
    assert info.value.may_have_accepted is False and "Too many requests" in str(info.value)


async def test_submit_429_with_a_long_retry_after_is_not_slept_on(tmp_path):
    rec = Recorder(ok({"error": "slow down"}, 429, {"Retry-After": "120"}))
    with pytest.raises(errors.RateLimited) as info:
        await provider(tmp_path, rec).submit(make_job())
    assert len(rec.requests) == 1 and info.value.retry_after == 120


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_submit_5xx_is_unavailable_and_not_retried(tmp_path, status):
    rec = Recorder(ok({"error": "worker crashed"}, status))
    with pytest.raises(errors.ProviderUnavailable, match="worker crashed"):
        await provider(tmp_path, rec).submit(make_job())
    assert len(rec.requests) == 1


async def test_submit_400_surfaces_the_inner_message(tmp_path):
    body = {"id": "sync-1-u1", "status": "FAILED",
            "error": 'Error submitting task: 400, {"code":400,"message":"duration must be between 3 and 10"}'}
    rec = Recorder(ok(body, 400))
    with pytest.raises(errors.ProviderRejected) as info:
        await provider(tmp_path, rec).submit(make_job())
    assert "duration must be between 3 and 10" in str(info.value)
    assert "Error submitting task" not in str(info.value)
    assert info.value.may_have_accepted is False


async def test_submit_400_about_a_data_uri_says_the_local_file_was_refused(tmp_path, image_file):
    rec = Recorder(ok({"id": "x", "status": "FAILED", "error": "images[0] must be a valid URL"}, 400))
    with pytest.raises(errors.ProviderRejected) as info:
        await provider(tmp_path, rec).submit(make_job(reference_images=[file_ref(image_file, "image/png")]))
    text = str(info.value)
    assert "did not accept a local file" in text and "public http(s) URL" in text and "runware" in text


async def test_submit_answer_failed_with_200_is_a_rejection(tmp_path):
    rec = Recorder(ok({"id": "x", "status": "FAILED", "error": "Invalid parameter: images must be an array"}))
    with pytest.raises(errors.ProviderRejected, match="images must be an array"):
        await provider(tmp_path, rec).submit(make_job())


async def test_submit_401_names_the_env_var_and_never_the_key(tmp_path):
    rec = Recorder(ok({"error": f"Unauthorized: key {KEY} is invalid"}, 401))
    with pytest.raises(errors.AuthenticationFailed) as info:
        await provider(tmp_path, rec).submit(make_job())
    text = str(info.value)
    assert "RUNPOD_API_KEY" in text and KEY not in text and KEY not in repr(info.value.to_info())
    assert info.value.may_have_accepted is False


@pytest.mark.parametrize("status", [402, 403])
async def test_submit_refused_for_credits_or_access_was_not_accepted(tmp_path, status):
    rec = Recorder(ok({"error": "insufficient balance"}, status))
    with pytest.raises(errors.InsufficientCredits) as info:
        await provider(tmp_path, rec).submit(make_job())
    assert info.value.may_have_accepted is False and len(rec.requests) == 1


async def test_submit_404_points_at_the_base_url(tmp_path):
    rec = Recorder(ok({"error": "endpoint not found"}, 404))
    with pytest.raises(errors.ProviderRejected) as info:
        await provider(tmp_path, rec).submit(make_job())
    assert "KLING_MCP_RUNPOD_BASE_URL" in info.value.hint and info.value.may_have_accepted is False


async def test_submit_answer_without_id_is_a_protocol_error(tmp_path):
    rec = Recorder(ok({"status": "IN_QUEUE"}))
    with pytest.raises(errors.ProviderProtocol, match="no id"):
        await provider(tmp_path, rec).submit(make_job())


async def test_submit_connection_refused_was_not_accepted(tmp_path):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.ProviderUnavailable) as info:
        await provider(tmp_path, Recorder(refuse)).submit(make_job())
    assert info.value.may_have_accepted is False


# --- poll ----------------------------------------------------------------------------------------


async def poll_with(tmp_path: Path, body: Any, status: int = 200, job: Job | None = None,
                    headers: dict[str, str] | None = None) -> Any:
    rec = Recorder(ok(body, status, headers) if not isinstance(body, httpx.Response) else body)
    result = await provider(tmp_path, rec).poll(job or make_job(remote_id="job-1"))
    (request,) = rec.requests
    assert request.method == "GET" and str(request.url) == f"{ROOT}/status/job-1"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    return result


async def test_poll_in_queue_is_queued(tmp_path):
    assert await poll_with(tmp_path, {"id": "job-1", "status": "IN_QUEUE"}) == Running(queued=True)


@pytest.mark.parametrize("status", ["IN_PROGRESS", "RUNNING"])
async def test_poll_running_states(tmp_path, status):
    assert await poll_with(tmp_path, {"id": "job-1", "status": status, "delayTime": 30}) == Running()


async def test_poll_completed_is_done_with_the_billed_cost(tmp_path):
    body = {"id": "job-1", "status": "COMPLETED", "delayTime": 30, "executionTime": 75432,
            "output": {"video_url": "https://video.runpod.ai/abc123/output.mp4", "cost": 0.56}}
    assert await poll_with(tmp_path, body) == Done(
        videos=[RemoteVideo(url="https://video.runpod.ai/abc123/output.mp4", remote_key="job-1")], cost_usd=0.56)


async def test_poll_completed_without_cost_leaves_it_unknown(tmp_path):
    result = await poll_with(tmp_path, {"id": "job-1", "status": "COMPLETED",
                                        "output": {"video_url": "https://v.test/o.mp4"}})
    assert isinstance(result, Done) and result.cost_usd is None


@pytest.mark.parametrize("output", [None, {}, {"cost": 0.56}, "https://v.test/o.mp4", {"video_url": 5}])
async def test_poll_completed_without_a_video_url_is_a_protocol_failure(tmp_path, output):
    result = await poll_with(tmp_path, {"id": "job-1", "status": "COMPLETED", "output": output})
    assert isinstance(result, Failed) and result.code == "provider_protocol"
    assert "video_url" in result.message


async def test_poll_failed_surfaces_the_embedded_message(tmp_path):
    error = ('Error submitting task: 400, {"code":400,"message":"The reference image could not be recognised",'
             '"data":null}')
    result = await poll_with(tmp_path, {"id": "job-1", "status": "FAILED", "error": error})
    assert result == Failed(code="job_failed", hint=errors.JobFailed.default_hint,
                            message="runpod reported the job failed: The reference image could not be recognised")


async def test_poll_failed_plain_error_string(tmp_path):
    result = await poll_with(tmp_path, {"id": "job-1", "status": "FAILED", "error": "worker exited with code 1"})
    assert isinstance(result, Failed) and result.code == "job_failed"
    assert result.message.endswith("worker exited with code 1")


async def test_poll_failed_without_error_still_explains(tmp_path):
    result = await poll_with(tmp_path, {"id": "job-1", "status": "FAILED"})
    assert isinstance(result, Failed) and "no error message given" in result.message


async def test_poll_failed_by_the_safety_checker_is_content_policy(tmp_path):
    error = 'Kling error: {"code":1301,"message":"Content flagged by safety checker"}'
    result = await poll_with(tmp_path, {"id": "job-1", "status": "FAILED", "error": error})
    assert isinstance(result, Failed) and result.code == "content_policy"
    assert "Content flagged by safety checker" in result.message and result.hint == errors.ContentPolicy.default_hint


async def test_poll_failed_on_a_data_uri_for_a_local_file_says_so(tmp_path, image_file):
    job = make_job(remote_id="job-1", reference_images=[file_ref(image_file, "image/png")])
    error = 'Error submitting task: 400, {"code":400,"message":"images[0]: base64 data is not supported"}'
    result = await poll_with(tmp_path, {"id": "job-1", "status": "FAILED", "error": error}, job=job)
    assert isinstance(result, Failed) and result.code == "provider_rejected"
    assert "runpod did not accept a local file" in result.message
    assert "base64 data is not supported" in result.message
    assert "public http(s) URL" in result.hint and "provider runware" in result.hint


async def test_poll_failed_mentioning_urls_without_local_files_is_a_plain_failure(tmp_path):
    error = '{"message":"invalid url: https://example.com/robot.png returned 404"}'
    result = await poll_with(tmp_path, {"id": "job-1", "status": "FAILED", "error": error})
    assert isinstance(result, Failed) and result.code == "job_failed"
    assert "returned 404" in result.message


async def test_poll_cancelled(tmp_path):
    result = await poll_with(tmp_path, {"id": "job-1", "status": "CANCELLED"})
    assert isinstance(result, Failed) and result.code == "cancelled" and not result.retryable


async def test_poll_timed_out_is_a_retryable_provider_timeout(tmp_path):
    result = await poll_with(tmp_path, {"id": "job-1", "status": "TIMED_OUT", "executionTime": 600000})
    assert isinstance(result, Failed) and result.code == "provider_timeout" and result.retryable
    assert "TIMED_OUT" in result.message


@pytest.mark.parametrize("body", [{"id": "job-1", "status": "PAUSED"}, {"id": "job-1"},
                                  {"id": "job-1", "status": 3}, ["COMPLETED"], "COMPLETED"])
async def test_poll_unknown_answers_are_protocol_failures_not_hangs(tmp_path, body):
    result = await poll_with(tmp_path, body)
    assert isinstance(result, Failed) and result.code == "provider_protocol" and not result.retryable


async def test_poll_404_is_remote_not_found_explaining_the_ttl(tmp_path):
    with pytest.raises(errors.RemoteNotFound) as info:
        await poll_with(tmp_path, {"error": "request does not exist"}, 404)
    assert "job-1" in str(info.value) and "TTL" in str(info.value) and "30 minutes" in str(info.value)
    assert not info.value.retryable


async def test_poll_429_raises_rate_limited_with_retry_after(tmp_path):
    with pytest.raises(errors.RateLimited) as info:
        await poll_with(tmp_path, {"error": "Too many requests"}, 429, headers={"Retry-After": "7"})
    assert info.value.retry_after == 7 and info.value.retryable


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_poll_5xx_raises_unavailable(tmp_path, status):
    with pytest.raises(errors.ProviderUnavailable) as info:
        await poll_with(tmp_path, {"error": "upstream"}, status)
    assert info.value.retryable


async def test_poll_malformed_json_raises_a_transient_error(tmp_path):
    with pytest.raises(errors.ProviderUnavailable, match="not JSON"):
        await poll_with(tmp_path, httpx.Response(200, text='{"id": "job-1", "sta'))


async def test_poll_401_never_shows_the_key(tmp_path):
    with pytest.raises(errors.AuthenticationFailed) as info:
        await poll_with(tmp_path, {"error": f"bad key Bearer {KEY}"}, 401)
    assert KEY not in str(info.value)


async def test_poll_without_remote_id_is_a_protocol_error(tmp_path):
    rec = Recorder(ok({}))
    with pytest.raises(errors.ProviderProtocol):
        await provider(tmp_path, rec).poll(make_job())
    assert rec.requests == []


# --- cancel --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "expected"), [
    (ok({"id": "job-1", "status": "CANCELLED"}), True),
    (ok({"id": "job-1", "status": "COMPLETED"}), False),
    (ok({"error": "request does not exist"}, 404), False),
])
async def test_cancel(tmp_path, answer, expected):
    rec = Recorder(answer)
    assert await provider(tmp_path, rec).cancel(make_job(remote_id="job-1")) is expected
    (request,) = rec.requests
    assert request.method == "POST" and str(request.url) == f"{ROOT}/cancel/job-1"
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_cancel_without_remote_id_sends_nothing(tmp_path):
    rec = Recorder(ok({"id": "x", "status": "CANCELLED"}))
    assert await provider(tmp_path, rec).cancel(make_job()) is False
    assert rec.requests == []


async def test_cancel_429_raises(tmp_path):
    with pytest.raises(errors.RateLimited):
        await provider(tmp_path, Recorder(ok({"error": "slow"}, 429))).cancel(make_job(remote_id="job-1"))


# --- message extraction --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ('Error submitting task: 400, {"code":400,"message":"bad image"}', "bad image"),
    ('upstream said {"error":{"message":"nested deep"}} then stopped', "nested deep"),
    ('{"detail":[{"msg":"field required"}]}', "field required"),
    ("Invalid parameter: width must be divisible by 64", "Invalid parameter: width must be divisible by 64"),
    ('broken {"message": "unterminated', 'broken {"message": "unterminated'),
])
def test_inner_message(text, expected):
    assert inner_message(text) == expected


def test_describe_prefers_the_inner_message():
    assert describe({"id": "x", "status": "FAILED", "error": 'E: {"message":"m"}'}) == "m"
    assert describe({"message": "top"}) == "top"
    assert describe("plain text") == "plain text"
    assert describe(None) is None

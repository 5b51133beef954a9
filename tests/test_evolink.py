"""EvoLink adapter against ``httpx.MockTransport``: exact requests, and every response and error mapping.

The helpers at the top (``make_job``, ``ctx_for``, ``url_ref``, ``file_ref``) are shared with
``test_evolink_emulator.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.catalog import PROVIDERS
from kling_mcp.catalog.evolink import USD_PER_CREDIT
from kling_mcp.jobs.model import Job
from kling_mcp.media import sha256_file
from kling_mcp.providers import create_provider
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.evolink import EvolinkProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.support import MemoryKV

API = PROVIDERS["evolink"].default_base_url
FILES = PROVIDERS["evolink"].extra_env["KLING_MCP_EVOLINK_FILES_URL"]
KEY = "evo-secret-key-0123456789"
TASK_ID = "task-unified-1757169743-7cvnl5zw"

# The seed page's example (shared/seeds/evolink-kling-o1.txt): its prompt, the documented
# image_urls example, aspect_ratio '16:9' and duration 5.
SEED_PROMPT = (
    "A cinematic transformation video. Start with the model standing in a clean white photography studio, "
    "wearing a simple nude-tone fitting outfit. The camera is steady, 9:16 vertical, natural soft light. The "
    "model makes very subtle natural movements such as blinking or shifting her weight. Then, the environment "
    "begins to slowly transform. Soft pastel mist fades in behind her. Large pink flowers begin to appear and "
    "grow around her in a magical, elegant way. The grass and dreamy atmosphere gradually form. The lighting "
    "becomes more cinematic and soft. Next, her outfit transforms from the simple fitting outfit into the final "
    "fantasy couture outfit shown in the reference: layered pink tulle dress, fluffy textured jacket, mint-green "
    "thigh-high stockings, and heels. The transformation must be smooth, elegant, and high-end. As the scene "
    "completes, the final environment fully resembles the dreamy floral fantasy world from the reference image. "
    "Extremely large pink flowers, lush green textures, soft cloudy sky. The model stands confidently in the "
    "completed scene and makes light natural movements, such as a gentle head turn or slight breathing motion. "
    "Ultra high-end, fashion commercial style. Final 2 seconds: the completed big scene, subtle motion in "
    "flowers like a gentle breeze, and the model holding a graceful pose.")


def url_ref(url: str, media: str = "image", duration_s: float | None = None) -> MediaRef:
    return MediaRef(kind="url", value=url, media=media, duration_s=duration_s)  # type: ignore[arg-type]


def file_ref(path: Path, media: str = "image", duration_s: float | None = None,
             mime: str | None = None) -> MediaRef:
    return MediaRef(kind="file", value=str(path), media=media, duration_s=duration_s,  # type: ignore[arg-type]
                    mime_type=mime or ("video/mp4" if media == "video" else "image/png"),
                    sha256=sha256_file(path))


def make_job(model: str | None = None, **spec: Any) -> Job:
    spec.setdefault("prompt", "A cat walking gracefully")
    spec.setdefault("operation", "edit" if "video" in spec else "image")
    video_spec = VideoSpec(**spec)
    if model is None:
        model = ("kling-o1-image-to-video" if video_spec.operation == "image"
                 else "kling-o1-video-edit-fast" if video_spec.fast else "kling-o1-video-edit")
    return Job(provider="evolink", model=model, tier="pro", spec=video_spec)


def ctx_for(client: httpx.AsyncClient, tmp_path: Path, *, base: str = API, files: str = FILES,
            kv: MemoryKV | None = None, key: str = KEY) -> ProviderContext:
    return ProviderContext(name="evolink", api_key=key, base_url=base, client=client, kv=kv or MemoryKV(),
                           data_dir=tmp_path, extra_urls={"KLING_MCP_EVOLINK_FILES_URL": files})


def task_body(status: str = "pending", progress: int = 0, **extra: Any) -> dict[str, Any]:
    body = {"created": 1757169743, "id": TASK_ID, "model": "kling-o1-image-to-video",
            "object": "video.generation.task", "progress": progress, "status": status,
            "task_info": {"can_cancel": True, "estimated_time": 300, "video_duration": 5}, "type": "video",
            "usage": {"billing_rule": "per_second", "credits_reserved": 40.32, "user_group": "default"}}
    body.update(extra)
    return body


class Wire:
    """A scripted MockTransport: answers per (method, path) and records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: dict[tuple[str, str], list[httpx.Response | Callable[[httpx.Request], httpx.Response]]] = {}
        self.uploads = 0

    def on(self, method: str, path: str, *responses: httpx.Response) -> None:
        self.answers.setdefault((method, path), []).extend(responses)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/v1/files/upload/stream" and not self.answers.get(("POST", request.url.path)):
            self.uploads += 1
            return httpx.Response(200, json={"success": True, "code": 200, "msg": "File uploaded successfully",
                                             "data": {"file_id": f"file_{self.uploads}",
                                                      "file_url": f"https://files.evolink.ai/u/{self.uploads}.png",
                                                      "expires_at": None}})
        if request.url.path == "/v1/videos/generations" and not self.answers.get(("POST", request.url.path)):
            return httpx.Response(200, json=task_body())
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(500, json={"error": {"code": "internal_error", "message": "unscripted",
                                                       "type": "api_error"}})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    def bodies(self, path: str = "/v1/videos/generations") -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
async def client(wire: Wire):
    async with httpx.AsyncClient(transport=httpx.MockTransport(wire.handler)) as c:
        yield c


@pytest.fixture
def kv() -> MemoryKV:
    return MemoryKV()


@pytest.fixture
def provider(client: httpx.AsyncClient, tmp_path: Path, kv: MemoryKV) -> EvolinkProvider:
    return EvolinkProvider(ctx_for(client, tmp_path, kv=kv))


# --- requests -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_seed_example_body_is_sent_exactly(provider: EvolinkProvider, wire: Wire) -> None:
    job = make_job(prompt=SEED_PROMPT, first_frame=url_ref("http://example.com/image1.jpg"),
                   last_frame=url_ref("http://example.com/image2.jpg"), aspect_ratio="16:9", duration=5)
    accepted = await provider.submit(job)
    assert wire.bodies() == [{"model": "kling-o1-image-to-video", "prompt": SEED_PROMPT,
                              "image_urls": ["http://example.com/image1.jpg", "http://example.com/image2.jpg"],
                              "aspect_ratio": "16:9", "duration": 5}]
    request = wire.requests[0]
    assert (request.method, str(request.url)) == ("POST", f"{API}/v1/videos/generations")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert accepted.remote_id == TASK_ID and accepted.cost_usd is None
    assert accepted.data == {"credits_reserved": 40.32}


@pytest.mark.anyio
async def test_first_frame_only_with_provider_defaults(provider: EvolinkProvider, wire: Wire) -> None:
    await provider.submit(make_job(first_frame=url_ref("https://example.com/first-frame.jpg")))
    assert wire.bodies() == [{"model": "kling-o1-image-to-video", "prompt": "A cat walking gracefully",
                              "image_urls": ["https://example.com/first-frame.jpg"]}]


@pytest.mark.anyio
async def test_documented_fast_edit_example(provider: EvolinkProvider, wire: Wire) -> None:
    job = make_job(prompt="Make the video more cinematic", fast=True,
                   video=url_ref("https://example.com/original-video.mp4", "video", 8.0),
                   reference_images=[url_ref("https://example.com/reference.jpg")])
    await provider.submit(job)
    assert wire.bodies() == [{"model": "kling-o1-video-edit-fast", "prompt": "Make the video more cinematic",
                              "video_urls": ["https://example.com/original-video.mp4"],
                              "image_urls": ["https://example.com/reference.jpg"]}]


@pytest.mark.anyio
async def test_edit_with_four_references_and_sound(provider: EvolinkProvider, wire: Wire) -> None:
    refs = [url_ref(f"https://example.com/r{i}.png") for i in range(4)]
    job = make_job(prompt="Turn the sky purple", video=url_ref("https://example.com/v.mov", "video", 3.0),
                   reference_images=refs, keep_original_sound=False)
    await provider.submit(job)
    assert wire.bodies() == [{"model": "kling-o1-video-edit", "prompt": "Turn the sky purple",
                              "video_urls": ["https://example.com/v.mov"],
                              "image_urls": [r.value for r in refs], "keep_original_sound": False}]


@pytest.mark.anyio
async def test_model_follows_the_spec_when_job_model_disagrees(provider: EvolinkProvider, wire: Wire) -> None:
    job = make_job(model="kling-o1-video-edit", fast=True, video=url_ref("https://e.com/v.mp4", "video", 12.0))
    await provider.submit(job)
    assert wire.bodies()[0]["model"] == "kling-o1-video-edit-fast"


@pytest.mark.anyio
async def test_local_inputs_are_uploaded_and_their_links_sent(provider: EvolinkProvider, wire: Wire,
                                                             image_file: Path, image_file2: Path) -> None:
    job = make_job(first_frame=file_ref(image_file), last_frame=file_ref(image_file2), duration=10,
                   aspect_ratio="1:1")
    await provider.submit(job)
    uploads = [r for r in wire.requests if r.url.path == "/api/v1/files/upload/stream"]
    assert [str(r.url) for r in uploads] == [f"{FILES}/api/v1/files/upload/stream"] * 2
    for request, path in zip(uploads, (image_file, image_file2)):
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert f'name="file"; filename="{path.name}"'.encode() in request.content
        assert b"Content-Type: image/png" in request.content
        assert path.read_bytes() in request.content
    assert wire.bodies() == [{"model": "kling-o1-image-to-video", "prompt": "A cat walking gracefully",
                              "image_urls": ["https://files.evolink.ai/u/1.png", "https://files.evolink.ai/u/2.png"],
                              "aspect_ratio": "1:1", "duration": 10}]
    assert wire.requests[-1].url.path == "/v1/videos/generations"


@pytest.mark.anyio
async def test_uploads_are_cached_by_content_until_just_before_72_hours(provider: EvolinkProvider, wire: Wire,
                                                                       kv: MemoryKV, image_file: Path,
                                                                       tmp_path: Path) -> None:
    copy = tmp_path / "same-content.png"
    copy.write_bytes(image_file.read_bytes())
    await provider.submit(make_job(first_frame=file_ref(image_file)))
    await provider.submit(make_job(first_frame=file_ref(copy)))
    assert wire.uploads == 1
    key = f"evolink:upload:{sha256_file(image_file)}"
    expire = kv.expiries[key]
    assert expire is not None and 66 * 3600 <= expire < 72 * 3600
    assert wire.bodies()[0]["image_urls"] == wire.bodies()[1]["image_urls"] == ["https://files.evolink.ai/u/1.png"]
    kv.now += expire + 1
    await provider.submit(make_job(first_frame=file_ref(image_file)))
    assert wire.uploads == 2
    assert wire.bodies()[2]["image_urls"] == ["https://files.evolink.ai/u/2.png"]


@pytest.mark.anyio
async def test_upload_cache_honours_an_earlier_expires_at(provider: EvolinkProvider, wire: Wire, kv: MemoryKV,
                                                         image_file: Path) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 5 * 3600))
    wire.on("POST", "/api/v1/files/upload/stream", httpx.Response(200, json={
        "success": True, "code": 200, "msg": "File uploaded successfully",
        "data": {"file_id": "file_abc123", "file_url": "https://files.evolink.ai/photos/photo.png",
                 "expires_at": soon}}))
    await provider.submit(make_job(first_frame=file_ref(image_file)))
    expire = kv.expiries[f"evolink:upload:{sha256_file(image_file)}"]
    assert expire is not None and 2 * 3600 < expire < 3.1 * 3600


@pytest.mark.anyio
async def test_cancel_sends_nothing(provider: EvolinkProvider, wire: Wire) -> None:
    job = make_job(first_frame=url_ref("https://e.com/a.png")).updated(remote_id=TASK_ID)
    assert await provider.cancel(job) is False
    assert wire.requests == []


@pytest.mark.anyio
async def test_registered_under_its_name(client: httpx.AsyncClient, tmp_path: Path) -> None:
    adapter = create_provider(ctx_for(client, tmp_path))
    assert isinstance(adapter, EvolinkProvider) and adapter.name == "evolink"


@pytest.mark.anyio
async def test_defaults_to_the_public_roots(client: httpx.AsyncClient, tmp_path: Path) -> None:
    ctx = ProviderContext(name="evolink", api_key=KEY, base_url=None, client=client, kv=MemoryKV(),
                          data_dir=tmp_path)
    adapter = EvolinkProvider(ctx)
    assert (adapter.api, adapter.files_api) == (API, FILES)


# --- refusals before any request ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("fast", "seconds", "expect"), [
    (False, 2.0, "3-10 s"), (False, 12.5, "use fast=true"), (True, 4.0, "use fast=false"),
    (True, 25.0, "6-20 s"), (True, 1.0, "use a clip of 3-20 s")])
async def test_out_of_range_input_video_is_refused_before_any_request(
        provider: EvolinkProvider, wire: Wire, video_file: Path, fast: bool, seconds: float, expect: str) -> None:
    job = make_job(fast=fast, video=file_ref(video_file, "video", seconds))
    with pytest.raises(errors.InvalidRequest) as info:
        await provider.submit(job)
    assert expect in str(info.value) and f"{seconds:g} s" in str(info.value)
    assert wire.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(("changes", "expect"), [
    ({"prompt": "x" * 5001}, "5001 characters"),
    ({"duration": 7}, "use 5 or 10 s"),
    ({"aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"seed": 3}, "does not accept seed"),
    ({"negative_prompt": "blur"}, "does not accept negative_prompt"),
    ({"num_videos": 2}, "num_videos 2"),
    ({"first_frame": None, "last_frame": url_ref("https://e.com/l.png")}, "needs a first_frame"),
])
async def test_requests_evolink_would_refuse_are_refused_first(provider: EvolinkProvider, wire: Wire,
                                                              changes: dict[str, Any], expect: str) -> None:
    spec: dict[str, Any] = {"first_frame": url_ref("https://e.com/f.png")}
    spec.update(changes)
    with pytest.raises(errors.InvalidRequest) as info:
        await provider.submit(make_job(**spec))
    assert expect in str(info.value)
    assert wire.requests == []


@pytest.mark.anyio
async def test_text_to_video_is_unsupported_and_names_other_providers(provider: EvolinkProvider,
                                                                     wire: Wire) -> None:
    with pytest.raises(errors.UnsupportedByProvider) as info:
        await provider.submit(make_job(model="kling-o1-image-to-video", operation="text"))
    named = info.value.hint.split("Use one of: ", 1)[1].split(";", 1)[0].split(", ")
    assert "runware" in named and "local" in named and "evolink" not in named
    assert wire.requests == []


# --- polling ------------------------------------------------------------------------------------


def _submitted() -> Job:
    return make_job(first_frame=url_ref("https://e.com/f.png")).updated(remote_id=TASK_ID)


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "progress", "queued"), [("pending", 0, True), ("processing", 37, False),
                                                            ("processing", 100, False)])
async def test_running_states_report_progress(provider: EvolinkProvider, wire: Wire, status: str,
                                              progress: int, queued: bool) -> None:
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task_body(status, progress)))
    result = await provider.poll(_submitted())
    assert result == Running(progress=float(progress), queued=queued)
    assert str(wire.requests[0].url) == f"{API}/v1/tasks/{TASK_ID}"
    assert wire.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.anyio
async def test_completed_returns_every_result_with_cost(provider: EvolinkProvider, wire: Wire) -> None:
    urls = ["https://cdn.evolink.ai/out/a.mp4", "https://cdn.evolink.ai/out/b.mp4"]
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task_body("completed", 100, results=urls)))
    result = await provider.poll(_submitted())
    assert isinstance(result, Done)
    assert [(v.url, v.remote_key) for v in result.videos] == [(urls[0], f"{TASK_ID}-0"), (urls[1], f"{TASK_ID}-1")]
    assert result.cost_usd == round(40.32 * USD_PER_CREDIT, 4) == pytest.approx(0.56, abs=0.001)


@pytest.mark.anyio
async def test_completed_without_credits_has_no_cost(provider: EvolinkProvider, wire: Wire) -> None:
    body = task_body("completed", 100, results=["https://cdn.evolink.ai/x.mp4"])
    del body["usage"]
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=body))
    result = await provider.poll(_submitted())
    assert isinstance(result, Done) and result.cost_usd is None and len(result.videos) == 1


@pytest.mark.anyio
async def test_completed_without_results_is_a_protocol_failure(provider: EvolinkProvider, wire: Wire) -> None:
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task_body("completed", 100, results=[])))
    result = await provider.poll(_submitted())
    assert isinstance(result, Failed) and result.code == "provider_protocol"


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "retryable"), [
    ("content_policy_violation", False), ("invalid_parameters", False), ("image_processing_error", False),
    ("image_dimension_mismatch", False), ("request_cancelled", False), ("generation_failed_no_content", False),
    ("service_error", True), ("generation_timeout", True), ("resource_exhausted", True),
    ("quota_exceeded", False), ("service_unavailable", True), ("resource_not_found", False),
    ("unknown_error", False), ("model_unavailable", False)])
async def test_failed_task_maps_every_error_code(provider: EvolinkProvider, wire: Wire, code: str,
                                                 retryable: bool) -> None:
    message = f"Task failed because of {code}."
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task_body(
        "failed", 0, error={"code": code, "message": message, "type": "task_error"})))
    result = await provider.poll(_submitted())
    assert isinstance(result, Failed)
    assert (result.code, result.message, result.retryable) == (code, message, retryable)
    assert result.hint


@pytest.mark.anyio
async def test_failed_without_error_object(provider: EvolinkProvider, wire: Wire) -> None:
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task_body("failed", 0)))
    result = await provider.poll(_submitted())
    assert isinstance(result, Failed) and result.code == "unknown_error"


@pytest.mark.anyio
async def test_unknown_status_is_a_protocol_failure_not_a_hang(provider: EvolinkProvider, wire: Wire) -> None:
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task_body("cancelling", 10)))
    result = await provider.poll(_submitted())
    assert isinstance(result, Failed) and result.code == "provider_protocol" and "'cancelling'" in result.message


@pytest.mark.anyio
@pytest.mark.parametrize("body", [[1, 2], {"status": "processing", "progress": "half"}])
async def test_task_answer_in_another_shape_raises_protocol_error(provider: EvolinkProvider, wire: Wire,
                                                                 body: Any) -> None:
    wire.on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=body))
    with pytest.raises(errors.ProviderProtocol):
        await provider.poll(_submitted())


# --- HTTP errors --------------------------------------------------------------------------------


def _err(status: int, code: Any, message: str, type_: str, param: str | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": message, "type": type_}
    if param:
        error["param"] = param
    return httpx.Response(status, json={"error": error}, headers=headers)


SUBMIT_ERRORS = [
    (_err(400, "invalid_request", "Invalid request parameters", "invalid_request_error", "image_urls"),
     errors.ProviderRejected, ["invalid_request", "param image_urls"]),
    (_err(401, "unauthorized", "Invalid or expired token", "authentication_error"),
     errors.AuthenticationFailed, ["unauthorized", "EVOLINK_API_KEY"]),
    (_err(402, "insufficient_quota", "Insufficient quota. Please top up your account.", "insufficient_quota"),
     errors.InsufficientCredits, ["insufficient_quota"]),
    (_err(403, "model_access_denied", "Token does not have access to model: kling-o1-image-to-video",
          "invalid_request_error"), errors.AuthenticationFailed, ["model_access_denied", "EVOLINK_API_KEY"]),
    (_err(404, "not_found", "Not found", "not_found_error"), errors.ProviderRejected,
     ["KLING_MCP_EVOLINK_BASE_URL"]),
    (_err(429, "rate_limit_exceeded", "Too many requests, please try again later", "rate_limit_error",
          headers={"Retry-After": "7"}), errors.RateLimited, ["rate_limit_exceeded"]),
    (_err(500, "internal_error", "Internal server error", "api_error"), errors.ProviderUnavailable,
     ["internal_error"]),
    (_err(503, "service_unavailable", "No available channel for the requested model", "api_error"),
     errors.ProviderUnavailable, ["No available channel"]),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("response", "cls", "texts"), SUBMIT_ERRORS)
async def test_submit_http_errors(provider: EvolinkProvider, wire: Wire, response: httpx.Response,
                                  cls: type[errors.ProviderError], texts: list[str]) -> None:
    wire.on("POST", "/v1/videos/generations", response)
    with pytest.raises(errors.ProviderError) as info:
        await provider.submit(make_job(first_frame=url_ref("https://e.com/f.png")))
    assert type(info.value) is cls
    for text in texts:
        assert text in str(info.value)
    if cls is errors.RateLimited:
        assert info.value.retry_after == 7.0
    if response.status_code in (429, 503, 404):
        assert info.value.may_have_accepted is False
    if response.status_code == 500:  # an error after the request was sent: it may have been queued
        assert info.value.may_have_accepted is True


POLL_ERRORS = [
    (_err(400, "invalid_task_id", "Invalid task ID format, must start with 'task-unified-'",
          "invalid_request_error", "task_id"), errors.ProviderRejected, ["invalid_task_id", "param task_id"]),
    (_err(401, 401, "Invalid or expired token", "authentication_error"), errors.AuthenticationFailed,
     ["code 401", "EVOLINK_API_KEY"]),
    (_err(404, "task_not_found", "Task not found or expired", "not_found_error", "task_id"),
     errors.RemoteNotFound, ["task_not_found"]),
    (_err(429, 429, "Rate limit exceeded", "evo_api_error"), errors.RateLimited, ["Rate limit exceeded"]),
    (_err(502, 502, "Upstream service error", "upstream_error"), errors.ProviderUnavailable, ["Upstream"]),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("response", "cls", "texts"), POLL_ERRORS)
async def test_poll_http_errors(provider: EvolinkProvider, wire: Wire, response: httpx.Response,
                                cls: type[errors.ProviderError], texts: list[str]) -> None:
    wire.on("GET", f"/v1/tasks/{TASK_ID}", response)
    with pytest.raises(errors.ProviderError) as info:
        await provider.poll(_submitted())
    assert type(info.value) is cls
    for text in texts:
        assert text in str(info.value)


@pytest.mark.anyio
async def test_malformed_submit_answer_may_have_been_accepted(provider: EvolinkProvider, wire: Wire) -> None:
    wire.on("POST", "/v1/videos/generations", httpx.Response(200, text='{"id": "task-unified-'))
    with pytest.raises(errors.ProviderUnavailable) as info:
        await provider.submit(make_job(first_frame=url_ref("https://e.com/f.png")))
    assert info.value.may_have_accepted is True


@pytest.mark.anyio
async def test_submit_answer_without_id_is_a_protocol_error(provider: EvolinkProvider, wire: Wire) -> None:
    wire.on("POST", "/v1/videos/generations", httpx.Response(200, json={"status": "pending"}))
    with pytest.raises(errors.ProviderProtocol):
        await provider.submit(make_job(first_frame=url_ref("https://e.com/f.png")))


@pytest.mark.anyio
async def test_api_key_never_appears_in_errors(provider: EvolinkProvider, wire: Wire) -> None:
    wire.on("POST", "/v1/videos/generations",
            _err(401, "unauthorized", f"Invalid token {KEY} (Bearer {KEY})", "authentication_error"))
    with pytest.raises(errors.AuthenticationFailed) as info:
        await provider.submit(make_job(first_frame=url_ref("https://e.com/f.png")))
    text = str(info.value) + repr(info.value.to_info())
    assert KEY not in text and "***" in text


# --- upload failures ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("response", "cls", "texts"), [
    (httpx.Response(401, json={"success": False, "code": 401, "msg": "Invalid or expired token"}),
     errors.AuthenticationFailed, ["Invalid or expired token", "EVOLINK_API_KEY"]),
    (httpx.Response(200, json={"success": False, "code": 403, "msg": "File quota exceeded (100 files)"}),
     errors.InsufficientCredits, ["quota exceeded"]),
    (httpx.Response(413, json={"success": False, "code": 413, "msg": "File too large"}),
     errors.ProviderRejected, ["File too large"]),
    (httpx.Response(404, text="not found"), errors.ProviderRejected, ["KLING_MCP_EVOLINK_FILES_URL"]),
    (httpx.Response(503, text="<html>busy</html>"), errors.ProviderUnavailable, ["HTTP 503"]),
    (httpx.Response(200, json={"success": True, "code": 200, "msg": "ok", "data": {}}),
     errors.ProviderProtocol, ["without a file_url"]),
])
async def test_upload_failures_stop_before_submit(provider: EvolinkProvider, wire: Wire, image_file: Path,
                                                  response: httpx.Response, cls: type[errors.ProviderError],
                                                  texts: list[str]) -> None:
    wire.on("POST", "/api/v1/files/upload/stream", response)
    with pytest.raises(errors.ProviderError) as info:
        await provider.submit(make_job(first_frame=file_ref(image_file)))
    assert type(info.value) is cls
    assert "uploading frame.png" in str(info.value)
    for text in texts:
        assert text in str(info.value)
    assert info.value.may_have_accepted is False
    assert [r.url.path for r in wire.requests] == ["/api/v1/files/upload/stream"]

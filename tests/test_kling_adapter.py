"""Kling official API adapter against ``httpx.MockTransport``: the token, the exact request of every
mode, every task status, every documented error code, and what is refused before any request.

The helpers at the top (``make_job``, ``ctx_for``, ``file_ref``, ``url_ref``, ``claims_of``) are
shared with ``test_kling_emulator.py`` and ``test_kling_e2e.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.catalog import PROVIDERS
from kling_mcp.jobs.model import Job
from kling_mcp.media import probe, sha256_file
from kling_mcp.providers import create_provider
from kling_mcp.providers import kling as adapter_module
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.kling import KlingProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.emulators._media import png_bytes
from tests.support import MemoryKV

pytestmark = pytest.mark.anyio

API = PROVIDERS["kling"].default_base_url
AK = "ak-kling-0123456789abcdef"
SK = "sk-kling-fedcba9876543210"
BEARER = "gw-kling-key-5566778899"
TASK_ID = "781223413453799426"


# --- shared helpers -----------------------------------------------------------------------------------


def ctx_for(client: httpx.AsyncClient, tmp_path: Path, *, base: str | None = API, access: str | None = AK,
            secret: str | None = SK, bearer: str | None = None) -> ProviderContext:
    creds = {k: v for k, v in (("KLING_ACCESS_KEY", access), ("KLING_SECRET_KEY", secret),
                               ("KLING_API_KEY", bearer)) if v}
    return ProviderContext(name="kling", api_key=None, base_url=base, client=client, kv=MemoryKV(),
                           data_dir=tmp_path, credentials=creds)


def url_ref(url: str, media: str = "image", duration_s: float | None = None, width: int | None = None,
            height: int | None = None) -> MediaRef:
    return MediaRef(kind="url", value=url, media=media, duration_s=duration_s,  # type: ignore[arg-type]
                    width=width, height=height)


def file_ref(path: Path) -> MediaRef:
    info = probe(path)
    return MediaRef(kind="file", value=str(path), media=info.kind, mime_type=info.mime_type,
                    sha256=sha256_file(path), width=info.width, height=info.height, duration_s=info.duration_s)


def image_at(tmp_path: Path, name: str, size: tuple[int, int] = (640, 360), fmt: str = "PNG",
             color: tuple[int, int, int] = (30, 120, 200)) -> Path:
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def make_job(tier: str = "pro", **spec: Any) -> Job:
    spec.setdefault("prompt", "A paper boat drifts down a rainy street")
    if "operation" not in spec:
        spec["operation"] = ("edit" if "video" in spec else "image" if "first_frame" in spec
                             else "reference" if ("reference_images" in spec or "reference_video" in spec)
                             else "text")
    return Job(provider="kling", model="kling-video-o1", tier=tier, spec=VideoSpec(**spec))


def claims_of(authorization: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """(header, claims, signature valid with SK) of a ``Bearer <jwt>`` header."""
    token = authorization.removeprefix("Bearer ")
    head, body, sig = token.split(".")

    def dec(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    expected = hmac.new(SK.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return json.loads(dec(head)), json.loads(dec(body)), hmac.compare_digest(expected, dec(sig))


def envelope(data: Any = None, code: int = 0, message: str = "SUCCEED") -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": "req-1"}
    if data is not None:
        body["data"] = data
    return body


def task(status: str = "submitted", **extra: Any) -> dict[str, Any]:
    return {"task_id": TASK_ID, "task_status": status, "task_info": {"external_task_id": "x"},
            "created_at": 1722769557708, "updated_at": 1722769557708, **extra}


class Wire:
    """A scripted MockTransport: answers in order per (method, path prefix); records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response | Callable[[httpx.Request], httpx.Response]] = []

    def then(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers.extend(answers)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            return httpx.Response(200, json=envelope(task()))
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
async def client(wire: Wire):
    async with httpx.AsyncClient(transport=httpx.MockTransport(wire.handler)) as http:
        yield http


@pytest.fixture
def adapter(client: httpx.AsyncClient, tmp_path: Path) -> KlingProvider:
    return KlingProvider(ctx_for(client, tmp_path))


# --- the token ---------------------------------------------------------------------------------------


async def test_every_request_carries_a_fresh_hs256_jwt_signed_with_the_secret_key(client, wire, tmp_path):
    clock = [1_800_000_000.0]
    provider = KlingProvider(ctx_for(client, tmp_path), clock=lambda: clock[0])
    job = make_job()
    accepted = await provider.submit(job)
    clock[0] += 3600  # an hour later: a token made at submit would have expired
    await provider.poll(job.updated(remote_id=accepted.remote_id))
    stamps = []
    for request in wire.requests:
        header, claims, valid = claims_of(request.headers["authorization"])
        assert valid and header == {"alg": "HS256", "typ": "JWT"}
        assert claims["iss"] == AK and claims["exp"] - claims["nbf"] == 1805
        stamps.append(claims["nbf"] + 5)
        assert SK not in request.headers["authorization"]
    assert stamps == [1_800_000_000, 1_800_003_600]


async def test_a_gateway_key_is_sent_as_the_bearer_token(client, wire, tmp_path):
    provider = KlingProvider(ctx_for(client, tmp_path, access=None, secret=None, bearer=BEARER))
    await provider.submit(make_job())
    assert wire.requests[0].headers["authorization"] == f"Bearer {BEARER}"


async def test_the_access_key_pair_wins_over_a_gateway_key(client, wire, tmp_path):
    await KlingProvider(ctx_for(client, tmp_path, bearer=BEARER)).submit(make_job())
    assert claims_of(wire.requests[0].headers["authorization"])[2]


async def test_registered_by_name(client, tmp_path):
    assert isinstance(create_provider(ctx_for(client, tmp_path)), KlingProvider)


# --- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "mode"), [("standard", "std"), ("pro", "pro")])
async def test_text_to_video_body(adapter, wire, tier, mode):
    job = make_job(tier=tier, duration=10, aspect_ratio="9:16")
    accepted = await adapter.submit(job)
    assert accepted.remote_id == TASK_ID
    request = wire.requests[0]
    assert (request.method, str(request.url)) == ("POST", f"{API}/v1/videos/omni-video")
    assert wire.bodies() == [{"model_name": "kling-video-o1", "prompt": job.spec.prompt, "mode": mode,
                              "duration": "10", "aspect_ratio": "9:16", "external_task_id": job.job_id}]


async def test_first_and_end_frames_are_sent_as_bare_base64(adapter, wire, tmp_path):
    first, last = image_at(tmp_path, "a.png"), image_at(tmp_path, "b.jpg", fmt="JPEG", color=(200, 10, 10))
    job = make_job(first_frame=file_ref(first), last_frame=file_ref(last), duration=5)
    await adapter.submit(job)
    [body] = wire.bodies()
    assert body["image_list"] == [
        {"image_url": base64.b64encode(first.read_bytes()).decode(), "type": "first_frame"},
        {"image_url": base64.b64encode(last.read_bytes()).decode(), "type": "end_frame"}]
    assert "aspect_ratio" not in body and body["duration"] == "5" and body["mode"] == "pro"


async def test_reference_images_mix_urls_and_local_files_converted_to_png(adapter, wire, tmp_path):
    webp = image_at(tmp_path, "c.webp", fmt="WEBP")
    job = make_job(tier="standard", reference_images=[url_ref("https://cdn.test/a.png"), file_ref(webp)],
                   duration=7, aspect_ratio="1:1")
    await adapter.submit(job)
    [body] = wire.bodies()
    first, second = body["image_list"]
    assert first == {"image_url": "https://cdn.test/a.png"}
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(second["image_url"]))) as converted:
        assert (converted.format, converted.size) == ("PNG", (640, 360))
    assert (body["duration"], body["aspect_ratio"], body["mode"]) == ("7", "1:1", "std")
    assert "video_list" not in body


async def test_a_reference_video_is_a_feature_reference(adapter, wire):
    video = url_ref("https://cdn.test/clip.mp4", "video", 6.0, 1280, 720)
    job = make_job(reference_video=video, reference_images=[url_ref("https://cdn.test/a.png")],
                   keep_original_sound=True, duration=5, aspect_ratio="16:9")
    await adapter.submit(job)
    [body] = wire.bodies()
    assert body["video_list"] == [{"video_url": "https://cdn.test/clip.mp4", "refer_type": "feature",
                                   "keep_original_sound": "yes"}]
    assert body["image_list"] == [{"image_url": "https://cdn.test/a.png"}]


async def test_an_edit_is_a_base_video_without_duration_or_aspect(adapter, wire):
    job = make_job(tier="standard", video=url_ref("https://cdn.test/in.mp4", "video", 4.2, 1280, 720),
                   reference_images=[url_ref("https://cdn.test/crown.png")])
    await adapter.submit(job)
    [body] = wire.bodies()
    assert body == {"model_name": "kling-video-o1", "prompt": job.spec.prompt, "mode": "std",
                    "image_list": [{"image_url": "https://cdn.test/crown.png"}],
                    "video_list": [{"video_url": "https://cdn.test/in.mp4", "refer_type": "base",
                                    "keep_original_sound": "no"}],
                    "external_task_id": job.job_id}


# --- refused before any request ----------------------------------------------------------------------


async def test_a_local_video_is_refused_before_any_request(adapter, wire, video_file):
    job = make_job(video=MediaRef(kind="file", value=str(video_file), media="video", duration_s=4.0))
    with pytest.raises(errors.UnsupportedByProvider, match="only as URLs"):
        await adapter.submit(job)
    assert wire.requests == []


@pytest.mark.parametrize(("spec", "said"), [
    ({"first_frame": url_ref("https://cdn.test/s.png", width=200, height=400)}, "at least 300 px"),
    ({"first_frame": url_ref("https://cdn.test/s.png", width=1600, height=400)}, "accepts 0.40-2.50"),
    ({"reference_video": url_ref("https://cdn.test/r.mp4", "video", 12.0, 1280, 720)}, "3-10 s"),
    ({"reference_video": url_ref("https://cdn.test/r.mp4", "video", 5.0, 640, 360)}, "720-2160 px"),
    ({"reference_video": MediaRef(kind="url", value="https://cdn.test/r.webm", media="video", duration_s=5.0,
                                  mime_type="video/webm")}, "MP4/MOV"),
    ({"video": MediaRef(kind="url", value="https://cdn.test/r.mp4", media="video", duration_s=5.0, fps=15.0)},
     "24-60 fps"),
    ({"video": url_ref("https://cdn.test/r.mp4", "video", 11.0)}, "3-10 s"),
    ({"prompt": "x" * 2501}, "at most 2500"),
    ({"duration": 7}, "use 5 or 10 s"),
])
async def test_documented_rules_are_refused_before_any_request(adapter, wire, spec, said):
    with pytest.raises(errors.UnsupportedByProvider, match=said):
        await adapter.submit(make_job(**spec))
    assert wire.requests == []


async def test_an_oversized_local_image_is_refused_before_any_request(adapter, wire, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(400, 400))
    ref = file_ref(big)
    big.write_bytes(big.read_bytes() + b"\0" * (10 * 1024 * 1024))  # PNG ignores trailing bytes
    with pytest.raises(errors.UnsupportedByProvider, match="up to 10 MB"):
        await adapter.submit(make_job(first_frame=ref))
    assert wire.requests == []


async def test_an_image_too_big_once_converted_to_png_is_refused_before_any_request(adapter, wire, tmp_path,
                                                                                   monkeypatch):
    webp = image_at(tmp_path, "c.webp", fmt="WEBP")
    monkeypatch.setattr(adapter_module, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(errors.InvalidInputFile, match="as PNG; kling accepts images up to"):
        await adapter.submit(make_job(first_frame=file_ref(webp)))
    assert wire.requests == []


# --- polling -----------------------------------------------------------------------------------------


async def test_statuses_map_to_running_then_done_with_the_billed_units(adapter, wire):
    job = make_job().updated(remote_id=TASK_ID)
    video = {"id": "v1", "url": "https://cdn.kling.test/out.mp4", "watermark_url": "", "duration": "5"}
    wire.then(httpx.Response(200, json=envelope(task("submitted"))),
              httpx.Response(200, json=envelope(task("processing"))),
              httpx.Response(200, json=envelope(task("succeed", task_result={"videos": [video]},
                                                     final_unit_deduction="4"))))
    assert await adapter.poll(job) == Running(queued=True)
    assert await adapter.poll(job) == Running()
    done = await adapter.poll(job)
    assert isinstance(done, Done) and done.cost_usd == pytest.approx(4 * 0.14) and done.cost_basis == "inferred"
    assert [(v.url, v.remote_key) for v in done.videos] == [("https://cdn.kling.test/out.mp4", "v1")]
    assert [str(r.url) for r in wire.requests] == [f"{API}/v1/videos/omni-video/{TASK_ID}"] * 3


@pytest.mark.parametrize(("message", "code", "retryable"), [
    ("Failure to pass the risk control system", "content_policy", False),
    ("Internal generation error", "job_failed", True),
])
async def test_a_failed_task_is_data(adapter, wire, message, code, retryable):
    wire.then(httpx.Response(200, json=envelope(task("failed", task_status_msg=message))))
    failed = await adapter.poll(make_job().updated(remote_id=TASK_ID))
    assert isinstance(failed, Failed) and (failed.code, failed.retryable) == (code, retryable)
    assert message in failed.message and "does not bill" in failed.hint


@pytest.mark.parametrize("data", [task("paused"), task("succeed", task_result={"videos": []})])
async def test_unknown_status_or_missing_video_is_a_protocol_failure(adapter, wire, data):
    wire.then(httpx.Response(200, json=envelope(data)))
    failed = await adapter.poll(make_job().updated(remote_id=TASK_ID))
    assert isinstance(failed, Failed) and failed.code == "provider_protocol"


async def test_a_job_without_a_saved_task_id_is_polled_by_its_external_id(adapter, wire):
    job = make_job()
    wire.then(httpx.Response(200, json=envelope(task("processing"))))
    assert await adapter.poll(job) == Running()
    assert str(wire.requests[0].url) == f"{API}/v1/videos/omni-video/{job.job_id}"


async def test_an_unknown_external_id_is_waited_for_then_fails_as_interrupted(adapter, wire, monkeypatch):
    not_found = httpx.Response(404, json=envelope(code=1203, message="task not found"))
    job = make_job()
    wire.then(not_found, not_found)
    assert await adapter.poll(job) == Running(queued=True, confirmed=False)   # it may still be arriving
    monkeypatch.setattr(adapter_module, "NOT_FOUND_GRACE_S", 0.0)
    failed = await adapter.poll(job)
    assert isinstance(failed, Failed) and failed.code == "interrupted" and "nothing was billed" in failed.message


async def test_an_acknowledged_task_that_is_gone_is_an_error(adapter, wire):
    wire.then(httpx.Response(404, json=envelope(code=1203, message="task not found")))
    with pytest.raises(errors.RemoteNotFound):
        await adapter.poll(make_job().updated(remote_id=TASK_ID))


# --- error codes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "cls", "words"), [
    (401, 1000, errors.AuthenticationFailed, "KLING_ACCESS_KEY"),
    (401, 1003, errors.AuthenticationFailed, "clock"),
    (401, 1004, errors.AuthenticationFailed, "clock"),
    (429, 1100, errors.AuthenticationFailed, "account"),
    (429, 1101, errors.InsufficientCredits, "arrears"),
    (429, 1102, errors.InsufficientCredits, "resource pack"),
    (403, 1103, errors.AuthenticationFailed, "permissions"),
    (400, 1201, errors.ProviderRejected, "parameter"),
    (404, 1203, errors.ProviderRejected, "KLING_MCP_KLING_BASE_URL"),
    (400, 1300, errors.ProviderRejected, "parameter"),
    (400, 1301, errors.ContentPolicy, "Rephrase"),
    (429, 1302, errors.RateLimited, "Wait"),
    (429, 1303, errors.RateLimited, "concurrency"),
    (429, 1304, errors.AuthenticationFailed, "whitelist"),
    (500, 5000, errors.ProviderUnavailable, ""),
    (503, 5001, errors.ProviderUnavailable, ""),
])
async def test_submit_refusals_map_to_the_vocabulary_and_were_not_accepted(adapter, wire, status, code, cls, words):
    wire.then(httpx.Response(status, json=envelope(code=code, message=f"kling says {code}")))
    with pytest.raises(cls) as caught:
        await adapter.submit(make_job())
    exc = caught.value
    assert type(exc) is cls and exc.may_have_accepted is False
    assert f"code {code}" in exc.message and f"kling says {code}" in exc.message
    assert words in exc.hint
    if cls is errors.RateLimited:
        assert exc.retry_after == 1.0


async def test_retry_after_is_honoured_and_5002_leaves_the_submit_open(adapter, wire):
    wire.then(httpx.Response(429, headers={"Retry-After": "7"}, json=envelope(code=1302, message="too fast")),
              httpx.Response(504, json=envelope(code=5002, message="backlog")))
    with pytest.raises(errors.RateLimited) as limited:
        await adapter.submit(make_job())
    assert limited.value.retry_after == 7.0
    with pytest.raises(errors.ProviderTimeout) as timed_out:
        await adapter.submit(make_job())
    assert timed_out.value.may_have_accepted is True


async def test_an_error_code_inside_http_200_is_still_an_error(adapter, wire):
    wire.then(httpx.Response(200, json=envelope(code=1102, message="pack depleted")))
    with pytest.raises(errors.InsufficientCredits):
        await adapter.submit(make_job())


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text='{"code":0,"data":{"task_id":'),
    httpx.Response(200, json={"task_id": TASK_ID}),
    httpx.Response(200, json=envelope({"task_status": "submitted"})),
])
async def test_an_unreadable_submit_answer_may_have_been_accepted(adapter, wire, answer):
    wire.then(answer)
    with pytest.raises(errors.ProviderError) as caught:
        await adapter.submit(make_job())
    assert caught.value.may_have_accepted is True


async def test_keys_and_the_token_never_appear_in_an_error(adapter, wire):
    def echo(request: httpx.Request) -> httpx.Response:
        said = f"bad token {request.headers['authorization']} for {AK} signed with {SK}"
        return httpx.Response(401, json=envelope(code=1000, message=said))

    wire.then(echo, echo)
    for call in (adapter.submit(make_job()), adapter.poll(make_job().updated(remote_id=TASK_ID))):
        with pytest.raises(errors.AuthenticationFailed) as caught:
            await call
        token = wire.requests[-1].headers["authorization"].removeprefix("Bearer ")
        for secret in (AK, SK, token):
            assert secret not in str(caught.value) and secret not in caught.value.hint


async def test_cancel_is_not_offered(adapter, wire):
    assert await adapter.cancel(make_job().updated(remote_id=TASK_ID)) is False
    assert wire.requests == []

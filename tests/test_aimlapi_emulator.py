"""The AI/ML API adapter against the loopback emulator: protocol, validation and fault knobs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.jobs.model import Job
from kling_mcp.providers import _http
from kling_mcp.providers.aimlapi import AimlapiProvider, describe_error_body
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.requests import MediaRef, VideoSpec
from tests.emulators._media import mp4_bytes
from tests.emulators._server import serve
from tests.emulators.aimlapi import API_KEY, AimlState, create_app
from tests.support import MemoryKV

SEED = {"model": "klingai/video-o1-image-to-video", "prompt": "Mona Lisa puts on glasses with her hands.",
        "image_url": "https://raw.githubusercontent.com/aimlapi/api-docs/main/reference-files/mona_lisa_extended.jpg",
        "duration": "5"}

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[str, AimlState]]:
    state = AimlState()
    with serve(create_app(state)) as base:
        yield base, state


@pytest.fixture
def emu(emulator) -> tuple[str, AimlState]:
    base, state = emulator
    fresh = AimlState()
    for name in state.__dataclass_fields__:      # reset every knob and record between tests
        setattr(state, name, getattr(fresh, name))
    return base, state


def adapter(base: str, client: httpx.AsyncClient, key: str = API_KEY) -> AimlapiProvider:
    return AimlapiProvider(ProviderContext(name="aimlapi", api_key=key, base_url=base, client=client, kv=MemoryKV(),
                                           data_dir=Path(".")))


def ref(value: str, media: str = "image", mime: str | None = None) -> MediaRef:
    kind = "url" if value.startswith("http") else "file"
    return MediaRef(kind=kind, value=value, media=media, mime_type=mime)  # type: ignore[arg-type]


def image_job(**extra: Any) -> Job:
    spec = VideoSpec(operation="image", prompt=SEED["prompt"], first_frame=ref(SEED["image_url"]), duration=5)
    return Job(provider="aimlapi", model="klingai/video-o1-image-to-video",
               spec=spec.model_copy(update=extra))


async def run_to_end(provider: AimlapiProvider, job: Job, limit: int = 10) -> tuple[list[Any], Any]:
    accepted = await provider.submit(job)
    job = job.model_copy(update={"remote_id": accepted.remote_id})
    seen: list[Any] = []
    for _ in range(limit):
        result = await provider.poll(job)
        seen.append(result)
        if not isinstance(result, Running):
            return seen, result
    raise AssertionError(f"no terminal state after {limit} polls: {seen}")


def variant_jobs(image: Path, video: Path) -> list[tuple[Job, int]]:
    img, vid = ref(str(image), "image", "image/png"), ref(str(video), "video", "video/mp4")
    return [
        (image_job(last_frame=img), 5),
        (Job(provider="aimlapi", model="klingai/video-o1-reference-to-video",
             spec=VideoSpec(operation="reference", prompt="two friends wave", reference_images=[img] * 7,
                            aspect_ratio="9:16", duration=10)), 10),
        (Job(provider="aimlapi", model="klingai/video-o1-video-to-video-reference",
             spec=VideoSpec(operation="reference", prompt="same motion, on the moon", reference_video=vid,
                            reference_images=[img] * 4, aspect_ratio="1:1", duration=5, keep_original_sound=True)), 5),
        (Job(provider="aimlapi", model="klingai/video-o1-video-to-video-edit",
             spec=VideoSpec(operation="edit", prompt="make it snow", video=vid, reference_images=[img],
                            keep_original_sound=False)), 5),
    ]


async def test_every_variant_end_to_end_at_the_wire(emu, image_file, video_file):
    base, state = emu
    async with httpx.AsyncClient() as client:
        provider = adapter(base, client)
        for job, seconds in variant_jobs(image_file, video_file):
            seen, done = await run_to_end(provider, job)
            assert seen[:-1] == [Running(queued=False)]       # submit answered queued; 1st poll: generating
            assert isinstance(done, Done), done
            assert done.cost_usd == pytest.approx(seconds * 0.112)
            [video] = done.videos
            assert video.remote_key.endswith(":" + job.model)
            download = await client.get(video.url)
            assert download.status_code == 200 and download.content == mp4_bytes(state.video_seconds)
    assert [b["model"] for b in state.bodies()] == [j.model for j, _ in variant_jobs(image_file, video_file)]
    polls = [r for r in state.requests if r.method == "GET" and r.path == "/v2/video/generations"]
    assert polls and all("%3Aklingai%2Fvideo-o1-" in r.raw_query for r in polls)
    assert all(r.authorization == f"Bearer {API_KEY}" for r in state.requests)


async def test_waiting_is_reported_as_queued(emu):
    base, state = emu
    state.steps = ["queued", "waiting", "generating"]
    async with httpx.AsyncClient() as client:
        seen, done = await run_to_end(adapter(base, client), image_job())
    assert seen == [Running(queued=True), Running(queued=False), done]
    assert isinstance(done, Done)


async def test_no_usage_means_no_billed_cost(emu):
    base, state = emu
    state.include_usage = False
    async with httpx.AsyncClient() as client:
        _, done = await run_to_end(adapter(base, client), image_job())
    assert isinstance(done, Done) and done.cost_usd is None


@pytest.mark.parametrize(("outcome", "code", "text"), [
    ("error_named", "content_policy", "flagged by the content moderation system"),
    ("error_detail", "face_detection_error", "body.image_url: Could not detect face in the image"),
    ("unknown_status", "provider_protocol", "unknown status 'paused'"),
])
async def test_job_failures(emu, outcome, code, text):
    base, state = emu
    state.outcomes = [outcome]
    async with httpx.AsyncClient() as client:
        _, failed = await run_to_end(adapter(base, client), image_job())
    assert isinstance(failed, Failed)
    assert failed.code == code
    assert text in failed.message


@pytest.mark.parametrize(("status", "on", "cls"), [
    (403, "submit", errors.InsufficientCredits),
    (429, "submit", errors.RateLimited),
    (500, "submit", errors.ProviderUnavailable),
    (503, "poll", errors.ProviderUnavailable),
    (504, "poll", errors.ProviderTimeout),
    (429, "poll", errors.RateLimited),
])
async def test_http_faults(emu, status, on, cls):
    base, state = emu
    state.fail_next(status, on=on, retry_after="3" if status == 429 else None)
    async with httpx.AsyncClient() as client:
        provider = adapter(base, client)
        with pytest.raises(cls) as info:
            await run_to_end(provider, image_job())
        assert state.faults == []
        if status == 429:
            assert info.value.retry_after == 3.0
        if status == 500:
            assert "under maintenance" in str(info.value)
        if on == "poll":     # the generation survives a failed poll; the next poll carries on
            job = image_job().model_copy(update={"remote_id": next(iter(state.generations))})
            assert isinstance(await provider.poll(job), Running)


async def test_wrong_key_is_401_and_never_echoed(emu):
    base, state = emu
    async with httpx.AsyncClient() as client:
        with pytest.raises(errors.AuthenticationFailed) as info:
            await adapter(base, client, key="aiml-wrong-key-123456").submit(image_job())
    assert "aiml-wrong-key-123456" not in str(info.value)
    assert "AIML_API_KEY" in info.value.hint
    assert state.generations == {}


async def test_malformed_json_and_unknown_id(emu):
    base, state = emu
    async with httpx.AsyncClient() as client:
        provider = adapter(base, client)
        accepted = await provider.submit(image_job())
        state.malformed_next = 1
        job = image_job().model_copy(update={"remote_id": accepted.remote_id})
        with pytest.raises(errors.ProviderUnavailable, match="not JSON"):
            await provider.poll(job)
        with pytest.raises(errors.RemoteNotFound):
            await provider.poll(job.model_copy(update={"remote_id": "0000:klingai/video-o1-image-to-video"}))


async def test_body_validation_reaches_the_caller(emu):
    base, state = emu
    async with httpx.AsyncClient() as client:
        # The adapter refuses this itself (validation.require); send it raw to see the emulator's answer.
        body = {"model": "klingai/video-o1-image-to-video", "prompt": "x" * 2501,
                "image_url": "https://e.com/f.png"}
        with pytest.raises(errors.ProviderRejected, match="Body validation error!.*at most 2500"):
            await _http.request(client, "aimlapi", "POST", base + "/v2/video/generations", submit=True, json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"}, describe=describe_error_body)


# --- the emulator's own contract ------------------------------------------------------------------


async def test_seed_example_accepted_with_string_or_integer_duration(emu):
    base, state = emu
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient() as client:
        for path, body in (("/v2/video/generations", SEED), ("/v1/video/generations", {**SEED, "duration": 10})):
            answer = await client.post(base + path, json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            payload = answer.json()
            assert payload["status"] == "queued"
            assert payload["id"].endswith(":klingai/video-o1-image-to-video")
            assert len(payload["id"].split(":", 1)[0]) == 36


@pytest.mark.parametrize(("body", "hint"), [
    ({k: v for k, v in SEED.items() if k != "image_url"}, "image_url: Required"),
    ({**SEED, "duration": 7}, "Expected 5 | 10, received 7"),
    ({**SEED, "duration": "7"}, "Expected 5 | 10"),
    ({**SEED, "image_url": "data:image/png;base64,@@@"}, "image_url: Invalid url"),
    ({**SEED, "model": "klingai/video-o1-text-to-video"}, "model: Invalid enum value"),
    ({"model": "klingai/video-o1-reference-to-video", "prompt": "p", "image_list": ["https://a.b/c.png"] * 8},
     "between 1 and 7"),
    ({"model": "klingai/video-o1-reference-to-video", "prompt": "p", "image_list": []}, "between 1 and 7"),
    ({"model": "klingai/video-o1-reference-to-video", "prompt": "p", "aspect_ratio": "4:3"},
     "Expected '16:9' | '9:16' | '1:1', received '4:3'"),
    ({"model": "klingai/video-o1-video-to-video-reference", "prompt": "p", "video_url": "https://a.b/v.mp4",
      "image_list": ["https://a.b/c.png"] * 5}, "between 1 and 4"),
    ({"model": "klingai/video-o1-video-to-video-edit", "prompt": "p", "video_url": "https://a.b/v.mp4",
      "duration": 5}, "Unrecognized key(s) in object: 'duration'"),
    ({"model": "klingai/video-o1-video-to-video-edit", "prompt": "p", "video_url": "https://a.b/v.mp4",
      "keep_audio": "yes"}, "keep_audio: Expected boolean"),
    ({"model": "klingai/video-o1-video-to-video-edit", "prompt": "p"}, "video_url: Required"),
])
async def test_validation_errors_have_the_documented_shape(emu, body, hint):
    base, state = emu
    async with httpx.AsyncClient() as client:
        answer = await client.post(base + "/v2/video/generations", json=body,
                                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 400
    payload = answer.json()
    assert set(payload) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert payload["statusCode"] == 400 and payload["path"] == "/v2/video/generations"
    assert payload["message"].startswith("Body validation error! ")
    assert hint in payload["message"]
    assert state.generations == {}


async def test_download_faults(emu):
    base, state = emu
    async with httpx.AsyncClient() as client:
        _, done = await run_to_end(adapter(base, client), image_job())
        url = done.videos[0].url
        state.files.truncate_next = 1
        with pytest.raises(httpx.HTTPError):
            async with client.stream("GET", url) as response:
                await response.aread()
        state.files.expire_all = True
        assert (await client.get(url)).status_code == 403
        state.files.expire_all = False
        assert (await client.get(url)).content == mp4_bytes(state.video_seconds)
        state.result_ttl_s = -1.0
        _, done = await run_to_end(adapter(base, client), image_job())
        assert (await client.get(done.videos[0].url)).status_code == 403


def test_standalone_prints_ready_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.aimlapi", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        base = line.split(" ", 1)[1]
        answer = httpx.post(base + "/v2/video/generations", json=SEED, headers={"Authorization": f"Bearer {API_KEY}"})
        assert answer.status_code == 200 and answer.json()["status"] == "queued"
        assert httpx.get(base + "/v2/video/generations", params={"generation_id": "x"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""EvoLink adapter against the loopback emulator (real HTTP): uploads, task lifecycle, validation, faults."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from kling_mcp import errors
from kling_mcp.catalog.evolink import USD_PER_CREDIT
from kling_mcp.jobs.model import Job
from kling_mcp.providers.base import Done, Failed, Running
from kling_mcp.providers.evolink import EvolinkProvider
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.evolink import EDIT_CREDITS_PER_S, EvolinkState, create_app
from tests.support import MemoryKV
from tests.test_evolink import KEY, ctx_for, file_ref, make_job, url_ref

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Starlette]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(server: tuple[str, Starlette]) -> tuple[str, EvolinkState]:
    base, app = server
    app.state.emulator = EvolinkState(api_key=KEY)      # a fresh state per test, one server per module
    return base, app.state.emulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def kv() -> MemoryKV:
    return MemoryKV()


@pytest.fixture
def adapter(emu, http, tmp_path, kv) -> EvolinkProvider:
    base, _ = emu
    return EvolinkProvider(ctx_for(http, tmp_path, base=base, files=base, kv=kv))


def probe(data: bytes) -> tuple[float, int, int]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return container.duration / 1_000_000, stream.width, stream.height


async def run_to_end(adapter: EvolinkProvider, job: Job) -> tuple[Job, list[Any]]:
    accepted = await adapter.submit(job)
    job = job.updated(remote_id=accepted.remote_id, provider_data=accepted.data)
    seen = [await adapter.poll(job) for _ in range(3)]
    return job, seen


async def test_image_to_video_uploads_frames_and_finishes(adapter, emu, http, image_file, image_file2) -> None:
    base, state = emu
    job = make_job(first_frame=file_ref(image_file), last_frame=file_ref(image_file2), aspect_ratio="9:16",
                   duration=5)
    job, (first, second, third) = await run_to_end(adapter, job)
    assert job.remote_id and job.remote_id.startswith("task-unified-")
    assert job.provider_data == {"credits_reserved": 40.32}
    uploads = state.of("upload")
    assert [u.form["file"]["filename"] for u in uploads] == ["frame.png", "frame2.png"]
    assert all(u.form["file"]["content_type"] == "image/png" for u in uploads)
    [submit] = state.of("submit")
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    assert submit.json["image_urls"] == [f"{base}/files/{name}" for name in state.uploads]
    assert first == Running(progress=0.0, queued=True)
    assert second == Running(progress=50.0, queued=False)
    assert isinstance(third, Done) and third.cost_usd == pytest.approx(40.32 * USD_PER_CREDIT, abs=1e-4)
    [video] = third.videos
    assert video.remote_key == f"{job.remote_id}-0"
    response = await http.get(video.url)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    seconds, width, height = probe(response.content)
    assert seconds == pytest.approx(5.0, abs=0.1) and (width, height) == (180, 320)


async def test_edit_uploads_the_video_and_bills_its_length(adapter, emu, video_file, image_file) -> None:
    _, state = emu
    job = make_job(prompt="Make it snow", video=file_ref(video_file, "video", 4.0),
                   reference_images=[file_ref(image_file)], keep_original_sound=True)
    job, (_, _, done) = await run_to_end(adapter, job)
    [submit] = state.of("submit")
    assert set(submit.json) == {"model", "prompt", "video_urls", "image_urls", "keep_original_sound"}
    assert submit.json["model"] == "kling-o1-video-edit" and submit.json["keep_original_sound"] is True
    assert [u.form["file"]["content_type"] for u in state.of("upload")] == ["video/mp4", "image/png"]
    credits = round(EDIT_CREDITS_PER_S * 4, 4)
    assert job.provider_data == {"credits_reserved": credits}
    assert isinstance(done, Done) and done.cost_usd == pytest.approx(0.176 * 4, abs=0.001)


async def test_fast_edit_of_a_hosted_url(adapter, emu) -> None:
    base, state = emu
    url = state.host(mp4_bytes(8.0, 160, 90), base)
    job, (_, _, done) = await run_to_end(adapter, make_job(fast=True, video=url_ref(url, "video", 8.0)))
    assert state.of("upload") == []
    assert state.of("submit")[0].json == {"model": "kling-o1-video-edit-fast", "prompt": "A cat walking gracefully",
                                          "video_urls": [url]}
    assert isinstance(done, Done) and done.cost_usd == pytest.approx(0.176 * 8, abs=0.001)


@pytest.mark.parametrize(("fast", "seconds", "expect"), [(False, 2.0, "3-10"), (True, 4.0, "6-20"),
                                                         (False, 12.0, "3-10")])
async def test_emulator_probes_and_refuses_out_of_range_videos(adapter, emu, fast, seconds, expect) -> None:
    base, state = emu
    url = state.host(mp4_bytes(seconds, 160, 90), base)
    with pytest.raises(errors.ProviderRejected) as info:   # the spec does not know the length here
        await adapter.submit(make_job(fast=fast, video=url_ref(url, "video", None)))
    assert f"Video duration must be between {expect} seconds" in str(info.value)
    assert "invalid_parameters" in str(info.value) and state.tasks == {}


async def test_adapter_refuses_known_out_of_range_videos_without_any_request(adapter, emu, video_file) -> None:
    _, state = emu
    with pytest.raises(errors.InvalidRequest):
        await adapter.submit(make_job(fast=True, video=file_ref(video_file, "video", 4.0)))
    assert state.requests == []


async def test_same_content_is_uploaded_once_then_again_after_expiry(adapter, emu, kv, image_file) -> None:
    _, state = emu
    state.upload_ttl_s = 3 * 3600          # the files API's expires_at is honoured (minus a margin)
    for _ in range(2):
        await adapter.submit(make_job(first_frame=file_ref(image_file)))
    assert state.count("upload") == 1 and len(state.tasks) == 2
    [expire] = kv.expiries.values()
    assert expire is not None and 0.9 * 3600 < expire <= 3600
    kv.now += 3601
    await adapter.submit(make_job(first_frame=file_ref(image_file)))
    assert state.count("upload") == 2
    first, _, third = (r.json["image_urls"][0] for r in state.of("submit"))
    assert first != third


async def test_stale_upload_links_are_refused_by_the_service(adapter, emu, image_file) -> None:
    base, state = emu
    state.files.expire_all = True
    with pytest.raises(errors.ProviderRejected) as info:
        await adapter.submit(make_job(first_frame=file_ref(image_file)))
    assert "expired or missing" in str(info.value)


@pytest.mark.parametrize("code", ["content_policy_violation", "invalid_parameters", "quota_exceeded",
                                  "generation_timeout", "service_unavailable", "resource_exhausted"])
async def test_task_failures(adapter, emu, code) -> None:
    _, state = emu
    state.task_errors.append(code)
    _, (_, _, failed) = await run_to_end(adapter, make_job(first_frame=url_ref("https://example.com/f.png")))
    assert isinstance(failed, Failed) and failed.code == code and failed.message
    assert failed.retryable == (code in ("generation_timeout", "service_unavailable", "resource_exhausted"))


async def test_unknown_status(adapter, emu) -> None:
    _, state = emu
    state.odd_statuses.append("archived")
    _, (_, _, failed) = await run_to_end(adapter, make_job(first_frame=url_ref("https://example.com/f.png")))
    assert isinstance(failed, Failed) and failed.code == "provider_protocol"


@pytest.mark.parametrize(("route", "status", "cls"), [
    ("submit", 429, errors.RateLimited), ("submit", 500, errors.ProviderUnavailable),
    ("submit", 503, errors.ProviderUnavailable), ("submit", 402, errors.InsufficientCredits),
    ("submit", 403, errors.AuthenticationFailed), ("submit", 401, errors.AuthenticationFailed),
    ("poll", 429, errors.RateLimited), ("poll", 502, errors.ProviderUnavailable),
    ("upload", 500, errors.ProviderUnavailable), ("upload", 401, errors.AuthenticationFailed)])
async def test_http_faults(adapter, emu, image_file, route, status, cls) -> None:
    _, state = emu
    job = make_job(first_frame=file_ref(image_file) if route == "upload" else url_ref("https://e.com/f.png"))
    if route == "poll":
        job = job.updated(remote_id=(await adapter.submit(job)).remote_id)
    state.fail(route, status, retry_after="3" if status == 429 else None)
    with pytest.raises(errors.ProviderError) as info:
        await (adapter.poll(job) if route == "poll" else adapter.submit(job))
    assert type(info.value) is cls
    if status == 429:
        assert info.value.retry_after == 3.0
    if status == 403:
        assert "kling-o1-image-to-video" in str(info.value) and "EVOLINK_API_KEY" in str(info.value)
    if route == "upload":
        assert state.count("submit") == 0
    assert KEY not in str(info.value)


async def test_wrong_key_is_refused(emu, http, tmp_path) -> None:
    base, state = emu
    adapter = EvolinkProvider(ctx_for(http, tmp_path, base=base, files=base, key="evo-wrong-key-000"))
    with pytest.raises(errors.AuthenticationFailed):
        await adapter.submit(make_job(first_frame=url_ref("https://e.com/f.png")))


async def test_upload_refused_inside_http_200(adapter, emu, image_file) -> None:
    _, state = emu
    state.upload_refusals.append((403, "Upload quota exhausted: 100/100 files"))
    with pytest.raises(errors.InsufficientCredits) as info:
        await adapter.submit(make_job(first_frame=file_ref(image_file)))
    assert "100/100 files" in str(info.value) and info.value.may_have_accepted is False
    assert state.count("submit") == 0


async def test_malformed_answers(adapter, emu) -> None:
    _, state = emu
    state.malformed["submit"] = 1
    job = make_job(first_frame=url_ref("https://e.com/f.png"))
    with pytest.raises(errors.ProviderUnavailable) as info:
        await adapter.submit(job)
    assert info.value.may_have_accepted is True and len(state.tasks) == 1   # accepted despite the garbled answer
    job = job.updated(remote_id=next(iter(state.tasks)))
    state.malformed["poll"] = 1
    with pytest.raises(errors.ProviderUnavailable):
        await adapter.poll(job)
    assert await adapter.poll(job) == Running(progress=0.0, queued=True)


@pytest.mark.parametrize(("remote_id", "cls", "text"), [
    ("12345", errors.ProviderRejected, "invalid_task_id"),
    ("task-unified-1-unknown0", errors.RemoteNotFound, "task_not_found")])
async def test_poll_unknown_ids(adapter, remote_id, cls, text) -> None:
    job = make_job(first_frame=url_ref("https://e.com/f.png")).updated(remote_id=remote_id)
    with pytest.raises(cls) as info:
        await adapter.poll(job)
    assert text in str(info.value)


async def test_result_links_expire_and_truncate(adapter, emu, http) -> None:
    _, state = emu
    _, (_, _, done) = await run_to_end(adapter, make_job(first_frame=url_ref("https://e.com/f.png")))
    assert isinstance(done, Done)
    url = done.videos[0].url
    state.files.truncate_next = 1
    with pytest.raises(httpx.HTTPError):
        await http.get(url)
    assert (await http.get(url, headers={"Range": "bytes=100-"})).status_code == 206
    state.files.expire_all = True
    assert (await http.get(url)).status_code == 403


BAD_BODIES = [
    ({"prompt": "x", "image_urls": ["https://e.com/a.png"]}, "model"),
    ({"model": "kling-o1-image-to-video", "image_urls": ["https://e.com/a.png"]}, "prompt"),
    ({"model": "kling-o1-image-to-video", "prompt": "x" * 5001, "image_urls": ["https://e.com/a.png"]}, "prompt"),
    ({"model": "kling-o1-image-to-video", "prompt": "x", "image_urls": []}, "image_urls"),
    ({"model": "kling-o1-image-to-video", "prompt": "x", "image_urls": ["https://e.com/a.png"] * 3}, "image_urls"),
    ({"model": "kling-o1-image-to-video", "prompt": "x", "image_urls": ["https://e.com/a.png"], "duration": "5"},
     "duration"),
    ({"model": "kling-o1-image-to-video", "prompt": "x", "image_urls": ["https://e.com/a.png"], "duration": 6},
     "duration"),
    ({"model": "kling-o1-image-to-video", "prompt": "x", "image_urls": ["https://e.com/a.png"],
      "aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"model": "kling-o1-image-to-video", "prompt": "x", "image_urls": ["https://e.com/a.png"],
      "callback_url": "http://e.com/hook"}, "callback_url"),
    ({"model": "kling-o1-video-edit", "prompt": "x", "video_urls": ["https://e.com/a.mp4"] * 2}, "video_urls"),
    ({"model": "kling-o1-video-edit", "prompt": "x"}, "video_urls"),
    ({"model": "kling-o1-video-edit", "prompt": "x", "video_urls": ["https://e.com/a.mp4"],
      "image_urls": ["https://e.com/a.png"] * 5}, "image_urls"),
    ({"model": "kling-o1-video-edit-fast", "prompt": "x", "video_urls": ["https://e.com/a.mp4"],
      "keep_original_sound": "yes"}, "keep_original_sound"),
    ({"model": "kling-o1-video-edit", "prompt": "x", "video_urls": ["https://e.com/a.mp4"], "duration": 5},
     "duration"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_emulator_validates_the_documented_schemas(emu, http, body, param) -> None:
    base, state = emu
    response = await http.post(f"{base}/v1/videos/generations", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert state.tasks == {}


async def test_emulator_upload_routes(emu, http) -> None:
    base, state = emu
    auth = {"Authorization": f"Bearer {KEY}"}
    png = png_bytes(8, 8)
    b64 = await http.post(f"{base}/api/v1/files/upload/base64", headers=auth, json={
        "base64_data": "data:image/png;base64," + base64.b64encode(png).decode(), "file_name": "dot.png"})
    data = b64.json()["data"]
    assert b64.json()["success"] is True and data["mime_type"] == "image/png" and data["file_size"] == len(png)
    assert (await http.get(data["file_url"])).content == png
    copied = await http.post(f"{base}/api/v1/files/upload/url", headers=auth, json={"file_url": data["file_url"]})
    assert (await http.get(copied.json()["data"]["file_url"])).content == png
    refused = await http.post(f"{base}/api/v1/files/upload/stream", files={"file": ("a.txt", b"hi", "text/plain")},
                              headers=auth)
    assert refused.status_code == 400 and refused.json()["success"] is False
    anonymous = await http.post(f"{base}/api/v1/files/upload/stream", files={"file": ("a.png", png, "image/png")})
    assert anonymous.status_code == 401
    assert state.count("upload") == 4


def test_standalone_emulator_prints_ready() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.evolink", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        answer = httpx.get(line.split()[1] + "/v1/tasks/nope", headers={"Authorization": "Bearer k"}, timeout=5)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_task_id"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

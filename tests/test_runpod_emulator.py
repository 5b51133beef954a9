"""Runpod adapter against the loopback emulator: protocol, cancel, faults; and the emulator itself."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from kling_mcp import errors
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.runpod import RunpodProvider
from tests.emulators._server import serve
from tests.emulators.runpod import EMBEDDED_ERROR, RunpodState, create_app
from tests.support import MemoryKV
from tests.test_runpod import file_ref, make_job

KEY = "rp-test-key"


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[Starlette, str]]:
    """One server per module (start-up and shut-down cost); each test gets a fresh state."""
    app = create_app()
    with serve(app) as url:
        yield app, url


@pytest.fixture
def state(emulator: tuple[Starlette, str]) -> RunpodState:
    fresh = RunpodState(api_key=KEY)
    emulator[0].state.emulator = fresh
    return fresh


@pytest.fixture
def base(emulator: tuple[Starlette, str], state: RunpodState) -> str:
    return emulator[1]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


@pytest.fixture
def rp(base: str, client: httpx.AsyncClient, tmp_path: Path) -> RunpodProvider:
    ctx = ProviderContext(name="runpod", api_key=KEY, base_url=f"{base}/v2", client=client, kv=MemoryKV(),
                          data_dir=tmp_path)
    adapter = RunpodProvider(ctx)
    adapter.backoff_s = 0.01
    return adapter


async def run_to_end(rp: RunpodProvider, job: Any, limit: int = 10) -> tuple[list[Any], Any]:
    accepted = await rp.submit(job)
    job = job.updated(remote_id=accepted.remote_id)
    seen = []
    for _ in range(limit):
        result = await rp.poll(job)
        seen.append(result)
        if not isinstance(result, Running):
            return seen, job
    raise AssertionError(f"job never finished: {seen}")


# --- protocol ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_job_runs_to_a_real_video_billed_at_the_published_rate(rp, state, client):
    job = make_job(duration=5)
    seen, job = await run_to_end(rp, job)
    assert seen[:-1] == [Running()]
    done = seen[-1]
    assert isinstance(done, Done) and done.cost_usd == pytest.approx(0.56)
    (video,) = done.videos
    assert video.remote_key == job.remote_id and video.url
    response = await client.get(video.url)
    assert response.status_code == 200 and response.content[4:8] == b"ftyp"
    (submission,) = state.submissions()
    assert submission.path == "/v2/kling-video-o1-r2v/run"
    assert submission.body == rp.build_body(job)
    assert submission.headers["authorization"] == f"Bearer {KEY}"
    assert len(state.polls_of(job.remote_id)) == 2


@pytest.mark.anyio
async def test_every_running_state_is_reported(rp, state):
    state.progression = ("IN_QUEUE", "IN_QUEUE", "IN_PROGRESS", "RUNNING", "COMPLETED")
    seen, _ = await run_to_end(rp, make_job(duration=3))
    assert seen[:-1] == [Running(queued=True), Running(), Running()]
    assert isinstance(seen[-1], Done) and seen[-1].cost_usd == pytest.approx(0.336)


@pytest.mark.anyio
async def test_cancel_a_queued_job(rp, state):
    accepted = await rp.submit(make_job())
    job = make_job(remote_id=accepted.remote_id)
    assert await rp.cancel(job) is True
    result = await rp.poll(job)
    assert isinstance(result, Failed) and result.code == "cancelled"
    assert state.jobs[accepted.remote_id].status == "CANCELLED"


@pytest.mark.anyio
async def test_cancel_a_finished_job_is_false(rp):
    seen, job = await run_to_end(rp, make_job())
    assert isinstance(seen[-1], Done)
    assert await rp.cancel(job) is False


@pytest.mark.anyio
async def test_cancel_an_unknown_job_is_false(rp):
    assert await rp.cancel(make_job(remote_id="no-such-job")) is False


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_429s_are_retried_into_exactly_one_job(rp, state):
    state.fail_next_submits(2, 429, retry_after="0")
    accepted = await rp.submit(make_job())
    assert len(state.submissions()) == 3 and list(state.jobs) == [accepted.remote_id]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_submit_5xx_raises_and_creates_no_job(rp, state, status):
    state.fail_next_submits(1, status)
    with pytest.raises(errors.ProviderUnavailable):
        await rp.submit(make_job())
    assert state.jobs == {} and len(state.submissions()) == 1


@pytest.mark.anyio
async def test_poll_faults_are_transient(rp, state):
    accepted = await rp.submit(make_job())
    job = make_job(remote_id=accepted.remote_id)
    state.fail_next_polls(1, 429, retry_after="3")
    state.fail_next_polls(1, 503)
    state.malformed_polls = 1
    with pytest.raises(errors.RateLimited) as info:
        await rp.poll(job)
    assert info.value.retry_after == 3
    with pytest.raises(errors.ProviderUnavailable):
        await rp.poll(job)
    with pytest.raises(errors.ProviderUnavailable, match="not JSON"):
        await rp.poll(job)
    assert await rp.poll(job) == Running()


@pytest.mark.anyio
async def test_failed_job_surfaces_the_embedded_message(rp, state):
    state.next_job_fails()
    seen, _ = await run_to_end(rp, make_job())
    result = seen[-1]
    assert isinstance(result, Failed) and result.code == "job_failed"
    inner = "The reference image could not be recognised as a character, prop or scene"
    assert inner in EMBEDDED_ERROR and result.message.endswith(inner)


@pytest.mark.anyio
async def test_timed_out_job(rp, state):
    state.next_job_times_out()
    seen, _ = await run_to_end(rp, make_job())
    assert isinstance(seen[-1], Failed) and seen[-1].code == "provider_timeout" and seen[-1].retryable


@pytest.mark.anyio
async def test_status_is_404_after_the_result_ttl(rp, state):
    state.result_ttl_s = 0
    seen, job = await run_to_end(rp, make_job())
    assert isinstance(seen[-1], Done)
    with pytest.raises(errors.RemoteNotFound, match="TTL"):
        await rp.poll(job)


@pytest.mark.anyio
async def test_rejected_data_uri_says_the_local_file_was_refused(rp, state, image_file):
    state.reject_data_uris = True
    seen, _ = await run_to_end(rp, make_job(reference_images=[file_ref(image_file, "image/png")]))
    result = seen[-1]
    assert isinstance(result, Failed) and result.code == "provider_rejected"
    assert "did not accept a local file" in result.message and "runware" in result.hint


@pytest.mark.anyio
async def test_accepted_data_uri_runs(rp, state, image_file):
    seen, job = await run_to_end(rp, make_job(reference_images=[file_ref(image_file, "image/png")]))
    assert isinstance(seen[-1], Done)
    assert state.jobs[job.remote_id].input["images"][0].startswith("data:image/png;base64,")


@pytest.mark.anyio
async def test_truncated_download_then_a_full_one(rp, state, client):
    seen, _ = await run_to_end(rp, make_job(duration=3))
    url = seen[-1].videos[0].url
    state.files.truncate_next = 1
    with pytest.raises(httpx.HTTPError):
        await client.get(url)
    full = await client.get(url)
    assert full.status_code == 200 and len(full.content) == int(full.headers["content-length"])


@pytest.mark.anyio
async def test_wrong_key_is_auth_failed(base, client, tmp_path):
    ctx = ProviderContext(name="runpod", api_key="rp-wrong-key", base_url=f"{base}/v2", client=client,
                          kv=MemoryKV(), data_dir=tmp_path)
    with pytest.raises(errors.AuthenticationFailed) as info:
        await RunpodProvider(ctx).submit(make_job())
    assert "rp-wrong-key" not in str(info.value)


# --- the emulator's own contract ------------------------------------------------------------------


def _input(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"prompt": "p", "images": ["https://example.com/a.png"], "aspect_ratio": "16:9",
                            "duration": 5, "seed": -1}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not ...}


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "needle"), [
    ({"input": _input(prompt=...)}, "prompt is required"),
    ({"input": _input(images=[])}, "images"),
    ({"input": _input(images=[f"https://e.com/{i}.png" for i in range(11)])}, "images"),
    ({"input": _input(images=["ftp://e.com/a.png"])}, "images[0]"),
    ({"input": _input(duration=2)}, "duration"),
    ({"input": _input(duration=11)}, "duration"),
    ({"input": _input(duration="5")}, "duration"),
    ({"input": _input(aspect_ratio="4:3")}, "aspect_ratio"),
    ({"input": _input(video=7)}, "video"),
    ({"input": _input(seed=1.5)}, "seed"),
    ({"input": _input(enable_safety_checker="yes")}, "enable_safety_checker"),
    ({"input": _input(resolution="1080p")}, "resolution"),
    ({"input": _input(), "priority": 1}, "priority"),
    ({"prompt": "p"}, "input"),
])
async def test_emulator_validates_like_the_model_page(base, client, state, body, needle):
    response = await client.post(f"{base}/v2/kling-video-o1-r2v/run", json=body,
                                 headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    answer = response.json()
    assert answer["status"] == "FAILED" and answer["id"] and needle in answer["error"]
    assert state.jobs == {}


@pytest.mark.anyio
async def test_emulator_accepts_the_bare_key_and_rejects_others(base, client):
    url = f"{base}/v2/kling-video-o1-r2v/run"
    assert (await client.post(url, json={"input": _input()}, headers={"Authorization": KEY})).status_code == 200
    assert (await client.post(url, json={"input": _input()}, headers={"Authorization": "Bearer nope"})).status_code \
        == 401
    assert (await client.post(url, json={"input": _input()})).status_code == 401


@pytest.mark.anyio
async def test_emulator_runsync_answers_the_documented_shape(base, client, state):
    response = await client.post(f"{base}/v2/kling-video-o1-r2v/runsync", json={"input": _input(duration=10)},
                                 headers={"Authorization": f"Bearer {KEY}"})
    answer = response.json()
    assert answer["id"].startswith("sync-") and answer["id"].endswith("-u1")
    assert answer["status"] == "COMPLETED" and answer["output"]["cost"] == pytest.approx(1.12)
    assert {"delayTime", "executionTime"} <= set(answer)
    assert state.jobs[answer["id"]].ttl_s == 60


@pytest.mark.anyio
async def test_emulator_runsync_past_its_wait_window_continues_on_status(base, client, state):
    state.runsync_completes = False
    headers = {"Authorization": f"Bearer {KEY}"}
    answer = (await client.post(f"{base}/v2/kling-video-o1-r2v/runsync?wait=1000", json={"input": _input()},
                                headers=headers)).json()
    assert answer["status"] == "IN_PROGRESS" and "output" not in answer
    status = (await client.get(f"{base}/v2/kling-video-o1-r2v/status/{answer['id']}", headers=headers)).json()
    assert status["status"] == "COMPLETED" and status["output"]["video_url"].startswith(base + "/files/")


def test_create_app_exposes_its_state():
    state = RunpodState(api_key="k")
    assert create_app(state).state.emulator is state
    assert isinstance(create_app().state.emulator, RunpodState)


@pytest.mark.slow
def test_emulator_runs_standalone():
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.runpod", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line.startswith("READY http://127.0.0.1:"), line
        url = line.split(" ", 1)[1]
        response = httpx.get(f"{url}/v2/kling-video-o1-r2v/status/nope", headers={"Authorization": KEY})
        assert response.status_code == 404 and response.json() == {"error": "request does not exist"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)

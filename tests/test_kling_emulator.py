"""Kling adapter against the loopback emulator (real HTTP): the JWT as Kling verifies it, the
documented request rules, lookups by external_task_id, and each fault knob at the adapter seam."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from kling_mcp import errors
from kling_mcp.jobs.model import Job
from kling_mcp.providers import kling as adapter_module
from kling_mcp.providers.base import Done, Failed, Running
from kling_mcp.providers.kling import KlingProvider
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.kling import KlingState, create_app
from tests.test_kling_adapter import AK, BEARER, SK, ctx_for, make_job, url_ref

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Starlette]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(server: tuple[str, Starlette]) -> tuple[str, KlingState]:
    base, app = server
    app.state.emulator = KlingState(access_keys={AK: SK}, bearer_keys={BEARER})
    return base, app.state.emulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def adapter(emu, http, tmp_path) -> KlingProvider:
    return KlingProvider(ctx_for(http, tmp_path, base=emu[0]))


def probe(data: bytes) -> tuple[float, int, int]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return container.duration / 1_000_000, stream.width, stream.height


async def run_to_end(adapter: KlingProvider, job: Job) -> tuple[Job, list[Any]]:
    accepted = await adapter.submit(job)
    job = job.updated(remote_id=accepted.remote_id)
    return job, [await adapter.poll(job) for _ in range(3)]


async def test_text_to_video_runs_submitted_processing_succeed(adapter, emu, http):
    _, state = emu
    job, seen = await run_to_end(adapter, make_job(tier="standard", duration=5, aspect_ratio="16:9"))
    assert seen[:2] == [Running(queued=True), Running()]
    done = seen[2]
    assert isinstance(done, Done) and done.cost_usd == pytest.approx(0.6 * 5 * 0.14)
    data = (await http.get(done.videos[0].url)).content
    assert probe(data)[1:] == (640, 360) and probe(data)[0] == pytest.approx(5.0, abs=0.1)
    [submitted] = state.of("submit")
    assert submitted.claims is not None and submitted.claims["iss"] == AK
    assert state.tasks[job.remote_id].request.external_task_id == job.job_id


async def test_a_pro_edit_of_a_hosted_video_follows_its_length_and_bills_more(adapter, emu):
    base, state = emu
    video = state.host(mp4_bytes(4.0, 1280, 720), base)
    _, seen = await run_to_end(adapter, make_job(video=url_ref(video, "video", 4.0, 1280, 720)))
    done = seen[2]
    assert isinstance(done, Done) and done.cost_usd == pytest.approx(0.8 * 1.5 * 4 * 0.14)


async def test_the_task_is_found_by_its_external_id(adapter, emu):
    job = make_job()
    await adapter.submit(job)
    assert await adapter.poll(job) == Running(queued=True)      # job.remote_id is None: asked by job id
    assert emu[1].of("poll")[0].path.endswith(f"/{job.job_id}")


# --- the token as Kling checks it ----------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "code"), [(-60.0, 1003), (1801.0, 1004)])
async def test_a_token_outside_its_window_is_refused_with_a_clock_hint(adapter, emu, offset, code):
    emu[1].clock_offset_s = offset     # the emulator's clock runs ahead of or behind this machine's
    with pytest.raises(errors.AuthenticationFailed, match=f"code {code}") as caught:
        await adapter.submit(make_job())
    assert "clock" in caught.value.hint and emu[1].tasks == {}


async def test_a_token_signed_with_another_secret_is_refused(emu, http, tmp_path):
    wrong = KlingProvider(ctx_for(http, tmp_path, base=emu[0], secret="sk-not-the-right-one"))
    with pytest.raises(errors.AuthenticationFailed, match="code 1000"):
        await wrong.submit(make_job())


async def test_a_request_without_authorization_gets_1001(emu, http):
    answer = await http.post(f"{emu[0]}/v1/videos/omni-video", json={"prompt": "x"})
    assert answer.status_code == 401 and answer.json()["code"] == 1001


async def test_gateway_mode_takes_the_bearer_key(emu, http, tmp_path):
    gateway = KlingProvider(ctx_for(http, tmp_path, base=emu[0], access=None, secret=None, bearer=BEARER))
    await gateway.submit(make_job())
    assert emu[1].of("submit")[0].claims is None and len(emu[1].tasks) == 1


# --- the documented rules, as the emulator enforces them -----------------------------------------------


def raw_body(**extra: Any) -> dict[str, Any]:
    return {"model_name": "kling-video-o1", "prompt": "x", "mode": "pro", "aspect_ratio": "16:9",
            "duration": "5", **extra}


@pytest.mark.parametrize(("extra", "said"), [
    ({"duration": 5}, "must be a string"),
    ({"duration": "7"}, "one of 5, 10"),
    ({"image_list": [{"image_url": "data:image/png;base64," + base64.b64encode(png_bytes(400, 400)).decode()}]},
     "data: prefix"),
    ({"image_list": [{"image_url": base64.b64encode(png_bytes(200, 200)).decode()}]}, "at least 300px"),
    ({"image_list": [{"image_url": "https://cdn.test/e.png", "type": "end_frame"}], "aspect_ratio": None},
     "end frame needs a first frame"),
    ({"video_list": [{"video_url": base64.b64encode(b"mp4").decode(), "refer_type": "feature"}]}, "must be a URL"),
    ({"seed": 1}, "unknown parameter"),
])
async def test_the_emulator_refuses_what_kling_documents_as_invalid(emu, adapter, extra, said):
    token = adapter._token()
    body = {k: v for k, v in raw_body(**extra).items() if v is not None}
    answer = await adapter._ctx.client.post(f"{emu[0]}/v1/videos/omni-video", json=body,
                                            headers={"Authorization": f"Bearer {token}"})
    assert (answer.status_code, answer.json()["code"]) == (400, 1201) and said in answer.json()["message"]


async def test_an_external_task_id_is_used_once(adapter, emu):
    job = make_job()
    await adapter.submit(job)
    with pytest.raises(errors.ProviderRejected, match="already exists"):
        await adapter.submit(job)
    assert len(emu[1].tasks) == 1


async def test_the_task_list(adapter, emu):
    for _ in range(2):
        await adapter.submit(make_job())
    answer = await adapter._ctx.client.get(f"{emu[0]}/v1/videos/omni-video?pageNum=1&pageSize=1",
                                           headers={"Authorization": f"Bearer {adapter._token()}"})
    assert answer.json()["code"] == 0 and len(answer.json()["data"]) == 1


# --- fault knobs at the seam -------------------------------------------------------------------------------


async def test_429_with_retry_after_and_the_concurrency_limit(adapter, emu):
    emu[1].fail("submit", 1302, retry_after="3")
    with pytest.raises(errors.RateLimited) as caught:
        await adapter.submit(make_job())
    assert caught.value.retry_after == 3.0 and not caught.value.may_have_accepted
    emu[1].concurrency = 1
    await adapter.submit(make_job())
    with pytest.raises(errors.RateLimited, match="code 1303"):
        await adapter.submit(make_job())


@pytest.mark.parametrize("knob", ["malformed", "truncated", "slow", "accepted-504"])
async def test_a_lost_submit_answer_may_have_been_accepted_and_the_task_is_found_by_job_id(
        adapter, emu, monkeypatch, knob):
    state = emu[1]
    if knob == "slow":
        monkeypatch.setattr(adapter_module, "SUBMIT_TIMEOUT", httpx.Timeout(0.5, connect=5.0))
        state.slow["submit"] = 2.0
    elif knob == "accepted-504":
        state.fail("submit", 5002, accepted=True)
    else:
        getattr(state, knob)["submit"] = 1
    job = make_job()
    with pytest.raises(errors.ProviderError) as caught:
        await adapter.submit(job)
    assert caught.value.may_have_accepted is True and caught.value.retryable
    assert len(state.tasks) == 1
    assert isinstance(await adapter.poll(job), Running)


@pytest.mark.parametrize("knob", ["fault", "malformed", "truncated"])
async def test_a_bad_poll_answer_is_transient(adapter, emu, knob):
    job = make_job().updated(remote_id=(await adapter.submit(make_job())).remote_id)
    if knob == "fault":
        emu[1].fail("poll", 5001)
    else:
        getattr(emu[1], knob)["poll"] = 1
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await adapter.poll(job)
    assert caught.value.retryable
    assert isinstance(await adapter.poll(job), Running)


async def test_content_policy_at_submit_and_in_the_task(adapter, emu):
    emu[1].fail("submit", 1301)
    with pytest.raises(errors.ContentPolicy):
        await adapter.submit(make_job())
    emu[1].task_failures.append("Failure to pass the risk control system")
    _, seen = await run_to_end(adapter, make_job())
    assert isinstance(seen[2], Failed) and seen[2].code == "content_policy"


def test_standalone_emulator_prints_ready():
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.kling", "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("READY http://127.0.0.1:")
        answer = httpx.get(line.split()[1] + "/v1/videos/omni-video")
        assert answer.status_code == 401 and answer.json()["code"] == 1001
    finally:
        proc.terminate()
        proc.wait(timeout=10)

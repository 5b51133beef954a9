"""Runware adapter against the real loopback emulator: every mode on both tiers, uploads and their
cache, crash recovery, faults; and the emulator itself against the documented examples/rules."""

from __future__ import annotations

import copy
import io
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.jobs.model import Job
from kling_mcp.providers.base import Done, Failed, Running
from kling_mcp.providers.runware import RunwareProvider
from kling_mcp.requests import VideoSpec
from kling_mcp.validation import check
from tests.emulators._media import mp4_bytes
from tests.emulators._server import serve
from tests.emulators.runware import RunwareState, create_app
from tests.support import MemoryKV
from tests.test_runware_adapter import EXAMPLES, context, file_ref, make_job, url_ref

KEY = "rw-test-key"


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, Any]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emulator(_server) -> tuple[str, RunwareState]:
    """One server per module; a fresh emulator state per test."""
    base, app = _server
    app.state.emulator = RunwareState(api_keys={KEY})
    return base, app.state.emulator


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def provider_for(client: httpx.AsyncClient, base: str, tmp_path: Path, kv: MemoryKV | None = None,
                 api_key: str = KEY) -> RunwareProvider:
    return RunwareProvider(context(client, tmp_path, base_url=f"{base}/v1", api_key=api_key, kv=kv))


async def poll_until_done(provider: RunwareProvider, job: Job, limit: int = 12) -> tuple[Done, list[Any]]:
    seen = []
    for _ in range(limit):
        result = await provider.poll(job)
        seen.append(result)
        if isinstance(result, Done):
            return result, seen
        assert isinstance(result, Running), result
    raise AssertionError(f"not done after {limit} polls: {seen}")


def probe(data: bytes) -> tuple[int, int, float]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height, container.duration / 1e6


@pytest.fixture
def long_video(tmp_path: Path) -> Path:
    path = tmp_path / "long.mp4"
    path.write_bytes(mp4_bytes(6.5, 320, 180))
    return path


def mode_spec(mode: str, files: dict[str, Path]) -> VideoSpec:
    prompt = "a paper boat drifting down a rainy street"
    if mode == "text":
        return VideoSpec(operation="text", prompt=prompt, duration=10, aspect_ratio="9:16")
    if mode == "image":
        return VideoSpec(operation="image", prompt=prompt, duration=5, first_frame=file_ref(files["image"], "image"),
                         last_frame=file_ref(files["image2"], "image"))
    if mode == "reference":
        return VideoSpec(operation="reference", prompt=prompt, duration=4, aspect_ratio="1:1",
                         reference_images=[file_ref(files["image"], "image"), file_ref(files["image2"], "image")])
    if mode == "reference_video":
        return VideoSpec(operation="reference", prompt=prompt, duration=6, aspect_ratio="16:9",
                         reference_images=[file_ref(files["image"], "image")],
                         reference_video=file_ref(files["video"], "video", 4.0), keep_original_sound=True)
    if mode == "edit":
        return VideoSpec(operation="edit", prompt=prompt, video=file_ref(files["video"], "video", 4.0),
                         reference_images=[file_ref(files["image"], "image")], keep_original_sound=True)
    if mode == "edit_fast":
        return VideoSpec(operation="edit", prompt=prompt, video=file_ref(files["long"], "video", 6.5), fast=True)
    raise AssertionError(mode)


MODES = [(m, t) for m in ("text", "image", "reference", "reference_video", "edit") for t in ("pro", "standard")]
MODES.append(("edit_fast", "pro"))


@pytest.mark.anyio
@pytest.mark.parametrize("mode,tier", MODES)
async def test_every_mode_and_tier_end_to_end(mode, tier, emulator, client, tmp_path, image_file, image_file2,
                                              video_file, long_video):
    base, state = emulator
    spec = mode_spec(mode, {"image": image_file, "image2": image_file2, "video": video_file, "long": long_video})
    job = make_job(spec, tier)
    match = check(job.spec, "runware", tier)
    assert match.ok, match.problems
    provider = provider_for(client, base, tmp_path)

    accepted = await provider.submit(job)
    assert accepted.remote_id == job.job_id
    job = job.model_copy(update={"remote_id": accepted.remote_id})
    done, seen = await poll_until_done(provider, job)

    assert len(state.sent("videoInference", job.job_id)) == 1
    assert isinstance(seen[0], Running)
    assert done.cost_usd == state.billed(job.job_id) == match.cost_usd
    assert len(done.videos) == 1 and done.videos[0].url.startswith(f"{base}/files/")
    response = await client.get(done.videos[0].url)
    assert response.status_code == 200
    width, height, seconds = probe(response.content)
    expected_s = {"edit": 4.0, "edit_fast": 6.5}.get(mode, spec.duration)
    assert abs(seconds - expected_s) < 0.3
    if spec.aspect_ratio:
        w, h = (int(x) for x in spec.aspect_ratio.split(":"))
        assert abs(width / height - w / h) < 0.02


@pytest.mark.anyio
async def test_local_files_are_uploaded_once_per_content(emulator, client, tmp_path, image_file, video_file):
    base, state = emulator
    kv = MemoryKV()
    copy_of_image = tmp_path / "same-bytes.png"
    copy_of_image.write_bytes(image_file.read_bytes())
    jobs = [
        make_job(VideoSpec(operation="image", prompt="one", duration=5, first_frame=file_ref(image_file, "image")),
                 "pro"),
        make_job(VideoSpec(operation="reference", prompt="two", duration=5, aspect_ratio="16:9",
                           reference_images=[file_ref(copy_of_image, "image"), file_ref(image_file, "image")],
                           reference_video=file_ref(video_file, "video", 4.0)), "standard"),
        make_job(VideoSpec(operation="edit", prompt="three", video=file_ref(video_file, "video", 4.0)), "pro"),
    ]
    for job in jobs:
        await provider_for(client, base, tmp_path, kv=kv).submit(job)   # a fresh adapter: the cache is the kv

    assert len(state.sent("imageUpload")) == 1
    assert len(state.sent("mediaStorage")) == 1
    assert state.sent("mediaStorage")[0]["operation"] == "upload"
    assert state.sent("mediaStorage")[0]["media"].startswith("data:video/mp4;base64,")
    assert state.sent("imageUpload")[0]["image"].startswith("data:image/png;base64,")
    from kling_mcp.media import sha256_file

    image_key, video_key = f"runware:upload:{sha256_file(image_file)}", f"runware:upload:{sha256_file(video_file)}"
    assert set(kv.data) == {image_key, video_key}
    sent = [t["inputs"] for t in state.sent("videoInference")]
    image_uuid, video_uuid = kv.data[image_key]["uuid"], kv.data[video_key]["uuid"]
    assert sent[0] == {"frameImages": [{"image": image_uuid, "frame": "first"}]}
    assert sent[1] == {"referenceImages": [image_uuid, image_uuid], "referenceVideos": [video_uuid]}
    assert sent[2] == {"video": video_uuid}
    # the edit was billed by the real length of the uploaded video (4 s at the pro R2V rate)
    assert state.tasks[jobs[2].job_id].cost == round(4 * 0.168, 4)


@pytest.mark.anyio
async def test_several_videos_arrive_one_per_poll(emulator, client, tmp_path):
    base, state = emulator
    job = make_job(VideoSpec(operation="text", prompt="fireflies in a jar", duration=5, aspect_ratio="1:1",
                             num_videos=3), "standard")
    provider = provider_for(client, base, tmp_path)
    await provider.submit(job)
    assert state.sent("videoInference")[0]["numberResults"] == 3
    done, seen = await poll_until_done(provider, job.model_copy(update={"remote_id": job.job_id}))
    assert seen[:-1] == [Running(progress=None), Running(progress=33.3), Running(progress=66.7)]
    assert len({v.remote_key for v in done.videos}) == len({v.url for v in done.videos}) == 3
    assert done.cost_usd == 3 * 0.42 == state.billed(job.job_id) == check(job.spec, "runware", "standard").cost_usd


@pytest.mark.anyio
async def test_a_lost_acknowledgement_is_recovered_by_polling_never_by_resubmitting(emulator, client, tmp_path):
    base, state = emulator
    job = make_job(VideoSpec(operation="text", prompt="a lighthouse at dusk", duration=5, aspect_ratio="16:9"), "pro")
    await provider_for(client, base, tmp_path).submit(job)   # reached Runware; the ack is "lost": remote_id unset
    restarted = provider_for(client, base, tmp_path)
    done, _ = await poll_until_done(restarted, job)
    assert job.remote_id is None and done.cost_usd == 0.56
    assert len(state.sent("videoInference")) == 1

    # a submit retried after a lost ack is not a second task either
    assert (await restarted.submit(job)).remote_id == job.job_id
    assert len(state.tasks) == 1


@pytest.mark.anyio
async def test_a_submit_that_never_arrived_is_interrupted_not_resubmitted(emulator, client, tmp_path):
    base, state = emulator
    job = make_job(VideoSpec(operation="text", prompt="a lighthouse at dusk", duration=5, aspect_ratio="16:9"), "pro")
    result = await provider_for(client, base, tmp_path).poll(job)
    assert isinstance(result, Failed) and result.code == "interrupted"
    assert state.sent("videoInference") == []


@pytest.mark.anyio
@pytest.mark.parametrize("status,cls", [(401, errors.AuthenticationFailed), (402, errors.InsufficientCredits),
                                        (403, errors.AuthenticationFailed), (429, errors.RateLimited),
                                        (500, errors.ProviderUnavailable), (502, errors.ProviderUnavailable),
                                        (503, errors.ProviderUnavailable)])
async def test_http_faults_at_submit_then_a_retry_succeeds(status, cls, emulator, client, tmp_path):
    base, state = emulator
    state.http_faults.append(status)
    job = make_job(VideoSpec(operation="text", prompt="snow on pines", duration=5, aspect_ratio="16:9"), "standard")
    provider = provider_for(client, base, tmp_path)
    with pytest.raises(cls) as caught:
        await provider.submit(job)
    assert caught.value.may_have_accepted is (status in (500, 502))  # 500/502: it may have been queued
    if status == 429:
        assert caught.value.retry_after == state.retry_after_s
    assert (await provider.submit(job)).remote_id == job.job_id
    assert len(state.sent("videoInference", job.job_id)) == 1


@pytest.mark.anyio
async def test_a_wrong_key_is_named_but_never_shown(emulator, client, tmp_path):
    base, _ = emulator
    bad = "rw-wrong-key-987654321"
    job = make_job(VideoSpec(operation="text", prompt="snow on pines", duration=5, aspect_ratio="16:9"), "pro")
    with pytest.raises(errors.AuthenticationFailed) as caught:
        await provider_for(client, base, tmp_path, api_key=bad).submit(job)
    assert "RUNWARE_API_KEY" in str(caught.value) and bad not in str(caught.value)


@pytest.mark.anyio
async def test_malformed_and_5xx_polls_raise_transient_errors_then_recover(emulator, client, tmp_path):
    base, state = emulator
    job = make_job(VideoSpec(operation="text", prompt="tide pools", duration=5, aspect_ratio="16:9"), "pro")
    provider = provider_for(client, base, tmp_path)
    await provider.submit(job)
    state.malformed_next = 1
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await provider.poll(job)
    assert caught.value.retryable
    state.http_faults.append(502)
    with pytest.raises(errors.ProviderUnavailable):
        await provider.poll(job)
    done, _ = await poll_until_done(provider, job)
    assert done.cost_usd == 0.56


@pytest.mark.anyio
@pytest.mark.parametrize("code,form,expected", [
    ("contentPolicyViolation", "item", "content_policy"), ("nsfwContentDetected", "envelope", "content_policy"),
    ("timeoutProvider", "item", "provider_timeout"), ("timeoutProvider", "envelope", "provider_timeout"),
    ("inferenceError", "item", "job_failed")])
async def test_task_failures_are_reported_as_failed(code, form, expected, emulator, client, tmp_path):
    base, state = emulator
    state.task_error_code, state.task_error_form = code, form
    job = make_job(VideoSpec(operation="text", prompt="a storm", duration=5, aspect_ratio="16:9"), "pro")
    provider = provider_for(client, base, tmp_path)
    await provider.submit(job)
    assert isinstance(await provider.poll(job), Running)
    result = await provider.poll(job)
    assert isinstance(result, Failed) and result.code == expected and code in result.message
    assert result.retryable is (expected == "provider_timeout")


@pytest.mark.anyio
async def test_a_never_finishing_task_keeps_running(emulator, client, tmp_path):
    base, state = emulator
    state.never_finish = True
    job = make_job(VideoSpec(operation="text", prompt="a storm", duration=5, aspect_ratio="16:9"), "pro")
    provider = provider_for(client, base, tmp_path)
    await provider.submit(job)
    assert [await provider.poll(job) for _ in range(8)] == [Running(progress=None)] * 8


@pytest.mark.anyio
async def test_the_empty_ack_form_works_end_to_end(emulator, client, tmp_path):
    base, state = emulator
    state.ack_form = "empty"
    job = make_job(VideoSpec(operation="text", prompt="a storm", duration=5, aspect_ratio="16:9"), "standard")
    provider = provider_for(client, base, tmp_path)
    assert (await provider.submit(job)).remote_id == job.job_id
    done, _ = await poll_until_done(provider, job)
    assert done.cost_usd == 0.42


@pytest.mark.anyio
async def test_result_links_expire_and_downloads_can_be_truncated(emulator, client, tmp_path):
    base, state = emulator
    job = make_job(VideoSpec(operation="text", prompt="a storm", duration=5, aspect_ratio="16:9"), "standard")
    provider = provider_for(client, base, tmp_path)
    await provider.submit(job)
    done, _ = await poll_until_done(provider, job)
    url = done.videos[0].url
    state.files.truncate_next = 1
    with pytest.raises(httpx.HTTPError):
        await client.get(url)
    assert (await client.get(url)).status_code == 200
    state.files.expire_all = True
    assert (await client.get(url)).status_code == 403

    state.files.expire_all, state.result_ttl_s = False, 0.0
    short = make_job(job.spec, "standard")
    await provider.submit(short)
    done, _ = await poll_until_done(provider, short)
    assert (await client.get(done.videos[0].url)).status_code == 403


@pytest.mark.anyio
async def test_edit_of_a_url_video_is_billed_at_the_default_input_length(emulator, client, tmp_path):
    base, state = emulator
    job = make_job(VideoSpec(operation="edit", prompt="make it winter",
                             video=url_ref("https://cdn.example.com/clip.mp4", "video")), "pro")
    provider = provider_for(client, base, tmp_path)
    await provider.submit(job)
    done, _ = await poll_until_done(provider, job)
    assert done.cost_usd == round(state.default_input_video_s * 0.168, 4) == 1.008


# --- the emulator alone -----------------------------------------------------------------------


def post(base: str, tasks: list[dict[str, Any]], key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}/v1", json=tasks, headers=headers, timeout=10)


@pytest.mark.parametrize("name,example,cost,fields", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_emulator_accepts_every_documented_example_and_bills_its_cost(name, example, cost, fields, emulator):
    base, _ = emulator
    ack = post(base, [{**example, "includeCost": True}])
    assert ack.status_code == 200, ack.text
    assert ack.json() == {"data": [{"taskType": "videoInference", "taskUUID": example["taskUUID"]}]}
    poll = [{"taskType": "getResponse", "taskUUID": example["taskUUID"]}]
    assert post(base, poll).json()["data"][0]["status"] == "processing"
    item = post(base, poll).json()["data"][0]
    assert item["status"] == "success" and item["cost"] == cost
    assert set(item) >= {"taskType", "taskUUID", "videoUUID", "videoURL", "cost"}


def _with(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    task = {**copy.deepcopy(example), "taskUUID": str(uuid.uuid4())}
    for key, value in changes.items():
        if value is None:
            task.pop(key, None)
        else:
            task[key] = value
    return task


PRO_TEXT, PRO_IMAGE, PRO_REFS, PRO_EDIT = (EXAMPLES[i][1] for i in (2, 0, 3, 1))
STD_TEXT = EXAMPLES[10][1]
REJECTIONS = [
    ("frameImages with a size", _with(PRO_IMAGE, width=1920, height=1080), "incompatibleParameters"),
    ("frameImages with referenceImages", _with(PRO_IMAGE, inputs={**PRO_IMAGE["inputs"], "referenceImages": [
        "https://example.com/a.png"]}), "incompatibleParameters"),
    ("text without a size", _with(PRO_TEXT, width=None, height=None), "missingDimensions"),
    ("width without height", _with(PRO_TEXT, height=None), "missingDimensions"),
    ("a standard size on pro", _with(PRO_TEXT, width=1280, height=720), "unsupportedDimensions"),
    ("a pro size on standard", _with(STD_TEXT, width=1920, height=1080), "unsupportedDimensions"),
    ("frameImages 7 s", _with(PRO_IMAGE, duration=7), "invalidDuration"),
    ("three frameImages", _with(PRO_IMAGE, inputs={"frameImages": ["https://e.com/a.png"] * 3}), "invalidFrameImages"),
    ("8 referenceImages", _with(PRO_REFS, inputs={"referenceImages": ["https://e.com/a.png"] * 8}),
     "invalidReferenceImages"),
    ("reference 11 s", _with(PRO_REFS, duration=11), "invalidDuration"),
    ("text 7 s", _with(PRO_TEXT, duration=7), "invalidDuration"),
    ("edit with 5 referenceImages", _with(PRO_EDIT, inputs={**PRO_EDIT["inputs"], "referenceImages": [
        "https://e.com/a.png"] * 5}), "invalidReferenceImages"),
    ("fast on standard", _with(STD_TEXT, providerSettings={"klingai": {"fast": True}}), "unknownParameter"),
    ("fast without a video", _with(PRO_TEXT, providerSettings={"klingai": {"fast": True}}), "incompatibleParameters"),
    ("seed", _with(PRO_TEXT, seed=3), "unknownParameter"),
    ("negativePrompt", _with(PRO_TEXT, negativePrompt="blur"), "unknownParameter"),
    ("numberResults 5", _with(PRO_TEXT, numberResults=5), "invalidNumberResults"),
    ("sync delivery", _with(PRO_TEXT, deliveryMethod="sync"), "invalidDeliveryMethod"),
    ("base64 output", _with(PRO_TEXT, outputType="base64Data"), "invalidOutputType"),
    ("short prompt", _with(PRO_TEXT, positivePrompt="a"), "invalidPositivePrompt"),
    ("unknown model", _with(PRO_TEXT, model="klingai:kling@o9"), "unknownModel"),
    ("a data URI as video", _with(PRO_EDIT, inputs={"video": "data:video/mp4;base64,AAAA"}), "invalidVideo"),
    ("an unknown upload UUID", _with(PRO_EDIT, inputs={"video": str(uuid.uuid4())}), "invalidVideo"),
    ("not a UUID v4", _with(PRO_TEXT, taskUUID="task-1"), "invalidTaskUUID"),
]


@pytest.mark.parametrize("name,task,code", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_emulator_enforces_the_documented_rules(name, task, code, emulator):
    base, state = emulator
    response = post(base, [task])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == code and error["message"]
    assert error["taskUUID"] == task["taskUUID"]
    assert state.tasks == {}


def test_emulator_auth_header_element_and_failures(emulator):
    base, state = emulator
    task = _with(PRO_TEXT)
    assert post(base, [{"taskType": "authentication", "apiKey": KEY}, task], key=None).status_code == 200
    assert state.auth_modes == ["element"]
    rejected = post(base, [_with(PRO_TEXT)], key="nope")
    assert rejected.status_code == 401 and rejected.json()["errors"][0]["code"] == "invalidApiKey"
    assert post(base, [_with(PRO_TEXT)], key=None).status_code == 401
    unknown = post(base, [{"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}])
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["code"] == "taskFailedOrNotFound"
    duplicate = post(base, [task])
    assert duplicate.json()["errors"][0]["code"] == "duplicateTaskUUID"


def test_emulator_checks_input_video_length_for_fast_and_normal_edits(emulator, video_file):
    import base64

    base, _ = emulator
    raw = "data:video/mp4;base64," + base64.b64encode(video_file.read_bytes()).decode()
    stored = post(base, [{"taskType": "mediaStorage", "taskUUID": str(uuid.uuid4()), "operation": "upload",
                          "media": raw}]).json()["data"][0]
    assert set(stored) == {"taskType", "taskUUID", "mediaUUID", "mediaURL"}
    fast = post(base, [_with(PRO_EDIT, inputs={"video": stored["mediaUUID"]},
                             providerSettings={"klingai": {"fast": True}})])
    assert fast.status_code == 400 and fast.json()["errors"][0]["code"] == "invalidVideoDuration"
    assert post(base, [_with(PRO_EDIT, inputs={"video": stored["mediaURL"]})]).status_code == 200


def test_emulator_runs_standalone():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators.runware", "--port", "0"], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line.startswith("READY http://127.0.0.1:")
        base = line.split(" ", 1)[1]
        assert post(base, [_with(PRO_TEXT)]).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)

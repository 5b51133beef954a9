"""Runware adapter against httpx.MockTransport: the exact JSON of every documented request
example, the ack and result forms, and every error mapping. (The protocol end to end, uploads
and faults run against the real loopback emulator in test_runware_emulator.py.)

The seed examples below are copied from shared/seeds/runware-kling-video-o1-{pro,standard}.md
with every field verbatim except ``positivePrompt``, cut to its first sentence (the adapter
passes the prompt through unchanged; the tests use the same text on both sides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_mcp import errors
from kling_mcp.catalog import PROVIDERS, variants
from kling_mcp.jobs.model import Job
from kling_mcp.providers.base import Accepted, Done, Failed, ProviderContext, Running
from kling_mcp.providers.runware import RunwareProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.support import MemoryKV

KEY = "rw-secret-key-0123456789"
URL = PROVIDERS["runware"].default_base_url
PRO, STD = "klingai:kling@o1", "klingai:kling@o1-standard"
ADDED = {"deliveryMethod": "async", "outputType": "URL", "outputFormat": "MP4", "includeCost": True}
ASSET = "https://assets.runware.ai/assets/inputs/"

# (example request, example response cost, the VideoSpec fields that should produce it)
EXAMPLES: list[tuple[str, dict[str, Any], float, dict[str, Any]]] = [
    ("pro image first frame", {
        "taskType": "videoInference", "taskUUID": "4b240d50-1ef6-40ef-b186-290cc09b3413", "model": PRO,
        "positivePrompt": "Animate a graceful porcelain automaton ballerina inside an opulent indoor topiary hall.",
        "duration": 5,
        "inputs": {"frameImages": [{"image": ASSET + "15cc1d41-d463-45ff-833e-2e8d1f28a05c.jpg", "frame": "first"}]},
    }, 0.56, {"operation": "image"}),
    ("pro edit", {
        "taskType": "videoInference", "taskUUID": "3bde4059-ffc8-4afc-b15a-b87c48c8aa51", "model": PRO,
        "positivePrompt": "Transform the source footage into a fantastical clockwork orchard at golden dawn.",
        "providerSettings": {"klingai": {"keepOriginalSound": True}},
        "inputs": {"video": ASSET + "1a0b80d4-34bc-4c77-be12-370f5eb71bf2.mp4"},
    }, 1.008, {"operation": "edit", "keep_original_sound": True}),
    ("pro text", {
        "taskType": "videoInference", "taskUUID": "c48c06bf-4095-4d07-a51a-c914d807c108", "model": PRO,
        "positivePrompt": "On a narrow wind-carved cliff above a roaring black sea, two rival violinists face each "
                          "other on separate stone platforms connected by a fractured arch bridge.",
        "width": 1920, "height": 1080, "duration": 10,
    }, 1.12, {"operation": "text", "aspect_ratio": "16:9"}),
    ("pro reference images", {
        "taskType": "videoInference", "taskUUID": "59e55a01-8a4a-4740-8beb-f08b0a4aa7bc", "model": PRO,
        "positivePrompt": "Using both reference images as the visual foundation, create a cinematic realistic scene "
                          "inside a polar glassmaking atelier.",
        "width": 1920, "height": 1080, "duration": 5,
        "inputs": {"referenceImages": [ASSET + "eb01611e-0f0d-4572-b567-41db63ee720c.jpg",
                                       ASSET + "49f92964-fc1c-418e-a347-38804169bae0.jpg"]},
    }, 0.56, {"operation": "reference", "aspect_ratio": "16:9"}),
    ("pro first and last frame", {
        "taskType": "videoInference", "taskUUID": "f7ad0dfa-6192-43b0-a1e3-47e22afa9dfc", "model": PRO,
        "positivePrompt": "A cinematic transformation sequence inside a colossal cathedral converted into an aquarium.",
        "duration": 5,
        "inputs": {"frameImages": [{"image": ASSET + "3a29e936-2c6b-4576-adae-e8a1394b6149.jpg", "frame": "first"},
                                   {"image": ASSET + "8846fe54-01e5-4c8b-9488-90bcff8212c6.jpg", "frame": "last"}]},
    }, 0.56, {"operation": "image"}),
    ("standard reference video", {
        "taskType": "videoInference", "taskUUID": "a0ef9c47-2117-4749-863d-426e7732faf1", "model": STD,
        "positivePrompt": "Transform the reference performance into a surreal cinematic underwater opera scene: a "
                          "vintage copper diving suit performer moves with the same choreography.",
        "width": 1280, "height": 720, "duration": 5,
        "providerSettings": {"klingai": {"keepOriginalSound": True}},
        "inputs": {"referenceVideos": [ASSET + "77ac92dc-d935-4f57-bbeb-9f36873d2eee.mp4"]},
    }, 0.63, {"operation": "reference", "aspect_ratio": "16:9", "keep_original_sound": True}),
    ("standard image first frame", {
        "taskType": "videoInference", "taskUUID": "00bee739-4833-4cb3-bf7e-cf86db863d4a", "model": STD,
        "positivePrompt": "A vintage amber tram glides across a narrow bridge suspended between vast red sandstone "
                          "canyons in late afternoon light.",
        "duration": 5,
        "inputs": {"frameImages": [{"image": ASSET + "f113e8c4-7788-4be3-b450-1ebd0a01fff1.jpg", "frame": "first"}]},
    }, 0.42, {"operation": "image"}),
    ("standard three reference images", {
        "taskType": "videoInference", "taskUUID": "05695f4b-8b42-4fe5-b698-771eec530d38", "model": STD,
        "positivePrompt": "A cinematic underwater sequence inside a vast ruined library where a giant whale glides "
                          "between towering shelves and floating ladders.",
        "width": 1280, "height": 720, "duration": 5,
        "inputs": {"referenceImages": [ASSET + "4340f0f2-91d6-464b-a06a-c8774ddb67c3.jpg",
                                       ASSET + "72f8431b-e7b5-44e7-9f6d-9709561d15f6.jpg",
                                       ASSET + "b151154a-9271-42f1-9b33-ff8c70c22f3f.jpg"]},
    }, 0.42, {"operation": "reference", "aspect_ratio": "16:9"}),
    ("standard first and last frame", {
        "taskType": "videoInference", "taskUUID": "5762e0a4-1587-4239-83b5-e6be8f1a9a38", "model": STD,
        "positivePrompt": "Create a cinematic transformation shot that begins matching the first frame exactly: an "
                          "antique red tram resting on cobblestones in a quiet old European street at dawn.",
        "duration": 5,
        "inputs": {"frameImages": [{"image": ASSET + "0a989d1f-4f06-46d3-918a-2f29eac0d476.jpg", "frame": "first"},
                                   {"image": ASSET + "a6ba4d13-154f-4c9c-a625-d6c22bf0323a.jpg", "frame": "last"}]},
    }, 0.42, {"operation": "image"}),
    ("standard edit", {
        "taskType": "videoInference", "taskUUID": "366d2e00-2941-4163-b7a7-4ec835fed9f9", "model": STD,
        "positivePrompt": "Transform the source footage into a cinematic near-future scene inside a forgotten "
                          "orbital greenhouse adrift in space.",
        "providerSettings": {"klingai": {"keepOriginalSound": True}},
        "inputs": {"video": ASSET + "104fbb02-e409-40ee-a6f7-e8b901d2955b.mp4"},
    }, 0.756, {"operation": "edit", "keep_original_sound": True}),
    ("standard text", {
        "taskType": "videoInference", "taskUUID": "762dd057-ddbc-4d3f-8afa-b2feb8f078de", "model": STD,
        "positivePrompt": "A cinematic wide shot on a rugged green cliff above a stormy northern sea at blue hour.",
        "width": 1280, "height": 720, "duration": 5,
    }, 0.42, {"operation": "text", "aspect_ratio": "16:9"}),
]
EDIT_EXAMPLE_INPUT_S = 6.0   # the examples' input lengths are not published; 6 s reproduces both edit costs


# --- support (also used by the other Runware test modules) ------------------------------------


def context(client: httpx.AsyncClient, tmp_path: Path, base_url: str = URL, api_key: str = KEY,
            kv: MemoryKV | None = None) -> ProviderContext:
    return ProviderContext(name="runware", api_key=api_key, base_url=base_url, client=client,
                           kv=kv or MemoryKV(), data_dir=tmp_path)


def url_ref(url: str, media: str = "image", seconds: float | None = None) -> MediaRef:
    return MediaRef(kind="url", value=url, media=media, duration_s=seconds)  # type: ignore[arg-type]


def file_ref(path: Path, media: str, seconds: float | None = None) -> MediaRef:
    mime = "video/mp4" if media == "video" else "image/png"
    return MediaRef(kind="file", value=str(path), media=media, mime_type=mime, duration_s=seconds)  # type: ignore


def make_job(spec: VideoSpec, tier: str, job_id: str | None = None, remote_id: str | None = None) -> Job:
    model = PRO if tier == "pro" else STD
    job = Job(provider="runware", model=model, tier=tier, spec=spec.model_copy(update={"tier": tier}))
    return job.model_copy(update={k: v for k, v in {"job_id": job_id, "remote_id": remote_id}.items() if v})


def spec_for(example: dict[str, Any], fields: dict[str, Any]) -> VideoSpec:
    """The normalised request that should reproduce a seed example."""
    inputs = example.get("inputs", {})
    values: dict[str, Any] = {"prompt": example["positivePrompt"], "duration": example.get("duration"), **fields}
    frames = inputs.get("frameImages", [])
    for frame in frames:
        values["first_frame" if frame["frame"] == "first" else "last_frame"] = url_ref(frame["image"])
    values["reference_images"] = [url_ref(u) for u in inputs.get("referenceImages", [])]
    if inputs.get("referenceVideos"):
        values["reference_video"] = url_ref(inputs["referenceVideos"][0], "video", 5.0)
    if inputs.get("video"):
        values["video"] = url_ref(inputs["video"], "video", EDIT_EXAMPLE_INPUT_S)
    return VideoSpec(**values)


class Recorder:
    """A MockTransport handler that records request bodies and answers from a script."""

    def __init__(self, *answers: httpx.Response | Any) -> None:
        self.answers = list(answers)
        self.bodies: list[Any] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)


def provider_with(recorder: Recorder, tmp_path: Path, **kwargs: Any) -> RunwareProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    return RunwareProvider(context(client, tmp_path, **kwargs))


def ack(task_uuid: str) -> dict[str, Any]:
    return {"data": [{"taskType": "videoInference", "taskUUID": task_uuid}]}


def text_job(tier: str = "pro", **spec: Any) -> Job:
    return make_job(VideoSpec(operation="text", prompt="a red kite over a beach", duration=5,
                              aspect_ratio="16:9", **spec), tier)


# --- the documented request examples ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("name,example,cost,fields", EXAMPLES, ids=[e[0] for e in EXAMPLES])
async def test_submit_sends_the_documented_example(name, example, cost, fields, tmp_path):
    tier = "pro" if example["model"] == PRO else "standard"
    job = make_job(spec_for(example, fields), tier, job_id=example["taskUUID"])
    recorder = Recorder(ack(example["taskUUID"]))
    accepted = await provider_with(recorder, tmp_path).submit(job)

    assert accepted == Accepted(remote_id=example["taskUUID"])
    assert recorder.bodies == [[{**example, **ADDED}]]
    assert list(recorder.bodies[0][0])[:4] == ["taskType", "taskUUID", "model", "positivePrompt"]
    assert recorder.headers[0]["authorization"] == f"Bearer {KEY}"
    assert recorder.headers[0]["content-type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize("name,example,cost,fields", EXAMPLES, ids=[e[0] for e in EXAMPLES])
async def test_poll_reads_the_documented_response(name, example, cost, fields, tmp_path):
    """The documented final item (no ``status`` field) is a finished video with its billed cost."""
    tier = "pro" if example["model"] == PRO else "standard"
    job = make_job(spec_for(example, fields), tier, job_id=example["taskUUID"], remote_id=example["taskUUID"])
    item = {"taskType": "videoInference", "taskUUID": example["taskUUID"], "videoUUID": "d9b23abc-d3bc-4715-9c01-"
            "dc9c21d58e1a", "videoURL": "https://vm.runware.ai/video/os/a10d08/ws/5/vi/d9b23abc.mp4", "cost": cost}
    recorder = Recorder({"data": [item]})
    result = await provider_with(recorder, tmp_path).poll(job)

    assert recorder.bodies == [[{"taskType": "getResponse", "taskUUID": example["taskUUID"]}]]
    assert isinstance(result, Done)
    assert result.cost_usd == cost
    assert [(v.url, v.remote_key) for v in result.videos] == [(item["videoURL"], item["videoUUID"])]


@pytest.mark.parametrize("name,example,cost,fields", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_catalog_price_reproduces_every_documented_cost(name, example, cost, fields):
    """Reference images bill at the T2V/I2V rate; reference videos and edits at the R2V rate.
    Edits are billed per input second (6 s assumed: the examples' input lengths are unpublished)."""
    variant = next(v for v in variants("runware") if v.model == example["model"])
    op = variant.operations[fields["operation"]]
    inputs = example.get("inputs", {})
    price = op.price_with_video if "referenceVideos" in inputs else op.price
    seconds = EDIT_EXAMPLE_INPUT_S if fields["operation"] == "edit" else example["duration"]
    assert price is not None and price.cost(seconds) == cost
    assert price.basis == ("inferred" if fields["operation"] == "edit" else "published")


def test_validation_quotes_every_documented_cost():
    from kling_mcp.validation import check

    for name, example, cost, fields in EXAMPLES:
        tier = "pro" if example["model"] == PRO else "standard"
        match = check(spec_for(example, fields), "runware", tier)
        assert match.ok, (name, match.problems)
        assert (match.model, match.cost_usd) == (example["model"], cost), name


# --- other request shapes ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("tier,ratio,size", [
    ("pro", "16:9", (1920, 1080)), ("pro", "1:1", (1440, 1440)), ("pro", "9:16", (1080, 1920)),
    ("standard", "16:9", (1280, 720)), ("standard", "1:1", (960, 960)), ("standard", "9:16", (720, 1280))])
async def test_text_size_follows_aspect_ratio_and_tier(tier, ratio, size, tmp_path):
    job = make_job(VideoSpec(operation="text", prompt="a kite", duration=10, aspect_ratio=ratio), tier)
    recorder = Recorder(ack(job.job_id))
    await provider_with(recorder, tmp_path).submit(job)
    sent = recorder.bodies[0][0]
    assert (sent["width"], sent["height"], sent["duration"]) == (*size, 10)
    assert "inputs" not in sent and "numberResults" not in sent


@pytest.mark.anyio
async def test_num_videos_becomes_number_results(tmp_path):
    job = text_job(num_videos=3)
    recorder = Recorder(ack(job.job_id))
    await provider_with(recorder, tmp_path).submit(job)
    assert recorder.bodies[0][0]["numberResults"] == 3


@pytest.mark.anyio
async def test_reference_with_video_and_images_and_fast_edit(tmp_path):
    refs = [url_ref(f"https://example.com/r{i}.png") for i in range(2)]
    job = make_job(VideoSpec(operation="reference", prompt="a duet", duration=7, aspect_ratio="9:16",
                             reference_images=refs, reference_video=url_ref("https://example.com/v.mp4", "video")),
                   "standard")
    edit = make_job(VideoSpec(operation="edit", prompt="a duet", video=url_ref("https://example.com/in.mp4", "video", 8),
                              reference_images=refs, fast=True, keep_original_sound=False), "pro")
    recorder = Recorder(ack(job.job_id), ack(edit.job_id))
    provider = provider_with(recorder, tmp_path)
    await provider.submit(job)
    await provider.submit(edit)
    reference, edited = recorder.bodies[0][0], recorder.bodies[1][0]
    assert (reference["width"], reference["height"], reference["duration"]) == (720, 1280, 7)
    assert reference["inputs"] == {"referenceImages": ["https://example.com/r0.png", "https://example.com/r1.png"],
                                   "referenceVideos": ["https://example.com/v.mp4"]}
    assert "providerSettings" not in reference
    assert edited["inputs"] == {"video": "https://example.com/in.mp4",
                                "referenceImages": ["https://example.com/r0.png", "https://example.com/r1.png"]}
    assert edited["providerSettings"] == {"klingai": {"keepOriginalSound": False, "fast": True}}
    assert not {"duration", "width", "height"} & set(edited)


@pytest.mark.anyio
@pytest.mark.parametrize("update,word", [({"seed": 7}, "seed"), ({"negative_prompt": "blur"}, "negative_prompt"),
                                         ({"fast": True}, "fast")])
async def test_parameters_runware_does_not_take_are_refused_before_any_request(update, word, tmp_path):
    recorder = Recorder(ack("x"))
    with pytest.raises(errors.UnsupportedByProvider) as caught:
        await provider_with(recorder, tmp_path).submit(text_job(**update))
    assert word in str(caught.value) and recorder.bodies == []


@pytest.mark.anyio
async def test_a_refused_request_uploads_nothing(tmp_path, image_file):
    recorder = Recorder(ack("x"))
    spec = VideoSpec(operation="reference", prompt="p", duration=5, aspect_ratio="4:3",
                     reference_images=[file_ref(image_file, "image")])
    with pytest.raises(errors.UnsupportedByProvider) as caught:
        await provider_with(recorder, tmp_path).submit(make_job(spec, "pro"))
    assert "4:3" in str(caught.value) and recorder.bodies == []


# --- acknowledgements and results -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("body", [{"data": []}, None])
async def test_both_ack_forms_are_accepted(body, tmp_path):
    job = text_job()
    recorder = Recorder(body if body is not None else ack(job.job_id))
    assert await provider_with(recorder, tmp_path).submit(job) == Accepted(remote_id=job.job_id)
    assert recorder.bodies[0][0]["taskUUID"] == job.job_id


@pytest.mark.anyio
async def test_results_are_cumulative_and_deduped_by_video_uuid(tmp_path):
    job = text_job(num_videos=2)
    job = job.model_copy(update={"remote_id": job.job_id})
    head = {"taskType": "videoInference", "taskUUID": job.job_id}
    one = {**head, "status": "success", "videoUUID": "a" * 8, "videoURL": "https://vm.runware.ai/a.mp4", "cost": 0.56}
    two = {**head, "status": "success", "videoUUID": "b" * 8, "videoURL": "https://vm.runware.ai/b.mp4", "cost": 0.56}
    recorder = Recorder({"data": [{**head, "status": "processing"}, {**head, "status": "processing"}]},
                        {"data": [one, {**head, "status": "processing"}]},
                        {"data": [one, one, {**head, "status": "processing"}]},
                        {"data": [one, two, one]})
    provider = provider_with(recorder, tmp_path)
    results = [await provider.poll(job) for _ in range(4)]
    assert results[:3] == [Running(progress=None), Running(progress=50.0), Running(progress=50.0)]
    assert isinstance(results[3], Done)
    assert [v.remote_key for v in results[3].videos] == ["a" * 8, "b" * 8]
    assert results[3].cost_usd == 1.12


@pytest.mark.anyio
async def test_items_of_other_tasks_are_ignored_and_unknown_status_fails(tmp_path):
    job = text_job().model_copy(update={"remote_id": "r"})
    other = {"taskType": "videoInference", "taskUUID": "other", "status": "success", "videoUUID": "v",
             "videoURL": "https://vm.runware.ai/v.mp4", "cost": 1.0}
    recorder = Recorder({"data": [other]}, {"data": [{"taskUUID": "r", "status": "paused"}]},
                        {"data": [{"taskUUID": "r", "status": "success", "videoUUID": "v"}]})
    provider = provider_with(recorder, tmp_path)
    assert await provider.poll(job) == Running(progress=None)
    unknown = await provider.poll(job)
    assert isinstance(unknown, Failed) and unknown.code == "provider_protocol" and "paused" in unknown.message
    missing = await provider.poll(job)
    assert isinstance(missing, Failed) and missing.code == "provider_protocol"


@pytest.mark.anyio
async def test_cancel_makes_no_request_and_says_no(tmp_path):
    recorder = Recorder(ack("x"))
    assert await provider_with(recorder, tmp_path).cancel(text_job()) is False
    assert recorder.bodies == []


@pytest.mark.anyio
async def test_unacknowledged_job_is_polled_by_its_job_id(tmp_path):
    job = text_job()
    assert job.remote_id is None
    recorder = Recorder({"data": [{"taskType": "videoInference", "taskUUID": job.job_id, "status": "processing"}]})
    assert isinstance(await provider_with(recorder, tmp_path).poll(job), Running)
    assert recorder.bodies == [[{"taskType": "getResponse", "taskUUID": job.job_id}]]


# --- error mapping ----------------------------------------------------------------------------


def envelope(code: str, message: str = "", status: int = 400, parameter: str | None = None,
             task_uuid: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    err = {"code": code, "message": message or f"{code} happened (key {KEY})", "taskType": "videoInference"}
    if parameter:
        err["parameter"] = parameter
    if task_uuid:
        err["taskUUID"] = task_uuid
    return httpx.Response(status, json={"errors": [err]}, headers=headers)


SUBMIT_ERRORS = [
    (envelope("invalidApiKey", status=401, parameter="apiKey"), errors.AuthenticationFailed, "RUNWARE_API_KEY"),
    (httpx.Response(401, text="Unauthorized"), errors.AuthenticationFailed, "RUNWARE_API_KEY"),
    (envelope("insufficientCredits", status=402), errors.InsufficientCredits, "credits"),
    (envelope("paymentRequired", status=402), errors.InsufficientCredits, "credits"),
    (envelope("forbidden", status=403), errors.AuthenticationFailed, "RUNWARE_API_KEY"),
    (envelope("invalidDuration", parameter="duration"), errors.ProviderRejected, "`duration`"),
    (envelope("missingPositivePrompt", parameter="positivePrompt"), errors.ProviderRejected, "`positivePrompt`"),
    (envelope("unsupportedDimensions", parameter="width"), errors.ProviderRejected, "`width`"),
    (envelope("unknownParameter", parameter="seed"), errors.ProviderRejected, "`seed`"),
    (envelope("contentPolicyViolation"), errors.ContentPolicy, "safety filter"),
    (envelope("promptBlocked", status=200), errors.ContentPolicy, "safety filter"),
    (envelope("rateLimitExceeded", status=429, headers={"Retry-After": "7"}), errors.RateLimited, "rate"),
    (envelope("rateLimitExceeded", status=400), errors.RateLimited, "rate"),
    (envelope("timeoutProvider", status=400), errors.ProviderTimeout, "timed out"),
    (envelope("noAvailableServer", status=400), errors.ProviderUnavailable, "cannot serve"),
    (httpx.Response(500, text="Internal Server Error"), errors.ProviderUnavailable, "HTTP 500"),
    (httpx.Response(502, text="Bad Gateway"), errors.ProviderUnavailable, "HTTP 502"),
    (httpx.Response(503, text="Service Unavailable", headers={"Retry-After": "3"}), errors.ProviderUnavailable,
     "HTTP 503"),
    (envelope("somethingNew"), errors.ProviderRejected, "somethingNew"),
    (httpx.Response(200, text='{"data": [{"taskType": "videoInfer'), errors.ProviderUnavailable, "not JSON"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("response,cls,words", SUBMIT_ERRORS, ids=[f"{r.status_code}-{c.__name__}-{i}"
                                                                      for i, (r, c, _) in enumerate(SUBMIT_ERRORS)])
async def test_submit_error_mapping(response, cls, words, tmp_path):
    with pytest.raises(errors.ProviderError) as caught:
        await provider_with(Recorder(response), tmp_path).submit(text_job())
    exc = caught.value
    assert type(exc) is cls
    assert words in str(exc)
    assert KEY not in str(exc) and KEY not in json.dumps(exc.to_info())
    if cls is errors.RateLimited and response.status_code == 429:
        assert exc.retry_after == 7.0
    if response.status_code == 503:
        assert exc.retry_after == 3.0
    if cls in (errors.ProviderRejected, errors.ContentPolicy, errors.InsufficientCredits):
        assert exc.may_have_accepted is False and exc.retryable is False


@pytest.mark.anyio
async def test_a_reused_task_uuid_means_the_first_submit_arrived(tmp_path):
    job = text_job()
    recorder = Recorder(envelope("duplicateTaskUUID", parameter="taskUUID", task_uuid=job.job_id))
    assert await provider_with(recorder, tmp_path).submit(job) == Accepted(remote_id=job.job_id)


POLL_FAILURES = [
    ({"status": "error", "error": {"code": "contentPolicyViolation", "message": "blocked"}}, "content_policy", False),
    ({"status": "error", "error": {"code": "nsfwContentDetected", "message": "nsfw"}}, "content_policy", False),
    ({"status": "error", "error": {"code": "timeoutProvider", "message": "slow"}}, "provider_timeout", True),
    ({"status": "error", "error": {"code": "inferenceError", "message": "boom"}}, "job_failed", False),
    ({"status": "error", "error": {"code": "invalidVideo", "message": "bad", "parameter": "inputs.video"}},
     "provider_rejected", False),
    ({"code": "providerContentPolicyViolation", "message": "blocked"}, "content_policy", False),
]


@pytest.mark.anyio
@pytest.mark.parametrize("item,code,retryable", POLL_FAILURES, ids=[p[1] + str(i) for i, p in enumerate(POLL_FAILURES)])
async def test_poll_error_items_are_job_failures(item, code, retryable, tmp_path):
    job = text_job().model_copy(update={"remote_id": "t"})
    result = await provider_with(Recorder({"data": [{"taskUUID": "t", **item}]}), tmp_path).poll(job)
    assert isinstance(result, Failed)
    assert (result.code, result.retryable) == (code, retryable)
    if code == "provider_rejected":
        assert "inputs.video" in result.message


@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 400])
async def test_poll_errors_envelope_is_a_job_failure(status, tmp_path):
    job = text_job().model_copy(update={"remote_id": "t"})
    response = envelope("nsfwContentDetected", status=status, task_uuid="t")
    result = await provider_with(Recorder(response), tmp_path).poll(job)
    assert isinstance(result, Failed) and result.code == "content_policy"
    assert KEY not in result.message


@pytest.mark.anyio
async def test_unknown_task_is_interrupted_for_an_unacknowledged_job(tmp_path):
    job = text_job()
    response = envelope("taskFailedOrNotFound", task_uuid=job.job_id, parameter="taskUUID")
    result = await provider_with(Recorder(response), tmp_path).poll(job)
    assert isinstance(result, Failed) and result.code == "interrupted"
    assert "never reached Runware" in result.message and "again" in result.hint

    acknowledged = await provider_with(Recorder(response), tmp_path).poll(job.model_copy(
        update={"remote_id": job.job_id}))
    assert isinstance(acknowledged, Failed) and acknowledged.code == "remote_not_found"


@pytest.mark.anyio
@pytest.mark.parametrize("response,cls", [
    (envelope("invalidApiKey", status=401), errors.AuthenticationFailed),
    (envelope("insufficientCredits", status=402), errors.InsufficientCredits),
    (envelope("rateLimitExceeded", status=429, headers={"Retry-After": "2"}), errors.RateLimited),
    (httpx.Response(503, text="down"), errors.ProviderUnavailable),
    (httpx.Response(200, text="{not json"), errors.ProviderUnavailable),
    (httpx.Response(404, text="<html>no such route</html>"), errors.RemoteNotFound),
])
async def test_poll_request_failures_raise(response, cls, tmp_path):
    job = text_job().model_copy(update={"remote_id": "t"})
    with pytest.raises(cls) as caught:
        await provider_with(Recorder(response), tmp_path).poll(job)
    assert KEY not in str(caught.value)


@pytest.mark.anyio
async def test_transport_failure_at_submit_may_have_reached_runware(tmp_path):
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    provider = RunwareProvider(context(httpx.AsyncClient(transport=httpx.MockTransport(broken)), tmp_path))
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await provider.submit(text_job())
    assert caught.value.may_have_accepted is True

"""The Replicate emulator follows Replicate's documented prediction API (providers.md §7b), checked with
raw HTTP, and the adapter speaks it against a live emulator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kling_mcp.jobs.model import Job
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.replicate import ReplicateProvider
from kling_mcp.requests import VideoSpec
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.replicate import API_KEY, ReplicateState, create_app, parse_duration
from tests.support import MemoryKV

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CREATE = "/v1/models/kwaivgi/kling-o1/predictions"


@pytest.fixture
def emu() -> Iterator[tuple[str, ReplicateState]]:
    state = ReplicateState()
    with serve(create_app(state)) as base:
        yield base, state


def test_a_prediction_advances_one_state_per_poll(emu):
    base, state = emu
    with httpx.Client() as http:
        created = http.post(base + CREATE, headers=AUTH, json={"input": {"prompt": "p"}})
        assert created.status_code == 201 and created.json()["status"] == "starting"
        get = created.json()["urls"]["get"]
        polled = [http.get(get, headers=AUTH).json() for _ in range(2)]
    assert [p["status"] for p in polled] == ["processing", "succeeded"]
    assert polled[1]["output"].startswith(f"{base}/files/") and polled[1]["data_removed"] is False


def test_input_validation_is_a_422_with_invalid_fields(emu):
    base, _ = emu
    with httpx.Client() as http:
        answer = http.post(base + CREATE, headers=AUTH, json={"input": {
            "prompt": "p", "duration": 7, "end_image": "https://x.test/e.png", "colour": "red"}})
    assert answer.status_code == 422
    fields = {f["field"] for f in answer.json()["invalid_fields"]}
    assert fields == {"input.duration", "input.end_image", "input.colour"}


def test_cancel_after_is_parsed_and_a_malformed_one_refused(emu):
    base, state = emu
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("soon") is None
    with httpx.Client() as http:
        bad = http.post(base + CREATE, headers={**AUTH, "Cancel-After": "soon"}, json={"input": {"prompt": "p"}})
        assert bad.status_code == 400
        state.outcome = "never_starts"
        made = http.post(base + CREATE, headers={**AUTH, "Cancel-After": "2m"}, json={"input": {"prompt": "p"}})
        get = made.json()["urls"]["get"]
        assert http.get(get, headers=AUTH).json()["status"] == "starting"
        state.clock_offset_s = 121
        assert http.get(get, headers=AUTH).json()["status"] == "aborted"


def test_files_api_links_are_accepted_as_inputs_and_unknown_ones_refused(emu):
    base, _ = emu
    with httpx.Client() as http:
        up = http.post(f"{base}/v1/files", headers=AUTH, files={"content": ("a.png", png_bytes(), "image/png")})
        assert up.status_code == 201
        link = up.json()["urls"]["get"]
        ok = http.post(base + CREATE, headers=AUTH, json={"input": {"prompt": "p", "start_image": link}})
        gone = http.post(base + CREATE, headers=AUTH,
                         json={"input": {"prompt": "p", "start_image": f"{base}/v1/files/nope"}})
    assert ok.status_code == 201 and gone.status_code == 422


def test_deleted_outputs_answer_404_and_say_data_removed(emu):
    base, state = emu
    with httpx.Client() as http:
        get = http.post(base + CREATE, headers=AUTH, json={"input": {"prompt": "p"}}).json()["urls"]["get"]
        output = [http.get(get, headers=AUTH).json() for _ in range(2)][-1]["output"]
        state.delete_outputs()
        assert http.get(output).status_code == 404
        after = http.get(get, headers=AUTH).json()
    assert after["data_removed"] is True and after["output"] is None


async def test_the_adapter_drives_a_prediction_to_done_and_to_failed(emu, tmp_path):
    base, state = emu
    state.outcomes = ["succeeded", "content_policy"]
    async with httpx.AsyncClient() as client:
        replicate = ReplicateProvider(ProviderContext(name="replicate", api_key=API_KEY, base_url=f"{base}/v1",
                                                      client=client, kv=MemoryKV(), data_dir=tmp_path))
        results = []
        for _ in range(2):
            job = Job(provider="replicate", model="kwaivgi/kling-o1", tier="standard",
                      spec=VideoSpec(operation="text", prompt="p", duration=5))
            job = job.model_copy(update={"remote_id": (await replicate.submit(job)).remote_id})
            results.append([await replicate.poll(job) for _ in range(2)])
    assert results[0][0] == Running() and isinstance(results[0][1], Done)
    assert isinstance(results[1][1], Failed) and results[1][1].code == "content_policy"

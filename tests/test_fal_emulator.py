"""The fal emulator follows fal's documented queue protocol (providers.md §7, §9), checked with raw
HTTP, and the adapter speaks it against a live emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kling_mcp.jobs.model import Job
from kling_mcp.providers.base import Done, Failed, ProviderContext, Running
from kling_mcp.providers.fal import FalProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.fal import API_KEY, FalState, create_app
from tests.support import MemoryKV

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Key {API_KEY}"}
I2V = "fal-ai/kling-video/o1/image-to-video"


@pytest.fixture
def emu() -> Iterator[tuple[str, FalState]]:
    state = FalState()
    with serve(create_app(state)) as base:
        yield base, state


def image(base: str, state: FalState) -> str:
    return f"{base}/files/{state.files.add(png_bytes(), suffix='.png', content_type='image/png')}"


def test_submit_answers_owner_alias_urls_and_the_full_endpoint_path_finds_nothing(emu):
    base, state = emu
    with httpx.Client() as http:
        answer = http.post(f"{base}/{I2V}", headers=AUTH, json={"prompt": "p", "start_image_url": image(base, state)})
        assert answer.status_code == 200
        data = answer.json()
        rid = data["request_id"]
        assert data["status"] == "IN_QUEUE"
        assert data["status_url"] == f"{base}/fal-ai/kling-video/requests/{rid}/status"
        assert data["response_url"] == f"{base}/fal-ai/kling-video/requests/{rid}"
        assert data["cancel_url"] == f"{base}/fal-ai/kling-video/requests/{rid}/cancel"
        assert http.get(f"{base}/{I2V}/requests/{rid}/status", headers=AUTH).status_code in (404, 405)
        assert http.get(data["response_url"], headers=AUTH).status_code == 400          # still in progress
        statuses = [http.get(data["status_url"], headers=AUTH).json()["status"] for _ in range(3)]
        assert statuses == ["IN_PROGRESS", "COMPLETED", "COMPLETED"]
        result = http.get(data["response_url"], headers=AUTH).json()
        assert set(result) == {"video"} and result["video"]["content_type"] == "video/mp4"   # no envelope


def test_invalid_input_is_completed_and_fails_only_on_the_result(emu):
    base, state = emu
    with httpx.Client() as http:
        data = http.post(f"{base}/{I2V}", headers=AUTH, json={"prompt": "p", "duration": 5}).json()
        assert [http.get(data["status_url"], headers=AUTH).json()["status"] for _ in range(2)] == \
            ["IN_PROGRESS", "COMPLETED"]
        failed = http.get(data["response_url"], headers=AUTH)
    assert failed.status_code == 422
    detail = failed.json()["detail"]
    assert {"loc": ["body", "start_image_url"], "msg": "Field required", "type": "missing"} in detail
    assert any(d["loc"] == ["body", "duration"] for d in detail)                 # an integer, not "5"


def test_auth_is_the_key_scheme_and_unknown_endpoints_are_404(emu):
    base, _ = emu
    with httpx.Client() as http:
        bearer = http.post(f"{base}/{I2V}", headers={"Authorization": f"Bearer {API_KEY}"}, json={})
        assert bearer.status_code == 401 and "detail" in bearer.json()
        assert http.post(f"{base}/fal-ai/kling-video/o1/text-to-video", headers=AUTH, json={}).status_code == 404


def test_storage_token_then_upload_to_the_named_host(emu):
    base, state = emu
    with httpx.Client() as http:
        token = http.post(f"{base}/storage/auth/token?storage_type=fal-cdn-v3", headers=AUTH, json={}).json()
        assert token["base_url"] == f"{base}/cdn" and token["token_type"] == "Bearer"
        refused = http.post(f"{token['base_url']}/files/upload", headers=AUTH, content=b"x")
        assert refused.status_code == 401                                        # the key is not the token
        stored = http.post(f"{token['base_url']}/files/upload", content=png_bytes(),
                           headers={"Authorization": f"Bearer {token['token']}", "Content-Type": "image/png"}).json()
        assert http.get(stored["access_url"]).content == png_bytes()


async def test_the_adapter_drives_a_request_to_done_against_the_emulator(emu, tmp_path):
    base, state = emu
    async with httpx.AsyncClient() as client:
        fal = FalProvider(ProviderContext(name="fal", api_key=API_KEY, base_url=base, client=client, kv=MemoryKV(),
                                          data_dir=tmp_path, extra_urls={"KLING_MCP_FAL_STORAGE_URL": base}))
        frame = MediaRef(kind="url", value=image(base, state), media="image")
        job = Job(provider="fal", model=I2V, tier="pro",
                  spec=VideoSpec(operation="image", prompt="p", first_frame=frame, duration=5))
        accepted = await fal.submit(job)
        job = job.model_copy(update={"remote_id": accepted.remote_id, "provider_data": accepted.data})
        results = [await fal.poll(job) for _ in range(2)]
    assert results[0] == Running()
    assert isinstance(results[1], Done)


async def test_a_content_policy_failure_reaches_the_adapter_as_failed(emu, tmp_path: Path):
    base, state = emu
    state.outcome = "content_policy"
    async with httpx.AsyncClient() as client:
        fal = FalProvider(ProviderContext(name="fal", api_key=API_KEY, base_url=base, client=client, kv=MemoryKV(),
                                          data_dir=tmp_path))
        frame = MediaRef(kind="url", value=image(base, state), media="image")
        job = Job(provider="fal", model=I2V, tier="pro",
                  spec=VideoSpec(operation="image", prompt="p", first_frame=frame, duration=5))
        accepted = await fal.submit(job)
        job = job.model_copy(update={"remote_id": accepted.remote_id, "provider_data": accepted.data})
        await fal.poll(job)
        result = await fal.poll(job)
    assert isinstance(result, Failed) and result.code == "content_policy"

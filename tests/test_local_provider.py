"""The local preview provider through the VideoProvider Protocol: real renders, decoded with PyAV."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kling_mcp import media
from kling_mcp.jobs.model import Job
from kling_mcp.providers import create_provider
from kling_mcp.providers.base import Accepted, Done, Failed, ProviderContext, Running, VideoProvider
from kling_mcp.providers.local import LocalProvider
from kling_mcp.requests import MediaRef, VideoSpec
from tests.emulators._media import png_bytes
from tests.support import MemoryKV

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def _ctx(client: httpx.AsyncClient, data_dir: Path) -> ProviderContext:
    return ProviderContext(name="local", api_key=None, base_url=None, client=client, kv=MemoryKV(), data_dir=data_dir)


@pytest.fixture
def provider(client, tmp_path) -> LocalProvider:
    return LocalProvider(_ctx(client, tmp_path / "data"))


def _file(path: Path, media_kind: str = "image") -> MediaRef:
    return MediaRef(kind="file", value=str(path), media=media_kind)  # type: ignore[arg-type]


def _job(operation: str, prompt: str = "a paper boat drifts down a rainy street", tier: str = "standard",
         **spec: Any) -> Job:
    return Job(provider="local", model="local-preview", tier=tier,
               spec=VideoSpec(operation=operation, prompt=prompt, **spec))  # type: ignore[arg-type]


async def _run(provider: LocalProvider, job: Job, timeout: float = 60) -> tuple[Done | Failed, list[float]]:
    accepted = await provider.submit(job)
    assert accepted == Accepted(remote_id=job.job_id, cost_usd=0.0)
    progress: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await provider.poll(job)
        if isinstance(result, (Done, Failed)):
            return result, progress
        assert isinstance(result, Running)
        progress.append(result.progress or 0.0)
        await anyio.sleep(0.05)
    raise AssertionError("the local render did not finish in time")


def _check_video(path: str, width: int, height: int, seconds: float) -> None:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == (width, height)
        assert float(stream.average_rate) == 24
        assert abs(frames - seconds * 24) <= 1
        assert float(stream.duration * stream.time_base) == pytest.approx(seconds, abs=1 / 24 + 1e-6)


async def test_is_a_video_provider_built_by_name(client, tmp_path):
    provider = create_provider(_ctx(client, tmp_path))
    assert isinstance(provider, LocalProvider) and isinstance(provider, VideoProvider)
    assert provider.name == "local"


async def test_submit_does_not_render(provider, tmp_path):
    job = _job("text", duration=3)
    await provider.submit(job)
    assert not (tmp_path / "data" / "work" / job.job_id).exists()


async def test_text_job(provider, tmp_path):
    job = _job("text", duration=3)
    result, progress = await _run(provider, job)
    assert isinstance(result, Done) and result.cost_usd == 0.0
    [video] = result.videos
    assert video.path == str(tmp_path / "data" / "work" / job.job_id / "render-0.mp4")
    assert video.remote_key == f"{job.job_id}-0"
    _check_video(video.path, 640, 360, 3)
    assert progress and progress == sorted(progress) and all(0 <= p <= 100 for p in progress)


async def test_image_job_portrait_first_and_last_frame(provider, image_file, image_file2):
    job = _job("image", aspect_ratio="9:16", duration=3, first_frame=_file(image_file),
               last_frame=_file(image_file2))
    result, _ = await _run(provider, job)
    assert isinstance(result, Done)
    _check_video(result.videos[0].path, 360, 640, 3)


async def test_reference_job_fetches_url_images(provider, image_file):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.emulators._server import serve

    hits: list[str] = []

    def image(request):
        hits.append(request.url.path)
        return Response(png_bytes(120, 80, (10, 200, 90)), media_type="image/png")

    app = Starlette(routes=[Route("/ref.png", image)])
    with serve(app) as base:
        url_ref = MediaRef(kind="url", value=f"{base}/ref.png", media="image")
        job = _job("reference", aspect_ratio="1:1", duration=3, reference_images=[url_ref, _file(image_file)])
        result, _ = await _run(provider, job)
    assert isinstance(result, Done), result
    _check_video(result.videos[0].path, 480, 480, 3)
    assert hits == ["/ref.png"]
    fetched = list((Path(result.videos[0].path).parent / "inputs").iterdir())
    assert len(fetched) == 1 and fetched[0].read_bytes() == png_bytes(120, 80, (10, 200, 90))


async def test_edit_job_follows_the_input_video(provider, video_file):
    # the ref carries no size or length: the provider probes the 4 s 320x180 file
    job = _job("edit", prompt="make it night", video=_file(video_file, "video"))
    result, _ = await _run(provider, job)
    assert isinstance(result, Done), result
    _check_video(result.videos[0].path, 640, 360, 4.0)


async def test_pro_tier_size(provider):
    job = _job("text", tier="pro", aspect_ratio="1:1", duration=3)
    result, _ = await _run(provider, job)
    assert isinstance(result, Done)
    _check_video(result.videos[0].path, 720, 720, 3)


async def test_two_videos_differ(provider):
    job = _job("text", duration=3, num_videos=2, seed=7)
    result, _ = await _run(provider, job)
    assert isinstance(result, Done)
    assert [v.remote_key for v in result.videos] == [f"{job.job_id}-0", f"{job.job_id}-1"]
    paths = [v.path for v in result.videos]
    for path in paths:
        _check_video(path, 640, 360, 3)
    assert media.sha256_file(paths[0]) != media.sha256_file(paths[1])


async def test_finished_outputs_survive_a_restart(client, tmp_path, provider):
    job = _job("text", duration=3)
    first, _ = await _run(provider, job)
    assert isinstance(first, Done)
    before = Path(first.videos[0].path).stat().st_mtime_ns
    restarted = LocalProvider(_ctx(client, tmp_path / "data"))
    again = await restarted.poll(job)
    assert isinstance(again, Done) and again.videos == first.videos
    assert Path(first.videos[0].path).stat().st_mtime_ns == before   # not rendered again


async def test_cancel_stops_the_render(provider):
    job = _job("text", tier="pro", duration=10, num_videos=2)
    await provider.submit(job)
    deadline = time.monotonic() + 30
    while True:
        result = await provider.poll(job)
        assert isinstance(result, Running)
        if (result.progress or 0) > 0:
            break
        assert time.monotonic() < deadline
        await anyio.sleep(0.02)
    assert await provider.cancel(job) is True
    workdir = provider._workdir(job)
    assert not any(p.suffix == ".mp4" for p in workdir.iterdir())   # neither finished nor partial files
    after = await provider.poll(job)
    assert isinstance(after, Failed) and after.code == "cancelled"


async def test_missing_input_file_fails_the_job(provider, tmp_path):
    missing = tmp_path / "nowhere.png"
    job = _job("image", duration=3, first_frame=_file(missing))
    result, _ = await _run(provider, job)
    assert isinstance(result, Failed) and result.code == "render_failed"
    assert str(missing) in result.message


async def test_non_image_input_fails_the_job(provider, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    job = _job("reference", duration=3, reference_images=[_file(text)])
    result, _ = await _run(provider, job)
    assert isinstance(result, Failed) and result.code == "render_failed"
    assert "notes.txt" in result.message and "is not an image/video file" in result.message


async def test_unreadable_url_fails_the_job(provider):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.emulators._server import serve

    app = Starlette(routes=[Route("/gone.png", lambda request: Response("no", status_code=404))])
    with serve(app) as base:
        job = _job("image", duration=3, first_frame=MediaRef(kind="url", value=f"{base}/gone.png", media="image"))
        result, _ = await _run(provider, job)
    assert isinstance(result, Failed) and result.code == "invalid_input_file"
    assert "HTTP 404" in result.message and "gone.png" in result.message

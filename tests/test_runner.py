"""The job runner with a scripted fake provider and a real diskcache store in tmp_path."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import httpx
import pytest

from kling_mcp import errors
from kling_mcp.config import Settings
from kling_mcp.jobs.diskcache_store import DiskcacheStore as JobStore
from kling_mcp.jobs.model import InvalidTransition, Job, JobStatus, RemoteVideo
from kling_mcp.jobs.runner import JobRunner
from kling_mcp.providers.base import Accepted, Done, Failed, Running
from kling_mcp.requests import VideoSpec
from tests.emulators._media import mp4_bytes

pytestmark = pytest.mark.anyio


@dataclass
class ScriptedProvider:
    """Answers polls from a script; each item is a PollResult or an exception to raise."""

    script: list = field(default_factory=list)
    name: str = "runpod"
    polls: int = 0

    async def submit(self, job: Job) -> Accepted:
        return Accepted(remote_id="r-1")

    async def poll(self, job: Job):
        self.polls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item

    async def cancel(self, job: Job) -> bool:
        return True


def _settings(tmp_path, **over) -> Settings:
    return Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path), "KLING_MCP_POLL_INTERVAL_S": "0.01",
                              "KLING_MCP_POLL_MAX_INTERVAL_S": "0.02"}, **over)


def _job(provider: str = "runpod", remote_id: str | None = "r-1", status=JobStatus.SUBMITTED) -> Job:
    return Job(provider=provider, model="m", spec=VideoSpec(operation="text", prompt="p"), remote_id=remote_id,
               status=status)


async def _run(tmp_path, provider, job: Job, seconds: float = 5.0, **settings_over):
    settings = _settings(tmp_path, **settings_over)
    store = JobStore(settings.data_dir)
    await store.create(job)
    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
        runner = JobRunner(store, lambda name: provider, client, settings)
        await runner.start(tg)
        final = await runner.wait(job.job_id, seconds)
        tg.cancel_scope.cancel()
    return final, store


def test_state_machine_rejects_illegal_moves():
    job = _job(status=JobStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition):
        job.moved(JobStatus.RUNNING)
    assert _job().moved(JobStatus.RUNNING).status == JobStatus.RUNNING
    assert _job().moved(JobStatus.FAILED).finished_at is not None


async def test_running_then_done_downloads_a_local_file(tmp_path):
    src = tmp_path / "render.mp4"
    src.write_bytes(mp4_bytes(1.0, 160, 90))
    provider = ScriptedProvider([Running(progress=40), Done([RemoteVideo(path=str(src))], cost_usd=0.5)])
    job = _job()
    final, store = await _run(tmp_path, provider, job)
    assert final.status == JobStatus.SUCCEEDED
    assert final.cost_usd == 0.5 and final.progress == 100
    video = final.videos[0]
    assert video.width == 160 and video.height == 90 and video.size_bytes > 0
    assert video.path.startswith(str(tmp_path / "videos" / job.job_id))
    assert (await store.get(job.job_id)).status == JobStatus.SUCCEEDED


async def test_provider_failure_is_a_terminal_record(tmp_path):
    provider = ScriptedProvider([Failed(code="content_policy", message="blocked by filter")])
    final, _ = await _run(tmp_path, provider, _job())
    assert final.status == JobStatus.FAILED
    assert final.error.code == "content_policy" and "blocked" in final.error.message and final.error.hint


async def test_auth_error_fails_at_once(tmp_path):
    provider = ScriptedProvider([errors.AuthenticationFailed("bad key", hint="Set RUNPOD_API_KEY")])
    final, _ = await _run(tmp_path, provider, _job())
    assert final.status == JobStatus.FAILED and final.error.code == "auth_failed"
    assert provider.polls == 1


async def test_transient_errors_then_success(tmp_path):
    src = tmp_path / "r.mp4"
    src.write_bytes(mp4_bytes(1.0, 160, 90))
    provider = ScriptedProvider([errors.ProviderUnavailable("503"), errors.RateLimited("429", retry_after=0.01),
                                 Done([RemoteVideo(path=str(src))])])
    final, _ = await _run(tmp_path, provider, _job())
    assert final.status == JobStatus.SUCCEEDED and provider.polls == 3


async def test_n_consecutive_transient_errors_fail_retryable(tmp_path):
    provider = ScriptedProvider([errors.ProviderUnavailable("502 bad gateway")])
    final, _ = await _run(tmp_path, provider, _job(), max_consecutive_errors=3)
    assert final.status == JobStatus.FAILED
    assert final.error.retryable and "3 consecutive failures" in final.error.message
    assert provider.polls == 3


async def test_unknown_status_becomes_failed_not_a_hang(tmp_path):
    provider = ScriptedProvider([Failed(code="provider_protocol", message="unknown status 'WEIRD'")])
    final, _ = await _run(tmp_path, provider, _job())
    assert final.status == JobStatus.FAILED and final.error.code == "provider_protocol"


async def test_deadline(tmp_path):
    provider = ScriptedProvider([Running(progress=10)])
    final, _ = await _run(tmp_path, provider, _job(), job_deadline_s=0.2)
    assert final.status == JobStatus.FAILED and final.error.code == "deadline_exceeded"


async def test_pending_without_remote_id_is_interrupted_not_resubmitted(tmp_path):
    provider = ScriptedProvider([Running()])
    job = _job(remote_id=None, status=JobStatus.PENDING)
    final, _ = await _run(tmp_path, provider, job, seconds=0.5)
    assert final.status == JobStatus.FAILED and final.error.code == "interrupted"
    assert provider.polls == 0


async def test_pending_with_client_chosen_id_is_recovered_by_polling(tmp_path):
    src = tmp_path / "r.mp4"
    src.write_bytes(mp4_bytes(1.0, 160, 90))
    provider = ScriptedProvider([Done([RemoteVideo(path=str(src))])], name="runware")
    job = _job(provider="runware", remote_id=None, status=JobStatus.PENDING)
    final, _ = await _run(tmp_path, provider, job)
    assert final.status == JobStatus.SUCCEEDED and provider.polls == 1


async def test_wait_reports_progress_changes(tmp_path):
    settings = _settings(tmp_path)
    store = JobStore(settings.data_dir)
    job, _ = await store.create(_job())
    seen: list[float] = []
    provider = ScriptedProvider([Running(progress=10), Running(progress=60), Failed(code="x", message="y")])

    async def on_update(j: Job) -> None:
        seen.append(j.progress)

    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
        runner = JobRunner(store, lambda name: provider, client, settings)
        await runner.start(tg)
        final = await runner.wait(job.job_id, 5, on_update)
        tg.cancel_scope.cancel()
    assert final.status == JobStatus.FAILED
    assert 60 in seen and seen == sorted(seen)


async def test_wait_on_unknown_job_raises(tmp_path):
    settings = _settings(tmp_path)
    async with httpx.AsyncClient() as client:
        runner = JobRunner(JobStore(settings.data_dir), lambda n: ScriptedProvider(), client, settings)
        with pytest.raises(errors.UnknownJob):
            await runner.wait("nope", 0)


async def test_store_survives_reopen_and_keeps_ledger_and_kv(tmp_path):
    store = JobStore(tmp_path)
    job, _ = await store.create(_job())
    await store.reserve(job.job_id, "2026-02-01", 1.25, None)
    await store.kv_set("upload:abc", {"url": "u"}, expire_s=60)
    await store.close()
    again = JobStore(tmp_path)
    assert (await again.get(job.job_id)).job_id == job.job_id
    assert await again.spent("2026-02-01") == 1.25
    assert await again.kv_get("upload:abc") == {"url": "u"}
    await again.close()

"""The background runner: polls providers, downloads results, writes a terminal record.

One task per unfinished job runs in the task group the server's lifespan owns. Every path ends in
a terminal record: a provider failure, the deadline, N consecutive transient errors, a download
that keeps failing. At start-up every non-terminal job in the store is resumed; a ``pending``
job without a remote id is polled only where our job id is the provider's task id (Runware,
local), and otherwise marked ``failed`` (``interrupted``), never resubmitted.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .. import errors, media
from ..catalog import PROVIDERS, variant_for_model
from ..config import Settings
from ..providers.base import Done, Failed, Running, VideoProvider
from ..requests import ErrorView
from .model import Job, JobStatus, StoredVideo
from .store import JobStore

if TYPE_CHECKING:  # httpx and the downloader load with the first download, not at start-up
    import httpx

log = logging.getLogger("kling_mcp.runner")

ProgressCallback = Callable[[Job], Awaitable[None]]
MAX_IN_FLIGHT = 16


def _error_view(exc: errors.KlingError) -> ErrorView:
    return ErrorView(**exc.to_info())


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        provider_for: Callable[[str], VideoProvider],
        client: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        settings: Settings,
    ) -> None:
        self.store = store
        self._provider_for = provider_for
        self._client_source = client
        self._settings = settings
        self._in_flight: dict[str, anyio.Semaphore] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._active: dict[str, anyio.CancelScope] = {}
        self._changed: dict[str, anyio.Event] = {}

    @property
    def _client(self) -> httpx.AsyncClient:
        source = self._client_source
        return source() if callable(source) else source

    def _limit(self, provider: str) -> anyio.Semaphore:
        """At most MAX_IN_FLIGHT polls per provider at once: hundreds of jobs must not poll in lock-step."""
        if provider not in self._in_flight:
            self._in_flight[provider] = anyio.Semaphore(MAX_IN_FLIGHT)
        return self._in_flight[provider]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, tg: anyio.abc.TaskGroup) -> int:
        """Attach to the lifespan task group and resume every unfinished job; returns how many."""
        self._tg = tg
        resumed = 0
        for job in self.store.unfinished():
            if job.remote_id is None and not PROVIDERS[job.provider].client_chosen_id:
                self.finish(
                    job,
                    JobStatus.FAILED,
                    error=_error_view(
                        errors.JobInterrupted(
                            f"the server stopped while submitting this job to {job.provider}, before {job.provider} "
                            "acknowledged it."
                        )
                    ),
                )
                continue
            self.track(job.job_id)
            resumed += 1
        return resumed

    def track(self, job_id: str) -> None:
        if self._tg is None:
            raise RuntimeError("runner not started")
        if job_id not in self._active:
            self._active[job_id] = anyio.CancelScope()
            self._tg.start_soon(self._drive, job_id)

    def ensure_tracked(self, job: Job) -> None:
        """Track ``job`` if it is unfinished and nothing in this process is driving it."""
        if not job.terminal and self._tg is not None and job.job_id not in self._active:
            self.track(job.job_id)

    def stop_tracking(self, job_id: str) -> None:
        scope = self._active.get(job_id)
        if scope is not None:
            scope.cancel()

    # --- records ---------------------------------------------------------------------------

    def save(self, job: Job) -> Job:
        self.store.put(job)
        event = self._changed.pop(job.job_id, None)
        if event is not None:
            event.set()
        return job

    def finish(self, job: Job, status: JobStatus, **changes: object) -> Job:
        current = self.store.get(job.job_id) or job
        if current.terminal:
            return current
        return self.save(current.moved(status, **changes))

    async def wait(self, job_id: str, seconds: float, on_update: ProgressCallback | None = None) -> Job:
        """Wait up to ``seconds`` for the job to finish, calling ``on_update`` on every change."""
        job = self.store.get(job_id)
        if job is None:
            raise errors.UnknownJob(f"no job {job_id!r} on this server.")
        deadline = time.monotonic() + max(0.0, seconds)
        while not job.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = self._changed.setdefault(job_id, anyio.Event())
            with anyio.move_on_after(min(remaining, 1.0)):
                await event.wait()
            latest = self.store.get(job_id) or job
            if on_update is not None and (latest.status, latest.progress) != (job.status, job.progress):
                await on_update(latest)
            job = latest
        return job

    # --- the loop --------------------------------------------------------------------------

    async def _drive(self, job_id: str) -> None:
        scope = self._active[job_id]
        try:
            with scope:
                await self._poll_loop(job_id)
        except Exception as exc:
            log.exception("job %s: runner crashed", job_id)
            job = self.store.get(job_id)
            if job is not None:
                self.finish(
                    job,
                    JobStatus.FAILED,
                    error=ErrorView(
                        code="internal_error",
                        message=f"kling-mcp failed while tracking this job: {type(exc).__name__}",
                        retryable=True,
                        hint="Call check_job again; if it persists, report it with the job id.",
                    ),
                )
        finally:
            self._active.pop(job_id, None)

    def _first_interval(self, job: Job) -> float:
        if self._settings.poll_interval_s:
            return self._settings.poll_interval_s
        typical = variant_for_model(job.provider, job.model).typical_seconds
        return min(max(typical / 8, 0.5), self._settings.poll_max_interval_s)

    async def _poll_loop(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.terminal:
            return
        provider = self._provider_for(job.provider)
        interval = self._first_interval(job)
        started = job.submitted_at or job.created_at
        while True:
            job = self.store.get(job_id)
            if job is None or job.terminal:
                return
            if time.time() - started > self._settings.job_deadline_s:
                self.finish(
                    job,
                    JobStatus.FAILED,
                    error=_error_view(
                        errors.JobDeadline(
                            f"{job.provider} did not finish within {self._settings.job_deadline_s:.0f} s."
                        )
                    ),
                )
                return
            delay = interval
            try:
                async with self._limit(job.provider):
                    result = await provider.poll(job)
            except errors.ProviderError as exc:
                backoff = await self._on_error(job, exc, interval)
                if backoff is None:
                    return
                delay = backoff
            else:
                # A Done after a failed download keeps the count: an expired link must not loop forever.
                errors_so_far = job.consecutive_errors if isinstance(result, Done) else 0
                job = self.save(job.updated(consecutive_errors=errors_so_far, polls=job.polls + 1))
                if isinstance(result, Failed):
                    self.finish(
                        job,
                        JobStatus.FAILED,
                        error=ErrorView(
                            code=result.code,
                            message=result.message,
                            retryable=result.retryable,
                            hint=result.hint or errors.JobFailed.default_hint,
                        ),
                    )
                    return
                if isinstance(result, Running):
                    self._on_running(job, result)
                elif isinstance(result, Done):
                    if await self._collect(job, result):
                        return
            # Jitter spreads many jobs' polls; only ever later, so a Retry-After stays a floor.
            await anyio.sleep(delay * random.uniform(1.0, 1.2))
            interval = min(interval * 1.5, self._settings.poll_max_interval_s)

    async def _on_error(self, job: Job, exc: errors.ProviderError, interval: float) -> float | None:
        if not exc.retryable:
            self.finish(job, JobStatus.FAILED, error=_error_view(exc))
            return None
        count = job.consecutive_errors + 1
        if count >= self._settings.max_consecutive_errors:
            self.finish(
                job,
                JobStatus.FAILED,
                error=ErrorView(
                    code=exc.code,
                    retryable=True,
                    hint=exc.hint,
                    message=f"{count} consecutive failures talking to {job.provider}; last: {exc.message}",
                ),
            )
            return None
        self.save(job.updated(consecutive_errors=count))
        log.warning("job %s: %s (attempt %d)", job.job_id, exc.code, count)
        # Exponential, but never past the largest poll interval (a Retry-After may ask for longer).
        backoff = min(interval * (2 ** (count - 1)), self._settings.poll_max_interval_s)
        return max(exc.retry_after or 0.0, backoff)

    def _on_running(self, job: Job, result: Running) -> None:
        progress = job.progress if result.progress is None else max(job.progress, float(result.progress))
        if job.status in (JobStatus.PENDING, JobStatus.SUBMITTED) and not result.queued:
            self.save(job.moved(JobStatus.RUNNING, progress=progress))
        elif progress != job.progress:
            self.save(job.updated(progress=progress))

    async def _collect(self, job: Job, done: Done) -> bool:
        """Download every result; True when the job reached a terminal state."""
        cost = done.cost_usd if done.cost_usd is not None else job.cost_usd
        if cost is not None and job.cost_usd is None and job.estimated_cost_usd is not None:
            self.store.add_spend(cost - job.estimated_cost_usd)
        job = self.save(job.moved(JobStatus.DOWNLOADING, remote_videos=done.videos, cost_usd=cost, progress=100.0))
        out_dir = self._settings.data_dir / "videos" / job.job_id
        out_dir.mkdir(parents=True, exist_ok=True)
        stored: list[StoredVideo] = []
        try:
            for n, remote in enumerate(done.videos):
                stored.append(await self._fetch(job, n, remote.url, remote.path, out_dir))
        except errors.DownloadFailed as exc:
            count = job.consecutive_errors + 1
            if (not exc.retryable and count >= 2) or count >= self._settings.max_consecutive_errors:
                self.finish(job, JobStatus.FAILED, error=_error_view(exc))
                return True
            self.save(job.updated(consecutive_errors=count))  # poll again: a fresh link where there is one
            return False
        self.finish(job, JobStatus.SUCCEEDED, videos=stored, progress=100.0)
        return True

    async def _fetch(self, job: Job, n: int, url: str | None, path: str | None, out_dir: Path) -> StoredVideo:
        dest = out_dir / f"{n}.mp4"
        sha: str | None = None  # a download hashes as it writes; a local render is hashed below
        if path:
            if Path(path) != dest and Path(path).exists():
                os.replace(path, dest)  # a local render: move it into place (atomic)
            elif not dest.exists():
                raise errors.DownloadFailed(f"{job.provider} reported a file that is gone: {path}")
        elif url:
            from ..download import download

            fetched = await download(
                self._client,
                url,
                dest,
                root=self._settings.data_dir,
                max_bytes=self._settings.max_download_bytes,
                secrets=self._settings.secrets(),
            )
            sha = fetched.sha256
        elif not dest.exists():
            raise errors.DownloadFailed(f"{job.provider} reported a result without a link.", retryable=False)
        try:
            info = await anyio.to_thread.run_sync(media.probe, dest)
        except errors.InvalidInputFile:
            dest.unlink(missing_ok=True)
            raise errors.DownloadFailed(f"the file {job.provider} delivered is not a playable video.") from None
        if sha is None:
            sha = await anyio.to_thread.run_sync(media.sha256_file, dest)
        return StoredVideo(
            index=n,
            path=str(dest),
            mime_type=info.mime_type or "video/mp4",
            width=info.width,
            height=info.height,
            duration_s=info.duration_s,
            size_bytes=dest.stat().st_size,
            sha256=sha,
        )

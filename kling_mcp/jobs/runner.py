"""The background runner: polls providers, downloads results, writes a terminal record.

Every change it makes is a transition in the store, computed from the record as stored at that
moment (never from a copy read before an ``await``), so a cancel or another process's write is never
overwritten. A job is driven only by the process holding its lease (:mod:`.leases`); the lease keeper
renews it while the job is driven and, in a server, takes over jobs whose owner died once their
lease expires. Every path ends in a terminal record: a provider failure, the deadline, N consecutive
transient errors, a download that keeps failing. A ``pending`` job without a remote id is polled
only where our job id is the provider's task id (Runware, local), and otherwise marked ``failed``
(``interrupted``) by whoever takes it over, never resubmitted.
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
from ..providers.base import Done, Failed, PollResult, VideoProvider
from ..requests import ErrorView
from .backend import JobStore
from .leases import LeaseKeeper
from .model import Job, JobStatus, StoredVideo

if TYPE_CHECKING:  # httpx and the downloader load with the first download, not at start-up
    import httpx

log = logging.getLogger("kling_mcp.runner")

ProgressCallback = Callable[[Job], Awaitable[None]]
MAX_IN_FLIGHT = 16


def _error_view(exc: errors.KlingError) -> ErrorView:
    return ErrorView(**exc.to_info())


def interrupted(job: Job) -> ErrorView:
    return _error_view(
        errors.JobInterrupted(
            f"the server stopped while submitting this job to {job.provider}, before {job.provider} acknowledged it."
        )
    )


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
        self.leases = LeaseKeeper(store, settings.lease_s, self._adopt)
        # How jobs that are not provider videos (storyboards, assemblies) are driven, by Job.kind.
        self.drivers: dict[str, Callable[[str], Awaitable[None]]] = {}

    @property
    def owner(self) -> str:
        return self.leases.owner

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

    async def start(self, tg: anyio.abc.TaskGroup, adopt: bool = True) -> int:
        """Attach to the lifespan task group. ``adopt`` (a server): drive every job whose lease is free or
        expired, now and whenever one frees up; otherwise (the CLI) only jobs asked for. Returns how many
        jobs were taken at start."""
        return await self.leases.start(tg, adopt)

    def track(self, job_id: str) -> None:
        """Drive ``job_id`` in this process if its lease is free, expired or already ours."""
        self.leases.drive(job_id)

    def ensure_tracked(self, job: Job) -> None:
        """Track ``job`` if it is unfinished (a live lease of another process is left alone)."""
        if not job.terminal and self.leases.started:
            self.track(job.job_id)

    def stop_tracking(self, job_id: str) -> None:
        self.leases.stop(job_id)

    async def _adopt(self, job_id: str) -> None:
        """Drive a job whose lease this process holds, until it ends or the lease is lost."""
        try:
            job = await self.store.get(job_id)
            driver = self.drivers.get(job.kind) if job is not None else None
            await (driver(job_id) if driver is not None else self._poll_loop(job_id))
        except errors.StoreUnavailable as exc:
            # Not the job's fault: stop driving it here; the lease keeper takes it up again once the store is back.
            log.warning("job %s: paused, the store is unavailable: %s", job_id, exc.message)
        except Exception as exc:
            log.exception("job %s: runner crashed", job_id)
            with anyio.CancelScope(shield=True):
                await self.finish(
                    job_id,
                    JobStatus.FAILED,
                    error=ErrorView(
                        code="internal_error",
                        message=f"kling-mcp failed while tracking this job: {type(exc).__name__}",
                        retryable=True,
                        hint="Call check_job again; if it persists, report it with the job id.",
                    ),
                )

    # --- records ---------------------------------------------------------------------------

    async def finish(self, job_id: str, status: JobStatus, **changes: object) -> Job:
        """Move the job to a terminal ``status`` unless it already ended (the first ending wins)."""
        return await self.store.transition(job_id, lambda cur: None if cur.terminal else cur.moved(status, **changes))

    async def wait(self, job_id: str, seconds: float, on_update: ProgressCallback | None = None) -> Job:
        """Wait up to ``seconds`` for the job to finish, calling ``on_update`` on every change (by any process)."""
        job = await self.store.get(job_id)
        if job is None:
            raise errors.UnknownJob(f"no job {job_id!r} on this server.")
        deadline = time.monotonic() + max(0.0, seconds)
        while not job.terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            latest = await self.store.wait_for_change(job_id, job.version, remaining)
            if latest is None:
                break
            if on_update is not None and (latest.status, latest.progress) != (job.status, job.progress):
                await on_update(latest)
            job = latest
        return job

    # --- the loop --------------------------------------------------------------------------

    def _first_interval(self, job: Job) -> float:
        if self._settings.poll_interval_s:
            return self._settings.poll_interval_s
        typical = variant_for_model(job.provider, job.model).typical_seconds
        return min(max(typical / 8, 0.5), self._settings.poll_max_interval_s)

    async def _poll_loop(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is None or job.terminal:
            return
        if job.remote_id is None and not PROVIDERS[job.provider].client_chosen_id:
            # Its submitter died before the provider answered (it held the lease until then).
            await self.finish(job_id, JobStatus.FAILED, error=interrupted(job))
            return
        provider = self._provider_for(job.provider)
        interval = self._first_interval(job)
        started = job.submitted_at or job.created_at
        while True:
            job = await self.store.get(job_id)
            if job is None or job.terminal:
                return
            if time.time() - started > self._settings.job_deadline_s:
                message = f"{job.provider} did not finish within {self._settings.job_deadline_s:.0f} s."
                await self.finish(job_id, JobStatus.FAILED, error=_error_view(errors.JobDeadline(message)))
                return
            delay = interval
            try:
                async with self._limit(job.provider):
                    result = await provider.poll(job)
            except errors.ProviderError as exc:
                backoff = await self._on_error(job_id, exc, interval)
                if backoff is None:
                    return
                delay = backoff
            else:
                job = await self._record_poll(job_id, result)
                if job.terminal:
                    return
                if isinstance(result, Done) and job.status == JobStatus.DOWNLOADING:
                    if await self._collect(job, result):
                        return
            # Jitter spreads many jobs' polls; only ever later, so a Retry-After stays a floor.
            await anyio.sleep(delay * random.uniform(1.0, 1.2))
            interval = min(interval * 1.5, self._settings.poll_max_interval_s)

    async def _record_poll(self, job_id: str, result: PollResult) -> Job:
        """Apply a poll's answer to the job as stored now; a job that ended meanwhile keeps its ending."""
        failed_here = False

        def update(cur: Job) -> Job | None:
            nonlocal failed_here
            failed_here = False
            if cur.terminal:
                return None
            # A Done after a failed download keeps the count: an expired link must not loop forever.
            changes: dict[str, object] = {
                "polls": cur.polls + 1,
                "consecutive_errors": cur.consecutive_errors if isinstance(result, Done) else 0,
            }
            if isinstance(result, Failed):
                failed_here = True
                error = ErrorView(
                    code=result.code,
                    message=result.message,
                    retryable=result.retryable,
                    hint=result.hint or errors.JobFailed.default_hint,
                )
                return cur.moved(JobStatus.FAILED, error=error, **changes)
            if isinstance(result, Done):
                cost = result.cost_usd if result.cost_usd is not None else cur.cost_usd
                basis = result.cost_basis if result.cost_usd is not None else cur.cost_basis
                return cur.moved(
                    JobStatus.DOWNLOADING,
                    remote_videos=result.videos,
                    cost_usd=cost,
                    cost_basis=basis,
                    progress=100.0,
                    **changes,
                )
            progress = cur.progress if result.progress is None else max(cur.progress, float(result.progress))
            if cur.status in (JobStatus.PENDING, JobStatus.SUBMITTED) and not result.queued:
                return cur.moved(JobStatus.RUNNING, progress=progress, **changes)
            return cur.updated(progress=progress, **changes)

        job = await self.store.transition(job_id, update)
        if failed_here and job.cost_usd is None:
            await self.store.release(job_id)  # the provider failed the job and billed nothing for it
        elif isinstance(result, Done) and job.cost_usd is not None:
            await self.store.settle(job_id, job.cost_usd, "inferred" if job.cost_basis == "inferred" else "billed")
        return job

    async def _on_error(self, job_id: str, exc: errors.ProviderError, interval: float) -> float | None:
        count = 0

        def update(cur: Job) -> Job | None:
            nonlocal count
            if cur.terminal:
                return None
            count = cur.consecutive_errors + 1
            if not exc.retryable:
                return cur.moved(JobStatus.FAILED, error=_error_view(exc))
            if count >= self._settings.max_consecutive_errors:
                message = f"{count} consecutive failures talking to {cur.provider}; last: {exc.message}"
                error = ErrorView(code=exc.code, retryable=True, hint=exc.hint, message=message)
                return cur.moved(JobStatus.FAILED, error=error)
            return cur.updated(consecutive_errors=count)

        job = await self.store.transition(job_id, update)
        if job.terminal:
            return None
        log.warning("job %s: %s (attempt %d)", job_id, exc.code, count)
        # Exponential, but never past the largest poll interval (a Retry-After may ask for longer).
        backoff = min(interval * (2 ** (count - 1)), self._settings.poll_max_interval_s)
        return max(exc.retry_after or 0.0, backoff)

    async def _collect(self, job: Job, done: Done) -> bool:
        """Download every result; True when the job reached a terminal state (or is no longer ours to drive)."""
        if not await self.leases.holds(job.job_id):
            # This process stalled past its lease and another took the job over: two writers on one file
            # would corrupt it, so only the lease holder downloads.
            log.warning("job %s: lease lost before downloading; left to its new driver", job.job_id)
            return True
        out_dir = self._settings.data_dir / "videos" / job.job_id
        out_dir.mkdir(parents=True, exist_ok=True)
        stored: list[StoredVideo] = []
        failure: errors.DownloadFailed | None = None
        try:
            for n, remote in enumerate(done.videos):
                stored.append(await self._fetch(job, n, remote.url, remote.path, out_dir))
        except errors.DownloadFailed as exc:
            failure = exc
        if failure is not None:
            lost = failure

            def failed(cur: Job) -> Job | None:
                if cur.terminal:
                    return None
                count = cur.consecutive_errors + 1
                if (not lost.retryable and count >= 2) or count >= self._settings.max_consecutive_errors:
                    return cur.moved(JobStatus.FAILED, error=_error_view(lost))
                return cur.updated(consecutive_errors=count)  # poll again: a fresh link where there is one

            return (await self.store.transition(job.job_id, failed)).terminal
        # Shielded: a waiter that sees the job finish may cancel us (the CLI exits) before the clean-up.
        with anyio.CancelScope(shield=True):
            await self.finish(job.job_id, JobStatus.SUCCEEDED, videos=stored, progress=100.0)
            # The job's scratch folder (a local render's work/<job_id>: fetched inputs, moved-out renders)
            # has nothing left that anyone reads once the videos are in place.
            await anyio.to_thread.run_sync(_discard_scratch, self._settings.data_dir / "work" / job.job_id)
        return True

    async def _fetch(self, job: Job, n: int, url: str | None, path: str | None, out_dir: Path) -> StoredVideo:
        dest = out_dir / f"{n}.mp4"
        if path:
            if Path(path) != dest and Path(path).exists():
                os.replace(path, dest)  # a local render: move it into place (atomic)
            elif not dest.exists():
                raise errors.DownloadFailed(f"{job.provider} reported a file that is gone: {path}")
        elif url:
            from ..download import download

            await download(
                self._client,
                url,
                dest,
                root=self._settings.data_dir,
                max_bytes=self._settings.max_download_bytes,
                secrets=self._settings.secrets(),
            )
        elif not dest.exists():
            raise errors.DownloadFailed(f"{job.provider} reported a result without a link.", retryable=False)
        try:
            info = await anyio.to_thread.run_sync(media.probe, dest)
        except errors.InvalidInputFile:
            dest.unlink(missing_ok=True)
            raise errors.DownloadFailed(f"the file {job.provider} delivered is not a playable video.") from None
        return StoredVideo(
            index=n,
            path=str(dest),
            mime_type=info.mime_type or "video/mp4",
            width=info.width,
            height=info.height,
            duration_s=info.duration_s,
            size_bytes=dest.stat().st_size,
        )


def _discard_scratch(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)

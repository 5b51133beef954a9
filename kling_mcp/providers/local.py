"""The built-in ``local`` provider: renders a real MP4 preview on this machine, free, no key.

It is not Kling: :func:`kling_mcp.preview.render_preview` draws the prompt over motion so that jobs,
downloads, resource links and storyboards can be tried without an account.

``submit`` only accepts. The first ``poll`` fetches URL inputs (with the shared client) and starts
a background render thread; later polls report its progress. Results are written to
``<data_dir>/work/<job_id>/render-<n>.mp4``, so after a restart a poll either finds them or simply
renders again. Renders run one at a time (they are CPU-bound and the machine is shared).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import httpx

from .. import catalog, errors, media, preview, preview_clean
from ..jobs.model import Job, RemoteVideo
from ..requests import MediaRef, short
from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running

log = logging.getLogger(__name__)

FPS = 24
MAX_INPUT_BYTES = 200 * 1024 * 1024
_INPUT_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".mp4", ".mov", ".webm", ".mkv"})
_ASPECTS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}
LABEL = "LOCAL PREVIEW - not Kling"


class _Cancelled(Exception):
    pass


@dataclass
class _Render:
    """One job's render in this process (shared by every LocalProvider instance)."""

    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0  # 0-100
    queued: bool = True
    error: str | None = None
    hint: str = ""


_RENDERS: dict[str, _Render] = {}
_LOCK = threading.Lock()
_CPU = threading.Semaphore(1)


@dataclass(frozen=True)
class _Inputs:
    """The job's inputs as local files."""

    first_frame: Path | None = None
    last_frame: Path | None = None
    reference_images: tuple[Path, ...] = ()
    reference_video: Path | None = None
    video: Path | None = None


class LocalProvider:
    """The ``local`` adapter (see the module docstring)."""

    name = "local"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx

    def _workdir(self, job: Job) -> Path:
        return self._ctx.data_dir / "work" / job.job_id

    def _outputs(self, job: Job) -> list[Path]:
        return [self._workdir(job) / f"render-{n}.mp4" for n in range(max(1, job.spec.num_videos))]

    async def submit(self, job: Job) -> Accepted:
        return Accepted(remote_id=job.job_id, cost_usd=0.0)

    async def poll(self, job: Job) -> PollResult:
        key = str(self._workdir(job))
        outputs = self._outputs(job)
        with _LOCK:
            render = _RENDERS.get(key)
            if render is not None and render.stop.is_set():
                return Failed(code="cancelled", message=f"the local render of job {job.job_id} was cancelled.")
            if all(p.exists() for p in outputs):
                _RENDERS.pop(key, None)
                return Done(
                    videos=[RemoteVideo(path=str(p), remote_key=f"{job.job_id}-{n}") for n, p in enumerate(outputs)],
                    cost_usd=0.0,
                )
            if render is not None and render.error is not None:
                return Failed(code="render_failed", message=render.error, hint=render.hint)
            if render is not None and (render.thread is None or render.thread.is_alive()):
                return Running(progress=round(render.progress, 1), queued=render.queued)
            render = _RENDERS[key] = _Render()  # claimed: a concurrent poll sees it as queued
        try:
            inputs = await self._fetch_inputs(job)
        except errors.ProviderError:
            with _LOCK:
                _RENDERS.pop(key, None)  # transient: the next poll tries again
            raise
        except errors.KlingError as exc:
            render.error, render.hint = exc.message, exc.hint
            return Failed(code=exc.code, message=exc.message, hint=exc.hint)
        thread = threading.Thread(
            target=_render_all,
            args=(job, inputs, outputs, render, preview_clean.store_dir(self._ctx.data_dir)),
            name=f"kling-local-{job.job_id}",
            daemon=True,
        )
        render.thread = thread
        thread.start()
        return Running(progress=0.0, queued=True)

    async def cancel(self, job: Job) -> bool:
        with _LOCK:
            render = _RENDERS.get(str(self._workdir(job)))
        if render is None:
            return True  # nothing renders for this job in this process
        render.stop.set()
        if render.thread is not None:
            await anyio.to_thread.run_sync(render.thread.join, 30.0)
        return True

    # --- inputs ---------------------------------------------------------------------------------

    async def _fetch_inputs(self, job: Job) -> _Inputs:
        spec = job.spec
        references = []
        for ref in spec.reference_images:
            references.append(await self._local(ref, job))
        return _Inputs(
            first_frame=await self._local(spec.first_frame, job),
            last_frame=await self._local(spec.last_frame, job),
            reference_images=tuple(p for p in references if p is not None),
            reference_video=await self._local(spec.reference_video, job),
            video=await self._local(spec.video, job),
        )

    async def _local(self, ref: MediaRef | None, job: Job) -> Path | None:
        if ref is None:
            return None
        if ref.kind == "file":
            return Path(ref.value)
        url = ref.value
        suffix = Path(urlparse(url).path).suffix.lower()
        dest = (
            self._workdir(job)
            / "inputs"
            / (hashlib.sha256(url.encode()).hexdigest()[:32] + (suffix if suffix in _INPUT_EXTS else ""))
        )
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        try:
            await self._download(url, part)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return dest

    async def _download(self, url: str, part: Path) -> None:
        shown = short(url, 120)
        try:
            async with self._ctx.client.stream("GET", url, follow_redirects=True) as response:
                if response.status_code in (408, 425, 429) or response.status_code >= 500:
                    raise errors.ProviderUnavailable(
                        f"fetching the input {shown} failed with HTTP {response.status_code}.",
                        hint="The host serving the input is busy; the job retries on its next poll.",
                    )
                if response.status_code >= 400:
                    raise errors.InvalidInputFile(
                        f"the input {shown} could not be fetched: HTTP {response.status_code}.",
                        hint="Pass a URL that anyone can read without logging in, or a local file path.",
                    )
                size = 0
                with open(part, "wb") as fh:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_INPUT_BYTES:
                            raise errors.InvalidInputFile(
                                f"the input {shown} is larger than {MAX_INPUT_BYTES // 2**20} MB.",
                                hint="Pass a smaller file.",
                            )
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise errors.ProviderUnavailable(
                f"fetching the input {shown} failed: {exc!r}.",
                hint="Check that the URL's host is reachable; the job retries on its next poll.",
            ) from None


# --- rendering (in the job's thread) -------------------------------------------------------------


def _render_all(job: Job, inputs: _Inputs, outputs: list[Path], render: _Render, store: Path) -> None:
    """Render every missing output; record a failure on ``render`` instead of raising.

    Each output's caption-free twin is filed in ``store`` (see ``preview_clean``), and inputs that are
    earlier local previews are swapped for their clean twins, so captions never pile up.
    """
    try:
        while not _CPU.acquire(timeout=0.1):
            if render.stop.is_set():
                return
        try:
            render.queued = False
            outputs[0].parent.mkdir(parents=True, exist_ok=True)
            plan = _plan(job, _cleaned(inputs, store), outputs[0].parent)
            seed = job.spec.seed
            base = seed if seed is not None else int(hashlib.sha256(job.job_id.encode()).hexdigest()[:6], 16)
            for n, out in enumerate(outputs):
                if out.exists():
                    continue

                def progress(fraction: float, n: int = n) -> None:
                    if render.stop.is_set():
                        raise _Cancelled
                    render.progress = 100 * (n + fraction) / len(outputs)

                label = LABEL + (f" - take {n + 1}/{len(outputs)}" if len(outputs) > 1 else "")
                # Both renders are filed before ``out`` appears: a poll reports the job done (and the runner
                # moves the file away) as soon as it exists.
                staged, clean = out.with_name(out.name + ".staged.mp4"), out.with_name(out.name + ".clean.mp4")
                try:
                    preview.render_preview(
                        staged, **plan, label=label, progress=progress, variation=base + n, clean_dest=clean
                    )
                    _file_clean(store, staged, clean)
                    os.replace(staged, out)
                finally:
                    staged.unlink(missing_ok=True)
                    clean.unlink(missing_ok=True)
        finally:
            _CPU.release()
    except _Cancelled:
        log.info("local render of job %s cancelled", job.job_id)
    except errors.KlingError as exc:
        render.error, render.hint = exc.message, exc.hint
    except Exception as exc:
        log.exception("local render of job %s failed", job.job_id)
        render.error = f"the local preview render failed: {exc}"
        render.hint = "Check the input files (they must decode as images/videos) and generate again."


def _cleaned(inputs: _Inputs, store: Path) -> _Inputs:
    """``inputs`` with every earlier local preview (frame or video) replaced by its caption-free twin."""

    def image(path: Path | None) -> Path | None:
        return preview_clean.clean_image(store, path) if path is not None else None

    def video(path: Path | None) -> Path | None:
        return preview_clean.clean_video(store, path) if path is not None and path.is_file() else path

    return _Inputs(
        first_frame=image(inputs.first_frame),
        last_frame=image(inputs.last_frame),
        reference_images=tuple(preview_clean.clean_image(store, p) for p in inputs.reference_images),
        reference_video=video(inputs.reference_video),
        video=video(inputs.video),
    )


def _file_clean(store: Path, captioned: Path, clean: Path) -> None:
    """File the clean twin; losing it only means captions could pile up later, so it never fails a job."""
    try:
        preview_clean.remember(store, captioned, clean)
    except Exception:
        log.exception("could not file the caption-free copy of %s", captioned)


def _plan(job: Job, inputs: _Inputs, workdir: Path) -> dict[str, Any]:
    """The render_preview arguments for ``job``: size and length from the catalog or the input video."""
    spec = job.spec
    variant = catalog.variants("local", job.tier or spec.tier or "standard")[0]
    for path in (inputs.first_frame, inputs.last_frame, *inputs.reference_images):
        if path is not None and media.probe(path).kind != "image":
            raise errors.InvalidInputFile(f"{path} is a video, but an image is needed there.")
    images = list(inputs.reference_images)
    if spec.operation == "edit":
        if inputs.video is None:
            raise errors.InvalidRequest("an edit needs the input video.")
        ref = spec.video
        width, height, seconds = (ref.width, ref.height, ref.duration_s) if ref else (None, None, None)
        if not (width and height and seconds):
            info = media.probe(inputs.video)
            if info.kind != "video" or not info.duration_s:
                raise errors.InvalidInputFile(f"{inputs.video} is not a video with a known length.")
            if not (info.width and info.height):
                raise errors.InvalidInputFile(f"{inputs.video} has no readable frame size.")
            width, height, seconds = info.width, info.height, info.duration_s
        if not (width and height):
            raise errors.InvalidInputFile(f"{inputs.video} has no readable frame size.")
        ratio = width / height
        aspect = min(_ASPECTS, key=lambda a: abs(math.log(ratio / _ASPECTS[a])))
    else:
        aspect = spec.aspect_ratio or "16:9"
        seconds = float(spec.duration or variant.operations[spec.operation].default_duration or 5)
    if aspect not in variant.sizes:
        raise errors.InvalidRequest(f"aspect_ratio {aspect!r} is not one of {', '.join(variant.sizes)}.")
    width, height = variant.sizes[aspect]
    if spec.operation == "reference" and inputs.reference_video is not None:
        poster = workdir / "reference-video.png"  # the reference video joins the cycle as a still
        poster.parent.mkdir(parents=True, exist_ok=True)
        poster.write_bytes(media.poster_png(inputs.reference_video, max_side=max(width, height)))
        images.append(poster)
    return {
        "width": width,
        "height": height,
        "seconds": seconds,
        "fps": FPS,
        "prompt": spec.prompt,
        "operation": spec.operation,
        "images": images,
        "first_frame": inputs.first_frame,
        "last_frame": inputs.last_frame,
        "input_video": inputs.video,
    }

"""A small preview rendition of a video, for the inline player (served as a ``data:`` URI).

``preview_rendition(video)`` returns ``<video>.preview.mp4``: H.264 (yuv420p) + AAC, at most
``max_height`` lines, at most 30 frames per second, ``+faststart`` (the index first, so a player can
start before the last byte), with bit rates chosen so the file stays near ``max_bytes``: a long video
gets smaller frames (360, then 240 lines), fewer of them (24, then 15 per second) and leaner sound
(``budget_for``). It is made
once (temp file in the same folder, then ``os.replace``) and reused while it is newer than the video.
A video that is already an H.264 MP4 no taller than ``max_height`` and no larger than ``max_bytes``
is returned as it is.

Synchronous and CPU-bound (PyAV, imported lazily): async callers run it in a worker thread.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import media


def rendition_path(video: Path) -> Path:
    return video.with_name(f"{video.name}.preview.mp4")


def preview_rendition(video: Path, *, max_height: int = 480, max_bytes: int = 4_000_000) -> Path:
    """The preview of ``video`` (see the module docstring). InvalidInputFile when it is not a video."""
    video = Path(video)
    cached = rendition_path(video)
    if cached.is_file() and cached.stat().st_mtime >= video.stat().st_mtime:
        return cached
    info = media.probe(video)
    if info.kind != "video":
        raise media._invalid(video, "it is an image; a preview rendition is made of videos")
    if (
        info.codec == "h264"
        and info.mime_type == "video/mp4"
        and info.height <= max_height
        and video.stat().st_size <= max_bytes
    ):
        return video
    part = cached.with_name(f".{cached.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        _transcode(video, part, info, max_height, max_bytes)
        os.replace(part, cached)
    finally:
        part.unlink(missing_ok=True)
    return cached


def _size(width: int, height: int, max_height: int) -> tuple[int, int]:
    """Even dimensions no taller than ``max_height`` keeping the shape."""
    scale = min(1.0, max_height / height)
    return max(2, round(width * scale) // 2 * 2), max(2, min(max_height, round(height * scale)) // 2 * 2)


@dataclass(frozen=True)
class Budget:
    """How a preview spends its bytes: frame height, frame rate and bit rates."""

    max_height: int
    max_fps: int
    video_bps: int
    audio_bps: int


def budget_for(seconds: float, has_audio: bool, max_height: int, max_bytes: int) -> Budget:
    """Smaller frames, fewer frames and less sound as the bits per second shrink (long videos)."""
    total = max_bytes * 8 * 0.92 / max(seconds, 0.5)  # bits per second; the rest is the container
    steps = [  # (from total bps, height, fps, audio bps)
        (700_000, max_height, 30, 64_000),
        (350_000, min(max_height, 360), 30, 48_000),
        (150_000, min(max_height, 240), 24, 32_000),
        (0, min(max_height, 240), 15, 24_000),
    ]
    _, height, fps, audio = next(step for step in steps if total >= step[0])
    audio = audio if has_audio else 0
    return Budget(height, fps, max(40_000, int(total) - audio), audio)


def _transcode(video: Path, part: Path, info: media.MediaInfo, max_height: int, max_bytes: int) -> None:
    import av

    with av.open(str(video)) as src:
        v_in = src.streams.video[0]
        v_in.thread_type = "AUTO"
        a_in = src.streams.audio[0] if src.streams.audio else None
        budget = budget_for(info.duration_s or 1.0, a_in is not None, max_height, max_bytes)
        width, height = _size(info.width, info.height, budget.max_height)
        rate = Fraction(v_in.average_rate or v_in.guessed_rate or 24).limit_denominator(100_000)
        step = math.ceil(rate / budget.max_fps)  # keep every step-th frame
        rate = rate / step
        kbps = budget.video_bps // 1000
        with av.open(str(part), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            v_out = out.add_stream(
                "libx264",
                rate=rate,
                options={"preset": "veryfast", "crf": "26", "maxrate": f"{kbps}k", "bufsize": f"{2 * kbps}k"},
            )
            v_out.width, v_out.height, v_out.pix_fmt = width, height, "yuv420p"
            v_out.codec_context.time_base = 1 / rate
            a_out = None
            if a_in is not None:
                a_rate = min(a_in.codec_context.sample_rate or 48_000, 48_000)
                a_out = out.add_stream("aac", rate=a_rate, layout="stereo", options={"b": str(budget.audio_bps)})
            streams = [v_in] + ([a_in] if a_in is not None else [])
            _copy_decoded(src, streams, v_in, out, v_out, a_out, width, height, step)


def _copy_decoded(
    src: Any, streams: list[Any], v_in: Any, out: Any, v_out: Any, a_out: Any, width: int, height: int, step: int
) -> None:
    """Decode, scale and encode in one pass over the packets (so the output interleaves naturally).

    Audio frames go to the AAC encoder as decoded: PyAV's encoder resamples them to its rate, layout
    and frame size itself.
    """
    import av

    count = 0
    for packet in src.demux(streams):
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue  # a damaged packet: skip it, as a player would
        for frame in frames:
            if packet.stream is not v_in:
                out.mux(a_out.encode(frame))
                continue
            index, count = count, count + 1
            if index % step:
                continue
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            scaled.pts, scaled.time_base = index // step, v_out.codec_context.time_base
            out.mux(v_out.encode(scaled))
    out.mux(v_out.encode(None))
    if a_out is not None:
        out.mux(a_out.encode(None))

"""First and last frames of a video as PNG files, cached beside the video.

``frame_png(video, "first" | "last")`` writes ``<video>.first.png`` / ``<video>.last.png`` once
(atomically: a uniquely named temp file in the same folder, then ``os.replace``) and returns its
path; later calls return the cached file. These are what ``kling://jobs/{id}/videos/{n}/first-frame``
and ``/last-frame`` serve and what a chained storyboard shot starts from.

Synchronous and CPU-bound (PyAV/Pillow, imported lazily by ``media``): async callers use a worker thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Literal

from . import media

Which = Literal["first", "last"]


def frame_path(video: Path, which: Which) -> Path:
    """Where ``frame_png`` caches the frame (whether or not it exists yet)."""
    return video.with_name(f"{video.name}.{which}.png")


def frame_png(video: Path, which: Which) -> Path:
    """The first or last frame of ``video`` at full size as a PNG file beside it (made once).

    Raises :class:`kling_mcp.errors.InvalidInputFile` when ``video`` is not a decodable video.
    """
    if which not in ("first", "last"):
        raise ValueError(f"which must be 'first' or 'last'; got {which!r}")
    video = Path(video)
    cached = frame_path(video, which)
    if cached.is_file() and cached.stat().st_mtime >= video.stat().st_mtime:
        return cached
    png = media.first_frame_png(video) if which == "first" else media.last_frame_png(video)
    write_atomic(cached, png)
    return cached


def write_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` through a temp file unique to this process and thread."""
    part = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        part.write_bytes(data)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)

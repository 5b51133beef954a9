"""The poster frame a finished job's tool result carries: a small JPEG, rendered once and cached.

A JPEG of the frame about a third in (long side <= 320 px) is a few KB where the same PNG is tens of
KB: every ``check_job`` of a finished job sends it (base64 in the JSON-RPC answer, and to the model),
so its size is paid on every call. Rendered on the first look and stored beside the video as
``<name>.poster.jpg``; later calls read that file, and the most recent ones stay in memory.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from . import media

MIME_TYPE = "image/jpeg"
MAX_SIDE = 320
QUALITY = 80
_KEPT = 64  # posters kept in memory (a few KB each): a repeated check_job needs no disk read or thread
_recent: OrderedDict[str, bytes] = OrderedDict()
_lock = threading.Lock()


def remembered(video_path: str | Path) -> bytes | None:
    """The poster of ``video_path`` if it is in memory (no I/O: callable on the event loop)."""
    with _lock:
        data = _recent.get(str(video_path))
        if data is not None:
            _recent.move_to_end(str(video_path))
        return data


def _remember(video_path: str | Path, data: bytes) -> bytes:
    with _lock:
        _recent[str(video_path)] = data
        while len(_recent) > _KEPT:
            _recent.popitem(last=False)
    return data


def poster_jpeg(video_path: str | Path, max_side: int = MAX_SIDE) -> bytes:
    """The poster frame (see :func:`media.poster_image`) as JPEG bytes."""
    buf = io.BytesIO()
    media.poster_image(video_path, max_side).save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def poster_jpeg_cached(video_path: str | Path) -> bytes:
    """:func:`poster_jpeg`, stored beside the video after the first call (and kept in memory)."""
    video = Path(video_path)
    cached = video.with_name(video.name + ".poster.jpg")
    if cached.is_file():
        return _remember(video_path, cached.read_bytes())
    data = poster_jpeg(video)
    part = cached.with_name(cached.name + ".part")
    part.write_bytes(data)
    os.replace(part, cached)
    return _remember(video_path, data)

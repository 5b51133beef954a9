"""Clean pictures of local previews, so a preview reused as an input carries one caption, not two.

The ``local`` renderer burns a badge and the prompt into every frame. When its output comes back as an
input - a storyboard's next shot starting from this shot's last frame, or an edit of this preview -
those captions would be rendered again under the new ones and pile up. Removing them from the pixels
is guesswork (the white text hides what was under it), so the renderer keeps what it drew *under* the
overlay instead, in ``<data_dir>/work/clean/``:

- the clean first and last frames (PNG), each filed under a digest of the *captioned* frame's decoded
  pixels (``pixel_digest``: size + RGB bytes). A frame decoded from the MP4 - ``frames.frame_png``, the
  ``/first-frame`` and ``/last-frame`` resources, or any lossless copy of them - has exactly those
  pixels, wherever the file has been moved to;
- the clean video, filed under the SHA-256 of the captioned MP4's bytes (the runner moves the file into
  the store unchanged, so the hash still matches there).

Before a render, every input that matches an entry is swapped for its clean original (``clean_image``,
``clean_video``); anything else - a user's own picture, a resized or re-compressed frame - is used as
given. Decoding is deterministic (same library, same file, same pixels), so the match is exact rather
than a similarity guess; the cost is one extra, fast encode per render and the disk space of the clean
copies, which live in the data dir like every other render.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from . import media

FOLDER = "clean"


def store_dir(data_dir: Path) -> Path:
    return data_dir / "work" / FOLDER


def pixel_digest(png_or_image: bytes | Path) -> str:
    """SHA-256 of an image's size and RGB pixels (not of its file bytes)."""
    from PIL import Image

    source = io.BytesIO(png_or_image) if isinstance(png_or_image, bytes) else png_or_image
    with Image.open(source) as image:
        rgb = image.convert("RGB")
        digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
        digest.update(rgb.tobytes())
    return digest.hexdigest()


def remember(store: Path, captioned: Path, clean: Path) -> None:
    """File the clean render ``clean`` (consumed: moved into the store) under the captioned ``captioned``."""
    store.mkdir(parents=True, exist_ok=True)
    for frame_of in (media.first_frame_png, media.last_frame_png):
        _write(store / f"{pixel_digest(frame_of(captioned))}.png", frame_of(clean))
    os.replace(clean, store / f"{media.sha256_file(captioned)}.mp4")


def clean_image(store: Path, path: Path) -> Path:
    """The clean original of a local preview's frame, or ``path`` itself when it is not one."""
    if not store.is_dir():
        return path
    try:
        candidate = store / f"{pixel_digest(path)}.png"
    except Exception:  # not an image Pillow reads (or a decompression bomb): the render reports it
        return path
    return candidate if candidate.is_file() else path


def clean_video(store: Path, path: Path) -> Path:
    """The clean original of a local preview video, or ``path`` itself when it is not one."""
    if not store.is_dir():
        return path
    candidate = store / f"{media.sha256_file(path)}.mp4"
    return candidate if candidate.is_file() else path


def _write(dest: Path, data: bytes) -> None:
    part = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        part.write_bytes(data)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)

"""Media helpers (PyAV, Pillow, numpy are imported lazily, inside the functions).

Contract (other modules rely on these names):
- data_uri(path, mime_type=None) -> str
- sha256_file(path) -> str
- probe(path) -> MediaInfo            raises errors.InvalidInputFile when not a decodable image/video
- save_data_uri(uri, dest_dir) -> Path  decode a data: URI into dest_dir/<sha256>.<ext>
- poster_png(video_path, max_side=320) -> bytes
- last_frame_png(video_path) -> bytes
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_uri(path: str | Path, mime_type: str | None = None) -> str:
    mime = mime_type or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")

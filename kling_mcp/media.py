"""Media helpers (PyAV, Pillow, numpy are imported lazily, inside the functions).

Contract (other modules rely on these names):
- data_uri(path, mime_type=None) -> str
- sha256_file(path) -> str
- probe(path_or_video_url) -> MediaInfo   raises errors.InvalidInputFile when not a decodable image/video
- save_data_uri(uri, dest_dir) -> Path    decode a data: URI into dest_dir/<sha256>.<ext>
- poster_png(video_path, max_side=320) -> bytes
- first_frame_png(video_path) -> bytes
- last_frame_png(video_path) -> bytes

Everything here is synchronous and may be CPU- or IO-heavy: async callers run it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import mimetypes
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from . import errors

IMAGE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}
_VIDEO_DEMUXERS = ("mov", "mp4", "matroska", "webm")  # parts of PyAV's container.format.name
ACCEPTED = "images (PNG, JPEG, WebP, GIF, BMP) and videos (MP4, MOV, WebM, MKV)"
MAX_DATA_URI_BYTES = 200 * 1024 * 1024
URL_TIMEOUT_S = 20.0
_EXT = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
}
_DATA_URI = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*)"
    r"(?P<b64>;base64)?,(?P<data>.*)",
    re.S | re.I,
)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_uri(path: str | Path, mime_type: str | None = None) -> str:
    mime = mime_type or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


# --- probing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    """What a decoded input is. ``duration_s``/``fps`` are None for images."""

    kind: Literal["image", "video"]
    mime_type: str
    width: int
    height: int
    duration_s: float | None = None
    fps: float | None = None
    codec: str | None = None


def _invalid(shown: object, reason: str) -> errors.InvalidInputFile:
    """The one error for an unusable input file; ``reason`` is plain words, never decoder output."""
    return errors.InvalidInputFile(f"{shown} {reason}. Accepted: {ACCEPTED}.")


def probe(path: str | Path) -> MediaInfo:
    """Decode ``path`` enough to know it is a real image or video, and describe it.

    ``path`` may also be an http(s) URL of a *video* (opened by PyAV); image URLs are not probed.
    Raises :class:`errors.InvalidInputFile` for anything that is not a decodable image or video.
    """
    text = str(path)
    if text.startswith(("http://", "https://")):
        return _probe_video(text, is_url=True)
    p = Path(path)
    if p.is_dir():
        raise _invalid(p, "is a directory; pass the path of a file inside it")
    if not p.is_file():
        raise _invalid(p, "does not exist; check the path (absolute, or relative to where the server runs)")
    if p.stat().st_size == 0:
        raise _invalid(p, "is an empty file")
    return _probe_image(p) or _probe_video(str(p), is_url=False)


def _probe_image(p: Path) -> MediaInfo | None:
    """Image info, None when Pillow does not recognise an accepted image format."""
    from PIL import Image, UnidentifiedImageError

    fmt = "image"
    try:
        with Image.open(p, formats=list(IMAGE_MIME)) as im:
            fmt, (width, height) = im.format or "image", im.size
            im.load()  # a truncated or corrupt image fails here, not at open
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise _invalid(p, f"looks like an image ({fmt}) but does not decode: it is truncated or corrupt") from None
    return MediaInfo("image", IMAGE_MIME.get(fmt, "image/" + fmt.lower()), width, height)


def _open_video(target: str | Path, *, is_url: bool = False) -> Any:
    """An open PyAV container of an accepted video format with a video stream, else InvalidInputFile."""
    import av

    try:
        container = av.open(str(target), "r", timeout=URL_TIMEOUT_S if is_url else None)
    except (av.FFmpegError, OSError, ValueError):
        what = "does not serve a readable video" if is_url else "is not an image/video file"
        raise _invalid(target, what) from None
    fmt = container.format.name
    if not any(part in _VIDEO_DEMUXERS for part in fmt.split(",")) or not container.streams.video:
        container.close()
        raise _invalid(target, f"is not an image/video file in an accepted format (it is {_format_name(fmt)})")
    return container


def _probe_video(target: str, *, is_url: bool) -> MediaInfo:
    import av

    with _open_video(target, is_url=is_url) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError, ValueError):
            raise _invalid(target, "is a video whose first frame does not decode: it is truncated or corrupt") from None
        if first is None:
            raise _invalid(target, "is a video without a decodable frame: it is truncated or corrupt")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        codec = stream.codec_context.name
        return MediaInfo(
            "video",
            _video_mime(container.format.name, target, codec),
            stream.codec_context.width or first.width,
            stream.codec_context.height or first.height,
            _duration(container, stream, fps),
            fps,
            codec,
        )


def _duration(container: Any, stream: Any, fps: float | None) -> float | None:
    import av

    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    if stream.frames and fps:
        return stream.frames / fps
    return None


def _video_mime(fmt: str, target: str, codec: str) -> str:
    ext = Path(urlparse(target).path).suffix.lower()
    if "matroska" in fmt:
        webm = ext == ".webm" or (ext != ".mkv" and codec in ("vp8", "vp9", "av1"))
        return "video/webm" if webm else "video/x-matroska"
    return "video/quicktime" if ext == ".mov" else "video/mp4"


# --- data URIs ----------------------------------------------------------------------------------


def save_data_uri(uri: str, dest_dir: str | Path) -> Path:
    """Decode a ``data:<mime>;base64,<data>`` URI into ``dest_dir/<sha256>.<ext>``; return the path.

    Raises :class:`errors.InvalidInputFile` for a malformed URI, a media type that is not an
    image or video, undecodable base64, or more than ``MAX_DATA_URI_BYTES`` of data.
    """
    shown = uri[:40] + ("…" if len(uri) > 40 else "")
    match = _DATA_URI.fullmatch(uri.strip())
    if not match or not match["b64"]:
        raise errors.InvalidInputFile(
            f"{shown!r} is not a base64 data URI; use data:<mime>;base64,<data>, e.g. data:image/png;base64,iVBOR..."
        )
    mime = (match["mime"] or "").lower()
    ext = _EXT.get(mime) or (mimetypes.guess_extension(mime) if mime.startswith(("image/", "video/")) else None)
    if not ext:
        raise errors.InvalidInputFile(
            f"the data URI's media type {mime or '(none)'!r} is not an image or video; "
            "declare it, e.g. data:image/png;base64,... or data:video/mp4;base64,..."
        )
    data = re.sub(r"\s+", "", unquote(match["data"]) if "%" in match["data"] else match["data"])
    if len(data) // 4 * 3 > MAX_DATA_URI_BYTES:
        raise errors.InvalidInputFile(
            f"the data URI holds more than {MAX_DATA_URI_BYTES // 2**20} MB; "
            "pass a file path or an http(s) URL for large inputs"
        )
    data = data.translate(str.maketrans("-_", "+/"))  # accept URL-safe base64 too
    try:
        raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.InvalidInputFile(
            f"the data URI's base64 payload does not decode ({exc}); re-encode the file with standard base64"
        ) from None
    if not raw:
        raise errors.InvalidInputFile("the data URI is empty; put the base64-encoded file after the comma")
    dest = Path(dest_dir) / f"{hashlib.sha256(raw).hexdigest()}{ext}"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Unique per thread too: two concurrent calls in one process may save the same data URI.
        part = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
        part.write_bytes(raw)
        os.replace(part, dest)
    return dest


# --- frames -------------------------------------------------------------------------------------


def _seek(container: Any, stream: Any, seconds: float) -> bool:
    """Seek to the keyframe at or before ``seconds``; False where the file cannot seek (decode from here)."""
    import av

    try:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
    except (av.FFmpegError, OSError):
        return False
    return True


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def poster_png(video_path: str | Path, max_side: int = 320) -> bytes:
    """A frame from about a third into the video, long side <= ``max_side``, as PNG bytes."""
    return _png(poster_image(video_path, max_side))


def poster_image(video_path: str | Path, max_side: int = 320) -> Any:
    """A frame from about a third into the video, long side <= ``max_side``, as a Pillow RGB image."""
    import av

    with _open_video(video_path) as container:
        stream = container.streams.video[0]
        target = (_duration(container, stream, float(stream.average_rate or 0) or None) or 0.0) / 3
        if target > 0 and stream.time_base:
            _seek(container, stream, target)
        chosen = None
        try:
            for chosen in container.decode(stream):
                if chosen.time is None or chosen.time >= target:
                    break
        except av.FFmpegError:
            raise _invalid(video_path, "is a video whose frames do not decode: it is truncated or corrupt") from None
        if chosen is None:
            raise _invalid(video_path, "is a video without a decodable frame: it is truncated or corrupt")
        # Scaled by swscale straight from YUV: far cheaper than a full-size RGB image shrunk by Pillow.
        scale = min(1.0, max_side / max(chosen.width, chosen.height))
        return chosen.reformat(
            width=max(1, round(chosen.width * scale)), height=max(1, round(chosen.height * scale)), format="rgb24"
        ).to_image()


def first_frame_png(video_path: str | Path) -> bytes:
    """The first decoded frame at full size as PNG."""
    import av

    with _open_video(video_path) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise _invalid(video_path, f"its first frame does not decode ({exc})") from None
        if first is None:
            raise _invalid(video_path, "it has no decodable video frame")
        return _png(first.to_image())


def last_frame_png(video_path: str | Path) -> bytes:
    """The final decoded frame at full size as PNG (the first frame of a storyboard's next shot)."""
    import av

    with _open_video(video_path) as container:
        stream = container.streams.video[0]
        duration = _duration(container, stream, float(stream.average_rate or 0) or None) or 0.0
        last = None
        try:
            # Seek near the end: the demuxer lands on the keyframe before, so decoding still ends on the last frame.
            if duration > 2 and stream.time_base and _seek(container, stream, duration - 1):
                last = _final_frame(container, stream)
            if last is None:
                _seek(container, stream, 0.0)
                last = _final_frame(container, stream)
        except av.FFmpegError:
            raise _invalid(video_path, "is a video whose frames do not decode: it is truncated or corrupt") from None
        if last is None:
            raise _invalid(video_path, "is a video without a decodable frame: it is truncated or corrupt")
        return _png(last.to_image())


def poster_png_cached(video_path: str | Path, max_side: int = 320) -> bytes:
    """``poster_png`` stored beside the video (``<name>.poster.png``) after the first call."""
    video = Path(video_path)
    cached = video.with_name(video.name + ".poster.png")
    if cached.is_file():
        return cached.read_bytes()
    png = poster_png(video, max_side)
    part = cached.with_name(cached.name + ".part")
    part.write_bytes(png)
    os.replace(part, cached)
    return png


def _final_frame(container: Any, stream: Any) -> Any:
    """The last frame the decoder yields from the current position (None when it yields none)."""
    final = None
    for frame in container.decode(stream):
        final = frame
    return final


def _format_name(demuxer: str) -> str:
    """A container's name in words a user knows (ffmpeg's demuxer names are jargon: image2, mov,mp4,...)."""
    known = {
        "image2": "an image sequence or an image format we do not accept",
        "gif": "a GIF",
        "mp3": "MP3 audio",
        "wav": "WAV audio",
        "ogg": "Ogg audio",
        "flac": "FLAC audio",
        "aac": "AAC audio",
        "matroska,webm": "Matroska audio only",
        "tty": "a text file",
        "srt": "a subtitle file",
    }
    return known.get(demuxer, f"a {demuxer.split(',')[0].upper()} file without video")

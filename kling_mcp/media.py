"""Media helpers (PyAV, Pillow, numpy are imported lazily, inside the functions).

Contract (other modules rely on these names):
- data_uri(path, mime_type=None) -> str
- sha256_file(path) -> str
- probe(path_or_video_url) -> MediaInfo   raises errors.InvalidInputFile when not a decodable image/video
- save_data_uri(uri, dest_dir) -> Path    decode a data: URI into dest_dir/<sha256>.<ext>
- poster_png(video_path, max_side=320) -> bytes
- last_frame_png(video_path) -> bytes
- render_preview(dest, *, width, height, seconds, ...) -> None   the local provider's MP4 renderer

Everything here is synchronous and may be CPU- or IO-heavy: async callers run it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import mimetypes
import os
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import unquote, urlparse

from . import errors

if TYPE_CHECKING:
    import numpy as np

_Frames: TypeAlias = "Generator[np.ndarray, None, None]"

IMAGE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
              "BMP": "image/bmp"}
_VIDEO_DEMUXERS = ("mov", "mp4", "matroska", "webm")   # parts of PyAV's container.format.name
ACCEPTED = "images (PNG, JPEG, WebP, GIF, BMP) and videos (MP4, MOV, WebM, MKV)"
MAX_DATA_URI_BYTES = 200 * 1024 * 1024
URL_TIMEOUT_S = 20.0
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp",
        "image/gif": ".gif", "image/bmp": ".bmp", "video/mp4": ".mp4", "video/quicktime": ".mov",
        "video/webm": ".webm", "video/x-matroska": ".mkv"}
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*)"
                       r"(?P<b64>;base64)?,(?P<data>.*)", re.S | re.I)


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
    return errors.InvalidInputFile(f"{shown} is not a usable input: {reason}. Accepted: {ACCEPTED}.")


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
        raise _invalid(p, "it is a directory; pass the path of a file inside it")
    if not p.is_file():
        raise _invalid(p, "no such file; check the path (it must be absolute or relative to the server)")
    if p.stat().st_size == 0:
        raise _invalid(p, "the file is empty")
    return _probe_image(p) or _probe_video(str(p), is_url=False)


def _probe_image(p: Path) -> MediaInfo | None:
    """Image info, None when Pillow does not recognise an accepted image format."""
    from PIL import Image, UnidentifiedImageError

    fmt = "image"
    try:
        with Image.open(p, formats=list(IMAGE_MIME)) as im:
            fmt, (width, height) = im.format or "image", im.size
            im.load()   # a truncated or corrupt image fails here, not at open
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _invalid(p, f"it looks like an image ({fmt}) but does not decode ({exc})") from None
    return MediaInfo("image", IMAGE_MIME.get(fmt, "image/" + fmt.lower()), width, height)


def _open_video(target: str | Path, *, is_url: bool = False) -> Any:
    """An open PyAV container of an accepted video format with a video stream, else InvalidInputFile."""
    import av

    try:
        container = av.open(str(target), "r", **({"timeout": URL_TIMEOUT_S} if is_url else {}))
    except (av.FFmpegError, OSError, ValueError) as exc:
        what = "the URL does not serve a readable video" if is_url else "it is neither an image nor a video"
        raise _invalid(target, f"{what} ({exc})") from None
    fmt = container.format.name
    if not any(part in _VIDEO_DEMUXERS for part in fmt.split(",")) or not container.streams.video:
        container.close()
        raise _invalid(target, f"it is neither an image nor a video in an accepted format (ffmpeg sees {fmt})")
    return container


def _probe_video(target: str, *, is_url: bool) -> MediaInfo:
    import av

    with _open_video(target, is_url=is_url) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _invalid(target, f"its first video frame does not decode ({exc})") from None
        if first is None:
            raise _invalid(target, "it has no decodable video frame (is it truncated?)")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        codec = stream.codec_context.name
        return MediaInfo("video", _video_mime(container.format.name, target, codec),
                         stream.codec_context.width or first.width, stream.codec_context.height or first.height,
                         _duration(container, stream, fps), fps, codec)


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
        raise errors.InvalidInputFile(f"{shown!r} is not a base64 data URI; use data:<mime>;base64,<data>, "
                                      "e.g. data:image/png;base64,iVBOR...")
    mime = (match["mime"] or "").lower()
    ext = _EXT.get(mime) or (mimetypes.guess_extension(mime) if mime.startswith(("image/", "video/")) else None)
    if not ext:
        raise errors.InvalidInputFile(f"the data URI's media type {mime or '(none)'!r} is not an image or video; "
                                      "declare it, e.g. data:image/png;base64,... or data:video/mp4;base64,...")
    data = re.sub(r"\s+", "", unquote(match["data"]) if "%" in match["data"] else match["data"])
    if len(data) // 4 * 3 > MAX_DATA_URI_BYTES:
        raise errors.InvalidInputFile(f"the data URI holds more than {MAX_DATA_URI_BYTES // 2**20} MB; "
                                      "pass a file path or an http(s) URL for large inputs")
    data = data.translate(str.maketrans("-_", "+/"))   # accept URL-safe base64 too
    try:
        raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.InvalidInputFile(f"the data URI's base64 payload does not decode ({exc}); "
                                      "re-encode the file with standard base64") from None
    if not raw:
        raise errors.InvalidInputFile("the data URI is empty; put the base64-encoded file after the comma")
    dest = Path(dest_dir) / f"{hashlib.sha256(raw).hexdigest()}{ext}"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + f".{os.getpid()}.part")
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
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def poster_png(video_path: str | Path, max_side: int = 320) -> bytes:
    """A frame from about a third into the video, long side <= ``max_side``, as PNG bytes."""
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
        except av.FFmpegError as exc:
            raise _invalid(video_path, f"its frames do not decode ({exc})") from None
        if chosen is None:
            raise _invalid(video_path, "it has no decodable video frame")
        image = chosen.to_image()
    image.thumbnail((max_side, max_side))
    return _png(image)


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
                for last in container.decode(stream):
                    pass
            if last is None:
                _seek(container, stream, 0.0)
                for last in container.decode(stream):
                    pass
        except av.FFmpegError as exc:
            raise _invalid(video_path, f"its frames do not decode ({exc})") from None
        if last is None:
            raise _invalid(video_path, "it has no decodable video frame")
        return _png(last.to_image())


# --- local preview renderer ---------------------------------------------------------------------


def render_preview(dest: str | Path, *, width: int, height: int, seconds: float, fps: int = 24, prompt: str,
                   operation: str, images: Sequence[Path] = (), first_frame: Path | None = None,
                   last_frame: Path | None = None, input_video: Path | None = None,
                   label: str = "LOCAL PREVIEW - not Kling", progress: Callable[[float], None] | None = None,
                   variation: int = 0) -> None:
    """Encode an H.264 MP4 preview (not Kling) to ``dest``: exactly ``round(seconds * fps)`` frames.

    ``text``: the prompt over a moving background; ``image``: a pan over ``first_frame`` or a
    cross-fade from ``first_frame`` to ``last_frame``; ``reference``: the ``images`` in turn;
    ``edit``: ``input_video``'s frames scaled to the frame (``seconds`` should be its length).
    The prompt and ``label`` are drawn on every frame; ``variation`` changes the motion so several
    takes differ. ``progress(fraction)`` is called every 12 frames; an exception it raises aborts
    the render and leaves no file. Writes ``dest.part`` first, then renames it.
    """
    import av

    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"width and height must be even and >= 16 for H.264 yuv420p; got {width}x{height}")
    total = max(1, round(seconds * fps))
    overlay = _Overlay(width, height, prompt, label)
    frames = _frames(operation, width, height, total, fps, images, first_frame, last_frame, input_video, variation)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        with av.open(str(part), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "28"}
            for index, rgb in enumerate(frames):
                if progress is not None and index % 12 == 0:
                    progress(index / total)
                overlay.apply(rgb)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = index
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        os.replace(part, dest)
    finally:
        frames.close()
        part.unlink(missing_ok=True)
    if progress is not None:
        progress(1.0)


def _frames(operation: str, w: int, h: int, total: int, fps: int, images: Sequence[Path], first: Path | None,
            last: Path | None, video: Path | None, variation: int) -> _Frames:
    if operation == "edit":
        if video is None:
            raise ValueError("the edit preview needs input_video")
        return _video_frames(video, w, h, total, fps)
    if operation == "image":
        stills = [p for p in (first, last) if p is not None]
        if not stills:
            raise ValueError("the image preview needs first_frame or last_frame")
        return _still_frames(stills, w, h, total, variation)
    if operation == "reference" and images:
        return _reference_frames(images, w, h, total, variation)
    if operation not in ("text", "reference"):
        raise ValueError(f"operation must be text, image, reference or edit; got {operation!r}")
    background = _Background(w, h, variation)
    return (background.frame(i, total) for i in range(total))


class _Background:
    """A panning colour gradient with a drifting disk: cheap, visible motion."""

    def __init__(self, w: int, h: int, variation: int) -> None:
        import numpy as np

        self.w, self.h, self.phase = w, h, variation * 2.1
        x = np.arange(2 * w, dtype=np.float32) * (2 * math.pi / w) + self.phase
        row = np.stack([0.5 + 0.5 * np.sin(x + c * 2 * math.pi / 3) for c in range(3)], axis=-1)
        shade = np.linspace(0.55, 1.0, h, dtype=np.float32)
        self.tile = (row[None] * shade[:, None, None] * 190 + 25).astype(np.uint8)   # period w: wraps seamlessly
        self.r = max(4, min(w, h) // 7)
        yy, xx = np.mgrid[-self.r:self.r, -self.r:self.r]
        self.alpha = (np.clip(self.r - np.hypot(xx + 0.5, yy + 0.5), 0, 1) * 170).astype(np.uint16)[..., None]
        self.step = (1 + variation % 3) * w / 120   # one gradient period per 5 s (or faster, by variation)

    def frame(self, i: int, total: int) -> np.ndarray:
        off = int(i * self.step) % self.w
        out = self.tile[:, off:off + self.w].copy()
        t = 2 * math.pi * i / max(total, 1)
        cx = int(self.w / 2 + (self.w / 2 - self.r - 1) * math.sin(t + self.phase))
        cy = int(self.h / 2 + (self.h / 2 - self.r - 1) * math.sin(2 * t + self.phase))
        region = out[cy - self.r:cy + self.r, cx - self.r:cx + self.r]
        region[...] = (region * (255 - self.alpha) + 250 * self.alpha) // 255
        return out


def _fit(path: Path, w: int, h: int, cover: bool) -> np.ndarray:
    """The image at ``path`` scaled to cover (crop) or fit inside (letterbox) w x h, as RGB."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        fitted = ImageOps.fit(im, (w, h)) if cover else ImageOps.contain(im, (w, h))
    return np.asarray(fitted, dtype=np.uint8)


def _still_frames(paths: Sequence[Path], w: int, h: int, total: int, variation: int) -> _Frames:
    import numpy as np

    bw, bh = w + max(2, w // 8), h + max(2, h // 8)   # 12% larger: room to pan
    stills = [_fit(p, bw, bh, cover=True).astype(np.uint16) for p in paths]
    reverse = variation % 2 == 1
    for i in range(total):
        t = i / max(total - 1, 1)
        pos = 1 - t if reverse else t
        x, y = int((bw - w) * pos), int((bh - h) * pos)
        a = stills[0][y:y + h, x:x + w]
        if len(stills) == 1:
            yield a.astype(np.uint8)
            continue
        weight = int(256 * t * t * (3 - 2 * t))   # smoothstep: holds each end a little
        yield ((a * (256 - weight) + stills[1][y:y + h, x:x + w] * weight) >> 8).astype(np.uint8)


def _reference_frames(paths: Sequence[Path], w: int, h: int, total: int, variation: int) -> _Frames:
    background = _Background(w, h, variation)
    refs = [_fit(p, int(w * 0.8), int(h * 0.8), cover=False) for p in paths]
    per = total / len(refs)
    for i in range(total):
        k = min(int(i / per), len(refs) - 1)
        drift = (i - k * per) / per - 0.5
        ref = refs[k]
        ih, iw = ref.shape[:2]
        x = (w - iw) // 2 + int(drift * w * 0.08)
        y = (h - ih) // 2
        out = background.frame(i, total)
        out[y:y + ih, x:x + iw] = ref
        yield out


def _video_frames(path: Path, w: int, h: int, total: int, fps: int) -> _Frames:
    """``total`` frames at ``fps``: each the latest input frame at that time (the last one repeats)."""
    emitted, current, cached, start = 0, None, None, None
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if start is None:
                start = frame.time or 0.0
            at = frame.time - start if frame.time is not None else index / fps
            while current is not None and emitted < total and emitted / fps < at:
                cached = cached if cached is not None else _cover_frame(current, w, h)
                yield cached.copy()
                emitted += 1
            if emitted >= total:
                return
            current, cached = frame, None
    if current is None:
        raise _invalid(path, "it has no decodable video frame")
    last = cached if cached is not None else _cover_frame(current, w, h)
    for _ in range(total - emitted):
        yield last.copy()


def _cover_frame(frame: Any, w: int, h: int) -> np.ndarray:
    scale = max(w / frame.width, h / frame.height)
    sw, sh = max(w, math.ceil(frame.width * scale)), max(h, math.ceil(frame.height * scale))
    rgb = frame.reformat(width=sw, height=sh, format="rgb24").to_ndarray()
    x, y = (sw - w) // 2, (sh - h) // 2
    return rgb[y:y + h, x:x + w]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1: only the small bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, max_width: float, max_lines: int) -> list[str]:
    import textwrap

    chars = max(8, int(max_width / max(font.getlength("n"), 1.0)))
    while True:
        lines = textwrap.wrap(" ".join(text.split()), chars) or []
        if chars <= 8 or all(font.getlength(line) <= max_width for line in lines[:max_lines]):
            break
        chars -= 2
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, chars - 3)].rstrip() + "..."
    return lines


class _Overlay:
    """The label and prompt, drawn once with Pillow, alpha-blended onto each frame with numpy."""

    def __init__(self, w: int, h: int, prompt: str, label: str) -> None:
        pad = max(3, h // 72)
        self.w, self.h = w, h
        self.patches: list[tuple[int, int, int, int, np.ndarray, np.ndarray]] = []
        self._add(label, _font(max(11, h // 28)), pad, pad, pad, centred=False)
        prompt_font = _font(max(12, h // 18))
        lines = _wrap(prompt, prompt_font, w - 6 * pad, max_lines=4)
        if lines:
            self._add("\n".join(lines), prompt_font, pad, None, pad, centred=True)

    def _add(self, text: str, font: Any, x: int, y: int | None, pad: int, centred: bool) -> None:
        import numpy as np
        from PIL import Image, ImageDraw

        box = ImageDraw.Draw(Image.new("RGBA", (1, 1))).multiline_textbbox((0, 0), text, font=font,
                                                                             align="center")
        pw, ph = math.ceil(box[2]) + 2 * pad, math.ceil(box[3]) + 2 * pad
        patch = Image.new("RGBA", (pw, ph), (0, 0, 0, 150))
        ImageDraw.Draw(patch).multiline_text((pad, pad), text, font=font, fill=(255, 255, 255, 255),
                                             align="center")
        x = max(0, (self.w - pw) // 2 if centred else x)
        y = max(0, self.h - ph - 2 * pad if y is None else y)
        rgba = np.asarray(patch, dtype=np.uint16)[: self.h - y, : self.w - x]   # clip to the frame
        alpha = rgba[..., 3:4]
        self.patches.append((y, y + rgba.shape[0], x, x + rgba.shape[1], rgba[..., :3] * alpha, 255 - alpha))

    def apply(self, rgb: np.ndarray) -> None:
        for y0, y1, x0, x1, premultiplied, inverse in self.patches:
            region = rgb[y0:y1, x0:x1]
            region[...] = (region * inverse + premultiplied) // 255

"""The ``local`` provider's renderer: an H.264 MP4 preview (not Kling) of a request.

PyAV, Pillow and numpy are imported lazily. Synchronous and CPU-heavy: run it in a worker thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from .media import _invalid, _open_video

if TYPE_CHECKING:
    import numpy as np

_Frames: TypeAlias = "Generator[np.ndarray, None, None]"


def render_preview(
    dest: str | Path,
    *,
    width: int,
    height: int,
    seconds: float,
    fps: int = 24,
    prompt: str,
    operation: str,
    images: Sequence[Path] = (),
    first_frame: Path | None = None,
    last_frame: Path | None = None,
    input_video: Path | None = None,
    label: str = "LOCAL PREVIEW - not Kling",
    progress: Callable[[float], None] | None = None,
    variation: int = 0,
    clean_dest: str | Path | None = None,
) -> None:
    """Encode an H.264 MP4 preview (not Kling) to ``dest``: exactly ``round(seconds * fps)`` frames.

    ``text``: the prompt over a moving background; ``image``: a pan over ``first_frame`` or a
    cross-fade from ``first_frame`` to ``last_frame``; ``reference``: the ``images`` in turn;
    ``edit``: ``input_video``'s frames scaled to the frame (``seconds`` should be its length) and
    colour-graded from the prompt (``preview_grade``), so the edit visibly changes the picture.
    The prompt and ``label`` are drawn on every frame; ``variation`` changes the motion so several
    takes differ. With ``clean_dest`` the same frames without the overlay are encoded there too
    (what ``preview_clean`` files so a reused preview does not pile captions up).
    ``progress(fraction)`` is called every 12 frames; an exception it raises aborts the render and
    leaves no file. Writes ``dest.part`` first, then renames it.
    """
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"width and height must be even and >= 16 for H.264 yuv420p; got {width}x{height}")
    total = max(1, round(seconds * fps))
    overlay = _Overlay(width, height, prompt, label)
    source = _frames(operation, width, height, total, fps, images, first_frame, last_frame, input_video, variation)
    frames = source
    if operation == "edit":
        from .preview_grade import grade_for

        grade = grade_for(prompt)[1]
        frames = (grade(rgb) for rgb in source)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    clean_part = Path(clean_dest).with_name(Path(clean_dest).name + ".part") if clean_dest is not None else None
    try:
        with ExitStack() as stack:
            out = stack.enter_context(_Encoder(part, width, height, fps))
            clean = stack.enter_context(_Encoder(clean_part, width, height, fps)) if clean_part else None
            for index, rgb in enumerate(frames):
                if progress is not None and index % 12 == 0:
                    progress(index / total)
                if clean is not None:
                    clean.add(rgb, index)  # from_ndarray copies: the overlay below does not reach it
                overlay.apply(rgb)
                out.add(rgb, index)
        os.replace(part, dest)
        if clean_part is not None and clean_dest is not None:
            os.replace(clean_part, clean_dest)
    finally:
        source.close()
        part.unlink(missing_ok=True)
        if clean_part is not None:
            clean_part.unlink(missing_ok=True)
    if progress is not None:
        progress(1.0)


class _Encoder:
    """An H.264 MP4 (ultrafast, CRF 28, faststart) written frame by frame from RGB arrays."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path, self.width, self.height, self.fps = path, width, height, fps

    def __enter__(self) -> _Encoder:
        import av

        self.out = av.open(str(self.path), "w", format="mp4", container_options={"movflags": "+faststart"})
        self.stream = self.out.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.options = {"preset": "ultrafast", "crf": "28"}
        return self

    def add(self, rgb: np.ndarray, index: int) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = index
        self.out.mux(self.stream.encode(frame))

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                self.out.mux(self.stream.encode())
        finally:
            self.out.close()


def _frames(
    operation: str,
    w: int,
    h: int,
    total: int,
    fps: int,
    images: Sequence[Path],
    first: Path | None,
    last: Path | None,
    video: Path | None,
    variation: int,
) -> _Frames:
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
        self.tile = (row[None] * shade[:, None, None] * 190 + 25).astype(np.uint8)  # period w: wraps seamlessly
        self.r = max(4, min(w, h) // 7)
        yy, xx = np.mgrid[-self.r : self.r, -self.r : self.r]
        self.alpha = (np.clip(self.r - np.hypot(xx + 0.5, yy + 0.5), 0, 1) * 170).astype(np.uint16)[..., None]
        self.step = (1 + variation % 3) * w / 120  # one gradient period per 5 s (or faster, by variation)

    def frame(self, i: int, total: int) -> np.ndarray:
        off = int(i * self.step) % self.w
        out = self.tile[:, off : off + self.w].copy()
        t = 2 * math.pi * i / max(total, 1)
        cx = int(self.w / 2 + (self.w / 2 - self.r - 1) * math.sin(t + self.phase))
        cy = int(self.h / 2 + (self.h / 2 - self.r - 1) * math.sin(2 * t + self.phase))
        region = out[cy - self.r : cy + self.r, cx - self.r : cx + self.r]
        region[...] = (region * (255 - self.alpha) + 250 * self.alpha) // 255
        return out


def _fit(path: Path, w: int, h: int, cover: bool) -> np.ndarray:
    """The image at ``path`` scaled to cover (crop) or fit inside (letterbox) w x h, as RGB."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as source:
        im = ImageOps.exif_transpose(source).convert("RGB")
        fitted = ImageOps.fit(im, (w, h)) if cover else ImageOps.contain(im, (w, h))
    return np.asarray(fitted, dtype=np.uint8)


def _still_frames(paths: Sequence[Path], w: int, h: int, total: int, variation: int) -> _Frames:
    import numpy as np

    bw, bh = w + max(2, w // 8), h + max(2, h // 8)  # 12% larger: room to pan
    stills = [_fit(p, bw, bh, cover=True).astype(np.uint16) for p in paths]
    reverse = variation % 2 == 1
    for i in range(total):
        t = i / max(total - 1, 1)
        pos = 1 - t if reverse else t
        x, y = int((bw - w) * pos), int((bh - h) * pos)
        a = stills[0][y : y + h, x : x + w]
        if len(stills) == 1:
            yield a.astype(np.uint8)
            continue
        weight = int(256 * t * t * (3 - 2 * t))  # smoothstep: holds each end a little
        yield ((a * (256 - weight) + stills[1][y : y + h, x : x + w] * weight) >> 8).astype(np.uint8)


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
        out[y : y + ih, x : x + iw] = ref
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
    return rgb[y : y + h, x : x + w]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the small bitmap font
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

        box = ImageDraw.Draw(Image.new("RGBA", (1, 1))).multiline_textbbox((0, 0), text, font=font, align="center")
        pw, ph = math.ceil(box[2]) + 2 * pad, math.ceil(box[3]) + 2 * pad
        patch = Image.new("RGBA", (pw, ph), (0, 0, 0, 150))
        ImageDraw.Draw(patch).multiline_text((pad, pad), text, font=font, fill=(255, 255, 255, 255), align="center")
        x = max(0, (self.w - pw) // 2 if centred else x)
        y = max(0, self.h - ph - 2 * pad if y is None else y)
        rgba = np.asarray(patch, dtype=np.uint16)[: self.h - y, : self.w - x]  # clip to the frame
        alpha = rgba[..., 3:4]
        self.patches.append((y, y + rgba.shape[0], x, x + rgba.shape[1], rgba[..., :3] * alpha, 255 - alpha))

    def apply(self, rgb: np.ndarray) -> None:
        for y0, y1, x0, x1, premultiplied, inverse in self.patches:
            region = rgb[y0:y1, x0:x1]
            region[...] = (region * inverse + premultiplied) // 255

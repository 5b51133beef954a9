"""Real, small MP4 and PNG bytes for emulators to serve and tests to send."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=16)
def mp4_bytes(
    seconds: float = 2.0,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    *,
    audio_hz: float | None = None,
    color: tuple[int, int, int] | None = None,
    crf: int = 35,
    preset: str = "ultrafast",
) -> bytes:
    """A real H.264 MP4 of the given length and size.

    The picture is a moving gradient, or a flat ``color`` (so a test can tell which clip a decoded
    frame came from). With ``audio_hz`` it also has an AAC stereo track: a sine tone at that pitch
    (48 kHz, amplitude 0.5) lasting the whole video. ``preset="veryfast"`` (or slower) gives B-frames,
    so decode order differs from display order as in most real videos.
    """
    import av
    import numpy as np

    buf = io.BytesIO()
    frames = max(1, int(round(seconds * fps)))
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        sound = container.add_stream("aac", rate=48_000, layout="stereo") if audio_hz else None
        ys, xs = np.mgrid[0:height, 0:width]
        samples_done, total_samples = 0, int(round(frames / fps * 48_000))
        for i in range(frames):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            if color is not None:
                frame[...] = color
            else:
                frame[..., 0] = (xs * 255 // max(1, width - 1) + i * 4) % 256
                frame[..., 1] = (ys * 255 // max(1, height - 1)) % 256
                frame[..., 2] = (i * 8) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            while sound is not None and samples_done < min(total_samples, int((i + 1) / fps * 48_000)):
                n = min(1024, total_samples - samples_done)
                t = (np.arange(samples_done, samples_done + n) / 48_000).astype(np.float32)
                tone = (0.5 * np.sin(2 * np.pi * audio_hz * t)).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = 48_000, samples_done
                samples_done += n
                for packet in sound.encode(chunk):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            for packet in sound.encode():
                container.mux(packet)
    return buf.getvalue()


def write_mp4(path: Path, seconds: float = 2.0, width: int = 320, height: int = 180, fps: int = 24, **kwargs: object) -> Path:
    """``mp4_bytes(...)`` written to ``path``; returns ``path``."""
    path.write_bytes(mp4_bytes(seconds, width, height, fps, **kwargs))  # type: ignore[arg-type]
    return path


@lru_cache(maxsize=16)
def png_bytes(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()

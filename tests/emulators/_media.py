"""Real, small MP4 and PNG bytes for emulators to serve and tests to send."""

from __future__ import annotations

import io
from functools import lru_cache


@lru_cache(maxsize=16)
def mp4_bytes(seconds: float = 2.0, width: int = 320, height: int = 180, fps: int = 24) -> bytes:
    """A real H.264 MP4 (a moving gradient) of the given length and size."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "35"}
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(max(1, int(round(seconds * fps)))):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[..., 0] = (xs * 255 // max(1, width - 1) + i * 4) % 256
            frame[..., 1] = (ys * 255 // max(1, height - 1)) % 256
            frame[..., 2] = (i * 8) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


@lru_cache(maxsize=16)
def png_bytes(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()

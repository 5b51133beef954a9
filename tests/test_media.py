"""media.py: probing, data URIs, poster/last frames and the local preview renderer, on real files."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kling_mcp import errors, media, preview
from tests.emulators._media import mp4_bytes, png_bytes

ACCEPTED_WORDS = ("PNG", "JPEG", "MP4")


def _gray_video(path: Path, frames: int = 96, fps: int = 24, size: tuple[int, int] = (160, 96),
                fmt: str = "mp4", codec: str = "libx264") -> Path:
    """A video whose frame i is flat gray level 2*i, so a decoded frame tells its own index."""
    import av
    import numpy as np

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            arr = np.full((size[1], size[0], 3), 2 * i, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        out.mux(stream.encode())
    return path


def _decode(path: Path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream, frames


def _png_image(data: bytes):
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- probe --------------------------------------------------------------------------------------


def test_media_import_does_not_load_heavy_libraries():
    code = "import sys, kling_mcp.media; print([m for m in ('av', 'PIL', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"


def test_probe_png(image_file):
    info = media.probe(image_file)
    assert info == media.MediaInfo("image", "image/png", 96, 64, None, None, None)


def test_probe_jpeg(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (50, 30), (10, 200, 30)).save(path, format="JPEG")
    info = media.probe(path)
    assert (info.kind, info.mime_type, info.width, info.height) == ("image", "image/jpeg", 50, 30)


def test_probe_mp4(video_file):
    info = media.probe(video_file)
    assert (info.kind, info.mime_type, info.width, info.height, info.codec) == ("video", "video/mp4", 320, 180,
                                                                                  "h264")
    assert info.duration_s == pytest.approx(4.0, abs=1 / 24)
    assert info.fps == pytest.approx(24.0)


def test_probe_webm_and_mkv(tmp_path):
    webm = media.probe(_gray_video(tmp_path / "clip.webm", frames=12, fmt="webm", codec="libvpx"))
    assert (webm.mime_type, webm.width, webm.height, webm.codec) == ("video/webm", 160, 96, "vp8")
    assert webm.duration_s == pytest.approx(0.5, abs=0.05)
    mkv = media.probe(_gray_video(tmp_path / "clip.mkv", frames=12, fmt="matroska"))
    assert (mkv.mime_type, mkv.codec) == ("video/x-matroska", "h264")


def test_probe_video_url():
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.emulators._server import serve

    body = mp4_bytes(2.0, 320, 180)
    app = Starlette(routes=[Route("/clip.mp4", lambda request: Response(body, media_type="video/mp4"))])
    with serve(app) as base:
        info = media.probe(f"{base}/clip.mp4")
    assert (info.kind, info.width, info.height) == ("video", 320, 180)
    assert info.duration_s == pytest.approx(2.0, abs=1 / 24)


@pytest.mark.parametrize("name, content, reason", [
    ("notes.txt", b"just some text, not a picture\n" * 20, "is not an image/video file"),
    ("empty.mp4", b"", "empty"),
    ("garbage.png", bytes(range(256)) * 8, "is not an image/video file"),
], ids=["text", "empty", "garbage"])
def test_probe_rejects_non_media(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(errors.InvalidInputFile) as info:
        media.probe(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert all(word in message for word in ACCEPTED_WORDS)
    assert "ffmpeg" not in message and "Errno" not in message and "image2" not in message


def test_probe_rejects_directory_and_missing_file(tmp_path):
    with pytest.raises(errors.InvalidInputFile, match="directory"):
        media.probe(tmp_path)
    with pytest.raises(errors.InvalidInputFile, match="does not exist"):
        media.probe(tmp_path / "missing.png")


def test_probe_rejects_truncated_files(tmp_path):
    video = tmp_path / "cut.mp4"
    video.write_bytes(mp4_bytes(2.0, 320, 180)[:4000])
    with pytest.raises(errors.InvalidInputFile, match=r"cut\.mp4"):
        media.probe(video)
    image = tmp_path / "cut.png"
    image.write_bytes(png_bytes(300, 200, (1, 2, 3))[:120])
    with pytest.raises(errors.InvalidInputFile, match=r"image \(PNG\) but does not decode"):
        media.probe(image)


# --- data URIs ----------------------------------------------------------------------------------


def test_save_data_uri_round_trip(image_file, tmp_path):
    dest_dir = tmp_path / "inputs"
    saved = media.save_data_uri(media.data_uri(image_file), dest_dir)
    assert saved.read_bytes() == image_file.read_bytes()
    assert saved == dest_dir / (hashlib.sha256(image_file.read_bytes()).hexdigest() + ".png")
    assert media.save_data_uri(media.data_uri(image_file), dest_dir) == saved
    assert media.probe(saved).kind == "image"


def test_save_data_uri_accepts_unpadded_urlsafe_and_wrapped_base64(tmp_path):
    raw = mp4_bytes(1.0, 64, 64)
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    saved = media.save_data_uri(f"data:video/mp4;name=clip.mp4;base64,{wrapped}", tmp_path)
    assert saved.suffix == ".mp4" and saved.read_bytes() == raw


@pytest.mark.parametrize("uri, words", [
    ("not a uri", "data:<mime>;base64"),
    ("data:image/png,rawtext", "data:<mime>;base64"),
    ("data:image/png;base64,@@@@", "does not decode"),
    ("data:image/png;base64,QUJD=QUJD", "does not decode"),
    ("data:text/plain;base64,aGVsbG8=", "not an image or video"),
    ("data:;base64,aGVsbG8=", "not an image or video"),
    ("data:image/png;base64,", "empty"),
])
def test_save_data_uri_rejects_malformed(tmp_path, uri, words):
    with pytest.raises(errors.InvalidInputFile) as info:
        media.save_data_uri(uri, tmp_path)
    assert words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_save_data_uri_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(media, "MAX_DATA_URI_BYTES", 1000)
    uri = "data:image/png;base64," + base64.b64encode(b"x" * 2000).decode()
    with pytest.raises(errors.InvalidInputFile, match="more than"):
        media.save_data_uri(uri, tmp_path)


# --- poster and last frame ----------------------------------------------------------------------


def test_poster_png_is_small_and_about_a_third_in(tmp_path):
    video = _gray_video(tmp_path / "gray.mp4", frames=96, size=(640, 360))
    data = media.poster_png(video)
    image = _png_image(data)
    assert image.size == (320, 180)
    assert len(data) < 60_000
    gray = sum(image.convert("L").getdata()) / (320 * 180)
    assert abs(gray - 2 * 32) <= 8   # frame 32 of 96 (1.33 s of 4 s), within a few frames


def test_poster_png_max_side_portrait(tmp_path):
    video = _gray_video(tmp_path / "tall.mp4", frames=24, size=(96, 160))
    assert _png_image(media.poster_png(video, max_side=80)).size == (48, 80)


@pytest.mark.parametrize("frames", [20, 96])   # short: no seek; long: seek near the end
def test_last_frame_png_is_the_final_frame_at_full_size(tmp_path, frames):
    video = _gray_video(tmp_path / "gray.mp4", frames=frames, size=(160, 96))
    image = _png_image(media.last_frame_png(video))
    assert image.size == (160, 96)
    gray = sum(image.convert("L").getdata()) / (160 * 96)
    assert abs(gray - 2 * (frames - 1)) <= 3


def test_frames_of_a_non_video_raise(image_file, tmp_path):
    text = tmp_path / "x.txt"
    text.write_text("hello")
    for bad in (image_file, text):
        with pytest.raises(errors.InvalidInputFile):
            media.last_frame_png(bad)
        with pytest.raises(errors.InvalidInputFile):
            media.poster_png(bad)


# --- render_preview -----------------------------------------------------------------------------


def _center_mean(frame, size: int = 8):
    h, w = frame.shape[:2]
    return frame[h // 2 - size:h // 2 + size, w // 2 - size:w // 2 + size].reshape(-1, 3).mean(axis=0)


def test_render_text_preview(tmp_path):
    dest = tmp_path / "out.mp4"
    fractions: list[float] = []
    started = time.perf_counter()
    preview.render_preview(dest, width=640, height=360, seconds=5, prompt="A red fox runs through snow at dawn",
                         operation="text", progress=fractions.append)
    print(f"render 5 s 640x360: {time.perf_counter() - started:.2f} s")
    stream, frames = _decode(dest)
    assert (stream.width, stream.height, stream.codec_context.name) == (640, 360, "h264")
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert float(stream.average_rate) == 24 and len(frames) == 120
    assert float(stream.duration * stream.time_base) == pytest.approx(5.0)
    assert abs(frames[0].astype(int) - frames[60].astype(int)).mean() > 10   # visible motion
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 10
    assert not (tmp_path / "out.mp4.part").exists()


def test_render_variation_changes_the_picture(tmp_path):
    for n in (0, 1):
        preview.render_preview(tmp_path / f"{n}.mp4", width=96, height=64, seconds=0.5, prompt="x",
                             operation="text", variation=n)
    a, b = _decode(tmp_path / "0.mp4")[1], _decode(tmp_path / "1.mp4")[1]
    assert abs(a[0].astype(int) - b[0].astype(int)).mean() > 10


def test_render_image_crossfades_first_to_last(tmp_path, image_file, image_file2):
    dest = tmp_path / "out.mp4"
    preview.render_preview(dest, width=160, height=96, seconds=1, prompt="p", operation="image",
                         first_frame=image_file, last_frame=image_file2)
    _, frames = _decode(dest)
    assert len(frames) == 24
    assert _center_mean(frames[0]) == pytest.approx((30, 120, 200), abs=12)
    assert _center_mean(frames[-1]) == pytest.approx((220, 180, 40), abs=12)


def test_render_reference_cycles_images(tmp_path, image_file, image_file2):
    dest = tmp_path / "out.mp4"
    preview.render_preview(dest, width=160, height=96, seconds=2, prompt="p", operation="reference",
                         images=[image_file, image_file2])
    _, frames = _decode(dest)
    assert len(frames) == 48
    assert _center_mean(frames[5]) == pytest.approx((30, 120, 200), abs=12)
    assert _center_mean(frames[40]) == pytest.approx((220, 180, 40), abs=12)


def test_render_edit_follows_the_input_video(tmp_path):
    source = _gray_video(tmp_path / "in.mp4", frames=30, fps=30, size=(320, 180))   # 1 s at 30 fps
    dest = tmp_path / "out.mp4"
    preview.render_preview(dest, width=160, height=96, seconds=1.0, prompt="make it blue", operation="edit",
                         input_video=source)
    stream, frames = _decode(dest)
    assert (stream.width, stream.height, len(frames)) == (160, 96, 24)
    # output frame k shows input frame floor(k * 30 / 24) (gray 2 * that), graded for "make it blue"
    import numpy as np

    from kling_mcp.preview_grade import grade_for

    grade = grade_for("make it blue")[1]
    for k in (0, 12, 23):
        expected = grade(np.full((1, 1, 3), 2 * (k * 30 // 24), dtype=np.uint8)).reshape(3).astype(float)
        assert _center_mean(frames[k]) == pytest.approx(expected, abs=5)


def test_render_abort_from_progress_leaves_no_file(tmp_path):
    dest = tmp_path / "out.mp4"

    def stop(fraction: float) -> None:
        if fraction > 0.2:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        preview.render_preview(dest, width=96, height=64, seconds=2, prompt="p", operation="text", progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_render_rejects_odd_sizes_and_unknown_operations(tmp_path):
    with pytest.raises(ValueError, match="even"):
        preview.render_preview(tmp_path / "a.mp4", width=641, height=360, seconds=1, prompt="p", operation="text")
    with pytest.raises(ValueError, match="operation must be"):
        preview.render_preview(tmp_path / "a.mp4", width=64, height=64, seconds=1, prompt="p", operation="dance")
    with pytest.raises(ValueError, match="first_frame"):
        preview.render_preview(tmp_path / "a.mp4", width=64, height=64, seconds=1, prompt="p", operation="image")
    assert list(tmp_path.iterdir()) == []


def test_one_data_uri_saved_by_many_threads_at_once_lands_once(tmp_path):
    """Concurrent calls in one process (two tool calls with the same inline image) must not share a .part."""
    from concurrent.futures import ThreadPoolExecutor

    uri = "data:image/png;base64," + base64.b64encode(png_bytes(32, 24, (10, 200, 30))).decode()
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: media.save_data_uri(uri, tmp_path / "inputs"), range(64)))
    assert len(set(paths)) == 1 and paths[0].exists()
    assert [p.name for p in (tmp_path / "inputs").iterdir()] == [paths[0].name]

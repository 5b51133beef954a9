"""kling_mcp.frames (first/last frame PNGs) and kling_mcp.rendition (the player's preview), cached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kling_mcp import errors, frames, media, rendition
from kling_mcp.assembly import assemble
from tests.emulators._media import mp4_bytes, write_mp4

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _pixels(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_first_and_last_frames_are_pngs_cached_beside_the_video(tmp_path: Path, monkeypatch):
    clips = [write_mp4(tmp_path / "r.mp4", 1.0, 320, 180, 24, color=RED),
             write_mp4(tmp_path / "b.mp4", 1.0, 320, 180, 24, color=BLUE)]
    video = assemble(clips, tmp_path / "joined.mp4").path
    first, last = frames.frame_png(video, "first"), frames.frame_png(video, "last")
    assert (first, last) == (tmp_path / "joined.mp4.first.png", tmp_path / "joined.mp4.last.png")
    first_px, last_px = _pixels(first), _pixels(last)
    assert first_px.shape == last_px.shape == (180, 320, 3)
    assert first_px[..., 0].mean() > 180 and last_px[..., 2].mean() > 180  # red first, blue last
    made = {p: p.stat().st_mtime_ns for p in (first, last)}

    def fail(*args: object) -> bytes:
        raise AssertionError("a cached frame was decoded again")

    monkeypatch.setattr(media, "first_frame_png", fail)
    monkeypatch.setattr(media, "last_frame_png", fail)
    assert frames.frame_png(video, "first") == first and frames.frame_png(video, "last") == last
    assert {p: p.stat().st_mtime_ns for p in (first, last)} == made
    assert sorted(p.name for p in tmp_path.iterdir() if ".part" in p.name) == []


def test_a_replaced_video_gets_fresh_frames(tmp_path: Path):
    video = write_mp4(tmp_path / "v.mp4", 1.0, 160, 90, 24, color=RED)
    assert _pixels(frames.frame_png(video, "last"))[..., 0].mean() > 180
    write_mp4(tmp_path / "v.mp4", 1.0, 160, 90, 24, color=BLUE)
    os.utime(video, (video.stat().st_atime, video.stat().st_mtime + 5))
    assert _pixels(frames.frame_png(video, "last"))[..., 2].mean() > 180


def test_frames_of_something_that_is_not_a_video(tmp_path: Path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(errors.InvalidInputFile):
        frames.frame_png(text, "first")
    assert not frames.frame_path(text, "first").exists()


def _streams(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return {
            "codec": video.codec_context.name,
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": float(video.average_rate),
            "frames": sum(1 for _ in container.decode(video)),
            "audio": [s.codec_context.name for s in container.streams.audio],
        }


def test_preview_rendition_is_small_h264_faststart_and_made_once(tmp_path: Path, monkeypatch):
    big = write_mp4(tmp_path / "big.mp4", 3.0, 1280, 720, 60, audio_hz=330, crf=12)
    assert big.stat().st_size > 1_000_000
    preview = rendition.preview_rendition(big, max_bytes=1_000_000)
    assert preview == tmp_path / "big.mp4.preview.mp4"
    info = _streams(preview)
    assert info["codec"] == "h264" and info["size"][1] <= 480 and info["audio"] == ["aac"]
    assert info["size"][0] / info["size"][1] == pytest.approx(16 / 9, rel=0.02)
    assert info["fps"] == 30.0 and info["frames"] == pytest.approx(90, abs=2)  # 60 fps halved, 3 s kept
    assert preview.stat().st_size <= 1_000_000
    head = preview.read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")  # faststart: playable before the last byte arrives
    made = preview.stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the preview was encoded again")

    monkeypatch.setattr(rendition, "_transcode", fail)
    assert rendition.preview_rendition(big, max_bytes=1_000_000) == preview
    assert preview.stat().st_mtime_ns == made


def test_a_small_h264_original_is_its_own_preview(tmp_path: Path):
    small = write_mp4(tmp_path / "small.mp4", 1.0, 320, 180, 24)
    assert rendition.preview_rendition(small) == small
    assert not rendition.rendition_path(small).exists()
    tall = write_mp4(tmp_path / "tall.mp4", 1.0, 480, 854, 24)  # small in bytes but taller than 480
    preview = rendition.preview_rendition(tall)
    assert preview != tall and _streams(preview)["size"] == (270, 480)


def test_preview_of_a_non_video(tmp_path: Path):
    (tmp_path / "x.mp4").write_bytes(mp4_bytes()[:500])
    with pytest.raises(errors.InvalidInputFile):
        rendition.preview_rendition(tmp_path / "x.mp4")


def test_a_long_video_gets_a_leaner_preview_near_the_byte_budget(tmp_path: Path):
    long = write_mp4(tmp_path / "long.mp4", 20.0, 640, 360, 24, audio_hz=440, crf=18)
    preview = rendition.preview_rendition(long, max_bytes=200_000)
    info = _streams(preview)
    assert info["size"] == (426, 240) and info["fps"] == 12.0 and info["audio"] == ["aac"]
    assert info["frames"] == pytest.approx(240, abs=2)  # all 20 s kept
    assert preview.stat().st_size <= 200_000 * 1.25
    budget = rendition.budget_for(600, True, 480, 4_000_000)  # a 10-minute board stays a few MB
    assert (budget.max_height, budget.max_fps) == (240, 15) and budget.video_bps + budget.audio_bps <= 64_000

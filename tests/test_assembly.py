"""kling_mcp.assembly on real files: remux, re-encode to one size and rate, crossfades, sound, bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kling_mcp import errors
from kling_mcp.assembly import assemble
from tests.emulators._media import write_mp4

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def _decode(path: Path) -> dict:
    """Everything a test checks about an MP4: size, rate, frames (RGB), sound (48 kHz mono mix)."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "fps": float(video.average_rate),
            "codec": video.codec_context.name,
            "has_audio": bool(container.streams.audio),
        }
        decoded = list(container.decode(video))
        frames = [f.to_ndarray(format="rgb24") for f in decoded]
        info["times"] = [f.time for f in decoded]
    info["frames"] = frames
    info["duration_s"] = len(frames) / info["fps"]
    if info["has_audio"]:
        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=48_000)
            chunks = [
                c.to_ndarray().reshape(-1) for f in container.decode(audio=0) for c in resampler.resample(f)
            ]
        info["audio"] = np.concatenate(chunks)
    return info


def _video_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _rms(samples) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def _mean_rgb(frame) -> tuple[float, float, float]:
    return tuple(float(v) for v in frame.reshape(-1, 3).mean(axis=0))


# --- remux ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["ultrafast", "veryfast"])  # veryfast: B-frames, negative decode times
def test_same_format_clips_remux_without_re_encoding(tmp_path: Path, preset: str):
    clips = [
        write_mp4(tmp_path / f"{n}.mp4", seconds, 320, 180, 24, audio_hz=hz, preset=preset)
        for n, (seconds, hz) in enumerate([(2.0, 440), (3.0, 660), (1.5, 550)])
    ]
    result = assemble(clips, tmp_path / "out" / "joined.mp4")
    assert result.mode == "remux"
    assert (result.width, result.height, result.fps) == (320, 180, 24.0)
    assert result.duration_s == pytest.approx(6.5, abs=0.01)
    assert result.path == tmp_path / "out" / "joined.mp4" and result.size_bytes == result.path.stat().st_size
    # Not re-encoded: the joined video track is the inputs' compressed packets, byte for byte, in order.
    assert _video_packets(result.path) == [p for clip in clips for p in _video_packets(clip)]
    out = _decode(result.path)
    assert len(out["frames"]) == 48 + 72 + 36
    assert out["frames"][0].mean() == pytest.approx(_decode(clips[0])["frames"][0].mean(), abs=1)
    assert out["frames"][48].mean() == pytest.approx(_decode(clips[1])["frames"][0].mean(), abs=1)
    times = out["times"]
    assert all(b - a == pytest.approx(1 / 24, abs=1e-3) for a, b in zip(times, times[1:]))  # one frame apart
    assert out["has_audio"] and len(out["audio"]) / 48_000 == pytest.approx(6.5, abs=0.1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["joined.mp4"]  # no temp file left


def test_remux_of_clips_without_sound(tmp_path: Path):
    clips = [write_mp4(tmp_path / f"{n}.mp4", 1.0, 160, 90, 30) for n in range(4)]
    result = assemble(clips, tmp_path / "joined.mp4")
    out = _decode(result.path)
    assert result.mode == "remux" and not out["has_audio"]
    assert len(out["frames"]) == 120 and result.duration_s == pytest.approx(4.0, abs=0.01)


def test_clips_of_one_size_but_other_encoder_settings_are_re_encoded(tmp_path: Path):
    # Their parameter sets (SPS/PPS) differ, and an MP4 track has one set: copying packets would garble clip 2.
    clips = [write_mp4(tmp_path / "a.mp4", 1.0, 160, 90, 24, crf=35), write_mp4(tmp_path / "b.mp4", 1.0, 160, 90, 24, crf=20)]
    result = assemble(clips, tmp_path / "joined.mp4")
    out = _decode(result.path)
    assert result.mode == "reencode" and len(out["frames"]) == 48 and (out["width"], out["height"]) == (160, 90)


# --- re-encode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sound", [False, True])
def test_mixed_sizes_and_rates_re_encode_to_the_first_video(tmp_path: Path, sound: bool):
    first = write_mp4(tmp_path / "wide.mp4", 2.0, 320, 180, 24, color=RED)
    square = write_mp4(tmp_path / "square.mp4", 1.5, 200, 200, 30, color=BLUE, audio_hz=440 if sound else None)
    tall = write_mp4(tmp_path / "tall.mp4", 1.0, 180, 320, 25, color=GREEN)
    progress: list[float] = []
    result = assemble([first, square, tall], tmp_path / "joined.mp4", on_progress=progress.append)
    assert result.mode == "reencode"
    assert (result.width, result.height, result.fps) == (320, 180, 24.0)
    assert result.duration_s == pytest.approx(4.5, abs=0.05)
    out = _decode(result.path)
    assert (out["width"], out["height"], out["fps"], out["codec"]) == (320, 180, 24.0, "h264")
    assert out["duration_s"] == pytest.approx(4.5, abs=0.05)
    assert out["has_audio"] is sound  # only the middle clip has sound: silence around it, full length
    if sound:
        audio = out["audio"]
        assert len(audio) / 48_000 == pytest.approx(4.5, abs=0.05)
        assert _rms(audio[:90_000]) < 0.01 and _rms(audio[100_000:160_000]) > 0.3 and _rms(audio[176_000:]) < 0.01
    square_frame = out["frames"][48 + 18]  # inside the second clip: pillarboxed blue
    assert _mean_rgb(square_frame[:, 140:180])[2] > 180  # blue picture in the middle
    assert max(_mean_rgb(square_frame[:, :40])) < 25 and max(_mean_rgb(square_frame[:, -40:])) < 25  # black bars
    assert _mean_rgb(out["frames"][-1][:, 150:170])[1] > 150  # the tall green clip at the end
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 3


def test_aspect_ratio_fits_every_clip_into_that_frame(tmp_path: Path):
    clips = [write_mp4(tmp_path / "a.mp4", 1.0, 320, 180, 24, color=RED),
             write_mp4(tmp_path / "b.mp4", 1.0, 320, 180, 24, color=BLUE)]
    result = assemble(clips, tmp_path / "vertical.mp4", aspect_ratio="9:16")
    out = _decode(result.path)
    assert result.mode == "reencode" and (out["width"], out["height"]) == (180, 320) == (result.width, result.height)
    frame = out["frames"][5]
    assert max(_mean_rgb(frame[:60])) < 25 and _mean_rgb(frame[150:170])[0] > 180  # letterboxed red


def test_silence_fills_clips_without_sound(tmp_path: Path):
    clips = [
        write_mp4(tmp_path / "a.mp4", 2.0, 160, 90, 24, audio_hz=440),
        write_mp4(tmp_path / "b.mp4", 2.0, 160, 90, 24),  # no sound
        write_mp4(tmp_path / "c.mp4", 1.0, 160, 90, 24, audio_hz=880),
    ]
    result = assemble(clips, tmp_path / "joined.mp4")
    assert result.mode == "reencode"  # sound in some clips only: cannot be joined packet by packet
    out = _decode(result.path)
    assert out["has_audio"] and out["duration_s"] == pytest.approx(5.0, abs=0.05)
    audio = out["audio"]
    assert len(audio) / 48_000 == pytest.approx(5.0, abs=0.05)
    assert _rms(audio[24_000:72_000]) > 0.2  # the tone of clip 1
    assert _rms(audio[120_000:170_000]) < 0.01  # silence for clip 2
    assert _rms(audio[200_000:230_000]) > 0.2  # the tone of clip 3


def test_crossfade_blends_picture_and_sound_and_shortens_by_the_overlaps(tmp_path: Path):
    clips = [
        write_mp4(tmp_path / "red.mp4", 2.0, 160, 90, 24, color=RED, audio_hz=440),
        write_mp4(tmp_path / "blue.mp4", 2.0, 160, 90, 24, color=BLUE),
        write_mp4(tmp_path / "green.mp4", 2.0, 160, 90, 24, color=GREEN, audio_hz=440),
    ]
    result = assemble(clips, tmp_path / "faded.mp4", transition="crossfade", transition_s=1.0)
    assert result.mode == "reencode"
    assert result.duration_s == pytest.approx(6.0 - 2 * 1.0, abs=0.05)
    out = _decode(result.path)
    assert out["duration_s"] == pytest.approx(4.0, abs=0.05) and len(out["audio"]) / 48_000 == pytest.approx(4.0, abs=0.05)
    r, _, b = _mean_rgb(out["frames"][24 + 12])  # the middle of the first crossfade (frames 24-47)
    assert 80 < r < 170 and 80 < b < 170  # half red, half blue
    assert _mean_rgb(out["frames"][10])[0] > 180 and _mean_rgb(out["frames"][-5])[1] > 150
    audio = out["audio"]
    # The tone fades out over the first crossfade (into the silent clip) and back in over the second:
    # the silent clip is all crossfade, so the sound is quietest at its middle (2 s = sample 96 000).
    full = _rms(audio[0:40_000])
    assert full > 0.3
    assert 0.25 * full < _rms(audio[66_000:78_000]) < 0.75 * full
    assert _rms(audio[90_000:102_000]) < 0.3 * full
    assert 0.25 * full < _rms(audio[114_000:126_000]) < 0.75 * full
    assert _rms(audio[150_000:190_000]) > 0.9 * full


def test_cut_between_same_format_clips_with_aspect_ratio_of_their_own_still_remuxes(tmp_path: Path):
    clips = [write_mp4(tmp_path / f"{n}.mp4", 1.0, 320, 180, 24) for n in range(2)]
    assert assemble(clips, tmp_path / "o.mp4", aspect_ratio="16:9").mode == "remux"
    assert assemble(clips, tmp_path / "o2.mp4", transition="crossfade", transition_s=0.25).mode == "reencode"


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: (d / "image.png").write_bytes(__import__("tests.emulators._media", fromlist=["x"]).png_bytes()), "image"),
        (lambda d: (d / "notes.txt").write_text("hello, not a video"), "cannot be opened as a video"),
        (lambda d: (d / "empty.mp4").write_bytes(b""), "empty"),
        (lambda d: None, "does not exist"),
        (lambda d: (d / "cut.mp4").write_bytes(__import__("tests.emulators._media", fromlist=["x"]).mp4_bytes()[:600]), "video"),
    ],
)
def test_a_bad_input_is_named_by_its_position(tmp_path: Path, make, words):
    good = write_mp4(tmp_path / "good.mp4", 1.0, 160, 90, 24)
    make(tmp_path)
    bad = next((p for p in tmp_path.iterdir() if p != good), tmp_path / "missing.mp4")
    with pytest.raises(errors.InvalidInputFile) as caught:
        assemble([good, bad, good], tmp_path / "out.mp4")
    message = str(caught.value)
    assert message.startswith("[invalid_input_file] video 2 of 3") and words in message
    assert "ffmpeg" not in message.lower() and "errno" not in message.lower()
    assert not (tmp_path / "out.mp4").exists()


def test_request_problems(tmp_path: Path):
    one = write_mp4(tmp_path / "a.mp4", 1.0, 160, 90, 24)
    with pytest.raises(errors.InvalidRequest, match="2-50 videos; got 1"):
        assemble([one], tmp_path / "o.mp4")
    with pytest.raises(errors.InvalidRequest, match="2-50 videos; got 51"):
        assemble([one] * 51, tmp_path / "o.mp4")
    with pytest.raises(errors.InvalidRequest, match="too short for a 0.6 s crossfade on both sides") as caught:
        assemble([one, one, one], tmp_path / "o.mp4", transition="crossfade", transition_s=0.6)
    assert "at most 0.50" in str(caught.value)
    with pytest.raises(errors.InvalidRequest, match="aspect_ratio"):
        assemble([one, one], tmp_path / "o.mp4", aspect_ratio="wide")
    assert not (tmp_path / "o.mp4").exists()


def test_a_progress_callback_that_raises_aborts_and_leaves_nothing(tmp_path: Path):
    clips = [write_mp4(tmp_path / "a.mp4", 2.0, 160, 90, 24), write_mp4(tmp_path / "b.mp4", 2.0, 200, 90, 30)]

    class Stop(Exception):
        pass

    def stop(fraction: float) -> None:
        if fraction > 0.2:
            raise Stop

    with pytest.raises(Stop):
        assemble(clips, tmp_path / "out" / "o.mp4", on_progress=stop)
    assert list((tmp_path / "out").iterdir()) == []


def test_importing_the_media_modules_loads_no_heavy_library():
    code = (
        "import sys, kling_mcp.assembly, kling_mcp.frames, kling_mcp.rendition, kling_mcp.server;"
        "print([m for m in ('av', 'PIL', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"

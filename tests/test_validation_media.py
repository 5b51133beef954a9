"""Documented input-file limits (catalog ``MediaLimits``) are checked where the values are known."""

from __future__ import annotations

from pathlib import Path

from kling_mcp import validation
from kling_mcp.catalog.model import MediaLimits
from kling_mcp.requests import MediaRef, VideoSpec
from kling_mcp.validation_media import media_problems

LIMITS = MediaLimits(image_min_px=300, image_aspect=(0.4, 2.5), image_max_bytes=100, video_px=(720, 2160),
                     video_fps=(24, 60), video_max_bytes=100, video_types=("video/mp4", "video/quicktime"))


def image(**kw: object) -> MediaRef:
    return MediaRef(kind="url", value="https://x.test/a.png", media="image", **kw)  # type: ignore[arg-type]


def video(**kw: object) -> MediaRef:
    return MediaRef(kind="url", value="https://x.test/v.mp4", media="video", **kw)  # type: ignore[arg-type]


def test_each_limit_names_the_input_the_value_and_the_fix(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 101)
    spec = VideoSpec(operation="image", prompt="p", first_frame=image(width=200, height=400),
                     last_frame=MediaRef(kind="file", value=str(big), media="image", width=1000, height=300))
    problems = media_problems(spec, LIMITS, "fal")
    assert any(p.startswith("first_frame is 200x400 px") and "at least 300 px" in p for p in problems)
    assert any(p.startswith("last_frame has an aspect ratio of 3.33") for p in problems)
    assert any(p.startswith("last_frame is 0.0 MB") and "accepts images up to" in p for p in problems)
    edit = VideoSpec(operation="edit", prompt="p", video=video(width=640, height=360, fps=12.0,
                                                               mime_type="video/webm"))
    problems = media_problems(edit, LIMITS, "fal")
    assert len(problems) == 3
    assert "720-2160 px" in problems[0] and "12 fps" in problems[1] and "WebM" in problems[2]


def test_unknown_values_are_not_guessed() -> None:
    spec = VideoSpec(operation="edit", prompt="p", video=video(), reference_images=[image()])
    assert media_problems(spec, LIMITS, "fal") == []
    assert media_problems(spec, None, "fal") == []


def test_the_providers_limits_reach_check_and_the_quote() -> None:
    webm = video(width=1280, height=720, fps=30.0, mime_type="video/webm", duration_s=5.0)
    spec = VideoSpec(operation="edit", prompt="p", video=webm)
    for provider in ("fal", "replicate"):
        match = validation.check(spec, provider)
        assert not match.ok and any("WebM" in p for p in match.problems), (provider, match.problems)
    ok = VideoSpec(operation="edit", prompt="p", video=webm.model_copy(update={"mime_type": "video/mp4"}))
    assert validation.check(ok, "fal").ok and validation.check(ok, "replicate").ok


def test_a_reference_videos_length_is_checked_but_an_edits_is_left_to_input_video_s() -> None:
    limits = MediaLimits(reference_video_s=(3.0, 10.0))
    short = VideoSpec(operation="reference", prompt="p", reference_video=video(duration_s=2.0))
    assert media_problems(short, limits, "replicate") == [
        "reference_video is 2 s long; replicate accepts 3-10 s: use a longer clip."]
    edit = VideoSpec(operation="edit", prompt="p", video=video(duration_s=2.0))
    problems = validation.check(edit, "replicate").problems
    assert any("edits accept 3-10 s" in p for p in problems) and not any("2 s long" in p for p in problems)

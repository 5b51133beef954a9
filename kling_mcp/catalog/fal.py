"""fal.ai: the eight Kling O1 endpoints (pro and standard x image-to-video, reference-to-video,
video-to-video edit, video-to-video reference), all behind fal's queue.

Source: shared/reference/providers.md §7 (fal model pages and llms.txt, the official fal client).
fal publishes $0.112/s (pro) and $0.084/s (standard) for image-to-video and pro reference-to-video;
the other prices were not captured and are inferred from the same model's grid elsewhere
(Runware, Replicate: video inputs cost 1.5x). fal's O1 schemas take durations "3".."10" as strings.
"""

from __future__ import annotations

from dataclasses import replace

from .model import ASPECT_RATIOS, MediaLimits, ModelVariant, OperationSpec, Price, ProviderEntry

_DOC = "fal.ai/models/fal-ai/kling-video/o1"
_ROOT = "fal-ai/kling-video/o1"
_GRID = "inferred from Kling O1's grid at Runware and Replicate (video inputs cost 1.5x)"
_MB = 1024 * 1024
# fal's image-to-video page: start image <= 10 MB, >= 300 px, aspect 0.40-2.50.
IMAGE_LIMITS = MediaLimits(image_min_px=300, image_aspect=(0.4, 2.5), image_max_bytes=10 * _MB)
# fal's video-to-video edit page (and Kling's own rule for any video input): mp4/mov, 3-10.05 s,
# 720-2160 px, 24-60 fps, <= 200 MB. An edit's length is the operation's input_video_s.
VIDEO_LIMITS = MediaLimits(
    video_px=(720, 2160), video_fps=(24, 60), video_max_bytes=200 * _MB, video_types=("video/mp4", "video/quicktime")
)
REFERENCE_VIDEO_LIMITS = replace(VIDEO_LIMITS, reference_video_s=(3.0, 10.05))


def endpoint(tier: str, kind: str) -> str:
    """The fal endpoint id of one O1 endpoint: ``kind`` is image-to-video, reference-to-video,
    video-to-video/edit or video-to-video/reference."""
    return f"{_ROOT}/{kind}" if tier == "pro" else f"{_ROOT}/standard/{kind}"


def _variant(tier: str, sizes: dict[str, tuple[int, int]]) -> ModelVariant:
    rate, video_rate = (0.112, 0.168) if tier == "pro" else (0.084, 0.126)
    i2v = Price(rate, "published", f"{_DOC}{'' if tier == 'pro' else '/standard'}/image-to-video: ${rate}/s")
    r2v = (
        Price(rate, "published", f"{_DOC}/reference-to-video: ${rate}/s")
        if tier == "pro"
        else Price(rate, "inferred", f"fal publishes no price for standard reference-to-video; its i2v rate ${rate}/s")
    )
    with_video = Price(video_rate, "inferred", f"fal publishes no video-to-video price; ${video_rate}/s {_GRID}")
    return ModelVariant(
        provider="fal",
        model=endpoint(tier, "image-to-video"),
        tier=tier,  # type: ignore[arg-type]
        label=f"Kling O1 {'Pro' if tier == 'pro' else 'Standard'} (fal.ai)",
        sizes=sizes,
        max_prompt_chars=2500,
        input_kinds=("url", "data_uri", "upload"),
        url_lifetime_s=None,
        typical_seconds=120.0,
        operations={
            "image": OperationSpec(
                "image",
                i2v,
                durations=tuple(range(3, 11)),
                default_duration=5,
                last_frame=True,
                model=endpoint(tier, "image-to-video"),
                media=IMAGE_LIMITS,
                note="output size follows the start image (>= 300 px, aspect 0.40-2.50, <= 10 MB)",
            ),
            "reference": OperationSpec(
                "reference",
                r2v,
                durations=tuple(range(3, 11)),
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                reference_images=(1, 7),
                reference_images_with_video=4,
                reference_video="optional",
                keep_original_sound=True,
                price_with_video=with_video,
                model=endpoint(tier, "reference-to-video"),
                model_with_video=endpoint(tier, "video-to-video/reference"),
                media=REFERENCE_VIDEO_LIMITS,
                note="a reference video: mp4/mov, 3-10.05 s, 720-2160 px, 24-60 fps, <= 200 MB (Kling's rule)",
            ),
            "edit": OperationSpec(
                "edit",
                with_video,
                reference_images=(0, 4),
                reference_images_with_video=4,
                input_video_s=(3.0, 10.05),
                keep_original_sound=True,
                model=endpoint(tier, "video-to-video/edit"),
                media=VIDEO_LIMITS,
                note="input video: mp4/mov, 3-10.05 s, 720-2160 px, 24-60 fps, <= 200 MB",
            ),
        },
        notes=("no Kling O1 text-to-video on fal", "local files are uploaded to fal's storage"),
    )


FAL = ProviderEntry(
    name="fal",
    display_name="fal.ai",
    env_key="FAL_KEY",
    base_url_env="KLING_MCP_FAL_BASE_URL",
    default_base_url="https://queue.fal.run",
    can_cancel=True,
    cancel_note=(
        "fal removes a queued request; one already running only gets a cancel signal and may finish and be billed."
    ),
    docs_url="https://fal.ai/models/fal-ai/kling-video/o1/image-to-video/api",
    extra_env={"KLING_MCP_FAL_STORAGE_URL": "https://rest.alpha.fal.ai"},
    variants=(
        _variant("pro", {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1440, 1440)}),
        _variant("standard", {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)}),
    ),
)

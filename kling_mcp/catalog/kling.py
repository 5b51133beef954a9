"""Kling's own API: ``kling-video-o1`` on ``POST /v1/videos/omni-video``, mode ``std`` or ``pro``.

Source: providers.md §6 (Kling's API reference: Omni-Video, capability map, error codes, billing).
Kling bills prepaid resource-pack *units* and publishes no per-second O1 figure; the grid below is
Kling's published Video-3O grid (std 0.6 units/s, pro 0.8 units/s, x1.5 with a video input, one
unit ~ $0.14), which matches every aggregator's O1 prices, so the basis is ``inferred``. The billed
cost is read back from the task's ``final_unit_deduction``. Failed tasks are not billed.
"""

from __future__ import annotations

from .model import ASPECT_RATIOS, MediaLimits, ModelVariant, OperationSpec, Price, ProviderEntry

MODEL = "kling-video-o1"
USD_PER_UNIT = 0.14  # Kling billing page (as transcribed in providers.md §6.6): 1 unit = $0.14
UNITS_PER_SECOND = {"standard": 0.6, "pro": 0.8}
VIDEO_INPUT_FACTOR = 1.5  # a reference or edited video costs 50% more per second

_MB = 1024 * 1024
# Omni-Video "Image Requirements": jpg/jpeg/png (others are converted), <= 10 MB, >= 300 px, 1:2.5-2.5:1.
IMAGES = MediaLimits(image_min_px=300, image_aspect=(0.4, 2.5), image_max_bytes=10 * _MB)
# "Video Requirements": MP4/MOV, >= 3 s (O1: <= 10 s), 720-2160 px, 24-60 fps, <= 200 MB.
IMAGES_AND_VIDEOS = MediaLimits(
    image_min_px=300,
    image_aspect=(0.4, 2.5),
    image_max_bytes=10 * _MB,
    video_px=(720, 2160),
    video_fps=(24, 60),
    video_max_bytes=200 * _MB,
    video_types=("video/mp4", "video/quicktime"),
    reference_video_s=(3, 10),
)

_WHY = "Kling publishes O1 prices in resource-pack units only; inferred from its Video-3O grid"
_SIZES = {
    "pro": {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1440, 1440)},
    "standard": {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)},
}


def _prices(tier: str) -> tuple[Price, Price]:
    units = UNITS_PER_SECOND[tier]
    base = round(units * USD_PER_UNIT, 4)
    video = round(units * VIDEO_INPUT_FACTOR * USD_PER_UNIT, 4)
    return (
        Price(base, "inferred", f"{_WHY}: {units:g} units/s x ${USD_PER_UNIT}/unit"),
        Price(video, "inferred", f"{_WHY}: {units * VIDEO_INPUT_FACTOR:g} units/s with a video input"),
    )


def _variant(tier: str) -> ModelVariant:
    base, with_video = _prices(tier)
    return ModelVariant(
        provider="kling",
        model=MODEL,
        tier=tier,  # type: ignore[arg-type]
        label=f"Kling VIDEO O1 ({'pro' if tier == 'pro' else 'std'} mode)",
        sizes=_SIZES[tier],
        max_prompt_chars=2500,
        input_kinds=("url", "data_uri"),  # images: a URL or bare Base64
        video_input_kinds=("url",),  # videos: a URL only (no upload endpoint)
        url_lifetime_s=30 * 24 * 3600,
        typical_seconds=180.0,
        operations={
            "text": OperationSpec("text", base, durations=(5, 10), default_duration=5, aspect_ratios=ASPECT_RATIOS),
            "image": OperationSpec(
                "image",
                base,
                durations=(5, 10),
                default_duration=5,
                last_frame=True,
                note="output size follows the first frame",
                media=IMAGES,
            ),
            "reference": OperationSpec(
                "reference",
                base,
                durations=tuple(range(3, 11)),
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                reference_images=(0, 7),
                reference_images_with_video=4,
                reference_video="optional",
                keep_original_sound=True,
                price_with_video=with_video,
                note="a reference video is sent as refer_type feature",
                media=IMAGES_AND_VIDEOS,
            ),
            "edit": OperationSpec(
                "edit",
                with_video,
                reference_images=(0, 4),
                reference_images_with_video=4,
                input_video_s=(3, 10),
                keep_original_sound=True,
                note="billed per second of the input video, rounded to whole seconds",
                media=IMAGES_AND_VIDEOS,
            ),
        },
        notes=(
            "refer to inputs in the prompt as <<<image_1>>>, <<<video_1>>> (Kling's own syntax)",
            "images: jpg/png, <= 10 MB, >= 300 px; videos must be public URLs (mp4/mov, 720-2160 px)",
            "result links are kept 30 days",
        ),
    )


KLING = ProviderEntry(
    name="kling",
    display_name="Kling (official API)",
    env_key="KLING_ACCESS_KEY + KLING_SECRET_KEY (or KLING_API_KEY)",
    credential_sets=(("KLING_ACCESS_KEY", "KLING_SECRET_KEY"), ("KLING_API_KEY",)),
    base_url_env="KLING_MCP_KLING_BASE_URL",
    default_base_url="https://api-singapore.klingai.com",
    client_chosen_id=True,  # our job id is the task's external_task_id, which Kling can be queried by
    can_cancel=False,
    cancel_note="Kling's API has no cancel endpoint: the task keeps running and is billed if it succeeds.",
    docs_url="https://app.klingai.com/global/dev/document-api/apiReference/model/OmniVideo",
    variants=(_variant("pro"), _variant("standard")),
)

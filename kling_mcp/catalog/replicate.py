"""Replicate: ``kwaivgi/kling-o1``, one model for every Kling O1 mode, ``mode`` std or pro.

Source: shared/reference/providers.md §7b (Replicate's HTTP API docs and the model's input schema).
No official per-second price page was captured: the prices are a third-party copy of the model
page (std $0.084/s, pro $0.112/s; with a video input $0.126/s and $0.168/s), so ``inferred``.
Replicate deletes API predictions' input and output files after an hour.
"""

from __future__ import annotations

from dataclasses import replace

from .model import ASPECT_RATIOS, MediaLimits, ModelVariant, OperationSpec, Price, ProviderEntry

MODEL = "kwaivgi/kling-o1"
_SRC = "third-party copy of replicate.com/kwaivgi/kling-o1 pricing"
# The model's input schema: reference_video .mp4/.mov, 3-10 s, <= 200 MB (an edit's length: input_video_s).
VIDEO_LIMITS = MediaLimits(video_max_bytes=200 * 1024 * 1024, video_types=("video/mp4", "video/quicktime"))
REFERENCE_VIDEO_LIMITS = replace(VIDEO_LIMITS, reference_video_s=(3.0, 10.0))


def _variant(tier: str, sizes: dict[str, tuple[int, int]]) -> ModelVariant:
    rate, video_rate = (0.112, 0.168) if tier == "pro" else (0.084, 0.126)
    mode = "pro" if tier == "pro" else "std"
    base = Price(rate, "inferred", f"{_SRC}: mode {mode} ${rate}/s")
    with_video = Price(video_rate, "inferred", f"{_SRC}: mode {mode} with a video input ${video_rate}/s")
    return ModelVariant(
        provider="replicate",
        model=MODEL,
        tier=tier,  # type: ignore[arg-type]
        label=f"Kling O1 (Replicate, mode {mode})",
        sizes=sizes,
        max_prompt_chars=2500,
        input_kinds=("url", "data_uri", "upload"),
        url_lifetime_s=3600,
        typical_seconds=150.0,
        operations={
            "text": OperationSpec("text", base, durations=(5, 10), default_duration=5, aspect_ratios=ASPECT_RATIOS),
            "image": OperationSpec(
                "image",
                base,
                durations=(5, 10),
                default_duration=5,
                last_frame=True,
                note="output size follows start_image",
            ),
            "reference": OperationSpec(
                "reference",
                base,
                durations=tuple(range(3, 11)),
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                reference_images=(1, 7),
                reference_images_with_video=4,
                reference_video="optional",
                keep_original_sound=True,
                price_with_video=with_video,
                media=REFERENCE_VIDEO_LIMITS,
                note="reference_video: .mp4/.mov, 3-10 s, <= 200 MB (video_reference_type feature)",
            ),
            "edit": OperationSpec(
                "edit",
                with_video,
                reference_images=(0, 4),
                reference_images_with_video=4,
                input_video_s=(3.0, 10.0),
                keep_original_sound=True,
                media=VIDEO_LIMITS,
                note="the video goes as reference_video with video_reference_type base; .mp4/.mov, <= 200 MB",
            ),
        },
        notes=(
            "outputs are deleted after an hour (downloaded at once)",
            "local files go through Replicate's Files API",
        ),
    )


REPLICATE = ProviderEntry(
    name="replicate",
    display_name="Replicate",
    env_key="REPLICATE_API_TOKEN",
    base_url_env="KLING_MCP_REPLICATE_BASE_URL",
    default_base_url="https://api.replicate.com/v1",
    can_cancel=True,
    docs_url="https://replicate.com/kwaivgi/kling-o1",
    variants=(
        _variant("pro", {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1440, 1440)}),
        _variant("standard", {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)}),
    ),
)

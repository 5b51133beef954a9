"""AI/ML API: the four ``klingai/video-o1-*`` models (no O1 text-to-video).

Source: shared/seeds/aimlapi-video-o1-image-to-video.txt and providers.md §4. AI/ML API publishes
no O1 price; the quote uses an inferred figure (below) and the job records the billed cost from
``meta.usage.credits_used`` (1 USD = 2,000,000 credits).
"""

from __future__ import annotations

from .model import ASPECT_RATIOS, ModelVariant, OperationSpec, Price, ProviderEntry

_WHY = "AI/ML API publishes no Kling O1 price; inferred from the same model's pro rate elsewhere (Runware, fal, Runpod)"
_BASE = Price(0.112, "inferred", f"{_WHY}: $0.112/s")
_VIDEO = Price(0.168, "inferred", f"{_WHY} for video inputs (R2V): $0.168/s")

AIMLAPI = ProviderEntry(
    name="aimlapi",
    display_name="AI/ML API",
    env_key="AIML_API_KEY",
    base_url_env="KLING_MCP_AIMLAPI_BASE_URL",
    default_base_url="https://api.aimlapi.com",
    can_cancel=False,
    cancel_note="AI/ML API has no cancel endpoint: the generation keeps running.",
    docs_url="https://docs.aimlapi.com/api-references/video-models/kling-ai/video-o1-image-to-video",
    variants=(
        ModelVariant(
            provider="aimlapi",
            model="klingai/video-o1-image-to-video",
            tier="pro",
            label="Kling Video O1",
            sizes={"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1440, 1440)},
            max_prompt_chars=2500,
            input_kinds=("url", "data_uri"),
            url_lifetime_s=None,
            typical_seconds=80.0,
            operations={
                "image": OperationSpec(
                    "image",
                    _BASE,
                    durations=(5, 10),
                    default_duration=5,
                    last_frame=True,
                    model="klingai/video-o1-image-to-video",
                ),
                "reference": OperationSpec(
                    "reference",
                    _BASE,
                    durations=(5, 10),
                    default_duration=5,
                    aspect_ratios=ASPECT_RATIOS,
                    reference_images=(1, 7),
                    reference_images_with_video=4,
                    reference_video="optional",
                    keep_original_sound=True,
                    price_with_video=_VIDEO,
                    model="klingai/video-o1-reference-to-video",
                    model_with_video="klingai/video-o1-video-to-video-reference",
                ),
                "edit": OperationSpec(
                    "edit",
                    _VIDEO,
                    reference_images=(0, 7),
                    reference_images_with_video=7,
                    input_video_s=(3, 10),
                    keep_original_sound=True,
                    model="klingai/video-o1-video-to-video-edit",
                    note="input length 3-10 s is Kling's limit; AI/ML API does not state one",
                ),
            },
            notes=("no Kling O1 text-to-video on AI/ML API",),
        ),
    ),
)

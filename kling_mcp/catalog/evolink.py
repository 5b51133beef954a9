"""EvoLink: ``kling-o1-image-to-video``, ``kling-o1-video-edit``, ``kling-o1-video-edit-fast``.

Source: shared/seeds/evolink-kling-o1.txt and providers.md §5. EvoLink bills in credits; one
credit is about $0.01389 (inferred from the Kling O3 page), so 8.064 credits/s is about $0.112/s.
"""

from __future__ import annotations

from .model import ASPECT_RATIOS, ModelVariant, OperationSpec, Price, ProviderEntry

USD_PER_CREDIT = 0.1 / 7.2036  # evolink.ai/kling-o3: $0.100 = 7.2036 credits
I2V_CREDITS_PER_SECOND = 8.064

_I2V = Price(
    round(I2V_CREDITS_PER_SECOND * USD_PER_CREDIT, 4),
    "inferred",
    "8.064 credits/s (seed) x $0.01389/credit (evolink.ai/kling-o3 ratio)",
)
_EDIT = Price(0.176, "published", "evolink.ai/zh/kling-o1 video-edit: $0.176 per second, billed 3-10 s")
_FAST = Price(0.176, "inferred", "EvoLink publishes no fast-edit price; assumed the video-edit rate, billed 6-20 s")

EVOLINK = ProviderEntry(
    name="evolink",
    display_name="EvoLink",
    env_key="EVOLINK_API_KEY",
    base_url_env="KLING_MCP_EVOLINK_BASE_URL",
    default_base_url="https://api.evolink.ai",
    can_cancel=False,
    cancel_note="EvoLink documents no cancel endpoint: the task keeps running.",
    docs_url="https://docs.evolink.ai/en/api-manual/video-series/kling/kling-o1-image-to-video",
    extra_env={"KLING_MCP_EVOLINK_FILES_URL": "https://files-api.evolink.ai"},
    variants=(
        ModelVariant(
            provider="evolink",
            model="kling-o1-image-to-video",
            tier="pro",
            label="Kling O1",
            sizes={"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1440, 1440)},
            max_prompt_chars=5000,
            input_kinds=("url", "upload"),
            url_lifetime_s=24 * 3600,
            typical_seconds=300.0,
            operations={
                "image": OperationSpec(
                    "image",
                    _I2V,
                    durations=(5, 10),
                    default_duration=5,
                    aspect_ratios=ASPECT_RATIOS,
                    last_frame=True,
                    model="kling-o1-image-to-video",
                ),
                "edit": OperationSpec(
                    "edit",
                    _EDIT,
                    reference_images=(0, 4),
                    reference_images_with_video=4,
                    input_video_s=(3, 10),
                    input_video_s_fast=(6, 20),
                    billing_clamps_input=True,
                    fast="optional",
                    keep_original_sound=True,
                    price_fast=_FAST,
                    model="kling-o1-video-edit",
                    model_fast="kling-o1-video-edit-fast",
                ),
            },
            notes=("result links expire after 24 h", "local files are uploaded to EvoLink's files API (72 h)"),
        ),
    ),
)

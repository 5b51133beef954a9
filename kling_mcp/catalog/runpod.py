"""Runpod public endpoint ``kling-video-o1-r2v`` (reference images, optional reference video).

Source: shared/seeds/runpod-kling-video-o1-r2v.txt and providers.md §3. Output is 720p
(AI-SDK listing), so the tier is ``standard``, though it is priced at $0.112/s.
"""

from __future__ import annotations

from .model import ASPECT_RATIOS, ModelVariant, OperationSpec, Price, ProviderEntry

_PRICE = Price(0.112, "published", "docs.runpod.io public-endpoints kling-video-o1-r2v: $0.112 per second")

RUNPOD = ProviderEntry(
    name="runpod",
    display_name="Runpod",
    env_key="RUNPOD_API_KEY",
    base_url_env="KLING_MCP_RUNPOD_BASE_URL",
    default_base_url="https://api.runpod.ai/v2",
    can_cancel=True,
    docs_url="https://docs.runpod.io/public-endpoints/models/kling-video-o1-r2v",
    variants=(
        ModelVariant(
            provider="runpod",
            model="kling-video-o1-r2v",
            tier="standard",
            label="Kling Video O1 R2V",
            sizes={"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960)},
            max_prompt_chars=2500,
            input_kinds=("url", "data_uri"),
            url_lifetime_s=7 * 24 * 3600,
            typical_seconds=90.0,
            operations={
                "reference": OperationSpec(
                    "reference",
                    _PRICE,
                    durations=tuple(range(3, 11)),
                    default_duration=5,
                    aspect_ratios=ASPECT_RATIOS,
                    reference_images=(1, 10),
                    reference_images_with_video=10,
                    reference_images_with_video_min=1,
                    reference_video="optional",
                    negative_prompt=True,
                    seed=True,
                    price_with_video=_PRICE,
                ),
            },
            notes=("documents URLs only; local files are sent as data URIs",),
        ),
    ),
)

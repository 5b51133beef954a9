"""Runware: ``klingai:kling@o1`` (Pro, 1080p) and ``klingai:kling@o1-standard`` (720p).

Source: shared/seeds/runware-kling-video-o1-{pro,standard}.md and providers.md §2. The seed
examples show which inputs Runware bills at the R2V rate: reference *videos* and edits (an input
video) do; reference *images* do not (2-3 reference images for 5 s cost 5 x the T2V rate).
"""

from __future__ import annotations

from .model import ASPECT_RATIOS, ModelVariant, OperationSpec, Price, ProviderEntry

_DOC = "runware.ai/docs/models/klingai-video-o1"
_EDIT_NOTE = "billed per second of the input video at the R2V rate (seed examples: 6 s edits cost 6 x R2V)"


def _variant(
    model: str, tier: str, base: float, r2v: float, sizes: dict[str, tuple[int, int]], doc: str, fast: bool
) -> ModelVariant:
    base_price = Price(base, "published", f"{doc} pricing: {tier} T2V/I2V ${base}/s")
    r2v_price = Price(r2v, "published", f"{doc} pricing: {tier} R2V ${r2v}/s")
    edit_price = Price(r2v, "inferred", f"{doc} R2V rate ${r2v}/s; {_EDIT_NOTE}")
    return ModelVariant(
        provider="runware",
        model=model,
        tier=tier,  # type: ignore[arg-type]
        label=f"Kling VIDEO O1 {'Pro' if tier == 'pro' else 'Standard'}",
        sizes=sizes,
        min_prompt_chars=2,
        max_prompt_chars=2500,
        input_kinds=("url", "data_uri", "upload"),
        url_lifetime_s=30 * 24 * 3600,
        typical_seconds=120.0,
        operations={
            "text": OperationSpec(
                "text", base_price, durations=(5, 10), default_duration=5, aspect_ratios=ASPECT_RATIOS, max_videos=4
            ),
            "image": OperationSpec(
                "image",
                base_price,
                durations=(5, 10),
                default_duration=5,
                last_frame=True,
                max_videos=4,
                note="output size follows the first frame",
            ),
            "reference": OperationSpec(
                "reference",
                base_price,
                durations=tuple(range(3, 11)),
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                reference_images=(0, 7),
                reference_images_with_video=7,
                reference_video="optional",
                keep_original_sound=True,
                price_with_video=r2v_price,
                max_videos=4,
            ),
            "edit": OperationSpec(
                "edit",
                edit_price,
                reference_images=(0, 4),
                reference_images_with_video=4,
                input_video_s=(3, 10),
                input_video_s_fast=(6, 20) if fast else None,
                fast="optional" if fast else "no",
                keep_original_sound=True,
                price_fast=edit_price if fast else None,
                max_videos=4,
            ),
        },
        notes=("no server-side cancel: a cancelled job keeps running and is billed",),
    )


RUNWARE = ProviderEntry(
    name="runware",
    display_name="Runware",
    env_key="RUNWARE_API_KEY",
    base_url_env="KLING_MCP_RUNWARE_BASE_URL",
    default_base_url="https://api.runware.ai/v1",
    client_chosen_id=True,
    can_cancel=False,
    cancel_note="Runware has no server-side cancel: the task keeps running and is billed.",
    docs_url="https://runware.ai/docs/models/klingai-video-o1-pro",
    variants=(
        _variant(
            "klingai:kling@o1",
            "pro",
            0.112,
            0.168,
            {"16:9": (1920, 1080), "1:1": (1440, 1440), "9:16": (1080, 1920)},
            _DOC + "-pro",
            True,
        ),
        _variant(
            "klingai:kling@o1-standard",
            "standard",
            0.084,
            0.126,
            {"16:9": (1280, 720), "1:1": (960, 960), "9:16": (720, 1280)},
            _DOC + "-standard",
            False,
        ),
    ),
)

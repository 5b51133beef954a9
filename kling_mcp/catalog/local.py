"""The built-in ``local`` preview provider: renders a real MP4 on this machine, free, no key.

It is not Kling: it draws the prompt with motion so that the whole pipeline (jobs, downloads,
resource links, storyboards) can be tried without an account.
"""

from __future__ import annotations

from .model import ASPECT_RATIOS, ModelVariant, OperationSpec, Price, ProviderEntry

_FREE = Price(0.0, "published", "rendered locally; free")
_DURATIONS = tuple(range(3, 11))


def _variant(tier: str, sizes: dict[str, tuple[int, int]]) -> ModelVariant:
    return ModelVariant(
        provider="local",
        model="local-preview",
        tier=tier,  # type: ignore[arg-type]
        label="Local preview (not Kling)",
        sizes=sizes,
        max_prompt_chars=5000,
        input_kinds=("url", "data_uri", "upload"),
        url_lifetime_s=None,
        typical_seconds=2.0,
        operations={
            "text": OperationSpec(
                "text",
                _FREE,
                durations=_DURATIONS,
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                negative_prompt=True,
                seed=True,
                max_videos=4,
            ),
            "image": OperationSpec(
                "image",
                _FREE,
                durations=_DURATIONS,
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                last_frame=True,
                negative_prompt=True,
                seed=True,
                max_videos=4,
            ),
            "reference": OperationSpec(
                "reference",
                _FREE,
                durations=_DURATIONS,
                default_duration=5,
                aspect_ratios=ASPECT_RATIOS,
                reference_images=(0, 10),
                reference_images_with_video=10,
                reference_video="optional",
                keep_original_sound=True,
                negative_prompt=True,
                seed=True,
                max_videos=4,
            ),
            "edit": OperationSpec(
                "edit",
                _FREE,
                reference_images=(0, 10),
                reference_images_with_video=10,
                input_video_s=(0.5, 60),
                input_video_s_fast=(0.5, 60),
                fast="optional",
                keep_original_sound=True,
                max_videos=4,
            ),
        },
        notes=("a local preview rendered on this machine, not a Kling video",),
    )


LOCAL = ProviderEntry(
    name="local",
    display_name="Local preview",
    env_key=None,
    base_url_env=None,
    default_base_url=None,
    client_chosen_id=True,
    can_cancel=True,
    variants=(
        _variant("standard", {"16:9": (640, 360), "9:16": (360, 640), "1:1": (480, 480)}),
        _variant("pro", {"16:9": (960, 540), "9:16": (540, 960), "1:1": (720, 720)}),
    ),
)

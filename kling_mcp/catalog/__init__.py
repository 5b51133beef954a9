"""The catalog: every provider x Kling O1 variant, as data. The single source of truth.

Validation (``kling_mcp.validation``), quotes (``kling_mcp.pricing``), the tools' JSON schemas and
their descriptions are derived from :data:`PROVIDERS`. Adding a provider variant is one entry
here plus one adapter in ``kling_mcp.providers``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .aimlapi import AIMLAPI
from .evolink import EVOLINK
from .fal import FAL
from .kling import KLING
from .local import LOCAL
from .model import (
    ASPECT_RATIOS,
    OPERATION_LABELS,
    OPERATIONS,
    TIERS,
    ModelVariant,
    Operation,
    OperationSpec,
    Price,
    ProviderEntry,
)
from .replicate import REPLICATE
from .runpod import RUNPOD
from .runware import RUNWARE

PROVIDERS: dict[str, ProviderEntry] = {
    p.name: p for p in (RUNWARE, RUNPOD, AIMLAPI, EVOLINK, FAL, REPLICATE, KLING, LOCAL)
}
PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)
REAL_PROVIDERS: tuple[str, ...] = tuple(n for n in PROVIDERS if n != "local")

__all__ = [
    "ASPECT_RATIOS",
    "OPERATIONS",
    "OPERATION_LABELS",
    "PROVIDERS",
    "PROVIDER_NAMES",
    "REAL_PROVIDERS",
    "TIERS",
    "ModelVariant",
    "Operation",
    "OperationSpec",
    "Price",
    "ProviderEntry",
    "bounds",
    "catalog_json",
    "provider",
    "variant_for_model",
    "variants",
]


def provider(name: str) -> ProviderEntry:
    return PROVIDERS[name]


def variants(provider_name: str, tier: str | None = None) -> list[ModelVariant]:
    """The provider's variants, cheapest-tier-agnostic, filtered by ``tier`` when given."""
    return [v for v in PROVIDERS[provider_name].variants if tier is None or v.tier == tier]


def variant_for_model(provider_name: str, model: str) -> ModelVariant:
    """The variant that serves ``model`` (a variant id or a per-operation id); the first one otherwise."""
    entry = PROVIDERS[provider_name]
    for v in entry.variants:
        ids = {v.model} | {m for s in v.operations.values() for m in (s.model, s.model_with_video, s.model_fast) if m}
        if model in ids:
            return v
    return entry.variants[0]


def _all_specs() -> list[OperationSpec]:
    return [s for p in PROVIDERS.values() for v in p.variants for s in v.operations.values()]


def bounds() -> dict[str, Any]:
    """The widest limits over every provider: the tools' JSON-schema minimum/maximum."""
    specs = _all_specs()
    durations = [d for s in specs for d in s.durations]
    return {
        "duration_min": min(durations),
        "duration_max": max(durations),
        "reference_images_max": max(max(s.reference_images[1], s.reference_images_with_video) for s in specs),
        "num_videos_max": max(s.max_videos for s in specs),
        "prompt_max": max(v.max_prompt_chars for p in PROVIDERS.values() for v in p.variants),
        "aspect_ratios": ASPECT_RATIOS,
    }


def catalog_json() -> dict[str, Any]:
    """The whole catalog as JSON-able data (served as the ``kling://catalog`` resource)."""
    out: dict[str, Any] = {}
    for name, entry in PROVIDERS.items():
        data = asdict(entry)
        data["variants"] = [asdict(v) for v in entry.variants]
        out[name] = data
    return {"providers": out, "bounds": {k: list(v) if isinstance(v, tuple) else v for k, v in bounds().items()}}

"""The provider limits the tools state, derived from the catalog for the providers a server offers.

The tools' JSON-schema bounds (minimum/maximum, enums) are the widest limits of the providers that
matter: the configured real providers, or ``local`` alone when none is configured (``local`` renders
anything the real providers accept, so its wider limits never widen the schema when one is). Each
tool states only its own operations: ``generate_video`` the text/image/reference limits,
``edit_video`` the edit limits. :func:`provider_lines` writes one line per provider, tiers merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import catalog
from .catalog import ModelVariant, OperationSpec, Price
from .vocabulary import EDIT_OPS as EDIT_OPS  # re-exported: declared in vocabulary.py
from .vocabulary import GENERATE_OPS as GENERATE_OPS
from .vocabulary import Operation

_SHORT = {"text": "text", "image": "image", "reference": "reference"}


def limit_providers(configured: Sequence[str]) -> list[str]:
    """Whose limits bound the schemas: the configured real providers, else ``local``."""
    return list(configured) or ["local"]


def offering(names: Sequence[str], ops: Sequence[str]) -> list[str]:
    """Those of ``names`` with a variant for at least one of ``ops`` (the ``provider`` enum of a tool)."""
    return [n for n in names if any(op in v.operations for v in catalog.PROVIDERS[n].variants for op in ops)]


@dataclass(frozen=True)
class Bounds:
    duration_min: int
    duration_max: int
    reference_images_max: int
    num_videos_max: int
    prompt_max: int
    aspect_ratios: tuple[str, ...]
    edit_input_s: tuple[float, float] | None  # the widest accepted input video length (fast included)


def _specs(providers: Sequence[str], ops: Sequence[str]) -> list[tuple[ModelVariant, OperationSpec]]:
    return [
        (v, s)
        for name in providers
        for v in catalog.PROVIDERS[name].variants
        for op, s in v.operations.items()
        if op in ops
    ]


def bounds(providers: Sequence[str], ops: Sequence[str]) -> Bounds:
    """The widest limits over ``providers`` for the operations ``ops``."""
    pairs = _specs(providers, ops) or _specs(catalog.PROVIDER_NAMES, ops)
    specs = [s for _, s in pairs]
    durations = [d for s in specs for d in s.durations] or [0]
    ratios = {r for s in specs for r in s.aspect_ratios}
    inputs = [r for s in specs for r in (s.input_video_s, s.input_video_s_fast) if r]
    return Bounds(
        duration_min=min(durations),
        duration_max=max(durations),
        reference_images_max=max(max(s.reference_images[1], s.reference_images_with_video) for s in specs),
        num_videos_max=max(s.max_videos for s in specs),
        prompt_max=max(v.max_prompt_chars for v, _ in pairs),
        aspect_ratios=tuple(r for r in catalog.ASPECT_RATIOS if r in ratios) or catalog.ASPECT_RATIOS,
        edit_input_s=(min(lo for lo, _ in inputs), max(hi for _, hi in inputs)) if inputs else None,
    )


def _seconds(values: tuple[int, ...]) -> str:
    if len(values) > 2 and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]} s"
    return "|".join(str(v) for v in values) + " s"


def _prices(prices: Sequence[Price | None]) -> str:
    """``$0.084|0.112/s`` over the tiers (in the provider's tier order), with the basis when not published."""
    known = [p for p in prices if p is not None and p.usd_per_second is not None]
    if not known:
        return "price unknown"
    amounts = list(dict.fromkeys(f"{p.usd_per_second:g}" for p in known))
    if amounts == ["0"]:
        return "free"
    estimated = any(p.basis != "published" for p in known)
    return ("~$" if estimated else "$") + "|".join(amounts) + "/s"


def _op_limits(op: str, s: OperationSpec) -> str:
    """What one variant accepts for one operation, price left out."""
    if op == "edit":
        lo, hi = s.input_video_s or (0, 0)
        return f"input video {lo:g}-{hi:g} s, <= {s.reference_images_with_video} images"
    text = f"{_SHORT[op]} {_seconds(s.durations)}"
    if op == "image" and not s.last_frame:
        text += " (no last_frame)"
    if op == "reference":
        text += f", {s.reference_images[0]}-{s.reference_images[1]} images"
        if s.reference_video != "no":
            video = "+video" if s.reference_video == "optional" else "video required"
            text += f", {video} (<= {s.reference_images_with_video} images)"
    return text


def _operation(op: Operation, variants: Sequence[ModelVariant]) -> str:
    having = [v for v in variants if op in v.operations]
    limits = {v.tier: _op_limits(op, v.operations[op]) for v in having}
    only = "" if len(having) == len(variants) or len(variants) == 1 else f" ({'/'.join(limits)} only)"
    if len(set(limits.values())) == 1:
        text = next(iter(limits.values())) + only
    else:
        text = "; ".join(f"{tier}: {lim}" for tier, lim in limits.items())
    specs = [v.operations[op] for v in having]
    text += " " + _prices([s.price for s in specs])
    if op == "reference" and any(s.price_with_video for s in specs):
        text += ", with video " + _prices([s.price_with_video or s.price for s in specs])
    fast = [v for v in having if v.operations[op].input_video_s_fast]
    if op == "edit" and fast:
        lo, hi = fast[0].operations[op].input_video_s_fast or (0, 0)
        only = "" if len(fast) == len(variants) or len(variants) == 1 else f" ({'/'.join(v.tier for v in fast)} only)"
        fast_prices = [v.operations[op].price_fast or v.operations[op].price for v in fast]
        text += f"; fast=true{only}: input {lo:g}-{hi:g} s {_prices(fast_prices)}"
    return text


def _features(specs: Sequence[OperationSpec], ops: Sequence[str]) -> str:
    bits = []
    if "edit" not in ops:
        most = max(s.max_videos for s in specs)
        bits += [f"num_videos <= {most}"] if most > 1 else []
        bits += ["seed"] if any(s.seed for s in specs) else []
        bits += ["negative_prompt"] if any(s.negative_prompt for s in specs) else []
    elif not any(s.keep_original_sound for s in specs):
        bits.append("no keep_original_sound")
    return ", ".join(bits)


def provider_line(name: str, ops: Sequence[Operation]) -> str | None:
    """One line: the provider's tiers, prompt limit, options, then each operation's limits and price."""
    variants = [v for v in catalog.PROVIDERS[name].variants if any(op in v.operations for op in ops)]
    if not variants:
        return None
    specs = [s for v in variants for op, s in v.operations.items() if op in ops]
    tiers = "|".join(v.tier for v in variants)
    features = _features(specs, ops)
    if {"reference", "edit"} & set(ops) and any(v.video_input_kinds == ("url",) for v in variants):
        features += (", " if features else "") + "videos only as http(s) URLs"
    head = (
        f"{name} ({tiers}; prompt <= {max(v.max_prompt_chars for v in variants)}{'; ' if features else ''}{features})"
    )
    ops_text = "; ".join(_operation(op, variants) for op in ops if any(op in v.operations for v in variants))
    return f"{head}: {ops_text}"


def provider_lines(providers: Sequence[str], ops: Sequence[Operation], *, local_too: bool) -> str:
    """The lines of ``providers`` for ``ops``; ``local`` in one short line when ``local_too``."""
    lines = [line for name in providers if name != "local" and (line := provider_line(name, ops))]
    if local_too and lines:
        lines.append("local: a free preview made on this machine (not Kling), within the limits above.")
    elif local_too:
        lines.append(f"{provider_line('local', ops)}. A preview rendered on this machine, not Kling.")
    return "\n".join(lines)

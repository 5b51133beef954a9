"""Validation and quotes, derived from the catalog.

:func:`check` holds a normalised :class:`VideoSpec` against one provider's variants and answers a
:class:`Match`: the variant and model id that would serve it, every rule it breaks (each problem
names the rule, the value given and what to change), the defaults that provider fills in, and
the price. Nothing here calls a provider or clamps a value silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import errors
from .catalog import OPERATION_LABELS, PROVIDERS, ModelVariant, OperationSpec, Price
from .requests import Quote, VideoSpec
from .validation_media import media_problems


@dataclass
class Match:
    provider: str
    variant: ModelVariant | None
    op: OperationSpec | None
    model: str | None
    problems: list[str] = field(default_factory=list)
    duration: int | None = None  # effective output duration (defaults filled)
    aspect_ratio: str | None = None
    price: Price | None = None
    billed_seconds: float | None = None
    cost_usd: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and self.variant is not None

    def quote(self, configured: bool = True) -> Quote:
        return Quote(
            provider=self.provider,
            model=self.model,
            tier=self.variant.tier if self.variant else None,
            supported=self.ok,
            problems=self.problems,
            cost_usd=self.cost_usd,
            basis=self.price.basis if self.price else "unknown",
            billed_seconds=self.billed_seconds,
            configured=configured,
            note=self.note,
        )


def _choices(values: tuple[int, ...]) -> str:
    if len(values) > 2 and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return " or ".join(str(v) for v in values)


def _check_variant(spec: VideoSpec, v: ModelVariant) -> Match:
    name, label = v.provider, OPERATION_LABELS[spec.operation]
    op = v.operations.get(spec.operation)
    if op is None:
        offered = ", ".join(OPERATION_LABELS[o] for o in v.operations)
        return Match(name, v, None, None, [f"{name} does not offer {label} with Kling O1 (it offers: {offered})."])
    problems: list[str] = []
    m = Match(name, v, op, op.model or v.model, problems)
    problems.extend(structural_problems(spec))
    if len(spec.prompt.strip()) < v.min_prompt_chars:
        n = len(spec.prompt.strip())
        problems.append(
            f"prompt has {n} character{'' if n == 1 else 's'}; {name} needs at least "
            f"{v.min_prompt_chars}: describe the video in more words."
        )
    if len(spec.prompt) > v.max_prompt_chars:
        problems.append(f"prompt has {len(spec.prompt)} characters; {name} accepts at most {v.max_prompt_chars}.")
    if spec.operation != "edit":
        m.duration = spec.duration if spec.duration is not None else op.default_duration
        if m.duration not in op.durations:
            problems.append(
                f"duration {spec.duration} s is not accepted by {name} for {label}; use {_choices(op.durations)} s."
            )
    if spec.aspect_ratio is not None:
        if not op.aspect_ratios:
            follows = "the input video" if spec.operation == "edit" else "the first frame"
            problems.append(
                f"{name} does not take aspect_ratio for {label} (the output follows {follows}); "
                f"remove aspect_ratio={spec.aspect_ratio!r}."
            )
        elif spec.aspect_ratio not in op.aspect_ratios:
            problems.append(
                f"aspect_ratio {spec.aspect_ratio!r} is not accepted by {name}; use one of "
                f"{', '.join(op.aspect_ratios)}."
            )
    m.aspect_ratio = spec.aspect_ratio or (op.aspect_ratios[0] if op.aspect_ratios else None)
    if spec.last_frame is not None and not op.last_frame:
        problems.append(f"{name} does not accept last_frame for {label}; remove it.")
    has_video = spec.has_video
    if spec.reference_video is not None and op.reference_video == "no":
        problems.append(f"{name} does not accept reference_video for {label}; remove it or choose another provider.")
    n_refs = len(spec.reference_images)
    lo, hi = (op.reference_images_with_video_min, op.reference_images_with_video) if has_video else op.reference_images
    if spec.operation in ("reference", "edit") and not lo <= n_refs <= hi:
        with_video = " with a video" if has_video else ""
        problems.append(f"{name} accepts {lo}-{hi} reference_images{with_video} for {label}; got {n_refs}.")
    if spec.operation == "edit":
        _check_input_video(spec, op, m)
    if spec.fast and spec.operation == "edit" and op.fast == "no":
        problems.append(f"{name} has no fast edit at the {v.tier} tier; set fast=false or choose another provider.")
    if spec.keep_original_sound and not op.keep_original_sound:
        problems.append(f"{name} cannot keep the original sound for {label}; remove keep_original_sound.")
    if spec.negative_prompt and not op.negative_prompt:
        problems.append(f"{name} does not accept negative_prompt; remove it or put the exclusion in the prompt.")
    if spec.seed is not None and not op.seed:
        problems.append(f"{name} does not accept seed; remove it.")
    if spec.num_videos > op.max_videos:
        problems.append(f"num_videos {spec.num_videos} is more than {name} makes per request ({op.max_videos}).")
    problems.extend(media_problems(spec, op.media, name))
    if _has_local_file(spec) and not {"data_uri", "upload"} & set(v.input_kinds):
        problems.append(f"{name} accepts only URLs for inputs; pass public http(s) URLs instead of local files.")
    elif _local_video(spec) and not {"data_uri", "upload"} & set(v.video_input_kinds or v.input_kinds):
        problems.append(
            f"{name} takes videos only as URLs, so {_local_video(spec)} cannot be a local file, data URI or "
            "kling:// result: pass a public http(s) URL of the video (images may stay local)."
        )
    _price(spec, op, m)
    if has_video and op.model_with_video and spec.operation == "reference":
        m.model = op.model_with_video
    if spec.fast and op.model_fast:
        m.model = op.model_fast
    return m


def structural_problems(spec: VideoSpec) -> list[str]:
    """Rules of the request's shape that hold for every provider."""
    problems = []
    if spec.operation == "image" and spec.first_frame is None:
        problems.append("last_frame needs a first_frame; pass first_frame too.")
    if spec.operation == "edit" and spec.video is None:
        problems.append("an edit needs the video to edit; pass video.")
    if spec.fast and spec.operation != "edit":
        problems.append("fast applies only to video edits (edit_video); remove fast.")
    return problems


def _has_local_file(spec: VideoSpec) -> bool:
    refs = [spec.first_frame, spec.last_frame, spec.reference_video, spec.video, *spec.reference_images]
    return any(r is not None and r.kind == "file" for r in refs)


def _local_video(spec: VideoSpec) -> str | None:
    """The argument name of a video input that is a local file (None when every video is a URL)."""
    for arg, ref in (("video", spec.video), ("reference_video", spec.reference_video)):
        if ref is not None and ref.kind == "file":
            return arg
    return None


def _check_input_video(spec: VideoSpec, op: OperationSpec, m: Match) -> None:
    bounds = op.input_video_s_fast if spec.fast and op.input_video_s_fast else op.input_video_s
    seconds = spec.input_video_s
    if bounds is None:
        return
    if seconds is None:
        m.note = "the input video's length is unknown, so it was not checked; pass video_duration_s to check it."
        return
    lo, hi = bounds
    if not lo <= seconds <= hi:
        mode = " in fast mode" if spec.fast else ""
        m.problems.append(
            f"the input video is {seconds:g} s; {m.provider} edits{mode} accept {lo:g}-{hi:g} s: "
            f"{_length_fix(op, spec.fast, seconds)}."
        )


def _length_fix(op: OperationSpec, fast: bool, seconds: float) -> str:
    """What to change when an input video's length is outside the range of its edit mode."""
    other, flag = (op.input_video_s, "fast=false") if fast else (op.input_video_s_fast, "fast=true")
    if other and other[0] <= seconds <= other[1]:
        return f"use {flag}, which accepts {other[0]:g}-{other[1]:g} s"
    ranges = [b for b in (op.input_video_s, op.input_video_s_fast if op.fast != "no" else None) if b]
    shortest, longest = min(b[0] for b in ranges), max(b[1] for b in ranges)
    return f"use a clip of {shortest:g}-{longest:g} s" if not shortest <= seconds <= longest else "trim it"


def _price(spec: VideoSpec, op: OperationSpec, m: Match) -> None:
    price = op.price
    if spec.operation == "reference" and spec.reference_video is not None and op.price_with_video:
        price = op.price_with_video
    if spec.operation == "edit" and spec.fast and op.price_fast:
        price = op.price_fast
    m.price = price
    if spec.operation == "edit":
        seconds = spec.input_video_s
        bounds = op.input_video_s_fast if spec.fast and op.input_video_s_fast else op.input_video_s
        if seconds is not None and op.billing_clamps_input and bounds:
            seconds = min(max(seconds, bounds[0]), bounds[1])
    else:
        seconds = m.duration
    if seconds is None:
        return
    m.billed_seconds = round(seconds * spec.num_videos, 3)
    m.cost_usd = price.cost(m.billed_seconds)
    if price.usd_per_second is None:
        m.note = (m.note + " " if m.note else "") + f"{m.provider} publishes no price for this; basis unknown."


def check(spec: VideoSpec, provider: str, tier: str | None = None) -> Match:
    """The best variant of ``provider`` for ``spec``: valid and cheapest, else the closest."""
    entry = PROVIDERS[provider]
    candidates = [v for v in entry.variants if tier is None or v.tier == tier]
    if not candidates:
        tiers = ", ".join(sorted({v.tier for v in entry.variants}))
        return Match(
            provider,
            None,
            None,
            None,
            [f"{provider} has no {tier} tier for Kling O1 (it offers: {tiers}); change tier."],
        )
    matches = [_check_variant(spec, v) for v in candidates]
    valid = [m for m in matches if m.ok]
    if valid:
        return min(valid, key=lambda m: m.cost_usd if m.cost_usd is not None else float("inf"))
    return min(matches, key=lambda m: len(m.problems))


def require(spec: VideoSpec, provider: str, tier: str | None = None) -> Match:
    """The adapters' guard before any upload or request: the match, or an error naming every rule
    ``spec`` breaks at ``provider`` and the providers that would accept it."""
    match = check(spec, provider, tier)
    if match.ok:
        return match
    others = [n for n in PROVIDERS if n != provider and check(spec, n).ok]
    hint = (
        f"Use one of: {', '.join(others)}; or change the arguments as described."
        if others
        else "Change the arguments as described."
    )
    raise errors.UnsupportedByProvider(" ".join(match.problems), hint=hint)

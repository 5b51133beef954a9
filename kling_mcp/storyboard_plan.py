"""Validate and quote a storyboard before anything is spent.

Every shot is checked with the operation it will really have: with ``continuity="chain"`` a shot after
the first without a ``first_frame`` of its own starts from the previous shot's last frame, so it is an
image-to-video shot; it is validated with a stand-in frame (the real one does not exist yet) that is,
like the real one, a local file. One provider and one tier serve the whole board (so the shots share a
size); ``provider="auto"`` picks the cheapest that accepts every shot.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from . import catalog, errors
from .jobs.composite import BoardRecord, ShotPlan
from .requests import GenerateRequest, MediaRef, VideoSpec
from .validation import Match, check
from .vocabulary import PRICE_BASES

if TYPE_CHECKING:
    from .service import VideoService
    from .storyboard_models import StoryboardRequest


@dataclass
class BoardQuote:
    provider: str
    tier: str | None
    model: str
    shots: list[ShotPlan]
    total_usd: float | None
    basis: str

    def describe(self, what: str = "") -> str:
        cost = f"${self.total_usd:.3f}" if self.total_usd is not None else "an unknown price"
        return f"{len(self.shots)} shot(s){what} on {self.provider} ({self.tier or 'default'} tier) for {cost}"


def styled(prompt: str, style: str | None) -> str:
    """The prompt a shot is generated with: the caller's, then the board's style."""
    prompt = prompt.strip()
    if not style or not style.strip():
        return prompt
    return f"{prompt.rstrip('.')}. Style: {style.strip()}"


async def chain_frame(service: VideoService) -> MediaRef:
    """A stand-in for a previous shot's last frame: validation only, never sent anywhere."""
    return await service.resolve_input(_placeholder_uri(), "first_frame", "image")


@functools.cache
def _placeholder_uri() -> str:
    """A small grey PNG as a data URI (saved once under the data dir like any data URI)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (640, 360), (128, 128, 128)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _chained_note(n: int) -> str:
    return f" (continuity='chain' starts it from shot {n - 1}'s last frame)"


async def build_shots(service: VideoService, req: StoryboardRequest) -> list[ShotPlan]:
    """Resolve every shot's inputs and build its spec; raises one error naming every bad shot.

    A chained shot is built with a stand-in first frame (so every rule of image-to-video applies) and
    stored without one: the real frame is filled in when the shot starts.
    """
    plans: list[ShotPlan] = []
    problems: list[str] = []
    hint = None
    for n, shot in enumerate(req.shots, start=1):
        chained = req.continuity == "chain" and n > 1 and shot.first_frame is None
        refs = [*req.reference_images, *shot.reference_images]
        try:
            spec = await service.build_spec(
                GenerateRequest(
                    prompt=styled(shot.prompt, req.style),
                    first_frame=await anyio.to_thread.run_sync(_placeholder_uri) if chained else shot.first_frame,
                    last_frame=shot.last_frame,
                    reference_images=refs,
                    aspect_ratio=req.aspect_ratio,
                    duration=shot.duration,
                    tier=req.tier,
                    negative_prompt=shot.negative_prompt,
                )
            )
        except errors.KlingError as exc:
            problems.append(f"shot {n}{_chained_note(n) if chained else ''}: {exc.message}")
            if chained and refs:
                hint = (
                    "Use continuity='none' to keep reference_images in every shot, give those shots their own "
                    "first_frame, or drop reference_images."
                )
            continue
        if chained:
            spec = spec.model_copy(update={"first_frame": None})
        plans.append(ShotPlan(prompt=shot.prompt, spec=spec, chained=chained))
    if problems:
        raise errors.InvalidRequest("the storyboard cannot be made as given: " + " ".join(problems), hint=hint)
    return plans


def _for_provider(spec: VideoSpec, provider: str, tier: str | None) -> VideoSpec:
    """The board's aspect_ratio is a default: a frame-led shot drops it where the provider takes none."""
    if spec.operation != "image" or spec.aspect_ratio is None:
        return spec
    takes_ratio = any(
        (op := v.operations.get("image")) is not None and op.aspect_ratios for v in catalog.variants(provider, tier)
    )
    return spec if takes_ratio else spec.model_copy(update={"aspect_ratio": None})


async def quote_shots(
    service: VideoService, plans: list[ShotPlan], requested: str | None, tier: str | None
) -> BoardQuote:
    """The cheapest (provider, tier) among ``requested`` (``auto``: the configured ones) that accepts
    every shot in ``plans``; raises a tool error listing each shot's problems when none does."""
    placeholder = await chain_frame(service) if any(p.chained for p in plans) else None
    _, names = service.candidates(requested)
    best: BoardQuote | None = None
    failures: list[str] = []
    for name in names:
        tiers = [tier] if tier else list(dict.fromkeys(v.tier for v in catalog.variants(name)))
        for t in tiers:
            matches: list[Match] = []
            for plan in plans:
                spec = _for_provider(plan.spec, name, t)
                probe = spec.model_copy(update={"first_frame": placeholder}) if plan.chained else spec
                matches.append(check(probe, name, t))
            bad = [(n, m) for n, m in enumerate(matches, start=1) if not m.ok]
            if bad:
                failures.append(
                    f"[{name} {t}] "
                    + " ".join(
                        f"shot {n}{_chained_note(n) if plans[n - 1].chained else ''}: {' '.join(m.problems)}"
                        for n, m in bad
                    )
                )
                continue
            candidate = _quote(name, t, plans, matches)
            if best is None or _cheaper(candidate, best):
                best = candidate
    if best is None:
        raise errors.UnsupportedByProvider(
            "no configured provider accepts every shot of this storyboard. " + " ".join(failures),
            hint="Change the shots as described, or choose another provider or tier.",
        )
    return best


def _quote(name: str, tier: str | None, plans: list[ShotPlan], matches: list[Match]) -> BoardQuote:
    shots = []
    for plan, m in zip(plans, matches, strict=True):
        spec = _for_provider(plan.spec, name, tier).model_copy(
            update={
                "duration": m.duration,
                "aspect_ratio": m.aspect_ratio,
                "tier": m.variant.tier if m.variant else tier,
            }
        )
        shots.append(plan.model_copy(update={"spec": spec, "estimated_cost_usd": m.cost_usd}))
    costs = [m.cost_usd for m in matches]
    total = None if any(c is None for c in costs) else round(sum(c or 0.0 for c in costs), 6)
    bases = [m.price.basis if m.price else "unknown" for m in matches]
    basis = max(bases, key=PRICE_BASES.index)  # the least certain basis of any shot
    return BoardQuote(name, tier, matches[0].model or "", shots, total, basis)


def retake_plans(
    record: BoardRecord, finished: list[bool], shot: int, prompt: str | None, duration: int | None, cascade: bool
) -> tuple[list[ShotPlan], list[int]]:
    """A retake's shots (shot ``shot``, 1-based, with its new prompt/duration) and the indexes that need a
    new take: that shot, every shot without a ``finished`` take and, with ``cascade``, the chained shots
    right after it (each starts from the one before)."""
    target = shot - 1
    plans = list(record.shots)
    plan = plans[target]
    update: dict[str, object] = {}
    if prompt is not None:
        update["prompt"] = styled(prompt, record.style)
    if duration is not None:
        update["duration"] = duration
    plans[target] = plan.model_copy(
        update={"prompt": prompt if prompt is not None else plan.prompt, "spec": plan.spec.model_copy(update=update)}
    )
    redo = {target} | {i for i, done in enumerate(finished) if not done}
    if cascade:
        i = target + 1
        while i < len(plans) and plans[i].chained:
            redo.add(i)
            i += 1
    ordered = sorted(redo)
    for i in ordered:
        plans[i] = plans[i].model_copy(update={"job_id": None})
    return plans, ordered


def _cheaper(a: BoardQuote, b: BoardQuote) -> bool:
    return (a.total_usd if a.total_usd is not None else float("inf")) < (
        b.total_usd if b.total_usd is not None else float("inf")
    )


def fingerprint(*parts: object) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()

"""A tool's request as a :class:`VideoSpec`, and the fingerprints that identify a request and a spec.

:func:`build_spec` infers the operation from which inputs are given, refuses combinations no provider
takes, resolves every image/video argument (:mod:`.inputs`) and checks the spec's shape. Which provider
serves it, at what price, is decided afterwards (:meth:`VideoService.choose`, :mod:`.validation`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import errors, inputs
from .config import Settings
from .jobs.backend import RequestFingerprint
from .requests import EditRequest, EstimateRequest, GenerateRequest, MediaRef, VideoSpec
from .results import JobLookup
from .validation import structural_problems


def infer_operation(
    *,
    video: Any = None,
    first_frame: Any = None,
    last_frame: Any = None,
    reference_images: list[Any] | None = None,
    reference_video: Any = None,
) -> str:
    """``video`` -> edit; first/last frame -> image; references -> reference; none -> text."""
    if video:
        return "edit"
    if first_frame or last_frame:
        return "image"
    if reference_images or reference_video:
        return "reference"
    return "text"


async def resolve_ref(
    settings: Settings, lookup: JobLookup, value: str | None, arg: str, kind: str, probe: bool = False
) -> MediaRef | None:
    """One image/video argument resolved under ``settings``' data and allowed dirs; None when not given."""
    if value is None:
        return None
    return await inputs.resolve(
        value,
        arg=arg,
        kind=kind,  # type: ignore[arg-type]
        data_dir=settings.data_dir,
        allowed_dirs=settings.allowed_dirs,
        probe_urls=probe,
        lookup=lookup,
    )


async def build_spec(
    settings: Settings,
    lookup: JobLookup,
    req: GenerateRequest | EditRequest | EstimateRequest,
    video_duration_s: float | None = None,
) -> VideoSpec:
    """The normalised spec of ``req``; an ``[invalid_request]`` naming every problem of its shape."""
    video = getattr(req, "video", None)
    first, last = getattr(req, "first_frame", None), getattr(req, "last_frame", None)
    ref_video = getattr(req, "reference_video", None)
    operation = infer_operation(
        video=video,
        first_frame=first,
        last_frame=last,
        reference_images=req.reference_images,
        reference_video=ref_video,
    )
    problems = []
    if not req.prompt.strip() and not isinstance(req, EstimateRequest):
        problems.append("prompt is empty; describe the video you want.")
    if operation == "image" and (req.reference_images or ref_video):
        problems.append(
            "first_frame/last_frame cannot be combined with reference_images/reference_video; "
            "use frames (image-to-video) or references (reference-to-video)."
        )
    if operation == "edit" and (first or last or ref_video):
        problems.append(
            "an edit (video=...) takes only reference_images besides the video; remove "
            "first_frame/last_frame/reference_video."
        )
    if operation == "edit" and getattr(req, "duration", None) is not None:
        problems.append("an edit's length follows the input video; remove duration.")
    num = getattr(req, "num_videos", 1)
    if num < 1:
        problems.append(f"num_videos must be at least 1; got {num}.")
    if problems:
        raise errors.InvalidRequest(" ".join(problems))

    async def ref(value: str | None, arg: str, kind: str, probe: bool = False) -> MediaRef | None:
        return await resolve_ref(settings, lookup, value, arg, kind, probe)

    edit_video = await ref(video, "video", "video", probe=video_duration_s is None)
    if edit_video is not None and video_duration_s is not None:
        edit_video = edit_video.model_copy(update={"duration_s": video_duration_s})
    refs = [await ref(r, f"reference_images[{i}]", "image") for i, r in enumerate(req.reference_images)]
    spec = VideoSpec(
        operation=operation,  # type: ignore[arg-type]
        prompt=req.prompt,
        video=edit_video,
        first_frame=await ref(first, "first_frame", "image"),
        last_frame=await ref(last, "last_frame", "image"),
        reference_images=[r for r in refs if r is not None],
        reference_video=await ref(ref_video, "reference_video", "video", probe=True),
        aspect_ratio=getattr(req, "aspect_ratio", None),
        duration=getattr(req, "duration", None),
        tier=req.tier,
        negative_prompt=getattr(req, "negative_prompt", None),
        seed=getattr(req, "seed", None),
        num_videos=num,
        keep_original_sound=req.keep_original_sound,
        fast=getattr(req, "fast", False),
    )
    shape = structural_problems(spec)
    if shape:
        raise errors.InvalidRequest(" ".join(shape))
    return spec


def request_fingerprint(req: GenerateRequest | EditRequest) -> RequestFingerprint:
    """What an idempotency key is bound to: the call's own arguments (not how long it waits)."""
    args = req.model_dump(mode="json", exclude={"wait_seconds", "idempotency_key", "confirm_cost_usd"})
    return RequestFingerprint.of({"tool": "edit_video" if isinstance(req, EditRequest) else "generate_video", **args})


def spec_identity(spec: VideoSpec) -> dict[str, Any]:
    """A spec with its inputs named by content hash where known, else by value (what makes two requests the
    same: a job's twin, a board's, a shot's)."""
    data = spec.model_dump(mode="json")
    for key in ("first_frame", "last_frame", "reference_video", "video"):
        if data.get(key):
            data[key] = data[key].get("sha256") or data[key]["value"]
    data["reference_images"] = [r.get("sha256") or r["value"] for r in data["reference_images"]]
    return data


def spec_fingerprint(provider: str, spec: VideoSpec) -> str:
    """What makes two jobs twins: the provider and the spec's identity."""
    raw = json.dumps({"provider": provider, **spec_identity(spec)}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()

"""Checks of input files against a provider's documented limits (:class:`~kling_mcp.catalog.MediaLimits`).

Each check runs only where the value is known: a local file's size, pixels, frame rate and type are
probed when it is resolved, a URL video's pixels, rate and length too; a URL image is not fetched,
so its limits are left to the provider. Every problem names the input, the value and the limit.
"""

from __future__ import annotations

import os

from .catalog.model import MediaLimits
from .requests import MediaRef, VideoSpec

_TYPE_NAMES = {"video/mp4": "MP4", "video/quicktime": "MOV", "video/webm": "WebM", "video/x-matroska": "MKV"}


def _named_inputs(spec: VideoSpec) -> list[tuple[str, MediaRef]]:
    named = [("first_frame", spec.first_frame), ("last_frame", spec.last_frame)]
    named += [(f"reference_images[{i}]", ref) for i, ref in enumerate(spec.reference_images)]
    named += [("reference_video", spec.reference_video), ("video", spec.video)]
    return [(name, ref) for name, ref in named if ref is not None]


def _size(ref: MediaRef) -> int | None:
    if ref.kind != "file":
        return None
    try:
        return os.stat(ref.value).st_size
    except OSError:
        return None


def media_problems(spec: VideoSpec, limits: MediaLimits | None, provider: str) -> list[str]:
    """Every documented input-file limit ``spec`` breaks at ``provider``."""
    if limits is None:
        return []
    problems: list[str] = []
    for name, ref in _named_inputs(spec):
        size = _size(ref)
        w, h = ref.width, ref.height
        if ref.media == "image":
            if limits.image_min_px and w and h and min(w, h) < limits.image_min_px:
                problems.append(
                    f"{name} is {w}x{h} px; {provider} needs images at least {limits.image_min_px} px on each side: "
                    "use a larger image."
                )
            if limits.image_aspect and w and h and not limits.image_aspect[0] <= w / h <= limits.image_aspect[1]:
                lo, hi = limits.image_aspect
                problems.append(
                    f"{name} has an aspect ratio of {w / h:.2f}; {provider} accepts {lo:.2f}-{hi:.2f} "
                    "(width/height): crop it."
                )
            if limits.image_max_bytes and size and size > limits.image_max_bytes:
                problems.append(
                    f"{name} is {size / 1e6:.1f} MB; {provider} accepts images up to "
                    f"{limits.image_max_bytes / 1e6:.0f} MB: compress it."
                )
            continue
        if limits.video_px and w and h:
            lo, hi = limits.video_px
            if not (lo <= w <= hi and lo <= h <= hi):
                problems.append(
                    f"{name} is {w}x{h} px; {provider} accepts videos of {lo}-{hi} px on each side: "
                    "scale it (e.g. to 1280x720)."
                )
        if limits.video_fps and ref.fps and not limits.video_fps[0] <= ref.fps <= limits.video_fps[1]:
            lo_fps, hi_fps = limits.video_fps
            problems.append(
                f"{name} runs at {ref.fps:g} fps; {provider} accepts {lo_fps:g}-{hi_fps:g} fps: re-encode it."
            )
        if limits.video_max_bytes and size and size > limits.video_max_bytes:
            problems.append(
                f"{name} is {size / 1e6:.0f} MB; {provider} accepts videos up to "
                f"{limits.video_max_bytes / 1e6:.0f} MB: compress or trim it."
            )
        seconds, bounds = ref.duration_s, limits.reference_video_s
        if name == "reference_video" and bounds and seconds is not None and not bounds[0] <= seconds <= bounds[1]:
            problems.append(
                f"reference_video is {seconds:g} s long; {provider} accepts {bounds[0]:g}-{bounds[1]:g} s: "
                f"{'trim it' if seconds > bounds[1] else 'use a longer clip'}."
            )
        if limits.video_types and ref.mime_type and ref.mime_type not in limits.video_types:
            accepted = "/".join(_TYPE_NAMES.get(t, t) for t in limits.video_types)
            shown = _TYPE_NAMES.get(ref.mime_type, ref.mime_type)
            problems.append(f"{name} is {shown}; {provider} accepts {accepted} videos: convert it.")
    return problems

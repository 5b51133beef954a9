"""Validation rules and billing of the Runware emulator's ``videoInference`` (used by ``runware.py``).

The documented parameter rules, sizes and media-input forms for Kling VIDEO O1, and the
*published* per-second rates the emulator bills with (its own table, independent of kling_mcp's
catalog, so tests can compare the two). The 5|10 s rule for text-to-video is [INFERRED]
(providers.md §8.8); results are served at a reduced resolution (long side 320 px) with the
requested aspect ratio.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from tests.emulators.runware import RunwareState, Upload

# Published per-second prices (seed pages, "Pricing"): (T2V/I2V, R2V).
PRICES: dict[str, tuple[float, float]] = {"klingai:kling@o1": (0.112, 0.168),
                                          "klingai:kling@o1-standard": (0.084, 0.126)}
SIZES: dict[str, set[tuple[int, int]]] = {"klingai:kling@o1": {(1920, 1080), (1440, 1440), (1080, 1920)},
                                          "klingai:kling@o1-standard": {(1280, 720), (960, 960), (720, 1280)}}
PRO = "klingai:kling@o1"
TOP_LEVEL = {"taskType", "taskUUID", "outputType", "outputFormat", "outputQuality", "webhookURL", "deliveryMethod",
             "uploadEndpoint", "safety", "ttl", "includeCost", "numberResults", "inputs", "model", "positivePrompt",
             "width", "height", "duration", "providerSettings"}
INPUT_KEYS = {"frameImages", "referenceImages", "referenceVideos", "video"}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)


class Inference(NamedTuple):
    """What a valid ``videoInference`` task generates and what each result costs per second."""

    model: str
    seconds: float
    size: tuple[int, int]           # served result size (see :func:`_scaled`)
    rate: float                     # USD per second


class Reject(Exception):
    """A validation failure: one ``errors`` entry."""

    def __init__(self, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, **({"parameter": parameter} if parameter else {})}


def check_inference(state: RunwareState, task: dict[str, Any]) -> Inference:
    """Apply the documented rules to a ``videoInference`` task (raise :class:`Reject` on the first
    broken one); return what it generates and bills."""
    unknown = sorted(set(task) - TOP_LEVEL)
    if unknown:
        raise Reject("unknownParameter", f"Unknown parameter {unknown[0]!r}.", unknown[0])
    model = task.get("model")
    if model not in PRICES:
        raise Reject("unknownModel", f"Unknown model {model!r}.", "model")
    prompt = task.get("positivePrompt")
    if not isinstance(prompt, str) or not 2 <= len(prompt) <= 2500:
        raise Reject("invalidPositivePrompt", "positivePrompt must be a string of 2-2500 characters.", "positivePrompt")
    _check_options(task)
    inputs = task.get("inputs") or {}
    if not isinstance(inputs, dict) or set(inputs) - INPUT_KEYS:
        raise Reject("unknownParameter", f"inputs may hold only {sorted(INPUT_KEYS)}.", "inputs")
    klingai = _provider_settings(task, model)
    width, height = task.get("width"), task.get("height")
    if (width is None) != (height is None):
        raise Reject("missingDimensions", "width and height must be used together.", "width")
    frames, refs, ref_videos, video = (inputs.get(k) for k in ("frameImages", "referenceImages", "referenceVideos",
                                                                 "video"))
    duration = task.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise Reject("invalidDuration", "duration must be an integer.", "duration")
    if frames is not None and (width is not None or refs is not None):
        raise Reject("incompatibleParameters", "Provide exactly one of inputs.frameImages, inputs.referenceImages "
                     "or width/height.", "inputs.frameImages")
    if frames is None and video is None and width is None:
        raise Reject("missingDimensions", "width and height are required without inputs.frameImages.", "width")
    if width is not None and (width, height) not in SIZES[model]:
        raise Reject("unsupportedDimensions", f"{width}x{height} is not supported; use one of "
                     f"{', '.join(f'{w}x{h}' for w, h in sorted(SIZES[model]))}.", "width")
    first: Upload | None = None
    if frames is not None:
        first = _frame_images(state, frames)
        if duration not in (5, 10):
            raise Reject("invalidDuration", "With inputs.frameImages, duration must be 5 or 10.", "duration")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, str) for r in refs)):
        raise Reject("invalidReferenceImages", "inputs.referenceImages must be an array of strings.",
                     "inputs.referenceImages")
    for i, ref in enumerate(refs or []):
        _media(state, ref, "image", f"inputs.referenceImages[{i}]")
    if ref_videos is not None:
        if not isinstance(ref_videos, list) or not all(isinstance(r, str) for r in ref_videos):
            raise Reject("invalidReferenceVideos", "inputs.referenceVideos must be an array of strings.",
                         "inputs.referenceVideos")
        for i, ref in enumerate(ref_videos):
            _media(state, ref, "video", f"inputs.referenceVideos[{i}]")
    if video is not None:
        if len(refs or []) > 4:
            raise Reject("invalidReferenceImages", "With inputs.video, inputs.referenceImages is limited to 4 items.",
                         "inputs.referenceImages")
        source = _media(state, video, "video", "inputs.video")
        seconds = source.seconds if source and source.seconds else state.default_input_video_s
        lo, hi = (6, 20) if klingai.get("fast") else (3, 10)
        if source and source.seconds and not lo <= source.seconds <= hi:
            raise Reject("invalidVideoDuration", f"The input video must last {lo}-{hi} s "
                         f"{'in fast mode' if klingai.get('fast') else '(fast mode: 6-20 s)'}; "
                         f"got {source.seconds:.1f} s.", "inputs.video")
        size = _scaled(source.width, source.height) if source and source.width else _scaled(1920, 1080)
    else:
        if klingai.get("fast"):
            raise Reject("incompatibleParameters", "providerSettings.klingai.fast applies only to video editing "
                         "(inputs.video).", "providerSettings.klingai.fast")
        if refs is not None or ref_videos is not None:
            if len(refs or []) > 7:
                raise Reject("invalidReferenceImages", "inputs.referenceImages is limited to 7 items.",
                             "inputs.referenceImages")
            if not 3 <= duration <= 10:
                raise Reject("invalidDuration", "With reference inputs, duration must be between 3 and 10.",
                             "duration")
        elif frames is None and duration not in (5, 10):
            raise Reject("invalidDuration", "duration must be 5 or 10.", "duration")
        seconds = float(duration)
        size = _scaled(first.width, first.height) if first and first.width else _scaled(width or 1920, height or 1080)
    base_rate, r2v_rate = PRICES[model]
    return Inference(model, seconds, size, r2v_rate if (video is not None or ref_videos) else base_rate)


def _check_options(task: dict[str, Any]) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("deliveryMethod", task.get("deliveryMethod", "async") == "async", "deliveryMethod must be async for video."),
        ("outputType", task.get("outputType", "URL") == "URL", "outputType must be URL."),
        ("outputFormat", task.get("outputFormat", "MP4") in ("MP4", "WEBM", "MOV"),
         "outputFormat must be MP4, WEBM or MOV."),
        ("outputQuality", _int_in(task.get("outputQuality", 95), 20, 99), "outputQuality must be 20-99."),
        ("numberResults", _int_in(task.get("numberResults", 1), 1, 4), "numberResults must be 1-4."),
        ("includeCost", isinstance(task.get("includeCost", False), bool), "includeCost must be a boolean."),
        ("ttl", _int_in(task.get("ttl", 60), 60, 10**9), "ttl must be an integer of at least 60."),
    ]
    for name, ok, message in checks:
        if not ok:
            raise Reject(f"invalid{name[0].upper()}{name[1:]}", message, name)


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _provider_settings(task: dict[str, Any], model: str) -> dict[str, Any]:
    settings = task.get("providerSettings") or {}
    if not isinstance(settings, dict) or set(settings) - {"klingai"}:
        raise Reject("unknownParameter", "providerSettings may hold only klingai.", "providerSettings")
    klingai = settings.get("klingai") or {}
    allowed = {"keepOriginalSound", "fast"} if model == PRO else {"keepOriginalSound"}
    for key, value in klingai.items():
        if key not in allowed:
            raise Reject("unknownParameter", f"{model} has no providerSettings.klingai.{key}.",
                         f"providerSettings.klingai.{key}")
        if not isinstance(value, bool):
            raise Reject("invalidProviderSettings", f"providerSettings.klingai.{key} must be a boolean.",
                         f"providerSettings.klingai.{key}")
    return klingai


def _frame_images(state: RunwareState, frames: Any) -> Upload | None:
    if not isinstance(frames, list) or not 1 <= len(frames) <= 2:
        raise Reject("invalidFrameImages", "inputs.frameImages must hold 1 or 2 items.", "inputs.frameImages")
    first: Upload | None = None
    for i, frame in enumerate(frames):
        image = frame.get("image") if isinstance(frame, dict) else frame
        position = frame.get("frame", "first" if i == 0 else "last") if isinstance(frame, dict) else None
        if position not in (None, "first", "last", 0, -1):
            raise Reject("invalidFrameImages", "frame must be first, last, 0 or -1.", f"inputs.frameImages[{i}].frame")
        upload = _media(state, image, "image", f"inputs.frameImages[{i}]")
        if i == 0:
            first = upload
    return first


def _media(state: RunwareState, value: Any, kind: str, parameter: str) -> Upload | None:
    """Check one media input (UUID, URL, data URI or, for images, base64); return the hosted
    upload it names, if any."""
    code = f"invalid{kind.capitalize()}"
    if not isinstance(value, str) or not value:
        raise Reject(code, f"{parameter} must be a string.", parameter)
    if UUID4.match(value):
        upload = state.uploads.get(value.lower())
        if upload is None or upload.media != kind:
            raise Reject(code, f"{parameter}: no uploaded {kind} has UUID {value}.", parameter)
        return upload
    if value.startswith(("http://", "https://")):
        name = value.rsplit("/files/", 1)[-1] if "/files/" in value else None
        return next((u for u in state.uploads.values() if u.name == name), None)
    if kind == "image" and (value.startswith("data:image/") or _is_base64(value)):
        return None
    accepted = "a UUID or URL" if kind == "video" else "a UUID, URL, data URI or base64 string"
    raise Reject(code, f"{parameter} must be {accepted}.", parameter)


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
        return len(value) > 16
    except (binascii.Error, ValueError):
        return False


def _scaled(width: int, height: int) -> tuple[int, int]:
    scale = 320 / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)

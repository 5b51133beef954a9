"""The rules side of the Kling emulator (providers.md §6), used by ``kling.py``: the JWT check and
the documented Omni-Video request rules, each refusal with Kling's code and HTTP status.

This is an independent reading of Kling's API reference, not a copy of kling_mcp's catalog, so
the two can be compared by the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# code -> (HTTP status, Kling's message) from the "Error Code" table.
CODES: dict[int, tuple[int, str]] = {
    1000: (401, "Authentication failed"),
    1001: (401, "Authorization is empty"),
    1002: (401, "Authorization is invalid"),
    1003: (401, "Authorization is not yet valid"),
    1004: (401, "Authorization has expired"),
    1100: (429, "Account exception"),
    1101: (429, "Account in arrears (postpaid scenario)"),
    1102: (429, "Resource pack depleted or expired (prepaid scenario)"),
    1103: (403, "Unauthorized access to requested resource, such as API/model"),
    1200: (400, "Invalid request parameters"),
    1201: (400, "Invalid parameters, such as incorrect key or illegal value"),
    1202: (404, "The requested method is invalid"),
    1203: (404, "The requested resource does not exist, such as the model"),
    1300: (400, "Trigger strategy of the platform"),
    1301: (400, "Trigger the content security policy of the platform"),
    1302: (429, "The API request is too fast, exceeding the platform's rate limit"),
    1303: (429, "parallel task over resource pack limit"),
    1304: (429, "Trigger the platform's IP whitelisting policy"),
    5000: (500, "Server internal error"),
    5001: (503, "Server temporarily unavailable, usually due to maintenance"),
    5002: (504, "Server internal timeout, usually due to a backlog"),
}
FIELDS = {"model_name", "multi_shot", "shot_type", "prompt", "multi_prompt", "image_list", "element_list",
          "video_list", "sound", "mode", "aspect_ratio", "duration", "watermark_info", "callback_url",
          "external_task_id"}
MODEL = "kling-video-o1"
ASPECTS = ("16:9", "9:16", "1:1")
MAX_PROMPT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024


class Refused(Exception):
    """A request Kling refuses: ``code`` (with its HTTP status) and a message."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or CODES[code][1])
        self.code = code
        self.message = message or CODES[code][1]


def _unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_jwt(token: str, secrets_by_access_key: dict[str, str], now: float) -> dict[str, Any]:
    """The verified claims of a Kling API token, else :class:`Refused` with Kling's auth code."""
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused(1002, "Authorization is invalid: not a JWT")
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, binascii.Error):
        raise Refused(1002, "Authorization is invalid: undecodable JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise Refused(1002, "Authorization is invalid: alg must be HS256")
    secret = secrets_by_access_key.get(str(claims.get("iss")))
    if secret is None:
        raise Refused(1000, "Authentication failed: unknown access key")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise Refused(1000, "Authentication failed: signature mismatch")
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not isinstance(nbf, int) or not isinstance(exp, int):
        raise Refused(1002, "Authorization is invalid: nbf and exp must be integers")
    if now < nbf:
        raise Refused(1003)
    if now >= exp:
        raise Refused(1004)
    return claims


@dataclass
class Image:
    width: int | None
    height: int | None


@dataclass
class VideoInput:
    url: str
    refer_type: str
    keep_original_sound: str | None


def image_from_base64(value: str) -> Image:
    """Kling takes bare Base64 (no ``data:`` prefix): jpg/png, <= 10 MB, >= 300 px, 1:2.5 to 2.5:1."""
    if value.startswith("data:"):
        raise Refused(1201, "image_url: Base64 must not carry a data: prefix")
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise Refused(1201, "image_url: neither a URL nor valid Base64") from None
    return image_from_bytes(raw, "image_url")


def image_from_bytes(raw: bytes, where: str) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if len(raw) > MAX_IMAGE_BYTES:
        raise Refused(1201, f"{where}: image larger than 10MB")
    try:
        with PILImage.open(io.BytesIO(raw)) as im:
            fmt, (width, height) = im.format, im.size
    except (UnidentifiedImageError, OSError):
        raise Refused(1201, f"{where}: unsupported image") from None
    if fmt not in ("PNG", "JPEG"):
        raise Refused(1201, f"{where}: image format must be jpg/jpeg/png, got {fmt}")
    if min(width, height) < 300:
        raise Refused(1201, f"{where}: image must be at least 300px, got {width}x{height}")
    if not 1 / 2.5 <= width / height <= 2.5:
        raise Refused(1201, f"{where}: image aspect ratio must be between 1:2.5 and 2.5:1")
    return Image(width, height)


def _is_url(value: str) -> bool:
    return urlsplit(value).scheme in ("http", "https")


@dataclass
class Request:
    """A validated Omni-Video create request (what the task is made of)."""

    prompt: str
    mode: str
    images: list[tuple[str, str | None]]      # (image_url, type)
    video: VideoInput | None
    aspect_ratio: str | None
    duration: int | None                      # None for an edit (follows the input video)
    external_task_id: str | None


def check_body(body: Any, strict: bool) -> Request:
    """The documented rules of ``POST /v1/videos/omni-video`` for ``kling-video-o1``."""
    if not isinstance(body, dict):
        raise Refused(1200, "request body must be a JSON object")
    if strict and set(body) - FIELDS:
        raise Refused(1201, f"unknown parameter: {sorted(set(body) - FIELDS)[0]}")
    if body.get("model_name", MODEL) != MODEL:
        raise Refused(1201, f"model_name {body.get('model_name')!r} is not served by this emulator")
    if body.get("multi_shot"):
        raise Refused(1201, "multi_shot is not supported by kling-video-o1")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Refused(1201, "prompt must not be empty")
    if len(prompt) > MAX_PROMPT:
        raise Refused(1201, f"prompt must not exceed {MAX_PROMPT} characters")
    mode = body.get("mode", "pro")
    if mode not in ("std", "pro"):
        raise Refused(1201, "mode must be std or pro")
    images = _images(body.get("image_list"))
    video = _video(body.get("video_list"))
    if body.get("element_list"):
        raise Refused(1201, "element_list: no elements exist in this emulator's element library")
    frames = [t for _, t in images if t]
    if frames:
        if "end_frame" in frames and "first_frame" not in frames:
            raise Refused(1201, "an end frame needs a first frame")
        if len(images) > 2 or len(set(frames)) != len(frames):
            raise Refused(1201, "start & end frames: at most one first_frame and one end_frame, no other images")
        if video is not None and video.refer_type == "base":
            raise Refused(1201, "first/end frames cannot be combined with video editing")
    limit = 4 if video is not None else 7
    if len(images) > limit:
        raise Refused(1201, f"at most {limit} reference images {'with' if video else 'without'} a reference video")
    if video is not None and body.get("sound", "off") != "off":
        raise Refused(1201, "sound must be off with a reference video")
    edit = video is not None and video.refer_type == "base"
    first_frame_only = "first_frame" in frames
    aspect = body.get("aspect_ratio")
    if edit or first_frame_only:
        if aspect is not None:
            raise Refused(1201, "aspect_ratio is not supported with a first frame or video editing")
    elif aspect not in ASPECTS:
        raise Refused(1201, "aspect_ratio is required (16:9, 9:16 or 1:1) without a first frame or video editing")
    duration = _duration(body.get("duration", "5"), edit, text_or_frame=(not images and video is None) or bool(frames))
    external = body.get("external_task_id")
    if external is not None and not isinstance(external, str):
        raise Refused(1201, "external_task_id must be a string")
    if body.get("callback_url") not in (None, "") and not _is_url(str(body["callback_url"])):
        raise Refused(1201, "callback_url must be a URL")
    return Request(prompt, mode, images, video, aspect, duration, external or None)


def _images(value: Any) -> list[tuple[str, str | None]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Refused(1201, "image_list must be an array")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("image_url"), str) or not item["image_url"]:
            raise Refused(1201, "image_url parameter value must not be empty")
        if set(item) - {"image_url", "type"}:
            raise Refused(1201, f"image_list: unknown key {sorted(set(item) - {'image_url', 'type'})[0]}")
        kind = item.get("type")
        if kind not in (None, "first_frame", "end_frame"):
            raise Refused(1201, "image_list.type must be first_frame or end_frame")
        out.append((item["image_url"], kind))
    return out


def _video(value: Any) -> VideoInput | None:
    if value in (None, []):
        return None
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise Refused(1201, "video_list: max 1 video")
    item = value[0]
    if set(item) - {"video_url", "refer_type", "keep_original_sound"}:
        raise Refused(1201, "video_list: unknown key")
    url = item.get("video_url")
    if not isinstance(url, str) or not url:
        raise Refused(1201, "video_url parameter value must not be empty")
    if not _is_url(url):
        raise Refused(1201, "video_url must be a URL (videos cannot be sent as Base64)")
    refer = item.get("refer_type", "base")
    if refer not in ("base", "feature"):
        raise Refused(1201, "refer_type must be base or feature")
    sound = item.get("keep_original_sound")
    if sound not in (None, "yes", "no"):
        raise Refused(1201, "keep_original_sound must be yes or no")
    return VideoInput(url, refer, sound)


def _duration(value: Any, edit: bool, text_or_frame: bool) -> int | None:
    if edit:
        return None  # documented as ignored: the output follows the input video
    if not isinstance(value, str):
        raise Refused(1201, "duration must be a string, e.g. \"5\"")
    allowed = ("5", "10") if text_or_frame else tuple(str(n) for n in range(3, 11))
    if value not in allowed:
        raise Refused(1201, f"duration must be one of {', '.join(allowed)} for this mode of kling-video-o1")
    return int(value)


def check_video(seconds: float | None, width: int | None, height: int | None) -> None:
    """Input video: >= 3 s and <= 10 s (O1), width and height 720-2160 px."""
    if seconds is not None and not 3.0 - 0.05 <= seconds <= 10.0 + 0.05:
        raise Refused(1201, f"video duration must be 3-10s for kling-video-o1, got {seconds:.1f}s")
    if width and height and not (720 <= width <= 2160 and 720 <= height <= 2160):
        raise Refused(1201, f"video resolution must be 720px-2160px, got {width}x{height}")

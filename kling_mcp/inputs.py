"""Turn the image/video arguments a caller passes into :class:`MediaRef` values.

Accepted: http(s) URLs (sent as they are), ``data:`` URIs (saved under the data dir, then handled
as files), this server's results (``kling://jobs/...``: see :mod:`kling_mcp.results`) and local
paths, which must be real files that decode as the expected kind of media
and, when ``KLING_MCP_ALLOWED_DIRS`` is set, lie under one of those folders. Every other scheme
(``file://``, ``ftp://`` ...) is refused with a message that says what to pass instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import anyio

from . import errors, media, results
from .requests import MAX_ARG_CHARS, MediaRef

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{1,15}):")


async def resolve(
    value: str,
    *,
    arg: str,
    kind: Literal["image", "video"],
    data_dir: Path,
    allowed_dirs: tuple[Path, ...],
    probe_urls: bool = False,
    lookup: results.JobLookup | None = None,
) -> MediaRef:
    """Resolve one argument; raises :class:`errors.InvalidInputFile` naming ``arg``.

    ``lookup`` finds a job by id for ``kling://`` results; without it they are refused.
    """
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidInputFile(f"{arg} is empty.")
    value = value.strip()
    if len(value) > MAX_ARG_CHARS:
        raise errors.InvalidInputFile(f"{arg} is larger than {MAX_ARG_CHARS // 2**20} MB.")
    scheme = _SCHEME.match(value)
    if scheme and len(scheme.group(1)) > 1:  # "C:\..." is a Windows path, not a scheme
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            return await _url(value, arg=arg, kind=kind, probe=probe_urls)
        if name == "data":
            path = await anyio.to_thread.run_sync(media.save_data_uri, value, data_dir / "inputs")
            return await _file(path, arg=arg, kind=kind, allowed_dirs=(), origin="data URI")
        if name == "kling" and lookup is not None:
            path = await results.resolve(value, arg=arg, kind=kind, lookup=lookup, data_dir=data_dir)
            return await _file(path, arg=arg, kind=kind, allowed_dirs=(), origin=value)
        raise errors.InvalidInputFile(
            f"{arg} uses the {name}: scheme, which is not accepted.",
            hint="Pass an http(s) URL, a data: URI, a kling://jobs/... result, or a plain local path (no file:// "
            "prefix).",
        )
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~someone/..." for a user that does not exist
        raise errors.InvalidInputFile(f"{arg}: {_shown(value)} does not exist.") from None
    return await _file(path, arg=arg, kind=kind, allowed_dirs=allowed_dirs, origin=_shown(value))


def _shown(value: str, limit: int = 200) -> str:
    """``value`` as quoted back in an error: a caller's string may be megabytes long."""
    return value if len(value) <= limit else f"{value[: limit // 2]}…{value[-limit // 2 :]} ({len(value)} characters)"


async def _url(url: str, *, arg: str, kind: str, probe: bool) -> MediaRef:
    try:
        parts = urlsplit(url)
        valid = bool(parts.hostname) and (parts.port or 0) >= 0  # .port raises on a malformed port
    except ValueError:  # e.g. "https://[::1" (bad IPv6)
        valid = False
    if not valid:
        raise errors.InvalidInputFile(
            f"{arg}: {_shown(url)} is not a valid URL.",
            hint="Pass a full http(s) URL such as https://example.com/frame.png, a data: URI, or a local file path.",
        )
    ref = MediaRef(kind="url", value=url, media=kind)  # type: ignore[arg-type]
    if probe and kind == "video":
        try:
            info = await anyio.to_thread.run_sync(media.probe, url)
        except errors.KlingError:
            return ref  # length unknown: validation says so instead of guessing
        ref = ref.model_copy(
            update={
                "duration_s": info.duration_s,
                "width": info.width,
                "height": info.height,
                "mime_type": info.mime_type,
                "fps": info.fps,
            }
        )
    return ref


async def _file(path: Path, *, arg: str, kind: str, allowed_dirs: tuple[Path, ...], origin: str) -> MediaRef:
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # ValueError: an embedded NUL byte
        raise errors.InvalidInputFile(f"{arg}: {origin} does not exist.") from None
    if not resolved.is_file():
        raise errors.InvalidInputFile(f"{arg}: {origin} is not a regular file.")
    if allowed_dirs and not any(resolved.is_relative_to(d) for d in allowed_dirs):
        raise errors.InvalidInputFile(
            f"{arg}: {origin} is outside the folders this server may read.",
            hint="Move the file under one of KLING_MCP_ALLOWED_DIRS, or pass a URL.",
        )
    info = await anyio.to_thread.run_sync(media.probe, resolved)
    if info.kind != kind:
        raise errors.InvalidInputFile(f"{arg}: {origin} is a {info.kind}, but {arg} needs a {kind}.")
    sha = await anyio.to_thread.run_sync(media.sha256_file, resolved)
    return MediaRef(
        kind="file",
        value=str(resolved),
        media=kind,
        mime_type=info.mime_type,
        sha256=sha,
        width=info.width,
        height=info.height,
        duration_s=info.duration_s,
        fps=info.fps,
    )

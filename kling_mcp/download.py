"""Streamed, resumable, size-capped downloads of provider result files into the data dir.

:func:`download` writes ``<dest>.part``, resumes it with ``Range`` after a dropped
connection (or in a later process, from a ``.part`` left behind), and renames it onto ``dest`` only
when it is complete and fsynced, so a partial file is never at ``dest``.

What a failure leaves behind:

- non-retryable (``DownloadFailed(retryable=False)``: link expired or gone, other 4xx, size cap,
  unwritable file, bad URL): nothing; the ``.part`` is deleted.
- retryable (``DownloadFailed(retryable=True)``: 5xx, 429, timeouts, refused or dropped connections,
  empty bodies, after every attempt) and cancellation: the ``.part`` is kept if it holds any bytes,
  so the next call resumes from it.

One download per ``dest`` at a time: the caller (the job runner) must not run two downloads to the
same path concurrently.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from kling_mcp import errors
from kling_mcp.http_reads import larger_socket_reads
from kling_mcp.part_writer import PartWriter, part_writer

__all__ = ["DownloadResult", "download"]

_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
_GONE = frozenset({403, 404, 410})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_MAX_SHOWN_PATH = 100

_GONE_HINT = (
    "Call check_job to get a fresh link from the provider; if the provider no longer has the video, generate it again."
)
_CAP_HINT = (
    "Raise the server's download size limit if a video this large is expected, or generate a shorter "
    "or lower-tier video."
)
_REFUSED_HINT = "The provider's link cannot be downloaded as given; call check_job again, or report the job id."


@dataclass(frozen=True)
class DownloadResult:
    """A completed download: the file at ``path`` is whole and fsynced."""

    path: Path
    size_bytes: int
    resumed: bool
    content_type: str | None


async def download(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    root: Path,
    max_bytes: int,
    attempts: int = 3,
    secrets: tuple[str, ...] = (),
) -> DownloadResult:
    """Download ``url`` to ``dest`` (which must lie inside ``root``) and return what was written.

    Streams to ``dest + ".part"`` with flat memory, gives up after ``attempts`` failed requests (with a
    short backoff between them; one unusable answer to a Range request costs one extra request, not
    an attempt), resumes with ``Range`` where the server allows it, and refuses bodies over
    ``max_bytes``. Bytes are written as they arrive from the network. ``secrets`` are scrubbed from error messages;
    signed URLs are shown without their query string.

    Raises:
        errors.InvalidRequest: ``dest`` resolves outside ``root``.
        errors.DownloadFailed: the download failed; ``retryable`` says whether calling again can help.
    """
    target = _confine(Path(dest), Path(root))
    job = _Download(client, url, target, max_bytes=max_bytes, attempts=max(1, attempts), secrets=secrets)
    return await job.run()


class _Transient(Exception):
    """One attempt failed in a way another attempt may fix."""


class _Restart(Exception):
    """The server's answer to a Range request cannot be appended to the .part: start from byte 0."""


@dataclass
class _Progress:
    """What is in the .part file and what is known about the server."""

    part: Path
    offset: int = 0
    total: int | None = None
    ranges: bool | None = None  # None: not yet known whether the server honours Range
    validator: str | None = None  # strong ETag or Last-Modified, sent as If-Range when resuming
    resumed: bool = False
    content_type: str | None = None

    def restart(self) -> None:
        self.part.write_bytes(b"")
        self.offset, self.total, self.validator, self.resumed = 0, None, None, False


class _Download:
    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        target: Path,
        *,
        max_bytes: int,
        attempts: int,
        secrets: tuple[str, ...],
    ) -> None:
        self.client, self.url, self.target = client, url, target
        self.max_bytes, self.attempts, self.secrets = max_bytes, attempts, secrets
        self.shown = _public_url(url)
        self.progress = _Progress(target.with_name(target.name + ".part"))

    def _fail(self, reason: str, *, retryable: bool, hint: str | None = None) -> errors.DownloadFailed:
        message = errors.redact(f"Downloading {self.shown} failed: {reason}.", self.secrets)
        return errors.DownloadFailed(
            message, retryable=retryable, hint=hint, details={"url": self.shown, "dest": str(self.target)}
        )

    async def run(self) -> DownloadResult:
        self._check_scheme()
        p = self.progress
        if p.part.resolve() != p.part:
            raise errors.InvalidRequest(
                f"The partial download {p.part} is a symlink; refusing to write through it.",
                hint="Delete that .part file and call again.",
            )
        try:
            try:
                self.target.parent.mkdir(parents=True, exist_ok=True)
                self._load_leftover()
                await self._transfer()
                await anyio.to_thread.run_sync(_commit, p.part, self.target)
            except OSError as exc:
                raise self._unwritable(exc) from exc
        except errors.DownloadFailed as exc:
            if not exc.retryable or p.offset == 0:  # keep only a .part worth resuming
                with contextlib.suppress(OSError):  # the error being raised matters more
                    p.part.unlink(missing_ok=True)
            raise
        return DownloadResult(
            path=self.target,
            size_bytes=p.offset,
            resumed=p.resumed,
            content_type=p.content_type,
        )

    async def _transfer(self) -> None:
        """Request until the .part holds the whole body, or raise DownloadFailed."""
        p, failures = self.progress, 0
        while True:
            try:
                await self._attempt()
                return
            except _Restart:
                # Only ever raised in answer to a Range request, and Range is not sent again once
                # ranges is False (the next attempt truncates the .part): at most once per call.
                p.ranges = False
            except _Transient as exc:
                failures += 1
                if failures >= self.attempts:
                    kept = (
                        f"; the partial file ({p.offset} bytes) is kept and the next call resumes it"
                        if p.offset
                        else ""
                    )
                    raise self._fail(f"{exc} (after {failures} attempts){kept}", retryable=True) from exc
                await anyio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1])

    def _unwritable(self, exc: OSError) -> errors.DownloadFailed:
        return self._fail(
            f"could not write {self.target} ({exc.strerror or exc})",
            retryable=False,
            hint="Free disk space or fix the data directory's permissions, then call again.",
        )

    def _check_scheme(self) -> None:
        try:
            scheme = httpx.URL(self.url).scheme
        except httpx.InvalidURL as exc:
            raise self._fail(
                f"the URL is not valid ({exc})", retryable=False, hint="Pass the http(s) URL the provider returned."
            ) from exc
        if scheme not in ("http", "https"):
            raise self._fail(
                f"only http and https links can be downloaded, not {scheme or 'scheme-less'} URLs",
                retryable=False,
                hint="Pass the http(s) URL the provider returned.",
            )

    def _load_leftover(self) -> None:
        """Adopt a .part left by an earlier call or process: its bytes are where a resume starts."""
        p = self.progress
        try:
            size = p.part.stat().st_size
        except FileNotFoundError:
            return
        if size > self.max_bytes:
            p.part.unlink()
            return
        p.offset = size

    async def _attempt(self) -> None:
        p = self.progress
        # identity: byte offsets in Range must match the bytes we store.
        headers = {"Accept-Encoding": "identity"}
        asked = p.offset > 0 and p.ranges is not False
        if asked:
            headers["Range"] = f"bytes={p.offset}-"
            if p.validator:
                headers["If-Range"] = p.validator
        try:
            if p.offset and not asked:
                p.restart()
            async with self.client.stream("GET", self.url, headers=headers, follow_redirects=True) as response:
                await self._receive(response, asked)
        except httpx.UnsupportedProtocol as exc:  # e.g. redirected to a non-http(s) scheme
            raise self._fail(
                f"the link redirected to an unsupported URL ({exc})", retryable=False, hint=_REFUSED_HINT
            ) from exc
        except httpx.TooManyRedirects as exc:
            raise self._fail("the link redirected too many times", retryable=False, hint=_REFUSED_HINT) from exc
        except httpx.TimeoutException as exc:
            raise _Transient(f"the server timed out ({type(exc).__name__})") from exc
        except httpx.RequestError as exc:
            raise _Transient(f"the connection failed ({type(exc).__name__}: {exc})") from exc
        except OSError as exc:
            raise self._unwritable(exc) from exc

    async def _receive(self, response: httpx.Response, asked: bool) -> None:
        p = self.progress
        status = response.status_code
        if status in _GONE:
            raise self._fail(
                f"the link answered HTTP {status}: the provider's link has expired or is gone",
                retryable=False,
                hint=_GONE_HINT,
            )
        if status == 416 and asked:
            raise _Restart()
        if status == 429 or status >= 500:
            raise _Transient(f"the server answered HTTP {status}")
        if status not in (200, 206):
            raise self._fail(f"the link answered HTTP {status}", retryable=False, hint=_REFUSED_HINT)

        encoded = response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
        accept = response.headers.get("accept-ranges", "").lower()
        if encoded or accept == "none":
            p.ranges = False
        elif "bytes" in accept:
            p.ranges = True
        # Content-Length counts encoded bytes, so it says nothing about the decoded body.
        length = None if encoded else _int(response.headers.get("content-length"))

        if status == 206:
            start, total = _content_range(response.headers.get("content-range"))
            if start != p.offset or (asked and None not in (total, p.total) and total != p.total):
                if asked:  # wrong range, or the file changed size: our bytes cannot be continued
                    raise _Restart()
                raise _Transient("the server sent a byte range that was not asked for")
            p.ranges = True
            expected = total if total is not None else (start + length if length is not None else None)
            if start > 0:
                p.resumed = True
        else:
            if p.offset:  # a 200 to a Range request is the whole file again
                if asked and not p.validator:
                    p.ranges = False
                p.restart()
            expected = length
        if expected is not None and expected > self.max_bytes:
            raise self._too_big(f"it is {expected} bytes")
        p.total = expected
        p.validator = _validator(response) or p.validator
        p.content_type = response.headers.get("content-type")

        fd = os.open(p.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with larger_socket_reads(response):
                await self._stream_body(response, fd)
            if expected is not None and p.offset < expected:
                raise _Transient(f"the body ended at byte {p.offset} of {expected}")
            if expected is not None and p.offset > expected:
                raise self._fail(
                    f"the server sent {p.offset} bytes but announced {expected}", retryable=False, hint=_REFUSED_HINT
                )
            if p.offset == 0:
                raise _Transient("the server sent an empty body")
            await anyio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)

    async def _stream_body(self, response: httpx.Response, fd: int) -> None:
        """Append the body to ``fd``, written in a worker thread while the next bytes arrive.

        ``p.offset`` ends as the bytes in the file, also when the connection breaks or
        the download is cancelled: everything received before that is written first, for the resume.
        """
        p = self.progress
        received = p.offset
        writer: PartWriter | None = None
        try:
            async with part_writer(fd) as writer:
                # No chunk_size here: httpx's re-chunker drops its buffered tail when the connection
                # breaks, and that tail is exactly what a resume must not lose.
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > self.max_bytes:
                        raise self._too_big(f"the body ran past {self.max_bytes} bytes")
                    await writer.write(chunk)
        finally:
            if writer is not None:
                p.offset += writer.written

    def _too_big(self, why: str) -> errors.DownloadFailed:
        return self._fail(
            f"{why}, over the download size limit of {self.max_bytes} bytes", retryable=False, hint=_CAP_HINT
        )


def _confine(dest: Path, root: Path) -> Path:
    """``dest`` resolved (symlinks and ``..`` followed), provided it lies strictly inside ``root``."""
    root_resolved = root.resolve()
    target = dest.resolve()
    if target == root_resolved or not target.is_relative_to(root_resolved):
        raise errors.InvalidRequest(
            f"The download destination {dest} resolves to {target}, outside the data directory {root_resolved}.",
            hint="Choose a file path inside the data directory (KLING_MCP_DATA_DIR).",
        )
    return target


def _public_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (signed-URL signatures live there), path shortened."""
    try:
        parsed = httpx.URL(url)
        base, path = f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}", parsed.path
    except (httpx.InvalidURL, TypeError):
        base, path = "", url.split("?", 1)[0].split("#", 1)[0]
    if len(path) > _MAX_SHOWN_PATH:
        path = path[: _MAX_SHOWN_PATH // 2] + "…" + path[-_MAX_SHOWN_PATH // 2 :]
    return base + path


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from ``Content-Range: bytes start-end/total``; None where absent or unparseable."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    return int(match[1]), (None if match[3] == "*" else int(match[3]))


def _validator(response: httpx.Response) -> str | None:
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return etag
    return response.headers.get("last-modified")


def _commit(part: Path, target: Path) -> None:
    os.replace(part, target)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX only)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

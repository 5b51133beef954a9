"""Uploads of local files to fal's storage (providers.md §7.2, fal's own client).

``POST {storage}/storage/auth/token?storage_type=fal-cdn-v3`` (the ``Key`` header) answers a short-lived
token and the upload host (``base_url``); the file then goes there with ``Authorization: <token_type>
<token>``: in one ``POST {base_url}/files/upload`` up to 100 MB, above that as a multipart upload
(``POST .../files/upload/multipart`` -> ``access_url`` + ``uploadId``; ``PUT {access_url}/multipart/
{uploadId}/{n}`` per 10 MB part, each answering an ETag; ``POST .../complete`` with the parts). The
answer's ``access_url`` is what a request's ``*_url`` fields take. The FAL_KEY only goes to the storage
root; the upload host only ever sees the token.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors
from ..requests import MediaRef
from . import _http

NAME = "fal"
STORAGE_TYPE = "fal-cdn-v3"
MULTIPART_THRESHOLD = 100 * 1024 * 1024  # fal's client: larger files go in parts
PART_BYTES = 10 * 1024 * 1024
UPLOAD_TIMEOUT = httpx.Timeout(60.0, write=600.0)
_READ_CHUNK = 1024 * 1024


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Token(_Wire):
    token: str
    token_type: str = "Bearer"
    base_url: str


class _Uploaded(_Wire):
    access_url: str


class _Multipart(_Wire):
    access_url: str
    uploadId: str  # fal's field name


def describe_error(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return None


class FalStorage:
    """Uploads for one request: the token is fetched on the first local file and reused."""

    def __init__(
        self, client: httpx.AsyncClient, storage_url: str, key_headers: dict[str, str], secrets: tuple[str, ...]
    ) -> None:
        self.client = client
        self.storage_url = storage_url.rstrip("/")
        self.key_headers = key_headers
        self.secrets = secrets
        self._token: _Token | None = None

    async def url(self, ref: MediaRef) -> str:
        """A URL fal can fetch: the URL itself, or the storage link of an uploaded local file."""
        if ref.kind == "url":
            return ref.value
        path = Path(ref.value)
        try:
            if not path.is_file():
                raise errors.InvalidInputFile(f"the input file {path} no longer exists; it cannot be uploaded to fal.")
            token = await self._get_token()
            mime = ref.mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if path.stat().st_size > MULTIPART_THRESHOLD:
                return await self._multipart(path, mime, token)
            return await self._single(path, mime, token)
        except errors.ProviderError as exc:
            # Nothing was queued yet, so nothing can have started or been billed.
            exc.message = f"uploading {path.name} to fal's storage failed: {exc.message}"
            exc.args = (exc.message,)
            exc.may_have_accepted = False
            raise

    async def _get_token(self) -> _Token:
        if self._token is None:
            data = await self._call(
                "POST",
                f"{self.storage_url}/storage/auth/token",
                self.key_headers,
                params={"storage_type": STORAGE_TYPE},
                json={},
            )
            try:
                self._token = _Token.model_validate(data)
            except ValidationError:
                raise errors.ProviderProtocol(
                    f"fal's storage answered without a token and base_url: {self._shown(data)}"
                ) from None
            self.secrets = (*self.secrets, self._token.token)
        return self._token

    def _token_headers(self, token: _Token, **extra: str) -> dict[str, str]:
        return {"Authorization": f"{token.token_type} {token.token}", **extra}

    async def _single(self, path: Path, mime: str, token: _Token) -> str:
        size = path.stat().st_size
        headers = self._token_headers(
            token, **{"Content-Type": mime, "Content-Length": str(size), "X-Fal-File-Name": _header_name(path)}
        )
        data = await self._call(
            "POST",
            f"{token.base_url.rstrip('/')}/files/upload",
            headers,
            content=_chunks(path, 0, size),
            timeout=UPLOAD_TIMEOUT,
        )
        return self._parse(_Uploaded, data, "an access_url").access_url

    async def _multipart(self, path: Path, mime: str, token: _Token) -> str:
        headers = self._token_headers(token, **{"Content-Type": mime, "X-Fal-File-Name": _header_name(path)})
        data = await self._call("POST", f"{token.base_url.rstrip('/')}/files/upload/multipart", headers)
        started = self._parse(_Multipart, data, "an access_url and uploadId")
        root = f"{started.access_url}/multipart/{started.uploadId}"
        size, parts = path.stat().st_size, []
        for number, offset in enumerate(range(0, size, PART_BYTES), start=1):
            length = min(PART_BYTES, size - offset)
            part_headers = self._token_headers(
                token, **{"Content-Type": mime, "Content-Length": str(length), "Accept-Encoding": "identity"}
            )
            etag = await self._put_part(f"{root}/{number}", part_headers, path, offset, length)
            parts.append({"partNumber": number, "etag": etag})
        await self._call("POST", f"{root}/complete", self._token_headers(token), json={"parts": parts})
        return started.access_url

    async def _put_part(self, url: str, headers: dict[str, str], path: Path, offset: int, length: int) -> str:
        try:
            response = await self.client.put(
                url, headers=headers, content=_chunks(path, offset, length), timeout=UPLOAD_TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise errors.ProviderUnavailable(
                f"a part upload to fal's storage failed: {type(exc).__name__}", may_have_accepted=False
            ) from None
        if response.status_code >= 400:
            raise _http.error_for_status(NAME, response, submit=False, describe=describe_error, secrets=self.secrets)
        etag = response.headers.get("etag")
        if not etag:
            raise errors.ProviderProtocol("fal's storage answered a part upload without an ETag.")
        return etag

    async def _call(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
        return await _http.request(
            self.client, NAME, method, url, describe=describe_error, secrets=self.secrets, headers=headers, **kwargs
        )

    def _parse(self, model: type[_Wire], data: Any, what: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError:
            raise errors.ProviderProtocol(f"fal's upload host answered without {what}: {self._shown(data)}") from None

    def _shown(self, data: Any) -> str:
        return errors.redact(str(data)[:160], self.secrets)


def _header_name(path: Path) -> str:
    """The file name as a header value (headers are Latin-1; other names are percent-encoded)."""
    return path.name if path.name.isascii() else quote(path.name, safe="._-")


async def _chunks(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of the file from ``offset``, read in a worker thread (memory stays flat)."""
    handle = await anyio.open_file(path, "rb")
    async with handle:
        await handle.seek(offset)
        left = length
        while left > 0:
            chunk = await handle.read(min(_READ_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk

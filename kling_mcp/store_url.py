"""``KLING_MCP_STORE_URL``: parsed and checked at start-up, and never shown with its password.

Unset means the embedded diskcache store under ``KLING_MCP_DATA_DIR``. A ``postgresql://`` (or
``postgres://``) URL selects the PostgreSQL backend: ``postgresql://user:password@host:port/dbname``,
libpq query parameters allowed (``?sslmode=require``, ``?host=/run/postgresql`` for a unix socket).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from . import errors

ENV = "KLING_MCP_STORE_URL"
SCHEMES = ("postgresql", "postgres")
_EXAMPLE = "postgresql://kling:PASSWORD@db.internal:5432/kling"


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also when the URL does not parse)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
        parts = None
    if parts is None:
        head, sep, tail = url.rpartition("@")
        if not sep:
            return url
        scheme, _, userinfo = head.partition("://")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}:***@{tail}"
    if not password:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") and quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def secrets_of(url: str | None) -> tuple[str, ...]:
    """The URL's password as written and percent-decoded: what must never be shown."""
    if not url:
        return ()
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple(dict.fromkeys((password, unquote(password))))


def parse(raw: str | None) -> str | None:
    """The store URL to use (``None``: diskcache), or an error naming ``KLING_MCP_STORE_URL``."""
    url = (raw or "").strip()
    if not url:
        return None

    def bad(problem: str) -> errors.InvalidRequest:
        return errors.InvalidRequest(
            f"{ENV}={redacted(url)} {problem}",
            hint=f"Set {ENV} to a URL like {_EXAMPLE}, or unset it for the embedded store.",
        )

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"is not a valid URL ({exc}).") from None
    if parts.scheme not in SCHEMES:
        raise bad(f"has scheme {parts.scheme or '(none)'!r}; only postgresql:// is supported.")
    host_param = parse_qs(parts.query).get("host")
    if not parts.hostname and not host_param:
        raise bad("names no host.")
    if port is not None and not 0 < port < 65536:
        raise bad(f"has port {port}, outside 1-65535.")
    if not parts.path.strip("/"):
        raise bad("names no database (the path after the host, e.g. /kling).")
    return url

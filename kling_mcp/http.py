"""Streamable HTTP transport: loopback by default, DNS-rebinding protection, optional bearer token.

Binding a non-loopback address without ``KLING_MCP_HTTP_TOKEN`` is refused: the server can spend
money on the operator's provider accounts, so it must not be reachable unauthenticated.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import sys
from typing import Any

log = logging.getLogger("kling_mcp.http")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = b'{"error":"unauthorized","message":"send Authorization: Bearer <KLING_MCP_HTTP_TOKEN>"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def build_app(server: Any, settings: Any, host: str, *, stateless: bool = False) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings

    if is_loopback(host):
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    else:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    # stateless: no Mcp-Session-Id, so any replica answers any request of a 2025-11-25-era client (no server push).
    app = server.streamable_http_app(host=host, transport_security=security, stateless_http=stateless)
    if settings.http_token:
        app = BearerAuth(app, settings.http_token)
    return app


def run_http(server: Any, settings: Any, *, host: str, port: int, stateless: bool = False) -> int:
    if not is_loopback(host) and not settings.http_token:
        print(
            f"kling-mcp: refusing to bind {host}: set KLING_MCP_HTTP_TOKEN to require a bearer token on a "
            "non-loopback address, or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    app = build_app(server, settings, host, stateless=stateless)
    log.info("serving MCP over streamable HTTP at http://%s:%d/mcp", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
    return 0

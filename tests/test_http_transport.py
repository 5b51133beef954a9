"""The streamable HTTP transport as a real ``python -m kling_mcp serve --transport http`` subprocess:
it binds 127.0.0.1 by default, rejects foreign Host (421) and Origin (403) headers (DNS-rebinding
protection), requires ``Authorization: Bearer $KLING_MCP_HTTP_TOKEN`` when that is set, and refuses
to bind a non-loopback address without a token.

No test sends traffic anywhere but 127.0.0.1, and none lets the server bind a non-loopback address:
the refusal is checked in-process with ``uvicorn.run`` replaced.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from kling_mcp import cli
from kling_mcp.http import BearerAuth

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "http-token-7c1e2d9a4b"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "http-test", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class HttpServer:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir: Path, token: str | None) -> Iterator[HttpServer]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env["KLING_MCP_DATA_DIR"] = str(data_dir)
    if token:
        env["KLING_MCP_HTTP_TOKEN"] = token
    port = _free_port()
    # No --host: the default must be loopback.
    proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve", "--transport", "http", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server did not start listening"
                time.sleep(0.05)
        yield HttpServer(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    yield from _start(tmp_path_factory.mktemp("http-open"), token=None)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    yield from _start(tmp_path_factory.mktemp("http-token"), token=TOKEN)


def post(server: HttpServer, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.post(server.url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) that listen on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:          # 0A: LISTEN
                found.add(address)
    return found


# --- default: loopback, DNS-rebinding protection -------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_default_host_is_loopback_and_serves_mcp(open_server: HttpServer, mode: str) -> None:
    async with Client(open_server.url, mode=mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        estimate = await client.call_tool("estimate_cost", {"prompt": "a red kite", "duration": 5})
    assert {"generate_video", "check_job", "estimate_cost"} <= tools
    assert not estimate.is_error and estimate.structured_content["recommended"] == "local"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the Linux socket table")
def test_the_default_bind_listens_on_127_0_0_1_only(open_server: HttpServer) -> None:
    assert listening_addresses(open_server.port) == {"0100007F"}        # 127.0.0.1, not 0.0.0.0 or ::


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
def test_loopback_host_headers_are_accepted(open_server: HttpServer, host: str) -> None:
    response = post(open_server, Host=host.format(port=open_server.port),
                    Origin=f"http://{host.format(port=open_server.port)}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "192.168.1.20:{port}"])
def test_a_foreign_host_header_is_rejected_with_421(open_server: HttpServer, host: str) -> None:
    response = post(open_server, Host=host.format(port=open_server.port))
    assert response.status_code == 421, response.text


@pytest.mark.parametrize("origin", ["http://evil.example", "https://attacker.test:443", "null"])
def test_a_foreign_origin_is_rejected_with_403(open_server: HttpServer, origin: str) -> None:
    response = post(open_server, Origin=origin)
    assert response.status_code == 403, response.text


# --- bearer token --------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong-token", f"Bearer {TOKEN}x",
                                           f"Basic {TOKEN}", TOKEN, f"bearer{TOKEN}"])
def test_without_the_right_bearer_token_every_request_is_401(token_server: HttpServer,
                                                             authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = post(token_server, **headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text and "KLING_MCP_HTTP_TOKEN" in response.text


def test_the_token_does_not_switch_off_dns_rebinding_protection(token_server: HttpServer) -> None:
    assert post(token_server, Authorization=f"Bearer {TOKEN}", Host="evil.example").status_code == 421
    assert post(token_server, Authorization=f"Bearer {TOKEN}", Origin="http://evil.example").status_code == 403


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_right_bearer_token_works_with_an_mcp_client(token_server: HttpServer, mode: str) -> None:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with Client(streamable_http_client(token_server.url, http_client=http), mode=mode) as client:
            listed = await client.call_tool("list_jobs", {})
    assert not listed.is_error and listed.structured_content["count"] == 0


# --- refusing a non-loopback bind without a token (in-process: nothing is ever bound) ------------


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Replace ``uvicorn.run`` so a test can see what would be served without binding anything."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    for key in list(os.environ):
        if key.endswith("_API_KEY") or key.startswith("KLING_MCP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KLING_MCP_DATA_DIR", str(tmp_path / "data"))
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "my-laptop.local"])
def test_binding_a_non_loopback_address_without_a_token_is_refused(
        no_uvicorn: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], host: str) -> None:
    code = cli.main(["serve", "--transport", "http", "--host", host, "--port", "8000"])
    assert code != 0 and no_uvicorn == []
    err = capsys.readouterr().err
    assert "KLING_MCP_HTTP_TOKEN" in err and host in err


def test_a_non_loopback_address_with_a_token_is_served_behind_bearer_auth(
        no_uvicorn: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_MCP_HTTP_TOKEN", TOKEN)
    assert cli.main(["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]) == 0
    (call,) = no_uvicorn
    assert call["host"] == "0.0.0.0" and isinstance(call["app"], BearerAuth)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_addresses_need_no_token(no_uvicorn: list[dict[str, Any]], host: str) -> None:
    assert cli.main(["serve", "--transport", "http", "--host", host, "--port", "8000"]) == 0
    (call,) = no_uvicorn
    assert call["host"] == host and not isinstance(call["app"], BearerAuth)

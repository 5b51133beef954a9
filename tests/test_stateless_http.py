"""Several replicas behind a load balancer without sticky sessions: ``serve --transport http
--stateless-http`` issues no ``Mcp-Session-Id``, so a 2025-11-25-era client's requests may land on any
replica; without it, a session lives in the replica that created it (what sticky sessions are for).
Shared request-state keys are read from ``KLING_MCP_REQUEST_STATE_KEYS`` and kept secret."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.replica_harness import Replica
from kling_mcp import errors
from kling_mcp.config import Settings

pytestmark = pytest.mark.slow

LEGACY = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "lb-test", "version": "0"}}}
LIST_JOBS = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_jobs", "arguments": {}}}


def _pair(tmp_path: Path, *flags: str) -> list[Replica]:
    env = {"KLING_MCP_DATA_DIR": str(tmp_path / "data")}
    replicas = [Replica(f"r{n}", env, tmp_path, extra_args=list(flags)) for n in range(2)]
    for replica in replicas:
        replica.wait_listening()
    return replicas


def _handshake_on_a_then_call_on_b(a: Replica, b: Replica) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        first = http.post(a.url, json=INITIALIZE, headers=HEADERS)
        assert first.status_code == 200, first.text
        session = first.headers.get("mcp-session-id")
        headers = {**HEADERS, "MCP-Protocol-Version": LEGACY, **({"Mcp-Session-Id": session} if session else {})}
        http.post(a.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        return http.post(b.url, json=LIST_JOBS, headers=headers)


def test_stateless_http_lets_any_replica_answer_a_legacy_client(tmp_path: Path) -> None:
    replicas = _pair(tmp_path, "--stateless-http")
    try:
        answer = _handshake_on_a_then_call_on_b(*replicas)
    finally:
        for replica in replicas:
            replica.close()
    assert answer.status_code == 200, answer.text
    assert '"count"' in answer.text and "isError\":true" not in answer.text.replace(" ", "")


def test_with_sessions_another_replica_does_not_know_the_session(tmp_path: Path) -> None:
    replicas = _pair(tmp_path)
    try:
        answer = _handshake_on_a_then_call_on_b(*replicas)
    finally:
        for replica in replicas:
            replica.close()
    assert answer.status_code == 404  # hence sticky sessions on Mcp-Session-Id, or --stateless-http


def test_request_state_keys_are_checked_and_secret(tmp_path: Path) -> None:
    key = "k" * 40
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path), "KLING_MCP_REQUEST_STATE_KEYS": f"{key}, {'j' * 32}"})
    assert settings.request_state_keys == (key, "j" * 32)
    assert key in settings.secrets() and key not in repr(settings)
    with pytest.raises(errors.InvalidRequest, match="KLING_MCP_REQUEST_STATE_KEYS"):
        Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path), "KLING_MCP_REQUEST_STATE_KEYS": "short"})
    from kling_mcp.server import create_server

    create_server(settings)  # the SDK accepts the ring

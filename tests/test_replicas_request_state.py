"""Confirmation by elicitation behind a load balancer that sends each request to the next replica (no
stickiness): the 2026-07-28 client's retry that answers the question carries request state sealed by the
replica that asked, and lands on the other one. With one ``KLING_MCP_REQUEST_STATE_KEYS`` on both, the
other replica opens it and submits once; with each replica's own throwaway key, it cannot."""

from __future__ import annotations

import itertools
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from benchmarks.replica_harness import Emulator, replica_env, start_replicas
from tests.emulators._server import serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TEN_S_PRO = {"prompt": "A heron lifts off a misty lake", "provider": "runware", "duration": 10, "tier": "pro",
             "wait_seconds": 0}


class RoundRobin:
    """An ASGI reverse proxy: request n goes to upstream n % len(upstreams); remembers who got what."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self._next = itertools.count()
        self.routed: list[tuple[int, dict[str, Any]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        index = next(self._next) % len(self.upstreams)
        try:
            self.routed.append((index, json.loads(body) if body else {}))
        except ValueError:
            self.routed.append((index, {}))
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length")]
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.request(scope["method"], self.upstreams[index], content=body,
                                        headers=[(k.decode(), v.decode()) for k, v in headers])
        out = [(k.encode(), v.encode()) for k, v in answer.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": answer.content})


class Accept:
    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, _context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked += 1
        return ElicitResult(action="accept", content={"submit": True})


async def _confirm_through_round_robin(pg_url: str, tmp_path: Path, keys: str | None) -> tuple[Any, RoundRobin, Any]:
    emulator = Emulator(processing_polls=1)
    try:
        data = tmp_path / "data"
        data.mkdir()
        env = replica_env(emulator, data, pg_url, KLING_MCP_CONFIRM_ABOVE_USD="0.5",
                          **({"KLING_MCP_REQUEST_STATE_KEYS": keys} if keys else {}))
        replicas = start_replicas(2, env, tmp_path)
        try:
            proxy = RoundRobin([r.url for r in replicas])
            with serve(proxy) as base:
                user = Accept()
                outcome: Any
                try:
                    async with Client(f"{base}/mcp", elicitation_callback=user) as client:
                        outcome = await client.call_tool("generate_video", TEN_S_PRO)
                except Exception as exc:  # the SDK raises the server's -32602 for a retry it refused
                    outcome = exc
            assert user.asked == 1
            return outcome, proxy, emulator.stats()
        finally:
            for replica in replicas:
                replica.close()
    finally:
        emulator.close()


def _calls(proxy: RoundRobin) -> list[tuple[int, bool]]:
    """(replica, carries answers) of every tools/call that went through the proxy."""
    return [(index, "inputResponses" in (body.get("params") or {}))
            for index, body in proxy.routed if body.get("method") == "tools/call"]


async def test_shared_request_state_keys_let_another_replica_take_the_answer(pg_url, tmp_path) -> None:
    result, proxy, stats = await _confirm_through_round_robin(pg_url, tmp_path, secrets.token_hex(32))
    (asked_on, _), (answered_on, carries) = _calls(proxy)
    assert carries and asked_on != answered_on  # the question and the answer met different replicas
    assert not result.is_error, result.content
    assert sum(s["submissions"] for s in stats.values()) == 1


async def test_without_shared_keys_the_other_replica_cannot_open_the_answer(pg_url, tmp_path) -> None:
    outcome, proxy, stats = await _confirm_through_round_robin(pg_url, tmp_path, None)
    (asked_on, _), (answered_on, _) = _calls(proxy)
    assert asked_on != answered_on
    assert isinstance(outcome, BaseException) and "Invalid or expired requestState" in repr(outcome), outcome
    assert sum(s["submissions"] for s in stats.values()) == 0

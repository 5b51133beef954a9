"""Provider faults, end to end against the loopback emulators: 429 with Retry-After, 5xx, timeouts,
dropped connections, malformed JSON, unknown statuses, truncated bodies, expired result links and
rejected keys, each ending in a bounded number of requests and a clear result; plus failover
(``provider="auto"``) only when the first provider cannot have taken the job.

Most tests drive the real MCP server in memory (``Client(create_server(settings))``). Timeouts need a
short HTTP client timeout, which the server does not expose, so those tests drive the
:class:`VideoService` and its runner directly with their own ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from kling_mcp import errors
from kling_mcp.config import Settings
from kling_mcp.requests import GenerateRequest
from kling_mcp.server import create_server
from kling_mcp.service import VideoService
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.aimlapi import AimlState
from tests.emulators.aimlapi import create_app as aimlapi_app
from tests.emulators.evolink import EvolinkState
from tests.emulators.evolink import create_app as evolink_app
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app
from tests.emulators.runware import RunwareState
from tests.emulators.runware import create_app as runware_app

pytestmark = pytest.mark.anyio

KEYS = {"runpod": "rp-faults-key", "runware": "rw-faults-key", "aimlapi": "aiml-faults-key",
        "evolink": "evo-faults-key"}
ENV_KEYS = {"runpod": "RUNPOD_API_KEY", "runware": "RUNWARE_API_KEY", "aimlapi": "AIML_API_KEY",
            "evolink": "EVOLINK_API_KEY"}
POLL_S, MAX_POLL_S = 0.05, 0.2
SLACK_S = 0.25                      # scheduling slack on a loaded 2-core machine
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
Match = Callable[[Scope], bool]


# --- ASGI wrappers: timing, delays, dropped connections, re-signed links --------------------------


@dataclass
class Seen:
    at: float
    method: str
    path: str
    query: str


@dataclass
class Wire:
    """Wraps an emulator: records when each request arrived, and injects faults the emulators lack.

    ``delay(match, seconds, times)``: the emulator handles matching requests, but answers only after
    ``seconds`` (a client timeout then hits a request the provider did act on).
    ``drop(match, times)``: start an answer, then break the connection mid-body.
    ``resign_links``: every ``video_url`` in a JSON answer gets a new ``?sig=N``; ``expired_sigs``
    answer 403 as an expired signed URL would.
    """

    app: ASGIApp
    seen: list[Seen] = field(default_factory=list)
    delays: list[tuple[Match, float, list[int]]] = field(default_factory=list)
    drops: list[tuple[Match, list[int]]] = field(default_factory=list)
    resign_links: bool = False
    expired_sigs: set[str] = field(default_factory=set)
    signed: int = 0

    def delay(self, match: Match, seconds: float, times: int = 1) -> None:
        self.delays.append((match, seconds, [times]))

    def drop(self, match: Match, times: int = 1) -> None:
        self.drops.append((match, [times]))

    def times(self, path_part: str) -> list[float]:
        return [s.at for s in self.seen if path_part in s.path]

    @staticmethod
    def _take(rules: list[Any], scope: Scope) -> Any:
        for rule in rules:
            match, left = rule[0], rule[-1]
            if left[0] > 0 and match(scope):
                left[0] -= 1
                return rule
        return None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"").decode()
        self.seen.append(Seen(time.monotonic(), scope["method"], scope["path"], query))
        if scope["path"].startswith("/files/") and any(f"sig={s}" in query for s in self.expired_sigs):
            return await _respond(send, 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired"
                                              b"</Message></Error>", b"application/xml")
        if self._take(self.drops, scope) is not None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"200")]})
            await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
            raise ConnectionResetError("emulated connection reset")
        delayed = self._take(self.delays, scope)
        if delayed is not None:
            send = _late(send, delayed[1])             # the emulator acts on the request; its answer is late
        if not self.resign_links:
            return await self.app(scope, receive, send)
        return await self._resigned(scope, receive, send)

    async def _resigned(self, scope: Scope, receive: Any, send: Any) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if b'"video_url"' in body:
                data = json.loads(body)
                self.signed += 1
                data["output"]["video_url"] += f"?sig={self.signed}"
                body = json.dumps(data).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


def _late(send: Any, seconds: float) -> Any:
    async def late_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await asyncio.sleep(seconds)
        await send(message)
    return late_send


async def _respond(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def poll_of(suffix: str) -> Match:
    return lambda scope: scope["method"] == "GET" and suffix in scope["path"]


def is_post(path_suffix: str = "") -> Match:
    return lambda scope: scope["method"] == "POST" and scope["path"].endswith(path_suffix)


# --- emulators -----------------------------------------------------------------------------------


@dataclass
class Emu:
    name: str
    base: str
    state: Any
    wire: Wire

    def env(self) -> dict[str, str]:
        url = {"runpod": f"{self.base}/v2", "runware": f"{self.base}/v1"}.get(self.name, self.base)
        env = {ENV_KEYS[self.name]: KEYS[self.name], f"KLING_MCP_{self.name.upper()}_BASE_URL": url}
        if self.name == "evolink":
            env["KLING_MCP_EVOLINK_FILES_URL"] = self.base
        return env

    def image_url(self) -> str:
        name = self.state.files.add(png_bytes(96, 64, (30, 120, 200)), suffix=".png", content_type="image/png")
        return f"{self.base}/files/{name}"


FACTORIES: dict[str, Callable[[], tuple[Any, ASGIApp]]] = {
    "runpod": lambda: (s := RunpodState(api_key=KEYS["runpod"]), runpod_app(s)),
    "runware": lambda: (s := RunwareState(api_keys={KEYS["runware"]}, processing_polls=1), runware_app(s)),
    "aimlapi": lambda: (s := AimlState(api_key=KEYS["aimlapi"]), aimlapi_app(s)),
    "evolink": lambda: (s := EvolinkState(api_key=KEYS["evolink"]), evolink_app(s)),
}


@pytest.fixture
def emulator() -> Iterator[Callable[[str], Emu]]:
    """``emulator("runpod")`` starts a fresh emulator (behind a :class:`Wire`) for this test."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def start(name: str) -> Emu:
            state, app = FACTORIES[name]()
            wire = Wire(app)
            return Emu(name, stack.enter_context(serve(wire)), state, wire)
        yield start


def settings(tmp_path: Path, *emus: Emu, **env: str) -> Settings:
    values = {"KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": str(POLL_S),
              "KLING_MCP_POLL_MAX_INTERVAL_S": str(MAX_POLL_S)}
    for emu in emus:
        values.update(emu.env())
    values.update(env)
    return Settings.from_env(values)


def closed_port() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def call(s: Settings, tool: str, args: dict[str, Any]) -> Any:
    async with Client(create_server(s)) as client:
        return await client.call_tool(tool, args)


async def generate(s: Settings, **args: Any) -> dict[str, Any]:
    result = await call(s, "generate_video", {"wait_seconds": 20, **args})
    assert not result.is_error, result.content
    return result.structured_content


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def runpod_args(emu: Emu, **extra: Any) -> dict[str, Any]:
    return {"prompt": "a kite over the dunes", "provider": "runpod", "reference_images": [emu.image_url()],
            "duration": 3, **extra}


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


# --- transient poll faults: bounded backoff, then success -----------------------------------------


async def test_poll_429_waits_at_least_retry_after_before_the_next_poll(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.fail_next_polls(1, 429, retry_after="1")
    view = await generate(settings(tmp_path, runpod), **runpod_args(runpod))
    assert view["status"] == "succeeded", view
    polls = runpod.wire.times("/status/" + next(iter(runpod.state.jobs)))
    assert gaps(polls)[0] >= 1.0                          # the 429 said Retry-After: 1
    assert all(g <= MAX_POLL_S + SLACK_S for g in gaps(polls)[1:])


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_polls_back_off_within_the_max_interval_then_succeed(emulator, tmp_path, status):
    runpod = emulator("runpod")
    runpod.state.fail_next_polls(4, status)
    started = time.monotonic()
    view = await generate(settings(tmp_path, runpod), **runpod_args(runpod))
    assert view["status"] == "succeeded" and view["error"] is None, view
    polls = runpod.wire.times("/status/")
    assert len(polls) == 4 + 2                            # four failures, then in progress, completed
    assert all(g <= MAX_POLL_S + SLACK_S for g in gaps(polls)), gaps(polls)   # bounded exponential backoff
    assert time.monotonic() - started < 6 * (MAX_POLL_S + SLACK_S) + 2


async def test_consecutive_poll_failures_fail_the_job_as_retryable_after_a_bounded_number(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.fail_next_polls(50, 503)
    s = settings(tmp_path, runpod)
    started = time.monotonic()
    view = await generate(s, **runpod_args(runpod))
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "provider_unavailable" and view["error"]["retryable"] is True
    assert f"{s.max_consecutive_errors} consecutive failures" in view["error"]["message"]
    assert len(runpod.wire.times("/status/")) == s.max_consecutive_errors
    assert time.monotonic() - started < s.max_consecutive_errors * (MAX_POLL_S + SLACK_S) + 2
    assert "generated again" in view["next_action"]


@pytest.mark.parametrize("fault", ["malformed-json", "dropped-connection"])
async def test_broken_poll_answers_are_retried_then_succeed(emulator, tmp_path, fault):
    runpod = emulator("runpod")
    if fault == "malformed-json":
        runpod.state.malformed_polls = 2
    else:
        runpod.wire.drop(poll_of("/status/"), times=2)
    view = await generate(settings(tmp_path, runpod), **runpod_args(runpod))
    assert view["status"] == "succeeded", view
    assert len(runpod.wire.times("/status/")) == 2 + 2
    assert len(runpod.state.submissions()) == 1


async def test_an_unknown_status_string_fails_the_job_instead_of_polling_forever(emulator, tmp_path):
    aiml = emulator("aimlapi")
    aiml.state.outcome, aiml.state.unknown_status = "unknown_status", "paused-for-maintenance"
    view = await generate(settings(tmp_path, aiml), prompt="the sea at night", provider="aimlapi",
                          first_frame=aiml.image_url())
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "provider_protocol"
    assert "paused-for-maintenance" in view["error"]["message"]
    assert len(aiml.wire.times("/video/generations")) <= 4          # submit + 2 steps + the odd status


# --- timeouts (service level: a short client timeout) ---------------------------------------------


@asynccontextmanager
async def service(s: Settings, timeout_s: float) -> AsyncIterator[VideoService]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client, anyio.create_task_group() as tg:
        svc = VideoService(s, client)
        await svc.runner.start(tg)
        try:
            yield svc
        finally:
            tg.cancel_scope.cancel()
            await svc.aclose()


async def test_poll_timeouts_are_retried_then_succeed(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.wire.delay(poll_of("/status/"), 1.0, times=2)
    async with service(settings(tmp_path, runpod), timeout_s=0.4) as svc:
        job, _ = await svc.generate(GenerateRequest(**runpod_args(runpod, wait_seconds=20)))
    assert job.status.value == "succeeded", job
    # The two late answers still moved the emulated job on (in progress, completed): one more poll sees it.
    assert len(runpod.wire.times("/status/")) == 3 and len(runpod.state.submissions()) == 1


async def test_poll_timeouts_every_time_fail_the_job_as_retryable(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.wire.delay(poll_of("/status/"), 0.6, times=100)
    s = settings(tmp_path, runpod)
    async with service(s, timeout_s=0.2) as svc:
        job, _ = await svc.generate(GenerateRequest(**runpod_args(runpod, wait_seconds=20)))
    assert job.status.value == "failed" and job.error is not None
    assert job.error.retryable and "did not answer in time" in job.error.message
    assert len(runpod.wire.times("/status/")) == s.max_consecutive_errors


# --- downloads: truncated bodies and expired links ------------------------------------------------


async def test_a_truncated_download_resumes_with_range(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.files.truncate_next = 1
    view = await generate(settings(tmp_path, runpod), **runpod_args(runpod))
    assert view["status"] == "succeeded", view
    (job,) = runpod.state.jobs.values()
    name = job.output["video_url"].rsplit("/", 1)[1]
    assert Path(view["videos"][0]["path"]).read_bytes() == runpod.state.files.files[name].data
    assert runpod.state.files.downloads[name] == 2
    assert len(runpod.state.files.ranges) == 1 and not runpod.state.files.ranges[0].startswith("bytes=0-")


async def test_an_expired_result_link_is_replaced_by_polling_for_a_fresh_one(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.wire.resign_links = True
    runpod.wire.expired_sigs = {"1"}                      # the first link handed out is already expired
    view = await generate(settings(tmp_path, runpod), **runpod_args(runpod))
    assert view["status"] == "succeeded", view
    downloads = [s.query for s in runpod.wire.seen if s.path.startswith("/files/") and s.query]
    assert downloads == ["sig=1", "sig=2"]
    assert len(runpod.state.submissions()) == 1


async def test_a_link_that_stays_expired_fails_the_job_clearly_after_two_tries(emulator, tmp_path):
    runpod = emulator("runpod")
    runpod.state.files.expire_all = True
    view = await generate(settings(tmp_path, runpod), **runpod_args(runpod))
    assert view["status"] == "failed", view
    assert view["error"]["code"] == "download_failed"
    assert "expired" in view["error"]["message"] and view["error"]["hint"]
    (job,) = runpod.state.jobs.values()
    assert runpod.state.files.downloads[job.output["video_url"].rsplit("/", 1)[1]] == 2
    assert not list((tmp_path / "data" / "videos").rglob("*.mp4*"))   # nothing partial is left behind


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["runpod", "aimlapi", "runware", "evolink"])
async def test_a_rejected_key_at_submit_is_a_tool_error_naming_the_env_var(emulator, tmp_path, provider):
    emu = emulator(provider)
    s = settings(tmp_path, emu, **{ENV_KEYS[provider]: "wrong-key-123456"})
    args = {"runpod": runpod_args(emu), "runware": {"prompt": "a fox in snow", "duration": 5},
            "aimlapi": {"prompt": "a fox in snow", "first_frame": emu.image_url()},
            "evolink": {"prompt": "a fox in snow", "first_frame": emu.image_url()}}[provider]
    result = await call(s, "generate_video", {**args, "provider": provider, "wait_seconds": 5})
    assert result.is_error
    text = text_of(result)
    assert "[auth_failed]" in text and ENV_KEYS[provider] in text and "wrong-key-123456" not in text


@pytest.mark.parametrize("provider", ["runpod", "aimlapi"])
async def test_a_rejected_key_while_polling_fails_the_job_at_once_naming_the_env_var(emulator, tmp_path, provider):
    emu = emulator(provider)
    if provider == "runpod":
        emu.state.progression = ("IN_QUEUE",) * 3 + ("COMPLETED",)
        args = runpod_args(emu, wait_seconds=0)
    else:
        args = {"prompt": "a fox in snow", "provider": "aimlapi", "first_frame": emu.image_url(), "wait_seconds": 0}
    s = settings(tmp_path, emu)
    async with Client(create_server(s)) as client:
        submitted = await client.call_tool("generate_video", args)
        assert not submitted.is_error, submitted.content
        if provider == "runpod":
            emu.state.api_key = "rotated-key"
        else:
            emu.state.fail_next(401, on="poll", times=10)
        checked = await client.call_tool("check_job", {"job_id": submitted.structured_content["job_id"],
                                                       "wait_seconds": 10})
    view = checked.structured_content
    assert view["status"] == "failed" and view["error"]["code"] == "auth_failed", view
    assert view["error"]["retryable"] is False and ENV_KEYS[provider] in view["error"]["hint"]
    polls = [t for t in emu.wire.seen if t.method == "GET" and "/files/" not in t.path]
    assert len(polls) <= 2                                # no retry loop on a rejected key


# --- failover -------------------------------------------------------------------------------------


async def test_auto_fails_over_when_the_cheapest_provider_refuses_connections(emulator, tmp_path):
    runware, runpod = emulator("runware"), emulator("runpod")
    s = settings(tmp_path, runware, runpod, KLING_MCP_RUNWARE_BASE_URL=closed_port())
    args = {"prompt": "two robots play chess", "reference_images": [runpod.image_url()], "duration": 5}
    async with Client(create_server(s)) as client:
        estimate = await client.call_tool("estimate_cost", args)
        result = await client.call_tool("generate_video", {**args, "provider": "auto", "wait_seconds": 20})
    assert estimate.structured_content["recommended"] == "runware"
    view = result.structured_content
    assert not result.is_error and view["status"] == "succeeded", view
    assert view["provider"] == "runpod"
    assert "runware could not take the job" in view["note"] and "failed over to runpod" in view["note"]
    assert len(runpod.state.submissions()) == 1


async def test_auto_fails_over_when_the_cheapest_provider_answers_503_on_submit(emulator, tmp_path):
    evolink, aiml = emulator("evolink"), emulator("aimlapi")
    evolink.state.fail("submit", 503)
    s = settings(tmp_path, evolink, aiml)
    args = {"prompt": "a lantern floats away", "first_frame": evolink.image_url(), "duration": 5}
    async with Client(create_server(s)) as client:
        result = await client.call_tool("generate_video", {**args, "wait_seconds": 20})
    view = result.structured_content
    assert not result.is_error and view["status"] == "succeeded", view
    assert view["provider"] == "aimlapi" and "failed over to aimlapi" in view["note"]
    assert evolink.state.tasks == {} and len(aiml.state.generations) == 1


@pytest.mark.parametrize("status", [500, 502])
async def test_auto_never_fails_over_when_the_cheapest_provider_answers_500_or_502_on_submit(emulator, tmp_path, status):
    """A 500/502 after the request was sent leaves it unknown whether the job was queued (a gateway may have
    passed it on): it is never failed over, and the error says the job may be running and billed."""
    evolink, aiml = emulator("evolink"), emulator("aimlapi")
    evolink.state.fail("submit", status)
    s = settings(tmp_path, evolink, aiml)
    args = {"prompt": "a lantern floats away", "first_frame": evolink.image_url(), "duration": 5}
    async with Client(create_server(s)) as client:
        estimate = await client.call_tool("estimate_cost", args)
        result = await client.call_tool("generate_video", {**args, "wait_seconds": 20})
    assert estimate.structured_content["recommended"] == "evolink"
    assert result.is_error and "[interrupted]" in text_of(result) and "may or may not" in text_of(result)
    assert aiml.wire.seen == []


async def test_an_explicit_provider_never_fails_over(emulator, tmp_path):
    evolink, aiml = emulator("evolink"), emulator("aimlapi")
    evolink.state.fail("submit", 402)
    args = {"prompt": "a lantern floats away", "first_frame": evolink.image_url(), "provider": "evolink"}
    result = await call(settings(tmp_path, evolink, aiml), "generate_video", args)
    assert result.is_error and "[insufficient_credits]" in text_of(result)
    assert aiml.wire.seen == []


async def test_a_malformed_submit_answer_is_neither_resubmitted_nor_failed_over(emulator, tmp_path):
    evolink, aiml = emulator("evolink"), emulator("aimlapi")
    evolink.state.malformed["submit"] = 1
    args = {"prompt": "a lantern floats away", "first_frame": evolink.image_url()}
    result = await call(settings(tmp_path, evolink, aiml), "generate_video", args)
    assert result.is_error and "[interrupted]" in text_of(result)          # it may be running and billed
    assert len(evolink.state.tasks) == 1 and aiml.wire.seen == []


async def test_a_submit_timeout_after_sending_never_fails_over(emulator, tmp_path):
    runpod, aiml = emulator("runpod"), emulator("aimlapi")
    runpod.wire.delay(is_post("/run"), 1.0)
    args = {"prompt": "two robots play chess", "reference_images": [runpod.image_url()], "duration": 5}
    async with service(settings(tmp_path, runpod, aiml), timeout_s=0.4) as svc:
        assert svc.choose(await svc.build_spec(GenerateRequest(**args)), "auto")[0].provider == "runpod"
        with pytest.raises(errors.JobInterrupted):
            await svc.generate(GenerateRequest(**args, wait_seconds=0))
        (job,) = await svc.store.list_jobs()
    assert job.status.value == "failed" and job.error is not None and job.error.code == "interrupted"
    assert len(runpod.state.jobs) == 1 and aiml.wire.seen == []


async def test_a_connection_dropped_during_the_submit_answer_never_fails_over(emulator, tmp_path):
    runpod, aiml = emulator("runpod"), emulator("aimlapi")
    runpod.wire.drop(is_post("/run"))
    args = {"prompt": "two robots play chess", "reference_images": [runpod.image_url()], "duration": 5}
    result = await call(settings(tmp_path, runpod, aiml), "generate_video", {**args, "wait_seconds": 0})
    assert result.is_error and "[interrupted]" in text_of(result) and "may or may not" in text_of(result)
    assert aiml.wire.seen == []                               # the request may have started a billed job


async def test_a_submit_timeout_on_runware_is_tracked_by_its_task_uuid_not_failed_over(emulator, tmp_path):
    runware, runpod = emulator("runware"), emulator("runpod")
    runware.wire.delay(is_post("/v1"), 1.0)                   # the first POST is the videoInference task
    args = {"prompt": "two robots play chess", "reference_images": [runpod.image_url()], "duration": 5}
    async with service(settings(tmp_path, runware, runpod), timeout_s=0.4) as svc:
        job, note = await svc.generate(GenerateRequest(**args, wait_seconds=20))
    assert job.status.value == "succeeded" and job.provider == "runware", job
    assert job.note and "runware has the job" in job.note  # one poll settled it
    assert [t["taskUUID"] for t in runware.state.sent("videoInference")] == [job.job_id]
    assert runpod.wire.seen == []

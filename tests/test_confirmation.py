"""Confirmation before spending (``KLING_MCP_CONFIRM_ABOVE_USD``), through real MCP client sessions
against the Runware emulator, in both protocol eras, counting what reached the provider:

- a client with form elicitation is asked (quote, provider, basis); accepting submits once,
  declining or cancelling submits nothing and says so;
- a client without elicitation gets ``[confirmation_required]`` with the quote; the same call with
  ``confirm_cost_usd`` >= the quote goes ahead, a lower one is refused again;
- below the threshold nobody is asked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult

from kling_mcp import errors
from kling_mcp.config import Settings
from kling_mcp.server import create_server
from kling_mcp.spending import require_confirmation
from tests.emulators._server import serve
from tests.emulators.runware import RunwareState, create_app
from tests.test_budgets import runpod  # noqa: F401 - a fixture

pytestmark = pytest.mark.anyio

KEY = "rw-confirm-key-0042"
ERAS = ["auto", "legacy"]  # auto lands on 2026-07-28 (InputRequiredResult), legacy on 2025-11-25
TEN_S_PRO = {"prompt": "A heron lifts off a misty lake", "provider": "runware", "duration": 10, "tier": "pro",
             "wait_seconds": 0}
QUOTE = "1.12"  # Runware's published pro text-to-video price, $0.112/s x 10 s


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, Any]]:
    app = create_app()
    with serve(app) as base:
        yield base, app


@pytest.fixture
def emu(_server) -> tuple[str, RunwareState]:
    base, app = _server
    app.state.emulator = RunwareState(api_keys={KEY})
    return base, app.state.emulator


def server(base: str, tmp_path: Path, threshold: str = "0.5"):
    return create_server(Settings.from_env({
        "RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_CONFIRM_ABOVE_USD": threshold,
        "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"}))


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


class User:
    """An elicitation callback that answers with ``action`` (and the form's ``submit``) and remembers what it saw."""

    def __init__(self, action: str, submit: bool = True) -> None:
        self.action, self.submit = action, submit
        self.questions: list[ElicitRequestParams] = []

    async def __call__(self, _context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.questions.append(params)
        if self.action == "accept":
            return ElicitResult(action="accept", content={"submit": self.submit})
        return ElicitResult(action=self.action)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ERAS)
async def test_accepting_the_question_submits_once_and_the_question_names_quote_provider_and_basis(
        emu, tmp_path, mode):
    base, state = emu
    user = User("accept")
    async with Client(server(base, tmp_path), mode=mode, elicitation_callback=user) as client:
        result = await client.call_tool("generate_video", TEN_S_PRO)
    assert not result.is_error, text_of(result)
    assert result.structured_content["status"] in ("submitted", "running", "succeeded")
    assert result.structured_content["estimated_cost_usd"] == pytest.approx(1.12)
    assert len(state.sent("videoInference")) == 1
    (question,) = user.questions
    message = question.message
    assert f"${QUOTE}" in message and "runware" in message and "published" in message and "$0.50" in message
    assert question.requested_schema["properties"]["submit"]["type"] == "boolean"


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(("action", "submit", "said"), [("decline", True, "declined"),
                                                       ("cancel", True, "dismissed the question"),
                                                       ("accept", False, "declined")])
async def test_declining_or_cancelling_submits_nothing_and_says_so(emu, tmp_path, mode, action, submit, said):
    base, state = emu
    user = User(action, submit)
    async with Client(server(base, tmp_path), mode=mode, elicitation_callback=user) as client:
        result = await client.call_tool("generate_video", TEN_S_PRO)
        listed = await client.call_tool("list_jobs", {})
    assert result.is_error
    text = text_of(result)
    assert "[confirmation_declined]" in text and f"The user {said}" in text and f"${QUOTE}" in text
    assert "nothing was billed" in text
    assert len(user.questions) == 1
    assert state.sent("videoInference") == []
    assert listed.structured_content["count"] == 0


@pytest.mark.parametrize("mode", ERAS)
async def test_without_elicitation_the_quote_comes_back_and_confirm_cost_usd_must_cover_it(emu, tmp_path, mode):
    base, state = emu
    async with Client(server(base, tmp_path), mode=mode) as client:
        refused = await client.call_tool("generate_video", TEN_S_PRO)
        too_low = await client.call_tool("generate_video", {**TEN_S_PRO, "confirm_cost_usd": 1.11})
        assert state.sent("videoInference") == []
        confirmed = await client.call_tool("generate_video", {**TEN_S_PRO, "confirm_cost_usd": 1.12})
    assert refused.is_error and too_low.is_error
    text = text_of(refused)
    assert "[confirmation_required]" in text and f"${QUOTE}" in text and "runware" in text
    assert "published" in text and f"confirm_cost_usd={QUOTE}" in text
    assert "[confirmation_required]" in text_of(too_low) and "confirm_cost_usd=1.11 is below the quote" in text_of(
        too_low)
    assert not confirmed.is_error, text_of(confirmed)
    assert len(state.sent("videoInference")) == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_below_the_threshold_nobody_is_asked(emu, tmp_path, mode):
    base, state = emu
    user = User("decline")
    async with Client(server(base, tmp_path, threshold="2"), mode=mode, elicitation_callback=user) as client:
        result = await client.call_tool("generate_video", TEN_S_PRO)
    assert not result.is_error, text_of(result)
    assert user.questions == []
    assert len(state.sent("videoInference")) == 1


async def test_an_edit_is_asked_too_and_a_confirmed_call_needs_no_question(emu, tmp_path, video_file):
    base, state = emu
    user = User("decline")
    edit = {"prompt": "make it snow", "video": str(video_file), "provider": "runware", "wait_seconds": 0}
    async with Client(server(base, tmp_path, threshold="0.1"), elicitation_callback=user) as client:
        declined = await client.call_tool("edit_video", edit)
        quoted = float(user.questions[0].message.split("quoted at $")[1].split(" ")[0])
        confirmed = await client.call_tool("edit_video", {**edit, "confirm_cost_usd": quoted})
    assert declined.is_error and "[confirmation_declined]" in text_of(declined)
    assert len(user.questions) == 1  # the confirmed call was not asked again
    assert not confirmed.is_error, text_of(confirmed)
    assert len(state.sent("videoInference")) == 1


def test_the_guard_is_a_plain_function_for_any_total():
    require_confirmation(None, 99.0, None, provider="runware", basis="published", what="This board")
    require_confirmation(5.0, 4.99, None, provider="runware", basis="published", what="This board")
    require_confirmation(5.0, 7.5, 7.5, provider="runware", basis="published", what="This board")
    with pytest.raises(errors.ConfirmationRequired) as refused:
        require_confirmation(5.0, 7.5, 7.0, provider="runware", basis="published", what="This 3-shot storyboard")
    assert refused.value.details["cost_usd"] == 7.5
    assert str(refused.value).startswith("[confirmation_required] This 3-shot storyboard is quoted at $7.50")
    with pytest.raises(errors.ConfirmationRequired, match="has no price"):
        require_confirmation(5.0, None, None, provider="runware", basis="unknown", what="This edit")
    require_confirmation(5.0, None, 0.0, provider="runware", basis="unknown", what="This edit")


def test_the_command_line_refuses_with_the_flag_to_pass_and_goes_ahead_with_it(emu, tmp_path, monkeypatch, capsys):
    from kling_mcp.cli import main

    base, state = emu
    for name, value in {"RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
                        "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_CONFIRM_ABOVE_USD": "0.5"}.items():
        monkeypatch.setenv(name, value)
    argv = ["generate", "a heron", "--provider", "runware", "--duration", "10", "--tier", "pro", "--no-wait"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "[confirmation_required]" in err and f"--confirm-cost-usd={QUOTE}" in err
    assert main([*argv, "--confirm-cost-usd", "1.0"]) == 1
    assert state.sent("videoInference") == []
    assert main([*argv, "--confirm-cost-usd", QUOTE]) == 0
    assert len(state.sent("videoInference")) == 1


async def test_the_tool_descriptions_tell_the_model_about_the_threshold(emu, tmp_path):
    base, _ = emu
    async with Client(server(base, tmp_path)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "KLING_MCP_CONFIRM_ABOVE_USD" in tools["generate_video"].description
    assert "$0.5 " in tools["generate_video"].description
    assert "confirm_cost_usd work as in generate_video" in tools["edit_video"].description
    for name in ("generate_video", "edit_video"):
        assert tools[name].input_schema["properties"]["confirm_cost_usd"]["minimum"] == 0


# --- over streamable HTTP: the question crosses the real transport in both eras -------------------------

@pytest.fixture(scope="module")
def http_server(_server, tmp_path_factory) -> Iterator[str]:
    """``kling-mcp serve --transport http`` against the Runware emulator, threshold $0.50."""
    base, _ = _server
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env.update(RUNWARE_API_KEY=KEY, KLING_MCP_RUNWARE_BASE_URL=f"{base}/v1", KLING_MCP_CONFIRM_ABOVE_USD="0.5",
               KLING_MCP_DATA_DIR=str(tmp_path_factory.mktemp("http") / "data"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
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
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ERAS)
async def test_over_http_a_declined_question_sends_nothing_and_an_accepted_one_sends_once(emu, http_server, mode):
    _, state = emu
    no, yes = User("decline"), User("accept")
    async with Client(http_server, mode=mode, elicitation_callback=no) as client:
        declined = await client.call_tool("generate_video", {**TEN_S_PRO, "prompt": f"A heron, {mode}, declined"})
    assert declined.is_error and "[confirmation_declined]" in text_of(declined)
    assert state.sent("videoInference") == []
    async with Client(http_server, mode=mode, elicitation_callback=yes) as client:
        accepted = await client.call_tool("generate_video", {**TEN_S_PRO, "prompt": f"A heron, {mode}, accepted"})
    assert not accepted.is_error, text_of(accepted)
    assert len(state.sent("videoInference")) == 1
    assert len(no.questions) == len(yes.questions) == 1 and f"${QUOTE}" in yes.questions[0].message



async def test_estimate_cost_says_when_the_user_will_be_asked(emu, tmp_path):
    base, _ = emu
    args = {k: v for k, v in TEN_S_PRO.items() if k != "wait_seconds"}
    async with Client(server(base, tmp_path)) as client:
        above = (await client.call_tool("estimate_cost", args)).structured_content
        below = (await client.call_tool("estimate_cost", {**args, "duration": 5, "tier": "standard"})).structured_content
    assert "KLING_MCP_CONFIRM_ABOVE_USD ($0.50)" in above["next_action"]
    assert "confirm_cost_usd" in above["next_action"]
    assert "CONFIRM" not in below["next_action"]  # $0.42


@pytest.mark.parametrize("confirmed", ["runware's quote", "runpod's quote"])
async def test_failover_never_spends_more_than_the_user_confirmed(runpod, tmp_path, confirmed):
    from tests.test_budgets import job_args
    from tests.test_budgets import settings as runpod_settings

    base, state = runpod
    with socket.socket() as sock:  # runware (the cheapest) refuses connections: auto fails over to runpod
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s = runpod_settings(tmp_path, base, RUNWARE_API_KEY="rw-confirm-key", KLING_MCP_RUNWARE_BASE_URL=closed,
                        KLING_MCP_CONFIRM_ABOVE_USD="0.1")
    args = {**job_args(base, state, 5), "provider": "auto"}
    async with Client(create_server(s)) as client:
        quotes = {q["provider"]: q["cost_usd"] for q in
                  (await client.call_tool("estimate_cost", args)).structured_content["quotes"] if q["supported"]}
        agreed = quotes["runware"] if confirmed == "runware's quote" else quotes["runpod"]
        result = await client.call_tool("generate_video", {**args, "wait_seconds": 0, "confirm_cost_usd": agreed})
    assert quotes["runware"] < quotes["runpod"]
    if confirmed == "runware's quote":
        assert result.is_error and "[provider_unavailable]" in text_of(result)
        assert state.submissions() == []  # runpod's higher quote was never agreed to
    else:
        assert not result.is_error, text_of(result)
        assert result.structured_content["provider"] == "runpod" and len(state.submissions()) == 1


@pytest.mark.parametrize("keys", ["shared", "each its own"])
async def test_an_answer_given_to_one_replica_is_honoured_by_another_that_shares_the_request_state_key(
        emu, tmp_path, keys):
    """2026-07-28: the question comes from replica A, the repeated call with the answer lands on replica B.
    The asked quote rides in request_state, sealed by the SDK: B opens it only with A's key."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import ElicitResult, InputRequiredResult

    from kling_mcp.server_confirm import QUESTION_KEY

    base, state = emu
    key_a, key_b = "a" * 64, ("a" if keys == "shared" else "b") * 64

    def replica(key: str):
        return create_server(Settings.from_env({
            "RUNWARE_API_KEY": KEY, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
            "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_CONFIRM_ABOVE_USD": "0.5",
            "KLING_MCP_REQUEST_STATE_KEYS": key}))

    async with Client(replica(key_a), elicitation_callback=User("accept")) as a:
        asked = await a.session.call_tool("generate_video", TEN_S_PRO, allow_input_required=True)
    assert isinstance(asked, InputRequiredResult) and QUESTION_KEY in asked.input_requests
    answer = {QUESTION_KEY: ElicitResult(action="accept", content={"submit": True})}
    user_at_b = User("decline")  # were B to ask again, the call would be declined
    async with Client(replica(key_b), elicitation_callback=user_at_b) as b:
        if keys == "shared":
            done = await b.call_tool("generate_video", TEN_S_PRO, input_responses=answer,
                                     request_state=asked.request_state)
            assert not done.is_error, text_of(done)
            assert user_at_b.questions == [] and len(state.sent("videoInference")) == 1
        else:
            with pytest.raises(MCPError, match="requestState"):
                await b.call_tool("generate_video", TEN_S_PRO, input_responses=answer,
                                  request_state=asked.request_state)
            assert state.sent("videoInference") == []

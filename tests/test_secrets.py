"""No API key or HTTP token ever leaves the server: with distinctive fake keys for every provider,
successful jobs, jobs that fail, and providers that *echo the key back* in their error bodies, no tool
output, resource, prompt, log line (DEBUG, in-process and a subprocess's stderr), log notification or
stored byte under the data dir (the diskcache SQLite files included) contains any of them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import png_bytes
from tests.emulators._server import serve
from tests.emulators.aimlapi import AimlState
from tests.emulators.aimlapi import create_app as aimlapi_app
from tests.emulators.evolink import EvolinkState
from tests.emulators.evolink import create_app as evolink_app
from tests.emulators.fal import FalState
from tests.emulators.fal import create_app as fal_app
from tests.emulators.kling import KlingState
from tests.emulators.kling import create_app as kling_app
from tests.emulators.replicate import ReplicateState
from tests.emulators.replicate import create_app as replicate_app
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app
from tests.emulators.runware import RunwareState
from tests.emulators.runware import create_app as runware_app

pytestmark = pytest.mark.anyio

KEYS = {"runware": "rw-SECRET-9f8e7d6c5b4a", "runpod": "rp-SECRET-1a2b3c4d5e6f",
        "aimlapi": "aiml-SECRET-0f1e2d3c4b5a", "evolink": "evo-SECRET-5a4b3c2d1e0f",
        "fal": "falid-SECRET-7c6d5e:falsecret-SECRET-4f3a2b", "replicate": "r8_SECRET_9e8d7c6b5a4f"}
KLING_AK, KLING_SK = "klak-SECRET-3c4d5e6f7a8b", "klsk-SECRET-9b8a7f6e5d4c"
TOKEN = "tok-SECRET-77aa88bb99cc"
SECRETS = [*KEYS.values(), KLING_AK, KLING_SK, TOKEN]
JWTS: list[str] = []  # every token the server signed for Kling (collected by the Echo wrapper)
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


# --- emulators that can echo the caller's key back ------------------------------------------------


def _echo_bodies(provider: str, key: str, auth: str) -> dict[str, Any]:
    """Each provider's own error shape, carrying the key and the whole Authorization header."""
    said = f"the key {key} is not valid (you sent {auth!r}; api_key={key})"
    if provider == "kling":  # the token is a JWT: echo the access key inside it too
        claims = json.loads(base64.urlsafe_b64decode(key.split(".")[1] + "==")) if key.count(".") == 2 else {}
        return {"code": 1000, "message": f"{said}; access key {claims.get('iss')}", "request_id": "r-1"}
    return {"runpod": {"error": said},
            "runware": {"errors": [{"code": "invalidApiKey", "message": said, "parameter": "apiKey"}]},
            "aimlapi": {"message": said, "path": "/v2/video/generations", "statusCode": 401},
            "evolink": {"error": {"code": "unauthorized", "message": said, "type": "authentication_error"}},
            "fal": {"detail": said},
            "replicate": {"title": "Unauthenticated", "detail": said, "status": 401}}[provider]


@dataclass
class Echo:
    """While ``statuses`` holds entries, API requests (not file downloads) are answered with that
    HTTP status and a body that echoes the key the caller sent (and a header too, with ``header``)."""

    app: ASGIApp
    provider: str
    statuses: list[int] = field(default_factory=list)
    header: bool = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.provider == "kling" and not scope["path"].startswith("/files/"):
            JWTS.append(dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer "))
        if scope["type"] != "http" or scope["path"].startswith("/files/") or not self.statuses:
            return await self.app(scope, receive, send)
        status = self.statuses.pop(0)
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        key = auth.removeprefix("Bearer ").removeprefix("Key ").strip() or "(none)"
        body = json.dumps(_echo_bodies(self.provider, key, auth)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if self.header:
            headers.append((b"x-echo-key", key.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Emulators:
    base: dict[str, str]
    state: dict[str, Any]
    echo: dict[str, Echo]

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {"RUNWARE_API_KEY": KEYS["runware"], "RUNPOD_API_KEY": KEYS["runpod"],
               "AIML_API_KEY": KEYS["aimlapi"], "EVOLINK_API_KEY": KEYS["evolink"], "KLING_MCP_HTTP_TOKEN": TOKEN,
               "KLING_MCP_RUNWARE_BASE_URL": f"{self.base['runware']}/v1",
               "KLING_MCP_RUNPOD_BASE_URL": f"{self.base['runpod']}/v2",
               "KLING_MCP_AIMLAPI_BASE_URL": self.base["aimlapi"], "KLING_MCP_EVOLINK_BASE_URL": self.base["evolink"],
               "KLING_MCP_EVOLINK_FILES_URL": self.base["evolink"],
               "KLING_ACCESS_KEY": KLING_AK, "KLING_SECRET_KEY": KLING_SK, "KLING_MCP_KLING_BASE_URL": self.base["kling"],
               "FAL_KEY": KEYS["fal"], "KLING_MCP_FAL_BASE_URL": self.base["fal"],
               "KLING_MCP_FAL_STORAGE_URL": self.base["fal"],
               "REPLICATE_API_TOKEN": KEYS["replicate"], "KLING_MCP_REPLICATE_BASE_URL": f"{self.base['replicate']}/v1",
               "KLING_MCP_DATA_DIR": str(data_dir), "KLING_MCP_POLL_INTERVAL_S": "0.05",
               "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"}
        return env

    def image_url(self, provider: str) -> str:
        name = self.state[provider].files.add(png_bytes(96, 64, (90, 30, 160)), suffix=".png",
                                              content_type="image/png")
        return f"{self.base[provider]}/files/{name}"


@pytest.fixture
def emulators() -> Iterator[Emulators]:
    states = {"runware": RunwareState(api_keys={KEYS["runware"]}, processing_polls=1),
              "runpod": RunpodState(api_key=KEYS["runpod"]),
              "aimlapi": AimlState(api_key=KEYS["aimlapi"]),
              "evolink": EvolinkState(api_key=KEYS["evolink"]),
              "kling": KlingState(access_keys={KLING_AK: KLING_SK}),
              "fal": FalState(api_key=KEYS["fal"]), "replicate": ReplicateState(api_key=KEYS["replicate"])}
    apps = {"runware": runware_app, "runpod": runpod_app, "aimlapi": aimlapi_app, "evolink": evolink_app,
            "kling": kling_app, "fal": fal_app, "replicate": replicate_app}
    JWTS.clear()
    echo = {name: Echo(apps[name](state), name) for name, state in states.items()}
    with ExitStack() as stack:
        bases = {name: stack.enter_context(serve(app)) for name, app in echo.items()}
        yield Emulators(bases, states, echo)


# --- what may not contain a secret ----------------------------------------------------------------


def assert_clean(where: str, data: str | bytes) -> None:
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    for secret in [*SECRETS, *JWTS]:
        assert secret.encode() not in raw, f"{secret} leaked into {where}"
        # A secret must not leak in another common encoding either.
        assert base64.b64encode(secret.encode()) not in raw, f"{secret} leaked base64-encoded into {where}"


def assert_data_dir_clean(data_dir: Path) -> int:
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    for path in files:
        assert_clean(str(path), path.read_bytes())
    return len(files)


def dump(result: Any) -> str:
    return result.model_dump_json() if hasattr(result, "model_dump_json") else json.dumps(result, default=str)


async def exercise(client: Client, emu: Emulators, image: Path, outputs: list[str]) -> list[str]:
    """Successful and failing jobs on every provider, with key-echoing errors; every output collected."""

    async def tool(name: str, args: dict[str, Any]) -> Any:
        result = await client.call_tool(name, args)
        outputs.append(dump(result))
        return result

    wait = {"wait_seconds": 20}
    big_image = image.parent / "big.png"          # fal's start image: >= 300 px on each side
    big_image.write_bytes(png_bytes(400, 300))
    job_ids = []
    # Successes (local files are uploaded to runware and evolink; a URL goes to runpod and aimlapi).
    for args in ({"prompt": "a red kite", "provider": "runware", "first_frame": str(image), "duration": 5},
                 {"prompt": "a red kite", "provider": "runpod", "reference_images": [emu.image_url("runpod")]},
                 {"prompt": "a red kite", "provider": "aimlapi", "first_frame": emu.image_url("aimlapi")},
                 {"prompt": "a red kite", "provider": "evolink", "first_frame": str(image)},
                 {"prompt": "a red kite", "provider": "kling"},
                 {"prompt": "a red kite", "provider": "fal", "first_frame": str(big_image)},
                 {"prompt": "a red kite", "provider": "replicate", "first_frame": str(image), "duration": 5}):
        result = await tool("generate_video", {**args, **wait})
        assert not result.is_error and result.structured_content["status"] == "succeeded", result.content
        job_ids.append(result.structured_content["job_id"])
    # Keys echoed back on submit (401) and on an internal error (500): tool errors.
    for status in (401, 500):
        for provider, args in (("runware", {"duration": 5}),
                               ("runpod", {"reference_images": [emu.image_url("runpod")]}),
                               ("aimlapi", {"first_frame": emu.image_url("aimlapi")}),
                               ("evolink", {"first_frame": emu.image_url("evolink")}),
                               ("kling", {}),
                               ("fal", {"first_frame": emu.image_url("fal")}),
                               ("replicate", {"duration": 5})):
            emu.echo[provider].statuses = [status]
            result = await tool("generate_video", {"prompt": f"echo {status} {provider}", "provider": provider,
                                                   **args, **wait})
            assert result.is_error, (provider, status, result.content)
    # Keys echoed back while polling: the job fails (auth) or keeps retrying (5xx) until it fails.
    for provider, args, statuses in (("runpod", {"reference_images": [emu.image_url("runpod")]}, [401]),
                                     ("kling", {}, [401]),
                                     ("aimlapi", {"first_frame": emu.image_url("aimlapi")}, [503] * 10),
                                     ("fal", {"first_frame": emu.image_url("fal")}, [401]),
                                     ("replicate", {"duration": 5}, [503] * 10)):
        submitted = await tool("generate_video", {"prompt": f"poll echo {provider}", "provider": provider,
                                                  **args, "wait_seconds": 0})
        emu.echo[provider].statuses = statuses
        checked = await tool("check_job", {"job_id": submitted.structured_content["job_id"], "wait_seconds": 20})
        assert checked.structured_content["status"] == "failed", checked.structured_content
        job_ids.append(checked.structured_content["job_id"])
    # A job the provider fails with the key inside its error text.
    emu.state["runpod"].next_job_fails(f'Error submitting task: 401, {{"message":"key {KEYS["runpod"]} revoked"}}')
    failed = await tool("generate_video", {"prompt": "fails with the key", "provider": "runpod",
                                           "reference_images": [emu.image_url("runpod")], **wait})
    assert failed.structured_content["status"] == "failed"
    # Everything else a client can read.
    await tool("list_jobs", {"limit": 100})
    await tool("estimate_cost", {"prompt": "x", "first_frame": str(image)})
    for job_id in job_ids:
        await tool("check_job", {"job_id": job_id})
    outputs.append(dump(await client.list_tools()))
    outputs.append(dump(await client.list_resource_templates()))
    outputs.append(dump(await client.read_resource("kling://catalog")))
    outputs.append(dump(await client.read_resource(f"kling://jobs/{job_ids[0]}/videos/0")))
    outputs.append(dump(await client.get_prompt("storyboard", {"topic": "kites"})))
    outputs.append(str(client.instructions))
    return job_ids


async def test_no_secret_in_outputs_logs_or_the_store_even_when_providers_echo_keys(
        emulators: Emulators, tmp_path: Path, image_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings.from_env(emulators.env(tmp_path / "data"))
    assert_clean("repr(settings)", repr(settings))
    outputs: list[str] = []
    notifications: list[str] = []

    async def on_log(params: Any) -> None:
        notifications.append(dump(params))

    async with Client(create_server(settings), logging_callback=on_log, log_level="debug") as client:
        await exercise(client, emulators, image_file, outputs)

    # The keys did reach the providers (so the test exercised them) ...
    sent = [r.headers.get("authorization", "") for r in emulators.state["runpod"].requests]
    assert f"Bearer {KEYS['runpod']}" in sent
    kling_claims = [r.claims for r in emulators.state["kling"].requests if r.claims]
    assert kling_claims and {c["iss"] for c in kling_claims} == {KLING_AK}      # a signed JWT, verified
    assert JWTS and all(t.count(".") == 2 for t in JWTS)   # the tokens themselves are checked below too
    assert any(r.headers.get("authorization") == f"Key {KEYS['fal']}" for r in emulators.state["fal"].requests)
    assert any(r.headers.get("authorization") == f"Bearer {KEYS['replicate']}"
               for r in emulators.state["replicate"].requests)
    # ... and were echoed back to the server, which never repeated them.
    for i, text in enumerate(outputs):
        assert_clean(f"tool output #{i}", text)
    for text in notifications:
        assert_clean("a log notification", text)
    server_logs = [r for r in caplog.records if not r.name.startswith("uvicorn")]
    assert server_logs
    for record in server_logs:
        assert_clean(f"log line {record.name}", record.getMessage() + (record.exc_text or ""))
    assert assert_data_dir_clean(tmp_path / "data") > 5
    assert any(p.name.endswith(".db") for p in (tmp_path / "data").rglob("*"))   # the SQLite store was read


@pytest.mark.slow
async def test_no_secret_on_a_debug_logging_subprocess_stderr(emulators: Emulators, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env.update(emulators.env(tmp_path / "data"))
    params = StdioServerParameters(command=sys.executable, args=["-m", "kling_mcp", "--log-level", "DEBUG", "serve"],
                                   env=env)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            ok = await client.call_tool("generate_video", {"prompt": "a red kite", "provider": "runpod",
                                                           "reference_images": [emulators.image_url("runpod")],
                                                           "wait_seconds": 20})
            assert ok.structured_content["status"] == "succeeded", ok.content
            for provider in ("runpod", "aimlapi"):
                emulators.echo[provider].statuses = [401]
                refused = await client.call_tool("generate_video", {
                    "prompt": f"echo {provider}", "provider": provider, "wait_seconds": 5,
                    ("reference_images" if provider == "runpod" else "first_frame"):
                        [emulators.image_url(provider)] if provider == "runpod" else emulators.image_url(provider)})
                assert refused.is_error
                assert_clean("a tool error", dump(refused))
    stderr = stderr_path.read_text()
    assert "DEBUG mcp.server" in stderr                       # it did log at DEBUG ...
    assert "DEBUG httpcore" not in stderr                     # ... except httpcore's raw headers, kept quiet
    assert_clean("the server's stderr", stderr)
    assert_data_dir_clean(tmp_path / "data")


async def test_a_key_echoed_in_a_response_header_is_not_logged_at_debug(
        emulators: Emulators, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)                     # what --log-level DEBUG sets (cli.main: httpx at WARNING)
    emulators.echo["runpod"].header = True
    emulators.echo["runpod"].statuses = [401]
    settings = Settings.from_env(emulators.env(tmp_path / "data"))
    async with Client(create_server(settings)) as client:
        refused = await client.call_tool("generate_video", {"prompt": "x", "provider": "runpod", "wait_seconds": 0,
                                                            "reference_images": [emulators.image_url("runpod")]})
    assert refused.is_error
    for record in caplog.records:
        if not record.name.startswith("uvicorn"):
            assert_clean(f"log line {record.name}", record.getMessage())

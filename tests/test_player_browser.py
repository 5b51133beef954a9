"""The inline player in a real browser: headless Chromium (Debian's ``chromium``, installed by
scripts/install-system-deps.sh; never a downloaded browser) driven by Playwright, a test host page built
on the official MCP Apps host bridge (``@modelcontextprotocol/ext-apps`` ``AppBridge`` + the MCP
TypeScript SDK client, pinned in package.json, bundled here with esbuild), and a real
``kling-mcp serve --transport http`` on the free ``local`` provider.

The host page mounts the ``ui://`` page in a sandboxed iframe under the spec's default CSP (no network,
``data:`` media), as a desktop host does; it is served on one loopback origin with ``/mcp`` proxied to
the server, so the browser's MCP client needs no CORS. Screenshots go to ``test-artifacts/player/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.emulators._server import serve
from tests.emulators.runware import RunwareState
from tests.emulators.runware import create_app as runware_app
from tests.test_conformance import node_tools  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "player"
HOST_DIR = Path(__file__).parent / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
                 "--disable-extensions", "--autoplay-policy=no-user-gesture-required", "--mute-audio"]
RUNWARE_KEY = "rw-player-key-0077"
PROMPT = "A paper lantern drifts over a quiet harbour at dusk, reflections rippling"

pytestmark = pytest.mark.slow


# --- fixtures: node tools, the server, the host page, the browser ----------------------------------------

@pytest.fixture(scope="module")
def node_modules(node_tools: Path) -> Path:
    """The pinned Node tools (installed by test_conformance's node_tools fixture): their node_modules."""
    return node_tools.parent


@pytest.fixture(scope="module")
def host_bundle(node_modules: Path, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("host") / "host.bundle.js"
    done = subprocess.run([str(node_modules / ".bin" / "esbuild"), str(HOST_DIR / "host.js"), "--bundle",
                           "--format=iife", "--platform=browser", f"--outfile={out}", "--log-level=warning"],
                          env={**os.environ, "NODE_PATH": str(node_modules)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _kling_server(home: Path, **extra_env: str) -> Iterator[str]:
    """``kling-mcp serve --transport http`` with no provider keys but ``extra_env``; yields its /mcp URL."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env.update(KLING_MCP_DATA_DIR=str(home / "data"), **extra_env)
    port = _free_port()
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "kling_mcp", "serve", "--transport", "http", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"kling-mcp serve exited {proc.returncode}: {(home / 'server.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("kling-mcp serve --transport http did not listen within 30 s")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _host_app(bundle: bytes, upstream: str) -> Any:
    """The host page, its bundle, and ``/mcp`` proxied (streaming) to the server."""
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response, StreamingResponse
    from starlette.routing import Route

    page = (HOST_DIR / "host.html").read_text()
    hop = {"host", "origin", "referer", "content-length", "connection", "accept-encoding", "transfer-encoding",
           "content-encoding"}
    clients: list[httpx.AsyncClient] = []

    async def host_html(_request: Request) -> Response:
        return HTMLResponse(page)

    async def host_js(_request: Request) -> Response:
        return Response(bundle, media_type="text/javascript")

    async def mcp(request: Request) -> Response:
        if not clients:
            clients.append(httpx.AsyncClient(timeout=None))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        sent = clients[0].build_request(request.method, upstream, headers=headers, content=await request.body())
        answer = await clients[0].send(sent, stream=True)
        return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                 headers={k: v for k, v in answer.headers.items() if k.lower() not in hop},
                                 background=BackgroundTask(answer.aclose))

    return Starlette(routes=[Route("/host.html", host_html), Route("/host.bundle.js", host_js),
                             Route("/mcp", mcp, methods=["GET", "POST", "DELETE"])])


@pytest.fixture(scope="module")
def host_url(host_bundle: bytes, tmp_path_factory) -> Iterator[str]:
    """The host page in front of a server on the free ``local`` provider."""
    with _kling_server(tmp_path_factory.mktemp("local")) as upstream, serve(_host_app(host_bundle, upstream)) as base:
        yield base


@pytest.fixture(scope="module")
def runware_site(host_bundle: bytes, tmp_path_factory) -> Iterator[tuple[str, Any]]:
    """The host page in front of a server whose provider is the Runware emulator (real quotes, real failures),
    asking for a confirmation above $0.40 (the test host, like many, has no elicitation: confirm_cost_usd)."""
    app = runware_app()
    with serve(app) as emulator, _kling_server(
        tmp_path_factory.mktemp("runware"), RUNWARE_API_KEY=RUNWARE_KEY, KLING_MCP_RUNWARE_BASE_URL=f"{emulator}/v1",
        KLING_MCP_POLL_INTERVAL_S="1", KLING_MCP_POLL_MAX_INTERVAL_S="1", KLING_MCP_CONFIRM_ABOVE_USD="0.4",
    ) as upstream, serve(_host_app(host_bundle, upstream)) as base:
        yield base, app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Debian's chromium is required for the player's browser test: run "
                    "`bash scripts/install-system-deps.sh` (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class Host:
    """One host page: the MCP client, the mounted player, what went over the network and the console."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.page = browser.new_page(viewport={"width": 820, "height": 900}, device_scale_factor=1)
        self.requests: list[str] = []
        self.console: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        self.page.goto(f"{base}/host.html")
        tools = self.page.evaluate("url => window.host.connect(url)", f"{base}/mcp")
        assert "generate_video" in tools

    def show(self, tool: str, args: dict[str, Any], theme: str = "light") -> dict[str, Any]:
        return self.page.evaluate("([t, a, th]) => window.host.show(t, a, th)", [tool, args, theme])

    @property
    def app(self) -> Any:
        frame = self.page.query_selector("#app").content_frame()
        assert frame is not None
        return frame

    def log(self) -> list[dict[str, Any]]:
        return self.page.evaluate("() => JSON.parse(JSON.stringify(window.host.log))")

    def text(self, element_id: str) -> str:
        return self.app.evaluate("id => document.getElementById(id).textContent", element_id)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def wait_for_video(self, timeout_s: float = 120) -> float:
        self.app.wait_for_function(
            "() => { const v = document.getElementById('video');"
            " return !v.classList.contains('hidden') && v.readyState >= 2 && v.currentTime > 0.3; }",
            timeout=timeout_s * 1000)
        return float(self.app.evaluate("() => document.getElementById('video').currentTime"))

    def assert_offline_and_clean(self) -> None:
        """Nothing left the host's origin (the page loads no CDN, no fonts) and nothing was refused by the CSP."""
        outside = [u for u in self.requests if not u.startswith((self.base, "data:", "about:"))]
        assert outside == []
        assert not [line for line in self.console if "Content Security Policy" in line or "pageerror" in line]

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def host(browser, host_url) -> Iterator[Host]:
    opened = Host(browser, host_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def runware(browser, runware_site) -> Iterator[tuple[Host, RunwareState]]:
    base, app = runware_site
    app.state.emulator = RunwareState(api_keys={RUNWARE_KEY}, processing_polls=3, results_per_poll=1)
    opened = Host(browser, base)
    try:
        yield opened, app.state.emulator
    finally:
        opened.close()


def _running_snapshot(host: Host, min_progress: float, timeout_s: float = 120) -> dict[str, Any]:
    """Wait until the page shows the job running with at least ``min_progress``; screenshot that moment and
    return what the page showed then (read in one go, so a job finishing right after cannot mix states)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = host.app.evaluate("""() => Object.fromEntries(
            ['status', 'provider', 'costlabel', 'cost', 'elapsed', 'big', 'jobid', 'kind']
              .map(id => [id, document.getElementById(id).textContent])
              .concat([['width', parseFloat(document.getElementById('barfill').style.width) || 0]]))""")
        if shown["status"] == "Running" and shown["width"] >= min_progress:
            name = "running-job-runware.png" if shown["provider"] == "runware" else "running-job.png"
            host.screenshot(name)
            time.sleep(0.65)  # the bar's transition: a settled picture if the job still runs
            if host.text("status") == "Running":
                host.screenshot(name)
            return shown
        assert shown["status"] != "Succeeded", "the job finished before the page showed it running"
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)


# --- the tests -------------------------------------------------------------------------------------------

def test_a_running_job_shows_its_progress_then_the_finished_video_plays_inline(host):
    started = host.show("generate_video", {"prompt": PROMPT, "provider": "local", "tier": "pro", "duration": 10,
                                           "num_videos": 4, "wait_seconds": 0})
    assert started["structuredContent"]["status"] in ("pending", "submitted", "running")
    assert "resource_link" not in started["content"]  # the host negotiated Apps: links ride in text/structured
    job_id = started["structuredContent"]["job_id"]

    shown = _running_snapshot(host, min_progress=1)
    assert shown["provider"] == "local" and shown["costlabel"] == "Quote" and shown["cost"] == "Free"
    assert shown["jobid"] == job_id and ":" in shown["elapsed"] and shown["big"].endswith("%")

    first = host.wait_for_video()
    time.sleep(1.2)
    later = float(host.app.evaluate("() => document.getElementById('video').currentTime"))
    assert later > first  # it plays
    source = host.app.evaluate("() => document.getElementById('video').src.slice(0, 40)")
    assert source.startswith("data:video/mp4;base64,")
    assert host.text("status") == "Succeeded"
    assert host.text("path").endswith("/0.mp4")
    assert host.app.evaluate("() => document.querySelectorAll('#chips .chip').length") == 4
    host.screenshot("finished-video.png")

    log = host.log()
    checks = [e for e in log if e["kind"] == "tools/call" and e["name"] == "check_job"]
    assert checks and all(e["arguments"]["job_id"] == job_id for e in checks)
    reads = [e["uri"] for e in log if e["kind"] == "resources/read"]
    assert f"kling://jobs/{job_id}/videos/0/preview" in reads
    assert f"kling://jobs/{job_id}/videos/0" not in reads  # the original never goes through the conversation

    host.app.click("#chips .chip:nth-of-type(2)")
    host.app.wait_for_function("() => document.getElementById('path').textContent.endsWith('/1.mp4')")
    host.app.click("#open")
    host.page.wait_for_function("() => window.host.log.some(e => e.kind === 'open-link')")
    (opened,) = [e["url"] for e in host.log() if e["kind"] == "open-link"]
    assert opened.startswith("file:///") and opened.endswith("/1.mp4")
    host.assert_offline_and_clean()


def test_a_finished_job_in_the_dark_theme(host):
    done = host.show("generate_video", {"prompt": "Neon koi circling in a midnight pond", "provider": "local",
                                        "duration": 3, "aspect_ratio": "16:9", "wait_seconds": 45}, theme="dark")
    assert done["structuredContent"]["status"] == "succeeded"
    host.wait_for_video()
    background = host.app.evaluate("() => getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in background[background.index("(") + 1:-1].split(",")[:3])
    assert red + green + blue < 150, background  # dark
    assert host.app.evaluate("() => document.getElementById('bar').classList.contains('hidden')")  # finished
    host.screenshot("finished-video-dark.png")
    host.assert_offline_and_clean()


def test_a_refused_request_shows_the_error_and_its_hint(host, tmp_path):
    missing = tmp_path / "no-such-frame.png"
    refused = host.show("generate_video", {"prompt": PROMPT, "provider": "local", "first_frame": str(missing)})
    assert refused["isError"]
    host.app.wait_for_function("() => !document.getElementById('error').classList.contains('hidden')")
    assert host.text("status") == "Not started"
    assert host.text("errcode") == "invalid_input_file"
    assert "no-such-frame.png" in host.text("errmsg")
    assert host.text("errhint").startswith("What to do: ")
    host.screenshot("refused-request.png")
    host.assert_offline_and_clean()


def test_a_paid_job_shows_provider_quote_and_partial_progress(runware):
    host, state = runware
    started = host.show("generate_video", {"prompt": PROMPT, "provider": "runware", "tier": "pro", "duration": 5,
                                           "num_videos": 4, "wait_seconds": 0, "confirm_cost_usd": 2.24})
    assert started["structuredContent"]["estimated_cost_usd"] == pytest.approx(2.24)
    shown = _running_snapshot(host, min_progress=25)
    assert shown["provider"] == "runware" and shown["costlabel"] == "Quote" and shown["cost"] == "$2.24"
    assert "klingai:kling@o1" in shown["kind"] and "Pro 1080p" in shown["kind"]
    host.wait_for_video()
    assert host.text("status") == "Succeeded" and host.text("costlabel") == "Cost"
    assert len(state.sent("videoInference")) == 1
    host.assert_offline_and_clean()


def test_a_failed_job_shows_the_providers_error_and_the_hint(runware):
    host, state = runware
    state.task_error_code = "contentPolicyViolation"
    host.show("generate_video", {"prompt": "A crowded night market, lanterns swaying", "provider": "runware",
                                 "duration": 5, "wait_seconds": 0, "confirm_cost_usd": 0.42})
    host.app.wait_for_function("() => document.getElementById('status').textContent === 'Failed'", timeout=60_000)
    assert host.text("errcode") == "content_policy"
    assert host.text("errhint").startswith("What to do: ") and "prompt" in host.text("errhint")
    assert host.app.evaluate("() => document.getElementById('stage').classList.contains('hidden')")  # no empty stage
    time.sleep(0.5)
    host.screenshot("failed-job.png")
    host.assert_offline_and_clean()



SHOTS = [
    {"prompt": "Dawn over a fishing village, boats still moored, mist on the water", "duration": 3},
    {"prompt": "A fisherman unties his boat and pushes off from the jetty", "duration": 3},
    {"prompt": "The boat glides out past the lighthouse as the sun rises", "duration": 3},
]


def _tiles(host: Host) -> list[dict[str, Any]]:
    return host.app.evaluate("""() => [...document.querySelectorAll('#strip .shot')].map(t => ({
        shot: t.dataset.shot, status: t.querySelector('.pill').textContent, meta: t.querySelector('.meta').textContent,
        retake: !!t.querySelector('.retake') && !t.querySelector('.retake').disabled}))""")


def test_a_storyboard_shows_its_shots_plays_the_cut_and_a_retake_makes_a_new_take(host):
    started = host.show("generate_storyboard", {"shots": SHOTS, "provider": "local", "aspect_ratio": "16:9",
                                                "wait_seconds": 0})
    assert not started["isError"], started
    board_id = started["structuredContent"]["job_id"]
    host.app.wait_for_function("() => document.querySelectorAll('#strip .shot').length === 3")
    host.wait_for_video(timeout_s=240)  # the assembled cut plays once every shot is done
    host.app.wait_for_function("() => document.getElementById('status').textContent === 'Succeeded'")
    tiles = _tiles(host)
    assert [t["status"] for t in tiles] == ["succeeded"] * 3 and all(t["retake"] for t in tiles)
    assert host.text("badge") == "Full cut"
    reads = [e["uri"] for e in host.log() if e["kind"] == "resources/read"]
    assert f"kling://jobs/{board_id}/videos/0/preview" in reads
    time.sleep(0.5)
    host.screenshot("storyboard.png")

    host.app.click("#strip .shot[data-shot='2'] .retake")
    host.app.wait_for_function(f"() => document.getElementById('jobid').textContent !== {board_id!r}", timeout=60_000)
    retake_id = host.text("jobid")
    calls = [e for e in host.log() if e["kind"] == "tools/call" and e["name"] == "retake_shot"]
    assert [(c["arguments"]["job_id"], c["arguments"]["shot"]) for c in calls] == [(board_id, 2)]
    host.app.wait_for_function("() => document.getElementById('status').textContent === 'Succeeded'", timeout=240_000)
    tiles = _tiles(host)
    assert "take 2" in tiles[1]["meta"] and "take" not in tiles[0]["meta"]
    host.wait_for_video(timeout_s=120)
    reads = [e["uri"] for e in host.log() if e["kind"] == "resources/read"]
    assert f"kling://jobs/{retake_id}/videos/0/preview" in reads  # the new cut
    host.app.click("#strip .shot[data-shot='2']")  # play one shot on its own
    host.app.wait_for_function("() => document.querySelector('#strip .shot.selected')?.dataset.shot === '2'")
    host.app.wait_for_function("() => document.getElementById('badge').textContent === 'Shot 2'")
    host.wait_for_video(timeout_s=60)
    time.sleep(0.5)
    host.screenshot("storyboard-retake.png")
    host.assert_offline_and_clean()


def test_a_running_storyboard_then_a_retake_the_user_pays_for_from_the_strip(runware):
    host, state = runware
    shots = [{"prompt": "A heron stands in the shallows at first light", "duration": 5},
             {"prompt": "The heron lifts off and skims across the lake", "duration": 5}]
    started = host.show("generate_storyboard", {"shots": shots, "provider": "runware", "tier": "standard",
                                                "aspect_ratio": "16:9", "wait_seconds": 0, "confirm_cost_usd": 0.84})
    assert not started["isError"], started
    host.app.wait_for_function("() => document.querySelectorAll('#strip .shot').length === 2")
    deadline = time.monotonic() + 90
    while True:
        tiles = _tiles(host)
        if host.text("status") == "Running" and tiles[0]["status"] in ("submitted", "running"):
            host.screenshot("storyboard-running.png")
            break
        assert host.text("status") != "Succeeded", "the board finished before the page showed it running"
        assert time.monotonic() < deadline, tiles
        time.sleep(0.05)
    assert tiles[1]["status"] == "pending" and not any(t["retake"] for t in tiles)  # retakes wait for the end
    assert host.text("costlabel") == "Quote" and host.text("cost") == "$0.84"
    assert host.text("big") == "0 / 2" and "shot 1 rendering on runware" in host.text("small")
    host.wait_for_video(timeout_s=120)
    host.app.wait_for_function("() => document.getElementById('status').textContent === 'Succeeded'")
    assert [t["status"] for t in _tiles(host)] == ["succeeded", "succeeded"]
    assert len(state.sent("videoInference")) == 2

    # A retake is quoted above the threshold: the server refuses it with the quote, the tile offers to pay it.
    board_id = host.text("jobid")
    host.app.click("#strip .shot[data-shot='1'] .retake")
    pay = "#strip .shot[data-shot='1'] .retake"
    host.app.wait_for_function(f"() => document.querySelector({pay!r}).textContent === 'Retake for $0.42'")
    assert "costs $0.42" in host.text("notice") and len(state.sent("videoInference")) == 2
    host.screenshot("storyboard-retake-confirm.png")
    host.app.click(pay)
    host.app.wait_for_function(f"() => document.getElementById('jobid').textContent !== {board_id!r}", timeout=60_000)
    host.app.wait_for_function("() => document.getElementById('status').textContent === 'Succeeded'", timeout=120_000)
    calls = [e["arguments"] for e in host.log() if e["kind"] == "tools/call" and e["name"] == "retake_shot"]
    assert [c.get("confirm_cost_usd") for c in calls] == [None, 0.42]
    assert len(state.sent("videoInference")) == 3 and "take 2" in _tiles(host)[0]["meta"]
    host.assert_offline_and_clean()

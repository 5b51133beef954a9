"""Hostile input, property-based: every tool's arguments drawn from wrong types, huge strings, negative
or absurd numbers, too many references, directories, non-image files passed as images, paths outside
``KLING_MCP_ALLOWED_DIRS`` (directly and through a symlink), ``file://`` and other schemes, broken
data URIs and odd unicode. Every call must answer a clear tool error or a valid result; the server
never crashes; and no invalid request ever reaches a provider: each emulator validates what it gets
like the real API, and none answers a 4xx, while every job a tool returned is one accepted submission.

One server (in memory, all four emulators configured) serves every example through a blocking portal,
so hypothesis drives plain synchronous tests.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.emulators._media import mp4_bytes, png_bytes
from tests.emulators._server import serve
from tests.emulators.aimlapi import AimlState
from tests.emulators.aimlapi import create_app as aimlapi_app
from tests.emulators.evolink import EvolinkState
from tests.emulators.evolink import create_app as evolink_app
from tests.emulators.runpod import RunpodState
from tests.emulators.runpod import create_app as runpod_app
from tests.emulators.runware import RunwareState
from tests.emulators.runware import create_app as runware_app

KEYS = {"runware": "rw-hostile-key-31337", "runpod": "rp-hostile-key-31337", "aimlapi": "aiml-hostile-key-31337",
        "evolink": "evo-hostile-key-31337"}
STATUSES = {"pending", "submitted", "running", "downloading", "succeeded", "failed", "cancelled"}
CLEAR_ERROR = re.compile(r"\[[a-z_]+\] \S|\d+ validation errors? for \w+Arguments")
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


# --- the harness: emulators that record every answer, one server behind a portal -----------------


@dataclass
class Answered:
    method: str
    path: str
    status: int = 0
    request: bytes = b""
    response: bytes = b""


@dataclass
class Recorder:
    """Records every answer the emulator gives (the start of each body too, for failure reports)."""

    app: ASGIApp
    answers: list[Answered] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        answer = Answered(scope["method"], scope["path"])
        self.answers.append(answer)

        async def recording_receive() -> dict[str, Any]:
            message = await receive()
            answer.request += message.get("body", b"")[:400 - len(answer.request)]
            return message

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
            elif len(answer.response) < 400:
                answer.response += message.get("body", b"")[:400 - len(answer.response)]
            await send(message)

        await self.app(scope, recording_receive, recording_send)


@dataclass
class Files:
    image: Path
    video: Path
    text: Path
    directory: Path
    outside: Path
    escape: Path              # a symlink inside the allowed dir pointing outside it
    big_image: Path           # a real PNG over runpod's 10 MB request limit
    image_url: str
    video_url: str


@dataclass
class Harness:
    portal: BlockingPortal
    client: Client
    states: dict[str, Any]
    recorders: dict[str, Recorder]
    files: Files
    job_ids: set[str] = field(default_factory=set)

    def call(self, tool: str, args: dict[str, Any]) -> Any:
        async def run() -> Any:
            with anyio.fail_after(60):
                return await self.client.call_tool(tool, args)
        return self.portal.call(run)

    def accepted_submissions(self) -> int:
        s = self.states
        return len(s["runpod"].jobs) + len(s["aimlapi"].generations) + len(s["runware"].tasks) + len(s["evolink"].tasks)

    def refusals(self) -> list[tuple[str, Answered]]:
        """Every 4xx a provider API answered (downloads of hosted files excluded)."""
        return [(name, a) for name, rec in self.recorders.items() for a in rec.answers
                if 400 <= a.status < 500 and not a.path.startswith("/files/")]


def _make_files(root: Path, runpod: RunpodState, runpod_base: str, evolink: EvolinkState, evolink_base: str) -> Files:
    allowed, outside = root / "allowed", root / "outside"
    (allowed / "folder.png").mkdir(parents=True)
    outside.mkdir()
    image, video, text = allowed / "frame.png", allowed / "clip.mp4", allowed / "notes.png"
    image.write_bytes(png_bytes(96, 64, (30, 120, 200)))
    video.write_bytes(mp4_bytes(4.0, 320, 180))
    text.write_text("not an image, whatever the name says\n")
    (outside / "frame.png").write_bytes(png_bytes(96, 64, (200, 120, 30)))
    escape = allowed / "escape.png"
    escape.symlink_to(outside / "frame.png")
    big = allowed / "big.png"
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(7).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, format="PNG", compress_level=0)          # ~12.6 MB
    image_name = runpod.files.add(png_bytes(96, 64, (10, 200, 90)), suffix=".png", content_type="image/png")
    video_url = evolink.host(mp4_bytes(4.0, 320, 180), evolink_base)
    return Files(image, video, text, allowed / "folder.png", outside / "frame.png", escape, big,
                 f"{runpod_base}/files/{image_name}", video_url)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("hostile")
    states = {"runware": RunwareState(api_keys={KEYS["runware"]}, processing_polls=1),
              "runpod": RunpodState(api_key=KEYS["runpod"]),
              "aimlapi": AimlState(api_key=KEYS["aimlapi"]),
              "evolink": EvolinkState(api_key=KEYS["evolink"])}
    apps = {"runware": runware_app, "runpod": runpod_app, "aimlapi": aimlapi_app, "evolink": evolink_app}
    recorders = {name: Recorder(apps[name](state)) for name, state in states.items()}
    with ExitStack() as stack:
        base = {name: stack.enter_context(serve(rec)) for name, rec in recorders.items()}
        files = _make_files(root, states["runpod"], base["runpod"], states["evolink"], base["evolink"])
        env = {"RUNWARE_API_KEY": KEYS["runware"], "RUNPOD_API_KEY": KEYS["runpod"], "AIML_API_KEY": KEYS["aimlapi"],
               "EVOLINK_API_KEY": KEYS["evolink"], "KLING_MCP_RUNWARE_BASE_URL": f"{base['runware']}/v1",
               "KLING_MCP_RUNPOD_BASE_URL": f"{base['runpod']}/v2", "KLING_MCP_AIMLAPI_BASE_URL": base["aimlapi"],
               "KLING_MCP_EVOLINK_BASE_URL": base["evolink"], "KLING_MCP_EVOLINK_FILES_URL": base["evolink"],
               "KLING_MCP_DATA_DIR": str(root / "data"), "KLING_MCP_ALLOWED_DIRS": str(root / "allowed"),
               "KLING_MCP_POLL_INTERVAL_S": "0.05", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"}
        portal = stack.enter_context(start_blocking_portal())
        client = stack.enter_context(portal.wrap_async_context_manager(Client(create_server(Settings.from_env(env)))))
        h = Harness(portal, client, states, recorders, files)
        yield h
        _every_job_ends_well(h)


def _every_job_ends_well(h: Harness) -> None:
    """At the end: the server still answers, and no job it accepted was refused or crashed later."""
    deadline = time.monotonic() + 60
    while True:
        listed = h.call("list_jobs", {"limit": 500})
        assert not listed.is_error, listed.content
        jobs = listed.structured_content["jobs"]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for job in jobs:
        assert job["status"] in ("succeeded", "failed", "cancelled"), job
        if job["status"] == "failed":
            assert job["error"]["code"] not in ("provider_rejected", "provider_protocol", "internal_error"), job


# --- strategies ----------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(min_value=-10**20, max_value=10**20),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 11, 2**31, -2**31 - 1, 2**63, 10**30, 0.5, -0.0]))
WRONG_TYPES = st.one_of(st.none(), st.booleans(), NUMBERS, st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
STRANGE_TEXT = [
    "", " ", "\t\n", "\x00", "a\x00b.png", "\ud800", "\u202e/etc/passwd", "\u200b", "😀" * 2000, "a" * 100_000,
    "e\u0301" * 50, "../../../../etc/passwd", "/etc/passwd", "/etc/shadow", "/dev/zero", "/dev/null",
    "/proc/self/environ", "/proc/self/mem", "~", "~root/.ssh/id_rsa", "~nosuchuser/x.png", "file:///etc/passwd",
    "FILE://localhost/etc/hosts", "ftp://127.0.0.1/x.png", "javascript:alert(1)", "gopher://127.0.0.1:70/_x",
    "ssh://127.0.0.1/x", "data:", "data:image/png;base64,", "data:image/png;base64,!!!!",
    "data:text/plain;base64,aGVsbG8=", "data:image/png;base64," + base64.b64encode(b"plain text").decode(),
    "data:image/png," + "A" * 64, "http://", "https://", "http:///x.png", "https://[::1", "C:\\Windows\\win.ini",
    "\\\\server\\share\\x.png", "%2e%2e/etc/passwd", "nul", "CON", ".", "..", "-", "--help",
]


def path_values(files: Files) -> list[str]:
    """Local paths that must all be refused when passed as inputs (given KLING_MCP_ALLOWED_DIRS)."""
    allowed = files.image.parent
    return [str(files.text), str(files.directory), str(files.outside), str(files.escape),
            f"{allowed}/../outside/frame.png", str(allowed / "missing.png"), str(allowed), str(allowed) + "/",
            str(files.image) + "/", str(files.image) + "\x00.png"]


def hostile_strings(files: Files, wrong_types: bool = True) -> st.SearchStrategy[Any]:
    strange = st.sampled_from(STRANGE_TEXT + path_values(files))
    return st.one_of(strange, st.text(max_size=40), *([WRONG_TYPES] if wrong_types else []))


def valid_values(files: Files) -> dict[str, list[Any]]:
    image, video = [str(files.image), files.image_url], [str(files.video), files.video_url]
    return {
        "prompt": ["a cat walks along a fence at dusk", "the camera rises over a misty valley"],
        "first_frame": image, "last_frame": image, "reference_images": [[files.image_url], [str(files.image)]],
        "reference_video": video, "video": video, "aspect_ratio": ["16:9", "9:16", "1:1"], "duration": [3, 5, 10],
        "tier": ["standard", "pro"], "provider": ["auto", "runware", "runpod", "aimlapi", "evolink"],
        "negative_prompt": ["blur"], "seed": [-1, 7], "num_videos": [1, 2], "keep_original_sound": [True, False],
        "fast": [True, False], "wait_seconds": [0], "idempotency_key": ["shot-1", "shot-2"],
        "video_duration_s": [4.0, 7.0], "job_id": ["no-such-job"], "status": ["failed", "succeeded"],
        "limit": [1, 50, 500],
    }


def hostile_value(name: str, files: Files, wrong_types: bool = True) -> st.SearchStrategy[Any]:
    """Hostile values for one argument; ``wrong_types=False`` keeps to strings (lists of them for
    reference_images), which get past the schema to the service's own checks."""
    if name == "wait_seconds":      # never a valid wait > 0: examples must not block on a running job
        return st.sampled_from([-1, -0.001, 50.001, 1e9, float("inf"), float("-inf"), "soon", [0], {"s": 0}])
    if name == "reference_images":
        item = st.one_of(st.sampled_from(valid_values(files)["first_frame"]), hostile_strings(files, wrong_types))
        lists = st.lists(item, min_size=0, max_size=14)
        return st.one_of(lists, hostile_strings(files)) if wrong_types else lists
    if name in ("duration", "num_videos", "seed", "limit", "video_duration_s"):
        return st.one_of(NUMBERS, hostile_strings(files))
    return hostile_strings(files, wrong_types)


def any_value(name: str, files: Files, wrong_types: bool = True) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(valid_values(files)[name]), hostile_value(name, files, wrong_types))


PARAMS = {
    "generate_video": ["prompt", "first_frame", "last_frame", "reference_images", "reference_video", "aspect_ratio",
                       "duration", "tier", "provider", "negative_prompt", "seed", "num_videos", "keep_original_sound",
                       "wait_seconds", "idempotency_key"],
    "edit_video": ["prompt", "video", "reference_images", "keep_original_sound", "fast", "tier", "provider",
                   "wait_seconds", "idempotency_key"],
    "estimate_cost": ["prompt", "first_frame", "last_frame", "reference_images", "reference_video", "video",
                      "video_duration_s", "aspect_ratio", "duration", "tier", "provider", "negative_prompt", "seed",
                      "num_videos", "keep_original_sound", "fast"],
    "check_job": ["job_id", "wait_seconds"],
    "list_jobs": ["status", "limit"],
    "cancel_job": ["job_id"],
}
UNKNOWN_ARGS = st.dictionaries(st.sampled_from(["durations", "api_key", "__proto__", "model", "operation"]),
                               WRONG_TYPES, max_size=1)


@st.composite
def anything(draw: st.DrawFn, tool: str, files: Files) -> dict[str, Any]:
    """Any subset of the tool's arguments, each valid or hostile, sometimes with an unknown one."""
    args = draw(st.fixed_dictionaries({}, optional={n: any_value(n, files) for n in PARAMS[tool]}))
    if tool in ("generate_video", "edit_video", "check_job"):
        args.setdefault("wait_seconds", 0)
    return {**args, **draw(UNKNOWN_ARGS)}


def valid_bases(tool: str, files: Files) -> list[dict[str, Any]]:
    prompt = "a paper boat drifts across a pond"
    if tool == "edit_video":
        return [{"prompt": prompt, "video": str(files.video)}, {"prompt": prompt, "video": files.video_url}]
    return [{"prompt": prompt, "provider": "runware", "duration": 5},
            {"prompt": prompt, "first_frame": str(files.image), "duration": 5},
            {"prompt": prompt, "first_frame": files.image_url, "provider": "aimlapi"},
            {"prompt": prompt, "reference_images": [files.image_url], "duration": 5},
            {"prompt": prompt, "reference_images": [str(files.image)], "provider": "runpod", "duration": 3}]


TEXT_ARGS = {"prompt", "first_frame", "last_frame", "reference_images", "reference_video", "video", "negative_prompt",
             "idempotency_key"}


@st.composite
def one_bad_argument(draw: st.DrawFn, tool: str, files: Files, names: set[str] | None = None) -> dict[str, Any]:
    """A valid request with one argument replaced by a hostile (or another valid) value.

    The prompt is made unique, so that every valid example is a new job (not the running twin of
    an earlier one) and really reaches a provider.
    """
    args = dict(draw(st.sampled_from(valid_bases(tool, files))))
    args["prompt"] += f" (take {draw(st.integers(min_value=0, max_value=10**9))})"
    name = draw(st.sampled_from([n for n in PARAMS[tool] if names is None or n in names]))
    args[name] = draw(any_value(name, files, wrong_types=names is None))
    args.setdefault("wait_seconds", 0)
    return args


# --- the invariants ------------------------------------------------------------------------------


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def check(h: Harness, tool: str, args: dict[str, Any], result: Any) -> None:
    text = text_of(result)
    assert text.strip(), (tool, args)
    assert not any(key in text for key in KEYS.values())
    if result.is_error:
        # A clear tool error: an error code or the argument validation report, never a bare
        # "Error executing tool ..." from an unexpected exception.
        assert CLEAR_ERROR.search(text), (tool, args, text[:500])
        assert len(text) < 20_000, (tool, len(text))
    else:
        view = result.structured_content
        if tool in ("generate_video", "edit_video", "check_job"):
            assert view["status"] in STATUSES and view["job_id"] and view["next_action"], view
            if tool != "check_job":
                h.job_ids.add(view["job_id"])
            assert view["status"] != "failed" or view["error"]["code"] not in ("provider_rejected", "internal_error"), view
        elif tool == "estimate_cost":
            assert view["operation"] in ("text", "image", "reference", "edit") and view["quotes"], view
        elif tool == "list_jobs":
            assert view["count"] == len(view["jobs"])
        elif tool == "cancel_job":
            assert view["status"] in STATUSES
    # No invalid request ever reached a provider, and every accepted submission is a job we returned.
    assert h.refusals() == [], (tool, args, h.refusals())
    assert h.accepted_submissions() == len(h.job_ids), (tool, args)


def run(h: Harness, tool: str, args: dict[str, Any]) -> None:
    check(h, tool, args, h.call(tool, args))


# --- the properties ------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ["generate_video", "edit_video", "estimate_cost"])
def test_any_arguments_to_the_spending_tools_give_a_clear_error_or_a_valid_job(harness: Harness, tool: str) -> None:
    @FUZZ
    @given(args=anything(tool, harness.files))
    def prop(args: dict[str, Any]) -> None:
        run(harness, tool, args)

    prop()


@pytest.mark.parametrize("tool", ["generate_video", "edit_video"])
def test_one_hostile_argument_in_a_valid_request_never_reaches_a_provider(harness: Harness, tool: str) -> None:
    @settings(FUZZ, max_examples=80)
    @given(args=one_bad_argument(tool, harness.files))
    def prop(args: dict[str, Any]) -> None:
        run(harness, tool, args)

    prop()
    assert harness.job_ids, "no example produced a valid job: the strategy lost its valid half"


@pytest.mark.parametrize("tool", ["generate_video", "edit_video"])
def test_hostile_paths_urls_and_text_are_refused_before_any_provider_call(harness: Harness, tool: str) -> None:
    """The string arguments that pass the schema: paths, schemes, data URIs, odd unicode, huge values."""
    @settings(FUZZ, max_examples=60)
    @given(args=one_bad_argument(tool, harness.files, TEXT_ARGS))
    def prop(args: dict[str, Any]) -> None:
        run(harness, tool, args)

    prop()


@pytest.mark.parametrize("tool", ["check_job", "list_jobs", "cancel_job"])
def test_any_arguments_to_the_job_tools_give_a_clear_error_or_a_valid_answer(harness: Harness, tool: str) -> None:
    known = sorted(harness.job_ids) or ["none-yet"]

    @settings(FUZZ, max_examples=25)
    @given(args=anything(tool, harness.files), real=st.sampled_from(known), use_real=st.booleans())
    def prop(args: dict[str, Any], real: str, use_real: bool) -> None:
        if use_real and "job_id" in PARAMS[tool]:
            args["job_id"] = real
        run(harness, tool, args)

    prop()


@settings(FUZZ, max_examples=30)
@given(uri=st.one_of(
    st.builds(lambda j, n: f"kling://jobs/{j}/videos/{n}",
              st.one_of(st.sampled_from(["..", "%2e%2e", "/etc/passwd", "", "x" * 300]), st.text(max_size=20)),
              st.one_of(st.sampled_from(["0", "-1", "99999999999999999999", "1e3", "../0", ""]),
                        st.text(max_size=8))),
    st.sampled_from(["kling://catalog/../jobs", "file:///etc/passwd", "kling://", "http://127.0.0.1:1/"])))
def test_hostile_resource_uris_are_refused_without_crashing(harness: Harness, uri: str) -> None:
    async def read() -> Any:
        with anyio.fail_after(30):
            return await harness.client.read_resource(uri)
    try:
        harness.portal.call(read)
    except MCPError as exc:
        assert str(exc).strip()
    except ValueError:
        pass                # the client refuses a string that is not a URI before sending it
    assert not harness.call("list_jobs", {"limit": 1}).is_error


# --- explicit cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["outside", "escape", "dotdot"])
def test_paths_outside_the_allowed_dirs_are_refused_naming_the_setting(harness: Harness, which: str) -> None:
    files = harness.files
    path = {"outside": str(files.outside), "escape": str(files.escape),
            "dotdot": f"{files.image.parent}/../outside/frame.png"}[which]
    result = harness.call("generate_video", {"prompt": "x", "first_frame": path, "wait_seconds": 0})
    assert result.is_error
    text = text_of(result)
    assert "[invalid_input_file]" in text and "outside the folders" in text and "KLING_MCP_ALLOWED_DIRS" in text


@pytest.mark.parametrize("kind", ["text-as-image", "video-as-image", "image-as-video", "directory"])
def test_files_of_the_wrong_kind_are_refused(harness: Harness, kind: str) -> None:
    files = harness.files
    args = {"text-as-image": {"first_frame": str(files.text)}, "video-as-image": {"first_frame": str(files.video)},
            "image-as-video": {"video": str(files.image)}, "directory": {"first_frame": str(files.directory)}}[kind]
    tool = "edit_video" if "video" in args else "generate_video"
    result = harness.call(tool, {"prompt": "x", "wait_seconds": 0, **args})
    assert result.is_error and "[invalid_input_file]" in text_of(result), text_of(result)


def test_a_request_the_adapter_refuses_before_sending_leaves_no_job_pending(harness: Harness) -> None:
    result = harness.call("generate_video", {"prompt": "a huge reference", "provider": "runpod", "duration": 3,
                                              "reference_images": [str(harness.files.big_image)], "wait_seconds": 0,
                                              "idempotency_key": "big-reference"})
    assert result.is_error and "10 MB" in text_of(result), text_of(result)
    pending = harness.call("list_jobs", {"status": "pending"}).structured_content
    assert pending["count"] == 0, pending
    # The key was released: nothing was billed, so a corrected retry may use it.
    retry = harness.call("generate_video", {"prompt": "a small reference", "provider": "runpod", "duration": 3,
                                             "reference_images": [harness.files.image_url], "wait_seconds": 0,
                                             "idempotency_key": "big-reference"})
    assert not retry.is_error and retry.structured_content["prompt"].startswith("a small reference")
    harness.job_ids.add(retry.structured_content["job_id"])


def test_a_one_character_prompt_is_refused_before_reaching_runware(harness: Harness) -> None:
    before = len(harness.refusals())
    result = harness.call("generate_video", {"prompt": "x", "provider": "runware", "duration": 5, "wait_seconds": 0})
    if not result.is_error:
        harness.job_ids.add(result.structured_content["job_id"])
    # Only providers not configured here (kling, replicate) serve a 1-character text-to-video prompt: the code
    # is the same for auto and runware, and both name them.
    assert len(harness.refusals()) == before and result.is_error and "[unsupported]" in text_of(result)
    auto = harness.call("generate_video", {"prompt": "x", "duration": 5, "wait_seconds": 0})
    assert auto.is_error and "[unsupported]" in text_of(auto)
    for text in (text_of(result), text_of(auto)):
        accepted_by = text[text.index("Also accepted by"):]
        assert "kling" in accepted_by and "replicate" in accepted_by

"""SIGKILL a real ``python -m kling_mcp serve`` after Kling took a submit but before its answer came
back (so the job is stored ``pending`` with no task id), restart it on the same data dir, and prove
the job is found by its ``external_task_id`` and finishes, with exactly one submission.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.emulators._server import serve
from tests.emulators.kling import KlingState, create_app
from tests.test_kling_adapter import AK, SK
from tests.test_reliability_crash import Hold, StdioServer, restart_and_finish_all, stored_jobs, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PROMPT = "a kite over the dunes, the submit answer never arrives"


def env_for(base: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith(("KLING_",))}
    env.update(KLING_MCP_DATA_DIR=str(data_dir), KLING_MCP_POLL_INTERVAL_S="0.05",
               KLING_MCP_POLL_MAX_INTERVAL_S="0.2", KLING_ACCESS_KEY=AK, KLING_SECRET_KEY=SK,
               KLING_MCP_KLING_BASE_URL=base)
    return env


async def test_sigkill_after_kling_took_the_submit_is_recovered_by_external_task_id(tmp_path: Path) -> None:
    state = KlingState(access_keys={AK: SK})
    needle = json.dumps(PROMPT).encode()
    hold = Hold(create_app(state), lambda path, body: needle in body)       # Kling creates the task; no answer
    data_dir = tmp_path / "data"
    with serve(hold) as base:
        try:
            server = StdioServer(env_for(base, data_dir))
            try:
                server.call("generate_video", {"prompt": PROMPT, "provider": "kling", "wait_seconds": 0})
                wait_for(hold.arrived.is_set, "the submit to reach kling")
                wait_for(lambda: len(state.tasks) == 1, "kling to create the task")
            finally:
                server.kill()
            [stored] = stored_jobs(data_dir).values()
            assert (stored["status"], stored["remote_id"]) == ("pending", None)
            [task] = state.tasks.values()
            assert task.request.external_task_id == stored["job_id"]

            views = await restart_and_finish_all(env_for(base, data_dir), {"held": stored["job_id"]})
        finally:
            hold.release.set()
    assert views["held"]["status"] == "succeeded", views["held"]
    assert state.count("submit") == 1
    assert state.of("poll") and all(r.path.endswith("/" + stored["job_id"]) for r in state.of("poll"))

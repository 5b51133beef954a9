"""A newcomer's first hour with the command line: what the terminal says, where files go, and costs and
errors that tell the truth."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import ROOT, _env, assert_mp4, cli  # noqa: F401 - _env is the autouse environment fixture


def test_bare_kling_mcp_on_a_terminal_says_it_waits_for_a_client(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_MCP_")}
    env["KLING_MCP_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "kling_mcp"], stdin=follower, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env)
    os.close(follower)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "nothing on stderr within 30 s"
        line = proc.stderr.readline().decode()
    finally:
        proc.kill()
        proc.wait(10)
        os.close(leader)
    assert "waiting for an MCP client" in line and "kling-mcp demo" in line


def test_help_shows_the_data_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli(capsys, "jobs", "--help")
    out = capsys.readouterr().out
    assert "Datadirnow:" + str(tmp_path / "data") in "".join(out.split())  # argparse wraps long paths


def test_output_saves_the_video_where_the_user_wants(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    wanted = tmp_path / "mine" / "boat.mp4"
    code, out, err = cli(capsys, "generate", "a paper boat", "--duration", "3", "--output", str(wanted))
    assert code == 0, err
    assert assert_mp4(out) == wanted and f"saved to {wanted}" in err
    folder = tmp_path / "folder"
    folder.mkdir()
    job_id = next(line.split()[1] for line in err.splitlines() if line.startswith("job "))
    code, out, err = cli(capsys, "check", job_id[:8], "--output", str(folder))
    assert code == 0, err
    assert assert_mp4(out).parent == folder


def test_ambiguous_or_unknown_prefixes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "check", "abcdef12")
    assert code == 1 and "no job 'abcdef12'" in err


def test_estimate_exits_non_zero_when_nothing_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "estimate", "a paper boat", "--provider", "runpod")
    assert code == 1 and "no configured provider accepts this request" in err


def test_a_job_that_never_reached_the_provider_shows_no_cost(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNWARE_API_KEY", "rw-test-key-0000")
    monkeypatch.setenv("KLING_MCP_RUNWARE_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: refused
    code, _, err = cli(capsys, "generate", "a paper boat at dawn", "--provider", "runware", "--duration", "5")
    assert code == 1, err
    code, out, _ = cli(capsys, "jobs")
    [row] = [line for line in out.splitlines() if "runware" in line]
    assert "failed" in row and "$" not in row


def test_no_wait_on_local_says_the_render_pauses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "generate", "a red kite", "--duration", "3", "--no-wait")
    assert code == 0
    assert "pauses when this command exits" in err and out.strip() in err
    started = time.monotonic()
    code, out, err = cli(capsys, "check", out.strip(), "--wait", "60")
    assert code == 0 and time.monotonic() - started < 60, err


def test_a_finished_local_job_leaves_no_scratch_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "generate", "a paper boat", "--duration", "3")
    assert code == 0, err
    job_id = Path(out.strip()).parent.name
    assert not (tmp_path / "data" / "work" / job_id).exists()

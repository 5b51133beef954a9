"""The command line for people without an MCP client: estimate, generate, edit, jobs, check,
last-frame, on the free `local` provider with the data dir in tmp."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kling_mcp.catalog import PROVIDERS
from kling_mcp.cli import PLAIN_SERVE, _parser, main, parse
from kling_mcp.cli_output import ProgressBar, cli_text, table
from kling_mcp.jobs.model import JobStatus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.startswith("KLING_MCP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KLING_MCP_DATA_DIR", str(tmp_path / "data"))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_mp4(path: str) -> Path:
    video = Path(path.strip())
    assert video.is_file(), path
    assert video.read_bytes()[4:8] == b"ftyp"
    return video


# --- estimate ------------------------------------------------------------------------------------------

def test_estimate_prints_a_table_of_quotes(capsys):
    code, out, _ = cli(capsys, "estimate", "a paper boat", "--duration", "5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "text, 5 s" and lines[2] == "standard tier:" and "pro tier:" in lines
    assert lines[3].split() == ["provider", "tier", "model", "supported", "cost", "basis", "problems"]
    block = lines[5:lines.index("pro tier:") - 1]
    rows = {line.split()[0]: line for line in block}
    assert set(rows) == set(PROVIDERS)
    assert "yes (set RUNWARE_API_KEY)" in rows["runware"] and "published" in rows["runware"]
    assert "yes (set KLING_ACCESS_KEY + KLING_SECRET_KEY (or KLING_API_KEY))" in rows["kling"]
    assert "$0.420" in rows["kling"] and "inferred" in rows["kling"]
    assert rows["local"].split()[3:6] == ["yes", "$0.000", "published"]
    assert "does not offer text-to-video" in rows["runpod"]
    assert "standard: auto picks local: run `kling-mcp generate --tier standard` (same flags)." in out


def test_estimate_json_and_edit_quotes(capsys, video_file):
    code, out, _ = cli(capsys, "estimate", "make it snow", "--video", str(video_file), "--json", "--tier", "pro")
    assert code == 0
    estimate = json.loads(out)
    assert estimate["operation"] == "edit" and estimate["duration_s"] == pytest.approx(4.0, abs=0.1)
    assert {q["provider"] for q in estimate["quotes"]} == set(PROVIDERS)


def test_estimate_errors_name_the_flag_to_change(capsys, image_file):
    code, _, err = cli(capsys, "estimate", "x", "--last-frame", str(image_file))
    assert code == 1
    assert "--last-frame needs a --first-frame; pass --first-frame too." in err


# --- generate / check / jobs ----------------------------------------------------------------------------

def test_generate_waits_with_progress_and_prints_the_path(capsys):
    code, out, err = cli(capsys, "generate", "a paper boat", "--duration", "3", "--aspect-ratio", "9:16")
    assert code == 0, err
    video = assert_mp4(out)
    assert video.parent.parent == Path(os.environ["KLING_MCP_DATA_DIR"]) / "videos"
    assert "[##############################] 100.0%  succeeded" in err
    assert "360x640, 3.0 s" in err and "resource kling://jobs/" in err


def test_no_wait_then_check(capsys):
    code, out, err = cli(capsys, "generate", "a red kite", "--duration", "3", "--no-wait")
    assert code == 0, err
    job_id = out.strip()
    assert f"kling-mcp check {job_id} --wait 300" in err
    code, out, err = cli(capsys, "check", job_id, "--wait", "60")
    assert code == 0, err
    assert_mp4(out)
    code, out, _ = cli(capsys, "check", job_id, "--json")
    assert code == 0 and json.loads(out)["status"] == "succeeded"


def test_timeout_leaves_the_job_running_with_exit_3(capsys):
    code, out, err = cli(capsys, "generate", "a slow shot", "--duration", "3", "--timeout", "0")
    assert code == 3
    assert out == ""
    assert "is submitted" in err and "kling-mcp check" in err


def test_idempotency_key_returns_the_same_job(capsys):
    _, first, _ = cli(capsys, "generate", "a lighthouse", "--duration", "3", "--idempotency-key", "shot-1",
                      "--no-wait")
    code, second, err = cli(capsys, "generate", "a lighthouse", "--duration", "3", "--idempotency-key", "shot-1",
                            "--no-wait")
    assert code == 0 and first == second
    assert "Returned the existing job for --idempotency-key='shot-1'" in err


def test_jobs_table_and_filters(capsys):
    _, path, _ = cli(capsys, "generate", "first", "--duration", "3")
    code, _, _ = cli(capsys, "generate", "second", "--duration", "3", "--timeout", "0")
    assert code == 3
    code, out, _ = cli(capsys, "jobs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["job_id", "status", "provider", "operation", "progress", "cost", "created", "prompt"]
    assert [line.split()[-1] for line in lines[2:]] == ["second", "first"]      # newest first
    _, out, _ = cli(capsys, "jobs", "--status", "succeeded", "--json")
    listing = json.loads(out)
    assert listing["count"] == 1 and listing["jobs"][0]["videos"][0]["path"] == path.strip()
    _, out, _ = cli(capsys, "jobs", "--limit", "1")
    assert len(out.splitlines()) == 3
    code, out, err = cli(capsys, "jobs", "--status", "failed")
    assert code == 0 and out == "" and "No jobs with status failed" in err


def test_cancel_a_running_job(capsys):
    _, job_id, _ = cli(capsys, "generate", "a long shot", "--duration", "10", "--timeout", "0", "--json")
    job_id = json.loads(job_id)["job_id"]
    code, out, err = cli(capsys, "cancel", job_id)
    assert code == 0 and out.strip() == "cancelled", err
    assert f"Cancelled job {job_id} at local." in err
    code, _, err = cli(capsys, "check", job_id)
    assert code == 1 and "cancelled" in err
    code, out, err = cli(capsys, "cancel", job_id)
    assert code == 0 and out.strip() == "cancelled" and "already finished" in err


def test_check_unknown_job_says_how_to_find_one(capsys):
    code, out, err = cli(capsys, "check", "nope")
    assert code == 1 and out == ""
    assert "[unknown_job] no job 'nope'" in err and "`kling-mcp jobs`" in err


def test_provider_without_key_is_refused_with_the_variable_to_set(capsys):
    code, _, err = cli(capsys, "generate", "x", "--provider", "runware")
    assert code == 1
    assert "RUNWARE_API_KEY is not set" in err


# --- edit and continuity ---------------------------------------------------------------------------------

def test_edit_and_last_frame_continuity(capsys, tmp_path):
    _, out, _ = cli(capsys, "generate", "shot one", "--duration", "3")
    first = assert_mp4(out)
    code, out, err = cli(capsys, "last-frame", str(first), "-o", str(tmp_path / "last.png"))
    assert code == 0, err
    png = Path(out.strip())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = cli(capsys, "generate", "shot two", "--first-frame", str(png), "--duration", "3")
    assert code == 0, err
    assert_mp4(out)
    code, out, err = cli(capsys, "edit", "make it snow", "--video", str(first), "--reference-image", str(png))
    assert code == 0, err
    assert_mp4(out)
    code, out, _ = cli(capsys, "jobs", "--json")
    assert [j["operation"] for j in json.loads(out)["jobs"]] == ["edit", "image", "text"]


# --- rendering helpers ----------------------------------------------------------------------------------

def _job(status: str, progress: float) -> SimpleNamespace:
    return SimpleNamespace(status=JobStatus(status), progress=progress, provider="local")


def test_progress_bar_redraws_one_line_on_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream, tty=True, width=10)
    bar.update(_job("running", 50))
    bar.update(_job("running", 100))
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 1
    assert "\r[#####.....]  50.0%  running" in text and "[##########] 100.0%" in text


def test_progress_bar_prints_only_changes_to_a_log():
    stream = io.StringIO()
    bar = ProgressBar(stream, tty=False, width=4)
    for progress in (0, 1, 2, 50, 55, 100):
        bar.update(_job("running", progress))
    assert "\r" not in stream.getvalue()
    assert len(stream.getvalue().splitlines()) == 3      # 0-9 %, 50-59 %, 100 %


def test_table_and_cli_text():
    assert table([["a", "long value"], ["bbb", "x"]], ["k", "v"]).splitlines() == [
        "k    v", "---  -", "a    long value", "bbb  x"]
    assert cli_text("call check_job with job_id; pass reference_images and first_frame") == (
        "call `kling-mcp check` with job_id; pass --reference-image and --first-frame")


def test_serve_is_read_as_the_parser_reads_it():
    # `kling-mcp` and `kling-mcp serve` skip building the parser (cli.parse): the result must not differ.
    assert vars(parse(["serve"])) == vars(_parser().parse_args(["serve"])) == PLAIN_SERVE
    assert vars(parse([])) == vars(_parser().parse_args([]))


# --- the real console script ------------------------------------------------------------------------------

@pytest.mark.slow
def test_console_script_exit_codes_and_several_videos(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env["KLING_MCP_DATA_DIR"] = str(tmp_path / "data")
    run = [sys.executable, "-m", "kling_mcp"]
    done = subprocess.run([*run, "generate", "two takes", "--duration", "3", "--num-videos", "2"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    paths = done.stdout.split()
    assert len(paths) == 2 and all(assert_mp4(p) for p in paths)
    bad = subprocess.run([*run, "jobs"], env={**env, "KLING_MCP_DEFAULT_PROVIDER": "bogus"}, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "KLING_MCP_DEFAULT_PROVIDER='bogus' is not a provider" in bad.stderr
    usage = subprocess.run([*run, "generate"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert usage.returncode == 2 and "prompt" in usage.stderr


def test_serve_pauses_garbage_collection_only_while_the_server_is_built() -> None:
    import gc

    from kling_mcp.cli import _collecting_after_start

    assert gc.isenabled()
    try:
        with _collecting_after_start():
            assert not gc.isenabled()
            built = [[] for _ in range(1000)]  # start-up objects that live as long as the server
        assert gc.isenabled() and gc.get_freeze_count() >= len(built)  # collecting again, start-up skipped
    finally:
        gc.unfreeze()

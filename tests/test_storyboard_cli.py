"""``kling-mcp storyboard FILE.json``, ``kling-mcp retake`` and ``kling-mcp assemble`` on the free ``local``
provider, with the data dir in tmp."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import pytest

from kling_mcp.cli import main


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.startswith("KLING_MCP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KLING_MCP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KLING_MCP_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("KLING_MCP_POLL_MAX_INTERVAL_S", "0.2")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def seconds(path: str) -> float:
    with av.open(path.strip()) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(video=0)) / float(stream.average_rate)


def test_storyboard_from_a_file_prints_a_line_per_shot_and_the_joined_video(capsys, tmp_path):
    board = tmp_path / "board.json"
    board.write_text(json.dumps({"shots": [{"prompt": "a paper boat in a puddle", "duration": 3},
                                           {"prompt": "the boat drifts into a stream", "duration": 4}],
                                 "style": "watercolour"}))
    code, out, err = cli(capsys, "storyboard", str(board), "--aspect-ratio", "9:16", "-o", str(tmp_path / "out.mp4"))
    assert code == 0, err
    assert out.strip() == str((tmp_path / "out.mp4").resolve())
    assert seconds(out) == pytest.approx(7.0, abs=0.1)
    for line in ("shot 1/2: pending", "shot 1/2: succeeded (job", "shot 2/2: succeeded (job"):
        assert line in err, err
    board_id = next(w for w in err.split() if len(w) == 36 and w.count("-") == 4)

    code, listing, _ = cli(capsys, "jobs", "--json")
    jobs = json.loads(listing)["jobs"]
    (stored,) = [j for j in jobs if j["operation"] == "storyboard"]
    first_take = next(j for j in jobs if j["storyboard_id"] == stored["job_id"] and j["shot"] == 2)["job_id"]

    code, out, err = cli(capsys, "retake", stored["job_id"][:8], "2", "--prompt", "the boat reaches the sea",
                         "--duration", "3", "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["retake_of"] == stored["job_id"] and view["shots"][1]["job_id"] != first_take
    assert view["shots"][1]["prompt"] == "the boat reaches the sea"
    assert seconds(view["videos"][0]["path"]) == pytest.approx(6.0, abs=0.1)
    assert board_id


def test_a_bad_storyboard_file_is_refused_with_the_reason(capsys, tmp_path):
    board = tmp_path / "board.json"
    board.write_text(json.dumps([{"prompt": "a boat", "duration": 30}]))
    code, _, err = cli(capsys, "storyboard", str(board))
    assert code == 1 and "shot 1" in err and "duration 30" in err
    board.write_text("{not json")
    code, _, err = cli(capsys, "storyboard", str(board))
    assert code == 1 and "cannot read" in err


def test_assemble_joins_videos_in_order(capsys, tmp_path, video_file):
    code, out, err = cli(capsys, "generate", "a lighthouse at night", "--duration", "3")
    assert code == 0, err
    code, out, err = cli(capsys, "assemble", out.strip(), str(video_file), "--transition", "crossfade")
    assert code == 0, err
    assert seconds(out) == pytest.approx(3 + 4 - 0.5, abs=0.1)
    code, _, err = cli(capsys, "assemble", str(video_file))
    assert code == 2 and "2-50 videos" in err


def test_the_example_storyboard_file_is_a_valid_request():
    from kling_mcp.storyboard_models import StoryboardRequest

    example = Path(__file__).resolve().parents[1] / "examples" / "storyboard.json"
    request = StoryboardRequest(**json.loads(example.read_text()))
    assert len(request.shots) == 3 and request.continuity == "chain"

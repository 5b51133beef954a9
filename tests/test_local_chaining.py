"""Local previews reused as inputs (issue 14, item 6), through the MCP client on ``local``.

A shot rendered from a flat grey picture is grey under its badge and caption. Its last frame starts
the next shot and the preview itself is edited: each result must show exactly its own badge and
caption over the clean picture (grey, or the edit's colour grade of grey) - no remnant of the
earlier caption - and an edit must visibly change the picture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from kling_mcp import frames, preview
from kling_mcp.config import Settings
from kling_mcp.preview_grade import grade_for
from kling_mcp.server import create_server
from tests.emulators._media import png_bytes

pytestmark = pytest.mark.anyio

GREY = (128, 128, 128)
LONG_PROMPT = (
    "a lighthouse keeper climbs the spiral stairs at dusk while gulls circle the lamp and waves break "
    "on the rocks far below, rain streaking the windows"
)


def _client(tmp_path: Path) -> Client:
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
                                  "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})
    return Client(create_server(settings))


async def _call(client: Client, tool: str, **args: object) -> dict:
    result = await client.call_tool(tool, {"provider": "local", "wait_seconds": 50, **args})
    assert not result.is_error, result.content
    job = result.structured_content
    assert job["status"] == "succeeded", job
    return job


def _frame(path: str, index: int):
    import av

    with av.open(path) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame {index} in {path}")


def _overlay_mask(width: int, height: int, prompt: str, grow: int = 3):
    """Where render_preview draws its badge and caption for ``prompt`` (boxes grown by ``grow`` px)."""
    import numpy as np

    mask = np.zeros((height, width), dtype=bool)
    for y0, y1, x0, x1, *_ in preview._Overlay(width, height, prompt, "LOCAL PREVIEW - not Kling").patches:
        mask[max(0, y0 - grow) : y1 + grow, max(0, x0 - grow) : x1 + grow] = True
    return mask


def _outside(frame, prompt: str):
    """The pixels of ``frame`` that its own badge and caption do not cover, as an (n, 3) float array."""
    h, w = frame.shape[:2]
    return frame[~_overlay_mask(w, h, prompt)].astype(float)


def _box_background(frame, prompt: str):
    """Mean colour of the caption box's darkened background (its top rows above the text)."""
    h, w = frame.shape[:2]
    y0, _, x0, x1, *_ = preview._Overlay(w, h, prompt, "LOCAL PREVIEW - not Kling").patches[-1]
    return frame[y0 + 1 : y0 + 3, x0 + 4 : x1 - 4].reshape(-1, 3).mean(axis=0)


async def test_a_chained_and_an_edited_local_preview_show_one_caption_over_a_clean_picture(tmp_path: Path):
    grey = tmp_path / "grey.png"
    grey.write_bytes(png_bytes(640, 360, GREY))
    async with _client(tmp_path) as client:
        shot1 = await _call(client, "generate_video", prompt=LONG_PROMPT, first_frame=str(grey), duration=3)
        video1 = shot1["videos"][0]["path"]
        last = _frame(video1, 71)
        assert (_outside(last, LONG_PROMPT) - 128).__abs__().mean() < 3  # shot 1: grey beyond its overlay
        assert _overlay_mask(640, 360, LONG_PROMPT).sum() > 640 * 360 * 0.15  # a tall, 4-line caption

        # The next shot starts from shot 1's last frame (the PNG the last-frame resource serves).
        start = frames.frame_png(Path(video1), "last")
        short = "now night falls"
        shot2 = await _call(client, "generate_video", prompt=short, first_frame=str(start), duration=3)
        first = _frame(shot2["videos"][0]["path"], 0)
        clean = _outside(first, short)
        # One caption: everything beyond shot 2's own badge and caption is the clean grey picture,
        # including where shot 1's tall caption was (it would be dark, with white text).
        assert abs(clean - 128).mean() < 3 and (abs(clean - 128).max(axis=1) > 40).mean() < 0.002
        box = _box_background(first, short)
        assert box == pytest.approx([128 * 105 / 255] * 3, abs=6)  # darkened once, not twice

        # An edit of shot 1 grades its clean picture and carries only the edit's caption.
        instruction = "make it night time"
        edited = await _call(client, "edit_video", prompt=instruction, video=video1)
        graded = grade_for(instruction)[1](__import__("numpy").full((1, 1, 3), 128, dtype="uint8")).reshape(3)
        out = _frame(edited["videos"][0]["path"], 40)
        beyond = _outside(out, instruction)
        assert abs(beyond - graded).mean() < 4 and (abs(beyond - graded).max(axis=1) > 40).mean() < 0.002
        assert beyond.mean(axis=0)[2] > beyond.mean(axis=0)[0] + 15 and beyond.mean() < 90  # darker and blue
        assert abs(beyond - 128).mean() > 40  # visibly changed


def test_grades_follow_the_words_of_the_prompt():
    import numpy as np

    frame = np.full((4, 4, 3), (120, 140, 160), dtype=np.uint8)

    def mean(prompt: str):
        return grade_for(prompt)[1](frame).reshape(-1, 3).mean(axis=0)

    night, sunset, noir = mean("make it night time"), mean("a warm sunset glow"), mean("film noir")
    assert night.mean() < 0.6 * frame.mean() and night[2] > night[0]
    assert sunset[0] > sunset[2] + 40
    assert noir[0] == noir[1] == noir[2]
    assert grade_for("make the car red")[0] == "tint red" and mean("make the car red")[0] > mean("make the car red")[2]
    other, again, different = mean("add a hat"), mean("add a hat"), mean("add two hats")
    assert (other == again).all() and abs(other - frame.reshape(-1, 3).mean(axis=0)).max() > 15
    assert grade_for("add a hat")[0] != grade_for("add two hats")[0] and not (other == different).all()

"""Storyboards, retakes, assembly and ``kling://`` inputs end to end through the SDK's in-memory client on
the ``local`` provider, in both protocol eras."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import av
import pytest
from mcp import Client

from kling_mcp.config import Settings
from kling_mcp.server import create_server
from tests.support import read_store

pytestmark = pytest.mark.anyio

ERAS = ["auto", "legacy"]
TERMINAL = ("succeeded", "failed", "cancelled")
SHOTS = [
    {"prompt": "a red fox wakes up in a snowy forest", "duration": 3},
    {"prompt": "the fox trots to a frozen river", "duration": 3},
    {"prompt": "the fox curls up by the river and sleeps", "duration": 4},
]


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_POLL_INTERVAL_S": "0.05",
                              "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2", **env})


def _client(tmp_path: Path, era: str = "auto", **env: str) -> Client:
    return Client(create_server(_settings(tmp_path, **env)), mode=era)


async def _call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def _finished(client: Client, view: dict[str, Any], timeout_calls: int = 20) -> dict[str, Any]:
    for _ in range(timeout_calls):
        if view["status"] in TERMINAL:
            return view
        view = await _call(client, "check_job", {"job_id": view["job_id"], "wait_seconds": 20})
    raise AssertionError(f"job {view['job_id']} did not finish: {view['status']}")


def _decoded(path: str) -> tuple[int, int, float]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return stream.codec_context.width, stream.codec_context.height, frames / float(stream.average_rate)


async def _read_png(client: Client, uri: str) -> bytes:
    read = await client.read_resource(uri)
    assert read.contents[0].mime_type == "image/png"
    data = base64.b64decode(read.contents[0].blob)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _shot_inputs(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Each job's stored spec, read from the store the server used (after it has closed)."""

    async def specs(store: Any) -> dict[str, dict[str, Any]]:
        return {job.job_id: job.spec.model_dump() for job in await store.list_jobs(limit=500)}

    return read_store(tmp_path / "data", specs)


@pytest.mark.parametrize("era", ERAS)
async def test_a_chained_board_runs_shot_after_shot_from_the_last_frame_and_assembles(tmp_path, era):
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async with _client(tmp_path, era) as client:
        result = await client.call_tool("generate_storyboard", {
            "shots": SHOTS, "aspect_ratio": "16:9", "style": "watercolour, soft light", "wait_seconds": 45,
            "idempotency_key": "fox-board"}, progress_callback=on_progress)
        assert not result.is_error, result.content[0].text
        board = await _finished(client, result.structured_content)
        assert board["status"] == "succeeded", board
        assert (board["operation"], board["provider"], board["continuity"]) == ("storyboard", "local", "chain")
        assert board["cost_usd"] == 0.0 and board["estimated_cost_usd"] == 0.0
        shots = board["shots"]
        assert [s["shot"] for s in shots] == [1, 2, 3]
        assert [s["operation"] for s in shots] == ["text", "image", "image"]
        assert [s["status"] for s in shots] == ["succeeded"] * 3
        assert [s["prompt"] for s in shots] == [s["prompt"] for s in SHOTS]
        # The assembled MP4 is the board's video: every shot, back to back.
        (video,) = board["videos"]
        assert video["uri"] == f"kling://jobs/{board['job_id']}/videos/0"
        width, height, seconds = _decoded(video["path"])
        assert (width, height) == (640, 360) and seconds == pytest.approx(10.0, abs=0.1)
        assert video["duration_s"] == pytest.approx(10.0, abs=0.1)
        links = [str(b.uri) for b in result.content if b.type == "resource_link"] or [video["uri"]]
        assert video["uri"] in links or result.structured_content["status"] != "succeeded"
        # Chained shots ran one after another: each was created after the previous one finished.
        views = {s["shot"]: await _call(client, "check_job", {"job_id": s["job_id"]}) for s in shots}
        for n in (2, 3):
            assert views[n]["created_at"] >= views[n - 1]["updated_at"] - 1e-3
            assert (views[n]["storyboard_id"], views[n]["shot"]) == (board["job_id"], n)
        last_frames = {n: await _read_png(client, f"{views[n]['videos'][0]['uri']}/last-frame") for n in (1, 2)}
        # The same key returns the same board.
        again = await _call(client, "generate_storyboard", {"shots": SHOTS, "aspect_ratio": "16:9",
                                                           "style": "watercolour, soft light",
                                                           "idempotency_key": "fox-board"})
        assert again["job_id"] == board["job_id"] and "nothing new was billed" in again["note"]
        listed = (await _call(client, "list_jobs", {}))["jobs"]
    assert sum(1 for j in listed if j["operation"] == "storyboard") == 1
    assert sorted(j["shot"] for j in listed if j["storyboard_id"] == board["job_id"]) == [1, 2, 3]
    assert len(set(updates)) >= 3 and updates == sorted(updates), updates  # the board's progress, rising
    # Shots 2 and 3 were given exactly the previous shot's last frame as their first frame.
    specs = _shot_inputs(tmp_path)
    for n in (2, 3):
        first = specs[shots[n - 1]["job_id"]]["first_frame"]
        assert first is not None and first["sha256"] == hashlib.sha256(last_frames[n - 1]).hexdigest()
        assert "watercolour, soft light" in specs[shots[n - 1]["job_id"]]["prompt"]
    assert specs[shots[0]["job_id"]]["first_frame"] is None


@pytest.mark.parametrize("era", ERAS)
async def test_an_unchained_board_runs_its_shots_at_once_and_crossfades(tmp_path, era):
    async with _client(tmp_path, era) as client:
        board = await _call(client, "generate_storyboard", {
            "shots": SHOTS, "continuity": "none", "aspect_ratio": "1:1", "transition": "crossfade",
            "transition_s": 0.5, "wait_seconds": 45})
        board = await _finished(client, board)
        assert board["status"] == "succeeded", board
        assert [s["operation"] for s in board["shots"]] == ["text"] * 3
        views = [await _call(client, "check_job", {"job_id": s["job_id"]}) for s in board["shots"]]
    # Every shot existed before the first one finished.
    assert max(v["created_at"] for v in views) < min(v["updated_at"] for v in views)
    width, height, seconds = _decoded(board["videos"][0]["path"])
    assert (width, height) == (480, 480)
    assert seconds == pytest.approx(10.0 - 2 * 0.5, abs=0.1)  # each crossfade overlaps two shots


@pytest.mark.parametrize("era", ERAS)
async def test_retake_keeps_the_other_takes_and_cascade_remakes_the_later_chained_shots(tmp_path, era):
    async with _client(tmp_path, era) as client:
        board = await _finished(client, await _call(client, "generate_storyboard", {
            "shots": SHOTS, "wait_seconds": 45}))
        first_ids = [s["job_id"] for s in board["shots"]]

        plain = await _call(client, "retake_shot", {"job_id": board["job_id"], "shot": 2,
                                                    "prompt": "the fox leaps over the frozen river",
                                                    "duration": 5, "wait_seconds": 45})
        plain = await _finished(client, plain)
        assert plain["status"] == "succeeded" and plain["retake_of"] == board["job_id"]
        assert plain["job_id"] != board["job_id"]
        ids = [s["job_id"] for s in plain["shots"]]
        assert ids[0] == first_ids[0] and ids[2] == first_ids[2] and ids[1] != first_ids[1]
        assert plain["shots"][1]["prompt"] == "the fox leaps over the frozen river"
        assert plain["shots"][1]["takes"] == 2
        assert _decoded(plain["videos"][0]["path"])[2] == pytest.approx(3 + 5 + 4, abs=0.1)
        # The old take and the old board stay as they were.
        old_take = await _call(client, "check_job", {"job_id": first_ids[1]})
        assert old_take["status"] == "succeeded" and Path(old_take["videos"][0]["path"]).is_file()
        old_board = await _call(client, "check_job", {"job_id": board["job_id"]})
        assert old_board["videos"] == board["videos"] and [s["job_id"] for s in old_board["shots"]] == first_ids

        cascade = await _finished(client, await _call(client, "retake_shot", {
            "job_id": plain["job_id"], "shot": 2, "cascade": True, "wait_seconds": 45}))
        assert cascade["status"] == "succeeded"
        cascade_ids = [s["job_id"] for s in cascade["shots"]]
        assert cascade_ids[0] == ids[0] and cascade_ids[1] != ids[1] and cascade_ids[2] != ids[2]
        new_two = await _call(client, "check_job", {"job_id": cascade_ids[1]})
        frame = await _read_png(client, f"{new_two['videos'][0]['uri']}/last-frame")
        running = await _call(client, "retake_shot", {"job_id": cascade["job_id"], "shot": 1, "wait_seconds": 0})
        refused = await client.call_tool("retake_shot", {"job_id": running["job_id"], "shot": 1})
        assert refused.is_error and "still" in refused.content[0].text
        no_shot = await client.call_tool("retake_shot", {"job_id": cascade["job_id"], "shot": 4})
        assert no_shot.is_error and "has 3 shot(s)" in no_shot.content[0].text
        not_board = await client.call_tool("retake_shot", {"job_id": cascade_ids[0], "shot": 1})
        assert not_board.is_error and "not a storyboard" in not_board.content[0].text
        await _finished(client, running)
    specs = _shot_inputs(tmp_path)
    assert specs[cascade_ids[2]]["first_frame"]["sha256"] == hashlib.sha256(frame).hexdigest()
    assert specs[ids[2]]["first_frame"]["sha256"] != specs[cascade_ids[2]]["first_frame"]["sha256"]


@pytest.mark.parametrize("era", ERAS)
async def test_a_failed_shot_fails_the_board_naming_it_and_a_retake_finishes_it(tmp_path, era, image_file):
    closing = tmp_path / "closing.png"
    closing.write_bytes(image_file.read_bytes())
    shots = [{"prompt": "a slow sunrise over dunes", "duration": 10},
             {"prompt": "the sun climbs over the dunes", "duration": 3, "last_frame": str(closing)},
             {"prompt": "noon over the dunes", "duration": 3}]
    async with _client(tmp_path, era) as client:
        board = await _call(client, "generate_storyboard", {"shots": shots, "tier": "pro", "wait_seconds": 0})
        closing.unlink()  # shot 2 starts after shot 1 (seconds from now) and finds its last_frame gone
        board = await _finished(client, board)
        assert board["status"] == "failed", board
        assert [s["status"] for s in board["shots"]] == ["succeeded", "failed", "pending"]
        assert board["shots"][2]["job_id"] is None           # nothing was started after the failure
        assert board["error"]["message"].startswith("shot 2 failed")
        assert "retake_shot" in board["next_action"] and "shot=2" in board["next_action"]
        assert board["videos"] == []

        closing.write_bytes(image_file.read_bytes())
        retake = await _finished(client, await _call(client, "retake_shot", {
            "job_id": board["job_id"], "shot": 2, "wait_seconds": 45}))
    assert retake["status"] == "succeeded", retake
    assert retake["shots"][0]["job_id"] == board["shots"][0]["job_id"]
    assert _decoded(retake["videos"][0]["path"])[2] == pytest.approx(16.0, abs=0.1)


@pytest.mark.parametrize("era", ERAS)
async def test_a_bad_shot_is_refused_before_anything_starts(tmp_path, era, image_file):
    async with _client(tmp_path, era) as client:
        long = await client.call_tool("generate_storyboard", {
            "shots": [{"prompt": "a calm lake"}, {"prompt": "a storm over the lake", "duration": 12}]})
        refs = await client.call_tool("generate_storyboard", {
            "shots": [{"prompt": "a calm lake"}, {"prompt": "a storm"}], "reference_images": [str(image_file)]})
        missing = await client.call_tool("generate_storyboard", {
            "shots": [{"prompt": "a lake", "first_frame": "/no/such/frame.png"}]})
        unknown = await client.call_tool("generate_storyboard", {"shots": [{"prompt": "x", "seconds": 3}]})
        listed = await _call(client, "list_jobs", {})
    assert long.is_error and "shot 2" in long.content[0].text and "duration 12" in long.content[0].text
    assert refs.is_error and "shot 2 (continuity='chain'" in refs.content[0].text
    assert "continuity='none'" in refs.content[0].text
    assert missing.is_error and "shot 1" in missing.content[0].text and "does not exist" in missing.content[0].text
    assert unknown.is_error
    assert listed["count"] == 0


@pytest.mark.parametrize("era", ERAS)
async def test_results_are_inputs_and_their_frames_are_resources(tmp_path, era, video_file):
    async with _client(tmp_path, era) as client:
        first = await _call(client, "generate_video", {"prompt": "a paper boat on a pond", "duration": 3,
                                                       "wait_seconds": 30})
        uri = first["videos"][0]["uri"]
        png = await _read_png(client, f"{uri}/last-frame")
        assert (await _read_png(client, f"{uri}/first-frame")) != png
        follow = await _call(client, "generate_video", {"prompt": "the boat reaches the bank", "duration": 3,
                                                        "first_frame": f"{uri}/last-frame", "wait_seconds": 30})
        assert follow["operation"] == "image" and follow["status"] == "succeeded"
        ref = await _call(client, "generate_video", {"prompt": "the same boat at sea", "duration": 3,
                                                     "reference_images": [f"{uri}/first-frame"], "wait_seconds": 30})
        assert ref["operation"] == "reference" and ref["status"] == "succeeded"
        edit = await _call(client, "edit_video", {"prompt": "make it night", "video": uri, "wait_seconds": 30})
        assert edit["operation"] == "edit" and edit["status"] == "succeeded"
        assert edit["videos"][0]["duration_s"] == pytest.approx(3.0, abs=0.1)
        joined = await _finished(client, await _call(client, "assemble_video", {
            "videos": [uri, edit["videos"][0]["uri"], str(video_file)], "wait_seconds": 45}))
        assert (joined["operation"], joined["provider"], joined["status"]) == ("assemble", "local", "succeeded")
        assert joined["cost_usd"] == 0.0
        width, height, seconds = _decoded(joined["videos"][0]["path"])
        assert (width, height) == (640, 360) and seconds == pytest.approx(3 + 3 + 4, abs=0.15)

        running = await _call(client, "generate_video", {"prompt": "a long slow pan", "duration": 10,
                                                         "tier": "pro", "wait_seconds": 0})
        errors = {
            "unknown": await client.call_tool("generate_video", {
                "prompt": "x y", "first_frame": "kling://jobs/nope/videos/0/last-frame"}),
            "unfinished": await client.call_tool("edit_video", {
                "prompt": "x y", "video": f"kling://jobs/{running['job_id']}/videos/0"}),
            "video_for_image": await client.call_tool("generate_video", {"prompt": "x y", "first_frame": uri}),
            "no_such_video": await client.call_tool("edit_video", {"prompt": "x y", "video": uri[:-1] + "7"}),
            "one_video": await client.call_tool("assemble_video", {"videos": [uri]}),
        }
        await client.call_tool("cancel_job", {"job_id": running["job_id"]})
    text = {name: r.content[0].text for name, r in errors.items()}
    assert all(r.is_error for r in errors.values()), text
    assert "unknown_job" in text["unknown"] and "nope" in text["unknown"]
    assert "not finished" in text["unfinished"] and "check_job" in text["unfinished"]
    assert "needs an image" in text["video_for_image"] and "/last-frame" in text["video_for_image"]
    assert "no video 7" in text["no_such_video"]
    assert png[:4] == b"\x89PNG"


async def test_cancelling_a_board_cancels_its_unfinished_shots(tmp_path):
    shots = [{"prompt": f"a long pan over mountains, part {n}", "duration": 10} for n in (1, 2, 3)]
    async with _client(tmp_path) as client:
        board = await _call(client, "generate_storyboard", {"shots": shots, "continuity": "none", "tier": "pro",
                                                            "wait_seconds": 0.5})
        board = await _call(client, "check_job", {"job_id": board["job_id"], "wait_seconds": 0.5})
        assert board["status"] == "running" and all(s["job_id"] for s in board["shots"])
        cancelled = await _call(client, "cancel_job", {"job_id": board["job_id"]})
        assert cancelled["status"] == "cancelled" and "unfinished shot(s)" in cancelled["message"]
        after = await _call(client, "check_job", {"job_id": board["job_id"]})
        takes = [await _call(client, "check_job", {"job_id": s["job_id"]}) for s in board["shots"]]
    assert after["status"] == "cancelled" and after["videos"] == []
    assert {t["status"] for t in takes} <= {"succeeded", "cancelled"}
    assert takes[-1]["status"] == "cancelled"  # local renders run one at a time: the last was still queued


async def test_tools_are_listed_with_short_descriptions(tmp_path):
    async with _client(tmp_path) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        prompt = await client.get_prompt("storyboard", {"topic": "a fox", "shots": "3"})
    for name in ("generate_storyboard", "retake_shot", "assemble_video"):
        assert tools[name].output_schema and len(tools[name].description) < 600, name
    shot = tools["generate_storyboard"].input_schema["$defs"]["ShotInput"]
    assert set(shot["properties"]) == {"prompt", "duration", "first_frame", "last_frame", "reference_images",
                                       "negative_prompt"}
    assert {"kling://jobs/{job_id}/videos/{index}/first-frame",
            "kling://jobs/{job_id}/videos/{index}/last-frame"} <= templates
    text = prompt.messages[0].content.text
    assert "generate_storyboard" in text and "retake_shot" in text


async def test_one_key_makes_one_board_and_is_bound_to_its_request(tmp_path):
    import anyio

    args = {"shots": SHOTS[:2], "idempotency_key": "two-callers", "wait_seconds": 0}
    views: list[dict[str, Any]] = []
    async with _client(tmp_path) as client:

        async def call() -> None:
            views.append(await _call(client, "generate_storyboard", args))

        async with anyio.create_task_group() as tg:  # two agents retrying at once
            tg.start_soon(call)
            tg.start_soon(call)
        other = await client.call_tool("generate_storyboard", {**args, "style": "noir"})
        board = await _finished(client, views[0])
        listed = (await _call(client, "list_jobs", {}))["jobs"]
    assert views[0]["job_id"] == views[1]["job_id"]
    assert other.is_error and "two-callers" in other.content[0].text and "style" in other.content[0].text
    assert board["status"] == "succeeded"
    assert sum(1 for j in listed if j["operation"] == "storyboard") == 1
    assert sum(1 for j in listed if j["storyboard_id"] == board["job_id"]) == 2

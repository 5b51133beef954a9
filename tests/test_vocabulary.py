"""Each vocabulary is declared once (kling_mcp/vocabulary.py, the request models) and every public surface
states the same names: the tool schemas, the CLI's choices and the texts the model reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp import catalog
from kling_mcp.cli import main
from kling_mcp.cli_options import flag
from kling_mcp.cli_output import cli_text
from kling_mcp.config import Settings
from kling_mcp.jobs.model import JobStatus
from kling_mcp.requests import EditRequest, EstimateRequest, GenerateRequest, said
from kling_mcp.server import create_server
from kling_mcp.storyboard_models import AssembleRequest, RetakeRequest, StoryboardRequest
from kling_mcp.vocabulary import OPERATIONS

STATUSES = [s.value for s in JobStatus]


async def _tools(tmp_path: Path) -> dict[str, dict[str, Any]]:
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data")})
    async with Client(create_server(settings)) as client:
        listed = (await client.list_tools()).tools
    return {t.name: t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed}


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.anyio
async def test_statuses_and_operations_are_the_same_names_everywhere(tmp_path: Path) -> None:
    tools = await _tools(tmp_path)
    assert tools["list_jobs"]["inputSchema"]["properties"]["status"]["enum"] == STATUSES
    job = tools["check_job"]["outputSchema"]["properties"]
    assert job["status"]["enum"] == STATUSES
    assert job["operation"]["enum"] == [*OPERATIONS, "storyboard", "assemble"]
    assert list(catalog.OPERATIONS) == list(OPERATIONS)
    assert "while it is pending, submitted, running or downloading;" in tools["check_job"]["description"]


def test_cli_status_choices_are_the_job_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert "{" + ",".join(STATUSES) + "}" in _help(capsys, "jobs")


@pytest.mark.anyio
async def test_each_request_field_is_one_declaration_stated_by_the_tool_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = await _tools(tmp_path)
    generate = tools["generate_video"]["inputSchema"]["properties"]
    edit = tools["edit_video"]["inputSchema"]["properties"]
    estimate = tools["estimate_cost"]["inputSchema"]["properties"]
    assert set(generate) == set(GenerateRequest.model_fields)
    assert set(edit) == set(EditRequest.model_fields)
    assert set(estimate) == set(EstimateRequest.model_fields)
    help_of = {command: _help(capsys, command) for command in ("generate", "edit", "estimate")}
    for name in GenerateRequest.model_fields:
        assert generate[name]["description"] == said(GenerateRequest, name), name
        if name == "wait_seconds":  # the CLI waits itself: --no-wait, --timeout
            continue
        expected = " ".join(cli_text(said(GenerateRequest, name)).split())
        shown = f"{flag(name)} " if name != "prompt" else "prompt "
        assert shown in help_of["generate"] and expected in help_of["generate"], name
    for name in EditRequest.model_fields:
        # A field generate_video states may be stated there once (its limits differ per tool).
        shared = name in GenerateRequest.model_fields and name != "prompt"
        allowed = {said(EditRequest, name), *(["As in generate_video."] if shared else [])}
        assert edit[name]["description"] in allowed, name
        if name != "wait_seconds":
            assert " ".join(cli_text(said(EditRequest, name)).split()) in help_of["edit"], name
    for name in EstimateRequest.model_fields:
        if name != "prompt":
            assert f"{flag(name)} " in help_of["estimate"], name
    assert estimate["video_duration_s"]["description"] == said(EstimateRequest, "video_duration_s")
    assert said(EstimateRequest, "video_duration_s") in help_of["estimate"]


def test_the_cli_builds_the_request_from_the_same_fields(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The derived options reach the request: twice the videos at twice the length quotes four times the cost."""
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_KEY", "_TOKEN")) or name.startswith("KLING_MCP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KLING_MCP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RUNWARE_API_KEY", "k")  # a quote never calls the provider

    def runware_usd(*flags: str) -> float:
        assert main(["estimate", "a cat", "--tier", "pro", "--provider", "runware", "--json", *flags]) == 0
        (quote,) = json.loads(capsys.readouterr().out)["quotes"]
        return float(quote["cost_usd"])

    one = runware_usd("--duration", "5")
    assert runware_usd("--duration", "10", "--num-videos", "2") == pytest.approx(4 * one)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "command", "model", "not_options"),
    [
        ("generate_storyboard", "storyboard", StoryboardRequest, {"shots", "assemble"}),  # the file; --no-assemble
        ("retake_shot", "retake", RetakeRequest, set()),
        ("assemble_video", "assemble", AssembleRequest, {"videos"}),  # positional, in CLI words
    ],
)
async def test_storyboard_fields_are_one_declaration_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tool: str, command: str, model: Any, not_options: set[str]
) -> None:
    schema = (await _tools(tmp_path))[tool]["inputSchema"]["properties"]
    shown = _help(capsys, command)
    assert set(schema) == set(model.model_fields)
    for name in model.model_fields:
        same_as_generate = name in GenerateRequest.model_fields and said(GenerateRequest, name) == said(model, name)
        allowed = {said(model, name), *(["As in generate_video."] if same_as_generate else [])}
        assert schema[name]["description"] in allowed, name
        if name in not_options | {"wait_seconds"}:
            continue
        assert " ".join(cli_text(said(model, name)).split()) in shown, name
        assert name in ("job_id", "shot") or f"{flag(name)} " in shown, name

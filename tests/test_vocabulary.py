"""Each vocabulary is declared once (kling_mcp/vocabulary.py, the request models) and every public surface
states the same names: the tool schemas, the CLI's choices and the texts the model reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_mcp import catalog
from kling_mcp.cli import main
from kling_mcp.config import Settings
from kling_mcp.jobs.model import JobStatus
from kling_mcp.server import create_server
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

"""Each vocabulary is declared once (kling_mcp/vocabulary.py, the request models) and every public surface
states the same names: the tool schemas, the CLI's choices, the texts the model reads and the inline player;
no module keeps a hand-written copy of a vocabulary's names."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from mcp import Client

import kling_mcp
from kling_mcp import catalog, errors
from kling_mcp.assembly import assemble
from kling_mcp.cli import main
from kling_mcp.cli_options import flag
from kling_mcp.cli_output import cli_text
from kling_mcp.config import Settings
from kling_mcp.jobs import postgres_store
from kling_mcp.jobs.composite import AssemblyRecord, BoardRecord
from kling_mcp.jobs.model import Job, JobStatus
from kling_mcp.requests import (
    EditRequest,
    EstimateRequest,
    GenerateRequest,
    JobView,
    MediaRef,
    Quote,
    ShotFields,
    VideoSpec,
    said,
)
from kling_mcp.server import create_server
from kling_mcp.server_apps import PLAYER_URI, VOCABULARY_SLOT, player_vocabulary
from kling_mcp.storyboard_models import AssembleRequest, BoardView, RetakeRequest, ShotInput, StoryboardRequest
from kling_mcp.views import AS_STORED, job_view
from kling_mcp.vocabulary import (
    ACTIVE_NAMES,
    CONTINUITIES,
    OPERATIONS,
    PRICE_BASES,
    STATUS_NAMES,
    TERMINAL_NAMES,
    TIER_RESOLUTIONS,
    TIERS,
    TRANSITIONS,
    UNSUCCESSFUL_NAMES,
    Composite,
)

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
    assert list(catalog.OPERATION_LABELS) == list(OPERATIONS)
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


# --- tiers, continuity, transitions, price bases: one Literal each, in vocabulary.py ------------------------

# Every vocabulary whose names were once spelled out in several modules, and the runs of its names (quoted,
# comma-separated, in any order) that must not be written anywhere else. A run of names in a module other
# than vocabulary.py is a hand-written copy: take the names from the vocabulary instead.
_RUNS: dict[str, tuple[str, ...]] = {
    "statuses": STATUS_NAMES,
    "terminal statuses": TERMINAL_NAMES,
    "active statuses": ACTIVE_NAMES,
    "unsuccessful statuses": UNSUCCESSFUL_NAMES,
    "operations": OPERATIONS,
    "tiers": TIERS,
    "continuity": CONTINUITIES,
    "transitions": TRANSITIONS,
    "price bases": PRICE_BASES,
}
# Copies that stay, and why.
_KEPT_COPIES = {
    ("jobs/migrations/0001_initial.sql", "terminal statuses"),  # a migration is history (checked below)
}
PACKAGE = Path(kling_mcp.__file__).parent


def _runs_of(names: tuple[str, ...], text: str) -> list[str]:
    one = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"""["']({one})["'](?:\s*,\s*["']({one})["']){{{len(names) - 1}}}""")
    found = []
    for match in pattern.finditer(text):
        run = re.findall(r"""["']([^"']+)["']""", match.group(0))
        before, after = text[: match.start()].rstrip(), text[match.end() :].lstrip()
        longer = (before.endswith(",") and before[:-1].rstrip()[-1:] in "\"'") or after.startswith(",")
        if sorted(run) == sorted(names) and not longer:  # the whole run: not part of a longer list
            found.append(match.group(0))
    return found


def test_no_module_spells_out_a_vocabulary_of_its_own() -> None:
    copies = set()
    for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.html"), *PACKAGE.rglob("*.sql")]):
        where = path.relative_to(PACKAGE).as_posix()
        if where == "vocabulary.py":
            continue
        text = path.read_text(encoding="utf-8")
        for vocabulary, names in _RUNS.items():
            if _runs_of(names, text):
                copies.add((where, vocabulary))
    assert copies == _KEPT_COPIES


def test_the_run_finder_finds_a_copy_in_any_order() -> None:
    assert _runs_of(TIERS, 'Literal["pro", "standard"]') == ['"pro", "standard"']
    assert _runs_of(TERMINAL_NAMES, "new Set(['cancelled','succeeded', 'failed'])")
    assert not _runs_of(TIERS, '_variant("pro"), _variant("standard")')  # data naming one tier each
    assert not _runs_of(UNSUCCESSFUL_NAMES, "('succeeded', 'failed', 'cancelled')")  # part of a longer list


def test_the_kept_copies_agree_with_the_vocabulary() -> None:
    migration = (PACKAGE / "jobs" / "migrations" / "0001_initial.sql").read_text()
    assert f"WHERE status NOT IN {postgres_store._TERMINAL_SQL};" in migration
    assert postgres_store._TERMINAL_SQL == "(" + ", ".join(f"'{n}'" for n in TERMINAL_NAMES) + ")"


def test_tiers_are_the_catalog_tiers_and_name_the_catalog_heights() -> None:
    assert catalog.TIERS is TIERS
    offered = {v.tier for entry in catalog.PROVIDERS.values() for v in entry.variants}
    assert offered == set(TIERS)
    assert set(TIER_RESOLUTIONS) == set(TIERS)
    for entry in catalog.PROVIDERS.values():
        if entry.name == "local":  # a preview renderer, smaller on purpose
            continue
        for variant in entry.variants:
            assert f"{min(variant.sizes['16:9'])}p" == TIER_RESOLUTIONS[variant.tier], (entry.name, variant.tier)
    assert said(GenerateRequest, "tier").startswith("standard (720p) or pro (1080p);")


@pytest.mark.anyio
async def test_tiers_continuity_and_transitions_are_the_same_names_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = await _tools(tmp_path)
    for name in ("generate_video", "edit_video", "generate_storyboard"):  # estimate_cost: "As in generate_video"
        assert tools[name]["inputSchema"]["properties"]["tier"]["enum"] == list(TIERS), name
    board = tools["generate_storyboard"]["inputSchema"]["properties"]
    assert board["continuity"]["enum"] == list(CONTINUITIES)
    assert board["transition"]["enum"] == list(TRANSITIONS)
    assert tools["assemble_video"]["inputSchema"]["properties"]["transition"]["enum"] == list(TRANSITIONS)
    quotes = tools["estimate_cost"]["outputSchema"]["properties"]["quotes"]["items"]["description"]
    assert f"basis ({'|'.join(PRICE_BASES)})" in quotes
    shown = _help(capsys, "storyboard")
    for names in (TIERS, CONTINUITIES, TRANSITIONS):
        assert "{" + ",".join(names) + "}" in shown
    assert "{" + ",".join(TIERS) + "}" in _help(capsys, "generate")


def test_the_models_take_the_vocabulary_literals() -> None:
    def args(model: Any, name: str) -> set[str]:
        return {a for a in get_args(model.model_fields[name].annotation) if isinstance(a, str)} | {
            b for a in get_args(model.model_fields[name].annotation) for b in get_args(a)
        }

    for model in (GenerateRequest, EditRequest, EstimateRequest, StoryboardRequest, VideoSpec):
        assert args(model, "tier") == set(TIERS), model
    for model in (StoryboardRequest, BoardRecord, BoardView):
        assert args(model, "continuity") == set(CONTINUITIES), model
    for model in (StoryboardRequest, AssembleRequest, BoardRecord, AssemblyRecord):
        assert args(model, "transition") == set(TRANSITIONS), model
    assert args(Quote, "basis") == set(PRICE_BASES)
    with pytest.raises(errors.InvalidRequest, match="transition must be 'cut' or 'crossfade'; got 'wipe'"):
        assemble([Path("a.mp4"), Path("b.mp4")], Path("out.mp4"), transition="wipe")  # type: ignore[arg-type]


# --- the inline player reads the server's names --------------------------------------------------------------


@pytest.mark.anyio
async def test_the_player_reads_the_statuses_operations_and_tiers_the_server_serves_it(tmp_path: Path) -> None:
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data")})
    async with Client(create_server(settings)) as client:
        (page,) = (await client.read_resource(PLAYER_URI)).contents
    html = page.text
    assert VOCABULARY_SLOT not in html
    (embedded,) = re.findall(r'<script type="application/json" id="vocabulary">(.*?)</script>', html)
    data = json.loads(embedded)
    assert data == player_vocabulary()
    assert data["terminal"] == list(TERMINAL_NAMES)
    assert data["active"] == list(ACTIVE_NAMES)
    assert list(data["operations"]) == [*OPERATIONS, *get_args(Composite)]
    assert data["tiers"] == {"standard": "Standard 720p", "pro": "Pro 1080p"}
    script = html.split(embedded + "</script>", 1)[1]  # the page's code, after the names it is given
    assert "VOCABULARY.terminal" in script and "VOCABULARY.tiers[" in script
    assert not any(_runs_of(names, script) for names in _RUNS.values())


# --- a shot and a spec share their fields; a job view shows the record's own fields as stored --------------


def test_a_shot_and_a_video_spec_share_one_declaration_of_their_fields() -> None:
    assert issubclass(ShotInput, ShotFields) and issubclass(VideoSpec, ShotFields)
    shared = list(ShotFields.model_fields)
    assert list(ShotInput.model_fields) == shared  # the published order: prompt, duration, first_frame, ...
    assert set(shared) <= set(VideoSpec.model_fields)
    for name in shared:
        declared = ShotFields.model_fields[name]
        assert ShotInput.model_fields[name].default == declared.default, name
        assert VideoSpec.model_fields[name].default == declared.default, name
    assert ShotInput.model_fields["first_frame"].annotation == str | None
    assert VideoSpec.model_fields["reference_images"].annotation == list[MediaRef]
    assert ShotInput.model_json_schema()["properties"]["prompt"]["minLength"] == 1  # a shot needs a prompt


def test_a_job_view_shows_the_records_fields_of_the_same_name_as_stored() -> None:
    shared = set(JobView.model_fields) & set(Job.model_fields)
    assert set(AS_STORED) == shared - {"status", "progress", "videos", "note"}
    for name in AS_STORED:
        assert JobView.model_fields[name].annotation == Job.model_fields[name].annotation, name
    job = Job(provider="local", model="m", tier="pro", spec=VideoSpec(operation="text", prompt="p"), shot=2)
    view = job_view(job)
    assert {name: getattr(view, name) for name in AS_STORED} == {name: getattr(job, name) for name in AS_STORED}

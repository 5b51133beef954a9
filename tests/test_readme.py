"""The README's set-up: get the code, then exactly two commands (the demo, the tests), and CI runs the
second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set up"):readme.index("\n## ", readme.index("## Set up") + 3)]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_the_readme_sets_up_with_the_code_and_two_commands() -> None:
    clone, demo, tests = setup_commands()
    assert clone.startswith("git clone")
    assert "kling-mcp demo" in demo and "\n" not in demo
    assert tests == "bash scripts/test.sh"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    *_, tests = setup_commands()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci


def test_the_license_the_metadata_names_is_shipped() -> None:
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()

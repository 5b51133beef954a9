"""The lock (requirements/lock.txt) pins every dependency pyproject.toml declares, and the test
environment is the locked one: a dependency changed in one file and not the other fails here."""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("test", "postgres")


def _locked() -> dict[str, str]:
    """name -> pinned version, for the lines whose markers hold on this interpreter."""
    pins: dict[str, str] = {}
    env = default_environment()
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        [spec] = list(req.specifier)
        assert spec.operator == "==", f"lock line {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        declared += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return declared


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _locked()
    problems = []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is declared in pyproject.toml but not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}: the lock pins {pins[name]}, outside {req.specifier}")
    assert not problems, "; ".join(problems) + ". Run `bash scripts/lock.sh` and commit requirements/lock.txt."


def test_the_test_environment_is_the_locked_one() -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("not in a virtual environment: scripts/test.sh runs the tests in the locked .venv")
    drift = []
    for name, version in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            drift.append(f"{name} {version} is locked but not installed")
            continue
        if installed != version:
            drift.append(f"{name}: {installed} installed, {version} locked")
    assert not drift, "; ".join(drift) + ". Run `bash scripts/test.sh`, which installs the lock."

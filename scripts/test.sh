#!/usr/bin/env bash
# Install what the tests need and run the whole suite, on a machine that may be brand new:
#   - a virtual environment in .venv with every Python package pinned by requirements/lock.txt;
#   - the Node MCP tools pinned by package-lock.json (scripts/install-node-tools.sh);
#   - Debian's postgresql and chromium when missing (scripts/install-system-deps.sh).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KLING_MCP_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --quiet --disable-pip-version-check)
# The lock pins every package, transitive ones included; the project itself goes in without resolving again.
"${pip[@]}" -r requirements/lock.txt
"${pip[@]}" --no-deps -e .
if [ -f scripts/install-system-deps.sh ]; then
  bash scripts/install-system-deps.sh
fi
if [ -f scripts/install-node-tools.sh ]; then
  bash scripts/install-node-tools.sh
fi
"$venv/bin/ruff" check kling_mcp tests benchmarks examples
"$venv/bin/ruff" format --check kling_mcp
"$venv/bin/mypy"
exec "$py" -m pytest -q "$@"

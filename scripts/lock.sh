#!/usr/bin/env bash
# Re-pin every Python package the server and the tests use: writes requirements/lock.txt from pyproject.toml.
# Run after changing dependencies in pyproject.toml; tests/test_lock.py fails while the two disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION="0.13.8"
tools=".tools/uv"
if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
"$tools/bin/uv" pip compile pyproject.toml --extra test --extra postgres --universal --python-version 3.11 \
  --no-header --quiet -o requirements/lock.txt

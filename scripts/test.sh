#!/usr/bin/env bash
# Install what the tests need (Python packages, the Node MCP tools) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [ -f scripts/install-node-tools.sh ]; then
  bash scripts/install-node-tools.sh
fi
python3 -m pytest -q "$@"

#!/usr/bin/env bash
# Install (idempotent), lint and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/lint-imports  # the walls inside service/ (pyproject: [tool.importlinter])
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Install, lint, and run the test suite (the slow 50-episode oracle checks are opt-in: -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -m "not slow" "$@"

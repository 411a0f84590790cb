#!/usr/bin/env bash
# Install, then run the main job at a small scale and say where its outputs are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/robocds-demo --out outputs/quickstart "$@"

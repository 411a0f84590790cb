#!/usr/bin/env bash
# Install, then run the whole pipeline at a small scale: generate a dataset, train No Sharing,
# Sharing All and CDS briefly, evaluate each in the simulated arm, print the comparison table and
# write the plots. Outputs land in outputs/quickstart/ (the report in outputs/quickstart/report/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/robocds-compare --scale quick --out outputs/quickstart "$@"

#!/usr/bin/env bash
# Set everything up (scripts/setup_env.sh) and run the dosimetry demo: `dosecnn demo --out dosecnn_demo`.
# Extra arguments go to `dosecnn demo` (see `dosecnn demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/dosecnn demo --out dosecnn_demo "$@"

#!/usr/bin/env bash
# Set everything up (scripts/setup_env.sh) and run the demo: `ctpm demo --out demo_output`.
# Extra arguments go to `ctpm demo` (see `ctpm demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ctpm demo --out demo_output "$@"

#!/usr/bin/env bash
# Set everything up (scripts/setup_env.sh), lint the code Slicer imports with ruff (Python 3.9 target),
# then run the pytest suite. Extra arguments go to pytest; --slow also runs the tests marked slow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=".venv/bin/python"
echo "lint: ruff (target py39)"
"$PY" -m ruff check .
args=()
for a in "$@"; do
  if [ "$a" = "--slow" ]; then args+=(-m "slow or not slow"); else args+=("$a"); fi
done
echo "tests: pytest"
"$PY" -m pytest -q ${args[@]+"${args[@]}"}

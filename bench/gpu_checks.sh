#!/usr/bin/env bash
# The one prepared GPU check (issue 19): every torch code path of both cores on a CUDA GPU (agreement with the CPU,
# Monte Carlo decays/s, VDK and dose CNN time on 512x512x130, ARNN inference of both lungs of a full-size phantom,
# training steps with mixed precision, the out-of-memory fallback), about 6 minutes on an H200 (budget 8), one
# Markdown report OUT_DIR/gpu_checks.md (and gpu_checks.json). The checks are in bench/gpu_checks.py.
#
#   bash bench/gpu_checks.sh OUT_DIR              # on a machine with CUDA (a CUDA build of torch in the environment)
#   bash bench/gpu_checks.sh --dry-run OUT_DIR    # the same checks on the CPU at tiny sizes (CI: the script works)
#   bash bench/gpu_checks.sh OUT_DIR --checks "OOM fallback"    # further options go to bench/gpu_checks.py
#
# Python: $PYTHON if set, else python (activate the environment first); the GPU: the first that CUDA_VISIBLE_DEVICES
# leaves visible. Exit status: 0 every check passed, 1 a
# check failed (the report says which), 2 no CUDA device (one "error:" line) or a wrong command line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
mode=()
if [ "${1:-}" = "--dry-run" ]; then
    mode=(--dry-run)
    shift
fi
if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
    echo "error: usage: bash bench/gpu_checks.sh [--dry-run] OUT_DIR [options of bench/gpu_checks.py]" >&2
    exit 2
fi
out="$1"
shift
export PYTHONPATH="$root:$root/CTPerfusionMapping:$root/DoseCNN${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND="${MPLBACKEND:-Agg}"
exec "${PYTHON:-python}" "$here/gpu_checks.py" "${mode[@]}" --out "$out" "$@"

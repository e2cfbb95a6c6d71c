#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install the project into it, with the test tools and Slicer's
# MRML libraries (slicer-core) for the tests of the Slicer modules.
# Needs only Python >= 3.9 with pip and venv. Set PYTHON to choose the interpreter (default: python3).
# PyTorch: when the environment has no torch yet, torch==2.13.0 (CPU) is installed first, so that the
# project's "torch>=2.1" requirement never pulls a multi-GB CUDA build. Bring your own GPU build of torch by
# installing it into .venv before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || {
  echo "error: Python >= 3.9 is required (found $("$PY" --version 2>&1))" >&2; exit 2; }
"$PY" -m pip install --quiet --upgrade pip

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0 (CPU)"
  "$PY" -m pip install --quiet torch==2.13.0 || {
    echo "error: could not install torch==2.13.0 for $("$PY" --version 2>&1); install a PyTorch >= 2.1 build for" \
         "your platform into $VENV (see pytorch.org) and run this script again" >&2; exit 2; }
fi
echo "setup: installing the project, its dependencies and the test tools (the 'slicer' extra: Slicer's MRML libraries)"
# slicer-core (the 'slicer' extra) needs Python >= 3.10: on Python 3.9 the extra installs nothing and the tests that run
# the Slicer modules on a real MRML scene (marked slicer_real) are skipped with that reason.
"$PY" -m pip install --quiet -e ".[dev,slicer]"

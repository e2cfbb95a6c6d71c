#!/usr/bin/env bash
# The Python packages a lent GPU machine lacks, as bundles a device call can carry (bench/gpu_train.sh --site):
#   .gpu/sitk/site.tar.xz  SimpleITK, pydicom                                   (~31 MB: both jobs need SimpleITK)
#   .gpu/dose/site.tar.xz  xraydb, SQLAlchemy, greenlet, platformdirs, icrp107-database   (~9 MB: the dose job)
# The wheels are the versions of this environment, for the machine's Python ($GPU_PYTHON_VERSION, default 3.12: the
# H200 machine had 3.12.3) on x86_64 Linux, unpacked (a wheel is its site-packages tree) and packed with xz: the
# SimpleITK wheel alone (53 MB) plus the working tree would exceed the 64 MiB a call may carry.
#
#   bash bench/gpu_bundle.sh [DEST]     # DEST default .gpu in the repository (git-ignored)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/.gpu}"
py="${PYTHON:-$root/.venv/bin/python}"
pyver="${GPU_PYTHON_VERSION:-3.12}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

spec() {  # DIST==VERSION installed here, or DIST alone when it is not installed here (greenlet: not on this VM)
    "$py" -c "import importlib.metadata as m, sys
try:
    print(sys.argv[1] + '==' + m.version(sys.argv[1]))
except m.PackageNotFoundError:
    print(sys.argv[1])" "$1"
}

bundle() {  # bundle NAME DIST...
    local name="$1"
    shift
    local specs=()
    for dist in "$@"; do specs+=("$(spec "$dist")"); done
    mkdir -p "$tmp/$name/wheels" "$tmp/$name/site" "$dest/$name"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$tmp/$name/wheels" "${specs[@]}"
    for wheel in "$tmp/$name/wheels"/*.whl; do
        "$py" -m zipfile -e "$wheel" "$tmp/$name/site/"
    done
    tar -C "$tmp/$name/site" -cf - . | xz -T0 -6 > "$dest/$name/site.tar.xz"
    echo "$dest/$name/site.tar.xz: $(du -h "$dest/$name/site.tar.xz" | cut -f1) (${specs[*]})"
}

bundle sitk SimpleITK pydicom
bundle dose xraydb SQLAlchemy greenlet platformdirs icrp107-database

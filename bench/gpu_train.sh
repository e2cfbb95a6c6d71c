#!/usr/bin/env bash
# Retrain a bundled model in ONE call of a lent GPU machine (one H200, 16 cores; the 2-core VM needs 5-12 hours and its
# state does not outlive a session): the whole recipe of scripts/train_bundled_model.py (job ctpm: cohorts, ARNN and
# U-Net pre-training and fine-tuning, held-out scores, steps 1-6) or of scripts/train_dose_model.py (job dose: OSEM
# phantoms, dose CNN training, held-out evaluation, acceptance, card), then the files to send back copied to OUT_DIR.
#
#   bash bench/gpu_train.sh ctpm OUT_DIR [--site BUNDLE_DIR] [-- options of the training script]
#   bash bench/gpu_train.sh dose OUT_DIR [--site BUNDLE_DIR] [-- options of the training script]
#   bash bench/gpu_train.sh --dry-run ctpm|dose OUT_DIR   # the same path on the CPU at tiny sizes (CI: it works)
#
# Work folder: $GPU_TRAIN_WORK/JOB (default /tmp/gpu_train/JOB): both scripts resume from it, so a call stopped at its
# time limit continues when the same command runs again while the machine is still warm. The training script gets
# $GPU_TRAIN_SECONDS (default 540) before this script stops it and sends back what there is (run.log says where it
# stands). Sent back (at most 8 files): ctpm: ctpm_arnn.pt, model_card.json, MODEL_CARD.md, scores.csv, held_out.png,
# run.log; dose: dosecnn_residual.pt, model_card.json, MODEL_CARD.md, run.log, timings.json.
#
# Budget (estimates from bench/results/gpu_checks_h200.md and the VM's CPU seconds, not yet measured as a whole):
# ctpm, 24 + 16 + 10 phantoms (half full-size: 81-85 CPU s each, small 3 CPU s, preprocessing 11 / 3 CPU s) on 15 worker
# processes ~3 min (a full-size phantom's process peaks at 5.5 GB: 15 of them fit the machine's 128 GB), ARNN and
# U-Net 40 + 30 epochs at ~32 hemi-lungs/s ~3 min, scores ~0.5 min: ~7 min. dose: see scripts/train_dose_model.py's
# docstring (~6-9 min with the Monte Carlo truths on the host's cores, --mc-device cpu, and 2 epochs). One job per
# session lent 15 minutes of device time (the machine's start takes 1-2 of them): ctpm first.
#
# With the device tool (the machine lacks SimpleITK, pydicom, xraydb and its database packages; a call carries at most
# 64 MiB with the working tree, ~28 MB):
#   1. here: bash bench/gpu_bundle.sh      -> .gpu/sitk/site.tar.xz (~31 MB), .gpu/dose/site.tar.xz (~9 MB); .gpu/ is
#      git-ignored
#   2. run  carry [".gpu/sitk"]  command "bash bench/gpu_train.sh ctpm $OUT --site .gpu/sitk"  timeout_s 600
#   3. at once (the machine stays warm 30 s; SimpleITK stays unpacked in /tmp/gpu_site):
#      run  carry [".gpu/dose"]  command "bash bench/gpu_train.sh dose $OUT --site .gpu/dose"
#   4. here: python scripts/train_bundled_model.py --out DIR --finish-from FILES_AT [--install]   (real CTs, card)
#            python scripts/train_dose_model.py --install-from FILES_AT
#
# Exit status: the training script's (0 done: the card says whether the acceptance holds; files are sent back in any
# case), 124 stopped at $GPU_TRAIN_SECONDS (run again to continue), 2 no CUDA device or a wrong command line ("error:").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
usage="error: usage: bash bench/gpu_train.sh [--dry-run] ctpm|dose OUT_DIR [--site BUNDLE_DIR] [-- script options]"
dry=0
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
    shift
fi
if [ $# -lt 2 ] || { [ "$1" != ctpm ] && [ "$1" != dose ]; } || [ "${2:0:1}" = "-" ]; then
    echo "$usage" >&2
    exit 2
fi
job="$1"
out="$2"
shift 2
site=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --site) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; site="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
py="${PYTHON:-python}"

# The packages the machine lacks, unpacked once per machine from the carried bundles (a later call finds them).
if [ -n "$site" ]; then
    target="${GPU_SITE:-/tmp/gpu_site}"
    mkdir -p "$target"
    for bundle in "$site"/*.tar.xz; do
        [ -e "$bundle" ] || { echo "error: no *.tar.xz bundle in $site (make them here with bash bench/gpu_bundle.sh)" >&2; exit 2; }
        "$py" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$bundle" "$target"
    done
    export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
elif [ -d "${GPU_SITE:-/tmp/gpu_site}" ]; then
    export PYTHONPATH="${GPU_SITE:-/tmp/gpu_site}${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root:$root/CTPerfusionMapping:$root/DoseCNN${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND="${MPLBACKEND:-Agg}" PYTHONUNBUFFERED=1

if [ "$dry" = 0 ]; then
    if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "error: no CUDA device (torch.cuda.is_available() is False); use --dry-run for the CPU check" >&2
        exit 2
    fi
    for module in SimpleITK numpy scipy; do
        "$py" -c "import $module" 2>/dev/null || { echo "error: python module $module missing: carry its bundle (--site, bench/gpu_bundle.sh)" >&2; exit 2; }
    done
fi

workers=$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))
work="${GPU_TRAIN_WORK:-/tmp/gpu_train}/$job"
mkdir -p "$work" "$out"
if [ "$job" = ctpm ]; then
    if [ "$dry" = 1 ]; then
        args=(--device cpu --workers 1 --sizes small --n-pretrain 3 --n-finetune 3 --n-test 2 --pretrain-epochs 1
              --finetune-epochs 1 --freeze-encoder-epochs 0 --base-channels 4 --max-channels 8 --batch-size 2)
    else
        args=(--device cuda --workers "$workers" --n-pretrain 24 --n-finetune 16 --n-test 10 --pretrain-epochs 40
              --finetune-epochs 30)
    fi
    cmd=("$py" "$root/scripts/train_bundled_model.py" --out "$work" --cv-folds 1 --seed 2027
         --real-data "$work/no-real-data" "${args[@]}" ${extra[@]+"${extra[@]}"})
    send=(ctpm_arnn.pt model_card.json MODEL_CARD.md scores.csv held_out.png run.log)
else
    if [ "$dry" = 1 ]; then
        args=(--device cpu --workers 1 --n-train 2 --n-heldout 1 --min-heldout 1 1 --times 24 --train-decays 5000
              --heldout-decays 5000 --mix 0.5 --epochs 1 --crop 32 --batch-size 8 --base-filters 8 --levels 2
              --depth-channels 4 4 4 --grid 196 164 12 1.96 1.96 3.0 --spect-matrix 80 --osem 8 2 2 --no-bundled)
    else
        args=(--device cuda --mc-device cpu --workers "$workers" --init bundled --mix 0.25 --epochs 2)
    fi
    cmd=("$py" "$root/scripts/train_dose_model.py" --out "$work" "${args[@]}" ${extra[@]+"${extra[@]}"})
    send=(dosecnn_residual.pt model_card.json MODEL_CARD.md run.log timings.json)
fi

echo "gpu_train: $job in $work (${GPU_TRAIN_SECONDS:-540} s at most): ${cmd[*]}"
set +e
if [ "$job" = ctpm ]; then
    timeout "${GPU_TRAIN_SECONDS:-540}" "${cmd[@]}" 2>&1 | tee -a "$work/run.log"
    status=${PIPESTATUS[0]}
else
    timeout "${GPU_TRAIN_SECONDS:-540}" "${cmd[@]}"  # writes its own run.log in $work
    status=$?
fi
set -e
for name in "${send[@]}"; do
    if [ -f "$work/$name" ]; then cp "$work/$name" "$out/$name"; fi
done
if [ "$status" = 124 ]; then
    echo "gpu_train: stopped after ${GPU_TRAIN_SECONDS:-540} s; run the same command again to continue from $work"
fi
echo "gpu_train: exit status $status; sent back: $(cd "$out" && ls | tr '\n' ' ')"
exit "$status"

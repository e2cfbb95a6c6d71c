"""Experiment: train the ARNN on a synthetic cohort and score it on held-out synthetic patients against the HU-only
baseline (a feasibility and throughput run; the bundled model's recipe is the issue-4 work).

Steps, parallel where they can be: generate N full-size phantoms (one process per case), preprocess them into
hemi-lung samples through the inference pipeline (dataset cache), train with ``training.train`` (validation split by
patient), then evaluate ``best.pt`` on M further held-out phantoms: per patient, the voxel Spearman R of the
prediction and of the HU-only baseline against the normalised SPECT over the parenchyma of both hemi-lung samples.

    python bench/train_synthetic.py --n-train 40 --n-test 8 --epochs 60 --out /tmp/train_synthetic [--size full]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def make_cohort(out: Path, prefix: str, n: int, seed: int, size: str, workers: int) -> Path:
    from CTPerfusionMappingLib.synthetic.cohort import generate_cohort

    generate_cohort(out / prefix, n, seed, size, workers=workers, prefix=prefix)
    return out / prefix / "cohort.csv"


def preprocess(manifest: Path, cache: Path, workers: int):
    from CTPerfusionMappingLib.training.dataset import load_samples

    return load_samples(manifest, cache, workers=workers)


def score(weights: Path, samples, device: str):
    """Per patient: Spearman of the prediction and of the HU baseline (enhanced CT) vs the normalised SPECT."""
    from CTPerfusionMappingLib.inference import predict
    from CTPerfusionMappingLib.metrics import spearman_r
    from CTPerfusionMappingLib.weights import load_weights

    model, _, _ = load_weights(weights, device=device)
    x = np.stack([s.ct_input for s in samples])[:, None]
    pred = predict(model, x, device, batch_size=8)["mean"]
    rows = []
    for pid in sorted({s.case_id for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.case_id == pid]
        p = np.concatenate([pred[i][samples[i].mask] for i in idx])
        b = np.concatenate([samples[i].ct_input[samples[i].mask] for i in idx])
        r = np.concatenate([samples[i].reference[samples[i].mask] for i in idx])
        rows.append({"patient": pid, "arnn": spearman_r(p, r), "hu_baseline": spearman_r(b, r), "group": samples[idx[0]].group})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--max-channels", type=int, default=128)
    ap.add_argument("--size", default="full")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--out", type=Path, default=Path("/tmp/train_synthetic"))
    args = ap.parse_args()
    from CTPerfusionMappingLib.network import NetworkConfig
    from CTPerfusionMappingLib.training.dataset import split_by_patient
    from CTPerfusionMappingLib.training.trainer import TrainConfig, train
    from ImagingBasics.devices import describe_device, select_device

    device = select_device(args.device)
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; device: {describe_device(device)}", flush=True)
    t0 = time.perf_counter()
    train_csv = make_cohort(args.out, "train", args.n_train, args.seed, args.size, args.workers)
    test_csv = make_cohort(args.out, "test", args.n_test, args.seed + 1, args.size, args.workers)
    print(f"phantoms: {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    samples = preprocess(train_csv, args.out / "cache", args.workers)
    test = preprocess(test_csv, args.out / "cache", args.workers)
    print(f"preprocessing: {time.perf_counter() - t0:.0f} s ({len(samples)} + {len(test)} hemi-lungs)", flush=True)
    train_s, val_s = split_by_patient(samples, 0.2, args.seed)
    t0 = time.perf_counter()
    network = NetworkConfig(base_channels=args.base_channels, max_channels=args.max_channels)
    summary = train(network, train_s, val_s, args.out / "arnn",
                    TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=device, patience=args.epochs),
                    progress=lambda e, n, row: print(f"epoch {e}: loss {row['train_loss']:.4f} val_r {row['val_spearman']:.3f} "
                                                     f"{row['samples_per_second']:.1f} samples/s", flush=True))
    print(f"training: {time.perf_counter() - t0:.0f} s; {json.dumps(summary)}", flush=True)
    rows = score(args.out / "arnn" / "best.pt", test, device)
    for r in rows:
        print(f"test {r['patient']} ({r['group']}): ARNN {r['arnn']:.3f}  HU baseline {r['hu_baseline']:.3f}")
    a = np.array([r["arnn"] for r in rows])
    b = np.array([r["hu_baseline"] for r in rows])
    print(f"held-out patients: ARNN {a.mean():.3f} +- {a.std():.3f}; HU baseline {b.mean():.3f} +- {b.std():.3f}; "
          f"difference {np.mean(a - b):.3f}")
    with open(args.out / "test_scores.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()

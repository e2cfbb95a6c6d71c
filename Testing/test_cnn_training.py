"""Training the residual dose CNN (Li 2020): data, loss, learning a correction, resuming, the cache and the CLI."""

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnn_synthetic import learnable_reference, one_torch_thread, tiny_ct_and_activity, tiny_kernels  # noqa: E402, F401

from DoseCNNLib.cnn import data as cnn_data  # noqa: E402
from DoseCNNLib.cnn.data import Normalisation, body_mask, case_from_volumes, make_batch, split_slices, window_indices
from DoseCNNLib.cnn.network import DoseNetConfig  # noqa: E402
from DoseCNNLib.cnn.training import DoseTrainConfig, train, weighted_mse  # noqa: E402
from DoseCNNLib.physics.vdk import vdk_dose_rate  # noqa: E402
from ImagingBasics.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = DoseNetConfig(depth_channels=(4, 4, 4), base_filters=8, levels=2)
SPACING = (8.0, 8.0, 8.0)  # large voxels: a few litres in a tiny array, so that normalised values are O(1)


def _case(seed, shape=(12, 24, 24), group=""):
    ct, activity = tiny_ct_and_activity(seed, shape=shape, spacing=SPACING)
    vdk, _ = vdk_dose_rate(activity, ct, *tiny_kernels(SPACING))
    return case_from_volumes(f"case{seed}", ct, activity, vdk, learnable_reference(activity, ct, vdk), group)


@pytest.fixture(scope="module")
def cases():
    return [_case(0), _case(1)]


def test_body_mask_keeps_the_lungs_inside():
    hu = np.full((2, 20, 20), -1000.0)
    hu[:, 3:17, 3:17] = 40.0
    hu[:, 6:12, 6:10] = -850.0  # a lung
    body = body_mask(hu)
    assert body[:, 8, 8].all() and not body[:, 0, 0].any() and body.sum() == 2 * 14 * 14


def test_packs_are_edge_padded():
    np.testing.assert_array_equal(window_indices(0, 1, 5, 8), [0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(window_indices(6, 8, 5, 8), [1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 7])


def test_batches_shapes_normalisation_and_augmentation(cases):
    norm = Normalisation.for_spacing(SPACING)
    case = cases[0]
    b = make_batch(cases, [(0, 0), (1, 6)], norm, 5)
    assert b.pack.shape == (2, 2, 11, 24, 24) and b.vdk.shape == b.reference.shape == b.body.shape == (2, 1, 24, 24)
    np.testing.assert_allclose(b.pack[0, 0, 5], case.activity_mbq[0] * norm.activity_scale / case.total_mbq, rtol=1e-6)
    np.testing.assert_array_equal(b.pack[0, 1, 0], b.pack[0, 1, 5])  # slice 0 repeated before the volume
    np.testing.assert_allclose(b.vdk[1, 0], case.vdk[6] * 0 + cases[1].vdk[6] * norm.dose_scale / cases[1].total_mbq,
                               rtol=1e-6)
    assert b.valid.all() and np.all(b.reference[b.air] == 0)
    rng = np.random.default_rng(0)
    for _ in range(5):  # crops lie over the body, augmentation moves every map alike
        c = make_batch(cases, [(0, 6)], norm, 5, rng, crop=16, augment=True)
        assert c.pack.shape == (1, 2, 11, 16, 16) and c.body.any()
        np.testing.assert_array_equal(c.air[0, 0], c.pack[0, 1, 5] < 0.0076)  # density of air at the same voxels
    small = case_from_volumes("small", *_small_volumes())
    d = make_batch([cases[0], small], [(0, 3), (1, 3)], norm, 5)  # two sizes: padded, marked invalid
    assert d.pack.shape[-2:] == (24, 24) and not d.valid[1, 0, 20:, :].any() and d.valid[1, 0, :10, :10].all()


def _small_volumes():
    ct, activity = tiny_ct_and_activity(5, shape=(12, 20, 18), spacing=SPACING)
    vdk, _ = vdk_dose_rate(activity, ct, *tiny_kernels(SPACING))
    return ct, activity, vdk, learnable_reference(activity, ct, vdk)


def test_splits(cases):
    tr, va = split_slices(cases, 0.25, 0)
    assert len(va) == 6 and len(tr) == 18 and not set(tr) & set(va)
    tr, va = split_slices(cases, 0.25, 0, by="patient")
    assert {c for c, _ in va} in ({0}, {1}) and not {c for c, _ in tr} & {c for c, _ in va}
    with pytest.raises(UserError):
        split_slices(cases[:1], 0.5, 0, by="patient")
    from dataclasses import replace

    # two time points of one patient stay together (copies: the module's cases stay as they are for later tests)
    same = [replace(cases[0], group="B"), replace(cases[1], group="B"), _case(2, group="A")]
    for seed in range(4):
        tr, va = split_slices(same, 0.3, seed, by="patient")
        assert {c for c, _ in va} in ({0, 1}, {2})


def test_weighted_loss():
    pred, target = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    body = torch.tensor([[True, True, False, False]])
    valid = torch.tensor([[True, True, True, False]])
    expected = (0.7 * (1 + 4) / 2 + 0.3 * 9 / 1) / 1.0
    assert float(weighted_mse(pred, target, body, valid)) == pytest.approx(expected)
    everywhere = torch.ones_like(body)
    assert float(weighted_mse(pred, target, everywhere, valid)) == pytest.approx((1 + 4 + 9) / 3)  # body only


def test_a_tiny_network_learns_the_correction(tmp_path, cases):
    tr, va = split_slices(cases, 0.25, 0)
    config = DoseTrainConfig(epochs=12, batch_size=6, lr=3e-3, device="cpu")
    summary = train(TINY, cases, tr, va, tmp_path, config)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 12 and summary["best_epoch"] >= 1 and (tmp_path / "learning_curve.png").is_file()
    vdk_loss = float(rows[0]["val_loss_vdk"])
    assert summary["best_val_loss"] < 0.3 * vdk_loss  # the VDK map alone is far worse
    assert float(rows[-1]["train_loss"]) < 0.3 * float(rows[0]["train_loss"])
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert float(best["val_nrmse"]) < 0.6 * float(best["val_nrmse_vdk"])
    from DoseCNNLib.cnn.weights import load_dose_weights

    model = load_dose_weights(tmp_path / "best.pt")
    assert model.metadata["epoch"] == summary["best_epoch"] and model.spacing_mm == SPACING


def test_resumed_training_ends_with_the_same_weights(tmp_path, cases):
    tr, va = split_slices(cases, 0.25, 0)
    one, two = DoseTrainConfig(epochs=1, batch_size=8, device="cpu"), DoseTrainConfig(epochs=2, batch_size=8, device="cpu")
    train(TINY, cases, tr, va, tmp_path / "straight", two)
    train(TINY, cases, tr, va, tmp_path / "resumed", one)
    train(TINY, cases, tr, va, tmp_path / "resumed", two, resume=True)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert [r["val_loss"] for r in a["state"]["history"]] == [r["val_loss"] for r in b["state"]["history"]]
    with pytest.raises(UserError, match="another network"):
        train(DoseNetConfig(depth_channels=(2, 2, 2), base_filters=4, levels=1), cases, tr, va, tmp_path / "resumed",
              two, resume=True)
    with pytest.raises(UserError, match="no checkpoint"):
        train(TINY, cases, tr, va, tmp_path / "empty", two, resume=True)


def test_validation_reports_the_body_dose_bias_and_a_resumed_run_takes_a_new_learning_rate(tmp_path, cases):
    """The body dose bias (summed dose rate in the body over the truth's, minus 1) of the VDK map, computed here
    independently on the one validation patient; a run resumed with another lr continues at it, recorded."""
    tr, va = split_slices(cases, 0.5, 0, "patient")
    (index,) = {i for i, _ in va}  # slice references are (case, slice) pairs
    c = cases[index]
    z = sorted(k for _, k in va)
    expected = c.vdk[z][c.body[z]].sum(dtype=np.float64) / c.reference[z][c.body[z]].sum(dtype=np.float64) - 1.0
    first = train(TINY, cases, tr, va, tmp_path, DoseTrainConfig(epochs=1, batch_size=8, device="cpu"))
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert float(rows[0]["val_body_bias_vdk"]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert np.isfinite(float(rows[0]["val_body_bias"])) and first["lr_changes"] == []
    lower = train(TINY, cases, tr, va, tmp_path, DoseTrainConfig(epochs=2, batch_size=8, lr=1e-4, device="cpu"),
                  resume=True)
    assert lower["lr_changes"] == [{"after_epoch": 1, "lr": 1e-4}]
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert float(rows[0]["lr"]) == 1e-3 and float(rows[1]["lr"]) == 1e-4
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["optimiser"]["param_groups"][0]["lr"] == 1e-4


def _write_manifest(folder, seeds=(0, 1)):
    from ImagingBasics.imageio import write_volume

    rows = []
    for seed in seeds:
        ct, activity = tiny_ct_and_activity(seed, shape=(12, 24, 24), spacing=SPACING)
        vdk, _ = vdk_dose_rate(activity, ct, *tiny_kernels(SPACING))
        d = folder / f"p{seed}"
        write_volume(ct, d / "ct.nrrd")
        write_volume(activity.with_array(activity.array / 50.0), d / "spect.nrrd")  # counts: 50 Bq per count
        write_volume(learnable_reference(activity, ct, vdk), d / "reference.nrrd")
        rows.append(f"p{seed},patient{seed},p{seed}/ct.nrrd,p{seed}/spect.nrrd,p{seed}/reference.nrrd,50")
    (folder / "cases.csv").write_text("id,case,ct,spect,reference,bq_per_count\n" + "\n".join(rows) + "\n")
    return folder / "cases.csv"


def test_cases_are_prepared_once_and_cached(tmp_path, monkeypatch):
    from DoseCNNLib.physics import kernel_library

    monkeypatch.setattr(kernel_library, "kernel_pair_for", lambda spacing, *a, **k: tiny_kernels(spacing))
    manifest = _write_manifest(tmp_path)
    first = cnn_data.load_cases(manifest, tmp_path / "cache")
    assert [c.case_id for c in first] == ["p0", "p1"] and first[1].group == "patient1"  # the case column groups rows
    assert first[0].total_mbq == pytest.approx(
        float(tiny_ct_and_activity(0, shape=(12, 24, 24), spacing=SPACING)[1].array.sum(dtype=np.float64)) / 1e6, rel=1e-5)
    monkeypatch.setattr(cnn_data, "prepare_case", lambda *a, **k: pytest.fail("prepared again"))
    second = cnn_data.load_cases(manifest, tmp_path / "cache")
    np.testing.assert_array_equal(second[1].vdk, first[1].vdk)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    (tmp_path / "bad.csv").write_text("id,ct,spect,reference\nx,p0/ct.nrrd,p0/spect.nrrd,p0/reference.nrrd\n")
    with pytest.raises(UserError, match="exactly one of"):
        cnn_data.load_cases(tmp_path / "bad.csv", tmp_path / "cache")


def test_cli_train_then_run_with_the_trained_weights(tmp_path, monkeypatch, capsys):
    from DoseCNNLib.cli import main as dosecnn
    from DoseCNNLib.physics import kernel_library
    from ImagingBasics.imageio import read_volume

    monkeypatch.setattr(kernel_library, "kernel_pair_for", lambda spacing, *a, **k: tiny_kernels(spacing))
    manifest = _write_manifest(tmp_path)
    out = tmp_path / "model"
    args = ["train", str(manifest), "--out", str(out), "--epochs", "2", "--batch-size", "8", "--val-by", "patient",
            "--base-filters", "4", "--levels", "2", "--depth-channels", "2", "2", "2", "--crop", "16", "--device", "cpu",
            "--quiet"]
    assert dosecnn(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["validation_by"] == "patient" and len(summary["validation_cases"]) == 1
    assert summary["training_slices"] == 12 and summary["validation_slices"] == 12
    for name in ("best.pt", "checkpoint.pt", "log.csv", "learning_curve.png", "train_summary.json"):
        assert (out / name).is_file(), name
    assert dosecnn(args[:5] + ["3"] + args[6:] + ["--resume"]) == 0  # one more epoch
    assert json.loads(capsys.readouterr().out)["epochs"] == 3
    fine = args[:3] + [str(tmp_path / "fine")] + args[4:-1] + ["--init", str(out / "best.pt")]  # with the bar
    assert dosecnn(fine) == 0
    bar = capsys.readouterr().err
    assert "initial_val=" in bar and "nan" not in bar  # epoch 0 (the --init weights) has no training loss to show
    run = ["run", "--spect", str(tmp_path / "p0" / "spect.nrrd"), "--ct", str(tmp_path / "p0" / "ct.nrrd"),
           "--calibration", "50", "--method", "cnn", "--weights", str(out / "best.pt"), "--out", str(tmp_path / "run")]
    assert dosecnn(run) == 0
    dose = read_volume(tmp_path / "run" / "dose_rate.nrrd")
    ct = read_volume(tmp_path / "p0" / "ct.nrrd")
    assert dose.same_geometry(ct) and dose.array.max() > 0 and (dose.array[ct.array < -950] == 0).all()
    capsys.readouterr()
    assert dosecnn(["train", str(manifest), "--out", str(out), "--val-fraction", "1.5", "--quiet"]) == 2
    assert "validation fraction" in capsys.readouterr().err

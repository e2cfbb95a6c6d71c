"""``ctpm plan`` on synthetic geometry with analytic answers, its refusals, and on a real ``ctpm run`` folder.

The geometry: a 40x40x40 grid of 2.5 mm voxels centred on the origin (LPS), two box lungs (right at negative x, left
at positive x), each 14 x 28 x 28 voxels; CIP lobes split along z (superior = +z). The perfusion grows linearly from
anterior to posterior (LPS y), as gravity makes it in a supine patient. Doses are linear fields, so every expected
number is a closed-form mean or an independent numpy count. The CLI is called in-process through
``CTPerfusionMappingLib.cli.main``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from CTPerfusionMappingLib.cli import main
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.volume import Volume

SHAPE = (40, 40, 40)
SPACING = 2.5
ORIGIN = tuple([-(SHAPE[0] - 1) * SPACING / 2] * 3)  # voxel centres symmetric about 0 mm
VOXEL_ML = SPACING ** 3 / 1000.0
#: voxel index ranges [start, stop) of the lungs: z and y shared, x per side (right lung at negative LPS x)
Z, Y = (6, 34), (6, 34)
X_RIGHT, X_LEFT = (4, 18), (22, 36)
#: lobes along z (index ranges): right upper/middle/lower, left upper/lower
LOBES = {4: (25, 34), 5: (16, 25), 6: (6, 16), 7: (20, 34), 8: (6, 20)}
#: perfusion f(y) = F0 + F1 * y_mm inside the lungs (positive over the lungs' y range)
F0, F1 = 1.0, 0.02
#: the dose gradient D(y) = D0 + D1 * y_mm (Gy): 8.1 .. 41.9 Gy over the lungs, positive over the whole grid
D0, D1 = 25.0, 0.5


def _grid(array: np.ndarray, spacing=SPACING, origin=ORIGIN) -> Volume:
    return Volume(array, (spacing,) * 3, origin)


def _coordinates_mm(shape=SHAPE, spacing=SPACING, origin=ORIGIN):
    """(z, y, x) in mm of every voxel centre, each broadcast to ``shape``."""
    z, y, x = np.meshgrid(*(origin[a] + spacing * np.arange(shape[2 - a]) for a in (2, 1, 0)), indexing="ij")
    return z, y, x


def _lungs() -> np.ndarray:
    a = np.zeros(SHAPE, np.uint8)
    a[Z[0]:Z[1], Y[0]:Y[1], X_RIGHT[0]:X_RIGHT[1]] = 1
    a[Z[0]:Z[1], Y[0]:Y[1], X_LEFT[0]:X_LEFT[1]] = 2
    return a


def _lobes() -> np.ndarray:
    lungs = _lungs()
    a = np.zeros(SHAPE, np.uint8)
    for rid, (z0, z1) in LOBES.items():
        side = 1 if rid <= 6 else 2
        sel = np.zeros(SHAPE, bool)
        sel[z0:z1] = True
        a[sel & (lungs == side)] = rid
    return a


def _perfusion() -> np.ndarray:
    _, y, _ = _coordinates_mm()
    return np.where(_lungs() > 0, F0 + F1 * y, 0.0).astype(np.float32)


def _y_dose() -> np.ndarray:
    _, y, _ = _coordinates_mm()
    return (D0 + D1 * y).astype(np.float32)


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """The synthetic inputs, written once: perfusion, lungs, lobes, doses and masks (good and bad)."""
    d = tmp_path_factory.mktemp("plan_case")
    write_volume(_grid(_perfusion()), d / "perfusion.nrrd")
    write_volume(_grid(_lungs()), d / "lungs.nrrd")
    write_volume(_grid(_lobes()), d / "lobes.nrrd")
    write_volume(_grid(np.full(SHAPE, 20.0, np.float32)), d / "uniform20.nrrd")
    write_volume(_grid(_y_dose()), d / "dose_y.nrrd")
    z, _, _ = _coordinates_mm()
    write_volume(_grid((30.0 + 0.4 * z).astype(np.float32)), d / "dose_z.nrrd")
    gtv = np.zeros(SHAPE, np.uint8)
    gtv[15:21, 15:21, 8:14] = 1  # 6x6x6 voxels inside the right lung
    write_volume(_grid(gtv), d / "gtv.nrrd")
    # bad inputs
    a = _y_dose()
    a[20, 20, 10] = np.nan
    write_volume(_grid(a), d / "dose_nan.nrrd")
    write_volume(_grid(_y_dose() * 100), d / "dose_cgy.nrrd")
    write_volume(_grid(_y_dose() - 10.0), d / "dose_negative.nrrd")
    half = np.full((40, 40, 20), 20.0, np.float32)  # covers x >= 0 only: the right lung lies outside
    write_volume(Volume(half, (SPACING,) * 3, (1.25, ORIGIN[1], ORIGIN[2])), d / "dose_half.nrrd")
    write_volume(Volume(_lungs(), (2.0,) * 3, ORIGIN), d / "lungs_other_grid.nrrd")
    one_side = _lungs()
    one_side[one_side == 2] = 0
    write_volume(_grid(one_side), d / "lungs_right_only.nrrd")
    return d


def _plan(args: List[str], capsys) -> tuple:
    code = main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _metrics(out: Path) -> Dict[str, Dict[str, Dict[str, str]]]:
    """metrics.csv as plan -> structure -> row."""
    table: Dict[str, Dict[str, Dict[str, str]]] = {}
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            table.setdefault(row["plan"], {})[row["structure"]] = row
    return table


def _dvh(out: Path, plan: str, structure: str):
    with open(out / "dvh.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["plan"] == plan and r["structure"] == structure]
    return (np.array([float(r["dose_gy"]) for r in rows]), np.array([float(r["volume_fraction"]) for r in rows]),
            np.array([float(r["function_fraction"]) for r in rows]))


def _run(case: Path, tmp_path: Path, capsys, *extra: str, lobes: bool = False) -> Path:
    out = tmp_path / "out"
    args = ["--perfusion", str(case / "perfusion.nrrd"), "--lungs", str(case / "lungs.nrrd"), "--out", str(out)]
    if lobes:
        args += ["--lobes", str(case / "lobes.nrrd")]
    code, _, err = _plan(args + list(extra), capsys)
    assert code == 0, err
    return out


# --- analytic answers -----------------------------------------------------------------------------------------------
def test_uniform_dose_gives_the_dose_everywhere(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'uniform20.nrrd'}:uniform")
    table = _metrics(out)["uniform"]
    assert set(table) == {"right lung", "left lung", "both lungs"}
    for row in table.values():
        assert float(row["mld_gy"]) == pytest.approx(20.0, abs=1e-6)
        assert float(row["fmld_gy"]) == pytest.approx(20.0, abs=1e-6)
        assert float(row["v5_percent"]) == float(row["fv5_percent"]) == 100.0
        assert float(row["v20_percent"]) == float(row["fv20_percent"]) == 100.0
        assert float(row["v30_percent"]) == float(row["fv30_percent"]) == 0.0
    dose, volume, function = _dvh(out, "uniform", "both lungs")
    assert dose[0] == 0.0 and np.allclose(np.diff(dose), 0.1)
    assert np.all(volume[dose <= 20.0 + 1e-9] == 1.0) and np.all(function[dose <= 20.0 + 1e-9] == 1.0)
    assert np.all(volume[dose > 20.0 + 1e-9] == 0.0) and np.all(function[dose > 20.0 + 1e-9] == 0.0)
    assert dose[-1] > 20.0  # the curves end at 0
    assert int(table["right lung"]["voxels"]) == 14 * 28 * 28
    assert float(table["both lungs"]["volume_ml"]) == pytest.approx(2 * 14 * 28 * 28 * VOXEL_ML, rel=1e-5)


def _weighted_mean_linear(y_lo: float, y_hi: float) -> float:
    """Closed form of int f(y) D(y) dy / int f(y) dy over [y_lo, y_hi] for f = F0 + F1 y and D = D0 + D1 y."""
    def moment(k: int) -> float:
        return (y_hi ** (k + 1) - y_lo ** (k + 1)) / (k + 1)

    numerator = F0 * D0 * moment(0) + (F0 * D1 + F1 * D0) * moment(1) + F1 * D1 * moment(2)
    return numerator / (F0 * moment(0) + F1 * moment(1))


def test_fmld_of_a_dose_gradient_is_the_analytic_weighted_mean(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_y.nrrd'}:gradient")
    row = _metrics(out)["gradient"]["both lungs"]
    y_lo = ORIGIN[1] + (Y[0] - 0.5) * SPACING  # the lungs' physical extent (voxel edges)
    y_hi = ORIGIN[1] + (Y[1] - 0.5) * SPACING
    expected_fmld = _weighted_mean_linear(y_lo, y_hi)
    assert float(row["fmld_gy"]) == pytest.approx(expected_fmld, rel=0.005)
    assert float(row["mld_gy"]) == pytest.approx(D0 + D1 * (y_lo + y_hi) / 2, rel=0.005)
    assert float(row["fmld_gy"]) > float(row["mld_gy"])  # dose and perfusion both grow posteriorly


def test_v20_and_fv20_agree_with_an_independent_numpy_count(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_y.nrrd'}:gradient")
    dose, perfusion, lungs = _y_dose().astype(np.float64), _perfusion().astype(np.float64), _lungs()
    table = _metrics(out)["gradient"]
    for name, sel in (("right lung", lungs == 1), ("left lung", lungs == 2), ("both lungs", lungs > 0)):
        for level in (5, 20, 30):
            v = 100.0 * np.mean(dose[sel] >= level)
            fv = 100.0 * perfusion[sel][dose[sel] >= level].sum() / perfusion[sel].sum()
            assert float(table[name][f"v{level}_percent"]) == pytest.approx(v, abs=0.5)
            assert float(table[name][f"fv{level}_percent"]) == pytest.approx(fv, abs=0.5)
    levels, volume, function = _dvh(out, "gradient", "both lungs")
    at20 = int(np.argmin(np.abs(levels - 20.0)))
    assert 100 * volume[at20] == pytest.approx(float(table["both lungs"]["v20_percent"]), abs=1e-3)
    assert 100 * function[at20] == pytest.approx(float(table["both lungs"]["fv20_percent"]), abs=1e-3)
    assert np.all(np.diff(volume) <= 1e-12) and np.all(np.diff(function) <= 1e-12)  # cumulative: never rising


def test_high_and_low_function_volumes_are_the_projects_split(case, tmp_path, capsys):
    from CTPerfusionMappingLib.metrics import functional_volumes

    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_y.nrrd'}:gradient")
    row = _metrics(out)["gradient"]["both lungs"]
    split = functional_volumes(_perfusion(), _lungs() > 0)
    dose = _y_dose().astype(np.float64)
    assert float(row["mean_dose_high_function_gy"]) == pytest.approx(dose[split == 2].mean(), rel=1e-5)
    assert float(row["mean_dose_low_function_gy"]) == pytest.approx(dose[split == 1].mean(), rel=1e-5)
    assert float(row["high_function_ml"]) == pytest.approx(np.count_nonzero(split == 2) * VOXEL_ML, rel=1e-5)


def test_lobes_get_their_own_rows(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_z.nrrd'}:cranial", lobes=True)
    table = _metrics(out)["cranial"]
    assert list(table) == ["right lung", "left lung", "both lungs", "RUL", "RML", "RLL", "LUL", "LLL"]
    for rid, name in zip(LOBES, ("RUL", "RML", "RLL", "LUL", "LLL")):
        z0, z1 = LOBES[rid]
        mean_z = ORIGIN[2] + SPACING * (z0 + z1 - 1) / 2
        assert float(table[name]["mld_gy"]) == pytest.approx(30.0 + 0.4 * mean_z, abs=1e-3)  # linear: dose at mean z
        assert table[name]["kind"] == "lobe"
    for side, lobes in (("right lung", ("RUL", "RML", "RLL")), ("left lung", ("LUL", "LLL"))):
        assert sum(float(table[n]["volume_ml"]) for n in lobes) == pytest.approx(float(table[side]["volume_ml"]), rel=1e-5)
    shares = sum(float(table[n]["function_share_percent"]) for n in ("RUL", "RML", "RLL", "LUL", "LLL"))
    assert shares == pytest.approx(100.0, abs=1e-3)


def test_gtv_exclusion_removes_its_voxels_from_the_lungs(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_y.nrrd'}:gradient", "--exclude", str(case / "gtv.nrrd"))
    table = _metrics(out)["gradient"]
    gtv_ml = 6 * 6 * 6 * VOXEL_ML
    assert float(table["right lung"]["volume_ml"]) == pytest.approx(14 * 28 * 28 * VOXEL_ML - gtv_ml, rel=1e-5)
    assert float(table["left lung"]["volume_ml"]) == pytest.approx(14 * 28 * 28 * VOXEL_ML, rel=1e-5)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["settings"]["excluded"] == ["gtv.nrrd"]
    assert metrics["settings"]["excluded_lung_ml"] == pytest.approx(gtv_ml, rel=1e-5)
    keep = (_lungs() == 1)
    keep[15:21, 15:21, 8:14] = False
    assert float(table["right lung"]["mld_gy"]) == pytest.approx(_y_dose().astype(np.float64)[keep].mean(), rel=1e-5)


def test_a_dose_on_a_coarser_shifted_grid_stays_linear(case, tmp_path, capsys):
    spacing, origin = 4.0, (-58.7, -57.9, -58.3)  # covers the whole perfusion grid with a margin of > 1 voxel
    shape = (31, 31, 31)
    z, y, x = _coordinates_mm(shape, spacing, origin)
    write_volume(Volume((30.0 + 0.3 * y - 0.15 * z + 0.02 * x).astype(np.float32), (spacing,) * 3, origin),
                 tmp_path / "coarse.nrrd")
    out = _run(case, tmp_path, capsys, "--dose", f"{tmp_path / 'coarse.nrrd'}:coarse")
    zf, yf, xf = _coordinates_mm()
    exact = 30.0 + 0.3 * yf - 0.15 * zf + 0.02 * xf
    lungs = _lungs()
    table = _metrics(out)["coarse"]
    for name, sel in (("right lung", lungs == 1), ("left lung", lungs == 2), ("both lungs", lungs > 0)):
        assert float(table[name]["mld_gy"]) == pytest.approx(exact[sel].mean(), abs=1e-3)
        assert float(table[name]["v20_percent"]) == pytest.approx(100 * np.mean(exact[sel] >= 20), abs=0.5)


def test_the_resampled_dose_is_the_linear_field_at_every_lung_voxel():
    from CTPerfusionMappingLib.planning.dose_grid import dose_on_grid

    spacing, origin = 4.0, (-58.7, -57.9, -58.3)
    z, y, x = _coordinates_mm((31, 31, 31), spacing, origin)
    dose = Volume((30.0 + 0.3 * y - 0.15 * z + 0.02 * x).astype(np.float64), (spacing,) * 3, origin)
    reference = _grid(_perfusion())
    lungs = _lungs() > 0
    on_grid, warnings = dose_on_grid(dose, reference, lungs, "dose")
    zf, yf, xf = _coordinates_mm()
    assert np.abs(on_grid.array - (30.0 + 0.3 * yf - 0.15 * zf + 0.02 * xf))[lungs].max() < 1e-6
    assert warnings == []


def test_several_plans_write_the_comparison(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_y.nrrd'}:A", "--dose", f"{case / 'uniform20.nrrd'}:B",
               lobes=True)
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.png", "dvh.csv", "dvh.png",
                                                      "metrics.csv", "metrics.json"]
    with open(out / "comparison.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["plan"] for r in rows] == ["A", "B"]
    table = _metrics(out)
    for r in rows:
        assert r["fmld_gy"] == table[r["plan"]]["both lungs"]["fmld_gy"]
    assert float(rows[1]["fv20_percent"]) == 100.0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [p["name"] for p in metrics["plans"]] == ["A", "B"]
    fmld = metrics["plans"][1]["reference_cut_points"][0]
    assert fmld["value"] == pytest.approx(20.0) and fmld["above"] is True
    assert {k: fmld[k] for k in ("metric", "cut_point", "unit")} == {"metric": "fmld_gy", "cut_point": 12.3, "unit": "Gy"}
    assert isinstance(metrics["warnings"], list)
    for png in ("dvh.png", "comparison.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / png).stat().st_size < 400_000


def test_one_plan_writes_no_comparison(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", str(case / "dose_y.nrrd"))
    assert not (out / "comparison.csv").exists() and not (out / "comparison.png").exists()
    assert list(_metrics(out)) == ["dose_y"]  # the plan is named after the file


def test_high_function_threshold_weights_the_high_function_volume_only(case, tmp_path, capsys):
    out = _run(case, tmp_path, capsys, "--dose", f"{case / 'dose_y.nrrd'}:g", "--high-function-threshold", "0.8")
    row = _metrics(out)["g"]["both lungs"]
    perfusion, lungs, dose = _perfusion().astype(np.float64), _lungs() > 0, _y_dose().astype(np.float64)
    high = lungs & (perfusion >= 0.8 * perfusion[lungs].max())
    assert float(row["fmld_gy"]) == pytest.approx((perfusion * dose)[high].sum() / perfusion[high].sum(), rel=1e-5)
    assert float(row["mean_dose_high_function_gy"]) == pytest.approx(dose[high].mean(), rel=1e-5)


# --- refusals: exit 2, one error line, nothing written ------------------------------------------------------------
BAD = [
    ("dose-outside", ["--dose", "{case}/dose_half.nrrd"], "of the lungs lie outside the grid"),
    ("dose-nan", ["--dose", "{case}/dose_nan.nrrd"], "NaN"),
    ("dose-cgy", ["--dose", "{case}/dose_cgy.nrrd"], "is it in cGy?"),
    ("dose-negative", ["--dose", "{case}/dose_negative.nrrd"], "negative"),
    ("lungs-other-grid", ["--lungs", "{case}/lungs_other_grid.nrrd", "--dose", "{case}/dose_y.nrrd"], "not on one grid"),
    ("lungs-one-side", ["--lungs", "{case}/lungs_right_only.nrrd", "--labels-source", "lungmask_r231", "--dose",
                        "{case}/dose_y.nrrd"], "left lung no voxels"),
    ("dose-missing", ["--dose", "{case}/no_such_dose.nrrd"], "no_such_dose.nrrd not found"),
    ("no-dose", [], "give at least one planned dose"),
    ("same-names", ["--dose", "{case}/dose_y.nrrd:A", "--dose", "{case}/uniform20.nrrd:A"], "two plans are named"),
    ("bin-width", ["--dose", "{case}/dose_y.nrrd", "--bin-width", "0"], "--bin-width must be positive"),
]


@pytest.mark.parametrize("args,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(case, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    given = [a.format(case=case) for a in args]
    base = ["--perfusion", str(case / "perfusion.nrrd"), "--out", str(out)]
    if "--lungs" not in given:
        base += ["--lungs", str(case / "lungs.nrrd")]
    code, stdout, err = _plan(base + given, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert stdout == ""
    assert not out.exists()


def test_out_must_not_be_the_results_folder(case, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("perfusion.nrrd", "lungs.nrrd"):
        (results / name).write_bytes((case / name).read_bytes())
    before = sorted(p.name for p in results.iterdir())
    code, _, err = _plan(["--results", str(results), "--dose", str(case / "dose_y.nrrd"), "--out", str(results)], capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: --out {results} is one of the inputs; give another "
                                                      "folder for the results"]
    assert sorted(p.name for p in results.iterdir()) == before


# --- a real ctpm run folder ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A small synthetic chest phantom through ``ctpm run`` (HU-only baseline, given lungs and lobes: a few seconds)."""
    from CTPerfusionMappingLib.synthetic.cohort import generate_case, write_case

    d = tmp_path_factory.mktemp("plan_phantom")
    patient = write_case(generate_case(1, "small"), d / "patient")
    code = main(["run", "--ct", str(patient / "ct.nrrd"), "--lungs", str(patient / "lungs.nrrd"), "--lobes",
                 str(patient / "lobes.nrrd"), "--baseline", "--quiet", "--out", str(d / "results")])
    assert code == 0
    return d


def test_plan_reads_a_ctpm_run_folder(run_folder, tmp_path, capsys):
    ct = read_volume(run_folder / "patient" / "ct.nrrd")
    lungs = read_volume(run_folder / "results" / "lungs.nrrd").array
    centre = ct.index_to_lps(np.argwhere(lungs == 1)[:, ::-1].mean(axis=0))  # a target in the right lung
    spacing = 3.0
    lo = ct.index_to_lps(np.zeros(3)) - spacing
    shape = tuple(int(n) for n in (np.asarray(ct.size)[::-1] * np.asarray(ct.spacing)[::-1] / spacing + 3))
    z, y, x = _coordinates_mm(shape, spacing, tuple(lo))
    r2 = ((x - centre[0]) / 40) ** 2 + ((y - centre[1]) / 40) ** 2 + ((z - centre[2]) / 35) ** 2
    write_volume(Volume((60.0 * np.exp(-0.5 * r2)).astype(np.float32), (spacing,) * 3, tuple(lo)), tmp_path / "d.nrrd")
    out = tmp_path / "plan"
    code, stdout, err = _plan(["--results", str(run_folder / "results"), "--dose", f"{tmp_path / 'd.nrrd'}:right",
                               "--out", str(out)], capsys)
    assert code == 0, err
    assert "both lungs" in stdout
    table = _metrics(out)["right"]
    assert list(table) == ["right lung", "left lung", "both lungs", "RUL", "RML", "RLL", "LUL", "LLL"]
    assert float(table["right lung"]["mld_gy"]) > 5 * float(table["left lung"]["mld_gy"])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["inputs"]["lobes"].endswith("lobes.nrrd") and metrics["settings"]["regions_kind"] == "lobes"

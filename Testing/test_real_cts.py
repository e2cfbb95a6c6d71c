"""Regression over every real CT in ../shared/data: the whole pipeline with the bundled model, as `ctpm run` runs it.

Per CT: the lung volumes and their left/right ratio (recorded on this code, within a tolerance that allows small
changes of the segmentation but not a lung lost, doubled or swapped), the exact set of quality warnings, a perfusion
map that is finite, 0..1 in the lungs and 0 outside, a region table that covers both lungs, and anatomy where the
figures show it (spine posterior, right lung on the viewer's left). CTs that must be refused are refused with
one line. Skipped without ../shared (the public data are not part of the project); bench/real_data_report.py
writes the same cases as a table and a contact sheet.
"""

from __future__ import annotations

import json
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import pytest

from CTPerfusionMappingLib.pipeline import RunOptions, run_pipeline
from ImagingBasics.display import radiological_view
from ImagingBasics.errors import UserError
from ImagingBasics.imageio import read_interfile
from ImagingBasics.validation import read_ct

GATE = "lu177_dotatate_patient15/patient15_LuDOTATATE_attn.h33"


class Expected(NamedTuple):
    path: str
    right_ml: float  # recorded lung volumes (mL); a 10 % change fails the test
    left_ml: float
    warnings: Tuple[str, ...]  # the exact set of quality warning codes with the bundled model
    truncated_ends: Dict[str, Tuple[str, ...]] = {}  # lung -> ends that the field of view cuts (at least these)


CASES = {
    # COPD: the bundled model's map runs against the supine gradient in the right lung (P/A 0.93), which ctpm run says
    "cip_ct64": Expected("cip_chest_ct/ct-64.nrrd", 2494, 2178, ("outside_training_domain", "no_gravity_gradient")),
    "cip_testinput": Expected("cip_chest_ct/TestInput.nrrd", 4386, 3649, ("coarse_voxels", "outside_training_domain")),
    "lidc_dicom": Expected("lidc_idri_0001_dicom", 2009, 1758, ("outside_training_domain",)),
    "petct_sharp": Expected("lung_pet_ct_dx_a0001/Lung_Dx-A0001_CT_5mm_kernelL.nrrd", 3218, 2327,
                            ("outside_training_domain",)),
    "petct_soft": Expected("lung_pet_ct_dx_a0001/Lung_Dx-A0001_CT_5mm_kernelB.nrrd", 3255, 2319,
                           ("outside_training_domain",)),
    "ts_pulmonary": Expected("totalsegmentator_chest_ct/pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz", 855, 1015,
                             ("lung_truncated", "lung_volume_unusual"),
                             {"right": ("right side",), "left": ("left side",)}),
    "ts_aorta": Expected("totalsegmentator_chest_ct/aorta_report_ct_cropped_chestCTA_1p5mm.nii.gz", 1296, 1509,
                         ("lung_truncated", "outside_training_domain"),
                         {"right": ("right side",), "left": ("left side",)}),
    "gate_lu177": Expected(GATE, 763, 524, ("lung_truncated", "lung_volume_unusual", "outside_training_domain"),
                           {"right": ("top (apex)",), "left": ("top (apex)",)}),
}


def read_case(folder, path: str):
    """The CT as a user gives it to `ctpm run`; the GATE CT after `ctpm convert --add -1000 --orientation LAI`."""
    if path == GATE:
        raw = read_interfile(folder / path, "LAI")
        return raw.with_array(raw.array.astype(np.float32) - 1000.0)
    return read_ct(folder / path)


@pytest.fixture(scope="module")
def bundled_model():
    from CTPerfusionMappingLib.run_cli import load_model

    model, info = load_model(None, False, "cpu")
    assert info["predictor"] == "network" and "training_domain" in info
    return model, info


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, shared_data, bundled_model):
    expected = CASES[request.param]
    ct = read_case(shared_data / "real", expected.path)
    model, info = bundled_model
    return request.param, expected, ct, run_pipeline(ct, model=model, model_info=info, options=RunOptions())


def test_lung_volumes_and_sides(case):
    name, expected, ct, result = case
    volumes = result.metrics["lung_volume_ml"]
    assert volumes["right"] == pytest.approx(expected.right_ml, rel=0.10), name
    assert volumes["left"] == pytest.approx(expected.left_ml, rel=0.10), name
    ratio = volumes["left"] / volumes["right"]
    assert 0.6 <= ratio <= 1.4, name  # a left/right ratio of real lungs; a swapped or lost lung falls out
    lungs = result.labels.lungs.array
    x_right, x_left = (ct.index_to_lps(np.argwhere(lungs == v)[::50, ::-1].astype(float))[:, 0].mean() for v in (1, 2))
    assert x_right < x_left, name  # the right lung at the patient's right (smaller LPS x), whatever the file order


def test_quality_warnings(case):
    name, expected, _, result = case
    warnings = result.metrics["warnings"]
    assert {w["code"] for w in warnings} == set(expected.warnings), name
    assert all("\n" not in w["message"] for w in warnings)
    truncated = {w["values"]["lung"]: set(w["values"]["ends_cm2"]) for w in warnings if w["code"] == "lung_truncated"}
    assert set(truncated) == set(expected.truncated_ends), name
    for lung, ends in expected.truncated_ends.items():
        assert set(ends) <= truncated[lung], (name, lung)


def test_perfusion_map_and_region_table(case):
    name, _, _, result = case
    lungs = result.labels.lungs.array > 0
    perfusion = result.perfusion.array
    assert np.isfinite(perfusion).all() and perfusion.min() >= 0 and perfusion.max() <= 1, name
    assert not perfusion[~lungs].any() and perfusion[lungs].std() > 0.01, name  # a map, not a constant
    covered = sum(row["volume_ml"] for row in result.regions if row["name"] in {"right lung", "left lung"})
    total = sum(result.metrics["lung_volume_ml"].values())
    assert covered == pytest.approx(total, rel=1e-3), name
    shares = [row["perfusion_share_percent"] for row in result.regions if row["name"] in {"right lung", "left lung"}]
    assert sum(shares) == pytest.approx(100.0, abs=0.1) and min(shares) > 20, name


def test_anatomy_in_the_radiological_view(case):
    """What every figure shows: the spine behind the lungs' centre (at the bottom of an axial view), the right lung on
    the viewer's left. (Head-to-feet order is checked on the GATE patient's organs in test_dose_phantom.)"""
    name, _, ct, result = case
    view = radiological_view(ct).array
    lungs = radiological_view(result.labels.lungs).array
    z, y, x = (np.nonzero(lungs)[axis] for axis in range(3))
    slices = np.arange(view.shape[0])[:, None, None]
    bone = np.nonzero((view > 700) & (slices >= z.min()) & (slices <= z.max()))  # cortical bone; contrast stays below
    column = np.abs(bone[2] - 0.5 * (x.min() + x.max())) < 0.08 * view.shape[2]  # the midline: spine and sternum
    assert np.median(bone[1][column]) > y.mean(), name  # most midline bone (the spine) lies behind the lungs' centre
    right, left = (np.nonzero(lungs == v)[2].mean() for v in (1, 2))
    assert right < left, name  # array column 0 is the patient's right, drawn on the viewer's left


@pytest.mark.parametrize("path, message", [
    ("totalsegmentator_chest_ct/example_ct_sm_3mm.nii.gz", "no lungs found in the CT"),
    (GATE, "is not a CT in Hounsfield units"),  # stored as HU + 1000 and not converted
])
def test_real_files_that_must_be_refused(shared_data, path, message):
    with pytest.raises(UserError, match=message) as error:
        run_pipeline(read_ct(shared_data / "real" / path), model=None)
    assert "\n" not in str(error.value)


def test_ctpm_run_on_the_original_dicom_series(shared_data, tmp_path, capsys):
    """`ctpm run` on a DICOM folder (feet first, 133 slices): the same lungs as the pipeline, the outputs complete."""
    from CTPerfusionMappingLib.cli import main as ctpm

    folder = shared_data / "real" / CASES["lidc_dicom"].path
    out = tmp_path / "run"
    assert ctpm(["run", "--ct", str(folder), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected: Optional[Expected] = CASES["lidc_dicom"]
    assert metrics["lung_volume_ml"]["right"] == pytest.approx(expected.right_ml, rel=0.10)
    assert {w["code"] for w in metrics["warnings"]} == set(expected.warnings)
    assert {p.name for p in out.iterdir()} >= {"perfusion.nrrd", "lungs.nrrd", "lobes.csv", "overview.png"}
    assert "outside what the model was trained on" in capsys.readouterr().err

"""Input checks of the foundation (ImagingBasics/validation.py) and their use by every command of both command lines.

The same bad CT (NaN voxels; raw 0..4095 CT numbers; 50 mm voxels) must give the same one-line error and exit status 2
from ``ctpm run``, ``ctpm evaluate``, ``dosecnn run``, ``dosecnn integrate`` and both Slicer batch scripts, with
nothing written to the output folder.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from tiny_images import tiny_ct

from CTPerfusionMappingLib.cli import main as ctpm
from DoseCNNLib.cli import main as dosecnn
from ImagingBasics.errors import UserError
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.validation import (
    AIR_HU,
    COARSE_VOXEL_MM,
    MAX_VOXEL_MM,
    MIN_VOXELS_PER_AXIS,
    check_ct,
    read_ct,
    require_finite,
)
from ImagingBasics.volume import Volume

ROOT = Path(__file__).resolve().parents[1]


def _with_nans(ct: Volume) -> Volume:
    a = ct.array.astype(np.float32)
    a[2, 3, 4] = np.nan
    a[3, 3, 4] = np.inf
    return ct.with_array(a)


def _raw_units(ct: Volume) -> Volume:
    return ct.with_array(np.clip(ct.array + 1024.0, 0, 4095).astype(np.uint16))  # raw CT numbers: air near 24


def _huge_voxels(ct: Volume) -> Volume:
    return Volume(ct.array, (50.0, 50.0, 50.0), ct.origin, ct.direction)


BAD_CTS = {"nan": (_with_nans, "the CT contains 2 NaN or infinite voxel values; fix or re-export the image"),
           "raw": (_raw_units, "with no voxel at or below -500 HU: this is not a CT in Hounsfield units"),
           "voxels": (_huge_voxels, "the CT's voxel size 50 x 50 x 50 mm is implausible")}


# --- the checks themselves ------------------------------------------------------------------------------------------
def test_a_plausible_ct_passes_without_warnings():
    assert check_ct(tiny_ct()) == []


@pytest.mark.parametrize("kind", sorted(BAD_CTS))
def test_each_bad_ct_is_one_line_naming_the_problem(kind):
    make, message = BAD_CTS[kind]
    with pytest.raises(UserError) as info:
        check_ct(make(tiny_ct()))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_thresholds():
    ct = tiny_ct()
    air_only_at_threshold = ct.with_array(np.where(ct.array < 0, AIR_HU, ct.array))
    assert check_ct(air_only_at_threshold) == []  # at the threshold: still air
    with pytest.raises(UserError, match="no voxel at or below"):
        check_ct(ct.with_array(np.where(ct.array < 0, AIR_HU + 1, ct.array)))
    with pytest.raises(UserError, match="values run only from 0 to 1"):
        check_ct(ct.with_array((ct.array > 0).astype(np.float32)))  # a mask given as the CT
    thin = tiny_ct(shape=(MIN_VOXELS_PER_AXIS - 1, 10, 12))
    with pytest.raises(UserError, match=r"3 voxels along z \(slices\); at least 4"):
        check_ct(thin)
    assert check_ct(tiny_ct(shape=(MIN_VOXELS_PER_AXIS, 10, 12))) == []
    coarse = check_ct(tiny_ct(spacing=(2.0, 2.0, MAX_VOXEL_MM)))
    assert coarse[0].code == "coarse_voxels" and str(coarse[0]).startswith("the CT has coarse voxels")
    assert coarse[0].values["spacing_mm"] == [2.0, 2.0, MAX_VOXEL_MM]
    with pytest.raises(UserError, match="implausible"):
        check_ct(tiny_ct(spacing=(2.0, 2.0, MAX_VOXEL_MM * 1.01)))
    with pytest.raises(UserError, match="implausible"):
        check_ct(tiny_ct(spacing=(0.05, 0.05, 1.0)))
    assert check_ct(tiny_ct(spacing=(2.0, 2.0, COARSE_VOXEL_MM))) == []


def test_require_finite_names_the_image_and_refuses_odd_types():
    with pytest.raises(UserError, match="the SPECT contains 1 NaN or infinite voxel value;"):
        bad = np.zeros((2, 2, 2), np.float32)
        bad[0, 0, 0] = np.nan
        require_finite(Volume(bad), "SPECT")
    with pytest.raises(UserError, match="unsupported voxel type complex"):
        require_finite(Volume(np.zeros((2, 2, 2), np.complex64)), "SPECT")


REAL_CTS = ["cip_chest_ct/ct-64.nrrd", "cip_chest_ct/TestInput.nrrd", "lidc_idri_0001_dicom",
            "lung_pet_ct_dx_a0001/Lung_Dx-A0001_CT_5mm_kernelL.nrrd",
            "totalsegmentator_chest_ct/pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz",
            "totalsegmentator_chest_ct/example_ct_sm_3mm.nii.gz"]


@pytest.mark.parametrize("name", REAL_CTS)
def test_real_cts_pass_and_their_damaged_copies_fail(shared_data, name):
    ct = read_ct(shared_data / "real" / name)
    warnings = check_ct(ct)
    assert warnings == ([] if max(ct.spacing) <= COARSE_VOXEL_MM else [warnings[0]])
    for make, message in BAD_CTS.values():
        with pytest.raises(UserError, match=message.split(":")[0].split(" is ")[0][:35]):
            check_ct(make(ct))


def test_real_files_that_are_not_usable_cts_are_refused(shared_data):
    coarse = check_ct(read_volume(shared_data / "real" / "cip_chest_ct" / "TestInput.nrrd"))
    assert coarse and "6.99 mm" in str(coarse[0])  # 5.28 x 5.28 x 6.99 mm: usable, with a warning
    with pytest.raises(UserError, match=r"the CT has 2 voxels along z \(slices\)"):
        read_ct(shared_data / "real" / "cip_chest_ct" / "crop_ct_2slices.nrrd")
    gate = shared_data / "real" / "lu177_dotatate_patient15" / "patient15_LuDOTATATE_attn.h33"  # stored as HU + 1000
    with pytest.raises(UserError, match="no voxel at or below -500 HU: this is not a CT in Hounsfield units"):
        read_ct(gate)


# --- every command, the same error ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_cts")
    ct = tiny_ct()
    spect = ct.with_array(np.where(ct.array > 0, 100.0, 1.0).astype(np.float32))
    write_volume(spect, folder / "spect.nrrd")
    write_volume(spect.with_array(np.full(ct.shape, 0.5, np.float32)), folder / "perfusion.nrrd")
    for kind, (make, _) in BAD_CTS.items():
        bad = make(ct)
        write_volume(bad, folder / f"ct_{kind}.nrrd")
        (folder / f"tp_{kind}.csv").write_text(f"time_h,spect,ct,activity_mbq\n4,spect.nrrd,ct_{kind}.nrrd,100\n"
                                               f"24,spect.nrrd,ct_{kind}.nrrd,80\n")
    return folder


def _batch_main(script: Path):
    """The ``main(argv)`` of a batch script; ``slicer`` is a bare placeholder: arguments are checked before Slicer is
    used."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _commands(d: Path, kind: str):
    ct = str(d / f"ct_{kind}.nrrd")
    yield "ctpm run", lambda out: ctpm(["run", "--ct", ct, "--out", out, "--baseline", "--quiet"])
    yield "ctpm evaluate", lambda out: ctpm(["evaluate", "--perfusion", str(d / "perfusion.nrrd"), "--spect",
                                             str(d / "spect.nrrd"), "--ct", ct, "--out", out])
    yield "dosecnn run", lambda out: dosecnn(["run", "--spect", str(d / "spect.nrrd"), "--ct", ct, "--activity-mbq",
                                              "100", "--out", out])
    yield "dosecnn integrate", lambda out: dosecnn(["integrate", str(d / f"tp_{kind}.csv"), "--out", out])
    ctpm_batch = _batch_main(ROOT / "CTPerfusionMapping" / "Resources" / "Scripts" / "CTPerfusionMappingBatch.py")
    yield "CTPerfusionMappingBatch.py", lambda out: ctpm_batch(["--ct", ct, "--out", out])
    dose_batch = _batch_main(ROOT / "DoseCNN" / "Resources" / "Scripts" / "DoseCNNBatch.py")
    yield "DoseCNNBatch.py", lambda out: dose_batch(["--spect", str(d / "spect.nrrd"), "--ct", ct, "--activity-mbq",
                                                     "100", "--out", out])
    yield "DoseCNNBatch.py --manifest", lambda out: dose_batch(["--manifest", str(d / f"tp_{kind}.csv"), "--out", out])


@pytest.mark.parametrize("kind", sorted(BAD_CTS))
def test_the_same_bad_ct_gets_the_same_error_from_every_command(inputs, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "slicer", types.ModuleType("slicer"))
    expected = None
    for name, command in _commands(inputs, kind):
        out = tmp_path / name.replace(" ", "_")
        assert command(str(out)) == 2, name
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in captured.err, (name, captured.err)
        assert BAD_CTS[kind][1] in errors[0], (name, errors[0])
        expected = expected or errors[0]
        assert errors[0] == expected, name
        assert not out.exists() or not any(out.iterdir()), f"{name} wrote into --out"
    assert read_volume(inputs / f"ct_{kind}.nrrd").shape == tiny_ct().shape  # the input is untouched

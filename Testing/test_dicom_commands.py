"""DICOM RT through the commands (issue 18, items 1-3, the command half): ``ctpm run`` on a DICOM folder of several
series, ``ctpm export-dicom``, ``ctpm plan`` with an RT Dose and an RT Structure Set, ``dosecnn export-dicom``.

A small synthetic chest phantom (``generate_case(1, "small")``: 128 x 128 x 63 voxels of 3.9 x 3.9 x 5 mm) is written
as a CT series with pydicom (Testing/dicom_images.py), once alone and once in a folder with a one-slice scout, an
RT Structure Set (GTV, PTV) and an RT Dose. ``ctpm run --baseline`` (given lungs and lobes: seconds) runs on the mixed
folder; its results are exported and read back with pydicom (references) and with the library's readers (voxels).
Acceptance: RTSTRUCT -> mask within 3 % of the volume with Dice >= 0.95 per structure against the results' label
maps; Gy -> RT Dose -> Gy within 0.1 % of the maximum; ``ctpm plan`` with the RT Dose and the RTSTRUCT's GTV agrees with
``ctpm plan`` with the same dose as NRRD and the same GTV as a label map within 0.5 % (MLD, fMLD). Refusals exit 2
with one ``error:`` line and write nothing. The commands are called in-process (``main``), so their Python warnings
are recorded by pytest rather than printed; Testing/test_imageio.py checks how a command prints them.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
import pydicom
import pytest
from dicom_images import write_ct_series, write_ct_volume

from CTPerfusionMappingLib.cli import main as ctpm
from CTPerfusionMappingLib.slicer_glue.segments import FUNCTIONAL_SEGMENTS, REGION_COLOURS
from DoseCNNLib.cli import main as dosecnn
from ImagingBasics.dicom_inputs import read_ct
from ImagingBasics.dicom_rt import read_rtdose, read_rtstruct, write_rtdose, write_rtstruct
from ImagingBasics.imageio import read_volume, write_volume
from ImagingBasics.volume import Volume

OTHER_FRAME = "1.2.826.0.1.3680043.8.498.77"


# --- the patient ---------------------------------------------------------------------------------------------------
def _ellipsoid(volume: Volume, centre_mm, semi_axes_mm) -> np.ndarray:
    k, j, i = np.mgrid[: volume.shape[0], : volume.shape[1], : volume.shape[2]]
    points = volume.index_to_lps(np.stack([i, j, k], axis=-1))
    return (((points - np.asarray(centre_mm)) / np.asarray(semi_axes_mm)) ** 2).sum(axis=-1) <= 1.0


def _dose_gy(ct: Volume, centre_mm, spacing_mm: float = 4.0) -> Volume:
    """A Gaussian dose (60 Gy peak) on a coarser grid with the CT's axes, covering the CT."""
    lo = ct.index_to_lps(np.full(3, -0.5)) - spacing_mm
    extent = np.asarray(ct.size) * np.asarray(ct.spacing) + 2 * spacing_mm
    shape = tuple(int(n) for n in np.ceil(extent / spacing_mm)[::-1] + 1)
    grid = Volume(np.zeros(shape, np.float32), (spacing_mm,) * 3, tuple(lo))
    k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
    points = grid.index_to_lps(np.stack([i, j, k], axis=-1))
    r2 = (((points - np.asarray(centre_mm)) / np.array([45.0, 45.0, 40.0])) ** 2).sum(axis=-1)
    return grid.with_array((60.0 * np.exp(-0.5 * r2)).astype(np.float32))


def _scout(folder: Path, ct: Volume) -> str:
    """A one-slice CT localizer (another CT series) in ``folder``; its series UID."""
    hu = np.full((1, 64, 64), -1000, np.int16)
    truth = write_ct_series(folder, hu, (8.0, 8.0, 1.0), ct.origin, series_uid=None, description="Scout",
                            prefix="SC", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    return str(truth["series_uid"])


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Dict[str, object]:
    """The phantom as DICOM (alone and mixed with other series), its labels, a GTV and a dose, and ctpm run's results
    on the mixed folder."""
    from CTPerfusionMappingLib.synthetic.cohort import generate_case

    d = tmp_path_factory.mktemp("dicom_patient")
    case = generate_case(1, "small")
    ct_truth = write_ct_volume(d / "ct", case.ct, description="Planning CT")
    ct = read_ct(d / "ct")
    write_volume(case.lungs, d / "lungs.nrrd")
    write_volume(case.lobes, d / "lobes.nrrd")
    right = np.argwhere(case.lungs.array == 1)
    centre = ct.index_to_lps(right[:, ::-1].mean(axis=0))  # the right lung's centre of mass
    gtv = _ellipsoid(ct, centre, (18.0, 18.0, 16.0)) & (case.lungs.array == 1)
    ptv = _ellipsoid(ct, centre, (26.0, 26.0, 24.0))
    write_volume(ct.with_array(gtv.astype(np.uint8)), d / "gtv.nrrd")
    dose = _dose_gy(ct, centre)
    write_volume(dose, d / "dose.nrrd")
    rt = d / "rt"
    rt.mkdir()
    write_rtstruct({"GTV": gtv, "PTV": ptv}, {"GTV": (255, 0, 0)}, d / "ct", rt / "RS.dcm")
    write_rtdose(dose, d / "ct", rt / "RD.dcm")
    write_rtdose(dose, d / "ct", rt / "RD_fraction.dcm", summation_type="FRACTION")
    other = write_ct_volume(d / "other_frame", case.ct, frame_uid=OTHER_FRAME, description="Another scan")
    write_rtdose(dose, d / "other_frame", rt / "RD_other_frame.dcm")
    mixed = d / "mixed"
    shutil.copytree(d / "ct", mixed)
    scout_uid = _scout(mixed, ct)
    shutil.copy(rt / "RS.dcm", mixed / "RS.dcm")
    shutil.copy(rt / "RD.dcm", mixed / "RD.dcm")
    with pytest.warns(UserWarning) as record:
        code = ctpm(["run", "--ct", str(mixed), "--lungs", str(d / "lungs.nrrd"), "--lobes", str(d / "lobes.nrrd"),
                     "--baseline", "--quiet", "--out", str(d / "results")])
    assert code == 0
    return {"d": d, "ct": ct, "ct_truth": ct_truth, "gtv": gtv, "dose": dose, "scout_uid": scout_uid,
            "run_warnings": [str(w.message) for w in record], "other_series_uid": other["series_uid"]}


def _run(tool, argv: List[str], capsys) -> tuple:
    code = tool(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# --- item 1: a CT folder of several series -------------------------------------------------------------------------
def test_ctpm_run_on_a_folder_of_several_series_reads_the_largest_ct_and_names_the_others(patient):
    d, ct = patient["d"], patient["ct"]
    choice = [w for w in patient["run_warnings"] if "DICOM series" in w]
    assert len(choice) == 1 and "\n" not in choice[0], patient["run_warnings"]
    message = choice[0]
    assert f"reading the largest CT series, CT {patient['ct_truth']['series_uid']} (63 files" in message
    for other in (patient["scout_uid"], "RTSTRUCT", "RTDOSE", "--ct-series"):
        assert other in message, message
    perfusion = read_volume(d / "results" / "perfusion.nrrd")
    assert perfusion.same_geometry(ct)
    metrics = json.loads((d / "results" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["inputs"]["ct"] == str(d / "mixed")


def test_the_chosen_ct_is_the_ct_alone_and_ct_series_picks_another(patient):
    d, ct = patient["d"], patient["ct"]
    with pytest.warns(UserWarning, match="4 DICOM series"):
        mixed = read_ct(d / "mixed")
    np.testing.assert_array_equal(mixed.array, ct.array)
    assert mixed.same_geometry(ct)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chosen series: no warning
        scout = read_ct(d / "mixed", patient["scout_uid"])
        alone = read_ct(d / "ct")  # one series directly in the folder: read as always, no warning
    assert scout.shape == (1, 64, 64)
    np.testing.assert_array_equal(alone.array, ct.array)


def test_ct_series_with_a_ct_file_is_refused_before_any_work(patient, tmp_path, capsys):
    d = patient["d"]
    write_volume(patient["ct"], tmp_path / "ct.nrrd")
    argv = ["run", "--spect", str(tmp_path / "ct.nrrd"), "--ct", str(tmp_path / "ct.nrrd"), "--ct-series", "1.2.3",
            "--activity-mbq", "5", "--out", str(tmp_path / "dose")]
    code, out, err = _run(dosecnn, argv, capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: --ct-series chooses a series of a DICOM folder, but "
                                                      f"the CT {tmp_path / 'ct.nrrd'} is not a folder"]
    assert not (tmp_path / "dose").exists() and out == ""
    assert (d / "ct").is_dir()


def test_a_prone_ct_series_gets_the_position_warning_and_a_supine_one_does_not(patient, tmp_path):
    from CTPerfusionMappingLib.synthetic.cohort import generate_case
    from ImagingBasics.dicom_inputs import ct_patient_position

    d = patient["d"]
    write_ct_volume(tmp_path / "prone", generate_case(1, "small").ct, description="Prone CT", patient_position="HFP")
    assert ct_patient_position(tmp_path / "prone") == "HFP"
    assert ct_patient_position(d / "mixed") == "HFS" and ct_patient_position(d / "lungs.nrrd") is None
    assert ctpm(["run", "--ct", str(tmp_path / "prone"), "--lungs", str(d / "lungs.nrrd"), "--baseline", "--quiet",
                 "--out", str(tmp_path / "results")]) == 0
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["inputs"]["patient_position"] == "HFP"
    assert [w["values"] for w in metrics["warnings"] if w["code"] == "patient_not_supine"] == [{"patient_position": "HFP"}]
    write_volume(patient["ct"], tmp_path / "ct.nrrd")  # an image file has no position: the user may give it
    assert ctpm(["run", "--ct", str(tmp_path / "ct.nrrd"), "--lungs", str(d / "lungs.nrrd"), "--baseline", "--quiet",
                 "--patient-position", "FFDL", "--out", str(tmp_path / "given")]) == 0
    given = json.loads((tmp_path / "given" / "metrics.json").read_text(encoding="utf-8"))
    assert [w["values"] for w in given["warnings"] if w["code"] == "patient_not_supine"] == [{"patient_position": "FFDL"}]
    supine = json.loads((d / "results" / "metrics.json").read_text(encoding="utf-8"))
    assert supine["model"]["inputs"]["patient_position"] == "HFS"
    assert not [w for w in supine["warnings"] if w["code"] == "patient_not_supine"]


# --- item 3: ctpm export-dicom ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(patient) -> Path:
    d = patient["d"]
    out = d / "export"
    code = ctpm(["export-dicom", str(d / "results"), "--ct-dicom", str(d / "ct"), "--out", str(out)])
    assert code == 0
    return out


EXPECTED_STRUCTURES = ["right lung", "left lung", "both lungs", "RUL", "RML", "RLL", "LUL", "LLL", "high function",
                       "low function"]


def _label_masks(results: Path) -> Dict[str, np.ndarray]:
    lungs = read_volume(results / "lungs.nrrd").array
    lobes = read_volume(results / "lobes.nrrd").array
    functional = read_volume(results / "functional.nrrd").array
    masks = {"right lung": lungs == 1, "left lung": lungs == 2, "both lungs": lungs > 0,
             "high function": functional == 2, "low function": functional == 1}
    masks.update({name: lobes == rid for rid, name in zip((4, 5, 6, 7, 8), ("RUL", "RML", "RLL", "LUL", "LLL"))})
    return masks


def test_export_writes_the_structures_and_the_perfusion_series(patient, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["export.json", "perfusion", "structures.dcm"]
    summary = json.loads((exported / "export.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in summary["structures"]] == EXPECTED_STRUCTURES
    assert summary["ct"]["series_uid"] == patient["ct_truth"]["series_uid"]
    assert len(list((exported / "perfusion").iterdir())) == 63


def test_exported_structures_read_back_within_the_acceptance_tolerances(patient, exported):
    d, ct = patient["d"], patient["ct"]
    masks = read_rtstruct(exported / "structures.dcm", ct, patient["ct_truth"]["frame_uid"])
    assert list(masks) == EXPECTED_STRUCTURES
    for name, truth in _label_masks(d / "results").items():
        assert truth.any(), name
        assert abs(masks[name].sum() / truth.sum() - 1.0) <= 0.03, name
        assert _dice(masks[name], truth) >= 0.95, name


def test_exported_structures_are_named_coloured_and_reference_the_ct(patient, exported):
    truth = patient["ct_truth"]
    ds = pydicom.dcmread(str(exported / "structures.dcm"))
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == truth["study_uid"]
    assert ds.SeriesInstanceUID != truth["series_uid"]
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == truth["frame_uid"]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == truth["series_uid"]
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(truth["sop_uids"])
    colours = {roi.ROIName: tuple(int(c) for c in contours.ROIDisplayColor)
               for roi, contours in zip(ds.StructureSetROISequence, ds.ROIContourSequence)}
    assert colours["RUL"] == tuple(int(round(255 * c)) for c in REGION_COLOURS[4])
    assert colours["high function"] == tuple(int(round(255 * c)) for c in FUNCTIONAL_SEGMENTS[2][1])
    z0, dz = patient["ct"].origin[2], patient["ct"].spacing[2]
    for roi in ds.StructureSetROISequence:
        assert roi.ReferencedFrameOfReferenceUID == truth["frame_uid"]
    for contours in ds.ROIContourSequence:
        for contour in contours.ContourSequence:
            k = int(round((float(contour.ContourData[2]) - z0) / dz))  # the slice the contour lies on
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID == truth["sop_uids"][k]


def test_the_exported_perfusion_series_is_on_the_ct_frame_with_its_values(patient, exported):
    truth = patient["ct_truth"]
    perfusion = read_volume(patient["d"] / "results" / "perfusion.nrrd")
    files = sorted((exported / "perfusion").iterdir())
    ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    assert ds.Modality == "PT" and ds.Units == "PROPCNTS"
    assert ds.FrameOfReferenceUID == truth["frame_uid"] and ds.StudyInstanceUID == truth["study_uid"]
    back = read_volume(exported / "perfusion")  # SimpleITK/GDCM: a second reader of the voxels
    assert back.same_geometry(perfusion, tol_mm=1e-2)
    peak = float(perfusion.array.max())
    np.testing.assert_allclose(back.array, perfusion.array, atol=peak / 65535 * 0.51 + 1e-7)


# --- item 2: ctpm plan with DICOM -------------------------------------------------------------------------------
def _rows(out: Path) -> Dict[str, Dict[str, Dict[str, str]]]:
    table: Dict[str, Dict[str, Dict[str, str]]] = {}
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            table.setdefault(row["plan"], {})[row["structure"]] = row
    return table


def test_plan_with_rtdose_and_rtstruct_agrees_with_nrrd_inputs(patient, tmp_path, capsys):
    d = patient["d"]
    dicom_out, nrrd_out = tmp_path / "dicom", tmp_path / "nrrd"
    code, _, err = _run(ctpm, ["plan", "--results", str(d / "results"), "--dose", f"{d / 'rt' / 'RD.dcm'}:A",
                               "--dose", f"{d / 'rt' / 'RD_fraction.dcm'}:F", "--structures", str(d / "rt" / "RS.dcm"),
                               "--exclude-structure", "gtv", "--ct-dicom", str(d / "ct"), "--out", str(dicom_out)],
                        capsys)
    assert code == 0, err
    code, _, err = _run(ctpm, ["plan", "--results", str(d / "results"), "--dose", f"{d / 'dose.nrrd'}:A",
                               "--exclude", str(d / "gtv.nrrd"), "--out", str(nrrd_out)], capsys)
    assert code == 0, err
    dicom, nrrd = _rows(dicom_out)["A"], _rows(nrrd_out)["A"]
    for structure in ("right lung", "left lung", "both lungs", "RLL"):
        for metric in ("mld_gy", "fmld_gy"):
            assert float(dicom[structure][metric]) == pytest.approx(float(nrrd[structure][metric]), rel=0.005)
    assert float(dicom["right lung"]["volume_ml"]) == pytest.approx(float(nrrd["right lung"]["volume_ml"]), rel=0.005)
    metrics = json.loads((dicom_out / "metrics.json").read_text(encoding="utf-8"))
    rtdose = metrics["inputs"]["dicom"]["rtdose"]
    assert rtdose["A"]["dose_summation_type"] == "PLAN" and rtdose["F"]["dose_summation_type"] == "FRACTION"
    assert metrics["inputs"]["dicom"]["excluded_structures"] == ["GTV"]
    assert metrics["settings"]["excluded"] == ["GTV (RS.dcm)"]
    codes = [(w["code"], w.get("values", {}).get("plan")) for w in metrics["warnings"]]
    assert ("dose_not_whole_plan", "F") in codes and ("dose_not_whole_plan", "A") not in codes


def test_the_rtdose_round_trip_is_within_0_1_percent(patient):
    d, dose = patient["d"], patient["dose"]
    back = read_rtdose(d / "rt" / "RD.dcm", patient["ct_truth"]["frame_uid"])
    assert back.same_geometry(dose, tol_mm=1e-3)
    assert np.max(np.abs(back.array - dose.array)) <= 1e-3 * float(dose.array.max())


# --- refusals: exit 2, one error line, nothing written ----------------------------------------------------------------
def _refused(tool, argv: List[str], out: Path, message: str, capsys) -> None:
    code, stdout, err = _run(tool, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()


def test_an_rtdose_of_another_frame_of_reference_is_refused(patient, tmp_path, capsys):
    d = patient["d"]
    base = ["plan", "--results", str(d / "results"), "--dose", str(d / "rt" / "RD_other_frame.dcm")]
    _refused(ctpm, base + ["--ct-dicom", str(d / "ct"), "--out", str(tmp_path / "a")], tmp_path / "a",
             f"lies on another frame of reference ({OTHER_FRAME}) than the CT's", capsys)
    _refused(ctpm, base + ["--structures", str(d / "rt" / "RS.dcm"), "--exclude-structure", "GTV", "--out",
                           str(tmp_path / "b")], tmp_path / "b", "than that of the other DICOM inputs", capsys)


def test_an_unknown_structure_is_refused_with_the_available_ones(patient, tmp_path, capsys):
    d = patient["d"]
    _refused(ctpm, ["plan", "--results", str(d / "results"), "--dose", str(d / "rt" / "RD.dcm"), "--structures",
                    str(d / "rt" / "RS.dcm"), "--exclude-structure", "CTV", "--out", str(tmp_path / "p")],
             tmp_path / "p", "--exclude-structure CTV: RS.dcm holds no such structure (it holds: GTV, PTV)", capsys)


def test_results_of_another_ct_are_refused(patient, tmp_path, capsys):
    d = patient["d"]
    small = write_ct_series(tmp_path / "small_ct", np.zeros((10, 16, 16), np.int16), (2.0, 2.0, 2.5), (0.0, 0.0, 0.0))
    _refused(ctpm, ["export-dicom", str(d / "results"), "--ct-dicom", str(small["folder"]), "--out",
                    str(tmp_path / "e")], tmp_path / "e", "it was made from another CT", capsys)
    _refused(ctpm, ["plan", "--results", str(d / "results"), "--dose", str(d / "dose.nrrd"), "--ct-dicom",
                    str(small["folder"]), "--out", str(tmp_path / "p")], tmp_path / "p",
             "the perfusion map (128x128x63 voxels", capsys)
    (tmp_path / "dose").mkdir()
    write_volume(Volume(np.ones((10, 16, 16), np.float32), (2.0, 2.0, 2.5)), tmp_path / "dose" / "absorbed_dose.nrrd")
    _refused(dosecnn, ["export-dicom", str(tmp_path / "dose"), "--ct-dicom", str(d / "ct"), "--out",
                       str(tmp_path / "x")], tmp_path / "x", "it was made from another CT", capsys)


def test_out_inside_the_ct_folder_is_refused_and_the_folder_stays_as_it_is(patient, capsys):
    d = patient["d"]
    before = sorted(p.name for p in (d / "ct").iterdir())
    out = d / "ct" / "export"
    _refused(ctpm, ["export-dicom", str(d / "results"), "--ct-dicom", str(d / "ct"), "--out", str(out)], out,
             "lies inside the input folder", capsys)
    _refused(ctpm, ["run", "--ct", str(d / "ct"), "--baseline", "--quiet", "--out", str(out)], out,
             "lies inside the input folder", capsys)
    _refused(dosecnn, ["run", "--ct", str(d / "ct"), "--spect", str(d / "ct"), "--activity-mbq", "1000", "--out",
                       str(out)], out, "lies inside the input folder", capsys)
    assert sorted(p.name for p in (d / "ct").iterdir()) == before


def test_a_non_ct_series_uid_is_refused(patient, capsys):
    d = patient["d"]
    rtstruct_uid = str(pydicom.dcmread(str(d / "rt" / "RS.dcm"), stop_before_pixels=True).SeriesInstanceUID)
    out = d / "refused_run"
    _refused(ctpm, ["run", "--ct", str(d / "mixed"), "--ct-series", rtstruct_uid, "--lungs", str(d / "lungs.nrrd"),
                    "--baseline", "--quiet", "--out", str(out)], out, "is a RTSTRUCT series, not a CT", capsys)


# --- item 4: dosecnn export-dicom ----------------------------------------------------------------------------------
def test_dosecnn_export_writes_the_absorbed_dose_as_rtdose_and_the_dose_rate_as_an_image_series(patient, tmp_path,
                                                                                                capsys):
    d, ct, truth = patient["d"], patient["ct"], patient["ct_truth"]
    results = tmp_path / "integrate"
    results.mkdir()
    k, j, i = np.mgrid[: ct.shape[0], : ct.shape[1], : ct.shape[2]]
    absorbed = ct.with_array((0.05 * i + 0.1 * j + 0.3 * k).astype(np.float32))  # Gy, up to about 32 Gy
    rate = ct.with_array((1e-4 * (i + j + k)).astype(np.float32))  # mGy/s
    write_volume(absorbed, results / "absorbed_dose.nrrd")
    write_volume(rate, results / "dose_rate_00.nrrd")
    (results / "integrate.json").write_text(json.dumps({"nuclide": "Lu-177", "time_points": [{"time_h": 24.0}]}))
    out = tmp_path / "export"
    code, stdout, err = _run(dosecnn, ["export-dicom", str(results), "--ct-dicom", str(d / "ct"), "--out", str(out)],
                             capsys)
    assert code == 0, err
    assert "absorbed_dose.dcm: RTDOSE" in stdout and "dose_rate_00" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["absorbed_dose.dcm", "dose_rate_00", "export.json"]
    back = read_rtdose(out / "absorbed_dose.dcm", truth["frame_uid"])
    assert back.same_geometry(absorbed, tol_mm=1e-3)
    assert np.max(np.abs(back.array - absorbed.array)) <= 1e-3 * float(absorbed.array.max())
    ds = pydicom.dcmread(str(out / "absorbed_dose.dcm"), stop_before_pixels=True)
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert ds.StudyInstanceUID == truth["study_uid"] and ds.FrameOfReferenceUID == truth["frame_uid"]
    first = sorted((out / "dose_rate_00").iterdir())[0]
    rate_ds = pydicom.dcmread(str(first), stop_before_pixels=True)
    assert rate_ds.Modality == "PT" and rate_ds.Units == "NONE" and rate_ds.FrameOfReferenceUID == truth["frame_uid"]
    assert "mGy/s" in rate_ds.SeriesDescription and "24 h" in rate_ds.SeriesDescription
    rate_back = read_volume(out / "dose_rate_00")
    np.testing.assert_allclose(rate_back.array, rate.array, atol=float(rate.array.max()) / 65535 * 0.51 + 1e-9)

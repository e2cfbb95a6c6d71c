"""``dosecnn export-dicom``: the dosimetry results as DICOM objects on the planning CT's frame of reference.

RESULTS is the output folder of ``dosecnn integrate`` and/or of ``dosecnn run`` on the CT whose DICOM series is given
(``--ct-dicom``; the results must lie on that series' grid: results of another CT are refused). Written to ``--out``:

* ``absorbed_dose.dcm`` (from ``absorbed_dose.nrrd``, Gy): an RT Dose, DoseUnits GY, DoseType PHYSICAL,
  DoseSummationType PLAN (the absorbed dose of the one administration whose time points were integrated);
* one folder per dose-rate map (``dose_rate/`` from ``dosecnn run``'s ``dose_rate.nrrd``; ``dose_rate_NN/`` from
  ``dosecnn integrate --dose-rate-maps``), each a PET-like derived image series whose values are the dose rate in
  mGy/s, the unit stated in SeriesDescription and DerivationDescription (PET Units NONE). A dose rate is not written
  as an RT Dose: RT Dose knows only GY and RELATIVE, and a planning system would take any RT Dose for an absorbed
  dose (docs/DICOM_RT.md);
* ``export.json``: what was written (files, series UIDs, the CT series, study and frame of reference), last.

Every input is checked before anything is written (one ``error:`` line, exit status 2); the outputs appear in
``--out`` all at once (:func:`ImagingBasics.outputs.output_folder`), never inside an input folder.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Dict, List

from ImagingBasics.dicom_inputs import CT_SERIES
from ImagingBasics.errors import UserError

#: the dosimetry outputs exported (names as dosecnn integrate and dosecnn run write them)
ABSORBED_DOSE = "absorbed_dose.nrrd"
DOSE_RATE = "dose_rate.nrrd"
DOSE_RATE_PATTERN = re.compile(r"^dose_rate(_\d\d)?\.nrrd$")
#: the files and folders written into --out (export.json last: its presence marks a finished export)
RTDOSE_FILE = "absorbed_dose.dcm"
EXPORT_OUTPUTS = [RTDOSE_FILE, "dose_rate", "dose_rate_[0-9][0-9]", "export.json"]
#: series numbers of the objects, after the CT's (the library's defaults are 901-903)
DOSE_RATE_SERIES_NUMBER = 911


def add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-dicom", help="export the absorbed dose (RT Dose, Gy) and dose-rate maps (image series) onto the CT's "
                             "DICOM frame of reference",
        description="Write the results of dosecnn integrate (absorbed_dose.nrrd, Gy) as an RT Dose (absorbed_dose.dcm, "
                    "DoseUnits GY) and every dose-rate map of dosecnn run or integrate (dose_rate.nrrd, "
                    "dose_rate_NN.nrrd, mGy/s) as a PET-like derived image series with the unit in its description "
                    "(an RT Dose holds only Gy), all in the CT's study and on its frame of reference, with export.json "
                    "listing what was written. The results must lie on the grid of the CT series given. "
                    "Docs: docs/DICOM_RT.md.")
    p.add_argument("results", type=Path, metavar="RESULTS",
                   help="output folder of dosecnn integrate and/or dosecnn run on this CT")
    p.add_argument("--ct-dicom", required=True, type=Path, metavar="FOLDER",
                   help="the CT's DICOM series folder (the CT the results were computed on)")
    CT_SERIES.add_argument(p)
    p.add_argument("--out", required=True, type=Path, help="output folder (new or empty of other exports)")
    p.set_defaults(func=_export)


def _read_json(path: Path) -> Dict[str, Any]:
    """A results folder's summary (integrate.json, run.json), or {} when absent or unreadable (it only names things)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def result_files(results: Path) -> Dict[str, Path]:
    """The exportable files of a results folder: output name -> image file (``absorbed_dose.dcm`` for the dose, a
    folder name per dose-rate map).

    Raises:
        UserError: not a folder, or no exportable file in it.
    """
    if not results.is_dir():
        raise UserError(f"{results} is not a folder; give the output folder of dosecnn integrate or dosecnn run")
    files: Dict[str, Path] = {}
    if (results / ABSORBED_DOSE).is_file():
        files[RTDOSE_FILE] = results / ABSORBED_DOSE
    for path in sorted(results.iterdir()):
        if DOSE_RATE_PATTERN.match(path.name) and path.is_file():
            files[path.name[: -len(".nrrd")]] = path
    if not files:
        raise UserError(f"{results} holds neither {ABSORBED_DOSE} (dosecnn integrate) nor {DOSE_RATE} (dosecnn run); "
                        "give a dosimetry results folder")
    return files


def dose_rate_description(name: str, results: Path) -> str:
    """SeriesDescription of a dose-rate series (at most 64 characters): nuclide, unit and, for a time point of
    dosecnn integrate, its time after administration."""
    integrate = _read_json(results / "integrate.json")
    run = _read_json(results / "run.json")
    nuclide = str(integrate.get("nuclide") or run.get("nuclide") or "").strip()
    when = ""
    if name != "dose_rate":
        index = int(name.rsplit("_", 1)[1])
        points = integrate.get("time_points") or []
        if index < len(points) and isinstance(points[index], dict) and points[index].get("time_h") is not None:
            when = f" at {float(points[index]['time_h']):g} h"
    return f"{nuclide + ' ' if nuclide else ''}dose rate in mGy/s{when} (dosecnn; not a dose)"[:64]


def absorbed_dose_description(results: Path) -> str:
    """SeriesDescription and DoseComment of the RT Dose (at most 64 characters)."""
    nuclide = str(_read_json(results / "integrate.json").get("nuclide") or "").strip()
    return f"{nuclide + ' ' if nuclide else ''}absorbed dose, one administration (dosecnn)"[:64]


def _export(args: argparse.Namespace) -> int:
    from ImagingBasics.dicom_inputs import export_geometry, require_on_ct_grid
    from ImagingBasics.files import write_json
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.outputs import output_folder
    from ImagingBasics.validation import require_finite

    files = result_files(args.results)
    geometry = export_geometry(args.results, args.ct_dicom, args.ct_series, args.out, EXPORT_OUTPUTS)
    volumes = {}
    for name, path in files.items():  # every image read and checked before anything is written
        volume = read_volume(path)
        require_finite(volume, path.name)
        require_on_ct_grid(volume, geometry, f"{path.name} in {args.results}")
        volumes[name] = volume
    with output_folder(args.out, [args.results, args.ct_dicom], EXPORT_OUTPUTS, "export.json") as staging:
        written = _write_objects(volumes, args.results, args.ct_dicom, geometry, staging)
        write_json(_summary(written, geometry, args), staging / "export.json")
    _print_written(written, geometry, args.out)
    return 0


def _write_objects(volumes, results: Path, ct_dicom: Path, geometry, staging: Path) -> List[Dict[str, Any]]:
    """Write each exportable volume into ``staging``; one record per object written."""
    import pydicom

    from ImagingBasics.dicom_rt import write_rtdose, write_secondary_series

    series_uid = geometry.series.series_uid
    written: List[Dict[str, Any]] = []
    for name, volume in volumes.items():
        if name == RTDOSE_FILE:
            path = write_rtdose(volume, ct_dicom, staging / name, summation_type="PLAN",
                                description=absorbed_dose_description(results), series_uid=series_uid)
            uid = str(pydicom.dcmread(str(path), stop_before_pixels=True).SeriesInstanceUID)
            written.append({"name": name, "object": "RTDOSE", "unit": "Gy", "files": 1, "series_uid": uid,
                            "source": ABSORBED_DOSE, "max": float(volume.array.max())})
            continue
        paths = write_secondary_series(volume, ct_dicom, staging / name, modality="PT", units="NONE",
                                       description=dose_rate_description(name, results), series_uid=series_uid,
                                       series_number=DOSE_RATE_SERIES_NUMBER + len(written))
        uid = str(pydicom.dcmread(str(paths[0]), stop_before_pixels=True).SeriesInstanceUID)
        written.append({"name": name + "/", "object": "PT image series", "unit": "mGy/s", "files": len(paths),
                        "series_uid": uid, "source": f"{name}.nrrd", "max": float(volume.array.max())})
    return written


def _summary(written: List[Dict[str, Any]], geometry, args: argparse.Namespace) -> Dict[str, Any]:
    from ImagingBasics.dicom_series import read_header

    ct = read_header(geometry.slices[0].path)
    return {"results": str(args.results), "ct_dicom": str(args.ct_dicom),
            "ct": {"series_uid": geometry.series.series_uid, "study_uid": str(ct.get("StudyInstanceUID", "")),
                   "frame_of_reference_uid": geometry.series.frame_of_reference_uid, "slices": len(geometry.slices)},
            "written": written,
            "note": "research software, not for clinical use; dose rates are image series in mGy/s, not RT Doses"}


def _print_written(written: List[Dict[str, Any]], geometry, out: Path) -> None:
    for item in written:
        print(f"{out / item['name']}: {item['object']} ({item['files']} file{'s' if item['files'] > 1 else ''}), "
              f"{item['unit']}, maximum {item['max']:.4g}, series {item['series_uid']}")
    print(f"on CT series {geometry.series.series_uid}, frame of reference {geometry.series.frame_of_reference_uid}; "
          f"export.json in {out}")

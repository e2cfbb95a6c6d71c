"""``ctpm export-dicom``: the results of ``ctpm run`` as DICOM objects a planning system imports onto the planning CT.

RESULTS is the output folder of ``ctpm run`` on the CT whose DICOM series is given (``--ct-dicom``, ``--ct-series``);
its grid must be that series' grid (results of another CT are refused). Written to ``--out``:

* ``structures.dcm``: an RT Structure Set referencing the CT series, its slices and its frame of reference, with the
  right, left and both lungs (``lungs.nrrd``), each region of ``lobes.nrrd`` (lobes RUL ... LLL, or lung thirds named
  as thirds, never as lobes) and the high- and low-function volumes (``functional.nrrd``), named and coloured as the
  Slicer module names and colours its segments (:mod:`.slicer_glue.segments`);
* ``perfusion/``: the perfusion map as a PET-like derived image series (PET Units PROPCNTS: a relative perfusion);
* ``export.json``: what was written (structures with their volumes and colours, series UIDs, the CT's study, series
  and frame of reference), last.

Every input is checked before anything is written (one ``error:`` line, exit status 2); the outputs appear in
``--out`` all at once (:func:`ImagingBasics.outputs.output_folder`), never inside an input folder. What a planning
system receives and why: docs/DICOM_RT.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ImagingBasics.dicom_inputs import CT_SERIES
from ImagingBasics.errors import UserError

from .labels import CIP_LEFT_LUNG, CIP_RIGHT_LUNG, CIP_WHOLE_LUNG, LEFT_LUNG, LOBE_IDS, REGION_NAMES, RIGHT_LUNG, THIRD_IDS

#: the files and folders written into --out (export.json last: its presence marks a finished export)
STRUCTURES_FILE = "structures.dcm"
PERFUSION_SERIES = "perfusion"
EXPORT_OUTPUTS = [STRUCTURES_FILE, PERFUSION_SERIES, "export.json"]
#: colours (RGB 0..1) of the whole lungs, which the Slicer module shows only as their regions (no colour of its own to
#: reuse): a muted red for the right, a muted blue for the left, grey for both
LUNG_COLOURS = {CIP_RIGHT_LUNG: (0.80, 0.55, 0.50), CIP_LEFT_LUNG: (0.50, 0.60, 0.85), CIP_WHOLE_LUNG: (0.70, 0.70, 0.70)}
#: StructureSetLabel (at most 16 characters) and SeriesDescription of the RT Structure Set
STRUCTURE_SET_LABEL = "CTPM lungs"
STRUCTURES_DESCRIPTION = "Lungs, regions, functional volumes (ctpm; research software)"
PERFUSION_DESCRIPTION = "Perfusion map, relative (ctpm; research software)"
#: series number of the perfusion series (the structure set keeps the library's 901)
PERFUSION_SERIES_NUMBER = 903

Rgb = Tuple[float, float, float]


def add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-dicom", help="export a ctpm run's lungs, lobes and functional volumes (RTSTRUCT) and perfusion map "
                             "(image series) onto the CT's DICOM series",
        description="Write the results of ctpm run on a DICOM CT as objects a planning system imports onto that CT: "
                    "structures.dcm (RT Structure Set: right, left and both lungs, the lobes or lung thirds, the high "
                    "and low functional volumes; contours on the CT's slices, referencing its series and frame of "
                    "reference), perfusion/ (the perfusion map as a PET-like derived image series in the CT's study "
                    "and frame of reference) and export.json. RESULTS must lie on the CT series' grid (results of "
                    "another CT are refused). Docs: docs/DICOM_RT.md.")
    p.add_argument("results", type=Path, metavar="RESULTS", help="output folder of ctpm run on this CT")
    p.add_argument("--ct-dicom", required=True, type=Path, metavar="FOLDER",
                   help="the CT's DICOM series folder (the CT ctpm run read)")
    CT_SERIES.add_argument(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_export)


# --- what is exported -------------------------------------------------------------------------------------------
def rgb_255(colour: Sequence[float]) -> Tuple[int, int, int]:
    """An RGB colour 0..1 (Slicer's) as DICOM's ROIDisplayColor 0..255."""
    return tuple(int(round(255 * min(max(float(c), 0.0), 1.0))) for c in colour)  # type: ignore[return-value]


def lung_structures(lungs: np.ndarray) -> Dict[str, Tuple[np.ndarray, Rgb]]:
    """Right, left and both lungs of a lung map (1 right, 2 left): name -> (mask, RGB 0..1)."""
    right, left = lungs == RIGHT_LUNG, lungs == LEFT_LUNG
    return {REGION_NAMES[CIP_RIGHT_LUNG]: (right, LUNG_COLOURS[CIP_RIGHT_LUNG]),
            REGION_NAMES[CIP_LEFT_LUNG]: (left, LUNG_COLOURS[CIP_LEFT_LUNG]),
            REGION_NAMES[CIP_WHOLE_LUNG]: (right | left, LUNG_COLOURS[CIP_WHOLE_LUNG])}


def region_structures(regions: np.ndarray) -> Dict[str, Tuple[np.ndarray, Rgb]]:
    """Each lobe (CIP 4-8) or lung third (9-14) present: name -> (mask, RGB 0..1), named and coloured as the Slicer
    module's region segments (thirds as thirds)."""
    from .slicer_glue.segments import region_segments

    present = [int(v) for v in np.unique(regions) if int(v) in LOBE_IDS + THIRD_IDS]
    return {name: (regions == rid, colour) for rid, (name, colour) in region_segments(present).items()}


def functional_structures(functional: np.ndarray) -> Dict[str, Tuple[np.ndarray, Rgb]]:
    """The high- then the low-function volume (functional.nrrd: 2 high, 1 low) as the Slicer module's segments."""
    from .slicer_glue.segments import FUNCTIONAL_SEGMENTS

    return {name: (functional == value, colour)
            for value, (name, colour) in sorted(FUNCTIONAL_SEGMENTS.items(), reverse=True)}


def export_structures(lungs: np.ndarray, regions: Optional[np.ndarray] = None,  # noqa: UP045
                      functional: Optional[np.ndarray] = None) -> Dict[str, Tuple[np.ndarray, Rgb]]:  # noqa: UP045
    """Every structure of the RT Structure Set, in order: lungs, regions, functional volumes (name -> (mask, RGB))."""
    structures = lung_structures(lungs)
    if regions is not None:
        structures.update(region_structures(regions))
    if functional is not None:
        structures.update(functional_structures(functional))
    return structures


# --- reading the results ----------------------------------------------------------------------------------------
def result_files(results: Path) -> Dict[str, Optional[Path]]:  # noqa: UP045
    """The files of a ctpm run folder by key (perfusion and lungs needed; regions and functional when present).

    Raises:
        UserError: not a folder, or no perfusion.nrrd / lungs.nrrd in it.
    """
    from .report import OUTPUT_FILES

    if not results.is_dir():
        raise UserError(f"{results} is not a folder; give the output folder of ctpm run")
    files: Dict[str, Optional[Path]] = {}
    for key in ("perfusion", "lungs", "regions", "functional"):
        path = results / OUTPUT_FILES[key]
        if key in ("perfusion", "lungs") and not path.is_file():
            raise UserError(f"{results} holds no {OUTPUT_FILES[key]}: is it the output folder of ctpm run?")
        files[key] = path if path.is_file() else None
    return files


def _label_array(volume, name: str, allowed: Sequence[int]) -> np.ndarray:
    from ImagingBasics.validation import check_label_map

    check_label_map(volume, name)
    array = np.asarray(volume.array).astype(np.int64)
    extra = sorted(set(np.unique(array).tolist()) - set(allowed) - {0})
    if extra:
        raise UserError(f"{name} holds the values {extra[:8]}, which ctpm run never writes there (allowed: "
                        f"{', '.join(str(v) for v in allowed)}); give a ctpm run folder")
    return array


def read_results(files: Dict[str, Optional[Path]], geometry, results: Path):  # noqa: UP045
    """(perfusion Volume, lungs, regions or None, functional or None) of a ctpm run folder, checked to lie on the CT
    series' grid (``geometry``) and to hold the label values ctpm run writes."""
    from ImagingBasics.dicom_inputs import require_on_ct_grid
    from ImagingBasics.imageio import read_volume
    from ImagingBasics.validation import require_finite

    perfusion = read_volume(files["perfusion"])
    require_finite(perfusion, "perfusion map")
    require_on_ct_grid(perfusion, geometry, f"the perfusion map in {results}")
    allowed = {"lungs": (RIGHT_LUNG, LEFT_LUNG), "regions": LOBE_IDS + THIRD_IDS, "functional": (1, 2)}
    arrays: Dict[str, Optional[np.ndarray]] = {}
    for key, values in allowed.items():
        path = files[key]
        if path is None:
            arrays[key] = None
            continue
        volume = read_volume(path)
        require_on_ct_grid(volume, geometry, f"{path.name} in {results}")
        arrays[key] = _label_array(volume, path.name, values)
    if not np.any(arrays["lungs"]):
        raise UserError(f"{files['lungs']} is empty: no lung to export")
    return perfusion, arrays["lungs"], arrays["regions"], arrays["functional"]


# --- the command --------------------------------------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    from ImagingBasics.dicom_inputs import export_geometry
    from ImagingBasics.files import write_json
    from ImagingBasics.outputs import output_folder

    files = result_files(args.results)
    geometry = export_geometry(args.results, args.ct_dicom, args.ct_series, args.out, EXPORT_OUTPUTS)
    perfusion, lungs, regions, functional = read_results(files, geometry, args.results)
    structures = export_structures(lungs, regions, functional)
    with output_folder(args.out, [args.results, args.ct_dicom], EXPORT_OUTPUTS, "export.json") as staging:
        written = write_objects(structures, perfusion, args.ct_dicom, geometry, staging)
        write_json(_summary(written, structures, perfusion, geometry, args), staging / "export.json")
    _print_written(written, structures, geometry, args.out)
    return 0


def _series_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(str(path), stop_before_pixels=True).SeriesInstanceUID)


def write_objects(structures: Dict[str, Tuple[np.ndarray, Rgb]], perfusion, ct_dicom: Path, geometry,
                  folder: Path) -> Dict[str, Dict[str, Any]]:
    """Write the RT Structure Set and the perfusion series into ``folder``; their records by output name."""
    from ImagingBasics.dicom_rt import write_rtstruct, write_secondary_series

    ct_series = geometry.series.series_uid
    masks = {name: mask for name, (mask, _) in structures.items()}
    colours = {name: rgb_255(colour) for name, (_, colour) in structures.items()}
    rtstruct = write_rtstruct(masks, colours, ct_dicom, folder / STRUCTURES_FILE, series_uid=ct_series,
                              label=STRUCTURE_SET_LABEL, description=STRUCTURES_DESCRIPTION)
    slices = write_secondary_series(perfusion, ct_dicom, folder / PERFUSION_SERIES, modality="PT", units="PROPCNTS",
                                     description=PERFUSION_DESCRIPTION, series_uid=ct_series,
                                     series_number=PERFUSION_SERIES_NUMBER)
    return {STRUCTURES_FILE: {"object": "RTSTRUCT", "files": 1, "series_uid": _series_uid(rtstruct)},
            PERFUSION_SERIES + "/": {"object": "PT image series (Units PROPCNTS)", "files": len(slices),
                                     "series_uid": _series_uid(slices[0])}}


def _summary(written, structures, perfusion, geometry, args: argparse.Namespace) -> Dict[str, Any]:
    from ImagingBasics.dicom_series import read_header

    ct = read_header(geometry.slices[0].path)
    voxel_ml = perfusion.voxel_volume_ml
    rows: List[Dict[str, Any]] = [
        {"name": name, "colour_rgb": list(rgb_255(colour)), "voxels": int(np.count_nonzero(mask)),
         "volume_ml": float(np.count_nonzero(mask)) * voxel_ml} for name, (mask, colour) in structures.items()]
    return {"results": str(args.results), "ct_dicom": str(args.ct_dicom),
            "ct": {"series_uid": geometry.series.series_uid, "study_uid": str(ct.get("StudyInstanceUID", "")),
                   "frame_of_reference_uid": geometry.series.frame_of_reference_uid, "slices": len(geometry.slices)},
            "written": written, "structures": rows,
            "note": "research software, not for clinical use; structures are voxel masks of the CT grid as contours"}


def _print_written(written, structures, geometry, out: Path) -> None:
    names = ", ".join(structures)
    for name, item in written.items():
        files = f"{item['files']} file{'s' if item['files'] > 1 else ''}"
        what = f": {names}" if item["object"] == "RTSTRUCT" else ""
        print(f"{out / name}: {item['object']} ({files}), series {item['series_uid']}{what}")
    print(f"on CT series {geometry.series.series_uid}, frame of reference {geometry.series.frame_of_reference_uid}; "
          f"export.json in {out}")

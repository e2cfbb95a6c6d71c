"""Report: the CT-to-perfusion pipeline with the bundled model on every real CT in ``../shared/data``.

For each CT: lung volumes (right, left, ratio), the quality warnings, the perfusion share of each lung, the time,
or the one-line error for CTs the pipeline must refuse (an Interfile CT stored as HU + 1000; an abdominal CT
without lungs). Writes ``real_data_report.md`` (a table) and ``real_data_contact_sheet.png`` (per case: CT with the
lung outline, and the perfusion map over the CT, axial and coronal, radiological convention) to ``--out``.

The real CTs are public test files (licences in ``../shared/data/PROVENANCE.md``); they are not part of the project
and are not copied. The bundled model was trained on synthetic phantoms: the maps show what it does on real
anatomy, not that it is right there (no perfusion SPECT comes with these CTs).

    .venv/bin/python bench/real_data_report.py [--data ../shared/data] [--out bench/results] [--baseline]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from CTPerfusionMappingLib.pipeline import RunOptions, run_pipeline
from CTPerfusionMappingLib.run_cli import load_model
from ImagingBasics.display import centre_slices, label_orientation, radiological_view
from ImagingBasics.errors import UserError
from ImagingBasics.files import save_figure
from ImagingBasics.imageio import read_interfile
from ImagingBasics.validation import read_ct
from ImagingBasics.volume import Volume, orientation_code

HERE = Path(__file__).resolve().parent
GATE = "real/lu177_dotatate_patient15/patient15_LuDOTATATE_"


def _gate_ct(data: Path) -> Volume:
    """The GATE patient's CT as a user gets it with ``ctpm convert --add -1000 --orientation LAI``: in HU, in
    anatomical orientation (GATE's Interfile convention, see ImagingBasics.imageio.read_interfile)."""
    raw = read_interfile(data / f"{GATE}attn.h33", "LAI")
    return raw.with_array(raw.array.astype(np.float32) - 1000.0)


#: (case name, what it is, reader)
CASES: List[tuple] = [
    ("cip ct-64", "CIP inspiratory chest CT, 4.2 x 4.2 x 4.0 mm", lambda d: read_ct(d / "real/cip_chest_ct/ct-64.nrrd")),
    ("cip TestInput", "CIP chest CT, 5.3 x 5.3 x 7.0 mm", lambda d: read_ct(d / "real/cip_chest_ct/TestInput.nrrd")),
    ("LIDC-IDRI-0001", "DICOM series, 0.7 mm, 2.5 mm slices, feet first, contrast",
     lambda d: read_ct(d / "real/lidc_idri_0001_dicom")),
    ("Lung-PET-CT-Dx kernel L", "0.84 mm, 5 mm slices, sharp lung kernel",
     lambda d: read_ct(d / "real/lung_pet_ct_dx_a0001/Lung_Dx-A0001_CT_5mm_kernelL.nrrd")),
    ("Lung-PET-CT-Dx kernel B", "the same CT, soft kernel",
     lambda d: read_ct(d / "real/lung_pet_ct_dx_a0001/Lung_Dx-A0001_CT_5mm_kernelB.nrrd")),
    ("TotalSegmentator pulmonary", "contrast chest CT crop, 1.5 mm, lungs cut at the sides",
     lambda d: read_ct(d / "real/totalsegmentator_chest_ct/pulmonary_report_ct_cropped_chestCTA_1p5mm.nii.gz")),
    ("TotalSegmentator aorta", "contrast chest CT crop, 1.5 mm, lungs cut at the sides",
     lambda d: read_ct(d / "real/totalsegmentator_chest_ct/aorta_report_ct_cropped_chestCTA_1p5mm.nii.gz")),
    ("TotalSegmentator abdomen", "abdominal CT, 3 mm (no lungs: must be refused)",
     lambda d: read_ct(d / "real/totalsegmentator_chest_ct/example_ct_sm_3mm.nii.gz")),
    ("GATE Lu-177 patient", "low-dose CT of a Lu-177 patient, 3.9 x 3.9 x 4.4 mm, couch", _gate_ct),
    ("GATE Lu-177 patient, raw file", "the same CT as stored (HU + 1000): must be refused",
     lambda d: read_ct(d / f"{GATE}attn.h33")),
]


@dataclass
class CaseResult:
    name: str
    what: str
    ct: Optional[Volume] = None
    result: Any = None
    error: Optional[str] = None
    seconds: float = 0.0
    facts: Dict[str, Any] = field(default_factory=dict)


def run_case(name: str, what: str, reader: Callable[[Path], Volume], data: Path, model, model_info) -> CaseResult:
    """Read and run one case; a refused case keeps its one-line error."""
    case = CaseResult(name, what)
    t0 = time.perf_counter()
    try:
        case.ct = reader(data)
        case.result = run_pipeline(case.ct, model=model, model_info=model_info, options=RunOptions())
    except UserError as error:
        case.error = str(error)
    case.seconds = time.perf_counter() - t0
    if case.result is not None:
        case.facts = case_facts(case.ct, case.result)
    return case


def case_facts(ct: Volume, result) -> Dict[str, Any]:
    """The numbers of the report table for one finished case."""
    volumes = result.metrics["lung_volume_ml"]
    shares = {row["name"]: row["perfusion_share_percent"] for row in result.regions}
    lungs = result.labels.lungs.array
    perfusion = result.perfusion.array
    total = float(perfusion[lungs > 0].sum()) or 1.0
    return {
        "grid": "x".join(str(n) for n in ct.size) + " at " + " x ".join(f"{s:.2g}" for s in ct.spacing) + " mm",
        "orientation": orientation_code(ct.direction),
        "right_ml": volumes["right"], "left_ml": volumes["left"],
        "ratio": volumes["right"] / volumes["left"] if volumes["left"] > 0 else float("nan"),
        "right_share_percent": 100.0 * float(perfusion[lungs == 1].sum()) / total,
        "regions": shares,
        "warnings": [w["code"] for w in result.metrics["warnings"]],
        "warning_messages": [w["message"] for w in result.metrics["warnings"]],
    }


def markdown(cases: List[CaseResult], machine: str, predictor: str) -> str:
    lines = [
        "# The pipeline on every real CT",
        "",
        f"`bench/real_data_report.py`, {date.today().isoformat()}, {machine}; predictor: {predictor}. "
        "The bundled model was trained on synthetic phantoms: these maps show its behaviour on real anatomy, "
        "not its accuracy (no perfusion SPECT comes with these CTs). Contact sheet: `real_data_contact_sheet.png`.",
        "",
        "| case | grid (voxels, mm) | orientation | right mL | left mL | R/L | right lung perfusion % | warnings | s |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for c in cases:
        if c.error is not None:
            lines.append(f"| {c.name} | refused | | | | | | error: {c.error} | {c.seconds:.1f} |")
            continue
        f = c.facts
        lines.append(f"| {c.name} | {f['grid']} | {f['orientation']} | {f['right_ml']:.0f} | {f['left_ml']:.0f} | "
                     f"{f['ratio']:.2f} | {f['right_share_percent']:.1f} | {_codes(f['warnings'])} | "
                     f"{c.seconds:.1f} |")
    lines += ["", "## Cases and warnings", ""]
    for c in cases:
        lines.append(f"- **{c.name}**: {c.what}.")
        for message in c.facts.get("warning_messages", []):
            lines.append(f"  - warning: {message}")
    return "\n".join(lines) + "\n"


def _codes(codes: List[str]) -> str:
    """Warning codes, each once, with its count where it repeats."""
    counted = {code: codes.count(code) for code in dict.fromkeys(codes)}
    return ", ".join(code if n == 1 else f"{code} x{n}" for code, n in counted.items()) or "none"


def contact_sheet(cases: List[CaseResult], path: Path) -> None:
    """One row per finished case: CT with the lung outline (axial), and the perfusion map over the CT (axial,
    coronal), radiological convention with orientation labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [c for c in cases if c.result is not None]
    fig, axes = plt.subplots(len(done), 3, figsize=(11, 3.4 * len(done)), squeeze=False, layout="constrained")
    headers = ("CT, lungs (cyan right, magenta left)", "perfusion over the CT", "perfusion over the CT")
    image = None
    for row, case in enumerate(done):
        ct = radiological_view(case.ct)
        lungs = radiological_view(case.result.labels.lungs)
        perfusion = radiological_view(case.result.perfusion)
        slices = centre_slices(lungs.array > 0)
        for col, (view, overlay) in enumerate((("axial", False), ("axial", True), ("coronal", True))):
            ax = axes[row, col]
            extent = ct.extent(view)
            ax.imshow(ct.cut(view, slices[view]), cmap="gray", vmin=-1000, vmax=300, extent=extent)
            lung_cut = lungs.cut(view, slices[view])
            if overlay:
                image = ax.imshow(np.ma.masked_where(lung_cut == 0, perfusion.cut(view, slices[view])), cmap="jet",
                                  vmin=0, vmax=1, alpha=0.75, extent=extent)
            ax.contour(lung_cut, levels=[0.5, 1.5], colors=["c", "m"], linewidths=0.7, extent=extent, origin="upper")
            if row == 0:
                ax.set_title(f"{headers[col]}, {view}", fontsize=9)
            ax.axis("off")
            if col == 0:
                ax.text(-0.04, 0.5, case.name, rotation=90, ha="right", va="center", transform=ax.transAxes,
                        fontsize=9)
            label_orientation(ax, view, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, shrink=0.3).set_label("relative perfusion (0..1)")
    fig.suptitle("Bundled model on real CTs (trained on synthetic phantoms; research use only)")
    save_figure(fig, path, dpi=60)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--baseline", action="store_true", help="the HU-only baseline instead of the bundled model")
    parser.add_argument("--cases", nargs="+", help="only these case names (default: all)")
    args = parser.parse_args(argv)
    if not (args.data / "real").is_dir():
        parser.error(f"no real CTs at {args.data}/real")
    model, info = load_model(None, args.baseline, "cpu")
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, CPU)"
    cases = []
    for name, what, reader in CASES:
        if args.cases and name not in args.cases:
            continue
        case = run_case(name, what, reader, args.data, model, info)
        print(f"{name}: {case.error or ', '.join(case.facts['warnings']) or 'no warnings'} ({case.seconds:.1f} s)")
        cases.append(case)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_data_report.md").write_text(markdown(cases, machine, info["predictor"]), encoding="utf-8")
    contact_sheet(cases, args.out / "real_data_contact_sheet.png")
    print(f"wrote {args.out / 'real_data_report.md'} and {args.out / 'real_data_contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

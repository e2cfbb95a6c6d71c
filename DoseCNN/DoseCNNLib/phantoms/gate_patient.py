"""A dosimetry case on a real patient's CT and organ labels: the public GATE Lu-177 DOTATATE example (patient 15).

Input (the upstream example ``patient15``, MIT licence; Auer and Pells): two Interfile volumes on one
grid (108 x 70 x 90 voxels, 3.91 x 3.91 x 4.42 mm):

* ``patient15_LuDOTATATE_attn.h33``: the CT stored as HU + 1000 (``ID2mat.txt`` maps 0-100 to air ... 1120-2150 to
  bone); the value 3000 is the carbon-fibre couch, set here to 300 HU (our choice; it lies outside the body);
* ``patient15_LuDOTATATE_src.h33``: the same CT values outside the organs and organ codes inside: 15000 liver
  (~1 L), 16000 spleen (named by the upstream README), 17000 and 18000 two kidney-sized regions either side of the
  spine (named right/left kidney here by their position), 19000-21000 small regions (treated as lesions).

Labels follow :data:`.torso.LABELS`; the lungs (below -400 HU inside the body), bone (above 200 HU) and
body are found on the CT. Kinetics, SPECTs and the Monte Carlo truth come from :func:`.case.simulate_case`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from ImagingBasics.errors import UserError
from ImagingBasics.volume import Volume

from . import torso as T

ORGAN_CODES = {15000: "liver", 16000: "spleen"}
KIDNEY_CODES = (17000, 18000)
LESION_CODES = (19000, 20000, 21000)
COUCH_CODE = 3000
COUCH_HU = 300
#: how the example's matrices are stored: x toward the patient's left, y anterior, slices toward the feet (a rotation of
#: 180 degrees about the left-right axis from DICOM's LPS order). Interfile does not say; the anatomy does: read as
#: LPS, the liver lay below the kidneys and the couch and spine in front of the body (Testing/test_dose_phantom.py
#: checks liver above the kidneys, liver on the right, spine and couch posterior).
ORIENTATION = "LAI"


def read_gate_patient(attn_path, src_path) -> Tuple[Volume, np.ndarray]:
    """(CT in HU as int16, source-code array) of the GATE example's two Interfile files, in anatomical orientation
    (:data:`ORIENTATION`)."""
    from ImagingBasics.imageio import read_interfile

    attn, src = read_interfile(Path(attn_path), ORIENTATION), read_interfile(Path(src_path), ORIENTATION)
    if not attn.same_geometry(src):
        raise UserError("the attenuation and source images of the GATE phantom are not on one grid")
    raw = attn.array.astype(np.int32)
    hu = np.where(raw == COUCH_CODE, COUCH_HU, raw - 1000)
    return attn.with_array(np.clip(hu, -1000, 3000).astype(np.int16)), src.array.astype(np.int32)


def labels_and_compartments(ct: Volume, codes: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray], Dict[int, str]]:
    """Label map, uptake compartments and label names of the GATE patient (see the module docstring)."""
    from scipy import ndimage

    hu = ct.array.astype(np.float32)
    body = np.zeros(hu.shape, bool)
    for k in range(hu.shape[0]):  # per slice: the largest object above -500 HU with its holes (lungs) filled
        lab, n = ndimage.label((hu[k] > -500) & (codes[k] != COUCH_CODE))
        if n:
            sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
            body[k] = ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    labels = np.where(body, 1, 0).astype(np.uint8)
    lungs = body & (hu < -400)
    bone = body & (hu > 200)
    labels[lungs], labels[bone] = 6, 7
    organs = {"liver": codes == 15000, "spleen": codes == 16000}
    labels[organs["liver"]], labels[organs["spleen"]] = 2, 5
    kidneys = sorted(KIDNEY_CODES, key=lambda c: float(np.nonzero(codes == c)[2].mean()) if (codes == c).any() else 0)
    compartments: Dict[str, np.ndarray] = {"liver": organs["liver"], "spleen": organs["spleen"]}
    # LPS: x grows to the patient's left, so the kidney with the smaller x index is the right one
    for code, side, label in zip(kidneys, ("right", "left"), (3, 4)):
        mask = codes == code
        labels[mask] = label
        compartments[f"{side} kidney"] = mask
    names = dict(T.LABELS)
    for i, code in enumerate(LESION_CODES):
        mask = codes == code
        if mask.any():
            value = T.LESION_LABEL_START + i
            labels[mask] = value
            compartments[f"lesion {value}"] = mask
            names[value] = f"lesion {value} (source code {code})"
    compartments["lungs"] = labels == 6
    compartments["marrow"] = (labels == 7) & (hu < 400)  # trabecular bone: marrow uptake
    compartments["remainder"] = (labels == 1) & (hu > -300) & (hu < 200)
    return labels, compartments, names


def gate_patient_case(attn_path, src_path, seed: int = 0, **simulate_kwargs):
    """The patient-15 case: real CT and organs, synthetic kinetics, SPECTs and Monte Carlo truth."""
    from .case import simulate_case

    ct, codes = read_gate_patient(attn_path, src_path)
    labels, compartments, names = labels_and_compartments(ct, codes)
    extra = {"generator": "DoseCNNLib.phantoms.gate_patient", "source": {"attn": str(attn_path), "src": str(src_path)},
             "note_anatomy": "real patient CT and organ codes (GATE Lu-177 DOTATATE example, patient 15, MIT)"}
    return simulate_case(ct, ct.with_array(labels), compartments, names, np.random.default_rng(seed), seed,
                         extra_meta=extra, **simulate_kwargs)

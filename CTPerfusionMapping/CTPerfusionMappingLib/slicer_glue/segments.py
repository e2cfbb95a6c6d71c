"""The lung segments of the CTPerfusionMapping results in Slicer: names and colours of the functional-volume and
lung-region segments, the colour table of the perfusion map, and lung/lobe labels composed from a segmentation's
segments (pure Python: the module file passes the segment arrays in)."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from ImagingBasics.errors import UserError

from ..labels import REGION_NAMES, segment_region

#: The perfusion map's colour table: Slicer's colour file ColdToHotRainbow.txt (the Colors logic loads it at startup
#: and names the node vtkMRMLColorTableNodeFile + the file name).
PERFUSION_COLOUR_NODE_ID = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
#: Segments of the functional-volume output (value of functional.nrrd: name, RGB 0..1).
FUNCTIONAL_SEGMENTS = {1: ("low function", (0.23, 0.45, 0.85)), 2: ("high function", (0.90, 0.25, 0.15))}
#: Colours of the lung regions (CIP ids: lobes 4-8, thirds 9-14), in the spirit of Slicer's lung colours.
REGION_COLOURS = {4: (0.85, 0.65, 0.55), 5: (0.55, 0.75, 0.45), 6: (0.45, 0.60, 0.85), 7: (0.90, 0.80, 0.40),
                  8: (0.70, 0.50, 0.80), 9: (0.95, 0.80, 0.45), 10: (0.80, 0.60, 0.85), 11: (0.55, 0.70, 0.95),
                  12: (0.90, 0.65, 0.55), 13: (0.60, 0.80, 0.50), 14: (0.50, 0.65, 0.90)}


def region_segments(region_ids: Sequence[int]) -> Dict[int, tuple]:
    """(name, RGB) of each lung region present, named as in the results table."""
    return {int(r): (REGION_NAMES[int(r)], REGION_COLOURS.get(int(r), (0.6, 0.6, 0.6))) for r in sorted(region_ids)}


def labels_from_segments(segments: Sequence[tuple]) -> tuple:
    """Compose lung labels from a segmentation's binary segments ``(segment_id, name, [k, j, i] bool array)``.

    Returns ``("lobes", array of CIP lobe ids 4-8)`` when lobe segments are present (TotalSegmentator, lungmask,
    named RUL...LLL), else ``("lungs", array 1 right / 2 left)`` from whole-lung segments. Raises UserError when no
    segment is recognised (the message lists them).
    """
    regions = [(segment_region(sid, name), mask) for sid, name, mask in segments]
    lobes = [(r, m) for r, m in regions if r is not None and r >= 4]
    lungs = [(r, m) for r, m in regions if r in (2, 3)]
    if not lobes and not lungs:
        names = ", ".join(f"{name or sid}" for sid, name, _ in segments) or "none"
        raise UserError(f"no lung or lobe segments recognised in the segmentation (segments: {names}); name them "
                        "e.g. lung_upper_lobe_right ... lung_lower_lobe_left, or right lung / left lung")
    chosen = lobes if lobes else [(1 if r == 2 else 2, m) for r, m in lungs]
    out = np.zeros(np.asarray(chosen[0][1]).shape, np.uint8)
    for value, mask in chosen:
        out[np.asarray(mask) > 0] = value
    return ("lobes" if lobes else "lungs"), out

"""DICOM and DICOM RT in and out, in one import (the functions live in the ``dicom_*`` modules beside this one).

In:

* :func:`~.dicom_series.find_series` -- the series of a folder (headers only);
* :func:`~.dicom_series.read_ct_series` -- the CT series chosen by UID, else the largest, as a Volume in HU;
* :func:`~.dicom_rtdose.read_rtdose` -- an RTDOSE as a Volume in Gy (:func:`~.dicom_rtdose.rtdose_info`: its header);
* :func:`~.dicom_rtstruct.read_rtstruct` -- an RTSTRUCT as masks on the CT grid
  (:func:`~.dicom_rtstruct.list_structures`: its structures).

Out, each on the planning CT's frame of reference and in its study, never into the CT's folder:

* :func:`~.dicom_rtstruct.write_rtstruct` -- masks as an RT Structure Set;
* :func:`~.dicom_rtdose.write_rtdose` -- a dose in Gy as an RT Dose;
* :func:`~.dicom_secondary.write_secondary_series` -- a derived volume (perfusion map) as a PET (or CT) image series.

What each object holds and references, and why: docs/DICOM_RT.md.
"""

from __future__ import annotations

from .dicom_rtdose import RtDoseInfo, read_rtdose, rtdose_info, write_rtdose
from .dicom_rtstruct import StructureInfo, list_structures, read_rtstruct, write_rtstruct
from .dicom_secondary import write_secondary_series
from .dicom_series import CtGeometry, DicomSeries, ct_geometry, find_series, read_ct_series, select_ct_series

__all__ = [
    "CtGeometry", "DicomSeries", "RtDoseInfo", "StructureInfo", "ct_geometry", "find_series", "list_structures",
    "read_ct_series", "read_rtdose", "read_rtstruct", "rtdose_info", "select_ct_series", "write_rtdose",
    "write_rtstruct", "write_secondary_series",
]

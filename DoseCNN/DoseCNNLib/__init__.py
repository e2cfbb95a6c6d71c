"""DoseCNNLib: the pure-Python core of the DoseCNN Slicer module (Lu-177 voxel dosimetry).

Sub-packages in layers: :mod:`.physics` (transport, Monte Carlo, kernels, VDK) below :mod:`.phantoms` and
:mod:`.cnn`, below :mod:`.dosimetry` (the pipelines); :mod:`.slicer_glue` is the Slicer module's pure-Python half.
Nothing here imports Slicer, Qt or CTK; torch is imported at module level only by :mod:`.cnn.network`. It builds on
the foundation package :mod:`ImagingBasics` and never imports CTPerfusionMappingLib (docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"

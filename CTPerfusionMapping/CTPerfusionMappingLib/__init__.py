"""CTPerfusionMappingLib: the pure-Python core of the CTPerfusionMapping Slicer module (CT to lung perfusion).

Nothing here imports Slicer, Qt or CTK; torch is imported at module level only by :mod:`.network`, elsewhere inside
the functions that need it. It builds on the foundation package :mod:`ImagingBasics` (the image value type, image
I/O, the error type, ...) and never imports DoseCNNLib (docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"

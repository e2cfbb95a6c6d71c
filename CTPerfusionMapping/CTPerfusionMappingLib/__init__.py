"""CTPerfusionMappingLib: the pure-Python core of the CTPerfusionMapping Slicer module.

Nothing here imports Slicer, Qt or CTK; torch is imported only inside the functions that need it.
The image value type (:mod:`.volume`), image I/O (:mod:`.imageio`) and the error type (:mod:`.errors`)
are shared with DoseCNNLib.
"""

__version__ = "0.1.0"

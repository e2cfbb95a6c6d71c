"""DoseCNNLib: the pure-Python core of the DoseCNN Slicer module (Lu-177 voxel dosimetry).

Nothing here imports Slicer, Qt or CTK; torch is imported only inside the functions that need it.
The image value type, image I/O and the error type are shared with CTPerfusionMappingLib
(both modules ship in one extension and one pip distribution).
"""

__version__ = "0.1.0"

"""SlicerModuleBase: the Slicer glue both modules share (CTPerfusionMapping and DoseCNN).

* :mod:`.widget`: the Widget base (parameter node plumbing, Apply/Cancel, progress polling of the child process, the
  device line);
* :mod:`.logic`: the Logic base (device probe, missing packages, start/finish/blocking run of a pipeline job,
  Slicer CLI modules with a status check);
* :mod:`.jobs`: the job bookkeeping (child process and temporary folder; pure Python);
* :mod:`.batch`: the runner of both batch scripts (``Slicer --python-script <Module>Batch.py``);
* :mod:`.nodes`: node helpers (segments as masks, a volume shown as a map, table columns as plot curves);
* :mod:`.packtable`: a table widget bound to a list of parameter packs (DoseCNN's time points).

It may import Slicer, Qt, VTK and the foundation ``ImagingBasics``, but neither core (CTPerfusionMappingLib,
DoseCNNLib); neither the cores nor the foundation import it (the import-linter contracts in pyproject.toml). Like
``ImagingBasics``, it is installed beside the module files by whichever module CMakeLists.txt comes first; in a source
checkout it lies one folder above the module folders, and the module files and batch scripts put that folder on
``sys.path``.
"""

"""ImagingBasics: the foundation both Slicer modules build on (imaging, files, processes, devices).

One concept per module, nothing specific to lungs or dosimetry:

* :mod:`.errors`        -- :class:`~ImagingBasics.errors.UserError`, the one exception a user can act on;
* :mod:`.volume`        -- the :class:`~ImagingBasics.volume.Volume` value type (array + LPS geometry);
* :mod:`.imageio`       -- reading and writing volumes (NRRD, NIfTI, MHA, Interfile, DICOM series);
* :mod:`.files`         -- atomic output files, CSV, JSON and figures;
* :mod:`.manifest`      -- CSV manifests of cases;
* :mod:`.process`       -- the child-process protocol (progress lines, Cancel) used by the Slicer modules;
* :mod:`.parallel`      -- per-case work in worker processes;
* :mod:`.cli_common`    -- the command-line contract (``error: ...``, exit 2) and the shared subcommands;
* :mod:`.slicer_nodes`  -- Slicer node <-> Volume conversion (the nodes are passed in; no ``import slicer``).

Nothing here imports Slicer, Qt or CTK, or either core (CTPerfusionMappingLib, DoseCNNLib); torch is imported
only inside the functions that need it. Checked by the import-linter contracts in ``pyproject.toml``.
"""

__version__ = "0.1.0"

"""Radiotherapy plan evaluation against lung function: function-weighted dose-volume histograms and plan metrics.

Planners compare plans by how much dose the *functioning* lung receives. Given a perfusion map (a SPECT on the CT, or
the synthetic map of ``ctpm run``), the lungs (and lobes) on its grid and one or more planned doses in Gy, this
package computes, per plan and per structure (right lung, left lung, both lungs, each lobe; optionally minus the
GTV/PTV), the anatomical and the function-weighted DVH and the usual metrics (MLD, fMLD, V5/V20/V30, fV5/fV20/fV30,
mean dose in the high- and the low-function volume). docs/PLANNING.md gives the definitions with their formulas.

One concept per module, each formula one named function:

* :mod:`.options`           -- the settings of ``ctpm plan``, defined once for the command line and a Slicer Logic;
* :mod:`.cutpoints`         -- the published reference cut-points drawn on the figures (fMLD, fV20, fV5);
* :mod:`.dose_grid`         -- the dose checked (finite, non-negative, in Gy, covering the lungs) and put on the
  perfusion grid with the project's one resampler;
* :mod:`.perfusion_weights` -- the voxel weights: normalised perfusion, optionally only in the high-function volume;
* :mod:`.structures`        -- lungs, lobes and exclusions (GTV/PTV) as the evaluated structures;
* :mod:`.dvh`               -- cumulative anatomical and function-weighted DVHs on a dose-bin grid;
* :mod:`.dose_metrics`      -- MLD, fMLD, V_D, fV_D and the mean dose in the functional volumes;
* :mod:`.evaluation`        -- the composition: inputs -> per plan, per structure DVHs, metrics and warnings;
* :mod:`.report`            -- the output files: dvh.csv, metrics.csv, metrics.json, comparison.csv and figures.

Pure numpy/scipy on :class:`~ImagingBasics.volume.Volume` values (matplotlib only inside the figure functions);
nothing here imports Slicer or torch.
"""

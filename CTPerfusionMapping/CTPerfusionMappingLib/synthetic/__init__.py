"""A physics-motivated synthetic chest SPECT/CT generator (the project's embedded test and training cohort).

One concept per module:

* :mod:`.params`     -- every random choice of a case, drawn from one seed and written to ``meta.json``;
* :mod:`.grid`       -- the CT and SPECT grids (``small`` and ``full`` sizes);
* :mod:`.anatomy`    -- analytic body, bones, mediastinum, airways, lungs and lobes;
* :mod:`.vessels`    -- the branching pulmonary artery tree, its territories and its rasterisation;
* :mod:`.pathology`  -- emphysema, tumour, pulmonary emboli, ground glass / consolidation;
* :mod:`.perfusion`  -- the truth perfusion model;
* :mod:`.ct`         -- Hounsfield units from tissues, texture and noise;
* :mod:`.spect`      -- the Tc-99m MAA SPECT: blur, sampling, misalignment, Poisson noise;
* :mod:`.cohort`     -- one case end to end, and a cohort of cases written to disk;
* :mod:`.preview`    -- the PNG montage.
"""

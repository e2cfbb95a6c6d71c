"""Training the CT-to-perfusion networks on a cohort.

* :mod:`.dataset`   -- a cohort manifest -> cached, pre-processed hemi-lung samples;
* :mod:`.trainer`   -- the training loop (loss, optimiser, early stopping, checkpoints, learning curve);
* :mod:`.crossval`  -- k-fold cross-validation by patient, transfer-learning comparison and the ablation study.
"""

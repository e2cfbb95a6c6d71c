"""Dosimetry pipelines: the dose-rate map of one SPECT/CT time point (VDK or VDK + CNN), time integration of
several time points to absorbed dose, and the dose metrics (per-label statistics, MDE, NRMSE, DVH)."""

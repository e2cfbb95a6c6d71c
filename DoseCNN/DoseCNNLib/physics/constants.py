"""Physical constants, each defined once (CODATA 2018 values; units in the names).

Used by the decay data, the stopping powers, the photon and electron transport and the sphere model.
"""

#: electron rest energy m_e c^2 (MeV)
ELECTRON_MASS_MEV = 0.51099895
#: classical electron radius r_e (cm)
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13
#: Avogadro constant (1/mol)
AVOGADRO_PER_MOL = 6.02214076e23
#: fine-structure constant alpha (dimensionless)
FINE_STRUCTURE = 1 / 137.035999
#: 4 pi N_A r_e^2 m_e c^2 (MeV cm^2/mol), the prefactor of the Bethe stopping-power formula (PDG's K)
BETHE_K_MEV_CM2_MOL = 0.307075
#: one MeV in joules
MEV_TO_J = 1.602176634e-13

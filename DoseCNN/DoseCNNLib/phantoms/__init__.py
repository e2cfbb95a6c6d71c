"""Synthetic Lu-177 patients with known truth: torso anatomy, organ kinetics, SPECT simulation (image-domain and
projection + OSEM), the GATE patient reader, and one phantom case end to end (Monte Carlo truth included)."""

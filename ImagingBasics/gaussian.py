"""The Gaussian resolution model: a full width at half maximum (FWHM) and a Gaussian's standard deviation (sigma).

FWHM = 2 sqrt(2 ln 2) sigma = 2.3548 sigma; used wherever an image is blurred to a stated resolution (the SPECT
simulations of both cores, the registration's fixed image).
"""

import math

#: FWHM / sigma of a Gaussian: 2 sqrt(2 ln 2)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: sigma / FWHM of a Gaussian: 1 / (2 sqrt(2 ln 2))
SIGMA_PER_FWHM = 1.0 / FWHM_PER_SIGMA

"""Known Lu-177 DOTATATE-like kinetics of the phantom's uptake compartments (the truth that time integration must
recover).

Each compartment c has a uniform activity concentration C_c(t) (MBq/mL) that is a sum of exponentials,

    C_c(t) = sum_k a_k exp(-ln2 t / T_k)          (t in hours after administration, T_k effective half-lives)

so its time-integrated activity concentration is sum_k a_k T_k / ln2 (MBq h / mL). Every compartment except the
remainder is mono-exponential (instant uptake, one effective half-life): the default model of ``dosecnn integrate``
recovers it exactly. The remainder (blood and soft tissue) is bi-exponential, a fast renal clearance and a slow
component, as DOTATATE's blood curve is.

Values (our choice, within published ranges for 7.4 GBq Lu-177 DOTATATE: kidney ~1-2 % IA and spleen ~1 % IA at
24 h with effective half-lives of ~50 and ~65 h; tumour-to-liver concentration ratios 5-15; Sandstrom et al. 2013,
Garske-Roman et al. 2018), as concentrations at 24 h with +-25 % drawn per case:

================== ============== ===========
compartment         MBq/mL at 24 h  T_eff (h)
================== ============== ===========
liver               0.18            70
kidney cortex       0.50            50
kidney medulla      0.18            50
kidney (whole)      0.38            50
spleen              0.35            65
bowel               0.06            30
marrow              0.02            60
lungs               0.004           20
lesion (viable)     0.8-2.5         75-110
remainder           0.012 (slow)    40 (+ a fast part 0.12 MBq/mL at t = 0, 1.5 h)
================== ============== ===========
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

LN2 = float(np.log(2.0))

#: (concentration at 24 h in MBq/mL, effective half-life in h) of the mono-exponential compartments.
TYPICAL: Dict[str, tuple] = {"liver": (0.18, 70.0), "kidney cortex": (0.50, 50.0), "kidney medulla": (0.18, 50.0),
                             "kidney": (0.38, 50.0),
                             "spleen": (0.35, 65.0), "bowel": (0.06, 30.0), "marrow": (0.02, 60.0),
                             "lungs": (0.004, 20.0)}
REMAINDER_SLOW = (0.012, 40.0)
REMAINDER_FAST = (0.12, 1.5)  # amplitude at t = 0 (MBq/mL), half-life h


@dataclass
class CompartmentKinetics:
    """C(t) = sum_k amplitudes_mbq_ml[k] * exp(-ln2 t / half_lives_h[k])."""

    amplitudes_mbq_ml: List[float]
    half_lives_h: List[float]

    def concentration(self, t_h) -> np.ndarray:
        """Activity concentration (MBq/mL) at ``t_h`` hours."""
        t = np.asarray(t_h, dtype=np.float64)
        return sum(a * np.exp(-LN2 * t / h) for a, h in zip(self.amplitudes_mbq_ml, self.half_lives_h))

    def integral(self) -> float:
        """Time-integrated concentration from 0 to infinity (MBq h / mL): sum_k a_k T_k / ln2."""
        return float(sum(a * h / LN2 for a, h in zip(self.amplitudes_mbq_ml, self.half_lives_h)))


def mono(concentration_24h: float, half_life_h: float) -> CompartmentKinetics:
    """A mono-exponential compartment given its concentration at 24 h."""
    return CompartmentKinetics([concentration_24h * float(np.exp(LN2 * 24.0 / half_life_h))], [half_life_h])


def kind_of(compartment: str) -> str:
    """``right kidney cortex`` -> ``kidney cortex``; ``lesion 12`` -> ``lesion``."""
    if compartment.startswith("lesion"):
        return "lesion"
    for side in ("right ", "left "):
        if compartment.startswith(side):
            return compartment[len(side):]
    return compartment


def draw_kinetics(rng: np.random.Generator, compartments: Sequence[str], spread: float = 0.25
                  ) -> Dict[str, CompartmentKinetics]:
    """Kinetics per compartment name (the table in the module docstring, concentrations +-``spread`` per case)."""
    out: Dict[str, CompartmentKinetics] = {}
    for name in compartments:
        kind = kind_of(name)
        jitter = float(rng.uniform(1 - spread, 1 + spread))
        if kind == "lesion":
            out[name] = mono(float(rng.uniform(0.8, 2.5)), float(rng.uniform(75, 110)))
        elif kind == "remainder":
            slow = REMAINDER_SLOW[0] * jitter * np.exp(LN2 * 24.0 / REMAINDER_SLOW[1])
            out[name] = CompartmentKinetics([REMAINDER_FAST[0] * jitter, float(slow)],
                                            [REMAINDER_FAST[1], REMAINDER_SLOW[1]])
        elif kind in TYPICAL:
            c24, half_life = TYPICAL[kind]
            out[name] = mono(c24 * jitter, half_life * float(rng.uniform(0.9, 1.1)))
        else:
            raise ValueError(f"no kinetics for compartment {name!r}")
    return out

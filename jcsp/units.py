"""Units and conventions, in one place.

jcsp works in eV, Å and amu, with ASE's time unit. Pressure and stress are GPa at the
user boundary (function arguments, CLI flags, ``info`` dictionaries, printed tables) and
eV/Å³ inside every numerical routine. Conversions happen only through this module.

Cells are stored with **rows as lattice vectors**, as in ASE: ``positions = frac @ cell``.
Stress follows ASE: ``stress = (1/V) dE/dstrain`` (positive = tensile), Voigt order
``xx, yy, zz, yz, xz, xy``.
"""

from __future__ import annotations

import numpy as np

#: 1 eV/Å³ in GPa (CODATA 2018: e = 1.602176634e-19 C).
EV_PER_A3_IN_GPA = 160.21766208
#: LAMMPS metal units: 1 eV/Å³ = 1.6021765e6 bar (what its ``press`` thermo reports).
LAMMPS_EV_PER_A3_IN_BAR = 1.6021765e6
#: Coulomb constant e²/(4 pi eps0) in eV·Å, as LAMMPS ``qqr2e`` in metal units.
COULOMB_EV_A = 14.399645

#: Voigt order of ASE: (row, column) of each of the six components.
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def gpa_to_ev_per_a3(p):
    """Pressure in GPa -> eV/Å³."""
    return p / EV_PER_A3_IN_GPA


def ev_per_a3_to_gpa(p):
    """Pressure or stress in eV/Å³ -> GPa."""
    return p * EV_PER_A3_IN_GPA


def full_to_voigt(stress):
    """[..., 3, 3] symmetric tensor -> [..., 6] in ASE's Voigt order."""
    s = np.asarray(stress)
    return np.stack([s[..., i, j] for i, j in VOIGT_PAIRS], axis=-1)


def voigt_to_full(voigt):
    """[..., 6] in ASE's Voigt order -> [..., 3, 3] symmetric tensor."""
    v = np.asarray(voigt)
    xx, yy, zz, yz, xz, xy = (v[..., k] for k in range(6))
    return np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)],
        axis=-2,
    )

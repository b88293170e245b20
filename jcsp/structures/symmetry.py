"""Symmetry analysis of a structure with spglib (host side).

Example:
  >>> from ase.build import bulk
  >>> from jcsp.structures.symmetry import spacegroup
  >>> spacegroup(bulk("Si", "diamond", a=5.431))
  'Fd-3m (227)'
"""

from __future__ import annotations

import warnings

import numpy as np
import spglib
from ase import Atoms


def spacegroup(atoms: Atoms, symprec: float = 1e-3) -> str:
    """International symbol and number from spglib, e.g. ``"Fd-3m (227)"``.

    Args:
      atoms: a periodic structure.
      symprec: distance tolerance in Å.

    Returns:
      The label, or ``"-"`` for clusters (no lattice) and when spglib finds none.
    """
    if not atoms.pbc.all() or len(atoms) == 0:
        return "-"
    cell = (np.asarray(atoms.cell[:], float), atoms.get_scaled_positions(wrap=True),
            np.asarray(atoms.numbers))
    with warnings.catch_warnings():  # spglib >= 2.5 warns about its error handling mode
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            label = spglib.get_spacegroup(cell, symprec=symprec)
        except Exception:  # spglib.error.SpglibError when no symmetry is found
            label = None
    return label if label else "-"

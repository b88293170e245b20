"""Candidate repair: every structure a search makes is fit to relax, or set aside
(host side).

Moves, mutations, crossovers, swarm updates and MD escapes can put two atoms nearly on
top of each other (an atom displaced onto another, two parents' halves overlapping at
the cut). Such a candidate would make the relaxer fail on its first step (forces in
the thousands of eV/Å) or be refused outright. Before relaxation the search session
passes every candidate through :func:`repair`:

- atoms (and, in crystals, periodic images) closer than ``threshold`` x the sum of their
  covalent radii (:func:`jcsp.search.generate.radius`) are pushed apart along the line
  joining them, each by half the missing distance, to ``target`` x that sum; all close
  pairs are resolved together, and the pass is repeated (a push can create a new
  contact) up to ``max_iterations`` times. The cell is kept. This is the pairwise
  push-off that AIRSS (Pickard & Needs, J. Phys.: Condens. Matter 23, 053201 (2011),
  its ``MINSEP`` push) and USPEX (Lyakhov et al., Comput. Phys. Commun. 184, 1172
  (2013)) apply to their candidates;
- a crystal whose cell is flat (a lattice-plane spacing below the shortest allowed
  distance, so an atom would touch its own image, or a volume below
  :data:`jcsp.relax.kernel.MIN_VOLUME_PER_ATOM` per atom), or a structure with
  non-finite coordinates, cannot be repaired;
- a candidate still too close after ``max_iterations`` passes is not repaired either.

A candidate that cannot be repaired is discarded: it costs no relaxation, and the
session counts it (``SearchResult.n_discarded``). Coincident atoms are separated along
a fixed direction chosen from their indices, so repair draws no random numbers and a
search's random streams do not depend on it.

Example:
  >>> fixed, why = repair(candidate)
  >>> if fixed is None: print("discarded:", why)
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from ..relax.kernel import MIN_VOLUME_PER_ATOM
from .generate import radius

#: Pairs closer than this fraction of the sum of covalent radii are pushed apart.
THRESHOLD = 0.6
#: ... to this fraction of the sum (a little beyond the threshold, so one pass suffices
#: for an isolated contact).
TARGET = 0.65
#: Passes of pairwise push-off before a candidate is given up.
MAX_ITERATIONS = 50


def _radii(atoms: Atoms) -> np.ndarray:
    symbols = atoms.get_chemical_symbols()
    table = {s: radius(s) if s != "X" else radius("LJ") for s in set(symbols)}
    return np.array([table[s] for s in symbols])


def _images(cell: np.ndarray, reach: float) -> np.ndarray:
    """[M, 3] integer shifts that, added to a fractional difference rounded into
    [-1/2, 1/2], reach every image within ``reach`` Å (a vector shorter than ``reach``
    has fractional components below ``reach`` / the lattice-plane spacing)."""
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    n = np.maximum(np.ceil(reach / spacing).astype(int), 1)
    grids = np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij")
    return np.stack(grids, -1).reshape(-1, 3)


def _direction(i: int, j: int) -> np.ndarray:
    """A fixed unit vector for the pair (i, j) (golden-angle spiral): separates
    coincident atoms without random numbers."""
    k = (i * 7919 + j * 104729) % 997
    z = 1.0 - 2.0 * (k + 0.5) / 997
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = math.sqrt(max(0.0, 1.0 - z * z))
    return np.array([r * math.cos(phi), r * math.sin(phi), z])


def _close_pairs(pos, cell, shifts, limit):
    """Pairs (i < j, vector from i to j or its image, distance) closer than
    ``limit[i, j]``."""
    n = len(pos)
    if cell is None:
        vec = pos[None, :, :] - pos[:, None, :]                   # [N, N, 3]
        d = np.linalg.norm(vec, axis=-1)
        iu = np.triu_indices(n, 1)
        close = d[iu] < limit[iu]
        i, j = iu[0][close], iu[1][close]
        return i, j, vec[i, j], d[i, j]
    inv = np.linalg.inv(cell)
    frac = pos @ inv
    diff = frac[None, :, :] - frac[:, None, :]
    diff -= np.round(diff)
    vec = (diff[:, :, None, :] + shifts[None, None]) @ cell       # [N, N, M, 3]
    d = np.linalg.norm(vec, axis=-1)
    i, j, m = np.nonzero((d < limit[:, :, None]) & (np.triu(np.ones((n, n), bool), 1)[:, :, None]))
    return i, j, vec[i, j, m], d[i, j, m]


def repair(atoms: Atoms, *, threshold: float = THRESHOLD, target: float = TARGET,
           max_iterations: int = MAX_ITERATIONS) -> tuple[Atoms | None, str]:
    """Push too-close atoms of ``atoms`` apart, keeping the cell (host side).

    Args:
      atoms: a crystal (pbc all true) or a cluster (pbc all false); other periodicities
        are returned unchanged (the relaxer reports them).
      threshold: pairs closer than ``threshold`` x (r_i + r_j) are repaired (covalent
        radii; label species such as ``LJ`` use :data:`jcsp.search.generate.LABEL_RADIUS`).
      target: they are pushed to ``target`` x (r_i + r_j) (>= threshold).
      max_iterations: passes before giving up.

    Returns:
      ``(structure, note)``: the structure (``atoms`` itself when nothing was too close,
      else a repaired copy with ``info["repaired"]`` = the number of passes), or None
      when it cannot be repaired, with ``note`` saying why ("" when untouched).
    """
    if not (0 < threshold <= target):
        raise ValueError(f"need 0 < threshold <= target, got {threshold}, {target}")
    pbc = tuple(bool(p) for p in atoms.pbc)
    if len(atoms) == 0 or (any(pbc) and not all(pbc)):
        return atoms, ""
    pos = np.array(atoms.positions, float)
    if not np.isfinite(pos).all():
        return None, "non-finite coordinates"
    radii = _radii(atoms)
    radii_sum = radii[:, None] + radii[None, :]
    limit = threshold * radii_sum
    goal = target * radii_sum
    cell = shifts = None
    if all(pbc):
        cell = np.array(atoms.cell[:], float)
        if not np.isfinite(cell).all():
            return None, "non-finite cell"
        volume = abs(np.linalg.det(cell))
        if not volume >= MIN_VOLUME_PER_ATOM * len(atoms):
            return None, (f"flat cell (volume {volume:.3g} Å³ below {MIN_VOLUME_PER_ATOM} Å³ "
                          "per atom)")
        spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
        shortest = float(goal.min())
        if spacing.min() < shortest:
            return None, (f"flat cell (lattice-plane spacing {spacing.min():.3g} Å below the "
                          f"shortest allowed distance {shortest:.3g} Å)")
        shifts = _images(cell, float(goal.max()))
    if len(atoms) == 1:
        return atoms, ""
    for iteration in range(max_iterations + 1):
        i, j, vec, d = _close_pairs(pos, cell, shifts, limit)
        if iteration == 0 and not i.size:
            return atoms, ""
        if not i.size:
            out = atoms.copy()
            out.positions = pos
            out.info["repaired"] = iteration
            return out, f"pushed apart in {iteration} passes"
        if iteration == max_iterations:
            break
        unit = np.empty_like(vec)
        tiny = d < 1e-8
        unit[~tiny] = vec[~tiny] / d[~tiny, None]
        for k in np.flatnonzero(tiny):
            unit[k] = _direction(int(i[k]), int(j[k]))
        push = 0.5 * (goal[i, j] - d)[:, None] * unit
        delta = np.zeros_like(pos)
        np.add.at(delta, i, -push)
        np.add.at(delta, j, push)
        pos = pos + delta
    return None, (f"atoms still closer than {target:g} x the sum of covalent radii after "
                  f"{max_iterations} passes of push-off")


__all__ = ["repair", "THRESHOLD", "TARGET", "MAX_ITERATIONS"]

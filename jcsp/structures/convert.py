"""Conversion between ``ase.Atoms`` and :class:`Population` (host side), with validation.

Periodic crystals keep their cell. Clusters (``pbc`` all false) get a cubic box large
enough to hold them with ``CLUSTER_VACUUM`` Å to spare; the box only anchors fractional
coordinates and never enters the energy. Mixed periodicity in one population is refused.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from .population import Population, stack, unstack

#: Vacuum (Å) around a cluster inside its bookkeeping box.
CLUSTER_VACUUM = 10.0
#: Smallest allowed interatomic distance (Å) before a structure counts as overlapping.
MIN_DISTANCE = 0.1


class StructureError(ValueError):
    """A structure that cannot be computed: zero-volume cell, overlapping atoms, ..."""


def _pbc_of(atoms: Atoms) -> tuple[bool, bool, bool]:
    pbc = tuple(bool(p) for p in atoms.pbc)
    if any(pbc) and not all(pbc):
        raise StructureError(f"partial periodicity {pbc} is not supported; use all True "
                             "(crystal) or all False (cluster)")
    return pbc


def cluster_box(positions: np.ndarray) -> np.ndarray:
    """A cubic box holding ``positions`` with vacuum, [3, 3]."""
    extent = np.ptp(positions, axis=0).max() if len(positions) else 0.0
    return np.eye(3) * (extent + 2 * CLUSTER_VACUUM)


def check_structure(atoms: Atoms, *, min_distance: float = MIN_DISTANCE, label: str = "") -> None:
    """Raise :class:`StructureError` with a clear message for unusable structures."""
    where = f"{label}: " if label else ""
    if len(atoms) == 0:
        raise StructureError(f"{where}structure has no atoms; drop it from the input")
    pos = atoms.get_positions()
    if not np.isfinite(pos).all():
        raise StructureError(f"{where}positions contain NaN or infinity; fix or drop the "
                             "structure (often the output of a failed calculation)")
    pbc = _pbc_of(atoms)
    if all(pbc):
        cell = np.asarray(atoms.cell[:], float)
        if not np.isfinite(cell).all():
            raise StructureError(f"{where}cell contains NaN or infinity; fix or drop the "
                                 "structure")
        volume = abs(np.linalg.det(cell))
        if volume < 1e-6 * max(1.0, np.linalg.norm(cell) ** 3):
            raise StructureError(f"{where}cell has zero volume ({volume:.3g} Å³); "
                                 "give three independent lattice vectors")
    if len(atoms) > 1 or all(pbc):
        d = _min_distance(atoms)
        if d < min_distance:
            raise StructureError(
                f"{where}atoms overlap (closest distance {d:.3g} Å < {min_distance} Å); "
                "remove duplicate atoms or check the units of the coordinates")


def _min_distance(atoms: Atoms) -> float:
    """Smallest distance between two atoms or an atom and an image (host side)."""
    from ase.neighborlist import neighbor_list
    i, d = neighbor_list("id", atoms, MIN_DISTANCE * 4, self_interaction=False)
    return float(d.min()) if len(d) else np.inf


def from_atoms(structures: Sequence[Atoms], *, n_max: int | None = None, dtype=None,
               validate: bool = True) -> Population:
    """Pack ``ase.Atoms`` into a padded population.

    Args:
      structures: crystals (pbc all true) or clusters (pbc all false), not mixed.
      n_max: pad to this many atoms (default: the largest).
      dtype: float dtype of positions and cells.
      validate: run :func:`check_structure` on each (clear errors for bad input).
    """
    if len(structures) == 0:
        raise StructureError("no structures given")
    pbcs = {_pbc_of(a) for a in structures}
    if len(pbcs) != 1:
        raise StructureError("a population cannot mix crystals and clusters")
    pbc = pbcs.pop()
    frac, cells, numbers = [], [], []
    for k, atoms in enumerate(structures):
        if validate:
            check_structure(atoms, label=f"structure {k}")
        if all(pbc):
            cell = np.asarray(atoms.cell[:], float)
            frac.append(np.linalg.solve(cell.T, atoms.get_positions().T).T)
        else:
            pos = atoms.get_positions()
            cell = cluster_box(pos)
            shifted = pos - pos.mean(axis=0) + np.diag(cell) / 2
            frac.append(shifted @ np.linalg.inv(cell))
        cells.append(cell)
        numbers.append(atoms.numbers)
    return stack(frac, cells, numbers, pbc, n_max=n_max, dtype=dtype)


def to_atoms(pop: Population) -> list[Atoms]:
    """Unpack a population into ``ase.Atoms`` (empty slots are skipped)."""
    out = []
    for s in unstack(pop):
        if len(s["species"]) == 0:
            continue
        positions = s["frac"] @ s["cell"]
        if all(pop.pbc):
            out.append(Atoms(numbers=s["species"], positions=positions, cell=s["cell"],
                             pbc=True))
        else:
            out.append(Atoms(numbers=s["species"], positions=positions - positions.mean(0),
                             pbc=False))
    return out

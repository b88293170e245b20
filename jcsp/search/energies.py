"""Energies of search populations through the derivative engine (host side).

The search evaluates its potential outside the relaxer in two places: per-atom energies
of relaxed structures (the surface moves of basin hopping and the GA rebuild the
worst-bound atoms) and the forces of annealing and minima-hopping MD. Both run jitted,
batched programs over a fixed neighbor-list spec and must grow the spec when a list
overflows (:mod:`jcsp.neighbors`: overflow is data, reallocation is the host's
decision); :func:`fitted` is that loop, written once.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import numpy as np
from ase import Atoms

from .. import neighbors as nl
from ..derivatives import evaluate_population
from ..potentials.base import Potential
from ..structures.convert import from_atoms
from ..structures.population import pad_structures

T = TypeVar("T")


def fitted(run: Callable[[nl.NeighborSpec], tuple[T, object, object]], spec: nl.NeighborSpec,
           cells, pbc, *, margin: float = 1.2) -> tuple[T, nl.NeighborSpec]:
    """Run ``run(spec)`` until its neighbor lists fit (host side).

    Args:
      run: takes a spec, returns ``(result, overflow, count)`` with ``overflow`` the
        per-structure flags and ``count`` the largest neighbor counts seen.
      spec: the spec to try first.
      cells: [..., 3, 3] the cells the lists are built for (Å), to size the images.
      pbc: the periodicity.
      margin: capacity grows to ``margin`` x the largest count seen.

    Returns:
      (the result of the first run that did not overflow, the spec it used).
    """
    while True:
        result, overflow, count = run(spec)
        if not bool(np.any(np.asarray(overflow))):
            return result, spec
        spec = nl.grow(spec, int(np.max(np.asarray(count))), np.asarray(cells), pbc,
                       margin=margin)


class AtomEnergies:
    """Per-atom energies of same-size structures, a batch at a time (host side).

    Each call packs the structures into one population padded to ``batch_size`` slots
    and evaluates them with :func:`jcsp.derivatives.evaluate_population`; the neighbor
    spec is kept from call to call and grown only on overflow, so a search's calls share
    one compiled program.

    Args:
      potential: the potential.
      batch_size: structures per evaluation.
    """

    def __init__(self, potential: Potential, batch_size: int):
        self.potential = potential
        self.batch_size = int(batch_size)
        self.spec: nl.NeighborSpec | None = None

    def __call__(self, structures: Sequence[Atoms]) -> list[np.ndarray]:
        """[n_atoms] per-atom energies (eV) of each structure, in order."""
        out: list[np.ndarray] = []
        for start in range(0, len(structures), self.batch_size):
            chunk = structures[start:start + self.batch_size]
            pop = pad_structures(from_atoms(chunk, validate=False), self.batch_size)
            sized = self.potential.for_cells(np.asarray(pop.cell)) if all(pop.pbc) \
                else self.potential
            if self.spec is None:
                self.spec = nl.spec_for(sized.cutoff, pop.frac, pop.cell, pop.mask, pop.pbc)

            def run(spec):
                res = evaluate_population(sized, sized.params, pop, spec)
                return res, res.overflow, res.count

            res, self.spec = fitted(run, self.spec, pop.cell, pop.pbc)
            energies = np.asarray(res.energies)
            out += [energies[b, :len(atoms)] for b, atoms in enumerate(chunk)]
        return out


__all__ = ["AtomEnergies", "fitted"]

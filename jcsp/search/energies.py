"""Energies of search populations through the derivative engine (host side).

The search evaluates its potential outside the relaxer in two places: per-atom energies
of relaxed structures (the surface moves of basin hopping and the GA rebuild the
worst-bound atoms) and the forces of annealing and minima-hopping MD. Both run jitted,
batched programs whose neighbor-list shapes a :class:`jcsp.capacity.Capacity` owns: it
sizes them, and :meth:`~jcsp.capacity.Capacity.run` repeats an evaluation that
overflowed after growing them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from ..capacity import Capacity
from ..derivatives import evaluate_population
from ..potentials.base import Potential
from ..structures.convert import from_atoms
from ..structures.population import pad_structures


class AtomEnergies:
    """Per-atom energies of same-size structures, a batch at a time (host side).

    Each call packs the structures into one population padded to ``batch_size`` slots
    and evaluates them with :func:`jcsp.derivatives.evaluate_population`; the capacity
    is kept from call to call and only grows, so a search's calls share one compiled
    program.

    Args:
      potential: the potential.
      batch_size: structures per evaluation.
    """

    def __init__(self, potential: Potential, batch_size: int):
        self.potential = potential
        self.batch_size = int(batch_size)
        self.capacity: Capacity | None = None

    def __call__(self, structures: Sequence[Atoms]) -> list[np.ndarray]:
        """[n_atoms] per-atom energies (eV) of each structure, in order."""
        out: list[np.ndarray] = []
        for start in range(0, len(structures), self.batch_size):
            chunk = structures[start:start + self.batch_size]
            pop = pad_structures(from_atoms(chunk, validate=False), self.batch_size)
            if self.capacity is None:
                self.capacity = Capacity(self.potential, pop.pbc)
            self.capacity.fit(pop)

            def energies(spec, sized):
                return evaluate_population(sized, sized.params, pop, spec)

            energies = np.asarray(self.capacity.run(energies, pop.cell).energies)
            out += [energies[b, :len(atoms)] for b, atoms in enumerate(chunk)]
        return out


__all__ = ["AtomEnergies"]

"""``JCSPCalculator``: any jcsp potential as an ASE calculator (host side).

Results are ASE's: ``energy`` and ``free_energy`` (eV), ``energies`` (eV per atom),
``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt order, periodic structures only). For a
committee (a potential that declares ``committee_size``, e.g. :class:`jcsp.ml.Committee`)
these are the committee means, and ``energy_std``, ``energies_std``, ``forces_std``,
``stress_std`` hold the spread (standard deviation over the members). The compiled
function is reused while the neighbor-list spec still fits, so an ASE
optimisation compiles once or twice, not every step.
"""

from __future__ import annotations

import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .capacity import Capacity
from .derivatives import evaluate
from .potentials.base import Potential
from .structures.convert import from_atoms
from .units import full_to_voigt


class JCSPCalculator(Calculator):
    """ASE calculator around a jcsp potential.

    Args:
      potential: any :class:`jcsp.potentials.Potential`.
      params: parameters to use instead of ``potential.params``.

    Example:
      >>> atoms.calc = JCSPCalculator(jcsp.potentials.LennardJones(cutoff=None))
      >>> atoms.get_potential_energy()
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              "energy_std", "energies_std", "forces_std", "stress_std"]

    def __init__(self, potential: Potential, params=None, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        self.model_params = potential.params if params is None else params
        self._capacity: Capacity | None = None
        self._compiled = {}

    def _function(self, spec, pot, pbc):
        key = (spec, pbc, id(pot))
        if key not in self._compiled:

            def one(params, frac, cell, species, mask):
                return evaluate(pot, params, frac, cell, species, mask, spec, pbc)

            if pot.committee_size is not None:
                # Every member's results, stacked on a leading axis (mean and spread below).
                def members(params, frac, cell, species, mask):
                    return jax.vmap(lambda p: evaluate(pot.member, p, frac, cell, species,
                                                       mask, spec, pbc))(
                        pot.member_params(params))

                self._compiled[key] = jax.jit(members)
            else:
                self._compiled[key] = jax.jit(one)
        return self._compiled[key]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.potential.check_species(self.atoms.numbers)
        fresh = (self._capacity is None or "numbers" in system_changes
                 or "pbc" in system_changes)
        # Full validation (overlaps, zero volume) when the system is new; later steps of
        # an optimisation only move atoms, and non-finite results are caught below.
        pop = from_atoms([self.atoms], validate=fresh)
        args = (pop.frac[0], pop.cell[0], pop.species[0], pop.mask[0])
        if fresh:
            self._capacity = Capacity(self.potential, pop.pbc)
            self._capacity.fit(pop)

        def results(spec, sized):
            return self._function(spec, sized, pop.pbc)(self.model_params, *args)

        res = self._capacity.run(results, pop.cell)
        spread = None
        if self.potential.committee_size is not None:
            spread = jax.tree.map(lambda x: np.std(np.asarray(x), axis=0), res)
            res = jax.tree.map(lambda x: np.mean(np.asarray(x), axis=0), res)
        energy = float(res.energy)
        if not np.isfinite(energy):
            raise FloatingPointError("the potential returned a non-finite energy for this "
                                     "structure (atoms too close or outside the model's range?)")
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = np.asarray(res.energies)[: len(self.atoms)]
        self.results["forces"] = np.asarray(res.forces)[: len(self.atoms)]
        if all(pop.pbc):
            self.results["stress"] = full_to_voigt(np.asarray(res.stress))
        if spread is not None:
            self.results["energy_std"] = float(spread.energy)
            self.results["energies_std"] = np.asarray(spread.energies)[: len(self.atoms)]
            self.results["forces_std"] = np.asarray(spread.forces)[: len(self.atoms)]
            if all(pop.pbc):
                self.results["stress_std"] = full_to_voigt(np.asarray(spread.stress))

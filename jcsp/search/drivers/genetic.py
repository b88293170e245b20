"""Genetic algorithm (USPEX style; Oganov & Glass, J. Chem. Phys. 124, 244704 (2006);
Deaven & Ho, PRL 75, 288 (1995) for clusters).

The population holds the ``population`` best distinct relaxed structures found so far
(elitism; distinct = different archive entries, so duplicates are rejected). Each
generation makes a batch of children:

- heredity (cut-and-splice): two parents by tournament selection, joined across a
  random plane (:func:`.operators.cut_and_splice`), composition restored;
- lattice mutation: a random symmetric strain of one parent's cell (crystals);
- permutation: swaps of unlike atoms (several species);
- rattle (soft mutation): a fraction of one parent's atoms displaced;
- surface mutation: the highest-energy atoms of one parent moved to surface sites
  (clusters) or to the emptiest points of the cell (crystals),
  :func:`.operators.relocate` (Deaven & Ho 1995 mutate by moving atoms; Cheng et al.,
  J. Phys. Chem. A 113, 9309 (2009) move the least-coordinated ones);
- symmetrisation: one parent completed toward a nearby point group or space group
  (:func:`jcsp.search.moves.symmetrize`; Oakley, Johnston & Wales, PCCP 15, 3965 (2013));
- soft-mode mutation: one parent displaced along a soft mode of the potential's Hessian
  (:func:`jcsp.search.moves.softmode`; Lyakhov, Oganov & Valle, CPC 181, 1623 (2010));
- fresh random structures, which keep diversity.

For crystals, a fraction ``wyckoff`` of the heredities and permutations work on whole
Wyckoff orbits (:func:`.operators.orbit_heredity`, :func:`.operators.permute_orbits`;
Lyakhov, Oganov, Stokes & Zhu, CPC 184, 1172 (2013)), so children keep a parent's
symmetry. A search's ``moves`` setting (:meth:`jcsp.search.run.Session.special_move`)
may replace any mutation by one of the named moves, applied to the same parent.

Fitness is the enthalpy per atom. Children that put atoms closer than half a bond length
(:data:`.operators.MIN_SEPARATION`) are redrawn (at most ``tries`` times, then replaced by a random structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...settings import Settings, setting
from .. import moves
from . import operators as ops
from .basin import surface_count


@dataclass(frozen=True)
class Config(Settings):
    """GA settings (the operator weights are normalised; inapplicable ones dropped).

    Attributes:
      tournament: tournament size of parent selection.
      heredity, strain, permutation, rattle, surface, random, symmetrize, softmode:
        operator weights.
      strain_scale: width of the lattice-mutation strain.
      rattle_amplitude: rattle width, in bond lengths.
      rattle_fraction: fraction of atoms rattled.
      surface_fraction: the surface mutation moves 1 to
        ``max(1, round(surface_fraction x N))`` atoms.
      tries: attempts per child before a random structure replaces it.
      wyckoff: fraction of crystal heredities and permutations made on whole Wyckoff
        orbits (spglib at ``symprec`` bond lengths).
      symprec: spglib tolerance of the Wyckoff operators, in bond lengths.
    """

    tournament: int = setting(3, kind=int, ge=1)
    heredity: float = setting(0.45, ge=0)
    strain: float = setting(0.15, ge=0)
    permutation: float = setting(0.1, ge=0)
    rattle: float = setting(0.1, ge=0)
    surface: float = setting(0.1, ge=0)
    random: float = setting(0.1, ge=0)
    strain_scale: float = setting(0.1, ge=0)
    rattle_amplitude: float = setting(0.35, ge=0)
    rattle_fraction: float = setting(0.3, ge=0, le=1)
    surface_fraction: float = setting(0.1, ge=0, le=1)
    tries: int = setting(10, kind=int, ge=1)
    symmetrize: float = setting(0.0, ge=0)
    softmode: float = setting(0.0, ge=0)
    wyckoff: float = setting(0.0, ge=0, le=1)
    symprec: float = setting(0.05, gt=0)

    def __post_init__(self):
        super().__post_init__()
        if sum(self.weights()) <= 0:
            raise ValueError("Config.heredity, strain, permutation, rattle, surface, random, "
                             "symmetrize and softmode are operator weights: at least one "
                             "must be positive")

    def weights(self) -> tuple[float, ...]:
        """The operator weights in the order heredity, strain, permutation, rattle,
        surface, random, symmetrize, softmode."""
        return (self.heredity, self.strain, self.permutation, self.rattle, self.surface,
                self.random, self.symmetrize, self.softmode)


def select(pool, size: int, fitness):
    """The ``size`` best structures of ``pool`` with distinct archive entries."""
    best: dict = {}
    for atoms in pool:
        f = fitness(atoms)
        if not np.isfinite(f):
            continue
        key = atoms.info.get("entry", id(atoms))
        if key not in best or f < fitness(best[key]):
            best[key] = atoms
    return sorted(best.values(), key=fitness)[:size]


def _tournament(rng, population, size: int) -> int:
    """Index of the winner of a tournament (the population is sorted by fitness)."""
    picks = rng.integers(len(population), size=min(size, len(population)))
    return int(picks.min())


def _weights(session, config: Config, population) -> np.ndarray:
    """Normalised operator weights, those that cannot apply set to zero."""
    weights = np.array(config.weights())
    weights[0] *= len(population) > 1
    weights[1] *= not session.cluster
    weights[2] *= len(session.counts) > 1
    weights[4] *= len(session.symbols) > 1
    if weights.sum() == 0:
        weights[5] = 1.0
    return weights / weights.sum()


def make_child(session, config: Config, population, rng, energies):
    """One child and its parents' uids (host side).

    Args:
      population: the parents, sorted by fitness.
      energies: [N] per-atom energies (eV) of each parent, for surface mutations (None
        when that operator has no weight).
    """
    weights = _weights(session, config, population)
    symprec = config.symprec * session.length
    for _ in range(config.tries):
        op = rng.choice(len(weights), p=weights)
        i = _tournament(rng, population, config.tournament)
        a = population[i]
        parents = [a.info["uid"]]
        wyckoff = (not session.cluster and config.wyckoff > 0 and op in (0, 2)
                   and rng.uniform() < config.wyckoff)
        special = None if op in (0, 5) else session.special_move(a, rng)
        if special is not None:
            child = special
        elif op == 0:
            j = i
            while j == i:
                j = _tournament(rng, population, config.tournament)
            child = None
            if wyckoff:
                child = ops.orbit_heredity(a, population[j], rng, symprec, session.length)
            if child is None:
                child = ops.cut_and_splice(a, population[j], rng)
            parents.append(population[j].info["uid"])
        elif op == 1:
            child = ops.strain(a, rng, config.strain_scale)
        elif op == 2:
            child = ops.permute_orbits(a, rng, symprec) if wyckoff else None
            if child is None:
                child = ops.permute(a, rng, swaps=max(1, len(a) // 8))
        elif op == 3:
            child = ops.rattle(a, rng, config.rattle_amplitude * session.length,
                               config.rattle_fraction)
        elif op == 4:
            count = surface_count(rng, len(a), config.surface_fraction)
            child = ops.relocate(a, rng, energies[i], count, session.length)
        elif op == 6:
            child = moves.symmetrize(session, a, rng)
        elif op == 7:
            child = moves.softmode(session, a, rng)
        else:
            return session.random_structures(1, rng)[0], []
        if ops.sane(child, session.length):
            return child, parents
    return session.random_structures(1, rng)[0], []


def run(session, config: Config) -> None:
    """Evolve until the budget is spent (host side)."""
    size = session.population
    population = select(session.first_generation(), size, session.fitness)
    for generation, rng in session.generations():
        n = min(size, session.remaining)
        if not population:
            children, parents = session.random_structures(n, rng), [[]] * n
        else:
            surface = _weights(session, config, population)[4] > 0
            energies = session.atom_energies(population) if surface else None
            made = [make_child(session, config, population, rng, energies)
                    for _ in range(n)]
            children, parents = [c for c, _ in made], [p for _, p in made]
        relaxed = session.evaluate(generation, children, parents)
        population = select(population + relaxed, size, session.fitness)

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
- fresh random structures, which keep diversity.

Fitness is the enthalpy per atom. Children that put atoms closer than half a bond
length are redrawn (at most ``tries`` times, then replaced by a random structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import operators as ops


@dataclass(frozen=True)
class Config:
    """GA settings (the operator weights are normalised; inapplicable ones dropped).

    Attributes:
      tournament: tournament size of parent selection.
      heredity, strain, permutation, rattle, surface, random: operator weights.
      strain_scale: width of the lattice-mutation strain.
      rattle_amplitude: rattle width, in bond lengths.
      rattle_fraction: fraction of atoms rattled.
      surface_fraction: the surface mutation moves 1 to
        ``max(1, round(surface_fraction x N))`` atoms.
      tries: attempts per child before a random structure replaces it.
    """

    tournament: int = 3
    heredity: float = 0.45
    strain: float = 0.15
    permutation: float = 0.1
    rattle: float = 0.1
    surface: float = 0.1
    random: float = 0.1
    strain_scale: float = 0.1
    rattle_amplitude: float = 0.35
    rattle_fraction: float = 0.3
    surface_fraction: float = 0.1
    tries: int = 10

    def __post_init__(self):
        weights = (self.heredity, self.strain, self.permutation, self.rattle, self.surface,
                   self.random)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("operator weights must be >= 0 and not all zero")
        if not 0 <= self.surface_fraction <= 1:
            raise ValueError("surface_fraction must be in [0, 1]")
        if self.tournament < 1 or self.tries < 1:
            raise ValueError("tournament and tries must be >= 1")


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


def _tournament(rng, population, size: int):
    picks = rng.integers(len(population), size=min(size, len(population)))
    return population[int(picks.min())]  # the population is sorted by fitness


def make_child(session, config: Config, population, rng):
    """One child and its parents' uids (host side)."""
    weights = np.array([config.heredity if len(population) > 1 else 0.0,
                        0.0 if session.cluster else config.strain,
                        config.permutation if len(session.counts) > 1 else 0.0,
                        config.rattle, config.surface if len(session.symbols) > 1 else 0.0,
                        config.random])
    if weights.sum() == 0:
        weights[-1] = 1.0
    weights = weights / weights.sum()
    for _ in range(config.tries):
        op = rng.choice(len(weights), p=weights)
        a = _tournament(rng, population, config.tournament)
        parents = [a.info["uid"]]
        if op == 0:
            b = a
            while b is a:
                b = _tournament(rng, population, config.tournament)
            child = ops.cut_and_splice(a, b, rng)
            parents.append(b.info["uid"])
        elif op == 1:
            child = ops.strain(a, rng, config.strain_scale)
        elif op == 2:
            child = ops.permute(a, rng, swaps=max(1, len(a) // 8))
        elif op == 3:
            child = ops.rattle(a, rng, config.rattle_amplitude * session.length,
                               config.rattle_fraction)
        elif op == 4:
            count = int(rng.integers(1, max(1, round(config.surface_fraction * len(a))) + 1))
            child = ops.relocate(a, rng, session.atom_energies(a), count, session.length)
        else:
            return session.random_structures(1, rng)[0], []
        if ops.sane(child, session.length):
            return child, parents
    return session.random_structures(1, rng)[0], []


def run(session, config: Config) -> None:
    """Evolve until the budget is spent (host side)."""
    size = session.population
    population = select(session.evaluate(0, session.random_structures(size, session.rng(0))),
                        size, session.fitness)
    generation = 1
    while not session.done:
        rng = session.rng(generation)
        n = min(size, session.remaining)
        if not population:
            children, parents = session.random_structures(n, rng), [[]] * n
        else:
            made = [make_child(session, config, population, rng) for _ in range(n)]
            children, parents = [c for c, _ in made], [p for _, p in made]
        relaxed = session.evaluate(generation, children, parents)
        population = select(population + relaxed, size, session.fitness)
        generation += 1

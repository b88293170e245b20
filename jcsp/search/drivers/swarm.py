"""Particle swarm optimisation, CALYPSO style (Wang, Lv, Zhu & Ma, PRB 82, 094116
(2010)).

Each particle is a relaxed structure with a velocity in fractional coordinates
([N, 3], minimum-image differences) and in the lattice ([3, 3]); clusters move in
Cartesian coordinates. After relaxation, every particle keeps its personal best, and
the swarm its global best (lowest enthalpy per atom). Each generation

    v <- w v + c1 r1 (pbest - x) + c2 r2 (gbest - x),    x <- x + v

with ``w`` falling linearly from ``w_start`` to ``w_end`` over ``w_generations``
generations (not over the budget, so extending a run does not change its past) and ``r1``,
``r2`` uniform in [0, 1] per particle; the cell is then rescaled to the mean volume of
the particle and the global best. The worst ``reseed`` fraction of the particles is
replaced by fresh random symmetric structures (with their velocities zeroed), which
keeps the swarm from collapsing. Atoms are matched by index; a moved structure that
puts atoms closer than half a bond length (:data:`.operators.MIN_SEPARATION`) becomes a
random structure too. A search's
``moves`` setting (:meth:`jcsp.search.run.Session.special_move`) may replace a
particle's flight by one of the named moves applied to its current structure (its
velocity is then kept for the next flight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ...settings import Settings, setting
from . import operators as ops


@dataclass(frozen=True)
class Config(Settings):
    """PSO settings.

    Attributes:
      w_start, w_end: inertia weight at the start and after ``w_generations``.
      w_generations: generations over which the inertia weight falls.
      c1, c2: cognitive (personal best) and social (global best) factors.
      reseed: fraction of the worst particles re-seeded randomly each generation.
      max_velocity: per-atom speed limit (fractional units for crystals, bond lengths
        for clusters).
    """

    w_start: float = setting(0.9)
    w_end: float = setting(0.4)
    w_generations: int = setting(30, kind=int, ge=1)
    c1: float = setting(2.0, ge=0)
    c2: float = setting(2.0, ge=0)
    reseed: float = setting(0.4, ge=0, lt=1)
    max_velocity: float = setting(0.15, gt=0)


def _coords(atoms: Atoms) -> np.ndarray:
    if atoms.pbc.all():
        return atoms.get_scaled_positions()
    return atoms.positions - atoms.positions.mean(0)


def _clip(v: np.ndarray, vmax: float) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v * np.minimum(1.0, vmax / np.maximum(norm, 1e-12))


class _Particle:
    def __init__(self, atoms: Atoms, fitness: float):
        self.x, self.f = atoms, fitness
        self.best, self.best_f = atoms, fitness
        self.v = np.zeros((len(atoms), 3))
        self.v_cell = np.zeros((3, 3))

    def land(self, atoms: Atoms, fitness: float) -> None:
        self.x, self.f = atoms, fitness
        if fitness < self.best_f:
            self.best, self.best_f = atoms, fitness


def _move(p: _Particle, gbest: Atoms, w: float, config: Config, rng, length: float):
    """The particle's next (unrelaxed) structure; updates its velocity."""
    x = _coords(p.x)
    r1, r2 = rng.uniform(size=2)
    d_own, d_all = _coords(p.best) - x, _coords(gbest) - x
    periodic = p.x.pbc.all()
    if periodic:
        d_own -= np.round(d_own)
        d_all -= np.round(d_all)
    vmax = config.max_velocity * (1.0 if periodic else length)
    p.v = _clip(w * p.v + config.c1 * r1 * d_own + config.c2 * r2 * d_all, vmax)
    if not periodic:
        pos = x + p.v
        return ops._fresh(p.x, p.x.numbers, positions=pos - pos.mean(0))
    cell = p.x.cell[:]
    p.v_cell = w * p.v_cell + config.c1 * r1 * (p.best.cell[:] - cell) \
        + config.c2 * r2 * (gbest.cell[:] - cell)
    p.v_cell = np.clip(p.v_cell, -0.2 * length, 0.2 * length)
    new_cell = cell + p.v_cell
    det = np.linalg.det(new_cell)
    if det <= 0:
        new_cell, p.v_cell = cell.copy(), np.zeros((3, 3))
        det = np.linalg.det(cell)
    volume = 0.5 * (abs(np.linalg.det(cell)) + abs(np.linalg.det(gbest.cell[:])))
    new_cell *= (volume / det) ** (1 / 3)
    return ops._fresh(p.x, p.x.numbers, frac=(x + p.v) % 1.0, cell=new_cell)


def run(session, config: Config) -> None:
    """Fly the swarm until the budget is spent (host side)."""
    swarm = [_Particle(a, session.fitness(a)) for a in session.first_generation()]
    for generation, rng in session.generations():
        k = min(len(swarm), session.remaining)
        w = config.w_start + (config.w_end - config.w_start) * min(
            1.0, (generation - 1) / config.w_generations)
        gbest = min(swarm, key=lambda p: p.best_f).best
        order = sorted(range(len(swarm)), key=lambda i: swarm[i].f)
        n_seed = int(round(config.reseed * len(swarm)))
        reseed = set(order[len(swarm) - n_seed:]) if n_seed else set()
        moves, parents = [], []
        for i in range(k):
            p = swarm[i]
            child = None
            if i not in reseed and np.isfinite(p.f):
                child = session.special_move(p.x, rng)
                if child is None:
                    child = _move(p, gbest, w, config, rng, session.length)
                if not ops.sane(child, session.length):
                    child = None
            moves.append(child)
            parents.append([] if child is None else
                           [p.x.info["uid"], p.best.info["uid"], gbest.info["uid"]])
        fresh = iter(session.random_structures(sum(m is None for m in moves), rng))
        candidates = [next(fresh) if m is None else m for m in moves]
        relaxed = session.evaluate(generation, candidates, parents)
        for i, atoms in enumerate(relaxed):
            if moves[i] is None:
                p = swarm[i]
                p.v, p.v_cell = np.zeros_like(p.v), np.zeros((3, 3))
            swarm[i].land(atoms, session.fitness(atoms))

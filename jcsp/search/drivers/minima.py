"""Minima hopping (Goedecker, J. Chem. Phys. 120, 9911 (2004)), with parallel walkers.

Every walker sits in a local minimum. Each generation, every walker escapes by a short
constant-energy MD run (velocity Verlet at fixed cell) started from Maxwell-Boltzmann
velocities at its own temperature ``T``; the end points of all walkers are relaxed in
one batch. Then, per walker, with the archive telling minima apart:

- the same minimum again: the escape failed, ``T *= beta1``;
- a minimum visited before (by any walker): ``T *= beta2``;
- a new minimum: ``T *= beta3`` (< 1);

and a new minimum is accepted when ``H_new < H_current + E_diff``, after which
``E_diff *= alpha1`` (< 1); otherwise ``E_diff *= alpha2`` (> 1). The feedback keeps
the walkers moving into new funnels without being trapped or boiling away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_masses

from ...settings import Settings, setting
from .anneal import langevin, time_step


@dataclass(frozen=True)
class Config(Settings):
    """Minima-hopping settings (Goedecker's defaults for the feedback factors).

    Attributes:
      temperature: starting kT / energy scale (|enthalpy per atom| of the best start).
      e_diff: starting acceptance threshold / energy scale (per structure).
      md_steps: MD steps of each escape.
      beta1, beta2, beta3: temperature factors (same minimum, old minimum, new minimum).
      alpha1, alpha2: threshold factors (accepted, rejected).
    """

    temperature: float = setting(0.08, gt=0)
    e_diff: float = setting(0.1, gt=0)
    md_steps: int = setting(100, kind=int, ge=1)
    beta1: float = setting(1.05, gt=1)
    beta2: float = setting(1.05, gt=1)
    beta3: float = setting(1 / 1.05, gt=0, lt=1)
    alpha1: float = setting(1 / 1.02, gt=0, lt=1)
    alpha2: float = setting(1.02, gt=1)


def run(session, config: Config) -> None:
    """Minima hopping until the budget is spent (host side)."""
    walkers = session.first_generation()
    scale = session.energy_scale(walkers)
    dt = time_step(session, scale)
    n = len(walkers)
    h = np.array([session.fitness(a) * len(a) for a in walkers])
    kt = np.full(n, config.temperature * scale)
    e_diff = np.full(n, config.e_diff * scale)
    visited = {a.info.get("entry") for a in walkers} - {None}
    for generation, rng in session.generations():
        k = min(n, session.remaining)
        alive = [w for w in range(k) if math.isfinite(h[w])]
        dead = [w for w in range(k) if not math.isfinite(h[w])]
        proposals = [None] * k
        if alive:
            start = [walkers[w] for w in alive]
            mass = np.array([atomic_masses[a.numbers] for a in start])[..., None]
            vel = rng.normal(size=mass.shape[:2] + (3,)) * np.sqrt(kt[alive][:, None, None] / mass)
            vel -= vel.mean(1, keepdims=True)
            escaped, _ = langevin(session.potential, start, np.zeros(config.md_steps), dt=dt,
                                  friction=0.0, rng=rng, velocities=vel)
            for w, atoms in zip(alive, escaped):
                proposals[w] = atoms
        fresh = iter(session.random_structures(len(dead), rng))
        for w in dead:
            proposals[w] = next(fresh)
        parents = [[walkers[w].info["uid"]] if w in alive else [] for w in range(k)]
        relaxed = session.evaluate(generation, proposals, parents)
        for w, atoms in enumerate(relaxed):
            new = session.fitness(atoms) * len(atoms)
            entry = atoms.info.get("entry")
            if w in dead or not math.isfinite(new):
                if w in dead:
                    walkers[w], h[w] = atoms, new
                continue
            if entry is not None and entry == walkers[w].info.get("entry"):
                kt[w] *= config.beta1
                continue
            kt[w] *= config.beta2 if entry in visited else config.beta3
            if new < h[w] + e_diff[w]:
                walkers[w], h[w] = atoms, new
                e_diff[w] *= config.alpha1
            else:
                e_diff[w] *= config.alpha2
        visited |= {a.info.get("entry") for a in relaxed} - {None}

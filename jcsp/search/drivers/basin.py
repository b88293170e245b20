"""Basin hopping with many parallel walkers (Wales & Doye, J. Phys. Chem. A 101, 5111
(1997)).

Every walker holds a relaxed structure. Each generation, every walker proposes a move
(all atoms displaced uniformly within ``step``, and for crystals a small random strain
of the cell), all proposals are relaxed in one batch, and each walker accepts its own
relaxed proposal by the Metropolis rule on the enthalpy, ``exp(-(H_new - H) / kT)``.
Each walker's step size is adapted toward an acceptance of ``acceptance`` (multiplied
by ``adapt`` after an acceptance, divided after a rejection, which balances at the
target ratio of 1/2 by default). A walker that has not improved its own best for
``reset_after`` steps restarts from a fresh random structure (0: never).

``move="all"`` (default) is plain basin hopping as Wales & Doye describe it, the
baseline every other driver is compared with. ``move="surface"`` is basin hopping with
surface moves instead: each move takes between 1 and ``surface_fraction`` x N atoms,
drawn with a preference for the highest per-atom energy, and moves them to surface sites
of the cluster (to the emptiest points of the cell for crystals), see
:func:`.operators.relocate`; Locatelli & Schoen, Comput. Optim. Appl. 26, 173 (2003)
and Cheng et al., J. Phys. Chem. A 113, 9309 (2009) show how much faster this finds
Lennard-Jones minima. ``move="mixed"`` alternates the two at random (half each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...settings import Settings, setting
from . import operators as ops


@dataclass(frozen=True)
class Config(Settings):
    """Basin-hopping settings.

    Attributes:
      temperature: kT in eV per structure (default: 0.2 x |enthalpy per atom| of the
        best starting structure, 0.8 epsilon for LJ clusters as in Wales & Doye).
      step: starting step size in units of the bond length.
      strain: width of the random strain of crystal cells per move.
      acceptance: target acceptance ratio of the step-size feedback.
      adapt: step-size factor of the feedback (> 1).
      reset_after: steps without improvement before a walker restarts (0: never).
      move: ``"all"`` (every atom displaced: plain basin hopping), ``"surface"``
        (highest-energy atoms moved to surface sites) or ``"mixed"``.
      surface_fraction: surface moves move 1 to ``max(1, round(surface_fraction x N))``
        atoms.
    """

    temperature: float | None = setting(None, optional=True, gt=0)
    step: float = setting(0.35, gt=0)
    strain: float = setting(0.05, ge=0)
    acceptance: float = setting(0.5, gt=0, lt=1)
    adapt: float = setting(1.1, gt=1)
    reset_after: int = setting(0, kind=int, ge=0)
    move: Literal["all", "surface", "mixed"] = setting("all", kind=str,
                                                       choices=("all", "surface", "mixed"))
    surface_fraction: float = setting(0.1, ge=0, le=1)


def surface_count(rng: np.random.Generator, n_atoms: int, fraction: float) -> int:
    """Atoms moved by one surface move: uniform in 1..max(1, round(fraction x N))."""
    return int(rng.integers(1, max(1, int(round(fraction * n_atoms))) + 1))


def propose(session, config: Config, atoms, rng: np.random.Generator, step: float,
            strain: float, energies: np.ndarray | None):
    """One basin-hopping move of ``atoms`` (host side); ``energies``: its [N] per-atom
    energies (eV), needed when ``config.move`` is not ``"all"``."""
    surface = config.move == "surface" or (config.move == "mixed" and rng.uniform() < 0.5)
    if surface and len(atoms) > 1:
        count = surface_count(rng, len(atoms), config.surface_fraction)
        return ops.relocate(atoms, rng, energies, count, session.length)
    return ops.displace(atoms, rng, step, strain_scale=strain)


def run(session, config: Config) -> None:
    """Parallel basin hopping until the budget is spent (host side)."""
    walkers = session.first_generation()
    n = len(walkers)
    h = np.array([session.fitness(a) * len(a) for a in walkers])
    own_best = h.copy()
    stale = np.zeros(n, int)
    step = np.full(n, config.step * session.length)
    # Wales & Doye's 0.8 epsilon for LJ clusters is 0.2 x their |energy per atom|
    kt = config.temperature or 0.2 * session.energy_scale(walkers)
    lo, hi = 0.05 * session.length, 2.0 * session.length
    up = config.adapt ** (1.0 - config.acceptance)  # balance at the target acceptance
    down = config.adapt ** (-config.acceptance)
    strain = 0.0 if session.cluster else config.strain
    for generation, rng in session.generations():
        k = min(n, session.remaining)
        restart = (config.reset_after > 0) & (stale[:k] >= config.reset_after)
        renew = restart | ~np.isfinite(h[:k])
        moving = [w for w in range(k) if not renew[w]]
        energies = dict(zip(moving, session.atom_energies([walkers[w] for w in moving])
                            if config.move != "all" else []))
        fresh = iter(session.random_structures(int(restart.sum()), rng))
        proposals, parents = [], []
        for w in range(k):
            if renew[w]:
                proposals.append(next(fresh, None) or session.random_structures(1, rng)[0])
                parents.append([])
            else:
                proposals.append(propose(session, config, walkers[w], rng, step[w], strain,
                                         energies.get(w)))
                parents.append([walkers[w].info["uid"]])
        relaxed = session.evaluate(generation, proposals, parents)
        draws = rng.uniform(size=k)
        for w, atoms in enumerate(relaxed):
            new = session.fitness(atoms) * len(atoms)
            if renew[w]:
                walkers[w], h[w], own_best[w], stale[w] = atoms, new, new, 0
                continue
            if new < own_best[w] - 1e-6:
                own_best[w], stale[w] = new, 0
            else:
                stale[w] += 1
            if math.isfinite(new) and (new <= h[w] or draws[w] < math.exp(-(new - h[w]) / kt)):
                walkers[w], h[w] = atoms, new
                step[w] = min(step[w] * up, hi)
            else:
                step[w] = max(step[w] * down, lo)

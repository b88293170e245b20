"""Minima hopping (Goedecker, J. Chem. Phys. 120, 9911 (2004)), with parallel walkers.

Every walker sits in a local minimum and escapes from it by a short constant-energy MD
run (velocity Verlet at fixed cell) started from Maxwell-Boltzmann velocities at its own
temperature ``T``. The walkers are streamed through the relaxer
(:meth:`jcsp.search.run.Session.walk`): whenever an escape finishes relaxing, its walker
applies the rules below and its next escape takes the freed slot. Per walker, with the
archive telling minima apart:

- the same minimum again: the escape failed, ``T *= beta1``;
- a minimum this walker visited before: ``T *= beta2``;
- a new minimum: ``T *= beta3`` (< 1);

and a new minimum is accepted when ``H_new < H_current + E_diff``, after which
``E_diff *= alpha1`` (< 1); otherwise ``E_diff *= alpha2`` (> 1). The feedback keeps
the walkers moving into new funnels without being trapped or boiling away. Each walker's
temperature and threshold start at ``temperature`` and ``e_diff`` times the |enthalpy
per atom| of its own relaxed start; a walker whose start failed starts again from a
random structure. With symmetric cluster starts a share ``fresh`` of the candidates are
fresh random structures, as in :mod:`.basin`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from ...settings import Settings, setting
from .anneal import langevin, time_step
from .basin import FRESH, enthalpy


@dataclass(frozen=True)
class Config(Settings):
    """Minima-hopping settings (Goedecker's defaults for the feedback factors).

    Attributes:
      temperature: starting kT / energy scale (|enthalpy per atom| of the walker's start).
      e_diff: starting acceptance threshold / energy scale (per structure).
      md_steps: MD steps of each escape.
      beta1, beta2, beta3: temperature factors (same minimum, old minimum, new minimum).
      alpha1, alpha2: threshold factors (accepted, rejected).
      fresh: chance that a walker's next candidate is a fresh random structure instead
        of an escape (judged by the same rules); default :data:`.basin.FRESH` for
        clusters with symmetric starts, 0 otherwise (see :mod:`.basin`).
    """

    temperature: float = setting(0.08, gt=0)
    e_diff: float = setting(0.1, gt=0)
    md_steps: int = setting(100, kind=int, ge=1)
    beta1: float = setting(1.05, gt=1)
    beta2: float = setting(1.05, gt=1)
    beta3: float = setting(1 / 1.05, gt=0, lt=1)
    alpha1: float = setting(1 / 1.02, gt=0, lt=1)
    alpha2: float = setting(1.02, gt=1)
    fresh: float | None = setting(None, optional=True, ge=0, le=1)


class Hoppers:
    """The walkers' states and their per-walker minima-hopping rules (host side).

    Args:
      session: the search session; config: the driver's settings; n: walkers.
    """

    def __init__(self, session, config: Config, n: int):
        self.session, self.config = session, config
        self.atoms: list[Atoms | None] = [None] * n
        self.h = np.full(n, math.inf)
        self.kt = np.full(n, math.nan)
        self.e_diff = np.full(n, math.nan)
        self.dt = np.full(n, math.nan)
        symmetric = session.cluster and session.point_groups is not None
        self.fresh = config.fresh if config.fresh is not None else (FRESH if symmetric else 0.0)
        self.visited: list[set] = [set() for _ in range(n)]  # each walker's own minima

    def update(self, w: int, relaxed: Atoms) -> None:
        """Goedecker's feedback on walker ``w``'s relaxed escape."""
        c = self.config
        new = enthalpy(relaxed)
        entry = relaxed.info.get("entry")
        if self.atoms[w] is None:  # a start: taken as it is; sets the walker's scale
            if math.isfinite(new):
                scale = max(abs(new) / len(relaxed), 1e-3)
                self.atoms[w], self.h[w] = relaxed, new
                self.kt[w], self.e_diff[w] = c.temperature * scale, c.e_diff * scale
                self.dt[w] = time_step(self.session, scale)
        elif math.isfinite(new):
            if entry is not None and entry == self.atoms[w].info.get("entry"):
                self.kt[w] *= c.beta1  # fell back into the same minimum
            else:
                self.kt[w] *= c.beta2 if entry in self.visited[w] else c.beta3
                if new < self.h[w] + self.e_diff[w]:
                    self.atoms[w], self.h[w] = relaxed, new
                    self.e_diff[w] *= c.alpha1
                else:
                    self.e_diff[w] *= c.alpha2
        if entry is not None:
            self.visited[w].add(entry)

    def escape(self, w: int, rng: np.random.Generator) -> Atoms:
        """Walker ``w``'s MD escape from its minimum: Maxwell-Boltzmann velocities at its
        temperature from its own stream, ``md_steps`` of velocity Verlet with its own
        time step (one structure per run, so a walker's trajectory depends on nothing
        but its own history)."""
        atoms = self.atoms[w]
        mass = atomic_masses[atoms.numbers][:, None]
        vel = rng.normal(size=(len(atoms), 3)) * np.sqrt(self.kt[w] / mass)
        vel -= vel.mean(0)
        (escaped,), _ = langevin(self.session.potential, [atoms],
                                 np.zeros(self.config.md_steps), dt=float(self.dt[w]),
                                 friction=0.0, rng=rng, velocities=vel[None])
        return escaped


def run(session, config: Config) -> None:
    """Minima hopping until the budget is spent (host side): :attr:`population` walkers
    streamed through the relaxer (:meth:`jcsp.search.run.Session.walk`)."""
    hoppers = Hoppers(session, config, session.population)

    def advance(done):
        out = []
        for w, relaxed in done:
            rng = session.walker_rng(w)
            if relaxed is not None:
                hoppers.update(w, relaxed)
            if hoppers.atoms[w] is None or (hoppers.fresh > 0
                                            and rng.uniform() < hoppers.fresh):
                out.append((session.random_structures(1, rng)[0], []))
            else:
                parent = hoppers.atoms[w]
                special = session.special_move(parent, rng)  # the search's named moves
                out.append((special if special is not None else hoppers.escape(w, rng),
                            [parent.info["uid"]]))
        return out

    session.walk(len(hoppers.atoms), advance)

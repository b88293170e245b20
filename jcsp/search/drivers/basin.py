"""Basin hopping with many walkers (Wales & Doye, J. Phys. Chem. A 101, 5111 (1997)),
restarted from the best minima as in population basin hopping (Grosso, Locatelli &
Schoen, Math. Program. 110, 373 (2007)).

Every walker holds a relaxed structure and hops on its own: it proposes a move, the
relaxed proposal is accepted by the Metropolis rule on the enthalpy,
``exp(-(H_new - H) / kT)`` (a failed relaxation is a rejection), and its step size is
adapted toward an acceptance of ``acceptance`` (multiplied by ``adapt ** (1 - a)``
after an acceptance, by ``adapt ** -a`` after a rejection, ``a`` the target, so the
size is steady exactly at the target ratio; only displacement moves feed it back). The
walkers are streamed through the relaxer (:meth:`jcsp.search.run.Session.walk`): a
walker whose candidate has relaxed decides and proposes its next one at once, which takes
the freed slot; each walker draws from its own random stream.

Moves (``move``):

- ``"all"``: every atom displaced uniformly within the walker's step (and for crystals
  a small random strain of the cell): plain basin hopping;
- ``"surface"``: between 1 and ``surface_fraction`` x N atoms, drawn with a preference
  for the highest per-atom energy, moved to the most coordinated of ``surface_sites``
  random surface sites of the cluster (:func:`relocate`; to the emptiest points of the
  cell for crystals, :func:`.operators.relocate`); Locatelli
  & Schoen, Comput. Optim. Appl. 26, 173 (2003) and Cheng et al., J. Phys. Chem. A 113,
  9309 (2009) show how much faster such moves find Lennard-Jones minima;
- ``"mixed"`` (default for clusters; crystals default to ``"all"``): a surface move
  with probability ``surface_probability``, else a displacement of all atoms.

A search's ``moves`` setting (:meth:`jcsp.search.run.Session.special_move`) replaces
a proposal by one of its named moves with their probabilities.

Restarts: a walker that has not lowered its own best for ``reset_after`` steps
restarts from one of the ``elite`` lowest distinct minima found so far by any walker
(``restart="best"``, population basin hopping: the budget goes to the good funnels and
a restart costs no relaxation), or from a fresh random structure (``restart="random"``).
Restarts read the archive, which all walkers share: a resumed search replays each
walker exactly up to its first restart, and validly (not bit for bit) after it.

Why the earlier driver trailed single-walker basin hopping on LJ31 and LJ38 (issue 21,
measured from plain starts): (1) the uniform displacement of 0.35 bond lengths puts
some pair of atoms closer than 0.5 sigma in most proposals; the relaxer refuses those
at step 0 ("exploding forces") and they counted as failed relaxations (15 of 16 in a
generation of LJ31), the step feedback then shrank the steps to the 0.05 floor; (2) 16
walkers that never restart split 1500 relaxations into 16 runs of 94 steps each, each
starting from a random structure (LJ31, seeds 0 and 1: best -132.43 and -131.54 epsilon
after 1500, against the minimum -133.59 that single-walker basin hopping reaches in
128-2809 quenches); (3) no surface moves. Candidates are now repaired by the session;
the step unit (the bond length, 2^(1/6) sigma for an ``LJ`` label) and the acceptance
rule were already those of Wales & Doye. Restarts from random structures instead of
the best minima left LJ31 seeds 1 and 2 trapped (-133.29 epsilon) within 1500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from ase import Atoms

from ...settings import Settings, setting
from . import operators as ops
from .operators import surface_site


#: Default kT per structure in units of |enthalpy per atom| of a walker's start: 0.3,
#: 1.2-1.3 epsilon for Lennard-Jones clusters, hotter than Wales & Doye's 0.8 epsilon
#: for one walker, because restarts from the best minima cool the population (LJ31 from
#: plain starts, seeds 1 and 2: trapped at -133.29 and -133.18 epsilon within 1500
#: relaxations at 0.2, found the minimum after 209 and 1408 at 0.3).
TEMPERATURE = 0.3


#: Default share of fresh random proposals when clusters start with point-group symmetry:
#: a random symmetric LJ38 relaxes straight into the truncated octahedron about once in
#: 50 (3 of 160, Td and O starts, record search_validation_starts.json), which walkers
#: in the icosahedral funnel seldom reach (LJ38, symmetric starts, seed 0: trapped at
#: -173.2524 epsilon within 1500 relaxations without them, also with a 0.1 share of
#: symmetrize moves). A share of 0.1 slowed LJ45 (first hits 1286, miss, 1040 at seeds
#: 0-2, search_validation_symmetric.json; 719, 928, 867 without them in an unrecorded
#: probe), 0.05 keeps LJ38 (record
#: search_validation_symmetric_basin.json).
FRESH = 0.05


@dataclass(frozen=True)
class Config(Settings):
    """Basin-hopping settings.

    Attributes:
      temperature: kT in eV per structure (default: :data:`TEMPERATURE` x |enthalpy per
        atom| of each walker's relaxed start, 1.2-1.3 epsilon for LJ clusters).
      step: starting step size in units of the bond length.
      strain: width of the random strain of crystal cells per displacement move.
      acceptance: target acceptance ratio of the step-size feedback.
      adapt: step-size factor of the feedback (> 1).
      reset_after: steps without lowering its own best before a walker restarts (0:
        never).
      restart: ``"best"`` (from one of the ``elite`` lowest minima found) or
        ``"random"`` (from a fresh random structure).
      elite: number of lowest distinct minima restarts choose from.
      move: ``"all"`` (every atom displaced), ``"surface"`` (highest-energy atoms moved
        to surface sites) or ``"mixed"``; default ``"mixed"`` for clusters, ``"all"``
        for crystals (Si8 with Stillinger-Weber, 64 relaxations, seeds 0-2: diamond in
        3 of 3 with ``"all"``, 1 of 3 with ``"mixed"``, record
        experiments/results/search_validation_si8.json).
      surface_probability: chance of a surface move under ``move="mixed"``.
      surface_fraction: surface moves move 1 to ``max(1, round(surface_fraction x N))``
        atoms.
      surface_sites: clusters: each moved atom goes to the most coordinated of this many
        surface sites in random directions (1: a random surface site).
      fresh: chance that a walker's proposal is a fresh random structure of the search
        (accepted by the same rule as any other); default :data:`FRESH` for clusters
        with symmetric starts, 0 otherwise.
    """

    temperature: float | None = setting(None, optional=True, gt=0)
    step: float = setting(0.35, gt=0)
    strain: float = setting(0.05, ge=0)
    acceptance: float = setting(0.5, gt=0, lt=1)
    adapt: float = setting(1.1, gt=1)
    reset_after: int = setting(30, kind=int, ge=0)
    restart: Literal["best", "random"] = setting("best", kind=str, choices=("best", "random"))
    elite: int = setting(4, kind=int, ge=1)
    move: Literal["all", "surface", "mixed"] | None = setting(
        None, kind=str, optional=True, choices=("all", "surface", "mixed"))
    surface_probability: float = setting(0.5, ge=0, le=1)
    surface_fraction: float = setting(0.1, ge=0, le=1)
    surface_sites: int = setting(8, kind=int, ge=1)
    fresh: float | None = setting(None, optional=True, ge=0, le=1)


def surface_count(rng: np.random.Generator, n_atoms: int, fraction: float) -> int:
    """Atoms moved by one surface move: uniform in 1..max(1, round(fraction x N))."""
    return int(rng.integers(1, max(1, int(round(fraction * n_atoms))) + 1))


def relocate(atoms: Atoms, rng: np.random.Generator, energies: np.ndarray, count: int,
             length: float, sites: int) -> Atoms:
    """Surface move of a cluster: ``count`` atoms drawn with weights rising with their
    energy (as :func:`.operators.relocate`) moved one at a time to the most coordinated
    (most neighbours within 1.3 ``length``) of ``sites`` surface sites in random
    directions (:func:`.operators.surface_site`), the way dynamic lattice searching
    fills the best vacancies (Shao, Cheng & Cai, J. Comput. Chem. 25, 1693 (2004));
    crystals: :func:`.operators.relocate`."""
    n = len(atoms)
    if atoms.pbc.all() or n < 3:
        return ops.relocate(atoms, rng, energies, count, length)
    count = int(np.clip(count, 1, n - 1))
    e = np.asarray(energies, float)
    w = np.exp((e - e.max()) / max(0.5 * float(np.std(e)), 1e-12))
    chosen = rng.choice(n, size=count, replace=False, p=w / w.sum())
    pos = atoms.positions - atoms.positions.mean(0)
    placed = pos[np.setdiff1d(np.arange(n), chosen)]
    for i in chosen:
        center = placed.mean(0)
        trial = np.array([surface_site(placed - center, rng.normal(size=3), length)
                          for _ in range(sites)]) + center
        d = np.linalg.norm(trial[:, None] - placed[None], axis=-1)
        pos[i] = trial[int(np.argmax((d < 1.3 * length).sum(1)))]
        placed = np.vstack([placed, pos[i]])
    out = Atoms(numbers=atoms.numbers, positions=pos - pos.mean(0), pbc=False)
    if "labels" in atoms.info:
        out.info["labels"] = list(atoms.info["labels"])
    return out


def metropolis(h_old: float, h_new: float, kt: float, u: float) -> bool:
    """Accept ``h_new`` from ``h_old`` (eV) at ``kt`` (eV) given a uniform draw ``u`` in
    [0, 1): always when lower or equal, else when ``u < exp(-(h_new - h_old) / kt)``;
    never a non-finite (failed) one."""
    if not math.isfinite(h_new):
        return False
    return h_new <= h_old or u < math.exp(-(h_new - h_old) / kt)


class Walkers:
    """The walkers' states and their per-walker propose/accept logic (host side).

    A walker's state depends only on its own structures, draws and (with
    ``restart="best"``) the minima in the archive when it restarts.

    Args:
      session: the search session (:class:`jcsp.search.run.Session`).
      config: the driver's settings.
      n: number of walkers; each starts from the first structure it is given
        (:meth:`update` with no current structure).
    """

    def __init__(self, session, config: Config, n: int):
        self.session, self.config = session, config
        self.atoms: list[Atoms | None] = [None] * n
        self.h = np.full(n, math.inf)
        self.best = np.full(n, math.inf)
        self.kt = np.full(n, math.nan if config.temperature is None else config.temperature)
        self.stale = np.zeros(n, int)
        self.step = np.full(n, config.step * session.length)
        self.accepted = np.zeros(n, int)
        self.tried = np.zeros(n, int)
        self.displaced = np.zeros(n, bool)  # the last proposal displaced every atom
        self.unrelated = np.zeros(n, bool)  # the last proposal was a fresh structure
        self.restarts = 0
        self.lo, self.hi = 0.05 * session.length, 2.0 * session.length
        self.up = config.adapt ** (1.0 - config.acceptance)
        self.down = config.adapt ** (-config.acceptance)
        self.strain = 0.0 if session.cluster else config.strain
        self.move = config.move or ("mixed" if session.cluster else "all")
        symmetric = session.cluster and session.point_groups is not None
        self.fresh = config.fresh if config.fresh is not None else (FRESH if symmetric else 0.0)

    def __len__(self) -> int:
        return len(self.atoms)

    @property
    def needs_energies(self) -> bool:
        """Whether proposals may need per-atom energies (surface moves)."""
        return self.move == "surface" or (self.move == "mixed"
                                          and self.config.surface_probability > 0)

    def advance(self, w: int, relaxed: Atoms | None, rng: np.random.Generator):
        """Walker ``w`` takes or refuses its relaxed candidate (None: none yet), restarts
        if stale, and returns ``(next candidate, parent uids)``; ``rng`` is its own
        random stream."""
        if relaxed is not None:
            self.update(w, relaxed, float(rng.uniform()))
        if not math.isfinite(self.h[w]) and self.atoms[w] is not None:
            self.restart(w, rng)
        elif self.config.reset_after > 0 and self.stale[w] >= self.config.reset_after:
            self.restart(w, rng)
        parent = self.atoms[w]
        candidate = self.propose(w, rng)
        if parent is None or self.unrelated[w]:
            return candidate, []
        return candidate, [parent.info["uid"]]

    def restart(self, w: int, rng: np.random.Generator) -> None:
        """Walker ``w`` jumps to one of the ``elite`` lowest minima found (or, with
        ``restart="random"`` or none found, starts again from a random structure)."""
        self.restarts += 1
        self.step[w] = self.config.step * self.session.length
        self.stale[w] = 0
        source = None
        if self.config.restart == "best":
            ranked = self.session.archive.ranking()[: self.config.elite]
            if ranked:
                source = self.session.archive.entry(ranked[int(rng.integers(len(ranked)))])
        if source is None:
            self.atoms[w], self.h[w], self.best[w] = None, math.inf, math.inf
        else:
            self.atoms[w], self.h[w] = source, enthalpy(source)
            self.best[w] = self.h[w]

    def propose(self, w: int, rng: np.random.Generator) -> Atoms:
        """Walker ``w``'s next candidate (a fresh random structure when it has none)."""
        atoms = self.atoms[w]
        self.displaced[w] = self.unrelated[w] = False
        if atoms is None:
            return self.session.random_structures(1, rng)[0]
        if self.fresh > 0 and rng.uniform() < self.fresh:
            self.unrelated[w] = True
            return self.session.random_structures(1, rng)[0]
        special = self.session.special_move(atoms, rng)
        if special is not None:
            return special
        c = self.config
        surface = self.move == "surface" or (self.move == "mixed"
                                             and rng.uniform() < c.surface_probability)
        if surface and len(atoms) > 1:
            (energies,) = self.session.atom_energies([atoms])
            count = surface_count(rng, len(atoms), c.surface_fraction)
            return relocate(atoms, rng, energies, count, self.session.length,
                            c.surface_sites)
        self.displaced[w] = True
        return ops.displace(atoms, rng, self.step[w], strain_scale=self.strain)

    def update(self, w: int, relaxed: Atoms, u: float) -> bool:
        """Walker ``w`` takes or refuses its relaxed candidate (``u``: a uniform draw);
        returns whether it moved. The step size follows only the outcomes of
        displacement moves (:attr:`displaced`). A walker without a structure takes its first
        successful one as it is, and its temperature, unless set, becomes
        :data:`TEMPERATURE` x |enthalpy per atom| of that start."""
        new = enthalpy(relaxed)
        if self.atoms[w] is None:
            if math.isfinite(new):
                self.atoms[w], self.h[w], self.best[w], self.stale[w] = relaxed, new, new, 0
                if math.isnan(self.kt[w]):
                    self.kt[w] = TEMPERATURE * max(abs(new) / len(relaxed), 1e-3)
            return math.isfinite(new)
        self.tried[w] += 1
        if new < self.best[w] - 1e-6:
            self.best[w], self.stale[w] = new, 0
        else:
            self.stale[w] += 1
        took = metropolis(self.h[w], new, self.kt[w], u)
        if took:
            self.atoms[w], self.h[w] = relaxed, new
            self.accepted[w] += 1
        if self.displaced[w]:  # the step feedback hears only the moves it sizes
            self.step[w] = min(self.step[w] * self.up, self.hi) if took else \
                max(self.step[w] * self.down, self.lo)
        return took


def enthalpy(atoms: Atoms) -> float:
    """Enthalpy per structure (eV), +inf for failed relaxations (also used by minima
    hopping)."""
    h = atoms.info.get("enthalpy", math.nan)
    return math.inf if atoms.info.get("failed") or not math.isfinite(h) else float(h)


def run(session, config: Config) -> None:
    """Basin hopping until the budget is spent (host side): :attr:`population` walkers
    streamed through the relaxer (:meth:`jcsp.search.run.Session.walk`)."""
    walkers = Walkers(session, config, session.population)

    def advance(done):
        return [walkers.advance(w, relaxed, session.walker_rng(w)) for w, relaxed in done]

    session.walk(len(walkers), advance, atom_energies=walkers.needs_energies)

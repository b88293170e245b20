"""``jcsp.search``: the search entry point, its run session, resume and outputs (host side).

A search is a loop of generations. In each generation the chosen driver
(:mod:`jcsp.search.drivers`) proposes a batch of candidate structures, the session relaxes
the whole batch with ONE call of :func:`jcsp.relax` (fixed batch shape, so one
compilation serves the whole run), writes every relaxed structure to the run database
(:mod:`jcsp.search.database`) the moment the batch is back, adds it to the archive
(:class:`jcsp.search.archive.Archive`) and hands the batch back to the driver, which
updates its state on the host. The budget counts relaxations.

Resume is exact by construction: the random numbers of generation ``g`` come from
``numpy.random.default_rng([seed, g])`` and each structure's uid is
``make_uid(seed, driver, g, index)``. A restarted search replays the generations from
the start; a generation whose structures are all in the database is read back instead of
relaxed, one that was cut short by a kill is relaxed again with the same batch and only
its missing rows are written. Drivers therefore see the same structures in the same
order, and the archive, the final ranking and the best structure equal those of an
uninterrupted run.

Example:
  >>> lj = jcsp.potentials.LennardJones(1.0, 1.0, None)
  >>> res = jcsp.search("LJ13", lj, algorithm="basin", budget=200, cluster=True, seed=1)
  >>> res.best.info["energy"], res.n_relaxations
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms

from ..potentials.base import Potential
from . import database as dbm
from . import generate
from .archive import Archive

ALGORITHMS = ("random", "basin", "minima", "anneal", "ga", "pso")


@dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
      best: the lowest-enthalpy-per-atom structure, ``info`` with ``energy``,
        ``enthalpy`` (eV), ``spacegroup``, ``volume``, ``found_at`` (relaxations done when
        first found), ``hits`` and its origin (``driver``, ``generation``, ``parents``,
        ``uid``).
      structures: unique structures, ascending enthalpy per atom, same ``info`` keys.
      n_relaxations: relaxations counted against the budget (read back ones included).
      history: [n_relaxations] best enthalpy per atom (eV/atom) after each relaxation.
      archive: the :class:`~jcsp.search.archive.Archive`.
      out: output folder, or None.
      n_batches: relaxation calls made by this process (read-back generations excluded).
      occupancy: mean fraction of batch slots that held a structure in those calls.
      n_extrapolated: relaxed structures set aside as outside an ML potential's
        training domain (``max_grade``), read-back ones included.
    """

    best: Atoms | None
    structures: list[Atoms]
    n_relaxations: int
    history: np.ndarray
    archive: Archive
    out: Path | None = None
    n_batches: int = 0
    occupancy: float = math.nan
    config: dict = field(default_factory=dict)
    n_extrapolated: int = 0

    def first_hit(self, target: float, tol: float = 1e-4) -> int | None:
        """Relaxations (1-based) until the best enthalpy per atom first came within
        ``tol`` of ``target`` (eV/atom), or None if it never did."""
        hit = np.flatnonzero(self.history <= target + tol)
        return int(hit[0]) + 1 if hit.size else None


def options_from(cls, options: Mapping[str, Any] | None, algorithm: str):
    """A driver's frozen config from a user dict; unknown keys are a ValueError."""
    options = dict(options or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for algorithm {algorithm!r}; "
                         f"it accepts {sorted(names)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad options for algorithm {algorithm!r}: {err}") from None


class Session:
    """One search run: candidate generation, batched relaxation, database, archive.

    Drivers use :meth:`rng`, :meth:`random_structures`, :meth:`evaluate`, :meth:`atom_energies`,
    :attr:`remaining`, :attr:`done`, :attr:`counts`, :attr:`cluster` and
    :attr:`length`; everything else is bookkeeping.
    """

    def __init__(self, *, counts: dict[str, int], potential: Potential, driver: str,
                 budget: int, seed: int, pressure: float, cluster: bool, groups,
                 volume, population: int, fmax: float, max_steps: int, db=None,
                 target: float | None = None, progress: bool = False,
                 cluster_symmetry=None, max_grade: float | None = None):
        self.counts, self.potential, self.driver = counts, potential, driver
        self.budget, self.seed, self.pressure = budget, seed, pressure
        self.cluster, self.groups, self.volume = cluster, groups, volume
        self.population, self.fmax, self.max_steps = population, fmax, max_steps
        self.target, self.db = target, db
        self.cluster_symmetry = cluster_symmetry
        self.max_grade = max_grade if getattr(potential, "domain", None) is not None else None
        self._grader = None
        self.symbols = [s for s, c in counts.items() for _ in range(c)]
        self.n_atoms = len(self.symbols)
        #: Å, typical nearest-neighbour distance (sum of covalent radii, count-weighted).
        self.length = 2.0 * float(np.mean([generate.radius(s) for s in self.symbols]))
        self.archive = Archive(length=self.length)
        self.stored: dict[str, Atoms] = {}
        if db is not None:
            self.stored = {a.info["uid"]: a for a in dbm.read_all(db) if "uid" in a.info}
        self.n_relaxations = 0
        self.n_extrapolated = 0
        self.history: list[float] = []
        self.n_batches = 0
        self.slots_used = 0
        self._best = math.inf
        self._calc = None
        self._atom_energies: dict[str, np.ndarray] = {}
        self._bar = None
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=budget, desc=f"search ({driver})", unit="relaxation",
                             file=sys.stderr)

    # --- for drivers ------------------------------------------------------------------
    def rng(self, generation: int) -> np.random.Generator:
        """The random stream of one generation (the same on every resume)."""
        return np.random.default_rng([self.seed, generation])

    @property
    def remaining(self) -> int:
        return self.budget - self.n_relaxations

    @property
    def done(self) -> bool:
        """Budget spent, or the target enthalpy per atom reached."""
        hit = self.target is not None and self._best <= self.target + 1e-6
        return self.remaining <= 0 or hit

    def random_structures(self, n: int, rng: np.random.Generator) -> list[Atoms]:
        """``n`` random symmetric crystals (or random clusters) of the composition."""
        if n <= 0:
            return []
        if self.cluster:
            return generate.random_clusters(self.counts, n, seed=rng,
                                            symmetry=self.cluster_symmetry, jitter=0.03)
        return generate.random_crystals(self.counts, n, seed=rng, groups=self.groups,
                                        volume=self.volume)

    def evaluate(self, generation: int, candidates: Sequence[Atoms],
                 parents: Sequence[Sequence[str]] | None = None) -> list[Atoms]:
        """Relax one generation's candidates in one batch; record and archive them.

        Candidates beyond the remaining budget are dropped. Returns the relaxed
        structures in order, each with ``info`` ``uid``, ``driver``, ``generation``,
        ``parents``, ``enthalpy`` and, unless failed, ``entry`` (the archive entry, equal
        for duplicates).
        """
        candidates = list(candidates)[: max(self.remaining, 0)]
        if not candidates:
            return []
        parents = [list(p) for p in (parents or [[] for _ in candidates])]
        uids = [dbm.make_uid(self.seed, self.driver, generation, i)
                for i in range(len(candidates))]
        if all(u in self.stored for u in uids):
            relaxed = [self.stored[u].copy() for u in uids]
        else:
            clean = []
            for atoms in candidates:
                atoms = atoms.copy()
                atoms.info = {k: atoms.info[k] for k in ("labels", "generator_spacegroup")
                              if k in atoms.info}
                if self.cluster:
                    atoms.positions -= atoms.positions.mean(0)
                clean.append(atoms)
            import jcsp
            relaxed = jcsp.relax(clean, self.potential, fmax=self.fmax,
                                 pressure=self.pressure, max_steps=self.max_steps,
                                 batch_size=self.population)
            self.n_batches += 1
            self.slots_used += len(clean)
            self._set_aside_extrapolated(relaxed)
            for atoms, uid, par in zip(relaxed, uids, parents):
                atoms.info.update(uid=uid, driver=self.driver, generation=int(generation),
                                  parents=par)
                if atoms.info["failed"] or not math.isfinite(atoms.info["enthalpy"]):
                    atoms.info["failed"] = True
                if self.db is not None and uid not in self.stored:
                    dbm.write_structure(self.db, atoms, uid=uid, driver=self.driver,
                                        generation=generation, parents=par,
                                        pressure=self.pressure)
        good = [a for a in relaxed if not a.info.get("failed")]
        if good:
            for atoms, added in zip(good, self.archive.add(good)):
                atoms.info["entry"] = added.entry  # archive entry: duplicates share it
        for atoms in relaxed:
            self.n_relaxations += 1
            self.n_extrapolated += atoms.info.get("extrapolation_grade", 0.0) > (
                self.max_grade or math.inf)
            h = self.fitness(atoms)
            self._best = min(self._best, h)
            self.history.append(self._best)
        if self._bar is not None:
            self._bar.update(len(relaxed))
            self._bar.set_postfix(best=f"{self._best:.5f} eV/atom")
        return relaxed

    def _set_aside_extrapolated(self, relaxed: Sequence[Atoms]) -> None:
        """Grade relaxed structures against an ML potential's training domain
        (:mod:`jcsp.ml.domain`); those beyond ``max_grade`` count as failed, so a hole
        of the fitted energy surface cannot win the search."""
        ok = [a for a in relaxed if not a.info.get("failed")]
        if self.max_grade is None or not ok:
            return
        if self._grader is None:
            from ..ml.domain import Grader
            self._grader = Grader(self.potential)
        for atoms, grade in zip(ok, self._grader(ok)):
            atoms.info["extrapolation_grade"] = float(grade)
            if grade > self.max_grade:
                atoms.info["failed"] = True
                atoms.info["failure_reason"] = (
                    f"outside the potential's training data (extrapolation grade "
                    f"{grade:.1f} > max_grade {self.max_grade:g}); its energy is not to be "
                    "trusted")

    def atom_energies(self, atoms: Atoms) -> np.ndarray:
        """[N] per-atom energies (eV) of a structure under the search's potential
        (cached by uid; used by moves that rebuild the worst-bound atoms)."""
        uid = atoms.info.get("uid")
        if uid is not None and uid in self._atom_energies:
            return self._atom_energies[uid]
        if self._calc is None:
            from ..calculator import JCSPCalculator
            self._calc = JCSPCalculator(self.potential)
        probe = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                      pbc=atoms.pbc)
        probe.calc = self._calc
        energies = np.array(probe.get_potential_energies(), float)
        if uid is not None:
            self._atom_energies[uid] = energies
        return energies

    @staticmethod
    def fitness(atoms: Atoms) -> float:
        """Enthalpy per atom (eV/atom); +inf for failed relaxations."""
        h = atoms.info.get("enthalpy", math.nan)
        if atoms.info.get("failed") or not math.isfinite(h):
            return math.inf
        return float(h) / len(atoms)

    def close(self):
        if self._bar is not None:
            self._bar.close()


# --- validation -----------------------------------------------------------------------
def _integer(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, "
                         f"got {value!r}")
    return float(value)


def _drivers():
    from .drivers import DRIVERS
    return DRIVERS


def search(composition: str, potential: Potential, algorithm: str = "random",
           budget: int = 100, pressure: float = 0.0, seed: int = 0,
           out: str | Path | None = None, *, cluster: bool = False, formula_units: int = 1,
           groups: Sequence[int] | None = None, volume: float | None = None,
           population: int | None = None, fmax: float = 0.01, max_steps: int = 2000,
           target: float | None = None, options: Mapping[str, Any] | None = None,
           n_best: int = 10, progress: bool = False,
           cluster_symmetry: bool | Sequence[str] | None = True,
           max_grade: float | None = 3.0) -> SearchResult:
    """Search for the lowest-enthalpy structures of a composition.

    Args:
      composition: e.g. ``"Si8"``, ``"Na4Cl4"``, ``"LJ38"`` (a non-element label such as
        ``LJ`` means identical particles).
      potential: a :class:`jcsp.potentials.Potential` covering every species.
      algorithm: ``"random"`` (AIRSS), ``"basin"`` (parallel basin hopping),
        ``"minima"`` (minima hopping), ``"anneal"`` (simulated annealing), ``"ga"``
        (genetic algorithm) or ``"pso"`` (particle swarm).
      budget: number of relaxations, >= 1.
      pressure: GPa; structures are ranked by enthalpy per atom.
      seed: integer seed; the same seed gives the same search.
      out: folder for ``structures.db`` (every relaxed structure, the resume record),
        ``best/`` (CIF and POSCAR, or xyz for clusters), ``ranking.txt``/``.csv`` and
        plots. Rerunning the same call resumes the run; a larger budget extends it.
      cluster: search clusters (no cell) instead of crystals.
      formula_units: multiplies the composition.
      groups: space groups random crystals are drawn from (default: all feasible ones
        with at most 48 general positions).
      volume: target cell volume of random crystals, Å³ (default from covalent radii).
      population: structures per generation (= relaxation batch size); default
        ``min(budget, 16)``.
      fmax: relaxation force criterion, eV/Å.
      max_steps: relaxation steps per structure.
      target: stop as soon as the best enthalpy per atom reaches this value (eV/atom).
      options: driver settings (see each driver's ``Config``); unknown keys fail.
      n_best: number of best structures written to ``out``.
      progress: show a progress bar over relaxations.
      cluster_symmetry: random clusters with point-group symmetry, as random crystals
        have space-group symmetry: True (default; a random feasible group of
        :data:`jcsp.search.pointgroup.GROUPS`, C1 included, for each start), a list
        of Schoenflies symbols such as ``["Td", "Oh", "Ih"]``, or False / None for
        plain random points in a sphere. Ignored for crystals unless set explicitly.
      max_grade: with a machine-learned potential that carries its training domain,
        relaxed structures whose extrapolation grade (:mod:`jcsp.ml.domain`: distance
        from the training atoms' features, in units of the farthest training atom)
        exceeds this are set aside as failed, with the grade in ``info``; None keeps
        them. Classical potentials are not graded.

    Returns:
      A :class:`SearchResult`.

    Raises:
      ValueError: unknown algorithm or option, budget < 1, a composition that no
        Wyckoff combination of the groups can hold, a potential missing a species, or
        (:class:`~jcsp.search.database.ResumeError`) an ``out`` holding another run;
        all raised before any relaxation.
    """
    drivers = _drivers()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of "
                         f"{', '.join(ALGORITHMS)}")
    budget = _integer(budget, "budget", 1)
    seed = _integer(seed, "seed", 0)
    pressure = _real(pressure, "pressure")
    fmax = _real(fmax, "fmax", positive=True)
    max_steps = _integer(max_steps, "max_steps", 1)
    population = min(budget, 16) if population is None else _integer(population,
                                                                       "population", 1)
    if target is not None:
        target = _real(target, "target")
    if not isinstance(potential, Potential):
        raise ValueError(f"potential must be a jcsp potential, got {type(potential).__name__}")
    counts = generate.parse_composition(composition, formula_units)
    numbers_ = [generate.species_number(s) for s in counts]
    potential.check_species(numbers_)
    if cluster:
        if groups is not None:
            raise ValueError("groups (space groups) apply to crystals, not clusters")
        if cluster_symmetry not in (None, False):
            cluster_symmetry = generate.cluster_groups(counts, cluster_symmetry)
        else:
            cluster_symmetry = None
    else:
        if cluster_symmetry not in (None, False, True):
            raise ValueError("cluster_symmetry applies to clusters; crystals take space "
                             "groups (groups=)")
        cluster_symmetry = None
        if potential.cutoff is None:
            raise ValueError(f"{potential!r} has no cutoff (all pairs): it only works for "
                             "clusters; pass cluster=True or give the potential a cutoff")
        if groups is not None:
            groups = sorted({int(g) for g in groups})
        pool = groups if groups is not None else [
            g for g in range(1, 231) if len(generate.wyckoff.operations(g)[0]) <= 48]
        if not generate.feasible_groups(counts, pool):
            raise ValueError(f"no space group among {pool if len(pool) < 8 else 'those allowed'}"
                             f" has Wyckoff positions adding up to {counts}; allow more "
                             "groups or change the composition")
    if volume is not None:
        volume = _real(volume, "volume", positive=True)
    if max_grade is not None:
        max_grade = _real(max_grade, "max_grade", positive=True)
    config_cls, run_driver = drivers[algorithm]
    config = options_from(config_cls, options, algorithm)

    record = {"composition": composition, "formula_units": formula_units,
              "algorithm": algorithm, "seed": seed, "pressure": pressure,
              "cluster": bool(cluster), "groups": groups, "volume": volume,
              "population": population, "fmax": fmax, "max_steps": max_steps,
              "potential": repr(potential), "options": dict(options or {}),
              "budget": budget, "target": target}
    if getattr(potential, "domain", None) is not None:
        record["max_grade"] = max_grade
    if cluster_symmetry is not None:
        record["cluster_symmetry"] = list(cluster_symmetry)
    db = None
    if out is not None:
        out = Path(out)
        db = dbm.open_run(out / "structures.db", record, allow_changes=("budget", "target"))
    session = Session(counts=counts, potential=potential, driver=algorithm, budget=budget,
                      seed=seed, pressure=pressure, cluster=bool(cluster), groups=groups,
                      volume=volume, population=population, fmax=fmax,
                      max_steps=max_steps, db=db, target=target, progress=progress,
                      cluster_symmetry=cluster_symmetry, max_grade=max_grade)
    try:
        run_driver(session, config)
    finally:
        session.close()
    archive = session.archive
    result = SearchResult(best=archive.best, structures=archive.structures,
                          n_relaxations=session.n_relaxations,
                          history=np.array(session.history), archive=archive, out=out,
                          n_batches=session.n_batches,
                          occupancy=(session.slots_used / (session.n_batches * population)
                                     if session.n_batches else math.nan),
                          config=record, n_extrapolated=session.n_extrapolated)
    if out is not None:
        write_outputs(result, n_best=n_best)
    return result


# --- outputs ----------------------------------------------------------------------------
def ranking_table(structures: Sequence[Atoms], *, limit: int | None = None) -> str:
    """A plain-text table of ranked structures (enthalpy per atom, volume, space group)."""
    rows = [f"{'rank':>4}  {'H/atom (eV)':>13}  {'E/atom (eV)':>13}  {'V/atom (A^3)':>12}  "
            f"{'hits':>4}  {'found at':>8}  spacegroup"]
    for k, atoms in enumerate(structures[:limit]):
        n = len(atoms)
        info = atoms.info
        v = info.get("volume", math.nan)
        rows.append(f"{k + 1:>4}  {info['enthalpy'] / n:>13.6f}  {info['energy'] / n:>13.6f}  "
                    f"{v / n:>12.4f}  {info.get('hits', 1):>4}  {info.get('found_at', 0):>8}  "
                    f"{info.get('spacegroup', '-')}")
    return "\n".join(rows)


def write_outputs(result: SearchResult, *, n_best: int = 10) -> list[Path]:
    """Write the ranking (txt, csv), the best structures and plots into ``result.out``."""
    import csv

    from ..io import write_structures

    out = Path(result.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    table = out / "ranking.txt"
    table.write_text(ranking_table(result.structures) + "\n")
    written.append(table)
    with open(out / "ranking.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "uid", "enthalpy_per_atom_eV", "energy_per_atom_eV",
                         "volume_per_atom_A3", "spacegroup", "hits", "found_at"])
        for k, atoms in enumerate(result.structures):
            n, info = len(atoms), atoms.info
            writer.writerow([k + 1, info.get("uid", ""), info["enthalpy"] / n,
                             info["energy"] / n, info.get("volume", math.nan) / n,
                             info.get("spacegroup", "-"), info.get("hits", 1),
                             info.get("found_at", 0)])
    written.append(out / "ranking.csv")
    best = result.structures[:n_best]
    if best:
        names = [f"{k + 1:03d}_{a.get_chemical_formula()}" for k, a in enumerate(best)]
        if best[0].pbc.all():
            written += write_structures(best, out / "best", "cif", names=names)
            written += write_structures(best, out / "best", "poscar", names=names)
        else:
            written += write_structures(best, out / "best" / "best.extxyz", "extxyz")
    written += _plots(result, out)
    return written


def _plots(result: SearchResult, out: Path) -> list[Path]:
    """Best enthalpy vs relaxations and enthalpy vs volume (PNG; skipped without
    matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    def save(name, draw, xlabel, ylabel):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        return out / name

    paths = [save("best_vs_relaxations.png",
                  lambda ax: ax.plot(np.arange(1, len(result.history) + 1), result.history),
                  "relaxations", "best enthalpy per atom (eV)")]
    crystals = [a for a in result.structures if a.pbc.all()]
    if crystals:
        paths.append(save(
            "enthalpy_vs_volume.png",
            lambda ax: ax.scatter([a.info["volume"] / len(a) for a in crystals],
                                  [a.info["enthalpy"] / len(a) for a in crystals], s=10),
            "volume per atom (Å³)", "enthalpy per atom (eV)"))
    return paths


__all__ = ["search", "SearchResult", "Session", "ALGORITHMS", "options_from", "ranking_table",
           "write_outputs"]

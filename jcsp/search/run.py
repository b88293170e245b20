"""``jcsp.search``: the search entry point, its run session, resume and outputs (host side).

A driver (:mod:`jcsp.search.drivers`) proposes candidates; the :class:`Session` repairs
them, relaxes them with :mod:`jcsp.relax`, writes every relaxed structure to the run
database (:mod:`jcsp.search.database`), adds it to the archive
(:class:`jcsp.search.archive.Archive`) and hands it back to the driver, which updates its
state on the host. The budget counts relaxations. There are two ways to relax:

- **Steady state** (:meth:`Session.walk`), for drivers made of independent walkers
  (random search; basin and minima hopping): the relaxation is one stream
  (:func:`jcsp.relax.stream.relax_stream`) of ``population`` slots, and each finished
  structure is turned into its walker's next candidate, which takes the freed slot at
  the next segment boundary. No slot waits for the slowest structure of a batch, which
  matters on a GPU, where a batch holds thousands of structures.
- **Generations** (:meth:`Session.evaluate`), for drivers that need a whole generation
  before they can propose the next (GA, PSO, annealing): one :func:`jcsp.relax` call per
  generation, with a fixed batch shape so one compilation serves the whole run.

Every candidate first passes :func:`jcsp.search.repair.repair` (atoms closer than 0.6 x
the sum of their covalent radii pushed apart, flat cells rejected): a search never dies
on a structure it made; what cannot be repaired is discarded and counted
(:attr:`SearchResult.n_discarded`), a relaxation that fails is recorded as failed.

The population (slots) defaults to 16 on a CPU and to enough structures to fill an
accelerator (:func:`jcsp.search.config.device_population`). Host work per relaxation
is kept small: database rows are committed together at most every
:data:`FLUSH_SECONDS`, fingerprints of a few structures reuse compiled programs, and
``experiments/bench_search_throughput.py`` measures what a search costs over bare
:func:`jcsp.relax` on the same structures.

Resume. Generations are exact by construction: the random numbers of generation ``g``
come from ``numpy.random.default_rng([seed, g])`` and each structure's uid is
``make_uid(seed, driver, g, index)``. A restarted search replays the generations from
the start; a generation whose structures are all in the database is read back instead
of relaxed, one that was cut short by a kill is relaxed again with the same batch and
only its missing rows are written; the archive, ranking and best structure equal those
of an uninterrupted run. Walkers draw from ``default_rng([seed, walker, step])`` and
their structures are ``make_uid(seed, driver, step, walker)``: a restarted walk reads
every stored structure back (none is relaxed twice) and each walker follows the same
trajectory, but read-back structures come back first, so the global completion order
(``history``, ``found_at``) and how far each walker gets within the budget may differ
from an uninterrupted run.

Example:
  >>> lj = jcsp.potentials.LennardJones(1.0, 1.0, None)
  >>> res = jcsp.search("LJ13", lj, algorithm="basin", budget=200, cluster=True, seed=1)
  >>> res.best.info["energy"], res.n_relaxations
"""

from __future__ import annotations

import collections
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from .. import sharding
from ..ml.domain import Grader
from ..potentials.base import Potential
from ..relax import relax
from ..relax.stream import relax_stream
from . import database as dbm
from . import generate
from . import moves as moves_table
from . import seeding
from .archive import Archive
from .config import ALGORITHMS, RESUMABLE_CHANGES, SearchConfig
from .drivers import DRIVERS
from .energies import AtomEnergies
from .outputs import SearchResult, ranking_table, write_outputs
from .repair import repair

#: Neighbor-list headroom of the relaxations (:func:`jcsp.relax`): a search relaxes many
#: similar generations, and sizing the lists once with room to spare compiles the
#: relaxation kernel once instead of once per denser generation.
HEADROOM = 1.5
#: Relaxed structures are written to the run database in one transaction at most this
#: often (seconds; and when the search ends or fails). A commit costs milliseconds (a
#: disk sync), which per finished structure would cost a small search most of its
#: time; a kill loses at most this much work, which the resumed search redoes.
FLUSH_SECONDS = 2.0
#: :meth:`Session.walk` overlaps its host work (recording, the walkers' next candidates)
#: with the relaxation of the other slots (:func:`jcsp.relax.stream.relax_stream`'s
#: ``overlap``): None chooses: on for accelerators, where the host is free while the
#: device computes, and on CPUs when the process may use more than one core; off on a
#: single core, where host and relaxation take turns anyway (measured in
#: ``experiments/results/search_throughput*.json``).
OVERLAP: bool | None = None


def _overlap() -> bool:
    if OVERLAP is not None:
        return bool(OVERLAP)
    return jax.default_backend() != "cpu" or len(os.sched_getaffinity(0)) > 1


class Session(seeding.FreshCandidates):
    """One search run: candidate generation, batched relaxation, database, archive.

    Drivers use :meth:`walk` and :meth:`walker_rng` (independent walkers, steady
    state) or :meth:`rng`, :meth:`generations`, :meth:`first_generation` and
    :meth:`evaluate` (whole generations), and :meth:`random_structures`,
    :meth:`special_move`, :meth:`atom_energies`,
    :meth:`fitness`, :meth:`energy_scale`, :attr:`remaining`, :attr:`done`,
    :attr:`archive`, :attr:`potential`, :attr:`population`, :attr:`counts`,
    :attr:`symbols`, :attr:`cluster` and :attr:`length`; everything else is bookkeeping.

    Args:
      config: the search's settings.
      potential: a potential that can run it (:meth:`SearchConfig.check_potential`).
      db: the run database (:func:`jcsp.search.database.open_run`), or None.
      progress: show a progress bar over relaxations.
    """

    def __init__(self, config: SearchConfig, potential: Potential, *, db=None,
                 progress: bool = False):
        self.config, self.potential, self.db = config, potential, db
        self.driver = config.algorithm
        self.counts = config.counts
        self.cluster = config.cluster
        self.population = config.generation_size
        self.point_groups = config.point_groups
        self.space_groups = None if config.cluster else list(config.space_groups)
        self.symbols = [s for s, c in self.counts.items() for _ in range(c)]
        #: Å, typical nearest-neighbour distance (sum of covalent radii, count-weighted).
        self.length = 2.0 * float(np.mean([generate.radius(s) for s in self.symbols]))
        self.archive = Archive(length=self.length)
        graded = potential.domain is not None and config.max_grade is not None
        self._grader = Grader(potential) if graded else None
        self._atom_energies = AtomEnergies(potential, self.population)
        self._energies_by_uid: dict[str, np.ndarray] = {}
        self.stored: dict[str, Atoms] = {}
        if db is not None:
            self.stored = {a.info["uid"]: a for a in dbm.read_all(db) if "uid" in a.info}
        # several processes (jcsp.sharding): the writer's rows, read back by every process,
        # so all make the same relax calls
        self.stored = sharding.run_on_writer(lambda: self.stored, share=True)
        self.n_relaxations = 0
        self.n_failed = 0
        self.failed: list[Atoms] = []  # failed relaxations, read-back ones included
        self.n_extrapolated = 0
        self.n_discarded = 0
        self.history: list[float] = []
        self.n_batches = 0
        self.slots_used = 0
        self.slot_fraction = 0.0  # sum over relaxation calls of their occupancy
        self._best = math.inf
        self._mode: str | None = None  # "evaluate" (generations) or "walk"
        self._issued = 0  # walk: candidates issued (the budget counts them)
        self._walker_rngs: dict[int, tuple[int, np.random.Generator]] = {}
        self._walker_steps: list[int] = []
        self._warned = False
        self._unwritten: list = []  # (atoms, keywords) waiting for the next commit
        self._last_flush = time.monotonic()
        self.n_generated = 0  # relaxations of candidates a generator proposed
        self._proposals = None
        if config.generator is not None:
            self._proposals = seeding.Proposals(
                seeding.resolve(config.generator),
                [generate.species_number(s) for s in self.symbols], seed=config.seed,
                size=self.population, fallback=lambda rng: self._random(1, rng)[0],
                label=f"generator {seeding.describe(config.generator)!r}")
        self._generation_rngs: dict[int, np.random.Generator] = {}
        self._requests: collections.Counter = collections.Counter()  # proposals per key
        self._bar = tqdm(total=config.budget, desc=f"search ({self.driver})",
                         unit="relaxation", file=sys.stderr, disable=not progress)

    # --- for drivers ------------------------------------------------------------------
    def rng(self, generation: int) -> np.random.Generator:
        """The random stream of one generation (the same on every resume)."""
        rng = np.random.default_rng([self.config.seed, generation])
        self._generation_rngs = {generation: rng}  # which generation asks for proposals
        return rng

    def generations(self, start: int = 1):
        """Yield ``(generation, rng)`` from ``start`` on while the search is not
        :attr:`done`."""
        generation = start
        while not self.done:
            yield generation, self.rng(generation)
            generation += 1

    def first_generation(self) -> list[Atoms]:
        """Generation 0: a full batch of random structures, relaxed."""
        return self.evaluate(0, self.random_structures(self.population, self.rng(0)))

    @property
    def remaining(self) -> int:
        return self.config.budget - self.n_relaxations

    @property
    def done(self) -> bool:
        """Budget spent, the target enthalpy per atom reached, or as many candidates
        discarded as the budget allows relaxations (the moves make unusable structures;
        a warning says so)."""
        return self.remaining <= 0 or self._target_reached or self._too_many_discarded

    @property
    def _target_reached(self) -> bool:
        target = self.config.target
        return target is not None and self._best <= target + 1e-6

    @property
    def _too_many_discarded(self) -> bool:
        if self.n_discarded < self.config.budget:
            return False
        if not self._warned:
            self._warned = True
            warnings.warn(f"the search stops: {self.n_discarded} candidates could not be "
                          "repaired (as many as the budget); check the moves and the "
                          "composition's covalent radii", RuntimeWarning, stacklevel=3)
        return True

    def evaluate(self, generation: int, candidates: Sequence[Atoms],
                 parents: Sequence[Sequence[str]] | None = None) -> list[Atoms]:
        """Relax one generation's candidates in one batch; record and archive them.

        For drivers that need whole generations (GA, PSO, annealing); drivers made of
        independent walkers use :meth:`walk`. Candidates beyond the remaining budget are
        dropped. Each candidate is first repaired (:func:`jcsp.search.repair.repair`):
        one that cannot be is discarded (returned failed with ``discarded``, stored, not
        relaxed, not counted against the budget). Every other candidate counts against
        the budget, a failed relaxation (an invalid candidate, a relaxation that broke
        down, a structure outside an ML potential's training domain) included: it is
        stored in the database with ``failed`` and its reason, and never enters the
        archive. Returns the relaxed structures in order, each with ``info`` ``uid``,
        ``driver``, ``generation``, ``parents``, ``failed``, ``enthalpy`` and, unless
        failed, ``entry`` (the archive entry, equal for duplicates).
        """
        self._use("evaluate")
        candidates = list(candidates)[: max(self.remaining, 0)]
        if not candidates:
            return []
        parents = [list(p) for p in (parents or [[] for _ in candidates])]
        uids = [dbm.make_uid(self.config.seed, self.driver, generation, i)
                for i in range(len(candidates))]
        if all(u in self.stored for u in uids):
            relaxed = [self.stored[u].copy() for u in uids]
            self._record(relaxed, write=False)
            return relaxed
        candidates = [self._materialized(atoms) for atoms in candidates]
        prepared = [self._prepare(atoms) for atoms in candidates]
        todo = [k for k, (atoms, _) in enumerate(prepared) if atoms is not None]
        done = self._relax([prepared[k][0] for k in todo]) if todo else []
        relaxed = [self._discarded(candidates[k], note) if atoms is None else None
                   for k, (atoms, note) in enumerate(prepared)]
        for k, atoms in zip(todo, done):
            relaxed[k] = atoms
        for atoms, uid, par in zip(relaxed, uids, parents):
            atoms.info.update(uid=uid, driver=self.driver, generation=int(generation),
                              parents=par)
        self._record(relaxed, write=True)
        return relaxed

    def walk(self, n_walkers: int, advance, *, atom_energies: bool = False) -> None:
        """Steady-state search for drivers made of independent walkers (host side).

        The relaxation is one stream (:func:`jcsp.relax.stream.relax_stream`) of
        :attr:`population` slots: whenever structures finish, they are recorded and
        handed to ``advance``, and the walkers' next candidates fill the freed slots at
        once, without waiting for the slowest structure of a batch.

        Args:
          n_walkers: number of walkers (usually :attr:`population`; more walkers than
            slots queue for them).
          advance: ``advance(done) -> list[tuple[Atoms, list[str]] | None]``. ``done``
            is a list of ``(walker index, its relaxed structure)`` as :meth:`evaluate`
            returns them (``info`` ``uid``, ``driver``, ``generation`` (the walker's
            step), ``parents``, ``failed``, ``enthalpy``, ``entry``), or ``(w, None)``
            on the first call for each walker, asking for its start. It returns, for
            each entry of ``done`` in order, the walker's next candidate and its
            parents' uids, or None (the walker retires). Randomness for walker ``w``'s
            next candidate comes from :meth:`walker_rng`.
          atom_energies: compute the per-atom energies of the finished structures in
            one batch before ``advance`` is called (so :meth:`atom_energies` inside it
            is a cache hit).

        Every candidate is repaired as in :meth:`evaluate` (a discarded one comes back
        at once, failed with ``discarded``, without using the budget); every finished
        structure is stored, archived and counted as there, under the uid
        ``make_uid(seed, driver, k, w)`` of walker ``w``'s ``k``-th candidate. The
        budget counts issued candidates: once it is spent no walker gets a new one and
        the structures still relaxing finish; when the target is reached the search
        stops at once (structures still relaxing are dropped, never recorded).

        Resume: a rerun with the same ``out`` reads back every stored structure instead
        of relaxing it (new candidates are limited to what the stored ones leave of the
        budget, so all of them are reached). Each walker's trajectory (its candidates,
        their uids and results) depends only on the seed, the walker and its own
        results, so it is the same after a resume, provided ``advance`` reads no state shared between walkers
        (the archive); the global completion order (``history``, ``found_at``) may then
        differ from an uninterrupted run, since read-back structures come back first.
        """
        self._use("walk")
        if isinstance(n_walkers, bool) or not isinstance(n_walkers, (int, np.integer)) \
                or n_walkers < 1:
            raise ValueError(f"n_walkers must be an integer >= 1, got {n_walkers!r}")
        self._walker_steps = [0] * int(n_walkers)
        queue: collections.deque = collections.deque()  # (meta, clean candidate)
        fed: list = []       # stream key -> (walker, uid, parents, generation)
        harvested: list = []  # (stream key, relaxed) not yet recorded
        pending: list = [(w, None) for w in range(int(n_walkers))]
        stopped = False
        # every stored structure of this run is read back when its walker gets there, so
        # new candidates get what those leave of the budget (the same total as before)
        n_stored = sum(not a.info.get("discarded") for a in self.stored.values())
        new = [0]

        def issue(done):
            """Ask ``advance`` for the next candidates; stored and discarded ones come
            back at once (returned), the others are queued for relaxation."""
            if atom_energies:
                ok = [a for _, a in done if a is not None and not a.info["failed"]]
                if ok:
                    self.atom_energies(ok)
            outs = advance(done)
            if not isinstance(outs, Sequence) or len(outs) != len(done):
                raise ValueError(f"advance must return one entry per walker it was given "
                                 f"({len(done)}), got {outs!r:.80}")
            back = []
            budget = self.config.budget
            for (w, _), out in zip(done, outs):
                if out is None:
                    continue  # the walker retires
                candidate, parents = out
                if not isinstance(candidate, Atoms):
                    raise ValueError(f"advance gave walker {w} a {type(candidate).__name__},"
                                     " not an ase.Atoms")
                k = self._walker_steps[w]
                uid = dbm.make_uid(self.config.seed, self.driver, k, w)
                meta = dict(uid=uid, driver=self.driver, generation=k,
                            parents=[str(p) for p in parents])
                stored = self.stored.get(uid)
                if stored is not None and stored.info.get("discarded"):
                    back.append((w, stored.copy(), False))
                elif stored is not None:  # read back (it counts, as when it was made)
                    if self._issued >= budget:
                        continue
                    self._issued += 1
                    back.append((w, stored.copy(), False))
                else:  # new work: what the stored structures leave of the budget
                    if self._issued >= budget or new[0] >= budget - n_stored:
                        continue
                    candidate = self._materialized(candidate)
                    fixed, note = self._prepare(candidate)
                    if fixed is None:
                        atoms = self._discarded(candidate, note)
                        atoms.info.update(meta)
                        back.append((w, atoms, True))
                    else:
                        self._issued += 1
                        new[0] += 1
                        queue.append(((w, meta), fixed))
                self._walker_steps[w] += 1
                self._walker_rngs.pop(w, None)
            return back

        def settle(items):
            """Record finished structures (one batch) and queue them for ``advance``."""
            if not items:
                return
            for write in (False, True):
                batch = [a for _, a, new in items if new == write]
                if batch:
                    self._record(batch, write=write)
            pending.extend((w, a) for w, a, _ in items)

        def feed(n_free):
            nonlocal stopped
            if harvested:
                items = []
                for key, atoms in harvested:
                    (w, meta) = fed[key]
                    atoms.info.update(meta)
                    items.append((w, atoms, True))
                harvested.clear()
                self._set_aside_extrapolated([a for _, a, _ in items])
                settle(items)
            while pending and self._issued < self.config.budget and \
                    not self._target_reached and not self._too_many_discarded:
                done = list(pending)
                pending.clear()
                settle(issue(done))
            if self._target_reached:
                stopped = True
                return None
            out = []
            while queue and len(out) < n_free:
                meta, atoms = queue.popleft()
                fed.append(meta)
                out.append(atoms)
            in_flight = len(fed) - n_finished[0]
            if out or in_flight:
                return out
            return None

        n_finished = [0]
        stats: dict = {}
        overlap = _overlap()
        stream = relax_stream(feed, self.potential, fmax=self.config.fmax,
                              pressure=self.config.pressure, max_steps=self.config.max_steps,
                              optimizer=self.config.optimizer,
                              batch_size=self.population, headroom=HEADROOM, stats=stats,
                              overlap=overlap)
        try:
            for key, atoms in stream:
                if stopped:
                    break  # the target was reached: drop what is still relaxing
                n_finished[0] += 1
                harvested.append((key, self._checked(atoms)))
        finally:
            stream.close()
        if harvested and not stopped:
            feed(0)
        if stats:
            self.n_batches += 1
            self.slot_fraction += stats["occupancy"]

    def walker_rng(self, walker: int) -> np.random.Generator:
        """The random stream of walker ``walker``'s next candidate in :meth:`walk`,
        seeded by (seed, walker, k) with k the candidates it has issued, so each
        walker's trajectory is reproducible whatever the completion order. Repeated
        calls before the candidate is issued return the same generator."""
        k = self._walker_steps[walker]
        cached = self._walker_rngs.get(walker)
        if cached is None or cached[0] != k:
            cached = (k, np.random.default_rng([self.config.seed, walker, k]))
            self._walker_rngs[walker] = cached
        return cached[1]

    def _use(self, mode: str) -> None:
        """A driver relaxes through either generations or walkers: their uids differ."""
        if self._mode not in (None, mode):
            raise RuntimeError(f"a driver cannot use both Session.evaluate and Session.walk "
                               f"(this one used {self._mode} first)")
        self._mode = mode

    def _prepare(self, candidate: Atoms) -> tuple[Atoms | None, str]:
        """The candidate as the relaxer gets it (only its labels, generator space
        group and origin kept in ``info``, clusters centred), repaired; None when it
        cannot be."""
        fixed, note = repair(candidate)
        if fixed is None:
            return None, note
        atoms = fixed.copy()
        atoms.info = {k: fixed.info[k] for k in ("labels", "generator_spacegroup", "repaired",
                                                 "origin") if k in fixed.info}
        if self.cluster:
            atoms.positions -= atoms.positions.mean(0)
        return atoms, note

    @staticmethod
    def _discarded(candidate: Atoms, note: str) -> Atoms:
        """The record of a candidate that could not be repaired (never relaxed)."""
        atoms = candidate.copy()
        nan = float("nan")
        atoms.info = {k: candidate.info[k] for k in ("labels", "generator_spacegroup",
                                                     "origin") if k in candidate.info}
        if not np.isfinite(atoms.positions).all():
            atoms.positions = np.zeros_like(atoms.positions)  # the database needs numbers
        atoms.info.update(failed=True, discarded=True, failure_reason=note,
                          error=f"candidate discarded before relaxation: {note}",
                          converged=False, steps=0, energy=nan, enthalpy=nan)
        return atoms

    def _record(self, structures: Sequence[Atoms], *, write: bool) -> None:
        """Store (``write``: one transaction), archive and count finished structures."""
        if write and self.db is not None:
            for a in structures:
                if a.info["uid"] in self.stored:
                    continue
                row = a.copy()  # info as it is now (drivers may add to theirs later)
                row.calc = a.calc  # the energy, forces and stress to store
                self._unwritten.append((row, dict(
                    uid=a.info["uid"], driver=self.driver, generation=a.info["generation"],
                    parents=a.info["parents"], pressure=self.config.pressure)))
            self.flush(force=False)
        good = [a for a in structures if not a.info["failed"]]
        if good:
            for atoms, added in zip(good, self.archive.add(good)):
                atoms.info["entry"] = added.entry  # archive entry: duplicates share it
        counted = 0
        for atoms in structures:
            if atoms.info.get("discarded"):
                self.n_discarded += 1
                continue
            counted += 1
            self.n_relaxations += 1
            self.n_failed += bool(atoms.info["failed"])
            if atoms.info["failed"]:
                self.failed.append(atoms)
            self.n_generated += atoms.info.get("origin") == seeding.ORIGIN
            self.n_extrapolated += "extrapolation_grade" in atoms.info and \
                atoms.info["extrapolation_grade"] > (self.config.max_grade or math.inf)
            self._best = min(self._best, self.fitness(atoms))
            self.history.append(self._best)
        self._bar.update(counted)
        self._bar.set_postfix(best=f"{self._best:.5f} eV/atom")

    def _checked(self, atoms: Atoms) -> Atoms:
        """A relaxed structure with a non-finite enthalpy marked failed."""
        if not math.isfinite(atoms.info["enthalpy"]):
            atoms.info["failed"] = True
            atoms.info.setdefault("failure_reason", "non-finite enthalpy")
        return atoms

    def _relax(self, candidates: Sequence[Atoms]) -> list[Atoms]:
        """One batched relaxation of prepared candidates, failures flagged."""
        relaxed = relax(list(candidates), self.potential, fmax=self.config.fmax,
                        pressure=self.config.pressure, max_steps=self.config.max_steps,
                        optimizer=self.config.optimizer,
                        batch_size=self.population, headroom=HEADROOM)
        self.n_batches += 1
        self.slots_used += len(candidates)
        self.slot_fraction += len(candidates) / self.population
        relaxed = [self._checked(atoms) for atoms in relaxed]
        self._set_aside_extrapolated(relaxed)
        return relaxed

    def _set_aside_extrapolated(self, relaxed: Sequence[Atoms]) -> None:
        """Grade relaxed structures against an ML potential's training domain
        (:mod:`jcsp.ml.domain`); those beyond ``max_grade`` count as failed, so a hole
        of the fitted energy surface cannot win the search."""
        ok = [a for a in relaxed if not a.info["failed"]]
        if self._grader is None or not ok:
            return
        limit = self.config.max_grade
        for atoms, grade in zip(ok, self._grader(ok)):
            atoms.info["extrapolation_grade"] = float(grade)
            if grade > limit:
                atoms.info["failed"] = True
                atoms.info["failure_reason"] = (
                    f"outside the potential's training data (extrapolation grade "
                    f"{grade:.1f} > max_grade {limit:g}); its energy is not to be trusted")

    def special_move(self, parent: Atoms, rng: np.random.Generator) -> Atoms | None:
        """With the probabilities of the search's ``moves`` setting, one of those moves
        applied to ``parent`` (a relaxed structure); None means "make the driver's own
        move". Draws no random number when ``moves`` is empty, so searches without it
        are unchanged."""
        name = moves_table.draw(self.config.moves, rng)
        if name is None:
            return None
        return moves_table.apply(self, name, parent, rng)

    def atom_energies(self, structures: Sequence[Atoms]) -> list[np.ndarray]:
        """[N] per-atom energies (eV) of each relaxed structure under the search's
        potential, for moves that rebuild the worst-bound atoms. Those not seen before
        are evaluated together, in batches of :attr:`population` through the derivative
        engine; results are kept by uid."""
        todo = {}
        for atoms in structures:
            uid = atoms.info["uid"]
            if uid not in self._energies_by_uid:
                todo.setdefault(uid, atoms)
        if todo:
            computed = self._atom_energies(list(todo.values()))
            self._energies_by_uid.update(zip(todo, computed))
        return [self._energies_by_uid[a.info["uid"]] for a in structures]

    @staticmethod
    def fitness(atoms: Atoms) -> float:
        """Enthalpy per atom (eV/atom); +inf for failed relaxations."""
        h = atoms.info.get("enthalpy", math.nan)
        if atoms.info.get("failed") or not math.isfinite(h):
            return math.inf
        return float(h) / len(atoms)

    @classmethod
    def energy_scale(cls, structures: Sequence[Atoms]) -> float:
        """|lowest enthalpy per atom| of relaxed structures, eV, at least 1e-3 (1 when
        none succeeded): the unit of the drivers' temperatures."""
        h = [cls.fitness(a) for a in structures]
        h = [x for x in h if math.isfinite(x)]
        return max(abs(min(h)), 1e-3) if h else 1.0

    def flush(self, force: bool = True) -> None:
        """Commit the structures not yet in the database (one transaction); without
        ``force`` only when :data:`FLUSH_SECONDS` have passed since the last commit."""
        if not self._unwritten or (not force and
                                   time.monotonic() - self._last_flush < FLUSH_SECONDS):
            return
        dbm.write_structures(self.db, self._unwritten)
        self._unwritten = []
        self._last_flush = time.monotonic()

    def close(self):
        """Write what is still unwritten and close the progress bar."""
        try:
            if self.db is not None:
                self.flush()
        finally:
            self._bar.close()


def search(composition: str | SearchConfig, potential: Potential, *,
           out: str | Path | None = None, n_best: int = 10, progress: bool = False,
           **settings) -> SearchResult:
    """Search for the lowest-enthalpy structures of a composition.

    Args:
      composition: e.g. ``"Si8"``, ``"Na4Cl4"``, ``"LJ38"``, or a whole
        :class:`~jcsp.search.config.SearchConfig` (``settings`` then change its fields).
      potential: a :class:`jcsp.potentials.Potential` covering every species.
      out: folder for ``structures.db`` (every relaxed structure, failed ones included:
        the resume record), ``best/`` (CIF and POSCAR, or xyz for clusters),
        ``ranking.txt``/``.csv`` and plots. Rerunning the same call resumes the run; a
        larger budget extends it.
      n_best: number of best structures written to ``out``.
      progress: show a progress bar over relaxations.
      **settings: the fields of :class:`~jcsp.search.config.SearchConfig`:
        ``algorithm`` (default ``"random"``), ``budget`` (100 relaxations), ``pressure``
        (GPa), ``seed``, ``formula_units``, ``cluster``, ``groups``,
        ``cluster_symmetry``, ``volume``, ``population``, ``fmax``, ``max_steps``,
        ``target``, ``max_grade``, ``options`` (the driver's settings), ``moves``, and
        ``generator`` with ``generator_share`` (fresh candidates from a generative
        model, :mod:`jcsp.search.seeding`).

    Returns:
      A :class:`SearchResult`.

    Raises:
      ValueError: an unknown setting, algorithm or option, a bad value (budget < 1,
        ...), a generator with a cluster search, a composition that no Wyckoff
        combination of the groups can hold, a
        potential missing a species, or (:class:`~jcsp.search.database.ResumeError`) an
        ``out`` holding another run; all raised before any relaxation.

    Example:
      >>> lj = jcsp.potentials.LennardJones(1.0, 1.0, None)
      >>> res = jcsp.search("LJ13", lj, algorithm="basin", budget=200, cluster=True)
      >>> res.best.info["energy"], res.n_relaxations
    """
    config = SearchConfig.from_keywords(composition, **settings)
    config.check_potential(potential)
    if isinstance(n_best, bool) or not isinstance(n_best, int) or n_best < 0:
        raise ValueError(f"n_best must be an integer >= 0, got {n_best!r}")
    db = None
    if out is not None:
        out = Path(out)
        db = sharding.run_on_writer(lambda: dbm.open_run(  # process 0 alone writes
            out / "structures.db", config.record(potential), allow_changes=RESUMABLE_CHANGES))
    _, run_driver = DRIVERS[config.algorithm]
    session = Session(config, potential, db=db, progress=progress and sharding.is_writer())
    try:
        run_driver(session, config.driver_config)
    finally:
        session.close()
    archive = session.archive
    result = SearchResult(best=archive.best, structures=archive.structures,
                          n_relaxations=session.n_relaxations,
                          history=np.array(session.history), archive=archive, config=config,
                          out=out, n_batches=session.n_batches,
                          occupancy=(session.slot_fraction / session.n_batches
                                     if session.n_batches else math.nan),
                          n_failed=session.n_failed, failed=session.failed,
                          n_extrapolated=session.n_extrapolated,
                          n_discarded=session.n_discarded,
                          n_generated=session.n_generated,
                          n_generator_failures=(session._proposals.n_failures
                                                if session._proposals else 0))
    if out is not None and sharding.is_writer():
        write_outputs(result, n_best=n_best)
    return result


__all__ = ["search", "SearchConfig", "SearchResult", "Session", "ALGORITHMS", "ranking_table",
           "write_outputs"]

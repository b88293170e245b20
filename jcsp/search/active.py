"""Active learning inside the search: the reference method's ground state from few calls.

The user has an expensive reference method (DFT, xTB, any ASE calculator: the *oracle*,
:mod:`jcsp.oracle`) and no potential for the system. The loop (host side):

1. **Seed**: oracle single points on random symmetric crystals of the composition and on
   rattled and strained copies of them.
2. **Train** a committee of :mod:`jcsp.ml` models on every label so far (the members
   vmapped in one step; each round warm-starts from the last and is time-boxed).
3. **Search** with the committee mean as the potential, through the ordinary search
   (:func:`jcsp.search.run.search`, any driver, batched relaxations). In the default
   ``"uncertainty"`` mode the committee is a :class:`jcsp.ml.GuardedCommittee`: a
   relaxation whose committee spread crosses ``max_spread`` (eV/atom) fails at that
   point and keeps the geometry where it happened.
4. **Select** for the oracle: stopped relaxations (uncertainty; lowest predicted
   energy first) and the lowest-enthalpy relaxed minima not labelled yet
   (exploitation), distinct by fingerprint; **label** them (concurrently where the
   oracle allows); go to 2.
5. **Confirm**: the best labelled minima are relaxed by the oracle itself
   (:func:`jcsp.oracle.oracle_relax`, a few steps from a good geometry), so the answer
   is the oracle's minimum, not the model's.

The loop ends when ``oracle_budget`` is spent (keeping a reserve for step 5), when the
search budget (``budget`` committee relaxations) is spent, or when the best oracle
enthalpy has not improved for ``patience`` rounds. The literature's three modes are
options of this one loop (``mode``): ``"uncertainty"`` (above; GOFEE, EDDP-style
iterative learning with uncertainty-stopped relaxations), ``"iterative"`` (no stops:
each round labels the minima the committee found, as in MAGUS and USPEX with MTP) and
``"direct"`` (a given potential searches, no training; the oracle only confirms).

Everything expensive is kept in ``out``: every oracle call in ``oracle.db`` the moment it
returns (:class:`jcsp.oracle.LabelStore`; a call is never made twice, a failed one is
never retried), each round's committee in ``rounds/NN/model`` and its search in
``rounds/NN/search``, the per-round record in ``active.json``/``active.csv`` (plotted
in ``active.png``). Rerunning the same call after a kill resumes: trained rounds are
loaded, searches resume from their databases and every oracle result is read back.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm.auto import tqdm

from ..ml import Committee, EquivariantPotential, GuardedCommittee, ModelConfig, TrainConfig
from ..ml import checkpoint as ml_checkpoint
from ..ml.evaluate import metrics, predict_structures
from ..ml.training import train
from ..oracle import LabelStore, make_oracle, oracle_relax
from ..potentials.base import Potential
from ..relax.kernel import REASONS
from ..settings import Settings, setting
from ..units import gpa_to_ev_per_a3
from . import database as dbm
from . import generate
from .archive import Archive
from .config import SearchConfig
from .outputs import SearchResult, write_outputs
from .repair import repair
from .active_files import plot_rounds as _plot_rounds, publish as _publish
from .run import search as plain_search

#: The network of the committees the loop trains: a small, fast ACE-like model
#: (one interaction layer, invariant features), enough for the few hundred labels of a
#: search and quick to retrain every round on a laptop's CPU.
DEFAULT_MODEL = ModelConfig(cutoff=5.0, channels=16, l_max=2, n_layers=1, correlation=2,
                            n_radial=6, radial_hidden=16, readout_hidden=16)


@dataclasses.dataclass(frozen=True)
class ActiveConfig(Settings):
    """The settings of the active-learning loop (``jcsp.search(..., active={...})``).

    Attributes:
      mode: ``"uncertainty"`` (default), ``"iterative"`` or ``"direct"`` (module
        docstring).
      n_seed: random symmetric crystals labelled before the first round.
      seed_copies: rattled and strained copies labelled per seed crystal.
      rattle: Å, standard deviation of the copies' displacements.
      strain: largest strain component of the copies.
      committee: members of the committee.
      train_time: s, training budget of one round (the first round gets twice this).
      epochs: epochs of one round's training (upper bound; ``train_time`` decides).
      relaxations: committee relaxations per round (default: four search generations,
        64 on a CPU).
      n_uncertain: labels per round from uncertainty-stopped relaxations.
      n_exploit: labels per round from the lowest-enthalpy relaxed minima.
      max_spread: eV/atom, committee spread that stops a relaxation (default:
        ``spread_factor`` times the committee's validation energy error, at least
        ``min_spread``).
      spread_factor, min_spread: the default ``max_spread``.
      n_final: distinct best minima relaxed by the oracle at the end.
      final_steps: oracle force calls allowed per final relaxation.
      reserve: oracle calls kept for the final relaxations (default
        ``n_final * 20``, at most a quarter of the budget).
      patience: rounds without a better oracle enthalpy (by 1 meV/atom) before the
        loop ends.
      min_rounds, max_rounds: bounds on the number of rounds.
      energy_window: eV/atom; labels higher than this above the lowest label are not
        trained on (random and broken geometries far above any minimum would spend the
        model's capacity where searches never go).
      max_label_force: eV/Å; labels with a larger force are not trained on either.
      workers: oracle processes (spec oracles only; a calculator object is called in
        this process).
      model: the committee's network, a :class:`jcsp.ml.ModelConfig` or a dict of its
        fields (default :data:`DEFAULT_MODEL`).
    """

    mode: str = setting("uncertainty", kind=str, choices=("uncertainty", "iterative", "direct"))
    n_seed: int = setting(10, kind=int, ge=1)
    seed_copies: int = setting(1, kind=int, ge=0)
    rattle: float = setting(0.05, ge=0)
    strain: float = setting(0.04, ge=0, lt=0.5)
    committee: int = setting(4, kind=int, ge=2)
    train_time: float = setting(30.0, gt=0)
    epochs: int = setting(300, kind=int, ge=1)
    relaxations: int | None = setting(None, kind=int, optional=True, ge=1)
    n_uncertain: int = setting(5, kind=int, ge=0)
    n_exploit: int = setting(4, kind=int, ge=0)
    max_spread: float | None = setting(None, optional=True, gt=0)
    spread_factor: float = setting(3.0, gt=0)
    min_spread: float = setting(0.01, gt=0)
    n_final: int = setting(3, kind=int, ge=1)
    final_steps: int = setting(60, kind=int, ge=1)
    reserve: int | None = setting(None, kind=int, optional=True, ge=0)
    patience: int = setting(3, kind=int, ge=1)
    min_rounds: int = setting(2, kind=int, ge=1)
    max_rounds: int = setting(30, kind=int, ge="min_rounds")
    energy_window: float = setting(3.0, gt=0)
    max_label_force: float = setting(30.0, gt=0)
    workers: int = setting(1, kind=int, ge=1)
    model: Any = None

    def __post_init__(self):
        super().__post_init__()
        model = self.model
        if model is None:
            model = DEFAULT_MODEL
        elif isinstance(model, dict):
            try:
                model = ModelConfig(**model)
            except TypeError as err:
                raise ValueError(f"ActiveConfig.model: {err}") from None
        if not isinstance(model, ModelConfig):
            raise ValueError(f"ActiveConfig.model must be a jcsp.ml.ModelConfig or a dict of "
                             f"its fields, got {type(model).__name__}")
        object.__setattr__(self, "model", model)

    @classmethod
    def of(cls, options) -> "ActiveConfig":
        """From None, a mapping of fields (an unknown key fails) or an ActiveConfig."""
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown active-learning setting(s) {unknown}; known: "
                             f"{', '.join(sorted(known))}")
        return cls(**dict(options))

    def record(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = dataclasses.asdict(self.model)
        return out


@dataclasses.dataclass
class ActiveResult(SearchResult):
    """What an active-learning search returns: a :class:`SearchResult` whose ``best`` and
    ``structures`` were relaxed by the oracle (``info``: ``oracle_energy`` and
    ``enthalpy`` in eV from the oracle, ``spacegroup``, ``max_force``, ``converged``),
    plus:

    Attributes:
      n_oracle_calls: oracle single points of the run (read-back ones included).
      n_oracle_failures: calls that failed (raised, or returned non-finite numbers).
      potential: the final committee (a :class:`jcsp.ml.Committee`, usable as any jcsp
        potential), or the given potential in ``"direct"`` mode.
      model_dir: folder of that committee (``jcsp search -p MODEL_DIR``), or None.
      rounds: the per-round record (one dict per round).
      oracle_seconds, train_seconds, wall_seconds: time in the oracle (this process's
        calls), in training, and in all.
    """

    n_oracle_calls: int = 0
    n_oracle_failures: int = 0
    potential: Potential | None = None
    model_dir: Path | None = None
    rounds: list = dataclasses.field(default_factory=list)
    oracle_seconds: float = 0.0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0


def _copies(structures: list[Atoms], n: int, rattle: float, strain: float,
            rng: np.random.Generator) -> list[Atoms]:
    """``n`` rattled and strained copies of each structure."""
    out = []
    for atoms in structures:
        for _ in range(n):
            copy = atoms.copy()
            eps = rng.uniform(-strain, strain, (3, 3))
            copy.set_cell(copy.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
            copy.positions += rng.normal(0.0, rattle, copy.positions.shape)
            out.append(copy)
    return out


def _with_zero_labels(structures: list[Atoms]) -> list[Atoms]:
    """Copies carrying zero energy/forces/stress, so unlabelled geometries can go
    through :func:`jcsp.ml.evaluate.predict_structures` (only its predictions are used)."""
    out = []
    for atoms in structures:
        copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.calc = SinglePointCalculator(copy, energy=0.0, forces=np.zeros((len(copy), 3)),
                                          stress=np.zeros(6))
        out.append(copy)
    return out


def _spread_of(potential, structures: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Committee mean energy per atom and energy spread per atom (eV/atom) of geometries."""
    if not structures:
        return np.zeros(0), np.zeros(0)
    pred = predict_structures(potential, _with_zero_labels(structures))
    n = np.array([len(a) for a in structures], float)
    return pred.energy / n, pred.energy_std / n


class _Loop:
    """One active-learning run (host side): see the module docstring."""

    def __init__(self, config: SearchConfig, options: ActiveConfig, oracle, *, budget: int,
                 potential: Potential | None, out: Path | None, progress: bool):
        self.config, self.options, self.budget = config, options, budget
        self.out, self.start_potential = out, potential
        self.oracle = oracle
        self.store = LabelStore(None if out is None else out / "oracle.db")
        self.rounds: list[dict] = []
        self.train_seconds = 0.0
        self.n_relaxations = 0
        self.potential = None
        self.model_dir: Path | None = None
        self.pressure = config.pressure * gpa_to_ev_per_a3(1.0)  # eV/Å^3
        self.minima = Archive()  # labelled relaxed minima (oracle enthalpies)
        # Everything chosen for the oracle so far, compared by fingerprint and volume only.
        self.chosen_minima = Archive(e_tol=1e6)
        self.chosen_uncertain = Archive(e_tol=1e6)
        self.history: list[float] = []
        reserve = options.reserve
        if reserve is None:
            reserve = min(options.n_final * 20, budget // 4)
        self.reserve = min(reserve, budget)
        self._bar = tqdm(total=budget, desc=f"active search ({options.mode})", unit="oracle call",
                         file=sys.stderr, disable=not progress, dynamic_ncols=True)

    # --- oracle --------------------------------------------------------------------------
    @property
    def calls(self) -> int:
        return self.store.n_calls

    def label(self, structures: list[Atoms], **meta) -> list:
        room = self.budget - self.calls
        structures = list(structures)[: max(room, 0)]
        if not structures:
            return []
        before = self.calls
        labels = self.store.label(self.oracle, structures, **meta)
        self._bar.update(self.calls - before)
        return labels

    # --- stages --------------------------------------------------------------------------
    def seed_data(self) -> None:
        opts = self.options
        rng = np.random.default_rng([self.config.seed, 7919])
        crystals = generate.random_crystals(
            self.config.counts, opts.n_seed, seed=rng, groups=self.config.space_groups,
            volume=self.config.volume)
        copies = _copies(crystals, opts.seed_copies, opts.rattle, opts.strain, rng)
        self.label(crystals + copies, round=0, kind="seed")

    def train_round(self, r: int, warm: Committee | None) -> Any:
        """Train (or load) round ``r``'s committee, from ``warm``'s weights if given;
        returns the trained checkpoint (:class:`jcsp.ml.checkpoint.Trained`)."""
        opts = self.options
        folder = None if self.out is None else self.out / "rounds" / f"{r:02d}" / "model"
        if folder is not None and (folder / "model.json").exists():
            try:
                return ml_checkpoint.load(str(folder))
            except ml_checkpoint.CheckpointError:
                pass  # an incomplete save: train again (resumes from its state)
        data = self.training_data()
        if len(data) < 4:
            raise RuntimeError(f"only {len(data)} structures could be labelled by the oracle "
                               f"({self.store.n_failed} failed); check the oracle on a "
                               "single structure of this composition")
        budget = opts.train_time * (2.0 if r == 1 else 1.0)
        members = opts.committee if warm is None else warm.committee_size
        cfg = TrainConfig(epochs=opts.epochs, max_time=budget, committee=members,
                          seed=self.config.seed + r, dtype="float64", lr=1e-2,
                          atoms_per_batch=32, valid_fraction=0.1, free_atoms="fit",
                          clock_after_compile=True)
        target = str(folder) if folder is not None else _scratch(self.config.seed, r)
        t0 = time.perf_counter()
        model = opts.model if warm is None else warm.config
        trained = train(data, None, model, cfg, target, progress=False, log=lambda _: None,
                        warm_start=None if warm is None else warm.params["net"])
        self.train_seconds += time.perf_counter() - t0
        return trained

    def training_data(self) -> list[Atoms]:
        """The labels a committee trains on: within ``energy_window`` of the lowest
        energy per atom, forces below ``max_label_force``."""
        data = self.store.labelled()
        if not data:
            return []
        energy = np.array([a.get_potential_energy() / len(a) for a in data])
        force = np.array([np.abs(a.get_forces()).max() if len(a) else 0.0 for a in data])
        keep = (energy <= energy.min() + self.options.energy_window) & \
            (force <= self.options.max_label_force)
        return [a for a, k in zip(data, keep) if k]

    def max_spread(self, trained) -> float:
        opts = self.options
        if opts.max_spread is not None:
            return opts.max_spread
        rows = trained.history
        error = rows[-1]["valid_energy_mae"] if rows else opts.min_spread
        return max(opts.min_spread, opts.spread_factor * float(error))

    def search_round(self, r: int, potential: Potential, budget: int | None = None) -> list[Atoms]:
        """Round ``r``'s search; every relaxed structure, failed ones included."""
        per_round = budget or self.options.relaxations or 4 * self.config.generation_size
        per_round = min(per_round, self.config.budget - self.n_relaxations)
        if per_round <= 0:
            return []
        config = self.config.replace(budget=per_round, seed=self.config.seed * 1000 + r,
                                     max_grade=None, target=None)
        folder = None if self.out is None else self.out / "rounds" / f"{r:02d}" / "search"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = plain_search(config, potential, out=folder, n_best=0)
        self.n_relaxations += result.n_relaxations
        return list(result.structures) + list(result.failed)

    def select(self, relaxed: list[Atoms], potential) -> tuple[list, list]:
        """(uncertain, exploit) structures of a round's search for the oracle."""
        opts = self.options
        # Exploitation: the lowest-enthalpy relaxed minima, distinct from each other and
        # from every minimum chosen before (fingerprint and volume; the committee's
        # energies change from round to round, so they do not decide).
        minima = sorted((a for a in relaxed if not a.info.get("failed")),
                        key=lambda a: a.info["enthalpy"] / len(a))
        exploit = []
        for atoms in minima:
            if len(exploit) >= opts.n_exploit:
                break
            if self.chosen_minima.add([atoms.copy()])[0].status == "new":
                exploit.append(atoms)
        # Uncertainty: relaxations stopped where the committee disagreed (its energy
        # turned NaN there), without atoms closer than the search's repair threshold,
        # lowest predicted energy first, distinct geometries.
        stopped = [a for a in relaxed if a.info.get("failed")
                   and a.info.get("failure_reason") == REASONS[1]
                   and np.all(np.isfinite(a.positions)) and repair(a)[1] == ""]
        uncertain = []
        if stopped and opts.mode == "uncertainty" and opts.n_uncertain:
            energy, spread = _spread_of(_plain_committee(potential), stopped)
            for k in np.argsort(np.where(np.isfinite(energy), energy, np.inf)):
                if len(uncertain) >= opts.n_uncertain or not np.isfinite(energy[k]):
                    break
                atoms = Atoms(stopped[k].numbers, stopped[k].positions, cell=stopped[k].cell,
                              pbc=stopped[k].pbc)
                atoms.info = {"energy": float(energy[k]) * len(atoms), "spread": float(spread[k])}
                if self.chosen_uncertain.add([atoms.copy()])[0].status == "new":
                    uncertain.append(atoms)
        return uncertain, exploit

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        """Seed, then rounds of train -> search -> select -> label (module docstring)."""
        opts = self.options
        if opts.mode == "direct":
            self.direct()
            return
        self.seed_data()
        warm = _as_committee(self.start_potential, self.options.committee, self.config.seed)
        guarded, stale, best, widen = None, 0, math.inf, 1.0
        for r in range(1, opts.max_rounds + 1):
            if self.calls >= self.budget - self.reserve or self.n_relaxations >= self.config.budget:
                break
            trained = self.train_round(r, warm)
            threshold = (widen * self.max_spread(trained) if opts.mode == "uncertainty"
                         else math.inf)
            params = dict(trained.potential.params)
            params["max_spread"] = jnp.asarray(threshold, jnp.float64)
            if guarded is None:
                guarded = GuardedCommittee(trained.potential.config, params)
            else:  # the same static configuration: the compiled relaxation is reused
                guarded.params = params
            self.potential = warm = trained.potential
            if self.out is not None:
                self.model_dir = self.out / "rounds" / f"{r:02d}" / "model"
            calls_before = self.calls
            relaxed = self.search_round(r, guarded)
            uncertain, exploit = self.select(relaxed, guarded)
            room = max(self.budget - self.reserve - self.calls, 0)
            exploit = exploit[:room]
            uncertain = uncertain[:room - len(exploit)]
            self._add_minima(exploit, self.label(exploit, round=r, kind="minimum"))
            self.label(uncertain, round=r, kind="uncertain")
            row = self._record_round(r, trained, threshold, relaxed, calls_before,
                                     len(uncertain), len(exploit))
            if row["best_oracle_enthalpy_per_atom"] < best - 1e-3:
                best, stale = row["best_oracle_enthalpy_per_atom"], 0
            elif math.isfinite(best):  # patience counts from the first labelled minimum
                stale += 1
            if not uncertain and not exploit:
                stale = opts.patience  # the committee finds nothing new: stop learning
            # A round whose relaxations all stopped found no minimum: the committee is
            # unsure everywhere the search goes, so the next round lets relaxations go
            # twice as far in spread (until a round finds minima again).
            finished = sum(not a.info.get("failed") for a in relaxed)
            widen = 1.0 if finished else 2.0 * widen
            if r >= opts.min_rounds and stale >= opts.patience:
                break

    def direct(self) -> None:
        """``mode="direct"``: the given potential searches; its best distinct minima are
        labelled (then confirmed by :meth:`confirm`)."""
        relaxed = self.search_round(1, self.start_potential, budget=self.config.budget)
        self.potential = self.start_potential
        minima = sorted((a for a in relaxed if not a.info.get("failed")),
                        key=lambda a: a.info["enthalpy"] / len(a))
        chosen = []
        for atoms in minima:
            if len(chosen) >= self.options.n_final:
                break
            if self.chosen_minima.add([atoms.copy()])[0].status == "new":
                chosen.append(atoms)
        self._add_minima(chosen, self.label(chosen, round=1, kind="minimum"))

    def _add_minima(self, structures, labels) -> None:
        for atoms, lab in zip(structures, labels):
            if lab is None or lab.error is not None:
                continue
            copy = atoms.copy()
            volume = copy.get_volume()
            copy.info = {"energy": lab.energy, "enthalpy": lab.energy + self.pressure * volume,
                         "volume": volume, "oracle_energy": lab.energy,
                         "max_force": float(np.linalg.norm(lab.forces, axis=1).max())}
            copy.calc = SinglePointCalculator(copy, energy=lab.energy, forces=lab.forces,
                                              stress=lab.stress)
            self.minima.add([copy])

    def _record_round(self, r, trained, threshold, relaxed, calls_before, n_u, n_x) -> dict:
        rows = trained.history
        last = rows[-1] if rows else {}
        row = {"round": r, "oracle_calls": self.calls, "new_labels": self.calls - calls_before,
               "uncertain_labels": n_u, "minimum_labels": n_x,
               "labelled": len(self.store.labelled()), "relaxations": self.n_relaxations,
               "stopped": sum(bool(a.info.get("failed")) for a in relaxed),
               "max_spread": threshold, "train_epochs": len(rows),
               "train_seconds": self.train_seconds,
               "valid_energy_mae": last.get("valid_energy_mae", math.nan),
               "valid_forces_mae": last.get("valid_forces_mae", math.nan)}
        # Calibration: this round's committee against the labels it asked for, which it
        # has not been trained on.
        new = [a for a in self.store.labelled() if a.info.get("round") == r]
        if len(new) >= 3:
            m = metrics(predict_structures(trained.potential, new))
            row.update({f"new_{k}": v for k, v in m.items() if isinstance(v, float)})
        best = self.minima.best
        row["best_oracle_enthalpy_per_atom"] = (best.info["enthalpy"] / len(best)
                                                if best is not None else math.inf)
        self.rounds.append(row)
        self._write_rounds()
        return row

    def confirm(self) -> list[Atoms]:
        """The best labelled minima relaxed by the oracle; distinct, ascending enthalpy."""
        opts = self.options
        done = []
        starts = self.minima.structures[: opts.n_final]
        if not starts:  # no committee minimum was labelled: start from the lowest labels
            starts = sorted(self.store.labelled(), key=lambda a: a.get_potential_energy()
                            / len(a))[: opts.n_final]
        for k, atoms in enumerate(starts):
            room = self.budget - self.calls
            if room < 2:  # a relaxation's first single point is one call beyond its steps
                break
            start = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            before = self.calls
            relaxed = oracle_relax(start, self.oracle, self.store, fmax=self.config.fmax,
                                   pressure=self.config.pressure,
                                   max_steps=min(opts.final_steps, room - 1), round=-1,
                                   kind="final")
            self._bar.update(self.calls - before)
            if relaxed.info.get("failed"):
                continue
            relaxed.info.update(energy=relaxed.info["oracle_energy"], uid=f"final-{k}")
            done.append(relaxed)
        final = Archive()
        final.add(done)
        return final.structures

    def _write_rounds(self) -> None:
        if self.out is None or not self.rounds:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "active.json").write_text(json.dumps(self.rounds, indent=1, default=float))
        with open(self.out / "active.csv", "w", newline="") as handle:
            keys = list(dict.fromkeys(k for row in self.rounds for k in row))
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rounds)

    def close(self) -> None:
        self._bar.close()


def _as_committee(potential, members: int, seed: int) -> Committee | None:
    """A trained model to start the first round from, as a committee (None: none)."""
    if potential is None or isinstance(potential, Committee):
        return potential
    net = potential.params["net"]
    keys = jax.random.split(jax.random.PRNGKey(seed), members)

    def perturbed(key):  # members must differ, or their spread is zero
        leaves, tree = jax.tree.flatten(net)
        noise = jax.random.split(key, len(leaves))
        return jax.tree.unflatten(tree, [x * (1 + 0.05 * jax.random.normal(k, x.shape, x.dtype))
                                         for x, k in zip(leaves, noise)])

    stacked = jax.tree.map(lambda *x: jnp.stack(x), *[perturbed(k) for k in keys])
    return Committee(potential.config, {**potential.params, "net": stacked})


def _plain_committee(potential):
    """The committee behind a guarded one (no NaN above the spread threshold)."""
    if isinstance(potential, GuardedCommittee):
        params = {k: v for k, v in potential.params.items() if k != "max_spread"}
        return Committee(potential.config, params)
    return potential


def _scratch(seed: int, r: int) -> str:
    import tempfile
    return tempfile.mkdtemp(prefix=f"jcsp-active-{seed}-{r}-")


#: Settings an active run may change when it is resumed (more budget extends it).
RESUMABLE = ("budget", "target", "oracle_budget", "max_rounds", "patience", "workers")


def _check_resume(out: Path, record: dict) -> None:
    """Write the run's settings in ``out/active_run.json``, or check them against the
    settings of the run already there (a different run raises ResumeError)."""
    path = out / "active_run.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(record)
                         if k not in RESUMABLE and old.get(k) != record.get(k))
        if changed:
            raise dbm.ResumeError(
                f"{out} holds an active-learning run with other settings ({', '.join(changed)}"
                f"); use another folder, or the same settings to resume it")
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def search_active(config: SearchConfig, *, oracle, oracle_budget: int,
                  potential: Potential | None = None, active=None, out=None,
                  n_best: int = 10, progress: bool = False) -> ActiveResult:
    """Find the oracle's lowest-enthalpy structures of a composition by active learning.

    The loop of the module docstring; :func:`jcsp.search` calls it when given
    ``oracle=``.

    Args:
      config: the search's settings (``budget`` counts committee relaxations over all
        rounds; ``fmax`` is also the oracle's final force criterion).
      oracle: an ASE calculator or an oracle spec (:func:`jcsp.oracle.make_oracle`).
      oracle_budget: the most oracle single points the run may make, final
        relaxations included.
      potential: in ``"direct"`` mode the potential that searches (required); in the
        learning modes, optionally a trained :mod:`jcsp.ml` model to start from (a
        committee, whose size and network are then used; or one model, whose weights
        start every member, each slightly perturbed).
      active: :class:`ActiveConfig` or a dict of its fields.
      out: folder for the oracle database, the rounds' models and searches, the
        records and the outputs of any search; rerunning resumes.
      n_best: structures written to ``out/best``.
      progress: a progress bar over oracle calls.

    Raises:
      ValueError: a cluster search, a composition that is not made of elements, a
        budget too small for the seed data, ``"direct"`` mode without a potential.
    """
    options = ActiveConfig.of(active)
    if isinstance(oracle_budget, bool) or not isinstance(oracle_budget, int) or oracle_budget < 1:
        raise ValueError(f"oracle_budget must be an integer >= 1, got {oracle_budget!r}")
    if config.cluster:
        raise ValueError("active learning searches crystals; drop cluster=True")
    labels = [s for s in config.counts if generate.species_number(s) == 0]
    if labels:
        raise ValueError(f"active learning needs chemical elements; {labels[0]!r} in "
                         f"{config.composition!r} is not one")
    if options.mode == "direct":
        if potential is None:
            raise ValueError('mode "direct" searches with a given potential: pass potential=')
        config.check_potential(potential)
    else:
        seed_calls = options.n_seed * (1 + options.seed_copies)
        if oracle_budget <= seed_calls:
            raise ValueError(f"oracle_budget {oracle_budget} leaves nothing after the "
                             f"{seed_calls} seed labels (n_seed x (1 + seed_copies)); "
                             "raise it or lower n_seed")
        if potential is not None and not isinstance(potential, (Committee, EquivariantPotential)):
            raise ValueError(f"mode {options.mode!r} trains a jcsp.ml committee and can start "
                             f"from a trained one, not from {type(potential).__name__}; to "
                             'search with this potential and confirm with the oracle, pass '
                             'active={"mode": "direct"}')
    out = None if out is None else Path(out)
    t0 = time.perf_counter()
    owned = not hasattr(oracle, "compute")
    oracle = make_oracle(oracle, workers=options.workers) if owned else oracle
    if out is not None:
        record = {**{k: v for k, v in config.record(potential or _NoPotential()).items()
                     if k != "potential"},
                  "active": options.record(), "oracle": oracle.describe(),
                  "oracle_budget": oracle_budget}
        _check_resume(out, json.loads(json.dumps(record, default=str)))
    loop = _Loop(config, options, oracle, budget=oracle_budget, potential=potential, out=out,
                 progress=progress)
    try:
        loop.run()
        final = loop.confirm()
    finally:
        loop.close()
        if owned:
            oracle.close()
    archive = Archive()
    if final:
        archive.add(final)
    model_dir = loop.model_dir
    if out is not None and model_dir is not None and options.mode != "direct":
        model_dir = _publish(model_dir, out / "model")
    result = ActiveResult(
        best=archive.best, structures=archive.structures, n_relaxations=loop.n_relaxations,
        history=np.array([row["best_oracle_enthalpy_per_atom"] for row in loop.rounds]),
        archive=archive, config=config, out=out,
        n_oracle_calls=loop.calls, n_oracle_failures=loop.store.n_failed,
        potential=loop.potential, model_dir=model_dir, rounds=loop.rounds,
        oracle_seconds=float(getattr(oracle, "seconds", math.nan)),
        train_seconds=loop.train_seconds, wall_seconds=time.perf_counter() - t0)
    if out is not None:
        write_outputs(result, n_best=n_best)
        _plot_rounds(loop.rounds, out / "active.png")
    return result


class _NoPotential:
    """Stands in for the potential in the run record of a run that trains its own."""

    domain = None

    def __repr__(self) -> str:
        return "active-learning committee"

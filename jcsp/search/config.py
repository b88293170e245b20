"""The settings of one search as one frozen object (host side).

:class:`SearchConfig` holds every setting that decides what a search does, with its
default and its bounds declared once, on the field (:mod:`jcsp.settings`). Everything
that can be checked without the potential is checked when it is built: a bad value,
an unknown algorithm or driver option, a composition no Wyckoff combination can hold,
point groups no cluster of the composition fits. :func:`jcsp.search.run.search` builds
one from its keywords, the command line builds one from its flags and TOML file (its
keys are the field names), and the run database stores its :meth:`SearchConfig.record`.

Example:
  >>> config = SearchConfig("LJ13", algorithm="basin", budget=200, cluster=True)
  >>> config.replace(seed=2).generation_size
  16
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import jax

from ..potentials.base import Potential
from ..relax.driver import TARGET_ATOMS
from ..settings import Settings, setting
from . import generate, moves as moves_table, seeding
from .drivers import DRIVERS

#: The search algorithms, by name.
ALGORITHMS = tuple(DRIVERS)

#: Crystals are drawn from the space groups with at most this many general positions
#: unless ``groups`` is given.
MAX_GENERAL_POSITIONS = 48
#: Default population on a CPU: batches of 16 structures keep a few cores busy, and a
#: larger batch only makes each structure wait for the slowest of its batch.
CPU_POPULATION = 16


def device_population(n_atoms: int, backend: str | None = None) -> int:
    """Default structures per relaxation batch for structures of ``n_atoms`` atoms:
    :data:`CPU_POPULATION` on a CPU; on accelerators (GPU, TPU) enough structures to
    fill each of this process's devices (the batch is sharded over them,
    :mod:`jcsp.sharding`), ``TARGET_ATOMS // n_atoms`` per device
    (:data:`jcsp.relax.driver.TARGET_ATOMS` atoms, the relaxer's own automatic batch), at
    least :data:`CPU_POPULATION`."""
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu":
        return CPU_POPULATION
    per_device = max(CPU_POPULATION, TARGET_ATOMS // max(int(n_atoms), 1))
    return per_device * jax.local_device_count()


@dataclasses.dataclass(frozen=True)
class SearchConfig(Settings):
    """What one search does.

    Attributes:
      composition: e.g. ``"Si8"``, ``"Na4Cl4"``, ``"LJ38"`` (a non-element label such as
        ``LJ`` means identical particles).
      algorithm: ``"random"`` (AIRSS), ``"basin"`` (parallel basin hopping),
        ``"minima"`` (minima hopping), ``"anneal"`` (simulated annealing), ``"ga"``
        (genetic algorithm) or ``"pso"`` (particle swarm).
      budget: number of relaxations.
      pressure: GPa; structures are ranked by enthalpy per atom.
      seed: the same seed gives the same search.
      formula_units: multiplies the composition.
      cluster: search clusters (no cell) instead of crystals.
      groups: space groups random crystals are drawn from (default: every feasible one
        with at most 48 general positions).
      cluster_symmetry: point groups of random clusters: True (a random feasible group
        of :data:`jcsp.search.pointgroup.GROUPS`, C1 included, for each start), a list
        of Schoenflies symbols such as ``["Td", "Oh", "Ih"]``, or False / None for
        plain random points in a sphere. Crystals take ``groups`` instead and accept
        only True, False or None here.
      volume: target cell volume of random crystals, Å³ (default from covalent radii).
      population: structures per generation = relaxation batch size (default
        ``min(budget, 16)`` on a CPU, enough to fill an accelerator on a GPU or TPU;
        see :attr:`generation_size`).
      fmax: relaxation force criterion, eV/Å.
      max_steps: relaxation steps per structure.
      optimizer: ``"fire"`` (default) or ``"lbfgs"`` (:func:`jcsp.relax`); L-BFGS takes
        about four times fewer steps on rigid-ion oxides
        (``experiments/results/bench_ionic.json``).
      target: stop as soon as the best enthalpy per atom reaches this (eV/atom).
      max_grade: with a machine-learned potential that carries its training domain,
        relaxed structures whose extrapolation grade (:mod:`jcsp.ml.domain`) exceeds
        this are set aside as failed; None keeps them. Classical potentials are not
        graded.
      options: the driver's settings (the fields of its ``Config`` in
        :mod:`jcsp.search.drivers`); unknown keys fail.
      moves: extra moves for any driver, ``{name: probability}`` from
        :data:`jcsp.search.moves.MOVES` (or ``"name=p,name=p"``): each proposal a driver
        makes from a parent is replaced, with that probability, by the named move of the
        same parent (see :mod:`jcsp.search.moves`). Empty by default.
      generator: a generative model that proposes fresh candidates instead of random
        symmetric crystals (:mod:`jcsp.search.seeding`): an object with
        ``propose(numbers, n, *, seed)`` such as :func:`jcsp.generative.load` returns,
        or a model name (``"perov-5"``) or checkpoint path, loaded when the search
        starts. Crystals only. None (default): random symmetric crystals.
      generator_share: with a generator, the fraction of fresh candidates it proposes
        (each drawn independently); the others stay random symmetric crystals, so a
        poor model cannot starve the search. Default 1.
    """

    composition: str = setting(None, kind=str)
    algorithm: Literal["random", "basin", "minima", "anneal", "ga", "pso"] = setting(
        "random", kind=str, choices=ALGORITHMS)
    budget: int = setting(100, kind=int, ge=1)
    pressure: float = setting(0.0)
    seed: int = setting(0, kind=int, ge=0)
    formula_units: int = setting(1, kind=int, ge=1)
    cluster: bool = setting(False, kind=bool)
    groups: tuple[int, ...] | None = None
    cluster_symmetry: bool | tuple[str, ...] | None = True
    volume: float | None = setting(None, optional=True, gt=0)
    population: int | None = setting(None, kind=int, optional=True, ge=1)
    fmax: float = setting(0.01, gt=0)
    max_steps: int = setting(2000, kind=int, ge=1)
    optimizer: str = setting("fire", kind=str, choices=("fire", "lbfgs"))
    target: float | None = setting(None, optional=True)
    max_grade: float | None = setting(3.0, optional=True, gt=0)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    moves: Mapping[str, float] = dataclasses.field(default_factory=dict)
    generator: Any = None
    generator_share: float = setting(1.0, ge=0, le=1)

    def __post_init__(self):
        super().__post_init__()
        counts = self.counts  # a readable composition
        self._set("options", dict(self.options or {}))
        self._set("moves", moves_table.parse(self.moves))
        self.driver_config  # noqa: B018  (known options with valid values)
        symmetry = self.cluster_symmetry
        if isinstance(symmetry, (list, tuple)):
            self._set("cluster_symmetry", tuple(str(g) for g in symmetry))
        elif symmetry not in (True, False, None):
            raise ValueError(f"SearchConfig.cluster_symmetry must be True, False, None or a "
                             f"list of point groups, got {symmetry!r}")
        if self.groups is not None:
            try:
                groups = tuple(sorted({int(g) for g in self.groups}))
            except (TypeError, ValueError):
                raise ValueError(f"SearchConfig.groups must be space-group numbers, got "
                                 f"{self.groups!r}") from None
            if not all(1 <= g <= 230 for g in groups):
                raise ValueError(f"space groups are numbered 1 to 230, got {list(groups)}")
            self._set("groups", groups)
        if self.generator is not None:
            seeding.check(self.generator)
            if self.cluster:
                raise ValueError("a generator proposes periodic crystals; a cluster search "
                                 "cannot take one (drop generator= or cluster=True)")
            labels = [s for s in counts if generate.species_number(s) == 0]
            if labels:
                raise ValueError(f"a generator proposes crystals of chemical elements; "
                                 f"{labels[0]!r} in {self.composition!r} is not one")
        if self.cluster:
            if self.groups is not None:
                raise ValueError("groups (space groups) apply to crystals, not clusters")
            self.point_groups  # noqa: B018  (some group holds the counts)
            return
        if isinstance(self.cluster_symmetry, tuple):
            raise ValueError("cluster_symmetry applies to clusters; crystals take space "
                             "groups (groups=)")
        pool = self.space_groups
        if not generate.feasible_groups(counts, pool):
            named = list(pool) if len(pool) < 8 else "those allowed"
            raise ValueError(f"no space group among {named} has Wyckoff positions adding "
                             f"up to {counts}; allow more groups or change the composition")

    @classmethod
    def from_keywords(cls, composition: "str | SearchConfig", **settings) -> "SearchConfig":
        """A config from a composition and keywords, or a copy of a config with the
        keywords changed; an unknown keyword is a ValueError naming the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"unknown search setting(s) {unknown}; known: "
                             f"{', '.join(known)}")
        if isinstance(composition, SearchConfig):
            return composition.replace(**settings)
        if "composition" in settings:
            raise ValueError("composition given twice")
        return cls(composition, **settings)

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    # --- derived settings -------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Atoms of each species: the composition times ``formula_units``."""
        return generate.parse_composition(self.composition, self.formula_units)

    @property
    def generation_size(self) -> int:
        """Structures per generation (and relaxation slots): ``population``, or
        ``min(budget, device_population(atoms))``: 16 on a CPU, about
        ``TARGET_ATOMS / atoms`` structures on an accelerator
        (:func:`device_population`). The run record stores the resolved number, so a
        run started on one kind of device resumes there (or with ``population`` set)."""
        if self.population is not None:
            return self.population
        return min(self.budget, device_population(sum(self.counts.values())))

    @property
    def driver_config(self):
        """The driver's frozen ``Config`` built from ``options``."""
        config_cls, _ = DRIVERS[self.algorithm]
        names = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(self.options) - names)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for algorithm {self.algorithm!r}; "
                             f"it accepts {sorted(names)}")
        try:
            return config_cls(**self.options)
        except ValueError as err:
            raise ValueError(f"bad options for algorithm {self.algorithm!r}: {err}") from None

    @property
    def space_groups(self) -> tuple[int, ...]:
        """The space groups random crystals may take (before the feasibility check)."""
        if self.groups is not None:
            return self.groups
        return tuple(g for g in range(1, 231)
                     if len(generate.wyckoff.operations(g)[0]) <= MAX_GENERAL_POSITIONS)

    @property
    def point_groups(self) -> tuple[str, ...] | None:
        """The point groups random clusters are drawn from, None for plain random
        clusters (and for crystals)."""
        if not self.cluster or self.cluster_symmetry in (None, False):
            return None
        return tuple(generate.cluster_groups(self.counts, self.cluster_symmetry))

    def check_potential(self, potential: Potential) -> None:
        """Raise ValueError if ``potential`` cannot run this search."""
        if not isinstance(potential, Potential):
            raise ValueError(f"potential must be a jcsp potential, got "
                             f"{type(potential).__name__}")
        potential.check_species([generate.species_number(s) for s in self.counts])
        if not self.cluster and potential.cutoff is None:
            raise ValueError(f"{potential!r} has no cutoff (all pairs): it only works for "
                             "clusters; pass cluster=True or give the potential a cutoff")

    def record(self, potential: Potential) -> dict:
        """The run record stored in the database (JSON data): the settings as resolved
        (population, point groups), the potential's repr, and ``max_grade`` only for a
        potential that carries a training domain."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record.update(population=self.generation_size, potential=repr(potential),
                      groups=None if self.groups is None else list(self.groups),
                      options=dict(self.options))
        del record["cluster_symmetry"]
        record["moves"] = dict(self.moves)
        if not self.moves:  # runs recorded before moves existed resume unchanged
            del record["moves"]
        if self.optimizer == "fire":  # likewise for the optimizer
            del record["optimizer"]
        if self.point_groups is not None:
            record["cluster_symmetry"] = list(self.point_groups)
        if potential.domain is None:
            del record["max_grade"]
        if self.generator is None:  # likewise for runs without a generator
            del record["generator"], record["generator_share"]
        else:
            record["generator"] = seeding.describe(self.generator)
        return record


#: Run-record keys a resumed search may change: it extends or shortens the same run.
RESUMABLE_CHANGES = ("budget", "target")


__all__ = ["ALGORITHMS", "CPU_POPULATION", "MAX_GENERAL_POSITIONS", "RESUMABLE_CHANGES",
           "SearchConfig", "device_population"]

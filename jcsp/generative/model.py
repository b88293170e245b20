"""A trained generative model: load it, sample crystals for compositions, rank them.

A model directory holds

- ``generator.json``: format name and version, the jcsp version that wrote it, the
  denoiser's configuration, the diffusion schedule, the training settings, the energy
  head's normalisation, the compositions and cell sizes seen in training, and the
  SHA-256 of the weights file;
- ``params.msgpack``: the weights (the EMA of training, flax msgpack);
- ``history.csv``: one row per epoch (learning rate, losses, validation metrics).

Models shipped with jcsp load by name (``"perov-5"``); anything else is a path.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import warnings
from collections import Counter
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from ase.formula import Formula
from ase.neighborlist import neighbor_list
from flax import serialization
from tqdm.auto import tqdm

from ..ml.checkpoint import CheckpointError, _atomic_write
from ..version import __version__
from .denoiser import DenoiserConfig, init_params
from .diffusion import Schedule
from .sampling import STEP_LR, make_sampler

FORMAT = "jcsp-diffusion-generator"
VERSION = 1

#: Models shipped with the package, by name (directories under jcsp/data/generative/).
SHIPPED = {"perov-5": "perov-5"}
SHIPPED_ROOT = pathlib.Path(__file__).resolve().parents[1] / "data" / "generative"

#: Reverse-diffusion steps of a sample when none are asked for (a model's
#: ``generator.json`` may set its own under ``"sampling": {"n_steps": ...}``): on the
#: Perov-5 validation split 250 predictor-corrector steps match nearly as many crystals as
#: the training schedule's 1000 at a quarter of the cost
#: (experiments/results/generative_perov5_val_sampler*.json).
DEFAULT_STEPS = 250

#: Crystals sampled per jitted call (bounds memory; every call has this batch shape).
DEFAULT_BATCH = 512


def reduced_formula(numbers: Sequence[int]) -> str:
    """Hill-ordered reduced formula of a list of atomic numbers ("O3SrTi" for SrTiO3)."""
    counts = Counter(int(z) for z in numbers)
    g = np.gcd.reduce(list(counts.values()))
    return "".join(f"{chemical_symbols[z]}{c // g if c // g > 1 else ''}"
                   for z, c in sorted(counts.items(), key=lambda kv: chemical_symbols[kv[0]]))


def composition_numbers(composition) -> list[int]:
    """Atomic numbers of one cell from a formula ("SrTiO3", "Sr2Ti2O6"), a
    {symbol: count} mapping, or a sequence of atomic numbers or symbols.

    Raises:
      ValueError: empty composition, unknown element, non-positive count.
    """
    if isinstance(composition, str):
        text = composition.strip()
        if not text:
            raise ValueError("empty composition: give a formula such as 'SrTiO3'")
        try:
            counts = Formula(text).count()
        except Exception as exc:
            raise ValueError(f"cannot read the formula {composition!r}: {exc}") from exc
        items = list(counts.items())
    elif isinstance(composition, dict):
        items = list(composition.items())
    else:
        seq = list(composition)
        items = [(z, 1) for z in seq]
    numbers = []
    for el, count in items:
        if isinstance(el, str):
            if el not in atomic_numbers:
                raise ValueError(f"unknown element {el!r} in composition {composition!r}")
            z = atomic_numbers[el]
        else:
            z = int(el)
            if not 0 < z < len(chemical_symbols):
                raise ValueError(f"unknown atomic number {el!r} in composition {composition!r}")
        if int(count) != count or count <= 0:
            raise ValueError(f"element counts must be positive integers, got {el}: {count}")
        numbers += [z] * int(count)
    if not numbers:
        raise ValueError(f"empty composition {composition!r}")
    return numbers


@dataclasses.dataclass
class GenerativeModel:
    """A trained denoiser with what sampling needs.

    Attributes:
      config: the denoiser's shape; schedule: the diffusion it was trained for.
      params: the weights (float32 for sampling).
      energy_mean, energy_std: the energy head's normalisation (eV/atom).
      formulas: reduced formulas of the training crystals; sizes: their atom counts.
      meta: everything else of ``generator.json`` (training settings, history, path).
    """

    config: DenoiserConfig
    schedule: Schedule
    params: dict
    energy_mean: float = 0.0
    energy_std: float = 1.0
    formulas: frozenset = frozenset()
    sizes: frozenset = frozenset()
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def elements(self) -> tuple[int, ...]:
        return self.config.elements

    def check(self, numbers: Sequence[int]) -> None:
        """Raise for elements without an embedding; warn for a composition (or cell
        size) the model never saw in training."""
        missing = sorted({z for z in numbers if z not in self.config.elements})
        if missing:
            raise ValueError(
                f"the model has no embedding for {', '.join(chemical_symbols[z] for z in missing)}"
                f": it was trained on {self.describe_elements()}; train a model on data "
                "with these elements (jcsp train-generator)")
        formula = reduced_formula(numbers)
        if self.formulas and formula not in self.formulas:
            warnings.warn(f"the model never saw the composition {formula} in training; its "
                          "samples for it are extrapolations", UserWarning, stacklevel=3)
        if self.sizes and len(numbers) not in self.sizes:
            warnings.warn(f"the model was trained on cells of {sorted(self.sizes)} atoms, not "
                          f"{len(numbers)}; its samples for them are extrapolations",
                          UserWarning, stacklevel=3)

    def describe_elements(self) -> str:
        return " ".join(chemical_symbols[z] for z in self.config.elements)

    def sample(self, compositions, n_samples: int = 1, *, seed: int = 0,
               n_steps: int | None = None, step_lr: float = STEP_LR, corrector: bool = True,
               batch_size: int = DEFAULT_BATCH, progress: bool = False,
               first_batch: int = 0) -> list[list[Atoms]]:
        """``n_samples`` crystals for every composition (one list per composition).

        The whole request is one population: compositions of the same cell size share
        jitted calls of ``batch_size`` crystals (padded to the largest cell). The same
        request with the same seed and settings gives the same crystals.

        Args:
          compositions: formulas, {symbol: count} mappings or lists of atomic numbers,
            each one cell.
          n_samples: samples per composition (>= 1).
          n_steps: reverse-diffusion steps (default: the model's ``sampling.n_steps``,
            else :data:`DEFAULT_STEPS`, at most the schedule's T).
          step_lr, corrector: the Langevin corrector's step and whether to run it.
          first_batch: the index of this request's first batch in a larger request. Batch
            ``b`` draws its noise from ``fold_in(PRNGKey(seed), b)``, so a request cut
            into pieces of whole batches (each piece a multiple of ``batch_size``
            crystals, ``first_batch`` counting the batches before it) gives exactly the
            crystals of the whole request: long evaluations can run piece by piece.
        """
        if isinstance(compositions, (str, dict)):
            compositions = [compositions]
        compositions = list(compositions)
        if not compositions:
            raise ValueError("no compositions given")
        if int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if int(first_batch) != first_batch or first_batch < 0:
            raise ValueError(f"first_batch must be a non-negative integer, got {first_batch}")
        cells = [composition_numbers(c) for c in compositions]
        for numbers in cells:
            self.check(numbers)
        jobs = [(i, j) for i in range(len(cells)) for j in range(int(n_samples))]
        n_max = max(len(c) for c in cells)
        index = {z: k for k, z in enumerate(self.config.elements)}
        if n_steps is None:
            n_steps = min(self.meta.get("sampling", {}).get("n_steps", DEFAULT_STEPS),
                          self.schedule.steps)
        sampler = make_sampler(self.config, self.schedule, n_steps, float(step_lr),
                               bool(corrector))
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), self.params)
        out: list[list[Atoms | None]] = [[None] * int(n_samples) for _ in cells]
        bar = tqdm(total=len(jobs), disable=not progress, unit="crystal", desc="sampling",
                   dynamic_ncols=True)
        # a later piece of a larger request keeps that request's batch shape (its noise)
        width = batch_size if first_batch else min(batch_size, len(jobs))
        for start in range(0, len(jobs), width):
            chunk = jobs[start:start + width]
            species = np.zeros((width, n_max), np.int32)
            mask = np.zeros((width, n_max), bool)
            for row, (i, _) in enumerate(chunk):
                species[row, :len(cells[i])] = [index[z] for z in cells[i]]
                mask[row, :len(cells[i])] = True
            key = jax.random.fold_in(jax.random.PRNGKey(seed), int(first_batch) + start // width)
            lattice, frac, energy = jax.device_get(sampler(params, species, mask, key))
            for row, (i, j) in enumerate(chunk):
                n = len(cells[i])
                atoms = Atoms(numbers=cells[i], cell=np.asarray(lattice[row], float),
                              scaled_positions=np.asarray(frac[row, :n], float), pbc=True)
                atoms.info["predicted_energy"] = float(energy[row]) * self.energy_std \
                    + self.energy_mean
                atoms.info["generator"] = self.meta.get("name", "generator")
                out[i][j] = atoms
            bar.update(len(chunk))
        bar.close()
        return out  # type: ignore[return-value]

    def propose(self, numbers: Sequence[int], n: int, *, seed: int) -> list[Atoms]:
        """``n`` crystals with exactly these atomic numbers (the search's generator
        protocol, :mod:`jcsp.search`); a composition or cell size the model never saw
        gives its UserWarning here as in :meth:`sample`."""
        return self.sample([list(numbers)], n, seed=seed)[0]

    def rank(self, samples: list[Atoms]) -> list[Atoms]:
        """The samples of one composition, plausible ones (:func:`plausible`) first, each
        group sorted by the energy head's prediction (lowest first); samples without a
        prediction go last in their group.

        The head was trained on crystals, not on collapsed samples, and predicts low
        energies for some samples with atoms on top of each other, so those are put
        after every plausible sample whatever their prediction."""
        return sorted(samples, key=lambda a: (not plausible(a),
                                              a.info.get("predicted_energy", np.inf)))


#: :func:`plausible`'s bounds: DiffCSP's structural validity (Xie et al.'s CDVAE).
MIN_SEPARATION = 0.5  # Å, between two different atoms (an atom and its own images excepted)
MIN_CELL_VOLUME = 0.1  # Å^3


def plausible(atoms: Atoms) -> bool:
    """Finite, a cell of at least ``MIN_CELL_VOLUME``, and no two different atoms (or an
    atom and another's periodic image) closer than ``MIN_SEPARATION``: the structural
    validity of the CSP benchmarks, computed with ASE (no pymatgen needed).

    >>> from ase.build import bulk
    >>> plausible(bulk("Si", "diamond", a=5.43)), plausible(Atoms("Si2", [[0, 0, 0], [0.3, 0, 0]], cell=[4] * 3, pbc=True))
    (True, False)
    """
    cell = np.asarray(atoms.cell[:], float)
    positions = np.asarray(atoms.positions, float)
    if not (np.isfinite(cell).all() and np.isfinite(positions).all()):
        return False
    if atoms.pbc.all() and not abs(np.linalg.det(cell)) >= MIN_CELL_VOLUME:
        return False
    if len(atoms) < 2:
        return True
    i, j = neighbor_list("ij", atoms, MIN_SEPARATION, self_interaction=False)
    return not np.any(i != j)


def save(out: str, model: GenerativeModel, history: list[dict], train_config: dict) -> None:
    """Write a model directory (atomically, file by file: weights first, then the
    description that names their checksum)."""
    os.makedirs(out, exist_ok=True)
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), model.params)
    blob = serialization.msgpack_serialize(params)
    _atomic_write(os.path.join(out, "params.msgpack"), blob)
    if history:
        keys = list(history[0])
        lines = [",".join(keys)] + [",".join(_cell(h.get(k)) for k in keys) for h in history]
        _atomic_write(os.path.join(out, "history.csv"), ("\n".join(lines) + "\n").encode())
    meta = {"format": FORMAT, "version": VERSION, "jcsp_version": __version__,
            "denoiser": dataclasses.asdict(model.config),
            "schedule": {"steps": model.schedule.steps,
                         "sigma_begin": model.schedule.sigma_begin,
                         "sigma_end": model.schedule.sigma_end},
            "train": train_config,
            "energy_mean": model.energy_mean, "energy_std": model.energy_std,
            "formulas": sorted(model.formulas), "sizes": sorted(model.sizes),
            "params_sha256": hashlib.sha256(blob).hexdigest(),
            **{k: v for k, v in model.meta.items() if k not in ("path",)}}
    _atomic_write(os.path.join(out, "generator.json"), json.dumps(meta, indent=1).encode())


def _cell(v) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def load(path_or_name) -> GenerativeModel:
    """A trained generator from a model directory, or a shipped model by name.

    A :class:`GenerativeModel` is returned unchanged.

    Raises:
      CheckpointError: missing directory or files, another format, weights that do not
        match their checksum or the configuration.
    """
    if isinstance(path_or_name, GenerativeModel):
        return path_or_name
    name = str(path_or_name)
    path = SHIPPED_ROOT / SHIPPED[name] if name in SHIPPED else pathlib.Path(name)
    meta_path = path / "generator.json"
    if not meta_path.exists():
        known = ", ".join(sorted(SHIPPED))
        raise CheckpointError(f"{name}: no generator.json there; give a model directory "
                              f"written by jcsp train-generator or a shipped name ({known})")
    try:
        meta = json.loads(meta_path.read_text())
    except Exception as exc:
        raise CheckpointError(f"{meta_path} is corrupt ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a jcsp generator (format "
                              f"{meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{meta_path} was written by a newer jcsp "
                              f"({meta.get('jcsp_version')}); upgrade jcsp")
    try:
        blob = (path / "params.msgpack").read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read params.msgpack ({exc})") from exc
    if hashlib.sha256(blob).hexdigest() != meta.get("params_sha256"):
        raise CheckpointError(f"{path}/params.msgpack does not match the checksum in "
                              "generator.json (corrupt or from another model)")
    den = dict(meta["denoiser"])
    den["elements"] = tuple(den["elements"])
    config = DenoiserConfig(**den)
    # Shapes only (no initialisation is computed).
    template = jax.eval_shape(lambda key: init_params(config, key), jax.random.PRNGKey(0))
    try:
        params = serialization.msgpack_restore(blob)
    except Exception as exc:
        raise CheckpointError(f"{path}/params.msgpack is corrupt ({exc})") from exc
    if (jax.tree.structure(template) != jax.tree.structure(params)
            or any(np.shape(a) != tuple(b.shape) for a, b in
                   zip(jax.tree.leaves(params), jax.tree.leaves(template)))):
        raise CheckpointError(f"{path}/params.msgpack does not fit the configuration in "
                              "generator.json (other layers or shapes)")
    schedule = Schedule.build(**meta["schedule"])
    extra = {k: v for k, v in meta.items() if k not in (
        "format", "version", "denoiser", "schedule", "energy_mean", "energy_std",
        "formulas", "sizes", "params_sha256")}
    extra["path"] = str(path)
    extra.setdefault("name", name if name in SHIPPED else path.name)
    history_path = path / "history.csv"
    if history_path.exists():
        with open(history_path) as fh:
            extra["history"] = list(csv.DictReader(fh))
    return GenerativeModel(config, schedule, params, float(meta.get("energy_mean", 0.0)),
                           float(meta.get("energy_std", 1.0)),
                           frozenset(meta.get("formulas", ())), frozenset(meta.get("sizes", ())),
                           extra)


def generate(model, compositions, n_samples: int = 20, *, seed: int = 0,
             **options) -> list[list[Atoms]]:
    """``jcsp.generate``: ``n_samples`` crystals per composition from a generative model
    (a :class:`GenerativeModel`, a model directory or a shipped name such as
    ``"perov-5"``); see :meth:`GenerativeModel.sample` for the options."""
    return load(model).sample(compositions, n_samples, seed=seed, **options)


__all__ = ["DEFAULT_BATCH", "DEFAULT_STEPS", "GenerativeModel", "SHIPPED",
           "composition_numbers", "generate", "load", "reduced_formula", "save"]

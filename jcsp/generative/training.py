"""Training the diffusion generator with optax.

Recipe (:class:`GeneratorTrainConfig`), DiffCSP's objective (Jiao et al. 2023, eq. 11 and
15) with the training machinery of :mod:`jcsp.ml.training`:

- loss ``|eps_L_hat - eps_L|^2 / 9 + <|eps_F_hat - target_F|^2> / 3`` at a step t drawn
  uniformly from 1..T per crystal, plus ``w_energy * abar_t * (E_hat - E)^2`` for the
  energy head (normalised energy per atom; weighted by abar_t, so it learns on nearly
  clean crystals, which is where it ranks samples);
- Adam on gradients clipped to a global norm; the learning rate warms up linearly over
  ``warmup_steps`` steps then decays by a cosine to ``lr * lr_final`` at the last epoch;
- an exponential moving average of the weights, which is what is validated and saved;
- validation on the *validation* split only: the diffusion loss at fixed noise every
  epoch, and every ``val_every`` epochs the match rate of one sample per composition for
  ``val_structures`` validation crystals (pymatgen's StructureMatcher, DiffCSP's
  tolerances). The saved model is the EMA of the epoch with the best validation match
  rate (the lowest validation loss where pymatgen is missing);
- ``max_time``: after the second epoch the number of epochs is fixed from the measured
  cost of an epoch (the second: the first compiles) and of a validation so that the run, schedule included, fits the budget;
  the count is saved, so a resumed run follows the same schedule;
- one static batch shape (the last partial batch of an epoch is dropped; the order is
  reshuffled every epoch), so one compilation;
- a checkpoint after every epoch; a run started again with the same output directory
  resumes where it stopped and gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pickle
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..ml.checkpoint import CheckpointError, _atomic_write, read_state
from .denoiser import DenoiserConfig, apply, init_params
from .diffusion import Schedule, noise
from .evaluate import match
from .model import GenerativeModel, load, reduced_formula, save


@dataclasses.dataclass(frozen=True)
class GeneratorTrainConfig:
    """Optimisation settings (saved with the model).

    Attributes:
      epochs: passes over the training set (an upper bound when ``max_time`` is set).
      max_time: wall-clock budget in seconds for the whole run, or None.
      batch_size: crystals per step.
      lr, lr_final, warmup_steps: peak learning rate, its final fraction, warm-up steps.
      clip: global gradient-norm clip; ema: decay of the weight average.
      w_energy: weight of the energy head's loss (0: no energy head training).
      seed: initial weights, data order and noise.
      val_every: epochs between validation match rates; val_structures: validation
        crystals sampled for it (one sample each); val_steps: reverse-diffusion steps
        used there (None: all).
      steps, sigma_begin, sigma_end: the diffusion schedule (DiffCSP's: 1000, 0.005, 0.5).
    """

    epochs: int = 1000
    max_time: float | None = None
    batch_size: int = 256
    lr: float = 1e-3
    lr_final: float = 0.05
    warmup_steps: int = 200
    clip: float = 1.0
    ema: float = 0.999
    w_energy: float = 0.1
    seed: int = 0
    val_every: int = 25
    val_structures: int = 256
    val_steps: int | None = None
    steps: int = 1000
    sigma_begin: float = 0.005
    sigma_end: float = 0.5

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("epochs, batch_size and val_every must be positive")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError("max_time must be positive")
        if not 0 < self.lr or not 0 <= self.lr_final <= 1:
            raise ValueError("need lr > 0 and 0 <= lr_final <= 1")


def learning_rate(cfg: GeneratorTrainConfig, step: int, total_steps: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min((step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1), 1.0)
    return cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def _species_index(z: np.ndarray, elements: tuple[int, ...]) -> np.ndarray:
    lut = np.zeros(max(max(elements), int(z.max())) + 1, np.int32)
    lut[list(elements)] = np.arange(len(elements))
    return lut[z]


def losses(config: DenoiserConfig, schedule: Schedule, params, batch, key, w_energy):
    """(total, terms) of the diffusion loss on one batch (dict of arrays: species,
    frac, lattice, mask, energy [normalised, NaN where unknown])."""
    species, frac, lattice, mask = (batch[k] for k in ("species", "frac", "lattice", "mask"))
    b = species.shape[0]
    k_t, k_l, k_f = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (b,), 1, schedule.steps + 1)
    eps_l = jax.random.normal(k_l, lattice.shape, lattice.dtype)
    eps_f = jax.random.normal(k_f, frac.shape, frac.dtype)
    return _losses_at(config, schedule, params, batch, t, eps_l, eps_f, w_energy)


def _losses_at(config, schedule, params, batch, t, eps_l, eps_f, w_energy):
    species, frac, lattice, mask = (batch[k] for k in ("species", "frac", "lattice", "mask"))
    lattice_t, frac_t, target_f = noise(schedule, lattice, frac, t, eps_l, eps_f)
    pred_l, pred_f, pred_e = apply(config, params, species, frac_t, lattice_t, mask,
                                   t.astype(frac.dtype) / schedule.steps)
    m = mask[..., None].astype(frac.dtype)
    loss_l = jnp.mean((pred_l - eps_l) ** 2)
    loss_f = jnp.sum(m * (pred_f - target_f * m) ** 2) / (3 * jnp.sum(m))
    e = batch["energy"]
    known = jnp.isfinite(e)
    weight = jnp.where(known, jnp.asarray(schedule.alpha_bar)[t].astype(e.dtype), 0.0)
    loss_e = jnp.sum(weight * (pred_e - jnp.where(known, e, 0.0)) ** 2) / jnp.maximum(
        jnp.sum(known), 1)
    total = loss_l + loss_f + w_energy * loss_e
    return total, {"loss": total, "lattice": loss_l, "coords": loss_f, "energy": loss_e}


@functools.lru_cache(maxsize=4)
def make_step(config: DenoiserConfig, schedule: Schedule, cfg: GeneratorTrainConfig):
    """Jitted ``step(params, opt_state, ema, step, batch, key, lr) -> (..., metrics)``."""
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip), optax.scale_by_adam())

    @jax.jit
    def step(params, opt_state, ema, n, batch, key, lr):
        grads, terms = jax.grad(
            lambda p: losses(config, schedule, p, batch, key, cfg.w_energy), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        decay = jnp.minimum(cfg.ema, (1.0 + n) / (10.0 + n))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        return params, opt_state, ema, terms

    return step, tx


@dataclasses.dataclass
class _RunState:
    model_config: DenoiserConfig
    train_config: GeneratorTrainConfig
    params: object
    opt_state: object
    ema: object
    epoch: int
    total_epochs: int | None
    history: list
    best: tuple
    elapsed: float
    first_val: float = 0.0


def _arrays(crystals, elements, energy_mean, energy_std) -> dict:
    e = np.asarray(crystals.energy, np.float64)
    n = crystals.mask.sum(1)
    return {"species": _species_index(np.asarray(crystals.z), elements),
            "frac": np.asarray(crystals.frac, np.float32),
            "lattice": np.asarray(crystals.lattice, np.float32),
            "mask": np.asarray(crystals.mask, bool),
            "energy": ((e - energy_mean) / energy_std).astype(np.float32),
            "n": n}


def train(train_set, val_set, out: str, *, model: DenoiserConfig | None = None,
          config: GeneratorTrainConfig = GeneratorTrainConfig(), name: str | None = None,
          progress: bool = True, log=print) -> GenerativeModel:
    """Train a generator on ``train_set`` and write it to ``out`` (resuming a run there).

    Args:
      train_set, val_set: :class:`jcsp.generative.data.Crystals` (val_set may be None:
        then nothing is validated and the last epoch is kept).
      model: the denoiser's shape; its ``elements`` default to those of the training set
        and ``length_scale`` to its mean lattice length.
    """
    if len(train_set) < config.batch_size:
        raise ValueError(f"{len(train_set)} training crystals is fewer than one batch "
                         f"({config.batch_size}); lower batch_size")
    elements = tuple(sorted(int(z) for z in np.unique(train_set.z[train_set.mask])))
    lengths = np.linalg.norm(np.asarray(train_set.lattice), axis=-1)
    model = dataclasses.replace(model or DenoiserConfig(elements=elements), elements=elements,
                                length_scale=round(float(lengths.mean()), 3))
    if val_set is not None:
        unknown = set(np.unique(val_set.z[val_set.mask])) - set(elements)
        if unknown:
            warnings.warn(f"{len(unknown)} elements of the validation set are not in the "
                          "training set; those crystals are left out of validation")
            keep = np.array([set(row[m]) <= set(elements)
                             for row, m in zip(val_set.z, val_set.mask)])
            val_set = val_set.subset(np.flatnonzero(keep))
    schedule = Schedule.build(config.steps, config.sigma_begin, config.sigma_end)
    energy = np.asarray(train_set.energy, float)
    known = np.isfinite(energy)
    e_mean = float(energy[known].mean()) if known.any() else 0.0
    e_std = float(energy[known].std()) if known.sum() > 1 else 1.0
    data = _arrays(train_set, elements, e_mean, e_std)
    vdata = _arrays(val_set, elements, e_mean, e_std) if val_set is not None else None
    formulas = frozenset(reduced_formula(z[m]) for z, m in zip(train_set.z, train_set.mask))
    sizes = frozenset(int(n) for n in np.unique(data["n"]))

    state_path = os.path.join(out, "state.pkl")
    step_fn, tx = make_step(model, schedule, config)
    run = _load_state(state_path, model, config)
    if run is None:
        params = init_params(model, jax.random.PRNGKey(config.seed))
        run = _RunState(model, config, params, tx.init(params), params, 0, None, [],
                        (-np.inf, np.inf, -1), 0.0)
        log(f"training a generator on {len(train_set)} crystals ({len(elements)} elements), "
            f"{sum(x.size for x in jax.tree.leaves(params))} parameters -> {out}")
    else:
        log(f"resuming {out} after epoch {run.epoch}")
    steps_per_epoch = len(train_set) // config.batch_size
    key0 = jax.random.PRNGKey(config.seed)
    gen = GenerativeModel(model, schedule, run.ema, e_mean, e_std, formulas, sizes,
                          {"name": name or os.path.basename(os.path.normpath(out))})
    bar = tqdm(total=run.total_epochs or config.epochs, initial=run.epoch, unit="epoch",
               desc="training", disable=not progress, dynamic_ncols=True)
    params, opt_state, ema = run.params, run.opt_state, run.ema
    while run.epoch < (run.total_epochs or config.epochs):
        t0 = time.time()
        epoch = run.epoch
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_set))
        total_steps = (run.total_epochs or config.epochs) * steps_per_epoch
        sums = {}
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            batch = {k: v[idx] for k, v in data.items() if k != "n"}
            n = epoch * steps_per_epoch + i
            lr = learning_rate(config, n, total_steps)
            key = jax.random.fold_in(jax.random.fold_in(key0, epoch), i)
            params, opt_state, ema, terms = step_fn(params, opt_state, ema, n, batch, key,
                                                    np.float32(lr))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress and i % 10 == 0:
                bar.set_postfix(loss=f"{float(terms['loss']):.4f}", refresh=False)
        row = {"epoch": epoch + 1, "lr": lr,
               **{k: float(v) / steps_per_epoch for k, v in sums.items()}}
        if vdata is not None:
            row.update({f"val_{k}": v for k, v in
                        validation_loss(model, schedule, ema, vdata, config).items()})
            due = (epoch + 1) % config.val_every == 0 or epoch == 0 or \
                epoch + 1 == (run.total_epochs or config.epochs)
            if due:
                t_val = time.time()
                gen.params = ema
                rate = validation_match(gen, val_set, config)
                row["val_match_rate"] = rate
                row["val_match_seconds"] = time.time() - t_val
        row["seconds"] = time.time() - t0
        run.elapsed += row["seconds"]
        row["elapsed"] = run.elapsed
        run.history.append(row)
        if epoch == 0:
            run.first_val = row.get("val_match_seconds", 0.0)
        if run.total_epochs is None and config.max_time is not None and epoch >= 1:
            # From the second epoch (the first one compiles) and the first validation.
            per_epoch = row["seconds"] - row.get("val_match_seconds", 0.0)
            per_val = run.first_val / config.val_every
            budget = config.max_time - run.elapsed
            run.total_epochs = int(min(config.epochs,
                                       1 + max(0, budget // (per_epoch + per_val))))
            bar.total = run.total_epochs
            log(f"time budget {config.max_time:.0f} s: {run.total_epochs} epochs "
                f"({per_epoch:.1f} s each, validation {per_val:.1f} s per epoch)")
        better = _better(row, run.best)
        run.epoch = epoch + 1
        run.params, run.opt_state, run.ema = params, opt_state, ema
        if better or vdata is None:
            rate = row.get("val_match_rate", float("nan"))
            run.best = (rate if np.isfinite(rate) else run.best[0],
                        row.get("val_loss", np.inf), run.epoch + 0)
            gen.params = ema
            save(out, gen, run.history, dataclasses.asdict(config))
        _save_state(state_path, run)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}",
                        val=f"{row.get('val_loss', float('nan')):.4f}",
                        match=f"{row.get('val_match_rate', float('nan')):.1f}", refresh=True)
    bar.close()
    # The history file beside the kept model is the whole run's.
    kept = load(out)
    kept.params = jax.tree.map(np.asarray, kept.params)
    save(out, kept, run.history, dataclasses.asdict(config))
    return load(out)


def _better(row: dict, best: tuple) -> bool:
    """Whether this epoch beats the kept one: on the validation match rate where this
    epoch measured it (ties broken by the validation loss); on the validation loss as
    long as no match rate has been measured (pymatgen missing)."""
    rate = row.get("val_match_rate")
    if rate is not None and np.isfinite(rate):
        return (rate, -row["val_loss"]) > (best[0], -best[1])
    if not np.isfinite(best[0]) and "val_loss" in row:
        return row["val_loss"] < best[1]
    return False


#: Validation loss: the first crystals of the validation split, each at a fixed step.
VAL_LOSS_CRYSTALS = 2048


@functools.lru_cache(maxsize=4)
def _val_loss_fn(config, schedule, w_energy):
    return jax.jit(lambda p, b, t, el, ef: _losses_at(config, schedule, p, b, t, el, ef,
                                                      w_energy)[1])


def validation_loss(config, schedule, params, vdata, cfg) -> dict:
    """The diffusion loss on the validation split at fixed noise (same draws every
    epoch, steps spread evenly over 1..T), in batches of ``cfg.batch_size``."""
    n = min(len(vdata["species"]), VAL_LOSS_CRYSTALS)
    n = max(cfg.batch_size, n // cfg.batch_size * cfg.batch_size) if n >= cfg.batch_size else n
    fn = _val_loss_fn(config, schedule, cfg.w_energy)
    rng = np.random.default_rng(12345)
    t_all = np.linspace(1, schedule.steps, n).round().astype(np.int32)
    sums, count = {}, 0
    width = min(cfg.batch_size, n)
    for start in range(0, n - width + 1, width):
        sl = slice(start, start + width)
        b = {k: v[sl] for k, v in vdata.items() if k != "n"}
        el = rng.standard_normal(b["lattice"].shape).astype(np.float32)
        ef = rng.standard_normal(b["frac"].shape).astype(np.float32)
        terms = fn(params, b, t_all[sl], el, ef)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}


def validation_match(gen: GenerativeModel, val_set, cfg: GeneratorTrainConfig) -> float:
    """Match rate (%) of one sample per composition for the first ``val_structures``
    validation crystals (NaN without pymatgen)."""
    n = min(cfg.val_structures, len(val_set))
    refs = [val_set.to_atoms(i) for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        samples = gen.sample([a.numbers for a in refs], 1, seed=cfg.seed,
                             n_steps=cfg.val_steps)
    try:
        return float(match(samples, refs, progress=False, processes=1)["match_rate"])
    except ImportError:
        warnings.warn("pymatgen is missing: validation uses the loss only "
                      "(pip install 'jcsp[generative]')")
        return float("nan")


def _load_state(path: str, model: DenoiserConfig, config: GeneratorTrainConfig):
    run = read_state(path, _RunState, "generator training state")
    if run is not None and (run.model_config != model or run.train_config != config):
        raise CheckpointError(
            f"{path} belongs to a run with other settings (model {run.model_config}, "
            f"training {run.train_config}); use another output directory or the same settings")
    return run


def _save_state(path: str, run: _RunState) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    host = dataclasses.replace(run, params=jax.device_get(run.params),
                               opt_state=jax.device_get(run.opt_state),
                               ema=jax.device_get(run.ema))
    _atomic_write(path, pickle.dumps(host))


__all__ = ["GeneratorTrainConfig", "learning_rate", "losses", "make_step", "train",
           "validation_loss", "validation_match"]

"""Training equivariant potentials (and committees of them) with optax.

Recipe (:class:`TrainConfig`):

- loss ``w_e <(dE/N)^2> + w_f <|dF|^2>/3 + w_s <dsigma^2>/9`` with energies per atom in
  eV, forces in eV/Å and stress in GPa, each averaged over the entries that exist;
- AdamW (decoupled weight decay) on gradients clipped to a global norm, learning rate
  warmed up linearly then cosine-decayed; the schedule runs on *progress*, the larger
  of the epoch fraction and the fraction of the wall-clock budget used, so a run always
  completes its schedule within ``max_time``;
- an exponential moving average of the weights, which is what is validated, kept and
  saved (the final weights of a run that completes its schedule); early stopping,
  which keeps the best validated epoch, when the validation score has not improved for
  ``patience`` epochs;
- batches of one static shape (:class:`jcsp.ml.data.Packer`): one compilation;
- a committee of K members is trained in the same jitted step, vmapped over a leading
  member axis of the parameters, each member with its own initial weights and its own
  data order;
- a checkpoint after every epoch (model + optimizer + EMA + data-order state); an
  interrupted run started again with the same output directory resumes where it
  stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ase.data import chemical_symbols

from . import checkpoint
from .batch_eval import errors, loss_terms, predict, to_device, to_host
from .data import Labels, Packer, fit_reference_energies, labels_of, neighbor_arrays
from .domain import fit_domain
from .model import ModelConfig, cast, init_params
from .potential import EquivariantPotential


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (saved with the checkpoint).

    Attributes:
      epochs: passes over the training set (upper bound; see ``max_time``). 250 by
        default: on the mlearn sets, longer runs fit the training forces ever closer
        while the test forces get worse (measurements in experiments/mlearn/README.md).
      max_time: wall-clock budget in seconds for the whole run (schedule included).
      lr: peak learning rate; warmup: fraction of progress spent warming up;
      lr_final: final learning rate as a fraction of ``lr``.
      weight_decay: AdamW decoupled weight decay; clip: global gradient-norm clip.
      ema: decay of the weight average.
      w_energy, w_forces, w_stress: loss weights (per-atom eV, eV/Å, GPa).
      energy_boost: factor on ``w_energy`` over the last ``boost_fraction`` of progress
        (a final energy-weighted phase, as in MACE's training protocol).
      select_energy, select_forces: error scales (eV/atom, eV/Å) of the validation
        score ``(E_mae / select_energy)^2 + (F_mae / select_forces)^2`` that drives
        early stopping and picks the epoch an early-stopped run keeps.
      atoms_per_batch: atoms per packed batch.
      patience: epochs without validation improvement before stopping.
      valid_fraction: fraction of the training set held out when no validation set is
        given.
      committee: number of members; seed: seed of weights and data order.
      dtype: "float32" (fast) or "float64".
      isolated_energies: energies of the free atoms, eV, by element symbol (in TOML:
        ``isolated_energies = {Mo = -4.03}``), for models with ``zero_isolated`` or
        ``sqrt_density``: they become the per-species reference energies, which such a
        model gives an atom without neighbours (MACE's E0s). Elements not named get
        the reference ``free_atoms`` says.
      free_atoms: the reference energy of each element ``isolated_energies`` does not
        name, for models with ``zero_isolated`` or ``sqrt_density``. ``"cohesive"`` (the
        default): the lowest energy per atom among the training structures made of that
        element alone, plus its experimental cohesive energy (Kittel's table, as ASE
        gives it), i.e. an estimate of the free atom's energy on the data's own scale;
        an element without such structures or a tabulated value falls back to least
        squares. ``"fit"``: least squares for all. Models without a free-atom zero
        always use least squares.
      clock_after_compile: ``max_time`` does not count the compilation of the training
        step and of the validation (their first calls in this process), for short
        trainings repeated on growing data, such as the rounds of an active-learning
        search (:mod:`jcsp.search.active`), where compilation would eat the budget.
    """

    epochs: int = 250
    max_time: float = 3300.0
    lr: float = 1e-2
    warmup: float = 0.03
    lr_final: float = 0.02
    weight_decay: float = 1e-6
    clip: float = 10.0
    ema: float = 0.99
    w_energy: float = 10.0
    w_forces: float = 1.0
    w_stress: float = 0.01
    energy_boost: float = 10.0
    boost_fraction: float = 0.25
    select_energy: float = 1e-3
    select_forces: float = 0.03
    atoms_per_batch: int = 128
    patience: int = 1000
    valid_fraction: float = 0.1
    committee: int = 1
    seed: int = 0
    dtype: str = "float32"
    isolated_energies: tuple = ()
    free_atoms: str = "cohesive"
    clock_after_compile: bool = False

    def __setstate__(self, state: dict):
        # Unpickled from a training state saved before ``free_atoms`` existed.
        self.__dict__.update({"free_atoms": "fit", "clock_after_compile": False, **state})

    def __post_init__(self):
        pairs = self.isolated_energies
        pairs = pairs.items() if isinstance(pairs, dict) else pairs
        try:
            pairs = tuple(sorted((str(k), float(v)) for k, v in pairs))
        except (TypeError, ValueError):
            raise ValueError("isolated_energies must map element symbols to energies in eV, "
                             f"got {self.isolated_energies!r}") from None
        object.__setattr__(self, "isolated_energies", pairs)
        if self.epochs < 1 or self.committee < 1 or self.atoms_per_batch < 1:
            raise ValueError("epochs, committee and atoms_per_batch must be at least 1")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError("valid_fraction must be between 0 and 1")
        if self.free_atoms not in ("cohesive", "fit"):
            raise ValueError(f"free_atoms must be 'cohesive' or 'fit', got {self.free_atoms!r}")


def cohesive_free_atoms(labels: Labels) -> dict[int, tuple[float, float]]:
    """Free-atom energy estimates {Z: (lowest energy per atom, cohesive energy)}, eV, for
    the elements that have training structures of their own and a tabulated experimental
    cohesive energy (Kittel, Introduction to Solid State Physics, 8th ed., table 3.1, as
    ``ase.data.cohesive_energies`` holds it). The estimate is their sum: the free atom
    lies the cohesive energy above the element's ground state, and the lowest structure
    in the data stands in for the ground state."""
    try:
        from ase.data.cohesive_energies import cohesive_energy
    except ImportError:  # ASE before the table was added
        return {}
    lowest: dict[int, float] = {}
    for atoms, energy in zip(labels.atoms, labels.energy):
        elements = set(atoms.numbers.tolist())
        if len(elements) == 1 and np.isfinite(energy):
            z = elements.pop()
            lowest[z] = min(lowest.get(z, np.inf), energy / len(atoms))
    return {z: (e, float(cohesive_energy[z])) for z, e in lowest.items()
            if z < len(cohesive_energy) and cohesive_energy[z] is not None}


def reference_energies(labels, species: tuple[int, ...], isolated: tuple,
                       model: ModelConfig, free_atoms: str) -> tuple[np.ndarray, list[str]]:
    """Per-species reference energies [S] and where each came from: least squares on the
    training energies, with the free-atom energies of ``isolated`` ((symbol, eV) pairs)
    put in their place and, with ``free_atoms="cohesive"``, estimates from
    :func:`cohesive_free_atoms` for the rest (free-atom-zero models only)."""
    e_ref = fit_reference_energies(labels, species)
    source = ["least squares"] * len(species)
    if not model.free_atom_zero:
        if isolated:
            raise ValueError("isolated_energies need a model that gives a free atom zero "
                             "energy: set [model] zero_isolated = true (or sqrt_density = true)")
        return e_ref, source
    if free_atoms == "cohesive":
        for z, (lowest, coh) in cohesive_free_atoms(labels).items():
            if z in species:
                s = species.index(z)
                e_ref[s] = lowest + coh
                source[s] = (f"free atom: lowest {chemical_symbols[z]} structure "
                             f"{lowest:.4f} + cohesive energy {coh:.3f}")
    for symbol, energy in isolated:
        if symbol not in chemical_symbols[1:]:
            raise ValueError(f"isolated_energies: {symbol!r} is not an element symbol")
        z = chemical_symbols.index(symbol)
        if z not in species:
            raise ValueError(f"isolated_energies names {symbol}, which the training data "
                             "do not contain")
        s = species.index(z)
        e_ref[s], source[s] = energy, "free atom: isolated_energies"
    return e_ref, source


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * lr_final`` (progress in [0, 1])."""
    if progress < cfg.warmup:
        return cfg.lr * max(progress / cfg.warmup, 0.01)
    t = min((progress - cfg.warmup) / max(1.0 - cfg.warmup, 1e-9), 1.0)
    return cfg.lr * (cfg.lr_final + (1.0 - cfg.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def loss_weights(cfg: TrainConfig, progress: float) -> tuple[float, float, float]:
    """(w_energy, w_forces, w_stress) at this progress (energy boosted at the end)."""
    boost = cfg.energy_boost if progress >= 1.0 - cfg.boost_fraction else 1.0
    return (cfg.w_energy * boost, cfg.w_forces, cfg.w_stress)


class State(NamedTuple):
    """Training state; every array has a leading committee axis [M, ...]."""

    params: object
    opt_state: object
    ema: object
    step: jax.Array


def _optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    # The learning rate is applied outside (it is a traced argument: no recompilation).
    return optax.chain(optax.clip_by_global_norm(cfg.clip), optax.scale_by_adam(),
                       optax.add_decayed_weights(cfg.weight_decay))


@functools.lru_cache(maxsize=8)
def make_step(model: ModelConfig, cfg: TrainConfig) -> Callable:
    """Jitted ``step(state, fixed, batch, lr, weights) -> (state, metrics)`` for a committee.

    ``fixed`` holds the parameters that are not trained (reference energies, scale);
    ``batch`` has a leading member axis (each member sees its own structures). Cached
    per configuration, so runs in one process (resumes, tests) compile once.
    """
    potential = _bare(model)
    tx = _optimizer(cfg)

    def loss_fn(net, fixed, b, weights):
        params = {"net": net, **fixed}
        terms = loss_terms(errors(predict(potential, params, b), b), b)
        total = weights[0] * terms["energy"] + weights[1] * terms["forces"] \
            + weights[2] * terms["stress"]
        return total, terms

    def one(params, opt_state, ema, step, fixed, b, lr, weights):
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, fixed, b,
                                                                          weights)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        decay = jnp.minimum(cfg.ema, (1.0 + step) / (10.0 + step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        return params, opt_state, ema, {"loss": loss, **terms}

    @jax.jit
    def step(state: State, fixed, batch, lr, weights):
        if jax.tree.leaves(state.params)[0].shape[0] == 1:
            # One member: drop the member axis inside (XLA's CPU kernels run slower
            # under a vmap of size 1).
            first = functools.partial(jax.tree.map, lambda x: x[0])
            out = one(first(state.params), first(state.opt_state), first(state.ema),
                      state.step, fixed, first(batch), lr, weights)
            params, opt_state, ema, metrics = jax.tree.map(lambda x: x[None], out)
        else:
            params, opt_state, ema, metrics = jax.vmap(
                one, in_axes=(0, 0, 0, None, None, 0, None, None))(
                state.params, state.opt_state, state.ema, state.step, fixed, batch, lr,
                weights)
        return State(params, opt_state, ema, state.step + 1), metrics

    return step


def _bare(model: ModelConfig) -> EquivariantPotential:
    """The potential with parameters supplied at call time."""
    return EquivariantPotential(model, params={"net": None, "e_ref": None, "scale": None})


@functools.lru_cache(maxsize=8)
def make_scorer(model: ModelConfig) -> Callable:
    """Jitted ``score(net [M, ...], fixed, batch) -> residuals [M, ...]`` (one batch for all)."""
    potential = _bare(model)
    @jax.jit
    def score(net, fixed, b):
        def one(p):
            return errors(predict(potential, {"net": p, **fixed}, b), b)
        return jax.vmap(one)(net)
    return score


def score_set(score, net, fixed, packer: Packer, labels: Labels, dtype, cache) -> dict:
    """Per-member metrics on a data set: MAE and RMSE of E/atom, forces, stress."""
    sums = {}
    for group in packer.plan(labels):
        b = to_device(packer.batch(labels, group, cache), dtype)
        err = jax.device_get(score(net, fixed, b))
        for key, value in err.items():
            sums.setdefault(key, []).append(np.asarray(value))
    return metrics_from_residuals(sums, labels)


def metrics_from_residuals(residuals: dict, labels: Labels) -> dict:
    """MAE / RMSE per member from lists of per-batch residual arrays (zeros where masked)."""
    n_s = len(labels)
    n_f = 3 * int(labels.n_atoms.sum())
    n_v = 9 * max(int(labels.has_stress.sum()), 1)
    out = {}
    for key, count in (("energy", n_s), ("forces", n_f), ("stress", n_v)):
        arrays = [a.reshape(a.shape[0], -1) for a in residuals[key]]
        flat = np.concatenate(arrays, axis=1)
        out[f"{key}_mae"] = np.abs(flat).sum(1) / count
        out[f"{key}_rmse"] = np.sqrt((flat ** 2).sum(1) / count)
    return out


def split(structures: list, fraction: float, seed: int) -> tuple[list, list]:
    """Random (train, valid) split of a list, seeded."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(structures))
    n_valid = max(1, int(round(fraction * len(structures))))
    valid = sorted(order[:n_valid])
    train = sorted(order[n_valid:])
    return [structures[i] for i in train], [structures[i] for i in valid]


def average_neighbors(labels: Labels, cutoff: float) -> float:
    counts = np.concatenate([neighbor_arrays(a, cutoff)[2] for a in labels.atoms])
    return float(max(counts.mean(), 1.0))


def shortest_distance(labels: Labels, cutoff: float) -> float:
    """The shortest interatomic distance in a data set (Å; ``cutoff`` if none closer)."""
    from ase.neighborlist import neighbor_list
    best = cutoff
    for atoms in labels.atoms:
        d = neighbor_list("d", atoms, cutoff) if all(atoms.pbc) else np.array([])
        if len(d):
            best = min(best, float(d.min()))
    return best


def force_scale(labels: Labels) -> float:
    rms = np.sqrt(np.mean(np.concatenate([f.ravel() for f in labels.forces]) ** 2))
    return float(rms) if np.isfinite(rms) and rms > 1e-6 else 1.0


def train(train_structures: list, valid_structures: list | None, model: ModelConfig,
          cfg: TrainConfig, out: str, *, progress: bool = True,
          log: Callable[[str], None] = print, warm_start=None) -> "checkpoint.Trained":
    """Train (or resume) a potential or committee and save it to ``out``.

    Args:
      train_structures, valid_structures: labelled ``ase.Atoms`` (see
        :func:`jcsp.ml.data.read_structures`); without a validation set,
        ``cfg.valid_fraction`` of the training set is held out.
      model: network configuration; ``species`` is completed from the data and
        ``avg_neighbors`` measured on it.
      cfg: optimisation settings.
      out: output directory (created; an existing checkpoint there is resumed).
      warm_start: the network weights to start from instead of random ones (a trained
        potential's ``params["net"]``; for a committee, stacked on the member axis with
        ``cfg.committee`` members), with ``model`` the configuration they belong to,
        kept as it is (species, ``avg_neighbors`` and ``inner_cutoff`` are not
        re-measured, so a potential retrained on more data keeps its static shape and
        a relaxation compiled for it is reused). Ignored when ``out`` is resumed.

    Returns:
      The trained potential (final EMA weights, or those of the best validated epoch if
      the run stopped early) and its history.
    """
    if valid_structures is None:
        train_structures, valid_structures = split(train_structures, cfg.valid_fraction, cfg.seed)
    train_labels, valid_labels = labels_of(train_structures), labels_of(valid_structures)
    for name, lab in (("training", train_labels), ("validation", valid_labels)):
        bad = [i for i, f in enumerate(lab.forces) if not np.all(np.isfinite(f))]
        if bad:
            raise ValueError(f"{name} structure {bad[0]} has missing or non-finite forces")
    present = sorted({int(z) for a in train_structures for z in a.numbers})
    species = tuple(sorted(set(present) | set(model.species or ())))
    missing = sorted({int(z) for a in valid_structures for z in a.numbers} - set(species))
    if missing:
        raise ValueError(f"the validation set has species {missing} absent from training")
    dtype = jnp.float32 if cfg.dtype == "float32" else jnp.float64
    resumed = checkpoint.load_state(out) if os.path.exists(os.path.join(out, "state.pkl")) else None
    if resumed is not None:
        model = resumed.model
        if resumed.train_config != cfg:
            raise checkpoint.CheckpointError(
                f"{out} holds a run with different settings ({resumed.train_config}); "
                "use another output directory or the same settings to resume")
    elif warm_start is not None:
        if not set(species) <= set(model.species or ()):
            raise ValueError(f"warm_start: the data has species {species} beyond the model's "
                             f"{model.species}")
    else:
        model = dataclasses.replace(model, species=species,
                                    avg_neighbors=average_neighbors(train_labels, model.cutoff),
                                    inner_cutoff=shortest_distance(train_labels, model.cutoff))
    packer = Packer.for_data([train_labels, valid_labels], model.cutoff,
                             atoms_per_batch=cfg.atoms_per_batch)
    e_ref, source = reference_energies(train_labels, species, cfg.isolated_energies, model,
                                       cfg.free_atoms)
    log("reference energies (eV/atom): " + "; ".join(
        f"{chemical_symbols[z]} {e:.4f} ({src})" for z, e, src in zip(species, e_ref, source)))
    fixed = {"e_ref": jnp.asarray(e_ref, dtype),
             "scale": jnp.asarray(force_scale(train_labels), dtype)}
    tx = _optimizer(cfg)
    members = cfg.committee
    if resumed is None:
        if warm_start is None:
            keys = jax.random.split(jax.random.PRNGKey(cfg.seed), members)
            nets = [init_params(model, k, dtype=dtype) for k in keys]
            net = jax.tree.map(lambda *x: jnp.stack(x), *nets)
        else:
            net = jax.tree.map(lambda x: jnp.asarray(x, dtype), warm_start)
            single = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
            if members == 1 and jax.tree.leaves(net)[0].ndim == jax.tree.leaves(single)[0].ndim:
                net = jax.tree.map(lambda x: x[None], net)
            if jax.tree.leaves(net)[0].shape[0] != members:
                raise ValueError(f"warm_start has {jax.tree.leaves(net)[0].shape[0]} members, "
                                 f"the settings ask for {members}")
        state = State(net, jax.vmap(tx.init)(net), net, jnp.zeros((), jnp.int32))
        history, best_loss, best_net, epoch0, elapsed0 = [], np.inf, net, 0, 0.0
        rngs = [np.random.default_rng([cfg.seed, m]) for m in range(members)]
    else:
        state = State(*resumed.state)
        state = jax.tree.map(lambda x: jnp.asarray(x), state)
        history, best_loss, best_net = resumed.history, resumed.best_loss, resumed.best_net
        epoch0, elapsed0 = resumed.epoch, resumed.elapsed
        rngs = resumed.rngs
        fixed = jax.tree.map(lambda x: jnp.asarray(x, dtype), resumed.fixed)
        log(f"resuming {out} at epoch {epoch0}")
    state = State(cast(state.params, dtype), state.opt_state, cast(state.ema, dtype), state.step)
    step = make_step(model, cfg)
    score = make_scorer(model)
    cache: dict = {}
    t_start = time.perf_counter() - elapsed0
    bar = _progress(cfg.epochs, epoch0, progress)
    stale = _stale_epochs(history) if history else 0
    epoch = epoch0
    for epoch in range(epoch0, cfg.epochs):
        elapsed = time.perf_counter() - t_start
        if elapsed >= cfg.max_time or stale >= cfg.patience:
            break
        plans = [packer.plan(train_labels, rng) for rng in rngs]
        n_steps = max(len(p) for p in plans)
        losses = []
        for i in range(n_steps):
            prog = max((epoch + i / n_steps) / cfg.epochs,
                       (time.perf_counter() - t_start) / cfg.max_time)
            groups = [p[i % len(p)] for p in plans]
            batch = jax.device_put(_stack([to_host(packer.batch(train_labels, g, cache), dtype)
                                           for g in groups]))
            first = cfg.clock_after_compile and epoch == epoch0 and i == 0
            t_call = time.perf_counter()
            state, metrics = step(state, fixed, batch, jnp.asarray(learning_rate(cfg, prog), dtype),
                                  jnp.asarray(loss_weights(cfg, prog), dtype))
            if first:  # the first call compiles: keep it off the clock
                jax.block_until_ready(state)
                t_start += time.perf_counter() - t_call
            losses.append(metrics["loss"])  # read at the end of the epoch: no sync per step
        t_call = time.perf_counter()
        valid = score_set(score, state.ema, fixed, packer, valid_labels, dtype, cache)
        if cfg.clock_after_compile and epoch == epoch0:
            t_start += time.perf_counter() - t_call
        # Model selection: energy and force errors in units of the accuracy one asks of
        # a DFT surrogate (select_energy eV/atom ~ select_forces eV/Å), so that neither
        # dominates (the loss reweights energy in its last phase).
        vloss = ((valid["energy_mae"] / cfg.select_energy) ** 2
                 + (valid["forces_mae"] / cfg.select_forces) ** 2)
        vloss = float(np.mean(vloss))
        row = {"epoch": epoch + 1, "time": time.perf_counter() - t_start, "progress": prog,
               "lr": learning_rate(cfg, prog), "train_loss": float(np.mean(jax.device_get(losses))),
               "valid_loss": vloss,
               "valid_energy_mae": float(np.mean(valid["energy_mae"])),
               "valid_forces_mae": float(np.mean(valid["forces_mae"])),
               "valid_stress_mae": float(np.mean(valid["stress_mae"]))}
        history.append(row)
        if vloss < best_loss:
            best_loss, best_net, stale = vloss, state.ema, 0
        else:
            stale += 1
        if not progress and (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
        # The run ends at the epoch cap or the time budget, whichever comes first: show the
        # epochs the budget is heading for, so the bar's remaining time is the real one.
        bar.total = min(cfg.epochs, max(epoch + 1, round((epoch + 1) / max(prog, 1e-9))))
        bar.update(1)
        bar.set_postfix_str(f"loss {row['train_loss']:.4g} | valid E {1e3 * row['valid_energy_mae']:.2f} "
                            f"meV/atom F {row['valid_forces_mae']:.3f} eV/Å | lr {row['lr']:.2g}")
        checkpoint.save_state(out, checkpoint.RunState(
            model=model, train_config=cfg, state=jax.device_get(state), fixed=jax.device_get(fixed),
            best_net=jax.device_get(best_net), best_loss=best_loss, history=history,
            epoch=epoch + 1, elapsed=time.perf_counter() - t_start, rngs=rngs))
        if prog >= 1.0:
            break
    bar.close()
    # A run that completes its schedule keeps its final EMA weights: the energies of rare
    # structures (surfaces, vacancies) are fitted only in the energy-weighted final
    # phase, and a 10 % validation split of ~200 structures holds zero or one of them,
    # so picking the best-validated epoch is mostly noise that can land before that
    # phase. Early-stopped runs keep their best epoch.
    early = stale >= cfg.patience
    kept = best_net if early or not history else state.ema
    trained = checkpoint.save_model(out, model, cfg, jax.device_get(kept),
                                    jax.device_get(fixed), history,
                                    species_counts=_composition(train_structures))
    # Feature statistics of the training atoms: the extrapolation grade of jcsp.ml.domain.
    trained.potential.domain = fit_domain(trained.potential, train_structures)
    checkpoint.save_domain(out, trained.potential.domain)
    row = _best_row(history) if early else _row(history[-1]) if history else {}
    log(f"trained {members} model(s) for {len(history)} epochs in "
        f"{history[-1]['time'] if history else 0:.0f} s; kept "
        f"{'the best validated' if early else 'the last'} epoch: "
        + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
    return trained


def _stale_epochs(history: list[dict]) -> int:
    losses = [h["valid_loss"] for h in history]
    best = int(np.argmin(losses))
    return len(losses) - 1 - best


def _best_row(history: list[dict]) -> dict:
    return _row(min(history, key=lambda h: h["valid_loss"])) if history else {}


def _row(row: dict) -> dict:
    return {"epoch": row["epoch"], "E MAE meV/atom": 1e3 * row["valid_energy_mae"],
            "F MAE eV/Å": row["valid_forces_mae"]}


def _composition(structures: list) -> dict:
    counts: dict = {}
    for a in structures:
        for z in a.numbers:
            counts[int(z)] = counts.get(int(z), 0) + 1
    return counts


def _stack(batches: list[dict]) -> dict:
    """Host batches stacked on a leading member axis (numpy)."""
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="epoch",
                desc="training", dynamic_ncols=True)

"""The diffusion generator: noise processes against direct formulas and sampling, the
denoiser's symmetries (float64), sampling, training resume and checkpoints."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

import jcsp  # noqa: F401  (float64)
from jcsp.generative import GeneratorTrainConfig, data, load, train
from jcsp.generative.denoiser import DenoiserConfig, apply, init_params
from jcsp.generative.diffusion import Schedule, noise, score_mean_square, wrapped_normal_score
from jcsp.generative.model import composition_numbers
from jcsp.generative.sampling import make_sampler, step_sequence
from jcsp.ml.checkpoint import CheckpointError

TINY = DenoiserConfig(elements=(8, 22, 38), channels=8, l_max=2, n_layers=2, correlation=3,
                      radial_hidden=8, n_freq=3, time_dim=8, hidden=16)


def _log_wrapped_normal(x, sigma):
    """log of the wrapped normal density, summed directly over 41 images."""
    k = np.arange(-20, 21)
    e = -(x[..., None] + k) ** 2 / (2 * sigma ** 2)
    top = e.max(-1)
    return top + np.log(np.exp(e - top[..., None]).sum(-1)) - 0.5 * np.log(2 * np.pi * sigma ** 2)


def test_wrapped_normal_score_is_the_derivative_of_the_log_density():
    rng = np.random.default_rng(0)
    for sigma in (0.01, 0.1, 0.5, 1.0):
        x = rng.uniform(-0.5, 0.5, 50)
        h = 1e-6 * sigma
        fd = (_log_wrapped_normal(x + h, sigma) - _log_wrapped_normal(x - h, sigma)) / (2 * h)
        np.testing.assert_allclose(wrapped_normal_score(x, sigma), fd, rtol=1e-6, atol=1e-6)
    # Periodic: shifting by a whole period changes nothing.
    np.testing.assert_allclose(wrapped_normal_score(x + 3.0, 0.3), wrapped_normal_score(x, 0.3),
                               atol=1e-9)


def test_score_mean_square_against_monte_carlo():
    rng = np.random.default_rng(1)
    sigma = np.array([0.005, 0.05, 0.2, 0.5])
    lam = score_mean_square(sigma)
    x = sigma * rng.standard_normal((400_000, 4))
    mc = np.mean(wrapped_normal_score(x, sigma) ** 2, axis=0)
    np.testing.assert_allclose(lam, mc, rtol=0.01)
    # Narrow widths: the plain normal's Fisher information 1 / sigma^2.
    assert lam[0] == pytest.approx(1 / 0.005 ** 2, rel=1e-6)


def test_forward_process_moments_and_targets():
    schedule = Schedule.build(100)
    rng = np.random.default_rng(2)
    n = 20000
    lattice = np.tile(np.diag([4.0, 5.0, 6.0]), (n, 1, 1))
    frac = np.full((n, 1, 3), 0.25)
    t = np.full(n, 60)
    eps_l = rng.standard_normal((n, 3, 3))
    eps_f = rng.standard_normal((n, 1, 3))
    lt, ft, target = noise(schedule, jnp.asarray(lattice), jnp.asarray(frac), jnp.asarray(t),
                           jnp.asarray(eps_l), jnp.asarray(eps_f))
    abar = schedule.alpha_bar[60]
    np.testing.assert_allclose(np.mean(lt, 0), np.sqrt(abar) * lattice[0], atol=0.03)
    np.testing.assert_allclose(np.var(lt, 0), (1 - abar) * np.ones((3, 3)), rtol=0.05)
    assert np.all((ft >= 0) & (ft < 1))
    # The coordinate target is -d/dx log p(x_t | x_0) / sqrt(lambda_t), by finite differences.
    sigma = schedule.sigma[60]
    d = sigma * eps_f[:5]
    h = 1e-6
    fd = (_log_wrapped_normal(d + h, sigma) - _log_wrapped_normal(d - h, sigma)) / (2 * h)
    np.testing.assert_allclose(np.asarray(target[:5]), -fd / schedule.score_scale[60],
                               rtol=1e-5, atol=1e-6)


def _rotation(rng, reflect=False):
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] *= -1
    return q


@pytest.fixture(scope="module")
def params64():
    p = init_params(TINY, jax.random.PRNGKey(3))
    # Random biases too, so no symmetry holds by accident of zero initialisation.
    leaves, tree = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    leaves = [x.astype(jnp.float64) + 0.1 * jax.random.normal(k, x.shape, jnp.float64)
              for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def test_denoiser_symmetries_float64(params64):
    rng = np.random.default_rng(5)
    species = jnp.array([[2, 1, 0, 0, 0, 1]])
    frac = jnp.asarray(rng.random((1, 6, 3)))
    lattice = jnp.asarray(4.0 * np.eye(3) + rng.normal(0, 0.5, (3, 3)))[None]
    mask = jnp.array([[True] * 5 + [False]])
    t = jnp.array([0.37])
    out = apply(TINY, params64, species, frac, lattice, mask, t)
    eps_l, eps_f, energy = out
    assert eps_l.dtype == jnp.float64
    for reflect in (False, True):
        q = _rotation(rng, reflect)
        rl, rf, re = apply(TINY, params64, species, frac, lattice @ q.T, mask, t)
        np.testing.assert_allclose(rl, eps_l @ q.T, atol=1e-12)
        np.testing.assert_allclose(rf, eps_f, atol=1e-12)
        np.testing.assert_allclose(re, energy, atol=1e-12)
    perm = np.array([4, 2, 0, 3, 1, 5])
    pl, pf, pe = apply(TINY, params64, species[:, perm], frac[:, perm], lattice,
                       mask[:, perm], t)
    np.testing.assert_allclose(pl, eps_l, atol=1e-12)
    np.testing.assert_allclose(pf, eps_f[:, perm], atol=1e-12)
    shift = rng.random(3)
    tl, tf, _ = apply(TINY, params64, species, (frac + shift) % 1.0, lattice, mask, t)
    np.testing.assert_allclose(tl, eps_l, atol=1e-12)
    np.testing.assert_allclose(tf, eps_f, atol=1e-12)
    # A padded atom changes nothing, wherever it sits, and gets a zero output.
    moved = frac.at[0, 5].set(jnp.asarray(rng.random(3)))
    ml, mf, _ = apply(TINY, params64, species, moved, lattice, mask, t)
    np.testing.assert_allclose(ml, eps_l, atol=1e-12)
    np.testing.assert_allclose(mf, eps_f, atol=1e-12)
    assert float(jnp.abs(eps_f[0, 5]).max()) == 0.0
    # ... while moving a real atom does change the outputs (the test can fail).
    moved = frac.at[0, 1].add(0.1)
    assert not np.allclose(apply(TINY, params64, species, moved, lattice, mask, t)[1], eps_f)


def test_step_sequence_and_bad_steps():
    schedule = Schedule.build(50)
    seq = step_sequence(schedule, None)
    assert seq[0] == 50 and seq[-1] == 0 and len(seq) == 51 and np.all(np.diff(seq) < 0)
    coarse = step_sequence(schedule, 10)
    assert coarse[0] == 50 and coarse[-2] == 1 and len(coarse) == 11
    with pytest.raises(ValueError, match="sampling steps"):
        step_sequence(schedule, 0)


def test_sampler_is_seeded_and_keeps_the_composition(params64):
    schedule = Schedule.build(20)
    sampler = make_sampler(TINY, schedule, None, 5e-7, True)
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), params64)
    species = jnp.array([[2, 1, 0, 0, 0], [1, 0, 0, 0, 0]], jnp.int32)
    mask = jnp.array([[True] * 5, [True, True, False, False, False]])
    a = sampler(p32, species, mask, jax.random.PRNGKey(0))
    b = sampler(p32, species, mask, jax.random.PRNGKey(0))
    c = sampler(p32, species, mask, jax.random.PRNGKey(1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[1], c[1])
    lattice, frac, energy = a
    assert lattice.shape == (2, 3, 3) and frac.shape == (2, 5, 3) and energy.shape == (2,)
    assert np.all(np.isfinite(lattice)) and np.all((frac >= 0) & (frac <= 1))
    assert np.all(frac[1, 2:] == 0)


def _first_rows(split: str, n: int, tmp) -> list:
    """The first n crystals of a Perov-5 split, through a small CSV (parsing the whole
    split would take most of this file's time budget)."""
    path = data._perov5_root(None) / f"{split}.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        rows = list(itertools.islice(csv.reader(fh), n + 1))
    out = tmp / f"{split}.csv"
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return data.read_collection(str(out))


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("perov")
    return data.pack(_first_rows("train", 96, tmp)), data.pack(_first_rows("val", 8, tmp))


TRAIN = GeneratorTrainConfig(epochs=2, batch_size=32, warmup_steps=2, val_every=100,
                             val_structures=4, val_steps=5, steps=20, seed=7)


def test_training_resumes_bit_identically(tiny_sets, tmp_path):
    # Without a validation set (validation is exercised by the tiny_model fixture).
    train_set, val_set = tiny_sets[0], None
    straight = train(train_set, val_set, str(tmp_path / "a"), model=TINY, config=TRAIN,
                     progress=False, log=lambda *_: None)
    # Stop after the first epoch: a one-epoch run's state, then resume to two epochs.
    one = GeneratorTrainConfig(**{**TRAIN.__dict__, "epochs": 1})
    train(train_set, val_set, str(tmp_path / "b"), model=TINY, config=one, progress=False,
          log=lambda *_: None)
    state_path = tmp_path / "b" / "state.pkl"
    with open(state_path, "rb") as fh:
        run = pickle.load(fh)
    assert run.epoch == 1
    run.train_config = TRAIN  # the same run, interrupted after epoch 1
    with open(state_path, "wb") as fh:
        pickle.dump(run, fh)
    resumed = train(train_set, val_set, str(tmp_path / "b"), model=TINY, config=TRAIN,
                    progress=False, log=lambda *_: None)
    for x, y in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    history = straight.meta["history"]
    assert [int(h["epoch"]) for h in history] == [1, 2]
    assert float(history[1]["loss"]) < float(history[0]["loss"]) * 1.5
    # Other settings in the same directory: refused, nothing overwritten.
    other = GeneratorTrainConfig(**{**TRAIN.__dict__, "lr": 5e-4})
    with pytest.raises(CheckpointError, match="other settings"):
        train(train_set, val_set, str(tmp_path / "a"), model=TINY, config=other,
              progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def tiny_model(tiny_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "model"
    train_set, val_set = tiny_sets
    cfg = GeneratorTrainConfig(**{**TRAIN.__dict__, "epochs": 1})
    train(train_set, val_set, str(out), model=TINY, config=cfg, progress=False,
          log=lambda *_: None)
    return out


def test_load_sample_and_bad_input(tiny_model):
    model = load(str(tiny_model))
    elements = model.elements
    assert set(elements) >= {8}
    known = [z for z in elements if z != 8][:2]
    formula = {jcsp_symbol(known[0]): 1, jcsp_symbol(known[1]): 1, "O": 3}
    with pytest.warns(UserWarning):
        samples = model.sample([formula, formula], 3, seed=1, n_steps=5)
    assert len(samples) == 2 and all(len(s) == 3 for s in samples)
    for s in samples[0]:
        assert sorted(s.numbers) == sorted(composition_numbers(formula))
        assert s.pbc.all() and np.isfinite(s.cell.array).all()
    with pytest.warns(UserWarning):
        again = model.sample([formula, formula], 3, seed=1, n_steps=5)
    np.testing.assert_array_equal(samples[1][2].positions, again[1][2].positions)
    with pytest.raises(ValueError, match="no embedding for Og"):
        model.sample(["OgO3"], 1)
    with pytest.raises(ValueError, match="unknown element"):
        model.sample([{"Xx": 1}], 1)
    with pytest.raises(ValueError, match="empty composition"):
        model.sample([""], 1)
    with pytest.raises(ValueError, match="n_samples"):
        model.sample([formula], 0)
    proposals = model.propose(composition_numbers(formula), 2, seed=3)
    assert len(proposals) == 2
    # A request cut into pieces of whole batches (first_batch counting the batches
    # before each piece) draws exactly the crystals of the whole request; the last
    # piece is short (one composition, 3 crystals of a 6-wide batch). All cells have
    # 5 atoms, so every piece pads to the same width.
    a_, b_ = (jcsp_symbol(z) for z in known)
    five = [formula, {a_: 2, "O": 3}, formula, {b_: 2, "O": 3}, formula]
    with pytest.warns(UserWarning):
        whole = model.sample(five, 3, seed=2, n_steps=4, batch_size=6)
        pieces = (model.sample(five[:2], 3, seed=2, n_steps=4, batch_size=6)
                  + model.sample(five[2:4], 3, seed=2, n_steps=4, batch_size=6,
                                 first_batch=1)
                  + model.sample(five[4:], 3, seed=2, n_steps=4, batch_size=6,
                                 first_batch=2))
        shifted = model.sample(five[2:4], 3, seed=2, n_steps=4, batch_size=6)
    for a, b in zip(sum(whole, []), sum(pieces, [])):
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.allclose(shifted[0][0].positions, whole[2][0].positions)
    with pytest.raises(ValueError, match="first_batch"):
        model.sample([formula], 1, first_batch=-1)


def jcsp_symbol(z: int) -> str:
    from ase.data import chemical_symbols
    return chemical_symbols[z]


def test_corrupt_and_mismatched_checkpoints(tiny_model, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    blob = bytearray((bad / "params.msgpack").read_bytes())
    blob[100] ^= 0xFF
    (bad / "params.msgpack").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        load(str(bad))
    shutil.copy(tiny_model / "params.msgpack", bad / "params.msgpack")
    meta = json.loads((bad / "generator.json").read_text())
    meta["denoiser"]["channels"] = 12
    (bad / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="configuration|shapes"):
        load(str(bad))
    (bad / "generator.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load(str(bad))
    with pytest.raises(CheckpointError, match="no generator.json"):
        load(str(tmp_path / "nowhere"))
    assert not os.path.exists(tmp_path / "nowhere")


def test_composition_numbers():
    assert sorted(composition_numbers("SrTiO3")) == [8, 8, 8, 22, 38]
    assert composition_numbers({"Si": 2}) == [14, 14]
    assert composition_numbers(bulk("NaCl", "rocksalt", a=5.6).numbers) == [11, 17]
    with pytest.raises(ValueError, match="positive"):
        composition_numbers({"Si": 0})

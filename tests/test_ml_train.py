"""Training, checkpoints, resume, committees and data readers of the ML potential.

The training set is silicon labelled by the Stillinger-Weber potential (itself checked
against LAMMPS in test_stillinger_weber.py); a tiny network must learn it well beyond
its untrained error. mlearn files come from ../shared/data.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

import jcsp
from jcsp.ml import CheckpointError, DataError, ModelConfig, TrainConfig, checkpoint, train
from jcsp.ml.data import detect_shear_order, read_mlearn, read_structures
from jcsp.ml.evaluate import metrics, predict_structures
from jcsp.potentials import StillingerWeber
from lammps_ref import IN_CI  # CI has ../shared: missing data fails there

MLEARN = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mlearn")
SW_FILE = "/usr/share/lammps/potentials/Si.sw"

TINY = ModelConfig(cutoff=3.8, channels=4, l_max=1, n_layers=1, correlation=2, n_radial=4,
                   radial_hidden=0, readout_hidden=4)


def _sw():
    from jcsp.io import load_potential
    return load_potential("sw-si")


def _si_set(n, seed):
    """Rattled, strained 8-atom diamond cells labelled by Stillinger-Weber."""
    rng = np.random.default_rng(seed)
    calc = jcsp.JCSPCalculator(_sw())
    out = []
    for _ in range(n):
        atoms = bulk("Si", "diamond", 5.43, cubic=True)
        strain = np.eye(3) + 0.03 * rng.normal(size=(3, 3))
        atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
        atoms.positions += 0.12 * rng.normal(size=atoms.positions.shape)
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def committee_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model"))
    train_set, valid_set = _si_set(12, 0), _si_set(4, 1)
    # Force-weighted loss: 40 epochs of a tiny model are meant to learn the forces here.
    cfg = TrainConfig(epochs=40, lr=2e-2, atoms_per_batch=16, committee=2, seed=3,
                      w_energy=0.1, energy_boost=10.0)
    trained = train(train_set, valid_set, TINY, cfg, out, progress=False, log=lambda s: None)
    return out, trained, valid_set


def test_training_learns_the_reference(committee_run):
    out, trained, valid_set = committee_run
    pot = jcsp.ml.load(out).potential
    assert isinstance(pot, jcsp.ml.Committee) and pot.committee_size == 2
    after = metrics(predict_structures(pot, valid_set))
    # The same network before training (reference energies and scale as trained).
    untrained = jcsp.ml.Committee(pot.config, {**pot.params, "net": jax.tree.map(
        lambda x: x * 0 + jax.random.normal(jax.random.PRNGKey(0), x.shape) * 0.3,
        pot.params["net"])})
    before = metrics(predict_structures(untrained, valid_set))
    assert after["forces_mae"] < 0.5 * before["forces_mae"]
    print(before, after)
    assert after["forces_mae"] < 0.35  # SW forces here are ~1 eV/Å
    assert after["energy_mae"] < 0.03
    # Committee spread is reported and positive; members differ.
    assert after["forces_std_mean"] > 0 and np.isfinite(after["forces_spearman"])
    leaves = jax.tree.leaves(pot.params["net"])
    assert any(float(np.abs(x[0] - x[1]).max()) > 1e-3 for x in leaves)
    # The ASE calculator gives the committee mean and its spread.
    atoms = valid_set[0].copy()
    atoms.calc = jcsp.JCSPCalculator(pot)
    atoms.get_potential_energy()
    assert atoms.calc.results["energy_std"] > 0
    assert atoms.calc.results["forces_std"].shape == (8, 3)


def test_history_and_files(committee_run):
    out, trained, _ = committee_run
    assert {"model.json", "params.msgpack", "history.csv", "state.pkl"} <= set(os.listdir(out))
    assert len(trained.history) == 40
    meta = json.load(open(os.path.join(out, "model.json")))
    assert meta["committee"] == 2 and meta["model"]["species"] == [14]
    # A run that completes its schedule keeps its final EMA weights (not an earlier
    # epoch picked by the validation score).
    run = checkpoint.load_state(out)
    assert run.epoch == 40
    saved = jcsp.ml.load(out).potential.params["net"]
    for x, y in zip(jax.tree.leaves(run.state.ema), jax.tree.leaves(saved)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6)
    best = int(np.argmin([h["valid_loss"] for h in run.history])) + 1
    if best != run.epoch:  # (here the score is best at epoch 30)
        assert any(float(np.abs(np.asarray(x) - np.asarray(y)).max()) > 1e-6
                   for x, y in zip(jax.tree.leaves(run.best_net), jax.tree.leaves(saved)))


def test_trained_model_relaxes_and_searches(committee_run):
    """A trained potential drops into jcsp.relax like a classical one."""
    out, _, _ = committee_run
    pot = jcsp.ml.load(out).potential
    atoms = bulk("Si", "diamond", 5.5, cubic=True)
    atoms.rattle(0.05, seed=1)
    result = jcsp.relax([atoms], pot, fmax=0.05, max_steps=300, progress=False)
    assert result[0].info["converged"] and not result[0].info["failed"]
    assert result[0].info["max_force"] < 0.05


def test_training_domain_and_extrapolation_grade(committee_run):
    """The saved training domain grades the training atoms within 1 (exactly 1 at the
    farthest one), is invariant to rotation, translation and atom order, and grades a
    dense arrangement unlike any training cell far outside."""
    out, _, valid_set = committee_run
    pot = jcsp.ml.load(out).potential
    assert pot.domain is not None and pot.domain.mean.shape == (2, TINY.readout_hidden)
    train_grades = jcsp.ml.extrapolation_grades(pot, _si_set(12, 0))
    assert train_grades.max() == pytest.approx(1.0, abs=1e-9)
    assert np.all(jcsp.ml.extrapolation_grades(pot, valid_set) < 2.0)

    atoms = valid_set[0].copy()
    moved = atoms.copy()
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    moved.set_cell(moved.cell[:] @ rot.T, scale_atoms=False)
    moved.positions = moved.positions @ rot.T + np.array([0.3, -1.1, 2.0])
    order = np.random.default_rng(1).permutation(len(moved))
    moved = moved[order]
    g = jcsp.ml.extrapolation_grades(pot, [atoms, moved])
    assert g[1] == pytest.approx(g[0], rel=1e-8)

    dense = bulk("Si", "fcc", 3.2, cubic=True)  # 8.2 Å^3/atom, bonds of 2.26 Å, 12-fold
    assert jcsp.ml.extrapolation_grades(pot, [dense])[0] > 3.0


def test_search_sets_aside_extrapolated_structures(committee_run):
    out, _, _ = committee_run
    pot = jcsp.ml.load(out).potential
    common = dict(budget=4, population=4, seed=2, max_steps=150, fmax=0.1)
    # Every relaxed structure grades above 1e-6 (the training atoms' mean grades ~0.3).
    strict = jcsp.search("Si4", pot, max_grade=1e-6, **common)
    assert strict.n_relaxations == 4 and strict.n_extrapolated == 4
    assert strict.structures == [] and strict.best is None
    # Classical potentials carry no training domain and are never graded.
    assert jcsp.search("Si4", _sw(), max_grade=1e-6, **common).structures


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    train_set, valid_set = _si_set(6, 4), _si_set(2, 5)
    cfg = TrainConfig(epochs=4, atoms_per_batch=16, seed=1)
    quiet = dict(progress=False, log=lambda s: None)
    full = train(train_set, valid_set, TINY, cfg, str(tmp_path / "a"), **quiet)

    real_save = checkpoint.save_state
    calls = []

    def killed_after_two(out, run):
        real_save(out, run)
        calls.append(run.epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(checkpoint, "save_state", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(train_set, valid_set, TINY, cfg, str(tmp_path / "b"), **quiet)
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    assert not os.path.exists(tmp_path / "b" / "model.json")
    resumed = train(train_set, valid_set, TINY, cfg, str(tmp_path / "b"), **quiet)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for x, y in zip(jax.tree.leaves(full.potential.params), jax.tree.leaves(resumed.potential.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Different settings in the same directory are refused, not silently mixed.
    with pytest.raises(CheckpointError, match="different settings"):
        train(train_set, valid_set, TINY, TrainConfig(epochs=5, atoms_per_batch=16, seed=1),
              str(tmp_path / "b"), **quiet)


def test_corrupt_and_mismatched_checkpoints(committee_run, tmp_path):
    out, _, _ = committee_run
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    blob = (bad / "params.msgpack").read_bytes()
    (bad / "params.msgpack").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        jcsp.ml.load(bad).potential
    other = tmp_path / "other"
    shutil.copytree(out, other)
    meta = json.loads((other / "model.json").read_text())
    meta["model"]["channels"] = 8
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the configuration"):
        jcsp.ml.load(other).potential
    with pytest.raises(CheckpointError, match="missing"):
        jcsp.ml.load(tmp_path).potential
    wrong_domain = tmp_path / "domain"
    shutil.copytree(out, wrong_domain)
    meta = json.loads((wrong_domain / "model.json").read_text())
    meta["domain"]["mean"] = meta["domain"]["mean"][:1]
    (wrong_domain / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="domain"):
        jcsp.ml.load(wrong_domain).potential



def test_isolated_energies_are_the_free_atom_energies(tmp_path):
    """With ``zero_isolated`` and ``isolated_energies`` a trained model gives a lone atom
    exactly the energy it was told, and keeps the setting through a reload."""
    import dataclasses
    from ase import Atoms
    model = dataclasses.replace(TINY, zero_isolated=True)
    cfg = TrainConfig(epochs=1, atoms_per_batch=16, isolated_energies={"Si": -1.25})
    assert cfg.isolated_energies == (("Si", -1.25),)
    train(_si_set(4, 0), _si_set(2, 1), model, cfg, str(tmp_path), progress=False,
          log=lambda s: None)
    lone = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 9.0]])  # 9 Å apart: beyond the cutoff
    lone.calc = jcsp.JCSPCalculator(jcsp.ml.load(str(tmp_path)).potential)
    assert lone.get_potential_energy() == pytest.approx(-2.5, abs=1e-9)
    saved = json.loads((tmp_path / "model.json").read_text())
    assert TrainConfig(**saved["train"]) == cfg
    with pytest.raises(ValueError, match="zero_isolated"):
        train(_si_set(2, 0), None, TINY, cfg, str(tmp_path / "b"), progress=False,
              log=lambda s: None)
    with pytest.raises(ValueError, match="not an element"):
        train(_si_set(2, 0), None, model, TrainConfig(isolated_energies={"Xx": 1.0}),
              str(tmp_path / "c"), progress=False, log=lambda s: None)


def test_free_atom_reference_comes_from_the_cohesive_energy(tmp_path):
    """A ``sqrt_density`` model trained with the default settings gives a lone Si atom the
    lowest energy per atom in its data plus silicon's experimental cohesive energy, 4.63
    eV (Kittel, Introduction to Solid State Physics, 8th ed., table 3.1); with
    ``free_atoms = "fit"`` it gives the least-squares reference instead."""
    import dataclasses
    from ase import Atoms
    train_set = _si_set(4, 0)
    lowest = min(a.get_potential_energy() / len(a) for a in train_set)
    mean = np.mean([a.get_potential_energy() / len(a) for a in train_set])
    model = dataclasses.replace(TINY, sqrt_density=True)
    lone = Atoms("Si", positions=[[0, 0, 0]])
    for free_atoms, expected in (("cohesive", lowest + 4.63), ("fit", mean)):
        out = tmp_path / free_atoms
        lines = []
        train(train_set, _si_set(2, 1), model, TrainConfig(epochs=1, atoms_per_batch=16,
                                                           free_atoms=free_atoms),
              str(out), progress=False, log=lines.append)
        lone.calc = jcsp.JCSPCalculator(jcsp.ml.load(str(out)).potential)
        assert lone.get_potential_energy() == pytest.approx(expected, abs=1e-6)
        assert any("reference energies" in line and f"{expected:.4f}" in line for line in lines)
    with pytest.raises(ValueError, match="free_atoms"):
        TrainConfig(free_atoms="kittel")


def test_data_errors(tmp_path):
    atoms = bulk("Si", "diamond", 5.43)
    atoms.calc = SinglePointCalculator(atoms, energy=-8.0)
    path = str(tmp_path / "noforces.xyz")
    atoms.write(path)
    with pytest.raises(DataError, match="has no forces"):
        read_structures(path)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"structure": 1}]')
    with pytest.raises(DataError, match="not an mlearn"):
        read_structures(str(bad))
    with pytest.raises(DataError, match="no such file"):
        read_structures(str(tmp_path / "missing.xyz"))


@pytest.mark.skipif(not os.path.isdir(MLEARN) and not IN_CI,
                    reason="../shared/data/mlearn not present")
@pytest.mark.parametrize("element,order", [("Si", "yz,xz"), ("Mo", "xz,yz")])
def test_mlearn_stress_order_and_sign_follow_the_energies(element, order):
    """Stresses read from mlearn agree with the slope of the energies of the elastic
    series: E(cell2) - E(cell1) = V sigma : eps for neighbouring strained cells."""
    import json as _json
    path = os.path.join(MLEARN, element, "training.json")
    records = _json.load(open(path))
    cells = np.array([r["structure"]["lattice"]["matrix"] for r in records])
    virials = np.array([r["outputs"]["virial_stress"] for r in records])
    assert detect_shear_order(cells, virials) == order
    structures = [a for a in read_mlearn(path) if a.info["group"] == "Elastic"]
    from jcsp.units import voigt_to_full
    rel = []
    for a in structures:
        for b in structures:
            if len(a) != len(b) or a is b:
                continue
            deform = np.linalg.solve(a.cell[:], b.cell[:])  # b = a @ deform
            eps = 0.5 * (deform + deform.T) - np.eye(3)
            off = np.abs(eps - np.diag(np.diag(eps))).max()
            if not 0.005 < off < 0.11 or np.abs(np.diag(eps)).max() > 1e-4:
                continue  # pure shears between neighbouring cells only
            de = b.get_potential_energy() - a.get_potential_energy()
            if abs(de) < 0.05:
                continue  # pairs symmetric about zero shear say nothing
            sa = voigt_to_full(a.calc.results["stress"])
            sb = voigt_to_full(b.calc.results["stress"])
            work = 0.5 * (a.get_volume() + b.get_volume()) * np.sum(0.5 * (sa + sb) * eps)
            rel.append(abs(de - work) / abs(de))
    assert len(rel) >= 3
    assert np.median(rel) < 0.1, np.median(rel)

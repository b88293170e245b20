"""``jcsp train`` and ``jcsp evaluate``: a tiny run end to end, and clear errors."""

from __future__ import annotations

import json

import ase.io

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.calculators.lj import LennardJones as AseLJ

import jcsp.ml
from jcsp import JCSPCalculator
from jcsp.cli import main

TINY_TOML = """
[model]
cutoff = 3.8
channels = 4
l_max = 1
n_layers = 1
correlation = 2
n_radial = 4
radial_hidden = 0
readout_hidden = 4

[train]
epochs = 3
atoms_per_batch = 16
"""


def _data(path, n, seed):
    """Rattled fcc argon labelled by ASE's own Lennard-Jones calculator."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Ar", "fcc", 5.26, cubic=True)
        atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
        atoms.calc = AseLJ(epsilon=0.0104, sigma=3.4, rc=3.7, smooth=True)
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_train_then_evaluate(tmp_path, capsys):
    train = _data(str(tmp_path / "train.xyz"), 6, 0)
    valid = _data(str(tmp_path / "valid.xyz"), 2, 1)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out = str(tmp_path / "model")
    code = main(["train", "--train", train, "--valid", valid, "--out", out, "--config", str(cfg),
                 "--seed", "2", "-q"])
    assert code == 0, capsys.readouterr().err
    assert "saved" in capsys.readouterr().out
    report = str(tmp_path / "m.json")
    code = main(["evaluate", out, valid, "--json", report])
    text = capsys.readouterr().out
    assert code == 0 and "energy (meV/atom)" in text and "forces (eV/Å)" in text
    numbers = json.load(open(report))
    assert numbers["structures"] == 2 and numbers["atoms"] == 8
    # The reported force MAE is the mean |F_model - F_ref| over components, recomputed
    # here through the ASE calculator on the model files.
    model = jcsp.ml.load(out).potential
    errors = []
    for atoms in ase.io.read(valid, index=":"):
        reference = atoms.get_forces()
        atoms.calc = JCSPCalculator(model)
        errors.append(np.abs(atoms.get_forces() - reference).ravel())
    assert numbers["forces_mae"] == pytest.approx(np.mean(np.concatenate(errors)), rel=1e-6)
    assert numbers["forces_mae"] > 0
    assert (tmp_path / "model" / "parity_valid.png").stat().st_size > 1000


@pytest.mark.parametrize("argv,message", [
    (["evaluate", "nowhere", "x.xyz"], "not a directory"),
    (["train", "--train", "missing.xyz", "--out", "m"], "no such file"),
    (["train", "--train", "x.xyz", "--out", "m", "--channels", "0"], "positive"),
])
def test_bad_requests_fail_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nwidth = 3\n")
    data = _data(str(tmp_path / "d.xyz"), 1, 0)
    code = main(["train", "--train", data, "--out", str(tmp_path / "m"), "--config", str(cfg)])
    assert code == 2 and "unknown ModelConfig setting" in capsys.readouterr().err

"""The shipped silicon model (trained on mlearn Si, PBE): it loads by name, relaxes
diamond silicon to the DFT lattice constant of its data, and ranks diamond below the
other classic silicon phases as DFT does."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase.build import bulk

import jcsp
from jcsp.io import SHIPPED_MODELS, load_potential
from jcsp.ml.data import read_mlearn

MLEARN_SI = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mlearn",
                         "Si", "training.json")


@pytest.fixture(scope="module")
def model():
    return load_potential("ml-si")


def test_shipped_model_files(model):
    assert os.path.isfile(os.path.join(SHIPPED_MODELS["ml-si"], "model.json"))
    assert model.species == (14,) and model.n_parameters > 1000


@pytest.mark.skipif(not os.path.exists(MLEARN_SI), reason="../shared/data/mlearn not present")
def test_diamond_lattice_constant_matches_dft(model):
    """The unstressed diamond cell of the DFT elastic series is the reference."""
    elastic = [a for a in read_mlearn(MLEARN_SI) if a.info["group"] == "Elastic"]
    ref = min(elastic, key=lambda a: np.abs(a.calc.results["stress"]).max())
    a_dft = (ref.get_volume() / len(ref) * 8) ** (1 / 3)
    start = bulk("Si", "diamond", 5.30, cubic=True)  # start 3 % compressed
    out = jcsp.relax([start], model, fmax=1e-3, smax=1e-3, max_steps=2000)[0]
    assert out.info["converged"]
    a_model = (out.get_volume() / len(out) * 8) ** (1 / 3)
    assert abs(a_model / a_dft - 1) < 0.005, (a_model, a_dft)


def test_diamond_is_the_lowest_classic_phase(model):
    """PBE orders diamond below beta-tin, simple cubic and bcc silicon at zero pressure."""
    phases = {"diamond": bulk("Si", "diamond", 5.47, cubic=True),
              "beta-tin": bulk("Si", "bct", a=4.8, c=2.65),
              "sc": bulk("Si", "sc", 2.55),
              "bcc": bulk("Si", "bcc", 3.1)}
    out = jcsp.relax(list(phases.values()), model, fmax=0.01, max_steps=2000)
    per_atom = {name: a.info["energy"] / len(a) for name, a in zip(phases, out)}
    assert min(per_atom, key=per_atom.get) == "diamond", per_atom

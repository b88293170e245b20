"""Repacking the slow tail of a wide batch changes no result."""

import numpy as np
from ase.build import bulk

import jcsp
from jcsp.relax import driver

POT = jcsp.potentials.LennardJones(0.0104, 3.4, 6.0, truncation="smooth")


def test_tail_repacking_gives_the_same_relaxations(monkeypatch):
    rng = np.random.default_rng(0)
    structures = []
    for k in range(70):
        a = bulk("Ar", "fcc", a=5.3)  # one atom, so slow and fast cells mix cheaply
        a.set_cell(a.cell[:] @ (np.eye(3) + 0.08 * rng.normal(size=(3, 3))), scale_atoms=True)
        structures.append(a)
    opts = dict(fmax=1e-4, max_steps=400, progress=False, batch_size=64)
    widths = []
    kernel = driver._kernel

    def spy(potential, capacity, batch, *args):
        widths.append(batch)
        return kernel(potential, capacity, batch, *args)

    monkeypatch.setattr(driver, "_kernel", spy)
    packed = jcsp.relax(structures, POT, **opts)
    assert min(widths) < 64  # the tail was repacked into a narrower batch
    monkeypatch.setattr(driver, "MIN_SHRINK", 10**9)
    widths.clear()
    wide = jcsp.relax(structures, POT, **opts)
    assert set(widths) == {64}
    for a, b in zip(packed, wide):
        assert a.info["steps"] == b.info["steps"]
        assert a.info["converged"] == b.info["converged"]
        np.testing.assert_allclose(a.info["enthalpy"], b.info["enthalpy"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-10)

"""Repacking the slow tail of a wide vmapped batch changes no result (the vmapped schedule
of accelerators; the serial schedule of CPUs never repacks, since its idle slots cost
nothing)."""

import numpy as np
from ase.build import bulk

import jcsp
from jcsp.relax import driver, kernel

POT = jcsp.potentials.LennardJones(0.0104, 3.4, 6.0, truncation="smooth")


def _argon_cells(count: int, seed: int) -> list:
    """One-atom argon cells with random strains, so slow and fast cells mix cheaply."""
    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        a = bulk("Ar", "fcc", a=5.3)
        a.set_cell(a.cell[:] @ (np.eye(3) + 0.08 * rng.normal(size=(3, 3))), scale_atoms=True)
        structures.append(a)
    return structures


def _batch_widths(monkeypatch) -> list:
    """The batch width of every kernel the driver asks for, appended as it asks."""
    widths = []
    build = driver._kernel

    def spy(potential, capacity, batch, *args):
        widths.append(batch)
        return build(potential, capacity, batch, *args)

    monkeypatch.setattr(driver, "_kernel", spy)
    return widths


def test_tail_repacking_gives_the_same_relaxations(monkeypatch):
    monkeypatch.setattr(kernel, "serial_schedule", lambda: False)
    structures = _argon_cells(70, seed=0)
    opts = dict(fmax=1e-4, max_steps=400, progress=False, batch_size=64)
    widths = _batch_widths(monkeypatch)
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


def test_the_serial_schedule_never_repacks(monkeypatch):
    monkeypatch.setattr(kernel, "serial_schedule", lambda: True)
    structures = _argon_cells(66, seed=1)
    widths = _batch_widths(monkeypatch)
    pot = jcsp.potentials.LennardJones(0.0104, 3.4, 6.0, truncation="smooth")  # own caches
    out = jcsp.relax(structures, pot, fmax=1e-4, max_steps=400, progress=False, batch_size=64)
    assert set(widths) == {64}
    assert all(a.info["converged"] for a in out)

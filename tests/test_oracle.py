"""jcsp.oracle: oracle specs, single points in-process and in a process pool, failures,
the geometry-keyed label store (across a reopen and a SIGKILL) and relaxations by the
oracle itself.

References: ASE's own Lennard-Jones calculator (an independent implementation) for the
numbers a pool returns, LAMMPS ``pair_style sw`` for the Stillinger-Weber oracle, the
Stillinger-Weber diamond minimum (-4.3366 eV/atom at a = 5.431 Å, Stillinger & Weber,
Phys. Rev. B 31, 5262 (1985)) for relaxations, and finite differences of tblite's own
energy for its forces and stress. The module-level calculators and factories below are
what the pool's worker processes import (``python:test_oracle:...``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

import jcsp
import lammps_ref
from jcsp.calculator import JCSPCalculator
from jcsp.ml.data import labels_of
from jcsp.oracle import (Label, LabelStore, OracleError, make_oracle, oracle_relax,
                         single_point)
from jcsp.oracle import pool
from jcsp.oracle.calculators import _options
from jcsp.potential_spec import SI_SW, load_potential
from jcsp.units import EV_PER_A3_IN_GPA

TESTS = os.path.dirname(os.path.abspath(__file__))
SW_DIAMOND = -4.3366  # eV/atom, Stillinger & Weber 1985 (2 x epsilon = 2 x 2.1683 eV)


# --- oracles the tests (and the pool's workers) use ------------------------------------------
class Counting(LennardJones):
    """ASE's Lennard-Jones, counting its calculations; ``info["fail"]`` of a structure
    makes it raise (``"raise"``), return NaN (``"nan"``) or kill its process (``"crash"``)."""

    def __init__(self, delay: float = 0.0):
        super().__init__(sigma=1.0, epsilon=1.0, rc=2.5)
        self.calls = 0
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        self.calls += 1
        mode = atoms.info.get("fail") if atoms is not None else None
        if mode == "raise":
            raise RuntimeError("SCF did not converge")
        if mode == "crash":
            os._exit(3)
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)
        if mode == "nan":
            self.results["energy"] = float("nan")


def counting():
    return Counting()


def slow():
    return Counting(delay=0.3)


def broken():
    raise RuntimeError("no licence for this code")


NOT_A_FACTORY = 3


def lj_structures(n: int, *, seed: int = 0) -> list[Atoms]:
    """Distinct rattled fcc crystals (periodic) and clusters of the LJ solid (sigma = 1)."""
    out = []
    for k in range(n):
        atoms = bulk("Ar", "fcc", a=1.56, cubic=True)
        if k % 3 == 2:
            atoms.pbc = False
            atoms.cell = np.zeros((3, 3))
        atoms.rattle(0.03, seed=seed * 1000 + k)
        out.append(atoms)
    return out


def reference(atoms: Atoms) -> tuple:
    """Energy, forces and stress (periodic only) from a fresh ASE calculator."""
    a = atoms.copy()
    a.calc = LennardJones(sigma=1.0, epsilon=1.0, rc=2.5)
    stress = a.get_stress() if all(a.pbc) else None
    return a.get_potential_energy(), a.get_forces(), stress


def assert_label_is(label: Label, atoms: Atoms) -> None:
    energy, forces, stress = reference(atoms)
    assert label.ok and label.seconds >= 0
    assert label.energy == pytest.approx(energy, abs=1e-12)
    np.testing.assert_allclose(label.forces, forces, atol=1e-12)
    assert np.max(np.abs(forces)) > 0.1  # not a trivially zero comparison
    if stress is None:
        assert label.stress is None
    else:
        np.testing.assert_allclose(label.stress, stress, atol=1e-12)


def rattled_si8(seed: int = 0, amplitude: float = 0.05) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms.rattle(amplitude, seed=seed)
    return atoms


# --- specs ------------------------------------------------------------------------------------
def test_spec_forms_build_the_named_calculators():
    sw = make_oracle("sw-si")
    assert sw.describe() == "sw-si" and isinstance(sw._calc, JCSPCalculator)
    assert make_oracle(str(SI_SW)).describe() == str(SI_SW)
    lj = make_oracle("lj:epsilon=0.0104,sigma=3.4,cutoff=8.5")
    assert isinstance(lj._calc.potential, jcsp.potentials.LennardJones)
    assert isinstance(make_oracle("python:test_oracle:counting")._calc, Counting)
    emt = make_oracle(EMT())
    assert emt.describe() == "ASE EMT" and make_oracle(emt) is emt
    assert make_oracle(load_potential("sw-si")).describe() == "jcsp StillingerWeber"
    assert _options("a=1,b=[1, 2],c=x,d='p,q',e=None", "s") == {
        "a": 1, "b": [1, 2], "c": "x", "d": "p,q", "e": None}


@pytest.mark.parametrize("spec, words", [
    ("nonsense", ["unknown oracle", "tblite:GFN1-xTB", "python:module:factory", "sw-si"]),
    ("tblite:GFN9-xTB", ["unknown tblite method", "GFN1-xTB"]),
    ("tblite:GFN1-xTB,accuracy", ["not key=value"]),
    ("python:no_such_module_here:f", ["cannot import", "PYTHONPATH"]),
    ("python:test_oracle:nothing", ["cannot import"]),
    ("python:test_oracle:NOT_A_FACTORY", ["not callable"]),
    ("python:test_oracle", ["python:MODULE:FACTORY"]),
    ("missing.eam.alloy", ["unknown oracle", "not found"]),
])
def test_bad_specs_say_what_to_do(spec, words):
    with pytest.raises(OracleError) as err:
        make_oracle(spec)
    for word in words:
        assert word in str(err.value)


def test_missing_gpaw_and_bad_arguments(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpaw", None)  # import gpaw -> ImportError
    with pytest.raises(OracleError, match="needs GPAW"):
        make_oracle("gpaw:mode=pw,kpts=[2,2,2]")
    for workers in (0, -1, 1.5, True):
        with pytest.raises(OracleError, match="workers"):
            make_oracle("sw-si", workers=workers)
    with pytest.raises(OracleError, match="an oracle is one of"):
        make_oracle(42)


# --- single points ----------------------------------------------------------------------------
def test_calculator_object_sees_every_call_in_this_process():
    calc = Counting()
    with pytest.warns(UserWarning, match="in this process"):
        oracle = make_oracle(calc, workers=2)
    structures = lj_structures(4)
    seen = []
    labels = oracle.compute(structures, on_result=lambda i, lab: seen.append(i))
    assert calc.calls == 4 == oracle.n_calls and seen == [0, 1, 2, 3]
    assert oracle.seconds > 0 and oracle.wall_seconds >= oracle.seconds
    for label, atoms in zip(labels, structures):
        assert_label_is(label, atoms)


def test_failures_are_labels_and_never_retried(tmp_path):
    structures = lj_structures(5)
    structures[1].info["fail"] = "raise"
    structures[3].info["fail"] = "nan"
    calc = Counting()
    store = LabelStore(tmp_path / "oracle.db")
    labels = store.label(make_oracle(calc), structures, round=0)
    assert calc.calls == 5
    assert "RuntimeError: SCF did not converge" in labels[1].error
    assert "non-finite energy" in labels[3].error
    for i in (0, 2, 4):
        assert_label_is(labels[i], structures[i])
    again = LabelStore(tmp_path / "oracle.db")
    assert again.n_calls == 5 and again.n_failed == 2
    assert again.get(structures[1]).error == labels[1].error
    assert again.label(make_oracle(calc), structures) and calc.calls == 5
    good = again.labelled()
    assert len(good) == 3 and all(a.info["round"] == 0 for a in good)
    everything = again.labelled(ok_only=False)
    assert sum("error" in a.info for a in everything) == 2


def test_single_point_checks_shapes():
    class Wrong(LennardJones):
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.results["forces"] = self.results["forces"][:1]

    label = single_point(Wrong(), lj_structures(1)[0])
    assert not label.ok and "forces of shape" in label.error


def test_the_energy_is_the_force_consistent_one():
    class Smeared(LennardJones):  # as DFT with smearing: free_energy != energy
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.results["free_energy"] = self.results["energy"] - 0.1

    atoms = lj_structures(1)[0]
    label = single_point(Smeared(sigma=1.0, epsilon=1.0, rc=2.5), atoms)
    assert label.energy == pytest.approx(reference(atoms)[0] - 0.1, abs=1e-12)


# --- the store --------------------------------------------------------------------------------
def test_store_never_repeats_a_call(tmp_path):
    a, b, c = lj_structures(3)
    calc = Counting()
    oracle = make_oracle(calc)
    store = LabelStore(tmp_path / "run" / "oracle.db")
    first = store.label(oracle, [a, b, a.copy()], round=1, kind="seed")
    assert calc.calls == 2 and store.n_calls == 2
    assert first[0].energy == first[2].energy
    assert store.label(oracle, [b, a]) and calc.calls == 2
    moved = a.copy()
    moved.positions[0, 0] += 1e-6  # a different geometry is a different key
    assert store.key(moved) != store.key(a) and store.get(moved) is None

    reopened = LabelStore(tmp_path / "run" / "oracle.db")
    assert reopened.n_calls == 2
    for atoms, label in ((a, first[0]), (b, first[1])):
        back = reopened.get(atoms)
        assert back.energy == label.energy
        np.testing.assert_array_equal(back.forces, label.forces)
    labels = reopened.label(oracle, [a, b, c], round=2)
    assert calc.calls == 3 and reopened.n_calls == 3
    assert_label_is(labels[2], c)
    data = reopened.labelled()
    assert [x.info["round"] for x in data] == [1, 1, 2] and data[0].info["kind"] == "seed"
    assert isinstance(data[0].calc, SinglePointCalculator)
    assert data[0].get_potential_energy() == first[0].energy
    assert labels_of(data).has_stress.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="store's own"):
        reopened.label(oracle, [moved], ok=1)
    with pytest.raises(ValueError, match="cannot go into the database"):
        reopened.label(oracle, [moved], note=None)
    assert calc.calls == 3  # bad metadata is refused before the oracle is called


CHILD = """
import sys
from jcsp.oracle import LabelStore, make_oracle
from test_oracle import lj_structures


class Loud(LabelStore):
    def put(self, atoms, label, **meta):
        out = super().put(atoms, label, **meta)
        print("stored", self.key(atoms), flush=True)
        return out


if __name__ == "__main__":
    with make_oracle("python:test_oracle:slow", workers=2) as oracle:
        Loud(sys.argv[1]).label(oracle, lj_structures(8), round=0)
    print("finished", flush=True)
"""


def test_sigkill_mid_batch_keeps_every_returned_label(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    db = tmp_path / "oracle.db"
    root = os.path.dirname(os.path.dirname(jcsp.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, root]))
    log = open(tmp_path / "child.err", "w")
    child = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE,
                             stderr=log, text=True, env=env, start_new_session=True)
    stored = []
    try:
        for line in child.stdout:
            stored.append(line.split()[1])
            if len(stored) == 3:
                os.killpg(child.pid, signal.SIGKILL)
                break
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        log.close()
    assert len(stored) == 3, (tmp_path / "child.err").read_text()[-3000:]
    assert child.returncode == -signal.SIGKILL

    store = LabelStore(db)  # no lock file left behind: opens at once
    structures = lj_structures(8)
    keys = {store.key(a): a for a in structures}
    assert 3 <= store.n_calls < 8
    for key in stored:
        assert_label_is(store.get(keys[key]), keys[key])
    before, calc = store.n_calls, Counting()
    labels = store.label(make_oracle(calc), structures)
    assert calc.calls == 8 - before and store.n_calls == 8
    for label, atoms in zip(labels, structures):
        assert_label_is(label, atoms)


# --- pools ------------------------------------------------------------------------------------
def test_pool_equals_in_process_stillinger_weber():
    structures = [rattled_si8(k) for k in range(2)]
    structures[1].set_cell(structures[1].cell[:] * 1.02, scale_atoms=True)
    local = make_oracle("sw-si").compute(structures)
    order = []
    with make_oracle("sw-si", workers=2) as pool:
        pooled = pool.compute(structures, on_result=lambda i, lab: order.append(i))
        assert pool.n_calls == 2 and sorted(order) == [0, 1]
    for p, q in zip(pooled, local):  # the same numbers, to the last bits of XLA's rounding
        assert p.ok and p.energy == pytest.approx(q.energy, rel=1e-14)
        np.testing.assert_allclose(p.forces, q.forces, rtol=0, atol=1e-12)
        np.testing.assert_allclose(p.stress, q.stress, rtol=0, atol=1e-13)
    # A classical oracle is jcsp's own potential, exactly.
    atoms = structures[0].copy()
    atoms.calc = JCSPCalculator(load_potential("sw-si"))
    assert local[0].energy == atoms.get_potential_energy()
    np.testing.assert_array_equal(local[0].forces, atoms.get_forces())


@pytest.mark.lammps
def test_stillinger_weber_oracle_matches_lammps():
    structures = [rattled_si8(k) for k in range(2)]
    sw = ["pair_style sw", f"pair_coeff * * {lammps_ref.POTENTIALS}/Si.sw Si"]
    for atoms, label in zip(structures, make_oracle("sw-si").compute(structures)):
        energy, forces, stress = lammps_ref.run(atoms.cell[:], atoms.positions,
                                                atoms.get_chemical_symbols(), sw)
        assert label.energy == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(label.forces, forces, atol=1e-6)
        assert np.max(np.abs(forces)) > 0.1
        np.testing.assert_allclose(label.stress, jcsp.units.full_to_voigt(stress), atol=1e-7)


def test_pool_survives_failures_and_a_crashing_worker(tmp_path):
    structures = lj_structures(5)
    structures[1].info["fail"] = "raise"
    structures[2].info["fail"] = "nan"
    structures[4].info["fail"] = "crash"
    store = LabelStore(tmp_path / "oracle.db")
    with make_oracle("python:test_oracle:counting", workers=2) as oracle:
        labels = store.label(oracle, structures)
    assert "SCF did not converge" in labels[1].error and "non-finite" in labels[2].error
    assert "worker process died" in labels[4].error
    for i in (0, 3):
        assert_label_is(labels[i], structures[i])
    assert LabelStore(tmp_path / "oracle.db").n_failed == 3


def test_a_factory_that_fails_in_a_worker_is_reported_as_such():
    """The worker's own code, run here: a calculator that cannot be built is a "build"
    answer (which the parent raises as OracleError), not a failed structure."""
    pool._worker_init("python:test_oracle:broken", TESTS)
    try:
        status, message = pool._worker_single_point(lj_structures(1)[0])
    finally:
        pool._worker_init(None, None)
    assert status == "build" and "no licence" in message


@pytest.mark.slow
def test_a_factory_that_fails_in_the_workers_is_an_oracle_error():
    oracle = make_oracle("python:test_oracle:broken", workers=2)
    with oracle, pytest.raises(OracleError, match="no licence"):
        oracle.compute(lj_structures(1))


# --- relaxing with the oracle -----------------------------------------------------------------
def test_oracle_relax_reaches_the_sw_minimum_and_replays_from_the_store(tmp_path):
    start = rattled_si8(0)
    start.set_cell(start.cell[:] * 1.01, scale_atoms=True)
    oracle = make_oracle("sw-si")
    db = tmp_path / "oracle.db"
    final = oracle_relax(start, oracle, LabelStore(db), fmax=0.005, kind="final")
    info = final.info
    assert info["converged"] and not info["failed"] and info["n_calls"] == oracle.n_calls
    assert info["oracle_energy"] / 8 == pytest.approx(SW_DIAMOND, abs=2e-4)
    assert info["enthalpy"] == info["oracle_energy"]
    assert np.cbrt(final.get_volume()) == pytest.approx(5.431, abs=2e-3)
    assert info["max_force"] < 0.005
    assert final.get_potential_energy() == info["oracle_energy"]
    assert start.get_volume() != final.get_volume()  # the input is not modified

    calls = oracle.n_calls
    again = oracle_relax(start, oracle, LabelStore(db), fmax=0.005)
    assert again.info["n_calls"] == 0 and oracle.n_calls == calls
    assert again.info["steps"] == info["steps"]
    np.testing.assert_array_equal(again.positions, final.positions)
    np.testing.assert_array_equal(again.cell[:], final.cell[:])


def test_oracle_relax_under_pressure_has_pv_in_the_enthalpy():
    oracle = make_oracle("sw-si")
    final = oracle_relax(rattled_si8(1), oracle, fmax=0.005, pressure=10.0)
    p = 10.0 / EV_PER_A3_IN_GPA
    volume = final.get_volume()
    assert final.info["converged"] and final.info["pressure"] == 10.0
    assert final.info["enthalpy"] == pytest.approx(final.info["oracle_energy"] + p * volume,
                                                   rel=1e-12)
    assert volume < 5.431 ** 3 * 0.99
    # At the minimum of H, the stress balances the pressure (ASE sign: stress = -p).
    np.testing.assert_allclose(final.get_stress()[:3], -p, atol=2e-4)
    np.testing.assert_allclose(final.get_stress()[3:], 0, atol=2e-4)


def test_oracle_relax_reports_an_oracle_failure():
    class FailsLater(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            FailsLater.calls += 1
            if FailsLater.calls == 4:
                raise RuntimeError("SCF did not converge")
            super().calculate(*args, **kwargs)

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=0)
    store = LabelStore()
    final = oracle_relax(atoms, make_oracle(FailsLater()), store, fmax=0.01)
    assert final.info["failed"] and not final.info["converged"]
    assert "SCF did not converge" in final.info["error"]
    assert final.info["n_calls"] == 4 and store.n_failed == 1
    assert store.get(final).energy == final.info["oracle_energy"]


# --- tblite -----------------------------------------------------------------------------------
needs_tblite = pytest.mark.skipif(importlib.util.find_spec("tblite") is None
                                  and not lammps_ref.IN_CI,
                                  reason="tblite not installed (pip install tblite)")


@needs_tblite
def test_tblite_si2_stress_and_forces_are_derivatives_of_its_energy():
    oracle = make_oracle("tblite:GFN1-xTB,accuracy=0.01")
    si2 = bulk("Si", "diamond", a=5.43)
    si2.positions[1] += [0.03, -0.02, 0.01]
    label = oracle.compute([si2])[0]
    assert label.ok and np.isfinite(label.energy)
    assert np.all(np.isfinite(label.forces)) and np.all(np.isfinite(label.stress))
    assert np.max(np.abs(label.forces)) > 0.1 and np.max(np.abs(label.stress)) > 0.01
    h, volume = 1e-3, si2.get_volume()

    def energy(strain=None, shift=None):
        atoms = si2.copy()
        if strain is not None:
            atoms.set_cell(si2.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
        if shift is not None:
            atoms.positions[1] += shift
        return oracle.compute([atoms])[0].energy

    for voigt, (i, j) in ((0, (0, 0)), (5, (0, 1))):
        strain = np.zeros((3, 3))
        strain[i, j] += h / 2
        strain[j, i] += h / 2
        fd = (energy(strain=strain) - energy(strain=-strain)) / (2 * h) / volume
        assert label.stress[voigt] == pytest.approx(fd, abs=2e-5)
    # Atom 1 (inside the cell): atom 0 sits at the origin, and tblite's energy jumps by
    # ~1e-6 eV when a displacement wraps it to the far side of the cell.
    fd_force = -(energy(shift=[h, 0, 0]) - energy(shift=[-h, 0, 0])) / (2 * h)
    assert label.forces[1, 0] == pytest.approx(fd_force, abs=1e-5)


def test_replicated_supercell_maps_back_to_the_cell():
    """A supercell calculation mapped back to the cell equals the cell's own numbers for a
    calculator with full periodicity (EMT), for a skewed cell of unequal widths."""
    from ase.calculators.emt import EMT
    from jcsp.oracle.calculators import Replicated
    atoms = bulk("Cu", "fcc", a=3.6).repeat((1, 2, 4))
    atoms.set_cell(atoms.cell[:] @ np.array([[1, 0.1, 0], [0, 1, 0.05], [0, 0, 1]]),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=3)
    wrapped = Replicated(EMT(), min_length=7.0)
    reps = np.array(wrapped.repeats(atoms))
    cell = atoms.cell[:]
    widths = np.array([atoms.get_volume() / np.linalg.norm(np.cross(cell[(i + 1) % 3],
                                                                    cell[(i + 2) % 3]))
                       for i in range(3)])
    assert np.all(reps * widths >= 7.0) and np.all((reps - 1) * widths < 7.0)
    assert reps.prod() > 1 and len(set(reps)) > 1
    direct = single_point(EMT(), atoms)
    label = single_point(wrapped, atoms)
    assert label.energy == pytest.approx(direct.energy, rel=1e-12)
    np.testing.assert_allclose(label.forces, direct.forces, atol=1e-10)
    np.testing.assert_allclose(label.stress, direct.stress, atol=1e-10)
    assert Replicated(EMT(), min_length=0.0).repeats(atoms) == (1, 1, 1)

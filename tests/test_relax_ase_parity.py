"""jcsp.relax against ASE: FrechetCellFilter forces, FIRE and LBFGS relaxations.

References are ASE's own classes (``FrechetCellFilter``, ``FIRE``, ``LBFGS``) driving
``jcsp.JCSPCalculator``, plus finite differences of the enthalpy; jcsp's relaxers share
no code with them.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE, LBFGS

import jcsp
from jcsp.io import load_potential
from jcsp.potentials import LennardJones
from jcsp.relax import LBFGSConfig, cell_filter as cf
from jcsp.units import EV_PER_A3_IN_GPA, voigt_to_full

LJ = LennardJones(0.0104, 3.4, 8.5, truncation="smooth")
FMAX = 1e-4


def _crystal(seed, a0):
    """A rattled 4-atom fcc Ar cell with a random strain (both large enough to matter)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Ar", "fcc", a=a0, cubic=True)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.04 * rng.normal(size=(3, 3))),
                   scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.15, atoms.positions.shape)
    return atoms


# Starting lattice constants near each pressure's minimum keep the neighbor spec stable.
CASES = [(_crystal(1, 5.3), 0.0), (_crystal(2, 5.2), 0.0), (_crystal(3, 4.6), 10.0),
         (_crystal(4, 4.6), 10.0)]
CALC = jcsp.JCSPCalculator(LJ)  # one calculator: its compiled function is reused
#: Stillinger-Weber silicon as `--potential sw-si` loads it (LAMMPS's Si.sw parameters).
SW = load_potential("sw-si")
SW_CALC = jcsp.JCSPCalculator(SW)


def _ase_relax(atoms, pressure_gpa, optimizer, *, cell=True):
    atoms = atoms.copy()
    atoms.calc = CALC
    p = pressure_gpa / EV_PER_A3_IN_GPA
    target = FrechetCellFilter(atoms, scalar_pressure=p) if cell else atoms
    opt = optimizer(target, logfile=None)
    opt.run(fmax=FMAX, steps=3000)
    assert opt.converged()
    return atoms, atoms.get_potential_energy() + p * atoms.get_volume(), opt.nsteps


def test_filter_forces_match_ase():
    """Generalized forces equal ASE's FrechetCellFilter.get_forces() away from F = I."""
    atoms = _crystal(5, 5.25)
    atoms.calc = CALC
    n = len(atoms)
    pressure = 2.0 / EV_PER_A3_IN_GPA
    filt = FrechetCellFilter(atoms, scalar_pressure=pressure)
    x = filt.get_positions()
    rng = np.random.default_rng(6)
    x[n:] += n * 0.05 * rng.normal(size=(3, 3))  # log(F) with an antisymmetric part
    x[:n] += rng.normal(0.0, 0.05, (n, 3))
    filt.set_positions(x)
    ref = filt.get_forces()
    # ASE stores n logm(n F) (its UnitCellFilter scaling inside the log): shift to n log F.
    dofs = filt.get_positions()
    dofs[n:] -= n * np.log(n) * np.eye(3)
    orig = np.asarray(filt.orig_cell[:])
    t = cf.apply(dofs, orig, np.linalg.inv(orig), n, relax_cell=True)
    np.testing.assert_allclose(t.cell, atoms.cell[:], atol=1e-12)
    np.testing.assert_allclose(np.asarray(t.frac) @ np.asarray(t.cell), atoms.positions,
                               atol=1e-12)
    stress = voigt_to_full(atoms.get_stress())
    got = cf.generalized_forces(t, atoms.get_forces(), stress, pressure, n, relax_cell=True)
    assert np.abs(ref[n:]).max() > 1e-3 and np.abs(ref[:n]).max() > 1e-3  # not vacuous
    assert np.abs(ref[n:] - ref[n:].T).max() > 1e-6  # the unsymmetric case is exercised
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_filter_forces_are_enthalpy_gradient():
    """Cell rows of the generalized forces = -dH/d(dof) by central differences."""
    atoms = _crystal(7, 5.25)
    n = len(atoms)
    orig = atoms.cell[:].copy()
    pressure = 1.5 / EV_PER_A3_IN_GPA
    rng = np.random.default_rng(8)
    dofs = np.concatenate([atoms.positions, n * 0.03 * rng.normal(size=(3, 3))])

    def enthalpy(d):
        t = cf.apply(d, orig, np.linalg.inv(orig), n, relax_cell=True)
        probe = atoms.copy()
        probe.set_cell(np.asarray(t.cell))
        probe.positions = np.asarray(t.frac) @ np.asarray(t.cell)
        probe.calc = CALC
        return probe.get_potential_energy() + pressure * probe.get_volume(), probe, t

    _, probe, t = enthalpy(dofs)
    stress = voigt_to_full(probe.get_stress())
    g = np.asarray(cf.generalized_forces(t, probe.get_forces(), stress, pressure, n,
                                         relax_cell=True))
    h = 1e-4
    for i, j in [(n, 0), (n, 1), (n + 1, 0), (n + 2, 2), (0, 1)]:
        up, down = dofs.copy(), dofs.copy()
        up[i, j] += h
        down[i, j] -= h
        fd = -(enthalpy(up)[0] - enthalpy(down)[0]) / (2 * h)
        assert abs(g[i, j]) > 1e-4
        assert abs(fd - g[i, j]) < 1e-8, (i, j, fd, g[i, j])


def test_expm_and_adjoint_match_scipy():
    rng = np.random.default_rng(9)
    for scale in (1e-3, 0.3, 2.0):
        log_f = rng.normal(size=(3, 3)) * scale
        g = rng.normal(size=(3, 3))
        np.testing.assert_allclose(cf.expm(log_f), scipy.linalg.expm(log_f), rtol=1e-13,
                                   atol=1e-15)
        ref = np.zeros((3, 3))
        for m in range(3):
            for k in range(3):
                e = np.zeros((3, 3))
                e[m, k] = 1.0
                ref[m, k] = np.sum(scipy.linalg.expm_frechet(log_f, e, compute_expm=False) * g)
        np.testing.assert_allclose(cf.expm_adjoint(log_f, g), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, ase_optimizer", [("fire", FIRE), ("lbfgs", LBFGS)])
def test_relax_matches_ase(name, ase_optimizer):
    """Same final enthalpy (and, in float64, the same number of steps) as ASE."""
    structures = [a for a, _ in CASES]
    pressures = [p for _, p in CASES]
    out = jcsp.relax(structures, LJ, fmax=FMAX, pressure=pressures, optimizer=name)
    for (atoms, p), res in zip(CASES, out):
        _, h_ase, steps = _ase_relax(atoms, p, ase_optimizer)
        assert res.info["converged"] and not res.info["failed"]
        assert res.info["steps"] > 10  # it really relaxed
        assert abs(res.info["enthalpy"] - h_ase) / len(atoms) < 1e-4
        # Stronger than the bar: the two trajectories agree to round-off.
        assert abs(res.info["enthalpy"] - h_ase) / len(atoms) < 1e-9
        assert abs(res.info["steps"] - steps) <= 2
        assert abs(res.info["pressure"] - p) < 0.05
        volume = res.get_volume()
        e = res.get_potential_energy()
        assert abs(res.info["enthalpy"] - (e + p / EV_PER_A3_IN_GPA * volume)) < 1e-12


def test_fixed_cell_matches_ase_fire():
    atoms = CASES[0][0]
    out = jcsp.relax([atoms], LJ, fmax=FMAX, relax_cell=False, optimizer="fire")[0]
    ref, e_ase, steps = _ase_relax(atoms, 0.0, FIRE, cell=False)
    np.testing.assert_array_equal(out.cell[:], atoms.cell[:])
    assert out.info["converged"] and out.info["steps"] > 10
    assert abs(out.info["energy"] - e_ase) / len(atoms) < 1e-9
    assert abs(out.info["steps"] - steps) <= 2
    np.testing.assert_allclose(out.positions, ref.positions, atol=1e-6)


@pytest.mark.slow
def test_lbfgs_safeguard_recovers_from_overshooting():
    """A soft initial Hessian (alpha = 1 eV/Å², maxstep 0.5 Å) on the argon case still
    reaches ASE's FIRE minimum. (Here ASE's LBFGS, which has no safeguard, takes the same
    12 steps: no step goes uphill; the companion test below is the one where the
    safeguard must act.)"""
    atoms, p = CASES[0]
    out = jcsp.relax([atoms], LJ, fmax=FMAX, pressure=p,
                     optimizer=LBFGSConfig(alpha=1.0, maxstep=0.5), max_steps=2000)[0]
    _, h_ase, _ = _ase_relax(atoms, p, FIRE)
    assert out.info["converged"]
    assert abs(out.info["enthalpy"] - h_ase) / len(atoms) < 1e-6


def test_lbfgs_safeguard_on_stiff_silicon_reaches_diamond():
    """CI-sized companion of the slow test above, where the safeguard must act: an initial
    Hessian far too soft for Stillinger-Weber silicon (alpha = 1 eV/Å², maxstep 0.5 Å).
    ASE's LBFGS, which has no safeguard, goes uphill on the same start; jcsp's rejects
    those steps and still reaches diamond, -2 epsilon = -4.3366 eV/atom (Stillinger &
    Weber 1985)."""
    rng = np.random.default_rng(0)
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))),
                   scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    config = LBFGSConfig(alpha=1.0, maxstep=0.5)
    ref = atoms.copy()
    ref.calc = SW_CALC
    opt = LBFGS(FrechetCellFilter(ref), alpha=config.alpha, maxstep=config.maxstep,
                logfile=None)
    energies = [ref.get_potential_energy() for _ in opt.irun(fmax=1e-3, steps=40)]
    assert np.sum(np.diff(energies) > 1e-6) >= 3  # the soft start really overshoots
    out = jcsp.relax([atoms], SW, fmax=1e-3, optimizer=config, max_steps=300)[0]
    assert out.info["converged"] and out.info["steps"] > 10
    assert out.info["energy"] / len(out) == pytest.approx(-2 * 2.1683, abs=1e-6)


def test_lbfgs_rejects_uphill_steps_on_a_stiff_quadratic():
    """E = 50 |x|^2 with 1/alpha = 1: the first step overshoots uphill, is rejected (the
    state returns to the last accepted point) and the backtracking then converges."""
    import jax
    import jax.numpy as jnp

    from jcsp.relax import lbfgs

    opt = lbfgs(LBFGSConfig(alpha=1.0, maxstep=0.5, memory=5))
    step = jax.jit(opt.step)
    x = jnp.array([[0.01, 0.0, 0.0], [0.0, -0.02, 0.0]])
    state = opt.init(x)
    energies, rejected = [], 0
    for _ in range(60):
        e, f = 50.0 * jnp.sum(x * x), -100.0 * x
        energies.append(float(e))
        prev_x0 = state.x0
        x, state = step(state, x, f, e, True)
        if len(energies) > 1 and energies[-1] > energies[-2]:
            rejected += 1
            np.testing.assert_array_equal(state.x0, prev_x0)  # went back
        if float(jnp.abs(f).max()) < 1e-8:
            break
    assert rejected >= 1
    assert energies[-1] < 1e-12


def test_sw_silicon_matches_ase_fire():
    """Stillinger-Weber silicon, rattled and strained diamond cells at 0
    and 10 GPa: jcsp's FIRE and ASE's FIRE + FrechetCellFilter agree."""
    rng = np.random.default_rng(11)
    cases = []
    for a0, p in [(5.43, 0.0), (5.35, 10.0)]:
        atoms = bulk("Si", "diamond", a=a0, cubic=True)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))),
                       scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        cases.append((atoms, p))
    fmax = 1e-3
    out = jcsp.relax([a for a, _ in cases], SW, fmax=fmax, pressure=[p for _, p in cases])
    for (atoms, p), res in zip(cases, out):
        ref = atoms.copy()
        ref.calc = SW_CALC
        opt = FIRE(FrechetCellFilter(ref, scalar_pressure=p / EV_PER_A3_IN_GPA), logfile=None)
        opt.run(fmax=fmax, steps=3000)
        h_ase = ref.get_potential_energy() + p / EV_PER_A3_IN_GPA * ref.get_volume()
        assert res.info["converged"] and res.info["steps"] > 10
        assert abs(res.info["enthalpy"] - h_ase) / len(atoms) < 1e-4
        assert abs(res.info["enthalpy"] - h_ase) / len(atoms) < 1e-9
        assert abs(res.info["steps"] - opt.nsteps) <= 2
        assert abs(res.info["pressure"] - p) < 0.1

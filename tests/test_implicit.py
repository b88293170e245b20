"""Implicit derivatives of relaxations (jcsp.relax_differentiable) against central
finite differences of full, independent relaxations (float64), for every kind of
potential: LJ, Stillinger-Weber, EAM, Buckingham + Ewald and the shipped ML model.

The finite differences relax the structure again at perturbed parameters or pressure;
they never reuse the implicit machinery, so a wrong Hessian, a wrong mixed derivative or
a missing strain term shows up as a mismatch. Every comparison also checks that the
derivative is not trivially zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import jcsp
from jcsp.potential_spec import DATA_DIR, load_potential
from jcsp.potentials.buckingham import BuckinghamCoulomb
from jcsp.potentials.eam import EAM
from jcsp.potentials.lennard_jones import LennardJones
from jcsp.relax.implicit import NotAMinimumError, relax_differentiable
from jcsp.structures.convert import from_atoms
from jcsp.units import gpa_to_ev_per_a3

H = 1e-4  # relative step of the central differences
RTOL = 1e-5


def _bond(i, j, shift):
    """Length of the bond i -> j + shift (integer lattice shift) of structure 0, Å."""
    def length(out):
        d = out.positions[0, j] + jnp.asarray(shift, float) @ out.cell[0] - out.positions[0, i]
        return jnp.linalg.norm(d)
    return length


def _quantities(out, bonds=()):
    """[Q] relaxed quantities of structure 0 (and the total volume of all structures)."""
    q = [out.volume[0], out.energy[0], jnp.linalg.norm(out.cell[0, 0]),
         jnp.linalg.norm(out.cell[0, 2]), jnp.sum(out.volume)]
    q += [b(out) for b in bonds]
    return jnp.stack(q)


def _check_params(pop, pot, leaves, *, bonds=(), pressure=0.0, directions=None,
                  relax_cell=True, jacrev=False):
    """d(quantities)/d(log leaf) by implicit differentiation vs central differences."""
    params = pot.params

    def f(p):
        out = relax_differentiable(pop, pot, params=p, pressure=pressure, relax_cell=relax_cell)
        assert out.valid.all(), (out.converged, out.stable, out.residual)
        return _quantities(out, bonds)

    values, pull = jax.vjp(f, params)  # one relaxation, one backward pass per quantity
    if jacrev:  # batched cotangents: the backward pass vmapped
        jac = jax.jacrev(f)(params)
    else:
        jac = [pull(row) for row in jnp.eye(len(values))]
        jac = jax.tree_util.tree_map(lambda *rows: jnp.stack(rows), *jac)[0]
    directions = directions or {leaf: {k: (v if k == leaf else jnp.zeros_like(v))
                                       for k, v in params.items()} for leaf in leaves}
    largest = 0.0
    for name, d in directions.items():
        implicit = sum(jnp.tensordot(j, dv, axes=dv.ndim) for j, dv in
                       zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(d)))
        plus = jax.tree_util.tree_map(lambda p, v: p + H * v, params, d)
        minus = jax.tree_util.tree_map(lambda p, v: p - H * v, params, d)
        fd = (f(plus) - f(minus)) / (2 * H)
        # absolute floor: derivatives that vanish (e.g. dV/d epsilon of LJ at p = 0)
        floor = 1e-9 * np.abs(np.asarray(values)) + 1e-10
        err = np.abs(np.asarray(implicit) - np.asarray(fd))
        assert np.all(err <= RTOL * np.abs(np.asarray(fd)) + floor), (name, implicit, fd)
        largest = max(largest, float(np.max(np.abs(np.asarray(fd)) / (np.abs(values) + 1e-30))))
    assert largest > 1e-3  # the derivatives compared are not trivially zero


# --- potentials and structures (module scope: each compiles once) ----------------------
@pytest.fixture(scope="module")
def lj():
    return LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5)


@pytest.fixture(scope="module")
def ar_pair():
    """hcp (c/a relaxes) and fcc argon, strained off their minima: one batch shape
    serves every LJ test (few compilations)."""
    return from_atoms([bulk("Ar", "hcp", a=3.90, c=6.20), bulk("Ar", "fcc", a=5.40)])


@pytest.fixture(scope="module")
def sw():
    return load_potential("sw-si")


@pytest.fixture(scope="module")
def si_pair():
    """Diamond Si (2 atoms) and hexagonal diamond (4 atoms, internal u and c/a free),
    strained off their minima so that the relaxation moves them."""
    diamond = bulk("Si", "diamond", a=5.50)
    hexagonal = bulk("SiSi", "wurtzite", a=3.90, c=6.30, u=0.37)
    return from_atoms([hexagonal, diamond])


def test_lj_params_and_pressure(lj, ar_pair):
    _check_params(ar_pair, lj, ["epsilon", "sigma"], bonds=[_bond(0, 1, (0, 0, 0))],
                  pressure=0.5, jacrev=True)


def test_enthalpy_pressure_derivative_is_the_volume(lj, ar_pair):
    """dH/dp = V (envelope theorem), p in GPa so dH/dp = V x (eV/Å³ per GPa)."""
    pop = ar_pair
    grad = jax.grad(lambda p: jcsp.relax_differentiable(pop, lj, pressure=p).enthalpy.sum())(1.0)
    out = relax_differentiable(pop, lj, pressure=1.0)
    volume = float(out.volume.sum())
    assert abs(float(grad) / gpa_to_ev_per_a3(volume) - 1) < 1e-8
    # and against central differences of relaxed enthalpies (an independent check)
    h = 1e-3
    fd = (relax_differentiable(pop, lj, pressure=1.0 + h).enthalpy.sum()
          - relax_differentiable(pop, lj, pressure=1.0 - h).enthalpy.sum()) / (2 * h)
    assert abs(float(fd) / float(grad) - 1) < 1e-7
    # the volume itself responds to pressure: its derivative matches finite differences
    dv = jax.grad(lambda p: relax_differentiable(pop, lj, pressure=p).volume.sum())(1.0)
    fdv = (relax_differentiable(pop, lj, pressure=1.0 + h).volume.sum()
           - relax_differentiable(pop, lj, pressure=1.0 - h).volume.sum()) / (2 * h)
    assert float(dv) < 0 and abs(float(fdv) / float(dv) - 1) < 1e-5


def test_sw_internal_coordinates(sw):
    """Hexagonal diamond: the axial bond (u c), c/a and the volume move with the
    parameters (CI version of the batched test below)."""
    pop = from_atoms([bulk("SiSi", "wurtzite", a=3.90, c=6.30, u=0.37)])
    _check_params(pop, sw, ["epsilon", "sigma", "lambda"], bonds=[_bond(0, 3, (0, 0, -1))])


@pytest.mark.slow
def test_sw_every_parameter_batched(sw, si_pair):
    """Every SW parameter, diamond and hexagonal diamond relaxed in one batch."""
    leaves = [k for k in sw.params if k != "tol"]  # tol only trims the list
    _check_params(si_pair, sw, leaves, bonds=[_bond(0, 3, (0, 0, -1)), _bond(0, 2, (0, 0, 0))])


@pytest.mark.slow
def test_sw_fixed_cell():
    """relax_cell=False: only the atoms relax (hexagonal diamond, strained cell kept)."""
    sw = load_potential("sw-si")
    pop = from_atoms([bulk("SiSi", "wurtzite", a=3.90, c=6.30, u=0.37)])
    _check_params(pop, sw, ["epsilon", "sigma", "lambda", "costheta0"],
                  bonds=[_bond(0, 3, (0, 0, -1)), _bond(0, 1, (0, 0, 0))], relax_cell=False)


def test_batched_equals_single_and_saddles_are_flagged(lj):
    """fcc (a minimum) and bcc (a saddle of LJ: tetragonal shear is unstable) in one
    batch: fcc's results and gradients equal those of its own run; bcc is flagged and a
    gradient through it is refused, or NaN on request."""
    fcc = bulk("Ar", "fcc", a=5.40)
    bcc = bulk("Ar", "bcc", a=4.30, cubic=True)
    both = relax_differentiable(from_atoms([bcc, fcc]), lj, pressure=0.3)
    alone = relax_differentiable(from_atoms([fcc], n_max=2), lj, pressure=0.3)
    assert both.valid.tolist() == [False, True] and both.converged.tolist() == [True, True]
    assert not both.stable[0] and alone.valid.all()
    np.testing.assert_allclose(both.cell[1], alone.cell[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(both.energy[1], alone.energy[0], rtol=1e-12)

    def volume(p, pop, k):
        return relax_differentiable(pop, lj, params=p, pressure=0.3).volume[k]

    g_both = jax.grad(volume)(lj.params, from_atoms([bcc, fcc]), 1)
    g_alone = jax.grad(volume)(lj.params, from_atoms([fcc], n_max=2), 0)
    assert abs(float(g_alone["sigma"][0, 0])) > 1
    for k in g_both:
        np.testing.assert_allclose(g_both[k], g_alone[k], rtol=1e-9)
    with pytest.raises(NotAMinimumError, match=r"structures \[0\]"):
        jax.grad(volume)(lj.params, from_atoms([bcc, fcc]), 0)
    with pytest.warns(RuntimeWarning, match="not converged strict minima"):
        g = jax.grad(lambda p: relax_differentiable(from_atoms([bcc, fcc]), lj, params=p,
                                                    pressure=0.3, on_invalid="nan").volume[0])(
            lj.params)
    assert np.isnan(np.asarray(g["sigma"])).all()


def test_unconverged_relaxations_refuse_gradients(lj, ar_pair):
    pop = ar_pair
    out = relax_differentiable(pop, lj, max_steps=1)
    assert not out.converged[0] and not out.valid[0]
    with pytest.raises(NotAMinimumError, match="not converged"):
        jax.grad(lambda p: relax_differentiable(pop, lj, params=p, max_steps=1).volume[0])(
            lj.params)


def test_bad_input_and_jit_are_refused(lj):
    pop = from_atoms([bulk("Ar", "fcc", a=5.40)])  # refused before anything compiles
    with pytest.raises(TypeError, match="not inside jax.jit"):
        jax.jit(lambda p: relax_differentiable(pop, lj, params=p).volume)(lj.params)
    with pytest.raises(TypeError, match="not a differentiable input"):
        jax.grad(lambda c: relax_differentiable(pop.replace(cell=c), lj).volume.sum())(pop.cell)
    with pytest.raises(ValueError, match="fmax"):
        relax_differentiable(pop, lj, fmax=-1.0)
    with pytest.raises(ValueError, match="on_invalid"):
        relax_differentiable(pop, lj, on_invalid="ignore")


def test_binary_lj_cluster():
    """A cluster: atoms only, the rigid rotations projected out as well as translations.
    Only the Ar-Kr pair parameters move (so the answer is not a plain rescaling)."""
    pot = LennardJones(pairs={("Ar", "Ar"): (0.0104, 3.40), ("Ar", "Kr"): (0.0123, 3.52),
                              ("Kr", "Kr"): (0.0140, 3.65)}, cutoff=None)
    rng = np.random.default_rng(0)
    octahedron = 3.9 / np.sqrt(2) * np.array([(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0),
                                              (0, 0, 1), (0, 0, -1)], float)
    pop = from_atoms([Atoms("Ar3Kr2Ar", positions=octahedron + rng.normal(0, 0.1, (6, 3)))])
    params = pot.params

    def f(p):
        out = relax_differentiable(pop, pot, params=p)
        assert out.valid.all() and np.isnan(out.volume[0])
        d = out.positions[0] - jnp.mean(out.positions[0], axis=0)
        radius = jnp.sqrt(jnp.mean(jnp.sum(d * d, axis=1)))
        return jnp.stack([out.energy[0], out.enthalpy[0], radius,
                          jnp.linalg.norm(out.positions[0, 3] - out.positions[0, 4])])

    values, pull = jax.vjp(f, params)
    for leaf in ("epsilon", "sigma"):
        d = {k: jnp.zeros_like(v) for k, v in params.items()}
        d[leaf] = d[leaf].at[0, 1].set(params[leaf][0, 1]).at[1, 0].set(params[leaf][1, 0])
        implicit = jnp.stack([sum(jnp.sum(g * d[k]) for k, g in pull(row)[0].items())
                              for row in jnp.eye(len(values))])
        plus = {k: params[k] + H * d[k] for k in params}
        minus = {k: params[k] - H * d[k] for k in params}
        fd = (f(plus) - f(minus)) / (2 * H)
        assert np.all(np.abs(np.asarray(fd)) > 1e-6), fd
        np.testing.assert_allclose(np.asarray(implicit), np.asarray(fd), rtol=RTOL, atol=0)
    # pressure does not act on a cluster
    assert float(jax.grad(lambda P: relax_differentiable(pop, pot, pressure=P).enthalpy[0])(
        1.0)) == 0.0


@pytest.mark.slow
def test_eam_copper():
    eam = EAM.from_lammps("/usr/share/lammps/potentials/Cu_u3.eam")
    hcp = bulk("Cu", "hcp", a=2.60, c=4.15)
    pop = from_atoms([hcp, bulk("Cu", "fcc", a=3.70)])
    _check_params(pop, eam, ["embedding", "density", "z2"], bonds=[_bond(0, 1, (0, 0, 0))])


def _mgo():
    return BuckinghamCoulomb({("Mg", "O"): (1428.5, 0.2945, 0.0),
                              ("O", "O"): (22764.0, 0.1490, 27.88)},
                             {"Mg": 2.0, "O": -2.0}, cutoff=8.0)


@pytest.mark.slow
def test_buckingham_ewald_rutile_internal_u():
    """Rutile TiO2 (Matsui-Akaogi rigid ions): the oxygen parameter u moves with the
    parameters and the charges (Ewald sum); the Ti-O apical bond is u a sqrt(2)."""
    tio2 = load_potential("gulp:" + str(DATA_DIR / "rigid_ion" / "tio2_matsui_akaogi.lib"))
    u = 0.31
    rutile = Atoms("Ti2O4", cell=[4.55, 4.55, 2.95], pbc=True,
                   scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (u, u, 0), (1 - u, 1 - u, 0),
                                     (0.5 + u, 0.5 - u, 0.5), (0.5 - u, 0.5 + u, 0.5)])
    pop = from_atoms([rutile])
    _check_params(pop, tio2, ["A", "rho", "C", "charge"], bonds=[_bond(0, 2, (0, 0, 0))])


@pytest.mark.slow
def test_buckingham_ewald_rocksalt():
    pop = from_atoms([bulk("MgO", "rocksalt", a=4.30)])
    _check_params(pop, _mgo(), ["A", "rho", "C", "charge"], bonds=[_bond(0, 1, (0, 0, 0))],
                  pressure=2.0)


@pytest.mark.slow
def test_ml_potential_random_direction(si_pair):
    """The shipped jcsp.ml model (si-mlearn), along a random direction of its 28k
    parameters."""
    ml = load_potential("ml-si")
    key = jax.random.key(3)
    leaves, tree = jax.tree_util.tree_flatten(ml.params)
    keys = jax.random.split(key, len(leaves))
    d = tree.unflatten([jax.random.normal(k, x.shape, x.dtype) * (0.01 + jnp.abs(x))
                        for k, x in zip(keys, leaves)])
    _check_params(si_pair, ml, [], bonds=[_bond(0, 3, (0, 0, -1))], directions={"random": d})

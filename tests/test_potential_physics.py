"""Physics every potential must obey (Lennard-Jones, Stillinger-Weber, EAM).

Forces and stress against central finite differences of the energy; invariance under
rotation, translation and atom permutation; a 2x1x3 supercell has exactly 6x the
energy; forces are non-zero on a rattled crystal; energy and forces are continuous where
a pair crosses the cutoff, and stay finite right at it.

Each potential is evaluated once, on one padded batch holding every structure these
tests need (one compilation per potential).
"""

import os

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import jcsp
from jcsp import neighbors as nl
from jcsp.potentials import LennardJones
from jcsp.potentials.eam import EAM
from jcsp.potentials.stillinger_weber import StillingerWeber
from jcsp.structures.population import pad_structures, stack
from lammps_ref import IN_CI

POT = "/usr/share/lammps/potentials"
N_MAX = 32
FD_STEP = 2e-5          # Å for positions, dimensionless for strain
FD_ATOMS = (0, 1)       # atoms whose forces are checked component by component

evaluate = jax.jit(jcsp.evaluate_population, static_argnums=(0, 3))


def _crystal(kind):
    if kind == "Ar":
        return bulk("Ar", "fcc", a=5.26, cubic=True)
    if kind == "Si":
        return bulk("Si", "diamond", a=5.431)
    if kind == "GaN":
        return bulk("GaN", "zincblende", a=4.50)
    if kind == "Cu":
        return bulk("Cu", "fcc", a=3.615, cubic=True)
    if kind == "FeAl":
        return bulk("FeAl", "cesiumchloride", a=2.909) * (1, 1, 2)
    raise KeyError(kind)


def _load(name):
    if name == "lj":
        return LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5, truncation="smooth")
    path = os.path.join(POT, {"sw-Si": "Si.sw", "sw-GaN": "GaN.sw", "eam-Cu": "Cu_u3.eam",
                              "eam-AlFe-fs": "AlFe_mm.eam.fs"}[name])
    if not os.path.isfile(path) and not IN_CI:  # in CI a missing file fails below
        pytest.skip(f"{path} not installed (apt-get install lammps)")
    return (StillingerWeber if name.startswith("sw") else EAM).from_lammps(path)


#: potential id -> crystal it is tested on
CASES = {"lj": "Ar", "sw-Si": "Si", "sw-GaN": "GaN", "eam-Cu": "Cu", "eam-AlFe-fs": "FeAl"}


def _strained(atoms, eps):
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
    return out


def _random_rotation(rng):
    q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    return q * np.sign(np.linalg.det(q))


def _build(name, pot):
    """Every structure the tests need, by name."""
    rng = np.random.default_rng(7)
    base = _crystal(CASES[name])
    base.rattle(0.08, rng=rng)
    n = len(base)
    s = {"base": base, "pristine": _crystal(CASES[name])}
    rot = _random_rotation(rng)
    s["rotated"] = Atoms(base.numbers, positions=base.positions @ rot.T,
                         cell=base.cell[:] @ rot.T, pbc=True)
    s["translated"] = Atoms(base.numbers, positions=base.positions + rng.normal(size=3),
                            cell=base.cell, pbc=True)
    perm = rng.permutation(n)
    s["permuted"] = base[perm]
    s["supercell"] = base.repeat((2, 1, 3))
    for a in FD_ATOMS:
        for c in range(3):
            for sign in (1, -1):
                moved = base.copy()
                moved.positions[a, c] += sign * FD_STEP
                s[f"x{a}{c}{sign:+d}"] = moved
    for i, j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = sign * FD_STEP / (1 if i == j else 2)
            s[f"e{i}{j}{sign:+d}"] = _strained(base, eps)
    # A pair (and, for SW, a three-body leg) crossing the cutoff: r = rc - delta.
    rc = pot.cutoff
    z = 18 if pot.species is None else pot.species[0]
    box = np.eye(3) * (2 * rc + 3.0)
    for delta in CUT_DELTAS:
        r = rc - delta
        s[f"dimer{delta:g}"] = Atoms([z, z], positions=[[1, 1, 1], [1 + r, 1, 1]],
                                     cell=box, pbc=True)
        if isinstance(pot, StillingerWeber):
            ang = np.radians(100.0)
            s[f"trimer{delta:g}"] = Atoms([z] * 3, positions=np.array(
                [[0, 0, 0], [2.35, 0, 0], [r * np.cos(ang), r * np.sin(ang), 0]]) + 2.0,
                cell=box, pbc=True)
    return s, perm


#: rc - r of the cutoff scan; negative = beyond the cutoff.
CUT_DELTAS = (0.3, 1e-2, 1e-3, 1e-4, 1e-5, 1e-9, -1e-4)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    name = request.param
    pot = _load(name)
    structures, perm = _build(name, pot)
    names = list(structures)
    atoms = [structures[k] for k in names]
    for a in atoms:
        pot.check_species(a.numbers)
    pop = stack([a.get_scaled_positions(wrap=False) for a in atoms], [a.cell[:] for a in atoms],
                [a.numbers for a in atoms], n_max=N_MAX)
    pop = pad_structures(pop, 16 * -(-pop.batch_size // 16))
    spec = nl.spec_for(pot.cutoff, pop.frac, pop.cell, pop.mask, pop.pbc)
    res = jax.tree_util.tree_map(np.asarray, evaluate(pot, pot.params, pop, spec))
    assert not res.overflow.any()
    assert np.isfinite(res.forces).all() and np.isfinite(res.stress).all()
    out = {}
    for b, k in enumerate(names):
        n = len(structures[k])
        out[k] = dict(energy=float(res.energy[b]), forces=res.forces[b, :n],
                      stress=res.stress[b], atoms=structures[k])
    return name, pot, out, perm


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b))


def test_forces_are_nonzero_on_a_rattled_crystal_and_zero_on_the_pristine_one(case):
    _, _, r, _ = case
    assert np.abs(r["base"]["forces"]).max() > 0.02
    assert np.abs(r["pristine"]["forces"]).max() < 1e-10 * max(1.0, abs(r["pristine"]["energy"]))


def test_forces_match_finite_differences(case):
    _, _, r, _ = case
    fd = np.array([[(r[f"x{a}{c}-1"]["energy"] - r[f"x{a}{c}+1"]["energy"]) / (2 * FD_STEP)
                    for c in range(3)] for a in FD_ATOMS])
    analytic = r["base"]["forces"][list(FD_ATOMS)]
    assert np.abs(analytic).max() > 0.02
    assert _rel(fd, analytic) < 1e-6


def test_stress_matches_finite_differences(case):
    _, _, r, _ = case
    volume = r["base"]["atoms"].get_volume()
    fd = np.zeros((3, 3))
    for i, j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
        d = (r[f"e{i}{j}+1"]["energy"] - r[f"e{i}{j}-1"]["energy"]) / (2 * FD_STEP) / volume
        fd[i, j] = fd[j, i] = d
    assert np.abs(fd).max() > 1e-4
    assert _rel(fd, r["base"]["stress"]) < 1e-6


def test_rotation_translation_permutation_invariance(case):
    _, _, r, perm = case
    e, f, s = (r["base"][k] for k in ("energy", "forces", "stress"))
    rot = np.linalg.solve(r["base"]["atoms"].cell[:], r["rotated"]["atoms"].cell[:]).T  # R
    assert r["rotated"]["energy"] == pytest.approx(e, rel=1e-12)
    assert _rel(r["rotated"]["forces"], f @ rot.T) < 1e-11
    assert _rel(r["rotated"]["stress"], rot @ s @ rot.T) < 1e-11
    assert r["translated"]["energy"] == pytest.approx(e, rel=1e-12)
    assert _rel(r["translated"]["forces"], f) < 1e-11
    assert r["permuted"]["energy"] == pytest.approx(e, rel=1e-12)
    assert _rel(r["permuted"]["forces"], f[perm]) < 1e-11
    assert _rel(r["permuted"]["stress"], s) < 1e-11


def test_supercell_has_exactly_six_times_the_energy(case):
    _, _, r, _ = case
    e, f, s = (r["base"][k] for k in ("energy", "forces", "stress"))
    sup = r["supercell"]
    assert sup["energy"] == pytest.approx(6 * e, rel=1e-10)
    assert _rel(sup["forces"], np.tile(f, (6, 1))) < 1e-10
    assert _rel(sup["stress"], s) < 1e-10


def test_energy_and_forces_are_continuous_across_the_cutoff(case):
    """LJ (smooth truncation) and SW: energy and force go to zero at the cutoff. EAM
    tables reach zero there (energy continuous) but not always with zero slope, so an
    EAM force may jump at the cutoff, in LAMMPS as here."""
    name, pot, r, _ = case
    for kind in ("dimer", "trimer") if isinstance(pot, StillingerWeber) else ("dimer",):
        beyond = r[f"{kind}-0.0001"]
        energy = np.array([r[f"{kind}{d:g}"]["energy"] for d in CUT_DELTAS[:-1]])
        force = np.array([np.abs(r[f"{kind}{d:g}"]["forces"] - beyond["forces"]).max()
                          for d in CUT_DELTAS[:-1]])
        gap = np.abs(energy - beyond["energy"])
        assert gap[0] > 1e-6 and force[0] > 1e-6               # it does interact inside
        assert np.all(np.diff(gap) <= 0)
        assert gap[-1] < 1e-9                                  # 1e-9 Å inside the cutoff
        assert np.isfinite(force).all()
        if kind == "dimer":
            assert np.abs(beyond["forces"]).max() == 0.0
        if isinstance(pot, EAM):
            continue
        assert np.all(np.diff(force) <= 0) and force[-1] < 1e-6
        if isinstance(pot, StillingerWeber):
            # exp(sigma / (r - a sigma)) vanishes faster than any power at a sigma.
            assert gap[1] < 1e-50 and force[1] < 1e-50

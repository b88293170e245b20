"""The named search moves (jcsp.search.moves): symmetrisation, soft modes, Wyckoff-orbit
permutation and heredity, and their use by the GA and the swarm.

References: symmetry is checked with spglib at a tight tolerance (crystals) and, for
clusters, by a brute-force geometric count of rotation axes and the inversion written
here (no jcsp code); the Hessian against central finite differences of forces (ASE's
Lennard-Jones for clusters, jcsp's forces for a periodic Stillinger-Weber crystal)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import spglib
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLJ
from ase.cluster import Icosahedron, Octahedron

import jcsp
from jcsp.calculator import JCSPCalculator
from jcsp.potentials import LennardJones, StillingerWeber
from jcsp.search import generate, moves, softmode, symmetrize
from jcsp.search.config import SearchConfig
from jcsp.search.drivers import operators as ops
from jcsp.search.run import Session

LJ = LennardJones(1.0, 1.0, None)
SW = "/usr/share/lammps/potentials/Si.sw"


def _relaxed_cluster(atoms):
    d = atoms.get_all_distances()
    atoms.positions *= 1.12 / d[d > 1e-6].min()
    atoms.pbc, atoms.cell = False, None
    out = jcsp.relax([atoms], LJ, fmax=1e-5)[0]
    out.positions -= out.positions.mean(0)
    return out


@pytest.fixture(scope="module")
def lj13():
    return _relaxed_cluster(Icosahedron("Ar", 2))


@pytest.fixture(scope="module")
def lj38():
    return _relaxed_cluster(Octahedron("Ar", 4, cutoff=1))


def _rotation(axis, angle):
    u = axis / np.linalg.norm(axis)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _maps_onto_itself(x, m, tol):
    y = x @ m.T
    d = np.linalg.norm(y[:, None] - x[None], axis=-1)
    return d.min(1).max() < tol


def _axes(x, order, tol=1e-6):
    """Distinct n-fold rotation axes of the centred cluster x (test-side brute force:
    candidate axes through atoms, midpoints of pairs and centroids of triples)."""
    n = len(x)
    cands = list(x) + [0.5 * (x[i] + x[j]) for i in range(n) for j in range(i + 1, n)]
    cands += [(x[i] + x[j] + x[k]) / 3 for i in range(min(n, 14)) for j in range(i + 1, min(n, 14))
              for k in range(j + 1, min(n, 14))]
    found = []
    for c in cands:
        if np.linalg.norm(c) < 1e-3:
            continue
        u = c / np.linalg.norm(c)
        if any(abs(abs(u @ f) - 1) < 1e-6 for f in found):
            continue
        if _maps_onto_itself(x, _rotation(u, 2 * np.pi / order), tol):
            found.append(u)
    return len(found)


def _session(composition, potential, **kw):
    return Session(SearchConfig.from_keywords(composition, **kw), potential)


def test_symmetrize_completes_distorted_icosahedron(lj13, monkeypatch):
    rng = np.random.default_rng(3)
    distorted = lj13.copy()
    distorted.positions += rng.normal(0, 0.03, distorted.positions.shape)
    x = distorted.positions - distorted.positions.mean(0)
    assert _axes(x, 5, tol=1e-3) == 0  # the distortion broke the symmetry
    session = _session("LJ13", LJ, cluster=True)
    monkeypatch.setattr(moves, "CORE_FRACTION", 1.0)  # the group of all atoms
    out = moves.apply(session, "symmetrize", distorted, rng)
    y = out.positions - out.positions.mean(0)
    assert _axes(y, 5) == 6 and _maps_onto_itself(y, -np.eye(3), 1e-6)  # Ih
    assert np.sqrt(np.mean(np.sum((y - x) ** 2, 1))) < 0.1  # a nearby structure


def test_symmetrize_completes_distorted_truncated_octahedron(lj38):
    rng = np.random.default_rng(4)
    x = lj38.positions + rng.normal(0, 0.03, lj38.positions.shape)
    x -= x.mean(0)
    name, op_list, _ = symmetrize.find_point_group(x, lj38.numbers, 1.12, 0.2)
    assert name == "Oh"
    y = symmetrize.symmetrize_cluster(x, lj38.numbers, op_list, 1.12, rng)
    y -= y.mean(0)
    assert _axes(y, 4) == 3 and _maps_onto_itself(y, -np.eye(3), 1e-6)
    assert _axes(x, 4, tol=1e-3) == 0
    # the symmetric structure relaxes to the Oh global minimum of LJ38
    atoms = lj38.copy()
    atoms.positions = y
    relaxed = jcsp.relax([atoms], LJ, fmax=1e-4)[0]
    assert relaxed.info["energy"] == pytest.approx(-173.928427, abs=1e-4)  # Wales & Doye


def test_symmetrize_crystal_restores_space_group():
    rng = np.random.default_rng(5)
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.positions += rng.normal(0, 0.03, si.positions.shape)
    si.set_cell(si.cell[:] @ (np.eye(3) + 0.01 * rng.normal(size=(3, 3))), scale_atoms=True)
    tight = 1e-4
    assert spglib.get_symmetry_dataset((si.cell[:], si.get_scaled_positions(), si.numbers),
                                       symprec=tight).number == 1
    session = types.SimpleNamespace(length=2.22, cluster=False, potential=None)
    out = moves.apply(session, "symmetrize", si, rng)
    data = spglib.get_symmetry_dataset((out.cell[:], out.get_scaled_positions(), out.numbers),
                                       symprec=tight)
    assert data.number == 227
    assert abs(out.get_volume() - si.get_volume()) / si.get_volume() < 0.02


def _fd_hessian(atoms, forces, h=1e-4):
    n = len(atoms)
    out = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        col = []
        for sign in (1, -1):
            a = atoms.copy()
            pos = a.positions.copy()
            pos[k // 3, k % 3] += sign * h
            a.positions = pos
            col.append(forces(a).ravel())
        out[:, k] = -(col[0] - col[1]) / (2 * h)
    return 0.5 * (out + out.T)


def test_softmode_hessian_and_direction_match_finite_differences(lj13):
    atoms = lj13.copy()
    h = softmode.hessian(LJ, atoms)

    def ase_forces(a):
        a.calc = AseLJ(sigma=1.0, epsilon=1.0, rc=100.0, smooth=False)
        return a.get_forces()

    ref = _fd_hessian(atoms, ase_forces)
    assert np.abs(ref).max() > 10  # not trivially zero
    np.testing.assert_allclose(h, ref, atol=2e-5 * np.abs(ref).max())
    session = _session("LJ13", LJ, cluster=True)
    for seed in range(3):
        out = moves.apply(session, "softmode", atoms, np.random.default_rng(seed))
        d = (out.positions - atoms.positions).ravel()
        largest = np.linalg.norm(d.reshape(-1, 3), axis=1).max() / session.length
        assert 0.3 - 1e-9 <= largest <= 0.5 + 1e-9
        d /= np.linalg.norm(d)
        # an eigenvector of the finite-difference Hessian (rigid motions projected out)
        rigid = softmode.rigid_modes(atoms)
        p = np.eye(len(d)) - rigid.T @ rigid
        hp = p @ ref @ p
        lam = d @ hp @ d
        assert np.linalg.norm(hp @ d - lam * d) < 1e-3 * np.abs(ref).max()
        w = np.linalg.eigvalsh(hp)
        w = w[np.abs(w) > 1e-6 * np.abs(ref).max()]
        assert lam <= np.sort(w)[moves.SOFTEST - 1] * (1 + 1e-6)  # among the softest
        assert lam > 0  # a minimum: translations and rotations were skipped


def test_softmode_periodic_crystal_hessian():
    sw = StillingerWeber.from_lammps(SW)
    rng = np.random.default_rng(6)
    si = bulk("Si", "diamond", a=5.43)  # 2 atoms: every neighbor is a periodic image
    si.positions += rng.normal(0, 0.05, si.positions.shape)
    h = softmode.hessian(sw, si)

    calc = JCSPCalculator(sw)

    def forces(a):
        a.calc = calc
        return a.get_forces()

    ref = _fd_hessian(si, forces)
    assert np.abs(ref).max() > 1
    np.testing.assert_allclose(h, ref, atol=1e-5 * np.abs(ref).max())
    w, modes = softmode.soft_modes(h, si)
    assert len(w) == 3 * len(si) - 3 and np.all(np.diff(w) >= -1e-9)


def _binary_crystal(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        atoms = generate.random_crystal({"Mg": 4, "O": 4}, 62, rng, volume=80.0)
        if atoms is not None:
            return atoms
    raise AssertionError("no Pnma MgO cell generated")


def _group(atoms, symprec=1e-3):
    data = spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(),
                                        atoms.numbers), symprec=symprec)
    return data.number, len(data.rotations)


def test_wyckoff_permutation_keeps_space_group():
    atoms = _binary_crystal(7)
    before = _group(atoms)
    assert before[0] > 1
    rng = np.random.default_rng(8)
    out = ops.permute_orbits(atoms, rng, 0.05)
    assert out is not None
    assert (out.numbers != atoms.numbers).any()
    assert sorted(out.numbers) == sorted(atoms.numbers)
    np.testing.assert_allclose(out.get_scaled_positions(), atoms.get_scaled_positions())
    assert _group(out)[1] >= before[1]
    session = types.SimpleNamespace(length=2.0, cluster=False, potential=None)
    moved = moves.apply(session, "swap_orbits", atoms, rng)
    assert _group(moved)[1] >= before[1]


def test_wyckoff_heredity_keeps_first_parents_symmetry():
    a, b = _binary_crystal(9), _binary_crystal(10)
    ops_a = _group(a)[1]
    for seed in range(4):
        child = ops.orbit_heredity(a, b, np.random.default_rng(seed), 0.05, 2.0)
        assert sorted(child.numbers) == sorted(a.numbers)
        assert _group(child)[1] >= ops_a


def test_every_move_keeps_composition(lj13):
    rng = np.random.default_rng(11)
    cluster = _session("LJ13", LJ, cluster=True)
    parent = cluster.evaluate(0, [lj13])[0]
    for name in moves.MOVES:
        out = moves.apply(cluster, name, parent, rng)
        assert len(out) == 13 and not out.pbc.any()
    crystal = types.SimpleNamespace(length=2.0, cluster=False, potential=None,
                                    atom_energies=lambda s: [np.linspace(0, 1, len(s[0]))])
    atoms = _binary_crystal(12)
    for name in moves.MOVES:
        if name == "softmode":  # needs a potential of Mg and O; checked on Si above
            continue
        out = moves.apply(crystal, name, atoms, rng)
        assert sorted(out.numbers) == sorted(atoms.numbers) and out.pbc.all()


@pytest.mark.parametrize("algorithm", ["ga", "pso"])
def test_drivers_use_the_moves(algorithm, monkeypatch):
    calls = []
    real = moves.MOVES["symmetrize"]

    def counted(session, atoms, rng):
        calls.append(len(atoms))
        return real(session, atoms, rng)

    monkeypatch.setitem(moves.MOVES, "symmetrize", counted)
    res = jcsp.search("LJ13", LJ, algorithm=algorithm, budget=32, population=8, cluster=True,
                      seed=1, moves={"symmetrize": 0.5})
    assert res.n_relaxations == 32 and calls and set(calls) == {13}
    assert res.best.info["energy"] < -40


def test_ga_operator_weights_for_new_moves(monkeypatch):
    """GA operator weights on symmetrize and softmode alone: every child of generations
    after the first comes from one of the two moves (counted), and with the default
    weights neither is called (so the count can fail)."""
    from jcsp.search.drivers import genetic

    calls = {"symmetrize": 0, "softmode": 0}
    for name in calls:
        real = getattr(moves, name)

        def counted(session, atoms, rng, name=name, real=real):
            calls[name] += 1
            return real(session, atoms, rng)

        monkeypatch.setattr(genetic.moves, name, counted)
    plain = jcsp.search("LJ13", LJ, algorithm="ga", budget=16, population=8, cluster=True,
                        seed=2)
    assert plain.n_relaxations == 16 and calls == {"symmetrize": 0, "softmode": 0}
    res = jcsp.search("LJ13", LJ, algorithm="ga", budget=24, population=8, cluster=True,
                      seed=2, options={"symmetrize": 0.5, "softmode": 0.5, "heredity": 0.0,
                                       "strain": 0, "permutation": 0, "rattle": 0,
                                       "surface": 0, "random": 0})
    assert res.n_relaxations == 24
    assert calls["symmetrize"] > 0 and calls["softmode"] > 0
    assert calls["symmetrize"] + calls["softmode"] >= 24 - 8  # one per child at least
    with pytest.raises(ValueError):
        jcsp.search("LJ13", LJ, algorithm="ga", budget=8, cluster=True,
                    options={"wyckoff": 1.5})


def test_ga_wyckoff_heredity_keeps_symmetry(monkeypatch):
    """GA children made with ``wyckoff=1`` go through the orbit heredity and keep the
    first parent's operations (spglib at a tight tolerance)."""
    from jcsp.search.drivers import genetic

    a, b = _binary_crystal(13), _binary_crystal(14)
    a.info["uid"], b.info["uid"] = "a", "b"
    calls = []
    real = ops.orbit_heredity

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(ops, "orbit_heredity", counted)
    session = types.SimpleNamespace(length=2.0, cluster=False, counts={"Mg": 4, "O": 4},
                                    symbols=["Mg"] * 4 + ["O"] * 4,
                                    special_move=lambda parent, rng: None)
    config = genetic.Config(heredity=1.0, strain=0, permutation=0, rattle=0, surface=0,
                            random=0, wyckoff=1.0, tries=1)
    ops_a, ops_b = _group(a)[1], _group(b)[1]
    for seed in range(3):
        child, parents = genetic.make_child(session, config, [a, b], np.random.default_rng(seed),
                                            None)
        assert sorted(child.numbers) == sorted(a.numbers)
        first = {"a": ops_a, "b": ops_b}[parents[0]]
        assert _group(child)[1] >= first
    assert len(calls) == 3

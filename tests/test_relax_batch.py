"""Batch behaviour of jcsp.relax: batched equals single, streaming, failure isolation,
neighbor-list overflow, compile counts, clusters, convergence options and bad input.

One potential, one shape bucket (4 atoms) and one batch size (4 slots) for the whole
module, so nearly every test reuses the same compiled segment.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.cluster import Icosahedron

import jcsp
from jcsp.potentials import LennardJones
from jcsp.relax import driver
from jcsp.structures.convert import from_atoms

POT = LennardJones(pairs={("Ar", "Ar"): (0.0104, 3.4), ("Ar", "Kr"): (0.0121, 3.52),
                          ("Kr", "Kr"): (0.0140, 3.65)}, cutoff=8.5, truncation="smooth")
B = 4
FMAX = 1e-3


def _crystal(seed, symbols=("Ar",) * 4, a0=5.3):
    rng = np.random.default_rng(seed)
    atoms = bulk("Ar", "fcc", a=a0, cubic=True)
    atoms.set_chemical_symbols(symbols)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))),
                   scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.12, atoms.positions.shape)
    return atoms


GOOD = [_crystal(s) for s in range(10, 16)]
KRYPTON = _crystal(20, ["Kr", "Kr", "Ar", "Ar"])
EXPLODING = _crystal(21)
EXPLODING.positions[1] = EXPLODING.positions[0] + [0.3, 0.0, 0.0]  # forces ~1e12 eV/Å
TENSION = _crystal(22)  # relaxed under -1 GPa: expands without bound
POPULATIONS = [[_crystal(100 * k + j) for j in range(3)] for k in range(1, 4)]

# Size the module's neighbor spec once over every structure used here (this also seeds
# relax's cross-call spec cache), so all default-path calls share one compiled segment.
_ALL = GOOD + [KRYPTON, EXPLODING, TENSION] + sum(POPULATIONS, [])
_POP = from_atoms(_ALL, n_max=4)
_CAPACITY = driver._capacity_for(POT, (True, True, True), 4, driver._skin(POT))
_CAPACITY.fit(_POP)
SPEC = _CAPACITY.spec


def _same(a, b):
    """Bitwise identity of two relaxed structures and their results."""
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell[:], b.cell[:])
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    for key in ("energy", "enthalpy", "steps", "converged", "failed"):
        assert a.info[key] == b.info[key], key


@pytest.fixture(scope="module")
def streamed():
    """GOOD (6 structures) streamed through 4 slots."""
    return jcsp.relax(GOOD, POT, fmax=FMAX, batch_size=B)


@pytest.fixture(scope="module")
def singles():
    return [jcsp.relax([a], POT, fmax=FMAX, batch_size=B)[0] for a in GOOD]


def test_streaming_equals_single_in_input_order(streamed, singles):
    assert len(streamed) == len(GOOD)
    for atoms, out, one in zip(GOOD, streamed, singles):
        assert out.info["converged"] and not out.info["failed"]
        assert out.info["steps"] > 10 and out.info["max_force"] < FMAX
        assert np.abs(out.positions - atoms.positions).max() > 1e-2  # it really moved
        _same(out, one)
        assert out.get_chemical_formula() == atoms.get_chemical_formula()
    # Different inputs give different results: the order is really the input order.
    assert len({round(o.info["energy"], 12) for o in streamed}) == len(GOOD)


def test_results_attached_and_consistent(streamed):
    out = streamed[0]
    assert out.get_potential_energy() == out.info["energy"]
    assert out.get_forces().shape == (4, 3)
    stress = out.get_stress()
    assert abs(-stress[:3].mean() * jcsp.units.EV_PER_A3_IN_GPA - out.info["pressure"]) < 1e-9
    assert abs(out.info["volume"] - out.get_volume()) < 1e-9
    assert out.info["enthalpy"] == out.info["energy"]  # zero pressure
    # Input structures are untouched.
    assert GOOD[0].calc is None and "energy" not in GOOD[0].info


def test_failures_are_isolated_bit_for_bit():
    """A NaN structure, an exploding one and one whose cell blows up fail with a reason;
    the good ones are bit-identical to a run without them."""
    params = {k: np.array(v) for k, v in POT.params.items()}
    params["epsilon"][1, 1] = np.nan  # Kr-Kr: NaN energy for the krypton structure only
    mixed = [GOOD[0], KRYPTON, EXPLODING, TENSION, GOOD[1]]
    pressures = [0.0, 0.0, 0.0, -1.0, 0.0]
    out = jcsp.relax(mixed, POT, fmax=FMAX, pressure=pressures, batch_size=B, params=params)
    ref = jcsp.relax([GOOD[0], GOOD[1]], POT, fmax=FMAX, batch_size=B, params=params)
    _same(out[0], ref[0])
    _same(out[4], ref[1])
    assert out[0].info["converged"] and out[0].info["steps"] > 10
    for k, word in [(1, "non-finite"), (2, "exploding"), (3, "exploded")]:
        assert out[k].info["failed"] and not out[k].info["converged"], k
        assert word in out[k].info["failure_reason"], out[k].info["failure_reason"]
    assert out[1].info["steps"] == 0 and out[2].info["steps"] == 0
    assert out[3].info["steps"] > 0
    assert "failure_reason" not in out[0].info


def test_overflow_reallocation_matches_ample_capacity(streamed):
    """A spec with room for 4 neighbors and one image shell (each atom has ~50 neighbors
    and needs two shells) overflows at once; the host grows it and reruns."""
    tiny = dataclasses.replace(SPEC, capacity=4, images=(1, 1, 1))
    out = jcsp.relax(GOOD[:4], POT, fmax=FMAX, batch_size=B, _spec=tiny)
    for a, b in zip(out, streamed[:4]):
        # Capacity changes only the order of a few sums (~1e-16); see driver docs.
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.cell[:], b.cell[:], rtol=0, atol=1e-10)
        assert abs(a.info["energy"] - b.info["energy"]) < 1e-12
        assert a.info["steps"] == b.info["steps"] and a.info["converged"]


def test_three_pressures_compile_once():
    counts = []
    results = []
    for pressure, population in zip((0.0, 0.1, 0.2), POPULATIONS):
        before = driver.TRACE_COUNTS["segment"]
        results.append(jcsp.relax(population, POT, fmax=FMAX, pressure=pressure))
        counts.append(driver.TRACE_COUNTS["segment"] - before)
    assert counts[0] <= 1 and counts[1:] == [0, 0], counts
    for pressure, out in zip((0.0, 0.1, 0.2), results):
        for atoms in out:
            assert atoms.info["converged"]
            assert abs(atoms.info["pressure"] - pressure) < 0.02
    volumes = [np.mean([a.get_volume() for a in out]) for out in results]
    assert volumes[0] > volumes[1] > volumes[2]  # pressure really acts


def test_max_steps_and_smax():
    short = jcsp.relax(GOOD[:2], POT, fmax=FMAX, max_steps=3, batch_size=B)
    assert all(a.info["steps"] == 3 and not a.info["converged"] and not a.info["failed"]
               for a in short)
    tight = jcsp.relax(GOOD[:2], POT, fmax=FMAX, smax=1e-3, batch_size=B)
    for a in tight:
        assert a.info["converged"]
        assert a.info["max_stress"] < 1e-3 and a.info["max_force"] < FMAX


def test_lj13_cluster_reaches_global_minimum():
    """Wales & Doye (1997): LJ13 icosahedron, E = -44.326801 epsilon."""
    ico = Icosahedron("Ar", 2)
    positions = ico.positions - ico.positions[0]
    nearest = np.sort(np.linalg.norm(positions, axis=1))[1]
    rng = np.random.default_rng(3)
    positions = positions * (1.1 / nearest) + rng.normal(0.0, 0.05, positions.shape) + 7.0
    cluster = Atoms("Ar13", positions=positions, pbc=False)
    lj = LennardJones(1.0, 1.0, cutoff=None)
    out = jcsp.relax([cluster], lj, fmax=1e-5)[0]
    assert out.info["converged"] and out.info["steps"] > 10
    assert abs(out.info["energy"] - (-44.326801)) < 1e-6
    assert np.isnan(out.info["volume"]) and not out.pbc.any()
    # Output in the input's frame: the centre of mass does not move under FIRE.
    np.testing.assert_allclose(out.positions.mean(0), cluster.positions.mean(0), atol=1e-8)


@pytest.mark.parametrize("kwargs, words", [
    (dict(pressure="abc"), "pressure must be a number"),
    (dict(pressure=float("nan")), "finite"),
    (dict(pressure=[0.0, 1.0, 2.0]), "one per structure"),
    (dict(optimizer="bfgs"), "unknown optimizer"),
    (dict(fmax=0.0), "fmax"),
    (dict(fmax="tight"), "fmax"),
    (dict(max_steps=-1), "max_steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(dtype=np.int32), "dtype"),
])
def test_bad_options_raise_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        jcsp.relax(GOOD[:1], POT, **kwargs)


def test_bad_structures_raise_clear_errors_when_strict():
    si = GOOD[0].copy()
    si.symbols[0] = "Si"
    with pytest.raises(ValueError, match="contains Si"):
        jcsp.relax([si], POT, strict=True)
    overlap = GOOD[0].copy()
    overlap.positions[1] = overlap.positions[0]
    with pytest.raises(ValueError, match="structure 1.*overlap"):
        jcsp.relax([GOOD[1], overlap], POT, strict=True)
    flat = GOOD[0].copy()
    flat.cell[2] = flat.cell[0]
    with pytest.raises(ValueError, match="zero volume"):
        jcsp.relax([flat], POT, strict=True)
    broken = GOOD[0].copy()
    broken.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jcsp.relax([broken], POT, strict=True)
    with pytest.raises(ValueError, match="no cutoff"):
        jcsp.relax([GOOD[0]], LennardJones(cutoff=None), strict=True)
    with pytest.raises(ValueError, match="list of ase.Atoms"):
        jcsp.relax(GOOD[0], POT)
    with pytest.raises(ValueError, match="no structures"):
        jcsp.relax([], POT)


def test_ewald_box_resized_when_the_cell_outgrows_it():
    """CI-sized: primitive NaCl (2 atoms) compressed to a = 3.7 Å expands to 5.62 Å,
    past the reciprocal box sized for the start cell (with its 1.25 margin), so the
    driver must resize the potential mid-run. Reference: the rock-salt energy from the
    Madelung constant (1.747564594633) plus the Buckingham Na-Cl pairs within the cutoff
    (ASE's neighbor list), minimised over the lattice constant by scipy."""
    from ase.neighborlist import neighbor_list
    from scipy.optimize import minimize_scalar

    from jcsp.potentials.ewald import required_kmax
    from jcsp.units import COULOMB_EV_A

    a_buck, rho, c6, cutoff = 1254.9, 0.317, 6.99, 6.0
    nacl = jcsp.potentials.BuckinghamCoulomb(pairs={("Na", "Cl"): (a_buck, rho, c6)},
                                             charges={"Na": 1.0, "Cl": -1.0}, cutoff=cutoff)

    def rock_salt(a):  # eV per NaCl pair
        atoms = bulk("NaCl", "rocksalt", a=a)
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        d = d[atoms.numbers[i] != atoms.numbers[j]]
        return 0.5 * np.sum(a_buck * np.exp(-d / rho) - c6 / d**6) \
            - 1.747564594633 * COULOMB_EV_A / (a / 2)

    ref = minimize_scalar(rock_salt, bounds=(5.0, 6.2), method="bounded",
                          options=dict(xatol=1e-9))
    start = bulk("NaCl", "rocksalt", a=3.7)
    start.positions += np.random.default_rng(0).normal(0.0, 0.05, start.positions.shape)
    out = jcsp.relax([start], nacl, fmax=1e-4)[0]
    box = nacl.for_cells(start.cell[:][None]).ewald.kmax
    need = required_kmax(out.cell[:][None], nacl.ewald.gmax)[0]
    assert np.any(need > np.asarray(box)), (box, need)  # the start box cannot hold it
    assert out.info["converged"] and not out.info["failed"]
    assert out.info["energy"] == pytest.approx(ref.fun, abs=1e-7)
    assert out.get_volume() == pytest.approx(ref.x**3 / 4, rel=1e-4)
    np.testing.assert_allclose(out.cell.angles(), 60.0, atol=0.01)  # still rock salt


@pytest.mark.slow
def test_cell_outgrowing_a_static_ewald_box_is_resized_not_failed():
    """Compressed NaCl expands by more than the Ewald k box's margin: the energy turns
    NaN, the driver resizes the potential (for_cells) and resumes the structure."""
    nacl = jcsp.potentials.BuckinghamCoulomb(pairs={("Na", "Cl"): (1254.9, 0.317, 6.99)},
                                             charges={"Na": 1.0, "Cl": -1.0}, cutoff=8.0)
    start = bulk("NaCl", "rocksalt", a=4.0, cubic=True)
    start.positions += np.random.default_rng(0).normal(0.0, 0.05, start.positions.shape)
    before = driver.TRACE_COUNTS["segment"]
    out = jcsp.relax([start], nacl, fmax=1e-3)[0]
    assert driver.TRACE_COUNTS["segment"] - before == 2  # sized for 4 Å, then resized
    assert out.info["converged"] and not out.info["failed"]
    assert out.cell.lengths().min() > 1.3 * 4.0
    check = out.copy()
    check.calc = jcsp.JCSPCalculator(nacl)
    assert abs(check.get_potential_energy() - out.info["energy"]) < 1e-9


def test_verlet_lists_reused_between_rebuilds_give_exact_results(streamed):
    """CI-sized: a 0.2 Å skin (lists kept until Verlet's bound on how far any pair
    moved, 2 max|u| + list cutoff x |strain|, reaches the skin) and skin 0 (lists rebuilt
    every step) give the default skin's relaxations to round-off."""
    skin = 0.2
    small = jcsp.relax(GOOD[:2], POT, fmax=FMAX, batch_size=B, skin=skin)
    every = jcsp.relax(GOOD[:2], POT, fmax=FMAX, batch_size=B, skin=0.0)
    for atoms, a, b, c in zip(GOOD, small, every, streamed[:2]):
        # The whole relaxation moved pairs by several skins: lists were rebuilt mid-run.
        u = (c.get_scaled_positions(wrap=False) - atoms.get_scaled_positions(wrap=False))
        u = np.linalg.norm(u @ c.cell[:], axis=1).max()
        strain = np.linalg.solve(atoms.cell[:], c.cell[:]) - np.eye(3)
        assert 2 * u + (POT.cutoff + skin) * np.linalg.norm(strain) > 3 * skin
        for x in (a, b):
            np.testing.assert_allclose(x.positions, c.positions, rtol=0, atol=1e-10)
            np.testing.assert_allclose(x.cell[:], c.cell[:], rtol=0, atol=1e-10)
            assert abs(x.info["energy"] - c.info["energy"]) < 1e-12
            assert x.info["steps"] == c.info["steps"] and x.info["converged"]


@pytest.mark.slow
def test_skin_does_not_change_results(streamed):
    """Lists rebuilt every step (skin 0, no trimming) give the same relaxations."""
    out = jcsp.relax(GOOD[:2], POT, fmax=FMAX, batch_size=B, skin=0.0)
    for a, b in zip(out, streamed[:2]):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        assert abs(a.info["energy"] - b.info["energy"]) < 1e-12
        assert a.info["steps"] == b.info["steps"]

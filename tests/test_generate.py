"""Random symmetric structures: Wyckoff sets against the International Tables, symmetry
of generated crystals checked by spglib, minimum separations, clear errors."""

import numpy as np
import pytest
import spglib
from ase import Atoms
from ase.data import covalent_radii

from jcsp.search import generate as gen
from jcsp.search import wyckoff

# Multiplicities and free parameters of every Wyckoff position (International Tables A).
TABLES = {
    14: [(4, 3)] + [(2, 0)] * 4,  # P2_1/c: 4e, 2a-2d
    62: [(8, 3), (4, 2), (4, 0), (4, 0)],  # Pnma: 8d, 4c, 4b, 4a
    227: [(192, 3), (96, 2), (96, 1), (48, 1), (32, 1), (16, 0), (16, 0), (8, 0), (8, 0)],
    229: [(96, 3), (48, 2), (48, 2), (48, 1), (24, 1), (24, 1), (16, 1), (12, 1), (12, 0),
          (8, 0), (6, 0), (2, 0)],
}


@pytest.mark.parametrize("number", sorted(TABLES))
def test_wyckoff_sets_match_international_tables(number):
    got = sorted(((w.multiplicity, w.dof) for w in wyckoff.wyckoff_sets(number)), reverse=True)
    assert got == sorted(TABLES[number], reverse=True)


def test_feasibility():
    assert wyckoff.feasible(227, [8])        # diamond: 8a
    assert not wyckoff.feasible(227, [3])    # nothing sums to 3 in Fd-3m
    assert wyckoff.feasible(225, [4, 4])     # rock salt: 4a + 4b
    assert not wyckoff.feasible(225, [4, 4, 4, 4])  # only two 4-fold points exist


def test_random_crystals_have_their_symmetry_and_separation():
    counts = {"Si": 8}
    groups = [227, 194, 141, 12, 14, 62, 2]
    xs = gen.random_crystals(counts, 14, seed=3, groups=groups)
    assert len(xs) == 14
    exact = 0
    for atoms in xs:
        assert len(atoms) == 8 and set(atoms.get_chemical_symbols()) == {"Si"}
        found = spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(),
                                             atoms.numbers), symprec=1e-4).number
        # Every operation of the generating group maps the crystal onto itself.
        rot, trans = wyckoff.operations(atoms.info["generator_spacegroup"])
        frac = atoms.get_scaled_positions()
        for r, t in zip(rot, trans):
            image = frac @ r.T + t
            delta = image[:, None, :] - frac[None, :, :]
            assert np.all(np.abs(delta - np.round(delta)).max(-1).min(1) < 1e-8)
        exact += found == atoms.info["generator_spacegroup"]
        d = atoms.get_all_distances(mic=True)[np.triu_indices(8, 1)]
        assert d.min() >= gen.MIN_SEPARATION * 2 * covalent_radii[14] - 1e-9
    assert exact >= 6  # the rest landed on a supergroup, which is allowed
    # Seeded: the same seed gives the same structures.
    again = gen.random_crystals(counts, 2, seed=3, groups=groups)
    np.testing.assert_allclose(again[0].positions, xs[0].positions)


def test_separation_check_agrees_with_ase_neighbor_lists():
    """The generator's final separation check (every image that could be close) gives
    the verdict of ASE's neighbor list on skewed, small and ordinary cells."""
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(4)
    verdicts = []
    for trial in range(300):
        n = int(rng.integers(1, 7))
        cell = np.diag(rng.uniform(1.6, 6.0, 3))
        cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-3.0, 3.0, 3)  # skewed
        frac = rng.uniform(-0.3, 1.3, (n, 3))  # outside the cell too
        radii = rng.uniform(0.5, 1.3, n)
        factor = rng.uniform(0.5, 1.0)
        atoms = Atoms("X" * n, cell=cell, pbc=True, scaled_positions=frac % 1.0)
        i, j, d = neighbor_list("ijd", atoms, 2 * radii.max() * factor)
        expected = bool(np.all(d >= factor * (radii[i] + radii[j])))
        assert gen._separation_ok(frac, cell, radii, factor) == expected, trial
        verdicts.append(expected)
    assert 30 < sum(verdicts) < 270  # both verdicts were exercised
    # a sheared cell whose shortest lattice vector, 2a - b (2.0 Å), is not among the 27
    # nearest images of the wrapped separation (the shortest of those is a, 3.0 Å)
    cell = np.array([[3.0, 0.0, 0.0], [5.9, 2.0, 0.0], [0.0, 0.0, 5.0]])
    atom = Atoms("X", cell=cell, pbc=True, scaled_positions=[[0.2, 0.3, 0.4]])
    assert neighbor_list("d", atom, 2.4).min() == pytest.approx(np.hypot(0.1, 2.0))
    assert not gen._separation_ok(np.array([[0.2, 0.3, 0.4]]), cell, np.array([1.2]), 1.0)
    assert gen._separation_ok(np.array([[0.2, 0.3, 0.4]]), cell, np.array([0.9]), 1.0)


def test_binary_and_label_compositions():
    counts = gen.parse_composition("TiO2", 2)
    assert counts == {"Ti": 2, "O": 4}
    xs = gen.random_crystals(counts, 3, seed=0, groups=[136, 14, 2])
    assert all(sorted(a.get_chemical_symbols()) == ["O"] * 4 + ["Ti"] * 2 for a in xs)
    assert gen.parse_composition("LJ38") == {"LJ": 38}
    clusters = gen.random_clusters({"LJ": 13}, 2, seed=0)
    assert all(len(c) == 13 and not c.pbc.any() for c in clusters)


def test_impossible_requests_are_refused_clearly():
    with pytest.raises(ValueError, match="no space group"):
        gen.random_crystals({"Si": 3}, 1, groups=[227, 225])
    with pytest.raises(ValueError, match="unknown element"):
        gen.parse_composition("Si2Qq")
    with pytest.raises(ValueError, match="1..230"):
        gen.random_crystals({"Si": 2}, 1, groups=[231])


# (group, cell scale Å, sites placed before, minimum distances Å): one-at-a-time tries
# used with seeds 0, 1, 2 are 1/15/22 (several blocks), 1/4/3, and 200 of 200 (none fits).
SITE_CASES = [(62, 5.5, 0, 2.4, 0.0, 8), (62, 6.0, 4, 2.0, 1.6, 4), (14, 4.5, 4, 2.0, 1.6, 4)]


@pytest.mark.parametrize("number,scale,n_old,inner,pair,multiplicity", SITE_CASES)
def test_site_tries_in_blocks_are_the_one_at_a_time_tries(number, scale, n_old, inner, pair,
                                                          multiplicity):
    """_try_sites draws and checks site tries in blocks; it must give the sites, and
    leave the generator exactly where, trying wyckoff.place one at a time does."""
    rot, trans = wyckoff.operations(number)
    cell = np.diag([scale, scale * 1.1, scale * 0.9])
    frac = np.random.default_rng(9).random((n_old, 3))
    pair_min = np.full(n_old, pair)
    w = next(w for w in wyckoff.wyckoff_sets(number) if w.dof and w.multiplicity == multiplicity)
    found = 0
    for seed in range(3):
        results, states = [], []
        for tries in (gen._try_sites, gen._try_sites_one_by_one):
            rng = np.random.default_rng(seed)
            results.append(tries(w, rng, rot, trans, cell, inner, frac, pair_min, 200))
            states.append(rng.bit_generator.state)
        assert states[0] == states[1]
        assert (results[0] is None) == (results[1] is None)
        if results[1] is not None:
            found += 1
            np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-12)
            # the sites keep their distances, measured by ASE (minimum image, exact in
            # these orthorhombic cells)
            sites = Atoms("X" * (multiplicity + n_old), cell=cell, pbc=True,
                          scaled_positions=np.vstack([results[0], frac]))
            d = sites.get_all_distances(mic=True)
            inner_d = d[:multiplicity, :multiplicity][~np.eye(multiplicity, dtype=bool)]
            assert inner_d.min() >= inner
            if n_old:
                assert d[:multiplicity, multiplicity:].min() >= pair
    assert found == (0 if number == 14 else 3)

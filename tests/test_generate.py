"""Random symmetric structures: Wyckoff sets against the International Tables, symmetry
of generated crystals checked by spglib, minimum separations, clear errors."""

import numpy as np
import pytest
import spglib
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

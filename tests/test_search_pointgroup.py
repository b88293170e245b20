"""Point-group symmetric clusters: group orders against the tables, closure, every
operation mapping a generated cluster onto itself, spglib's point group of the cluster
in a box, orbit splitting and clear errors."""

import numpy as np
import pytest
import spglib

import jcsp
from jcsp.potentials import LennardJones
from jcsp.search import generate as gen
from jcsp.search import pointgroup as pg

# Orders of the point groups (International Tables A, Table 10.1.2.2; |I| = 60).
ORDERS = {"C1": 1, "Ci": 2, "C2": 2, "Cs": 2, "C2h": 4, "D2": 4, "C2v": 4, "D2h": 8,
          "C4": 4, "S4": 4, "C4h": 8, "D4": 8, "C4v": 8, "D2d": 8, "D4h": 16, "C3": 3,
          "S6": 6, "D3": 6, "C3v": 6, "D3d": 12, "C6": 6, "C3h": 6, "C6h": 12, "D6": 12,
          "C6v": 12, "D3h": 12, "D6h": 24, "T": 12, "Th": 24, "O": 24, "Td": 24, "Oh": 48,
          "C5": 5, "C5v": 10, "C5h": 10, "D5": 10, "D5h": 20, "D5d": 20, "I": 60, "Ih": 120}
# Hermann-Mauguin symbols spglib reports.
HM = {"Oh": "m-3m", "Td": "-43m", "D4h": "4/mmm", "C2v": "mm2", "Th": "m-3", "D2": "222",
      "C3v": "3m", "D6h": "6/mmm", "D3h": "-6m2"}


def _maps_onto_itself(pos, ops, tol=1e-8):
    """Every operation permutes the points (about their centre)."""
    pos = pos - pos.mean(0)
    for op in ops:
        image = pos @ op.T
        d = np.linalg.norm(image[:, None] - pos[None], axis=-1)
        if not (np.all(d.min(1) < tol) and len(set(d.argmin(1))) == len(pos)):
            return False
    return True


def test_groups_are_closed_orthogonal_and_of_the_right_order():
    assert set(ORDERS) == set(pg.GROUPS)
    for name, order in ORDERS.items():
        ops = pg.operations(name)
        assert len(ops) == order, name
        np.testing.assert_allclose(np.einsum("mji,mjk->mik", ops, ops),
                                   np.broadcast_to(np.eye(3), ops.shape), atol=1e-12)
        products = np.einsum("aij,bjk->abik", ops, ops).reshape(-1, 9)
        dist = np.abs(products[:, None] - ops.reshape(1, -1, 9)).max(-1)
        assert dist.min(1).max() < 1e-9, name  # closed under multiplication
    assert sum(np.linalg.det(pg.operations("O")) < 0) == 0  # proper rotations only
    assert sum(np.linalg.det(pg.operations("Td")) < 0) == 12


@pytest.mark.parametrize("group", ["Oh", "Td", "Ih", "D6h", "C2v", "D3h", "S4", "C3", "D5h",
                                   "C5v"])
def test_generated_clusters_are_mapped_onto_themselves(group):
    xs = gen.random_clusters({"LJ": 26}, 2, seed=4, symmetry=[group]) if \
        pg.feasible(group, [26]) else gen.random_clusters({"LJ": 13}, 2, seed=4,
                                                          symmetry=[group])
    for atoms in xs:
        assert atoms.info["generator_pointgroup"] == group
        ops = pg.operations(group)
        assert _maps_onto_itself(atoms.positions, ops)
        assert not _maps_onto_itself(atoms.positions + np.random.default_rng(0).normal(
            0, 0.05, atoms.positions.shape), ops)  # the check can fail
        d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
        assert d[np.triu_indices(len(atoms), 1)].min() >= 0.7 * 2 * gen.LABEL_RADIUS - 1e-9


@pytest.mark.parametrize("group", sorted(HM))
def test_spglib_finds_the_point_group(group):
    """Clusters in a big box (cubic, or hexagonal for the hexagonal groups) have the
    chosen point group as the crystal's point group."""
    counts = {"Na": 12, "Cl": 12} if group != "Td" else {"Na": 16, "Cl": 12}
    atoms = gen.random_clusters(counts, 1, seed=1, symmetry=[group])[0]
    hexagonal = group in ("D6h", "C3v", "D3h")
    cell = 30.0 * (np.array([[1, 0, 0], [-0.5, 3**0.5 / 2, 0], [0, 0, 1]]) if hexagonal
                   else np.eye(3))
    frac = np.linalg.solve(cell.T, (atoms.positions - atoms.positions.mean(0)).T).T + 0.5
    data = spglib.get_symmetry_dataset((cell, frac, atoms.numbers), symprec=1e-4)
    assert data.pointgroup == HM[group]


def test_orbit_splitting():
    rng = np.random.default_rng(0)
    sizes = [k.size for k in pg.site_kinds("Ih") if k.dof > 0]
    assert sorted(set(sizes)) == [12, 20, 30, 60, 120]
    assert pg.split_count(2, sizes, rng, centre=True) is None
    assert sorted(pg.split_count(13, sizes, rng, centre=True)) == [0, 12]
    for _ in range(20):
        split = pg.split_count(38, [6, 8, 12, 24, 48], rng)
        assert sum(split) == 38
    assert pg.feasible("Oh", [38]) and not pg.feasible("Ih", [38])
    assert pg.feasible("Ih", [13]) and not pg.feasible("Ih", [14])


def test_symmetric_search_and_errors():
    lj = LennardJones(1.0, 1.0, None)
    res = jcsp.search("LJ13", lj, algorithm="random", budget=4, cluster=True, seed=0,
                      cluster_symmetry=["Ih"], population=4)
    assert res.best.info["energy"] == pytest.approx(-44.326801, abs=1e-4)
    with pytest.raises(ValueError, match="unknown point group"):
        jcsp.search("LJ13", lj, cluster=True, cluster_symmetry=["Q7"])
    with pytest.raises(ValueError, match="no point group"):
        jcsp.search("LJ14", lj, cluster=True, cluster_symmetry=["Ih"])
    with pytest.raises(ValueError, match="applies to clusters"):
        jcsp.search("Si8", jcsp.potentials.LennardJones(1.0, 1.0, 3.0),
                    cluster_symmetry=["Oh"])

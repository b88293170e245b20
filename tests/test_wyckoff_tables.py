"""The shipped Wyckoff table: regenerated from spglib it is the same, exactly; it agrees with
the International Tables (multiplicities, counts and coordinates of Wyckoff positions); it
loads whatever spglib version wrote it; and random members cover each set uniformly."""

import json
import time
from fractions import Fraction

import numpy as np
import pytest

from jcsp.search import wyckoff

# Regenerated in CI: cheap groups of each kind plus one cubic (Fd-3m, |G| = 192, ~3 s).
REGENERATED = [1, 2, 14, 62, 139, 194, 227]

# Number of Wyckoff positions (letters) per group, International Tables A.
ITA_COUNTS = {1: 1, 2: 9, 14: 5, 47: 27, 62: 4, 139: 15, 166: 9, 191: 18, 194: 12,
              221: 14, 225: 12, 227: 9, 229: 12, 230: 8}
# Over all 230 groups the International Tables list 1731 Wyckoff positions.
ITA_TOTAL = 1731

# Wyckoff positions (multiplicity, representative with free parameters x, y, z) as the
# International Tables print them. spglib's standard settings are the first ones listed:
# P2_1/c with unique axis b, and Fd-3m in origin choice 1, which is origin choice 2 (the
# coordinates below) shifted by (1/8, 1/8, 1/8) (ORIGIN_SHIFT).
x, y, z = "x", "y", "z"
ORIGIN_SHIFT = {227: np.array([1, 1, 1]) / 8}
ITA_POSITIONS = {
    227: [(8, ("1/8", "1/8", "1/8")), (8, ("3/8", "3/8", "3/8")), (16, (0, 0, 0)),
          (16, ("1/2", "1/2", "1/2")), (32, (x, x, x)), (48, (x, "1/8", "1/8")),
          (96, (x, x, z)), (96, (0, y, "-y")), (192, (x, y, z))],
    194: [(2, (0, 0, 0)), (2, (0, 0, "1/4")), (2, ("1/3", "2/3", "1/4")),
          (2, ("1/3", "2/3", "3/4")), (4, (0, 0, z)), (4, ("1/3", "2/3", z)),
          (6, ("1/2", 0, 0)), (6, (x, "2x", "1/4")), (12, (x, 0, 0)), (12, (x, y, "1/4")),
          (12, (x, "2x", z)), (24, (x, y, z))],
    139: [(2, (0, 0, 0)), (2, (0, 0, "1/2")), (4, (0, "1/2", 0)), (4, (0, "1/2", "1/4")),
          (4, (0, 0, z)), (8, ("1/4", "1/4", "1/4")), (8, (0, "1/2", z)), (8, (x, x, 0)),
          (8, (x, 0, 0)), (8, (x, "1/2", 0)), (16, (x, "x+1/2", "1/4")), (16, (x, y, 0)),
          (16, (x, x, z)), (16, (0, y, z)), (32, (x, y, z))],
    62: [(4, (0, 0, 0)), (4, (0, 0, "1/2")), (4, (x, "1/4", z)), (8, (x, y, z))],
    14: [(2, (0, 0, 0)), (2, ("1/2", 0, 0)), (2, (0, 0, "1/2")), (2, ("1/2", 0, "1/2")),
         (4, (x, y, z))],
}


def _subspace(coords):
    """(origin [3], basis [3, d]) of a representative like ('x', 'x+1/2', '1/4')."""
    origin, cols = np.zeros(3), {}
    for i, c in enumerate(coords):
        c = str(c)
        for var in "xyz":
            if var in c:
                coef = c.split(var)[0]
                cols.setdefault(var, np.zeros(3))[i] = {"": 1, "-": -1}.get(coef) or float(coef)
                c = c.split(var, 1)[1].lstrip("+") or "0"
        origin[i] = float(Fraction(c))
    basis = np.array([cols[v] for v in sorted(cols)]).T.reshape(3, -1)
    return origin, basis


@pytest.mark.parametrize("number", REGENERATED)
def test_regenerated_sets_equal_the_shipped_table(number):
    table = wyckoff._table()
    derived = wyckoff.derive(number)
    assert [wyckoff._to_entry(w) for w in derived] == table["groups"][str(number)]
    assert table["hall"][str(number)] == wyckoff._standard_hall(number)
    shipped = wyckoff.wyckoff_sets(number)
    assert len(shipped) == len(derived) > 0
    for a, b in zip(shipped, derived):
        assert a.multiplicity == b.multiplicity
        np.testing.assert_array_equal(a.origin, b.origin)
        np.testing.assert_array_equal(a.basis, b.basis)


def test_fd3m_multiplicities_and_counts_match_international_tables():
    assert sorted(w.multiplicity for w in wyckoff.wyckoff_sets(227)) == \
        [8, 8, 16, 16, 32, 48, 96, 96, 192]
    counts = {n: len(wyckoff.wyckoff_sets(n)) for n in ITA_COUNTS}
    assert counts == ITA_COUNTS
    assert sum(len(wyckoff.wyckoff_sets(n)) for n in range(1, 231)) == ITA_TOTAL


@pytest.mark.parametrize("number", sorted(ITA_POSITIONS))
def test_each_international_tables_position_is_exactly_one_set(number):
    rot, trans = wyckoff.operations(number)
    sets = wyckoff.wyckoff_sets(number)
    matched = set()
    for mult, coords in ITA_POSITIONS[number]:
        origin, basis = _subspace(coords)
        # a generic member of the published position: on that subspace and no other
        origin = origin + ORIGIN_SHIFT.get(number, 0.0)
        point = (origin + basis @ np.array([0.1234, 0.2718, 0.3141])[:basis.shape[1]]) % 1
        assert len(wyckoff.orbit(point, rot, trans)) == mult
        hits = [k for k, w in enumerate(sets)
                if w.multiplicity == mult and wyckoff._same_set(point, basis, w, rot, trans)]
        assert len(hits) == 1, (mult, coords, hits)
        matched.add(hits[0])
    assert matched == set(range(len(sets)))


def test_table_from_another_spglib_version_loads(tmp_path, monkeypatch):
    table = json.loads(wyckoff._table_path().read_text())
    assert table["spglib"]  # the writing version is recorded
    table["spglib"] = "0.0.1"
    other = tmp_path / "wyckoff.json"
    other.write_text(json.dumps(table))
    expected = wyckoff.wyckoff_sets(194)
    monkeypatch.setattr(wyckoff, "_table_path", lambda: other)
    wyckoff._table.cache_clear()
    wyckoff.wyckoff_sets.cache_clear()
    try:
        start = time.perf_counter()
        got = wyckoff.wyckoff_sets(194)
        elapsed = time.perf_counter() - start
        assert wyckoff._table()["spglib"] == "0.0.1"
    finally:
        monkeypatch.undo()
        wyckoff._table.cache_clear()
        wyckoff.wyckoff_sets.cache_clear()
    assert elapsed < 2.0  # a file read, not a derivation (deriving all groups takes ~70 s)
    assert [w.multiplicity for w in got] == [w.multiplicity for w in expected]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.origin, b.origin)
        np.testing.assert_array_equal(a.basis, b.basis)


def test_random_members_cover_a_special_line_uniformly():
    # P6_3/mmc 6h (x, 2x, 1/4): the free parameter must take every value in [0, 1).
    rot, trans = wyckoff.operations(194)
    (w,) = [w for w in wyckoff.wyckoff_sets(194) if w.multiplicity == 6 and w.dof == 1]
    rng = np.random.default_rng(0)
    params = []
    for _ in range(2000):
        pts = wyckoff.place(w, rng, rot, trans)
        assert len(pts) == 6
        # the parameter of the first site along the set's integer direction
        step = w.basis[:, 0]
        k = int(np.flatnonzero(step)[0])
        params.append(((pts[0] - w.origin)[k] / step[k]) % 1.0)
    hist, _ = np.histogram(params, bins=10, range=(0, 1))
    assert hist.min() > 0.6 * hist.mean()

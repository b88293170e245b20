"""Wyckoff positions of the 230 space groups (host side), shipped as package data.

The sets are derived from spglib's symmetry operations, not typed from a book: for each
space group the operations ``(R, t)`` of its standard setting come from spglib's database,
and Wyckoff sets are found as the fixed subspaces of site-symmetry groups. A point ``x`` is
fixed by ``(R, t)`` when ``R x + t = x + n`` for an integer vector ``n``; points fixed by a
set of operations form an affine subspace ``x0 + B u`` (``B`` from the null space of the
stacked ``R - I``). Sampling random points and projecting them onto the fixed sets of
random operations reaches the general position and the special positions; each subspace
found is a :class:`WyckoffSet` with its multiplicity ``|G| / |site group|`` in the
conventional cell and its number of free parameters.

Each set is then written in an exact canonical form: the basis as primitive integer
vectors (reduced row echelon form, scaled), the origin as fractions with the free
coordinates at zero, and, among the images of the subspace under the group, the one with
the smallest origin. The result is a pure function of spglib's operations, so it is
derived once and shipped as ``jcsp/data/wyckoff.json`` (about 1 s of derivation per
high-symmetry group, 70 s for all 230; loading the file takes milliseconds).
``python -m jcsp.search.wyckoff --write`` regenerates the file; the spglib version that
wrote it is recorded in it, and a table written by another spglib version still loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.resources
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import spglib

TOL = 1e-5
#: Origins of the canonical forms are fractions; in the 230 standard settings their
#: denominators are 1, 2, 3, 4, 6, 8 or 12. Rounding to denominators up to 48 leaves room
#: and still rejects float noise (a mismatch above 1e-7 raises).
_MAX_DENOMINATOR = 48
_TABLE = "wyckoff.json"


@dataclasses.dataclass(frozen=True, eq=False)
class WyckoffSet:
    """A family of symmetry-equivalent sites.

    Attributes:
      multiplicity: sites per conventional cell.
      origin: [3] a representative point (fractional; exact fractions in the table).
      basis: [3, d] directions of its d free parameters (fractional; in the table,
        primitive integer vectors, so a parameter step of 1 is one lattice period).
    """

    multiplicity: int
    origin: np.ndarray
    basis: np.ndarray

    @property
    def dof(self) -> int:
        return self.basis.shape[1]


def _standard_hall(number: int) -> int:
    """spglib's Hall number of the standard setting (the first one listed for ``number``)."""
    for hall in range(1, 531):
        if spglib.get_spacegroup_type(hall).number == number:
            return hall
    raise ValueError(f"space group number must be 1..230, got {number}")


def _check_number(number) -> int:
    if not 1 <= int(number) <= 230:
        raise ValueError(f"space group number must be 1..230, got {number}")
    return int(number)


@functools.lru_cache(maxsize=None)
def operations(number: int) -> tuple[np.ndarray, np.ndarray]:
    """(rotations [M, 3, 3] int, translations [M, 3]) of the standard setting, including
    centring translations (so M = multiplicity of the general position)."""
    hall = _table()["hall"][str(_check_number(number))]
    sym = spglib.get_symmetry_from_database(hall)
    return np.asarray(sym["rotations"], int), np.asarray(sym["translations"], float)


def symbol(number: int) -> str:
    """International short symbol, e.g. 'Fd-3m'."""
    hall = _table()["hall"][str(_check_number(number))]
    return spglib.get_spacegroup_type(hall).international_short


def _wrap_delta(d):
    return d - np.round(d)


def orbit(x, rot, trans, tol: float = TOL) -> np.ndarray:
    """[m, 3] distinct images of point ``x`` in [0, 1)."""
    images, repeated = orbits(np.asarray(x, float)[None], rot, trans, tol)
    return images[0][~repeated[0]]


def orbits(x, rot, trans, tol: float = TOL) -> tuple[np.ndarray, np.ndarray]:
    """Images of points ``x`` [B, 3] under every operation: ([B, M, 3] in [0, 1),
    [B, M] bool, true where an earlier image of the same point lies within 10 ``tol``
    (periodic), so that ``images[b][~repeated[b]]`` is the orbit of ``x[b]``)."""
    images = (np.einsum("mij,bj->bmi", rot, x) + trans) % 1.0
    d = np.abs(_wrap_delta(images[:, :, None] - images[:, None]))
    repeated = np.triu(np.all(d < 10 * tol, axis=-1), 1).any(axis=1)
    return images, repeated


def _site_constraints(x, rot, trans, tol):
    """Stacked (R - I) and (n - t) of the operations fixing x."""
    img = np.einsum("mij,j->mi", rot, x) + trans
    shift = img - x
    fixed = np.all(np.abs(shift - np.round(shift)) < tol, axis=1)
    a = (rot[fixed] - np.eye(3)).reshape(-1, 3)
    b = (np.round(shift[fixed]) - trans[fixed]).reshape(-1)
    return a, b, int(fixed.sum())


def _project(x, a, b):
    """Nearest point to x on {y : a y = b} (None when inconsistent)."""
    y = x - np.linalg.pinv(a) @ (a @ x - b)
    return y if np.allclose(a @ y, b, atol=1e-8) else None


def _null_space(a, tol=1e-8):
    if a.size == 0:
        return np.eye(3)
    _, s, vt = np.linalg.svd(a.T @ a)  # 3 x 3: same null space, cheap
    rank = int(np.sum(s > tol))
    return vt[rank:].T


def _table_path() -> Path:
    return Path(str(importlib.resources.files("jcsp") / "data" / _TABLE))


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    """The shipped table: {'spglib': version, 'hall': {number: hall}, 'groups': {number:
    [[multiplicity, origin fractions, integer basis rows], ...]}}."""
    with open(_table_path()) as handle:
        return json.load(handle)


def _from_entry(entry) -> WyckoffSet:
    mult, origin, rows = entry
    basis = np.array(rows, float).reshape(-1, 3).T  # [3, d]
    return WyckoffSet(int(mult), np.array([float(Fraction(c)) for c in origin]), basis)


@functools.lru_cache(maxsize=None)
def wyckoff_sets(number: int) -> tuple[WyckoffSet, ...]:
    """Wyckoff sets of space group ``number`` (general position first, then by falling
    multiplicity and free parameters), from the shipped table.

    Origins are exact fractions and bases primitive integer vectors, so
    ``origin + basis @ u`` with ``u`` uniform in [-1, 1) covers each set uniformly.
    """
    return tuple(_from_entry(e) for e in _table()["groups"][str(_check_number(number))])


def _to_entry(w: WyckoffSet) -> list:
    origin = [str(Fraction(c).limit_denominator(_MAX_DENOMINATOR)) for c in w.origin]
    rows = [[int(round(v)) for v in col] for col in w.basis.T]
    return [w.multiplicity, origin, rows]


def derive(number: int, samples: int = 600) -> tuple[WyckoffSet, ...]:
    """Derive the Wyckoff sets of ``number`` from spglib's operations, in canonical form
    and in the order of :func:`wyckoff_sets` (what ``--write`` stores)."""
    rot, trans = _operations_from_spglib(_check_number(number))
    sets = [_canonical(w, rot, trans) for w in _derive(number, samples, rot, trans)]
    sets.sort(key=lambda w: (-w.multiplicity, -w.dof, _key(w)))
    return tuple(sets)


def _operations_from_spglib(number: int):
    sym = spglib.get_symmetry_from_database(_standard_hall(number))
    return np.asarray(sym["rotations"], int), np.asarray(sym["translations"], float)


def write_table(path: str | Path | None = None, *, samples: int = 600,
                numbers=range(1, 231)) -> Path:
    """Derive every group and write the table (host side; about 70 s on one core)."""
    path = _table_path() if path is None else Path(path)
    numbers = [int(n) for n in numbers]
    table = {"spglib": spglib.__version__, "samples": samples,
             "generator": "python -m jcsp.search.wyckoff --write",
             "hall": {str(n): _standard_hall(n) for n in numbers},
             "groups": {str(n): [_to_entry(w) for w in derive(n, samples)] for n in numbers}}
    text = json.dumps(table, separators=(",", ":"))
    # one group per line keeps diffs of a regenerated table readable
    text = text.replace('],"', '],\n"')
    path.write_text(text + "\n")
    return path


# --- exact canonical form --------------------------------------------------------------
def _rational(v: float, what: str) -> Fraction:
    f = Fraction(float(v)).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(f) - v) > 1e-7:
        raise ValueError(f"{what} {v!r} is not a fraction with denominator <= "
                         f"{_MAX_DENOMINATOR}")
    return f


def _rref(rows: np.ndarray):
    """Reduced row echelon form of [d, 3] float rows as Fractions, and pivot columns."""
    m = [[float(v) for v in r] for r in rows]
    pivots = []
    r = 0
    for c in range(3):
        if r == len(m):
            break
        p = max(range(r, len(m)), key=lambda i: abs(m[i][c]))
        if abs(m[p][c]) < 1e-8:
            continue
        m[r], m[p] = m[p], m[r]
        m[r] = [v / m[r][c] for v in m[r]]
        for i in range(len(m)):
            if i != r:
                m[i] = [a - m[i][c] * b for a, b in zip(m[i], m[r])]
        pivots.append(c)
        r += 1
    exact = [[_rational(v, "basis entry") for v in row] for row in m[:len(pivots)]]
    return exact, pivots


def _primitive(row) -> list[int]:
    scale = math.lcm(*(f.denominator for f in row))
    ints = [int(f * scale) for f in row]
    g = math.gcd(*ints)
    return [v // g for v in ints]


def _canonical_subspace(origin, basis):
    """(origin Fractions mod 1, integer rows) of the affine subspace origin + span(basis)
    modulo the lattice: free (pivot) coordinates at zero, then the smallest origin among
    the lattice translates."""
    d = basis.shape[1]
    if d == 3:
        return (Fraction(0),) * 3, ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    if d == 0:
        return tuple(_rational(c % 1.0, "origin") % 1 for c in origin), ()
    rows, pivots = _rref(basis.T)
    shift = np.array(origin, float)
    for row, p in zip(rows, pivots):
        shift = shift - origin[p] * np.array([float(v) for v in row])
    o = [_rational(c, "origin") for c in shift]
    # A lattice translate n moves the pivot-zero origin by n - sum_k n[p_k] row_k, i.e. by
    # -sum_k m_k row_k (mod 1) for integers m_k: try each residue of m_k.
    dens = [math.lcm(*(f.denominator for f in row)) for row in rows]
    best = None
    for ms in np.ndindex(*dens):
        cand = tuple((o[i] - sum(m * row[i] for m, row in zip(ms, rows))) % 1
                     for i in range(3))
        if best is None or cand < best:
            best = cand
    return best, tuple(tuple(_primitive(row)) for row in rows)


def _canonical(w: WyckoffSet, rot, trans) -> WyckoffSet:
    """The canonical form of the image of ``w`` with the smallest (origin, basis)."""
    best = None
    for r, t in zip(rot, trans):
        cand = _canonical_subspace(r @ w.origin + t, r @ w.basis)
        if best is None or cand < best:
            best = cand
    origin, rows = best
    basis = np.array(rows, float).reshape(-1, 3).T
    out = WyckoffSet(w.multiplicity, np.array([float(c) for c in origin]), basis)
    if not _same_set(out.origin, out.basis, w, rot, trans):
        raise RuntimeError(f"canonical form {origin}, {rows} is not the Wyckoff set found")
    return out


def _key(w: WyckoffSet):
    return (tuple(w.origin), tuple(w.basis.T.ravel()))


def _derive(number: int, samples: int, rot, trans) -> list[WyckoffSet]:
    """Wyckoff sets as found by sampling (origins and orthonormal bases as floats)."""
    order = len(rot)
    rng = np.random.default_rng(number)
    found: list[WyckoffSet] = []
    for trial in range(samples):
        x = rng.uniform(size=3)
        a_acc = np.zeros((0, 3))
        b_acc = np.zeros(0)
        for _ in range(0 if trial == 0 else rng.integers(0, 6)):
            g = rng.integers(order)
            n = np.round(rot[g] @ x + trans[g] - x)
            a = np.vstack([a_acc, rot[g] - np.eye(3)])
            b = np.concatenate([b_acc, n - trans[g]])
            y = _project(x, a, b)
            if y is not None:
                x, a_acc, b_acc = y, a, b
        x = x % 1.0
        a, b, n_site = _site_constraints(x, rot, trans, 1e-6)
        pts = orbit(x, rot, trans)
        if len(pts) * n_site != order:
            continue
        basis = _null_space(a)
        same_kind = (w for w in found if w.multiplicity == len(pts))
        if not any(_same_set(x, basis, w, rot, trans) for w in same_kind):
            found.append(WyckoffSet(len(pts), x, basis))
    return found


_OFFSETS = np.array(list(np.ndindex(3, 3, 3)), float) - 1.0


def _same_set(x, basis, w: WyckoffSet, rot, trans) -> bool:
    """Is the subspace (x, basis) an image of Wyckoff set ``w`` under the group?"""
    if w.dof != basis.shape[1]:
        return False
    origins = np.einsum("mij,j->mi", rot, w.origin) + trans  # [M, 3]
    delta = _wrap_delta(x - origins)[:, None, :] + _OFFSETS[None]  # [M, 27, 3]
    if w.dof == 0:
        return bool(np.any(np.all(np.abs(delta) < 1e-6, axis=-1)))
    b = np.einsum("mij,jd->mid", rot, w.basis)  # [M, 3, d]
    proj = np.eye(3) - b @ np.linalg.pinv(b)  # [M, 3, 3] projector off span(b)
    resid = np.einsum("mij,mkj->mki", proj, delta)
    return bool(np.any(np.all(np.abs(resid) < 1e-6, axis=-1)))


def place(w: WyckoffSet, rng: np.random.Generator, rot, trans) -> np.ndarray:
    """[multiplicity, 3] sites of one random member of Wyckoff set ``w``."""
    for _ in range(50):
        x = (w.origin + w.basis @ rng.uniform(-1, 1, w.dof)) % 1.0
        pts = orbit(x, rot, trans)
        if len(pts) == w.multiplicity:  # landed on a more special point: try again
            return pts
    raise RuntimeError("could not place a generic member of a Wyckoff set")


def combinations(number: int, count: int, *, max_results: int = 64,
                 rng: np.random.Generator | None = None) -> list[list[WyckoffSet]]:
    """Up to ``max_results`` multisets of Wyckoff sets whose multiplicities sum to
    ``count``, in a random order when ``rng`` is given. Sets without free parameters are
    used at most once."""
    out = list(_combinations(int(number), int(count), int(max_results)))
    if rng is not None:
        rng.shuffle(out)
    return out


@functools.lru_cache(maxsize=4096)
def _combinations(number: int, count: int, max_results: int) -> tuple:
    """:func:`combinations` in search order (cached: every random crystal of a search
    asks for the same ones)."""
    sets = wyckoff_sets(number)
    out: list[list[WyckoffSet]] = []

    def search(remaining, start, chosen):
        if len(out) >= max_results:
            return
        if remaining == 0:
            out.append(list(chosen))
            return
        for k in range(start, len(sets)):
            w = sets[k]
            if w.multiplicity > remaining:
                continue
            chosen.append(w)
            search(remaining - w.multiplicity, k if w.dof > 0 else k + 1, chosen)
            chosen.pop()

    search(count, 0, [])
    return tuple(tuple(c) for c in out)


def feasible(number: int, counts) -> bool:
    """Can each species count be filled with Wyckoff sets of this group (fixed-point
    sets shared among species at most once)?"""
    return _feasible(int(number), tuple(sorted((int(c) for c in counts), reverse=True)))


@functools.lru_cache(maxsize=65536)
def _feasible(number: int, counts: tuple) -> bool:
    sets = wyckoff_sets(number)
    free = sorted({w.multiplicity for w in sets if w.dof > 0})
    points = [w.multiplicity for w in sets if w.dof == 0]

    def fill(remaining_counts, points_left):
        if not remaining_counts:
            return True
        c, rest = remaining_counts[0], remaining_counts[1:]
        # try using a subset of fixed points for this species, the rest from free sets
        return _fill_one(c, free, points_left, lambda left: fill(rest, left))

    return fill(counts, tuple(points))


def _fill_one(c, free, points, then):
    reachable = np.zeros(c + 1, bool)
    reachable[0] = True
    for m in free:
        for v in range(m, c + 1):
            reachable[v] |= reachable[v - m]

    def rec(k, remaining, used):
        if reachable[remaining] and then(tuple(p for i, p in enumerate(points) if i not in used)):
            return True
        for i in range(k, len(points)):
            if points[i] <= remaining and rec(i + 1, remaining - points[i], used | {i}):
                return True
        return False

    return rec(0, c, frozenset())


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jcsp.search.wyckoff",
        description="Regenerate the shipped Wyckoff table from spglib's operations.")
    parser.add_argument("--write", action="store_true",
                        help=f"derive all 230 groups and write jcsp/data/{_TABLE}")
    parser.add_argument("--out", default=None, help="write here instead")
    args = parser.parse_args(argv)
    if not args.write:
        parser.error("nothing to do: pass --write")
    print(f"wrote {write_table(args.out)}")


if __name__ == "__main__":
    _main()

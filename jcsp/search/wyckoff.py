"""Wyckoff positions derived from spglib's symmetry operations (host side).

No hand-written tables: for each space group the operations ``(R, t)`` of its standard
setting come from spglib's database, and Wyckoff sets are found as the fixed subspaces
of site-symmetry groups. A point ``x`` is fixed by ``(R, t)`` when ``R x + t = x + n``
for an integer vector ``n``; points fixed by a set of operations form an affine
subspace ``x0 + B u`` (``B`` from the null space of the stacked ``R - I``). Sampling
random points and projecting them onto the fixed sets of random operations reaches the
general position and the special positions; each subspace found is a
:class:`WyckoffSet` with its multiplicity ``|G| / |site group|`` in the conventional
cell and its number of free parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile

import numpy as np
import spglib

TOL = 1e-5


@dataclasses.dataclass(frozen=True, eq=False)
class WyckoffSet:
    """A family of symmetry-equivalent sites.

    Attributes:
      multiplicity: sites per conventional cell.
      origin: [3] a representative point (fractional).
      basis: [3, d] directions of its d free parameters (fractional).
    """

    multiplicity: int
    origin: np.ndarray
    basis: np.ndarray

    @property
    def dof(self) -> int:
        return self.basis.shape[1]


def _standard_hall(number: int) -> int:
    for hall in range(1, 531):
        if spglib.get_spacegroup_type(hall).number == number:
            return hall
    raise ValueError(f"space group number must be 1..230, got {number}")


@functools.lru_cache(maxsize=None)
def operations(number: int) -> tuple[np.ndarray, np.ndarray]:
    """(rotations [M, 3, 3] int, translations [M, 3]) of the standard setting, including
    centring translations (so M = multiplicity of the general position)."""
    if not 1 <= int(number) <= 230:
        raise ValueError(f"space group number must be 1..230, got {number}")
    sym = spglib.get_symmetry_from_database(_standard_hall(int(number)))
    return np.asarray(sym["rotations"], int), np.asarray(sym["translations"], float)


def symbol(number: int) -> str:
    """International short symbol, e.g. 'Fd-3m'."""
    return spglib.get_spacegroup_type(_standard_hall(int(number))).international_short


def _wrap_delta(d):
    return d - np.round(d)


def orbit(x, rot, trans, tol: float = TOL) -> np.ndarray:
    """[m, 3] distinct images of point ``x`` in [0, 1)."""
    pts = (np.einsum("mij,j->mi", rot, x) + trans) % 1.0
    keys = np.round(pts / tol).astype(np.int64) % int(round(1 / tol))
    _, first = np.unique(keys, axis=0, return_index=True)
    pts = pts[np.sort(first)]
    if len(pts) > 1:  # points straddling a rounding boundary: merge by distance
        d = np.abs(_wrap_delta(pts[:, None] - pts[None]))
        dup = np.triu(np.all(d < 10 * tol, axis=-1), 1).any(axis=0)
        pts = pts[~dup]
    return pts


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


def _cache_file(samples: int) -> str:
    root = os.environ.get("JCSP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jcsp")
    return os.path.join(root, f"wyckoff-spglib{spglib.__version__}-{samples}.json")


def _load_cached(number: int, samples: int):
    try:
        with open(_cache_file(samples)) as fh:
            entry = json.load(fh).get(str(number))
    except (OSError, ValueError):
        return None
    if entry is None:
        return None
    return tuple(WyckoffSet(m, np.array(o), np.array(b).reshape(3, -1)) for m, o, b in entry)


def _store_cached(number: int, samples: int, sets) -> None:
    """Add one group to the on-disk cache (atomic replace; failures are harmless)."""
    path = _cache_file(samples)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path) as fh:
                table = json.load(fh)
        except (OSError, ValueError):
            table = {}
        table[str(number)] = [[w.multiplicity, w.origin.tolist(), w.basis.tolist()]
                              for w in sets]
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as fh:
            json.dump(table, fh)
        os.replace(tmp, path)
    except OSError:
        pass


@functools.lru_cache(maxsize=None)
def wyckoff_sets(number: int, samples: int = 600) -> tuple[WyckoffSet, ...]:
    """Wyckoff sets of space group ``number``, general position first.

    Deterministic; cached in memory and on disk (``$JCSP_CACHE`` or ``~/.cache/jcsp``),
    since deriving the sets of a high-symmetry group takes a second or two.
    """
    cached = _load_cached(number, samples)
    if cached is not None:
        return cached
    sets = _derive(number, samples)
    _store_cached(number, samples, sets)
    return sets


def _derive(number: int, samples: int) -> tuple[WyckoffSet, ...]:
    rot, trans = operations(number)
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
    found.sort(key=lambda w: (-w.multiplicity, -w.dof))
    return tuple(found)


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
    ``count``. Sets without free parameters are used at most once."""
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
    if rng is not None:
        rng.shuffle(out)
    return out


def feasible(number: int, counts) -> bool:
    """Can each species count be filled with Wyckoff sets of this group (fixed-point
    sets shared among species at most once)?"""
    sets = wyckoff_sets(number)
    free = sorted({w.multiplicity for w in sets if w.dof > 0})
    points = [w.multiplicity for w in sets if w.dof == 0]

    def fill(remaining_counts, points_left):
        if not remaining_counts:
            return True
        c, rest = remaining_counts[0], remaining_counts[1:]
        # try using a subset of fixed points for this species, the rest from free sets
        return _fill_one(c, free, points_left, lambda left: fill(rest, left))

    return fill(sorted(counts, reverse=True), tuple(points))


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

"""Symmetrisation: a structure moved onto a nearby point group or space group (host side).

Clusters (the symmetrisation moves of GMIN; Oakley, Johnston & Wales, Phys. Chem. Chem.
Phys. 15, 3965 (2013)). :func:`find_point_group` looks for approximate symmetry elements
of a cluster about its centroid: candidate directions are the principal axes of inertia,
the directions of the atoms, of the midpoints of close pairs and of the centroids of
close triangles (where rotation axes pass) and the differences of close pairs of like
atoms (where mirror normals point). Each direction is tested as a rotation axis of order
2 to 6 and as a mirror normal; an element is kept when it maps every atom to within
``tol`` of an atom of its species (root mean square). Every point group of
:mod:`jcsp.search.pointgroup` is then tried, highest order first, in each orientation
that lays its main axis and a second element onto kept elements at the right angle; the
first whose every operation fits within ``tol`` wins. :func:`symmetrize_cluster` then
completes orbits: the atoms are averaged over the group (each operation's images matched
to atoms of the same species by the Hungarian method,
:func:`scipy.optimize.linear_sum_assignment`), and atom by atom, best fitting first, the
exact orbit of the averaged point (snapped onto the special position it is near) is laid
onto the nearest unassigned atoms of its species. Atoms whose orbit does not fit what is
left of the composition keep their place, or go to a surface site when that place is
taken; the result has the group's symmetry on all the atoms that fit, and the
composition of the input.

Crystals: :func:`symmetrize_crystal` asks spglib for the operations of the structure at
a loose ``symprec`` and averages over them: positions (each atom's images matched to
atoms of its species, lattice translations chosen to the nearest image) and the metric
(``G -> mean R^T G R``, the cell rebuilt closest to the old one), so the cell keeps its
atoms and orientation and spglib then finds the group at a tight tolerance.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import spglib
from ase import Atoms
from scipy.optimize import linear_sum_assignment

from . import pointgroup
from .drivers import operators as ops

#: Rotation orders tested on each candidate axis.
ORDERS = (2, 3, 4, 5, 6)
#: Candidate directions closer than this angle (degrees, sign ignored) are merged.
MERGE_DEGREES = 2.0
#: Angles between a group's two frame elements and two found ones may differ by this
#: much (degrees).
ANGLE_DEGREES = 6.0


# --- point groups: the table side --------------------------------------------------------
def _rotation_order(op: np.ndarray) -> int:
    m = np.eye(3)
    for k in range(1, 13):
        m = op @ m
        if np.abs(m - np.eye(3)).max() < 1e-8:
            return k
    raise RuntimeError("not a finite-order operation")


def _elements(op_list: np.ndarray) -> list[tuple[str, int, np.ndarray]]:
    """(kind, order, unit direction) of the proper rotations ("C", axis) and mirrors
    ("m", normal) among ``op_list`` (identity, inversion and improper rotations left out)."""
    out = []
    for op in op_list:
        det = np.linalg.det(op)
        w, v = np.linalg.eig(op)
        if det > 0:
            if np.abs(op - np.eye(3)).max() < 1e-8:
                continue
            k = int(np.argmin(np.abs(w - 1.0)))
            out.append(("C", _rotation_order(op), np.real(v[:, k])))
        elif np.sum(np.abs(w - 1.0) < 1e-8) == 2:  # a reflection: eigenvalues 1, 1, -1
            k = int(np.argmin(np.abs(w + 1.0)))
            out.append(("m", 2, np.real(v[:, k])))
    for i, (kind, order, d) in enumerate(out):
        out[i] = (kind, order, d / np.linalg.norm(d))
    return out


@lru_cache(maxsize=None)
def _frame(name: str):
    """How to orient the point group ``name``: (first element, second element or None,
    angle between them in degrees). Elements are (kind, order, direction) in the table
    frame; the first is a rotation axis of the highest order (a mirror normal for Cs);
    the second is needed when rotations about the first axis change the group."""
    op_list = pointgroup.operations(name)
    elements = _elements(op_list)
    if not elements:
        return None  # C1, Ci: no direction to orient
    rot = [e for e in elements if e[0] == "C"]
    first = max(rot, key=lambda e: e[1]) if rot else elements[0]
    u = first[2]
    for angle in np.linspace(0.1, 2 * np.pi, 7)[:-1]:  # does spinning about u keep G?
        spun = _spin(op_list, u, angle)
        if not _same_group(spun, op_list):
            break
    else:
        return first, None, 0.0
    others = [e for e in elements if abs(abs(e[2] @ u) - 1.0) > 1e-6]
    # prefer a second axis of the same order (cubic, icosahedral), then any axis, then a
    # mirror: those are found the most reliably
    others.sort(key=lambda e: (e[0] != "C", -e[1] if e[0] == "C" else 0,
                               -abs(e[2] @ u)))
    second = others[0]
    angle = np.degrees(np.arccos(np.clip(abs(second[2] @ u), 0.0, 1.0)))
    return first, second, float(angle)


def _spin(op_list, u, angle):
    r = pointgroup._rotation(u, angle)
    return np.einsum("ij,mjk,lk->mil", r, op_list, r)


def _same_group(a: np.ndarray, b: np.ndarray) -> bool:
    return all(np.abs(b - x).max(axis=(1, 2)).min() < 1e-6 for x in a)


def _basis(u: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """[3, 3] orthonormal rows: u, then w made orthogonal to u (any when None), then
    their cross product."""
    u = u / np.linalg.norm(u)
    if w is None or np.linalg.norm(w - (w @ u) * u) < 1e-8:
        w = np.eye(3)[int(np.argmin(np.abs(u)))]
    w = w - (w @ u) * u
    w /= np.linalg.norm(w)
    return np.array([u, w, np.cross(u, w)])


# --- point groups: the structure side ----------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v[n[:, 0] > 1e-8] / n[n[:, 0] > 1e-8]


def _merge(directions: np.ndarray) -> np.ndarray:
    """Directions with near-parallel (or antiparallel) ones merged (the first kept)."""
    close = np.abs(directions @ directions.T) > np.cos(np.radians(MERGE_DEGREES))
    keep = np.ones(len(directions), bool)
    for i in range(len(directions)):
        if keep[i]:
            later = close[i].copy()
            later[: i + 1] = False
            keep &= ~later
    return directions[keep]


def candidate_directions(positions: np.ndarray, length: float) -> np.ndarray:
    """[K, 3] unit vectors along which symmetry elements of the centred cluster
    ``positions`` ([N, 3], Å) may lie (see the module docstring)."""
    x = positions - positions.mean(0)
    _, vecs = np.linalg.eigh(x.T @ x)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.nonzero(np.triu(d < 1.6 * length, 1))
    pieces = [vecs.T, _unit(x), _unit(0.5 * (x[i] + x[j])), _unit(x[i] - x[j])]
    close = d < 1.6 * length
    tri = [(a, b, c) for a, b in zip(i, j) for c in np.flatnonzero(close[a] & close[b]) if c > b]
    if tri:
        t = np.array(tri)
        pieces.append(_unit(x[t].mean(1)))
    return _merge(np.concatenate(pieces))


def _fit(images: np.ndarray, x: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """[M] root-mean-square distance from each set of ``images`` ([M, N, 3]) to the
    nearest atoms of the same species."""
    d2 = (np.sum(images**2, -1)[:, :, None] + np.sum(x**2, -1)[None, None]
          - 2.0 * (images @ x.T))  # [M, N, N]
    d2 = np.where(numbers[:, None] == numbers[None, :], d2, np.inf)
    return np.sqrt(np.maximum(np.mean(d2.min(-1), axis=-1), 0.0))


def _matrices(kinds: np.ndarray, orders: np.ndarray, d: np.ndarray) -> np.ndarray:
    """[M, 3, 3] rotations by 2 pi / order about ``d`` (kinds true) or reflections
    through the planes normal to ``d`` (kinds false); ``d`` [M, 3] unit vectors."""
    angle = 2 * np.pi / orders
    k = np.zeros((len(d), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -d[:, 2], d[:, 1], -d[:, 0]
    k -= np.swapaxes(k, 1, 2)
    outer = np.einsum("mi,mj->mij", d, d)
    rot = np.eye(3) + np.sin(angle)[:, None, None] * k + \
        (1 - np.cos(angle))[:, None, None] * (k @ k)
    return np.where(kinds[:, None, None], rot, np.eye(3) - 2.0 * outer)


def find_elements(positions: np.ndarray, numbers: np.ndarray, length: float,
                  tol: float) -> list[tuple[str, int, np.ndarray, float]]:
    """Approximate symmetry elements of a cluster: (kind ``"C"`` or ``"m"``, order,
    direction, fit in Å) with fit below ``tol`` (Å), about the centroid."""
    x = positions - positions.mean(0)
    dirs = candidate_directions(x, length)
    kinds = np.concatenate([np.ones(len(dirs) * len(ORDERS), bool), np.zeros(len(dirs), bool)])
    orders = np.concatenate([np.tile(ORDERS, len(dirs)), np.full(len(dirs), 2)]).astype(float)
    vecs = np.concatenate([np.repeat(dirs, len(ORDERS), axis=0), dirs])
    found = []
    for start in range(0, len(kinds), 256):
        part = slice(start, start + 256)
        mats = _matrices(kinds[part], orders[part], vecs[part])
        fits = _fit(x @ np.swapaxes(mats, 1, 2), x, numbers)
        for k, n, d, f in zip(kinds[part], orders[part], vecs[part], fits):
            if f < tol:
                found.append(("C" if k else "m", int(n), d, float(f)))
    return found


def find_point_group(positions: np.ndarray, numbers: np.ndarray, length: float,
                     tol: float, *, exclude: tuple[str, ...] = ()):
    """The highest-order point group the cluster fits within ``tol`` (Å, root mean
    square per operation), and its operations in the cluster's frame about the centroid.

    Returns:
      ``(name, ops [M, 3, 3], fit)``, or None when no group beyond C1 fits.
    """
    x = positions - positions.mean(0)
    numbers = np.asarray(numbers)
    found = find_elements(x, numbers, length, tol)
    best = None
    for name in sorted(pointgroup.GROUPS, key=lambda g: -len(pointgroup.operations(g))):
        if name == "C1" or name in exclude:
            continue
        op_list = pointgroup.operations(name)
        if best is not None and len(op_list) < len(best[1]):
            break
        for frame in _orientations(name, found):
            trial = np.einsum("ij,mjk,lk->mil", frame, op_list, frame)
            bar = tol if best is None else best[2]
            head = _fit(x @ np.swapaxes(trial[:6], 1, 2), x, numbers).max()
            if head >= bar:  # the first operations (the generators) already miss
                continue
            fit = float(_fit(x @ np.swapaxes(trial, 1, 2), x, numbers).max())
            if fit < bar:  # the best orientation of the highest group that fits
                best = (name, trial, fit)
    return best


def _orientations(name: str, found):
    """[3, 3] rotations taking the table frame of ``name`` onto found elements."""
    spec = _frame(name)
    if spec is None:  # Ci: inversion only
        yield np.eye(3)
        return
    first, second, angle = spec
    table = _basis(first[2], None if second is None else second[2])
    def matches(element, e):
        return e[0] == element[0] and (e[1] % element[1] == 0 if e[0] == "C" else True)
    axes = [e[2] for e in found if matches(first, e)]
    if second is None:
        for u in axes:
            yield _basis(u, None).T @ table
        return
    partners = [e[2] for e in found if matches(second, e)]
    cos = np.cos(np.radians(angle))
    tol = np.radians(ANGLE_DEGREES)
    for u in axes:
        for w in partners:
            c = float(u @ w)
            if abs(np.arccos(np.clip(abs(c), 0, 1)) - np.radians(angle)) > tol:
                continue
            w = np.sign(c) * w if c != 0 else w
            # a partner at the table's angle: rebuild it exactly at that angle
            perp = w - (w @ u) * u
            if np.linalg.norm(perp) < 1e-8:
                continue
            perp /= np.linalg.norm(perp)
            w_exact = cos * u + np.sqrt(max(1 - cos**2, 0.0)) * perp
            yield _basis(u, w_exact).T @ table


def _match(a: np.ndarray, b: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Permutation p with ``a[i]`` matched to ``b[p[i]]`` (same species; least squares)."""
    p = np.empty(len(a), int)
    for z in np.unique(numbers):
        idx = np.flatnonzero(numbers == z)
        cost = np.sum((a[idx][:, None] - b[idx][None]) ** 2, axis=-1)
        r, c = linear_sum_assignment(cost)
        p[idx[r]] = idx[c]
    return p


def _snap(point: np.ndarray, op_list: np.ndarray, merge: float) -> np.ndarray:
    """The point moved onto the special position it is within ``merge`` of (the mean of
    its images that close to it: the projection onto the fixed subspace of their
    operations)."""
    images = np.einsum("mij,j->mi", op_list, point)
    near = np.linalg.norm(images - point, axis=1) < merge
    return images[near].mean(0)


def symmetrize_cluster(positions: np.ndarray, numbers: np.ndarray, op_list: np.ndarray,
                       length: float, rng: np.random.Generator, *,
                       centre: np.ndarray | None = None) -> np.ndarray:
    """[N, 3] positions (relative to ``centre``) with the point group ``op_list`` ([M,
    3, 3], about ``centre``, default the centroid) on every atom whose orbit fits the
    composition (see the module docstring)."""
    numbers = np.asarray(numbers)
    x = positions - (positions.mean(0) if centre is None else centre)
    n = len(x)
    avg = np.zeros_like(x)
    for g in op_list:
        p = _match(x @ g.T, x, numbers)  # g x_i ~ x_p(i)
        avg += x[p] @ g  # g^-1 x_p(i) ~ x_i  (g orthogonal)
    avg /= len(op_list)
    error = np.linalg.norm(avg - x, axis=1)
    out = x.copy()
    free = np.ones(n, bool)
    placed = np.zeros(n, bool)
    merge = 0.5 * length
    for i in np.argsort(error):
        if not free[i]:
            continue
        point = _snap(avg[i], op_list, merge)
        orbit = pointgroup.orbit(point, op_list, tol=1e-3 * length)
        pool = np.flatnonzero(free & (numbers == numbers[i]))
        if len(orbit) > len(pool):
            continue
        cost = np.sum((orbit[:, None] - x[pool][None]) ** 2, axis=-1)
        r, c = linear_sum_assignment(cost)
        if i not in pool[c]:  # keep the atom that seeded the orbit in it
            k = int(np.argmax(cost[r, c] - cost[r, np.flatnonzero(pool == i)[0]]))
            c[k] = int(np.flatnonzero(pool == i)[0])
        out[pool[c]] = orbit[r]
        free[pool[c]] = False
        placed[pool[c]] = True
    # the symmetric atoms turned rigidly onto the input (Kabsch): the group turns along
    if placed.sum() >= 3:
        u, _, vt = np.linalg.svd(out[placed].T @ x[placed])
        turn = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
        out[placed] = out[placed] @ turn
    # atoms left over keep their places unless taken; then they go to the surface
    for i in np.flatnonzero(~placed):
        others = out[placed]
        if len(others) and np.linalg.norm(others - out[i], axis=1).min() < 0.7 * length:
            out[i] = ops.surface_site(others, rng.normal(size=3), length)
        placed[i] = True
    return out


def crystal_operations(atoms: Atoms, symprec: float):
    """spglib's space-group operations of ``atoms`` at ``symprec`` (Å): ``(number,
    rotations [M, 3, 3], translations [M, 3])`` in the cell's fractional coordinates
    (``x -> R x + t``), or None when spglib finds none."""
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        return None
    return (int(data.number), np.asarray(data.rotations, float),
            np.asarray(data.translations, float))


def average_crystal(atoms: Atoms, rot: np.ndarray, trans: np.ndarray) -> Atoms:
    """``atoms`` averaged over the operations ``(rot, trans)`` (fractional, ``x -> R x +
    t``): each atom's images matched to atoms of its species (Hungarian method, nearest
    lattice images), pulled back and averaged (twice, so inconsistent matches of a
    distorted structure settle); the metric averaged as ``mean R^T G R`` and the cell
    rebuilt closest to the old one. Same atoms, same order."""
    frac = atoms.get_scaled_positions()
    lattice = atoms.cell[:]
    numbers = atoms.numbers
    for _ in range(2):
        avg = np.zeros_like(frac)
        for r, t in zip(rot, trans):
            img = frac @ r.T + t  # images of every atom
            delta = img[:, None] - frac[None]  # [i, j]
            delta -= np.round(delta)
            dist = np.linalg.norm(delta @ lattice, axis=-1)
            p = np.empty(len(frac), int)
            for z in np.unique(numbers):
                idx = np.flatnonzero(numbers == z)
                a, b = linear_sum_assignment(dist[np.ix_(idx, idx)] ** 2)
                p[idx[a]] = idx[b]
            # x_p(i) (its image nearest R x_i + t) pulled back: R^-1 (x_p(i) - t) ~ x_i
            target = img + (frac[p] - img - np.round(frac[p] - img))
            back = (target - t) @ np.linalg.inv(r).T
            avg += frac + (back - frac - np.round(back - frac))
        frac = avg / len(rot)
    metric = lattice @ lattice.T
    sym = np.mean([r.T @ metric @ r for r in rot], axis=0)
    new_cell = _sqrtm(sym) @ np.linalg.inv(_sqrtm(metric)) @ lattice
    return Atoms(numbers=numbers, cell=new_cell, scaled_positions=frac % 1.0, pbc=True)


def symmetrize_crystal(atoms: Atoms, symprec: float):
    """``atoms`` averaged over the space-group operations spglib finds at ``symprec``
    (Å), :func:`average_crystal`. Returns ``(atoms, number)`` with the space-group number
    found, or None when spglib finds none."""
    found = crystal_operations(atoms, symprec)
    if found is None:
        return None
    number, rot, trans = found
    return average_crystal(atoms, rot, trans), number


def _sqrtm(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


__all__ = ["average_crystal", "candidate_directions", "crystal_operations", "find_elements",
           "find_point_group", "symmetrize_cluster", "symmetrize_crystal"]

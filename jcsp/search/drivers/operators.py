"""Variation operators shared by the search drivers (host side, numpy).

Every operator takes ``ase.Atoms`` and an explicit ``numpy.random.Generator`` and
returns a new ``ase.Atoms`` of the same composition; none calls a potential. Crystals
keep ``pbc`` all true, clusters all false.

References: Deaven & Ho, PRL 75, 288 (1995) (cut-and-splice through a plane for
clusters); Oganov & Glass, J. Chem. Phys. 124, 244704 (2006) (slab heredity for
crystals, lattice mutation, permutation); Wales & Doye, J. Phys. Chem. A 101, 5111
(1997) (random displacements of basin hopping); Deaven & Ho 1995, Locatelli & Schoen,
Comput. Optim. Appl. 26, 173 (2003) and Cheng et al., J. Phys. Chem. A 113, 9309 (2009)
(moving the highest-energy, least-coordinated atoms to surface sites); Oganov & Glass
2006 and Lyakhov, Oganov, Stokes & Zhu, Comput. Phys. Commun. 184, 1172 (2013)
(USPEX: heredity and permutation that respect the parents' symmetry, here whole
Wyckoff orbits found by spglib, :func:`orbit_heredity` and :func:`permute_orbits`).
"""

from __future__ import annotations

import numpy as np
import spglib
from ase import Atoms
from scipy.spatial.transform import Rotation


#: Children with two atoms closer than this many bond lengths are rejected by the GA and
#: the swarm (:func:`sane`) and redrawn. Closer contacts down to this are left to the
#: session's repair (:mod:`jcsp.search.repair`), which pushes atoms closer than 0.6 x
#: the sum of their covalent radii apart to 0.65 x it before any relaxation (at half a
#: bond length Lennard-Jones forces reach 10^5 epsilon/sigma, beyond what the relaxer
#: accepts). A stricter bound (0.7) rejected 80 % of cut-and-splice LJ19 children and
#: replaced one in ten by a random structure.
MIN_SEPARATION = 0.5


def _fresh(atoms: Atoms, numbers, positions=None, frac=None, cell=None) -> Atoms:
    """A new structure with no calculator and no info beyond the particle labels."""
    if atoms.pbc.all():
        new = Atoms(numbers=numbers, cell=atoms.cell[:] if cell is None else cell, pbc=True)
        new.set_scaled_positions(frac)
    else:
        new = Atoms(numbers=numbers, positions=positions, pbc=False)
    if "labels" in atoms.info and len(set(atoms.info["labels"])) == 1:
        new.info["labels"] = [atoms.info["labels"][0]] * len(new)
    return new


def random_strain(rng: np.random.Generator, scale: float) -> np.ndarray:
    """[3, 3] symmetric strain with Gaussian components of width ``scale``."""
    e = rng.normal(0.0, scale, (3, 3))
    return 0.5 * (e + e.T)


def strain(atoms: Atoms, rng: np.random.Generator, scale: float = 0.1) -> Atoms:
    """Lattice mutation: the cell deformed by ``(I + e)`` with a random symmetric strain
    ``e`` (fractional coordinates kept), rescaled to the original volume (crystals only)."""
    cell = atoms.cell[:] @ (np.eye(3) + random_strain(rng, scale))
    cell *= (abs(np.linalg.det(atoms.cell[:])) / abs(np.linalg.det(cell))) ** (1 / 3)
    return _fresh(atoms, atoms.numbers, frac=atoms.get_scaled_positions(), cell=cell)


def displace(atoms: Atoms, rng: np.random.Generator, step: float, *,
             strain_scale: float = 0.0) -> Atoms:
    """Basin-hopping move: every atom displaced uniformly in a cube of half side
    ``step`` (Å), and for crystals the cell strained by a random ``strain_scale``."""
    pos = atoms.positions + rng.uniform(-step, step, atoms.positions.shape)
    if not atoms.pbc.all():
        return _fresh(atoms, atoms.numbers, positions=pos - pos.mean(0))
    frac = np.linalg.solve(atoms.cell[:].T, pos.T).T
    cell = atoms.cell[:]
    if strain_scale > 0:
        cell = cell @ (np.eye(3) + random_strain(rng, strain_scale))
    return _fresh(atoms, atoms.numbers, frac=frac % 1.0, cell=cell)


def rattle(atoms: Atoms, rng: np.random.Generator, amplitude: float,
           fraction: float = 1.0) -> Atoms:
    """Rattle mutation: a random ``fraction`` of atoms (at least one) displaced by
    Gaussian noise of width ``amplitude`` (Å)."""
    n = len(atoms)
    chosen = rng.permutation(n)[: max(1, int(round(fraction * n)))]
    pos = atoms.positions.copy()
    pos[chosen] += rng.normal(0.0, amplitude, (len(chosen), 3))
    if not atoms.pbc.all():
        return _fresh(atoms, atoms.numbers, positions=pos - pos.mean(0))
    frac = np.linalg.solve(atoms.cell[:].T, pos.T).T % 1.0
    return _fresh(atoms, atoms.numbers, frac=frac)


def permute(atoms: Atoms, rng: np.random.Generator, swaps: int = 1) -> Atoms:
    """Permutation: ``swaps`` exchanges of two atoms of unlike species (a copy when all
    atoms are alike)."""
    numbers = atoms.numbers.copy()
    for _ in range(swaps):
        if len(set(numbers)) < 2:
            break
        i = rng.integers(len(numbers))
        others = np.flatnonzero(numbers != numbers[i])
        j = others[rng.integers(len(others))]
        numbers[i], numbers[j] = numbers[j], numbers[i]
    if atoms.pbc.all():
        return _fresh(atoms, numbers, frac=atoms.get_scaled_positions())
    return _fresh(atoms, numbers, positions=atoms.positions.copy())


def _take(heights_a, numbers_a, heights_b, numbers_b, counts: dict, split: float):
    """Indices of A atoms below ``split`` and of B atoms completing ``counts``
    (B atoms above the split first, then those nearest it)."""
    take_a, take_b = [], []
    for z, need in counts.items():
        ia = np.flatnonzero(numbers_a == z)
        ia = ia[np.argsort(heights_a[ia])]
        below = ia[heights_a[ia] < split][:need]
        take_a += list(below)
        rest = need - len(below)
        ib = np.flatnonzero(numbers_b == z)
        ib = ib[np.argsort(-heights_b[ib])]  # from the top down: above the split first
        take_b += list(ib[:rest])
    return np.array(take_a, int), np.array(take_b, int)


def cut_and_splice(a: Atoms, b: Atoms, rng: np.random.Generator) -> Atoms:
    """Heredity: the part of parent ``a`` on one side of a random plane joined to the
    part of parent ``b`` on the other, with the composition of ``a`` restored.

    Clusters (Deaven & Ho 1995): both parents centred and randomly rotated, cut by a plane
    through the centre at a random height. Crystals (Oganov & Glass 2006): both parents
    randomly shifted, cut by a fractional slab along a random lattice axis; the child's
    cell is a random weighted mean of the parents' cells.
    """
    counts = {int(z): int(c) for z, c in zip(*np.unique(a.numbers, return_counts=True))}
    if not a.pbc.all():
        pa = Rotation.random(random_state=rng).apply(a.positions - a.positions.mean(0))
        pb = Rotation.random(random_state=rng).apply(b.positions - b.positions.mean(0))
        ha, hb = pa[:, 2], pb[:, 2]
        split = rng.uniform(np.percentile(ha, 25), np.percentile(ha, 75))
        ia, ib = _take(ha, a.numbers, hb, b.numbers, counts, split)
        pos = np.vstack([pa[ia], pb[ib]])
        numbers = np.concatenate([a.numbers[ia], b.numbers[ib]])
        return _fresh(a, numbers, positions=pos - pos.mean(0))
    axis = rng.integers(3)
    fa = (a.get_scaled_positions() + rng.uniform(0, 1, 3)) % 1.0
    fb = (b.get_scaled_positions() + rng.uniform(0, 1, 3)) % 1.0
    split = rng.uniform(0.25, 0.75)
    ia, ib = _take(fa[:, axis], a.numbers, fb[:, axis], b.numbers, counts, split)
    w = rng.uniform(0.25, 0.75)
    cell = w * a.cell[:] + (1 - w) * b.cell[:]
    frac = np.vstack([fa[ia], fb[ib]])
    numbers = np.concatenate([a.numbers[ia], b.numbers[ib]])
    return _fresh(a, numbers, frac=frac, cell=cell)


def surface_site(positions: np.ndarray, direction: np.ndarray, length: float) -> np.ndarray:
    """Where an atom coming in from infinity along ``direction`` (through the centre of
    ``positions``) first touches one of them at distance ``length`` (Å): a site on the
    cluster's surface in that direction.

    Args:
      positions: [M, 3] Å, centred near the origin; direction: [3] (normalised here).
    """
    u = direction / np.linalg.norm(direction)
    along = positions @ u
    perp2 = np.sum(positions**2, axis=1) - along**2
    touch = perp2 < length**2
    if not touch.any():  # the ray misses every atom: dock next to the nearest one
        k = int(np.argmin(perp2))
        return positions[k] + length * u
    t = np.max(along[touch] + np.sqrt(length**2 - perp2[touch]))
    return t * u


def relocate(atoms: Atoms, rng: np.random.Generator, energies: np.ndarray, count: int,
             length: float) -> Atoms:
    """Surface move: the ``count`` atoms of highest energy moved to new sites.

    Picks ``count`` atoms, each drawn with probability rising with its energy (the
    highest-energy atom is the most likely; weights ``exp((e - max e) / spread)`` with
    ``spread`` half the standard deviation of ``energies``), and moves them one at a time:
    clusters to a surface site in a random direction (:func:`surface_site`), crystals
    to the emptiest of 64 random points of the cell (largest distance to every other
    atom). Low-energy atoms stay where they are, so a good core is kept while the
    badly bound surface is rebuilt (Locatelli & Schoen 2003 move the highest-energy
    atom; Cheng et al. 2009 the least-coordinated ones).

    Args:
      energies: [N] per-atom energies of ``atoms`` (eV), e.g. from
        :meth:`jcsp.search.run.Session.atom_energies`.
      count: number of atoms moved (clipped to 1..N-1).
      length: bond length, Å.
    """
    n = len(atoms)
    count = int(np.clip(count, 1, max(n - 1, 1)))
    e = np.asarray(energies, float)
    spread = max(0.5 * float(np.std(e)), 1e-12)
    w = np.exp((e - e.max()) / spread)
    chosen = rng.choice(n, size=count, replace=False, p=w / w.sum())
    if not atoms.pbc.all():
        pos = atoms.positions - atoms.positions.mean(0)
        keep = np.setdiff1d(np.arange(n), chosen)
        placed = pos[keep]
        new = pos.copy()
        for i in chosen:
            site = surface_site(placed - placed.mean(0), rng.normal(size=3), length)
            new[i] = site + placed.mean(0)
            placed = np.vstack([placed, new[i]])
        return _fresh(atoms, atoms.numbers, positions=new - new.mean(0))
    frac = atoms.get_scaled_positions()
    cell = atoms.cell[:]
    for i in chosen:
        others = np.delete(frac, i, axis=0)
        trial = rng.uniform(0.0, 1.0, (64, 3))
        d = _periodic_distances(trial, others, cell).min(1)
        frac[i] = trial[int(np.argmax(d))]
    return _fresh(atoms, atoms.numbers, frac=frac)


def _periodic_distances(a: np.ndarray, b: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] shortest distances (Å) over the 27 nearest images."""
    shifts = np.array(list(np.ndindex(3, 3, 3)), float) - 1.0
    d = a[:, None] - b[None]
    d -= np.round(d)
    vec = (d[:, :, None, :] + shifts) @ cell
    return np.linalg.norm(vec, axis=-1).min(-1)


def min_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance, Å (periodic images included for crystals)."""
    if len(atoms) < 2 and not atoms.pbc.all():
        return np.inf
    if not atoms.pbc.all():
        d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
        return float(d[np.triu_indices(len(atoms), 1)].min())
    frac = atoms.get_scaled_positions()
    cell = atoms.cell[:]
    shifts = np.array(list(np.ndindex(3, 3, 3)), float) - 1.0
    d = frac[:, None] - frac[None]
    d -= np.round(d)
    vec = (d[:, :, None, :] + shifts) @ cell
    r = np.linalg.norm(vec, axis=-1)
    same = np.eye(len(atoms), dtype=bool)[:, :, None] & (shifts == 0).all(1)
    return float(np.where(same, np.inf, r).min())


def sane(atoms: Atoms, length: float, factor: float = MIN_SEPARATION) -> bool:
    """No two atoms closer than ``factor * length`` and, for crystals, a cell that is
    not flat (every plane spacing above ``length``)."""
    if atoms.pbc.all():
        inv = np.linalg.inv(atoms.cell[:])
        if np.any(1.0 / np.linalg.norm(inv, axis=0) < 0.6 * length):
            return False
    return min_distance(atoms) >= factor * length


# --- Wyckoff-aware operators (crystals) ---------------------------------------------------
def orbits(atoms: Atoms, symprec: float):
    """The crystallographic orbits of ``atoms`` under the space group spglib finds at
    ``symprec`` (Å): ``(orbits, rotations [M, 3, 3], translations [M, 3])`` with
    ``orbits`` a list of index arrays (the atoms of one Wyckoff orbit each; spglib's
    ``equivalent_atoms``), or None when spglib finds no group."""
    data = spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(),
                                        atoms.numbers), symprec=symprec)
    if data is None:
        return None
    eq = np.asarray(data.equivalent_atoms)
    groups = [np.flatnonzero(eq == k) for k in np.unique(eq)]
    return groups, np.asarray(data.rotations, float), np.asarray(data.translations, float)


def permute_orbits(atoms: Atoms, rng: np.random.Generator, symprec: float) -> Atoms | None:
    """Permutation of whole orbits: the species of two Wyckoff orbits of equal size and
    unlike species exchanged, which keeps every symmetry operation of the structure
    (and the composition). None when no such pair of orbits exists."""
    found = orbits(atoms, symprec)
    if found is None:
        return None
    groups = found[0]
    pairs = [(i, j) for i in range(len(groups)) for j in range(i + 1, len(groups))
             if len(groups[i]) == len(groups[j])
             and atoms.numbers[groups[i][0]] != atoms.numbers[groups[j][0]]]
    if not pairs:
        return None
    i, j = pairs[int(rng.integers(len(pairs)))]
    numbers = atoms.numbers.copy()
    numbers[groups[i]] = atoms.numbers[groups[j][0]]
    numbers[groups[j]] = atoms.numbers[groups[i][0]]
    return _fresh(atoms, numbers, frac=atoms.get_scaled_positions())


def _subset_sum(sizes, target: int):
    """Indices of ``sizes`` adding up to ``target`` exactly, or None."""
    reach = {0: []}
    for k, s in enumerate(sizes):
        for total, picked in list(reach.items()):
            if total + s <= target and total + s not in reach:
                reach[total + s] = picked + [k]
    return reach.get(target)


def _periodic_orbit(point, rot, trans, cell, merge: float, tol: float) -> np.ndarray:
    """[m, 3] fractional orbit of ``point`` under ``(rot, trans)``, after snapping it
    onto the special position it is within ``merge`` (Å) of (the mean of its images that
    close, nearest lattice images taken)."""
    images = point @ rot.transpose(0, 2, 1) + trans
    delta = images - point
    delta -= np.round(delta)
    near = np.linalg.norm(delta @ cell, axis=1) < merge
    point = (point + delta[near].mean(0)) % 1.0
    images = (point @ rot.transpose(0, 2, 1) + trans) % 1.0
    out: list[np.ndarray] = []
    for q in images:
        if not out:
            out.append(q)
            continue
        d = np.array(out) - q
        d -= np.round(d)
        if np.linalg.norm(d @ cell, axis=1).min() > tol:
            out.append(q)
    return np.array(out)


def orbit_heredity(a: Atoms, b: Atoms, rng: np.random.Generator, symprec: float,
                   length: float) -> Atoms | None:
    """Heredity by Wyckoff orbits: a random quarter to three quarters of parent ``a``'s
    orbits (spglib at ``symprec``) are kept whole, and the rest of the composition is
    filled with the orbits, under ``a``'s operations, of ``b``'s atoms (``b``'s
    fractional coordinates, randomly shifted), then with ``a``'s remaining orbits where
    ``b``'s do not add up. The child has ``a``'s cell scaled to the parents' mean volume
    and, up to the snapping of near-special points, ``a``'s space group. None when
    spglib finds no group for ``a``.

    Args:
      length: bond length, Å (points nearer than half of it merge onto a special
        position; orbits of ``b`` closer than 0.6 of it to placed atoms are skipped).
    """
    found = orbits(a, symprec)
    if found is None:
        return None
    groups, rot, trans = found
    n = len(a)
    volume = 0.5 * (abs(a.get_volume()) + abs(b.get_volume()))
    cell = a.cell[:] * (volume / abs(a.get_volume())) ** (1 / 3)
    frac_a = a.get_scaled_positions()
    order = rng.permutation(len(groups))
    goal = rng.uniform(0.25, 0.75) * n
    kept, taken = [], 0
    for k in order:
        if taken + len(groups[k]) <= goal:
            kept.append(k)
            taken += len(groups[k])
    rest = [k for k in order if k not in kept]
    points = [frac_a[groups[k]] for k in kept]
    numbers = [a.numbers[groups[k]] for k in kept]
    frac_b = (b.get_scaled_positions() + rng.uniform(0, 1, 3)) % 1.0
    for z in np.unique(a.numbers):
        need = int(np.sum(a.numbers == z)) - sum(int(np.sum(x == z)) for x in numbers)
        spare = [k for k in rest if a.numbers[groups[k][0]] == z]
        for j in rng.permutation(np.flatnonzero(b.numbers == z)):
            if need == 0:
                break
            orbit = _periodic_orbit(frac_b[j], rot, trans, cell, 0.5 * length, 1e-3 * length)
            if len(orbit) > need or _subset_sum([len(groups[k]) for k in spare],
                                                need - len(orbit)) is None:
                continue
            placed = np.vstack(points) if points else np.zeros((0, 3))
            if len(placed) and _periodic_distances(orbit, placed, cell).min() < 0.6 * length:
                continue
            points.append(orbit)
            numbers.append(np.full(len(orbit), z))
            need -= len(orbit)
        fill = _subset_sum([len(groups[k]) for k in spare], need)
        for i in fill:
            points.append(frac_a[groups[spare[i]]])
            numbers.append(a.numbers[groups[spare[i]]])
    return _fresh(a, np.concatenate(numbers), frac=np.vstack(points) % 1.0, cell=cell)


__all__ = ["strain", "displace", "rattle", "permute", "cut_and_splice", "min_distance",
           "sane", "random_strain", "relocate", "surface_site", "orbits", "permute_orbits",
           "orbit_heredity"]

"""Variation operators shared by the search drivers (host side, numpy).

Every operator takes ``ase.Atoms`` and an explicit ``numpy.random.Generator`` and
returns a new ``ase.Atoms`` of the same composition; none calls a potential. Crystals
keep ``pbc`` all true, clusters all false.

References: Deaven & Ho, PRL 75, 288 (1995) (cut-and-splice through a plane for
clusters); Oganov & Glass, J. Chem. Phys. 124, 244704 (2006) (slab heredity for
crystals, lattice mutation, permutation); Wales & Doye, J. Phys. Chem. A 101, 5111
(1997) (random displacements of basin hopping); Deaven & Ho 1995, Locatelli & Schoen,
Comput. Optim. Appl. 26, 173 (2003) and Cheng et al., J. Phys. Chem. A 113, 9309 (2009)
(moving the highest-energy, least-coordinated atoms to surface sites).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation


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


def sane(atoms: Atoms, length: float, factor: float = 0.5) -> bool:
    """No two atoms closer than ``factor * length`` and, for crystals, a cell that is
    not flat (every plane spacing above ``length``)."""
    if atoms.pbc.all():
        inv = np.linalg.inv(atoms.cell[:])
        if np.any(1.0 / np.linalg.norm(inv, axis=0) < 0.6 * length):
            return False
    return min_distance(atoms) >= factor * length


__all__ = ["strain", "displace", "rattle", "permute", "cut_and_splice", "min_distance",
           "sane", "random_strain", "relocate", "surface_site"]

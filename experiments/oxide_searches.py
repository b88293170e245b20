"""Small oxide searches with rigid-ion potentials: wall time and relaxations to the ground state.

Issue 21 asks that 300-relaxation searches of small oxides (6-12 atoms, 0-30 GPa) finish
in minutes and find their ground states. For each system this script relaxes the known
phases with the same potential and pressure (the reference: the lowest of them), then
runs ``jcsp.search`` with several drivers and seeds, each stopping at the reference
enthalpy (``target``) or at the budget, and records success, relaxations to the first
hit, wall time and failed relaxations.

Potentials: TiO2 with Matsui & Akaogi, Mol. Simul. 6, 239 (1991) (Buckingham + Coulomb,
charges Ti 2.196, O -1.098; the parameter set XtalOpt ships); MgO with the Mg-O and O-O
Buckingham terms of Bush, Gale, Catlow & Battle, J. Mater. Chem. 4, 831 (1994) on rigid
ions (formal charges; ``docs/examples/mgo.toml``). Both with a 10 Å real-space cutoff.

Reference phases: TiO2 rutile (P4_2/mnm, Z = 2), anatase (I4_1/amd, primitive Z = 2)
and columbite (alpha-PbO2, Pbcn, Z = 4); MgO rock salt. Each is relaxed from its
experimental geometry (cell and positions) at the search's pressure.

Not run in CI (minutes). Examples:
  python experiments/oxide_searches.py --quick
  python experiments/oxide_searches.py --record experiments/results/oxide_searches.json
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from records import write_record  # noqa: E402

from ase.spacegroup import crystal  # noqa: E402

import jcsp  # noqa: E402
from jcsp.potentials import BuckinghamCoulomb  # noqa: E402

CUTOFF = 10.0


def matsui_akaogi() -> BuckinghamCoulomb:
    """TiO2, Matsui & Akaogi (1991), Buckingham + Coulomb."""
    return BuckinghamCoulomb(
        {("Ti", "Ti"): (31120.1, 0.1540, 5.25), ("O", "O"): (11782.7, 0.2340, 30.22),
         ("Ti", "O"): (16957.5, 0.1940, 12.59)}, {"Ti": 2.196, "O": -1.098}, cutoff=CUTOFF)


def bush_mgo() -> BuckinghamCoulomb:
    """MgO, Bush et al. (1994) short-range terms on rigid formal-charge ions."""
    return BuckinghamCoulomb(
        {("Mg", "O"): (1428.5, 0.2945, 0.0), ("O", "O"): (22764.0, 0.1490, 27.88)},
        {"Mg": 2.0, "O": -2.0}, cutoff=CUTOFF)


def tio2_phases(units: int) -> dict:
    """Known TiO2 phases with ``units`` formula units per cell (supercells of smaller
    ones where they fit)."""
    rutile = crystal(["Ti", "O"], basis=[(0, 0, 0), (0.3048, 0.3048, 0)], spacegroup=136,
                     cellpar=[4.594, 4.594, 2.959, 90, 90, 90])
    anatase = crystal(["Ti", "O"], basis=[(0, 0, 0), (0, 0, 0.2081)], spacegroup=141,
                      cellpar=[3.785, 3.785, 9.514, 90, 90, 90], primitive_cell=True)
    columbite = crystal(["Ti", "O"], basis=[(0, 0.1710, 0.25), (0.2860, 0.3820, 0.4120)],
                        spacegroup=60, cellpar=[4.531, 5.498, 4.900, 90, 90, 90])
    phases = {}
    for name, atoms in {"rutile": rutile, "anatase": anatase, "columbite": columbite}.items():
        z = len(atoms) // 3
        if units % z == 0:
            phases[name] = atoms.repeat((1, 1, units // z))
    return phases


def mgo_phases(units: int) -> dict:
    """MgO rock salt with ``units`` formula units (4: the conventional cube)."""
    rocksalt = crystal(["Mg", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225,
                       cellpar=[4.21, 4.21, 4.21, 90, 90, 90], primitive_cell=units != 4)
    z = len(rocksalt) // 2
    return {"rocksalt": rocksalt.repeat((1, 1, units // z))} if units % z == 0 else {}


#: name -> (formula, formula units, pressure GPa, potential factory, phases factory)
SYSTEMS = {
    "TiO2x2-0GPa": ("TiO2", 2, 0.0, matsui_akaogi, tio2_phases),
    "TiO2x2-30GPa": ("TiO2", 2, 30.0, matsui_akaogi, tio2_phases),
    "TiO2x4-0GPa": ("TiO2", 4, 0.0, matsui_akaogi, tio2_phases),
    "TiO2x4-30GPa": ("TiO2", 4, 30.0, matsui_akaogi, tio2_phases),
    "MgOx4-0GPa": ("MgO", 4, 0.0, bush_mgo, mgo_phases),
}


def reference(potential, phases: dict, pressure: float) -> tuple[float, dict]:
    """(lowest enthalpy per atom, {phase: enthalpy per atom}) of the relaxed phases."""
    names = list(phases)
    relaxed = jcsp.relax([phases[n] for n in names], potential, fmax=1e-4,
                         pressure=pressure, max_steps=5000)
    per_atom = {n: a.info["enthalpy"] / len(a) for n, a in zip(names, relaxed)}
    return min(per_atom.values()), per_atom


def one_search(formula: str, potential, algorithm: str, seed: int, target: float,
               tol: float, **settings) -> dict:
    """One ``jcsp.search`` stopping within ``tol`` eV/atom of ``target``: its first hit,
    best enthalpy per atom and space group, relaxations, failures and wall time (also
    printed as one line)."""
    start = time.perf_counter()
    res = jcsp.search(formula, potential, algorithm=algorithm, seed=seed,
                      target=target + tol, **settings)
    wall = time.perf_counter() - start
    best = res.best.info["enthalpy"] / len(res.best) if res.best else math.nan
    run = {"seed": seed, "first_hit": res.first_hit(target, tol=tol),
           "best_eV_per_atom": best, "relaxations": res.n_relaxations,
           "failed": res.n_failed, "wall_s": round(wall, 1),
           "best_spacegroup": res.best.info.get("spacegroup") if res.best else None}
    print(f"  {algorithm:>7} seed {seed}: hit {run['first_hit']}, best {best:.5f} "
          f"({run['best_spacegroup']}), {res.n_relaxations} relaxations "
          f"({res.n_failed} failed) in {wall:.0f} s", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--algorithms", nargs="+", default=["random", "ga", "basin"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--optimizer", default="fire", choices=["fire", "lbfgs"])
    parser.add_argument("--tol", type=float, default=1e-3, help="eV/atom tolerance of a hit")
    parser.add_argument("--record", default=None, metavar="PATH")
    parser.add_argument("--quick", action="store_true",
                        help="TiO2x2 at 0 GPa, random only, 1 seed, budget 64")
    args = parser.parse_args()
    if args.quick:
        args.systems, args.algorithms, args.seeds, args.budget = (
            ["TiO2x2-0GPa"], ["random"], 1, 64)
    results = {}
    for name in args.systems:
        formula, units, pressure, make_potential, make_phases = SYSTEMS[name]
        potential = make_potential()
        target, phases = reference(potential, make_phases(units), pressure)
        print(f"\n{name}: reference {target:.5f} eV/atom "
              + ", ".join(f"{k} {v:.5f}" for k, v in phases.items()), flush=True)
        rows = {}
        for algorithm in args.algorithms:
            runs = []
            for seed in range(args.seeds):
                runs.append(one_search(formula, potential, algorithm, seed, target, args.tol,
                                       formula_units=units, pressure=pressure,
                                       budget=args.budget, optimizer=args.optimizer))
            hits = [r["first_hit"] for r in runs]
            found = [h for h in hits if h is not None]
            rows[algorithm] = {
                "runs": runs, "success": f"{len(found)}/{len(runs)}",
                "median_first_hit": statistics.median(found) if found else None,
                "median_wall_s": statistics.median(r["wall_s"] for r in runs)}
        results[name] = {"formula": formula, "formula_units": units, "pressure_GPa": pressure,
                         "reference_eV_per_atom": target, "phases_eV_per_atom": phases,
                         "drivers": rows}
    if args.record:
        write_record(args.record, settings={
            "systems": args.systems, "algorithms": args.algorithms, "seeds": args.seeds,
            "budget": args.budget, "tol_eV_per_atom": args.tol, "optimizer": args.optimizer, "cutoff_A": CUTOFF,
            "dtype": "float64"}, results=results)


if __name__ == "__main__":
    main()

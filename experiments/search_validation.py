"""Validation of the search drivers: success rate over seeds and relaxations to first hit.

For each system and algorithm, runs ``jcsp.search`` with several seeds, stopping at the
known global minimum (``target``) or at the budget, and prints one table per system:
success rate, median relaxations to the first hit (over the successful seeds; "-" when
none), median wall time, and the cost relative to plain basin hopping (the baseline).

References: LJ minima from the Cambridge Cluster Database (Wales & Doye, J. Phys. Chem.
A 101, 5111 (1997)); Si8 diamond with Stillinger-Weber, -4.33660 eV/atom; Cu4 fcc and
Na4Cl4 rock salt: the relaxed reference structures (built with ASE, relaxed by
``jcsp.relax`` with the same potential).

Not run in CI (slow). Example (small settings):
  python experiments/search_validation.py --seeds 3 --budget 400 --systems LJ13 LJ19 Si8
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jcsp
from jcsp.potentials import EAM, BuckinghamCoulomb, LennardJones, StillingerWeber

POTENTIALS = Path("/usr/share/lammps/potentials")
LJ_MINIMA = {13: -44.326801, 19: -72.659782, 26: -108.315616, 31: -133.586422,
             38: -173.928427}


def _reference(atoms, potential) -> float:
    out = jcsp.relax([atoms], potential, fmax=1e-4)[0]
    return out.info["enthalpy"] / len(out)


def systems() -> dict:
    """name -> (composition, potential, search keywords, target eV/atom)."""
    from ase.build import bulk

    out = {}
    lj = LennardJones(1.0, 1.0, None)
    for n, e in LJ_MINIMA.items():
        out[f"LJ{n}"] = (f"LJ{n}", lj, {"cluster": True}, e / n)
    sw_file = POTENTIALS / "Si.sw"
    if not sw_file.exists():
        sw_file = Path(jcsp.__file__).parent / "data" / "Si.sw"
    out["Si8"] = ("Si8", StillingerWeber.from_lammps(sw_file), {}, -4.33660)
    cu_file = POTENTIALS / "Cu_u3.eam"
    if cu_file.exists():
        eam = EAM.from_lammps(cu_file)
        out["Cu4"] = ("Cu4", eam, {}, _reference(bulk("Cu", "fcc", a=3.615, cubic=True), eam))
    nacl = BuckinghamCoulomb(
        {("Na", "Na"): (423.2, 0.317, 1.0486), ("Na", "Cl"): (1254.9, 0.317, 6.9906),
         ("Cl", "Cl"): (2567.0, 0.327, 75.054)}, {"Na": 1.0, "Cl": -1.0}, cutoff=10.0)
    rocksalt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    out["Na4Cl4"] = ("Na4Cl4", nacl, {}, _reference(rocksalt, nacl))
    return out


def run(args) -> None:
    table = systems()
    for name in args.systems:
        composition, potential, kwargs, target = table[name]
        print(f"\n{name}: target {target:.6f} eV/atom, budget {args.budget}, "
              f"seeds {args.seeds}, population {args.population}")
        print(f"{'algorithm':>9}  {'success':>7}  {'median hit':>10}  {'median s':>8}  "
              f"{'vs basin':>8}  hits")
        baseline = None
        for algorithm in args.algorithms:
            hits, times = [], []
            for seed in range(args.seeds):
                start = time.perf_counter()
                res = jcsp.search(composition, potential, algorithm=algorithm,
                                  budget=args.budget, seed=seed, target=target,
                                  population=args.population, **kwargs)
                times.append(time.perf_counter() - start)
                hits.append(res.first_hit(target, tol=args.tol))
            found = [h for h in hits if h is not None]
            median = statistics.median(found) if found else None
            if algorithm == "basin":
                baseline = median
            ratio = (f"{median / baseline:8.2f}" if median and baseline else f"{'-':>8}")
            print(f"{algorithm:>9}  {len(found):>3}/{args.seeds:<3}  "
                  f"{median if median is not None else '-':>10}  "
                  f"{statistics.median(times):8.1f}  {ratio}  {hits}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["LJ13", "LJ19", "LJ26", "LJ31",
                                                         "LJ38", "Si8", "Cu4", "Na4Cl4"])
    parser.add_argument("--algorithms", nargs="+",
                        default=["basin", "random", "ga", "pso", "minima", "anneal"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="eV/atom tolerance of a hit")
    run(parser.parse_args())


if __name__ == "__main__":
    main()

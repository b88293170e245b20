"""Validation of the search drivers: success rate over seeds and relaxations to first hit.

For each system and algorithm, runs ``jcsp.search`` with several seeds, stopping at the
known global minimum (``target``) or at the budget, and prints one table per system:
success rate, median relaxations to the first hit over all seeds (a miss counts as more
than the budget; ">budget" or "-" when half the seeds or more missed), median wall
time, and the cost relative to plain basin hopping (the baseline).

References: LJ minima from the Cambridge Cluster Database (Wales & Doye, J. Phys. Chem.
A 101, 5111 (1997)); Si8 diamond with Stillinger-Weber, -4.33660 eV/atom; Cu4 fcc and
Na4Cl4 rock salt: the relaxed reference structures (built with ASE, relaxed by
``jcsp.relax`` with the same potential).

Rows: ``basin`` is plain basin hopping (Wales & Doye; every atom displaced), the
baseline; ``basin-surface`` is basin hopping with surface moves of the highest-energy
atoms; then random search, GA, PSO, minima hopping and simulated annealing. Cluster
starts have random point-group symmetry (the default of ``jcsp.search``);
``--no-symmetry`` uses plain random points instead. A markdown summary ends the output.

Not run in CI (slow). Examples:
  python experiments/search_validation.py --quick          # a few minutes
  python experiments/search_validation.py --quick --record experiments/results/search_quick.json
  python experiments/search_validation.py --systems LJ13 LJ19 LJ26 LJ31 LJ38 --seeds 5
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from records import write_record  # noqa: E402

import jcsp  # noqa: E402
from jcsp.potentials import EAM, BuckinghamCoulomb, LennardJones, StillingerWeber  # noqa: E402

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


#: row name -> (algorithm, driver options, extra search keywords)
VARIANTS = {
    "basin": ("basin", {}, {}),                                   # the baseline
    "basin-surface": ("basin", {"move": "surface"}, {}),
    "random": ("random", {}, {}),
    "ga": ("ga", {}, {}),
    "pso": ("pso", {}, {}),
    "minima": ("minima", {}, {}),
    "anneal": ("anneal", {}, {}),
}


def run(args) -> dict:
    """Runs every (system, variant, seed); prints a table per system as it goes and
    returns {system: {variant: [relaxations to first hit or None per seed]}}."""
    table = systems()
    summary: dict = {}
    walls = args.walls = {}
    for name in args.systems:
        composition, potential, kwargs, target = table[name]
        kwargs = dict(kwargs)
        cluster = kwargs.get("cluster", False)
        if cluster and args.no_symmetry:
            kwargs["cluster_symmetry"] = False
        budget = args.budget if cluster else args.crystal_budget
        print(f"\n{name}: target {target:.6f} eV/atom, budget {budget}, "
              f"seeds {args.seeds}, population {args.population}")
        print(f"{'algorithm':>13}  {'success':>7}  {'median hit':>10}  {'median s':>8}  "
              f"{'vs basin':>8}  hits")
        baseline = None
        summary[name] = {}
        for variant in args.algorithms:
            algorithm, options, extra = VARIANTS[variant]
            hits, times = [], []
            for seed in range(args.seeds):
                start = time.perf_counter()
                res = jcsp.search(composition, potential, algorithm=algorithm,
                                  budget=budget, seed=seed, target=target,
                                  population=args.population, options=options,
                                  **kwargs, **extra)
                times.append(time.perf_counter() - start)
                hits.append(res.first_hit(target, tol=args.tol))
                if args.verbose:
                    print(f"    {variant} seed {seed}: hit {hits[-1]}, best "
                          f"{res.best.info['enthalpy'] / len(res.best):.6f} eV/atom, "
                          f"{times[-1]:.0f} s", flush=True)
            summary[name][variant] = hits
            walls.setdefault(name, {})[variant] = times
            found = [h for h in hits if h is not None]
            median = median_hit(hits)
            if variant == "basin":
                baseline = median
            ratio = (f"{median / baseline:8.2f}" if median and baseline else f"{'-':>8}")
            print(f"{variant:>13}  {len(found):>3}/{args.seeds:<3}  "
                  f"{median if median is not None else f'>{budget}':>10}  "
                  f"{statistics.median(times):8.1f}  {ratio}  {hits}", flush=True)
    return summary


def median_hit(hits) -> float | None:
    """Median relaxations to the first hit over all seeds, a miss counting as more than
    the budget; None when at least half the seeds missed."""
    value = statistics.median([math.inf if h is None else h for h in hits])
    return None if math.isinf(value) else value


def markdown(summary: dict, seeds: int) -> str:
    """The summary as a markdown table: success over seeds and median relaxations to
    the first hit over all seeds (a miss counts as more than the budget: ">B" when at
    least half missed), systems as rows, algorithms as columns (basin first)."""
    variants = list(next(iter(summary.values())))
    head = ["system"] + [v + (" (baseline)" if v == "basin" else "") for v in variants]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in summary.items():
        cells = [name]
        for v in variants:
            found = [h for h in rows[v] if h is not None]
            med = median_hit(rows[v])
            cells.append(f"{len(found)}/{seeds}, " + (f"{med:g}" if med is not None else "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["LJ13", "LJ19", "LJ26", "LJ31",
                                                         "LJ38", "Si8", "Cu4", "Na4Cl4"])
    parser.add_argument("--algorithms", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2000,
                        help="relaxations per cluster search")
    parser.add_argument("--crystal-budget", type=int, default=400,
                        help="relaxations per crystal search")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="eV/atom tolerance of a hit")
    parser.add_argument("--no-symmetry", action="store_true",
                        help="plain random cluster starts (cluster_symmetry=False)")
    parser.add_argument("--verbose", action="store_true", help="a line per seed")
    parser.add_argument("--record", default=None, metavar="PATH",
                        help="write the settings, hits per seed, wall times and the "
                             "markdown table to this JSON record (experiments/records.py)")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: LJ13, LJ19 and Si8, 2 seeds, budgets 96/32")
    args = parser.parse_args()
    if args.quick:
        args.systems, args.seeds, args.budget, args.crystal_budget = (
            ["LJ13", "LJ19", "Si8"], 2, 96, 32)
    summary = run(args)
    table = markdown(summary, args.seeds)
    print("\n" + table)
    if args.record:
        write_record(args.record, settings={
            "systems": args.systems, "algorithms": args.algorithms, "seeds": args.seeds,
            "cluster_budget": args.budget, "crystal_budget": args.crystal_budget,
            "population": args.population, "tol_eV_per_atom": args.tol,
            "cluster_symmetry": not args.no_symmetry, "dtype": "float64"},
            results={"first_hit": summary, "wall_s": args.walls, "markdown": table})


if __name__ == "__main__":
    main()

"""Validation of the search drivers: success rate over seeds and relaxations to first hit.

For each system and algorithm, runs ``jcsp.search`` with several seeds, stopping at the
known global minimum (``target``) or at the budget, and prints one table per system:
success rate, median relaxations to the first hit over all seeds (a miss counts as more
than the budget; ">budget" or "-" when half the seeds or more missed), median wall
time, and the cost relative to the baseline: textbook single-walker basin hopping
(``scipy.optimize.basinhopping`` at T = 0.8 epsilon from plain random starts, written
independently of jcsp in ``experiments/baseline_bh.py``), run on the same clusters, seeds
and budget as the row ``bh-scipy``.

References: LJ minima from the Cambridge Cluster Database (Wales & Doye, J. Phys. Chem.
A 101, 5111 (1997); the table and its sources are in ``baseline_bh.py``); Si8 diamond with Stillinger-Weber, -4.33660 eV/atom; Cu4 fcc and
Na4Cl4 rock salt: the relaxed reference structures (built with ASE, relaxed by
``jcsp.relax`` with the same potential).

Rows: ``bh-scipy`` the baseline (clusters only; its starts are always plain random);
``basin`` jcsp's basin hopping with its defaults (mixed displacement and surface moves,
walkers restarted from the best minima); ``basin-all`` the same with displacements only;
then random search, GA, PSO, minima hopping and simulated annealing. Cluster starts of
the jcsp drivers have random point-group symmetry (the default of ``jcsp.search``);
``--no-symmetry`` uses plain random points instead (``cluster_symmetry=None``). A
markdown summary ends the output; ``--record`` rewrites its record after every system,
so a run cut short keeps the systems it finished.

Not run in CI (slow). Examples:
  python experiments/search_validation.py --quick          # a few minutes
  python experiments/search_validation.py --quick --record experiments/results/search_quick.json
  python experiments/search_validation.py --systems LJ13 LJ19 LJ26 LJ31 LJ38 --seeds 5
  python experiments/search_validation.py --systems LJ19 LJ26 LJ31 LJ38 --seeds 3 \
      --budget 1500 --no-symmetry --record experiments/results/search_validation_plain.json
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
from baseline_bh import CCD_MINIMA  # noqa: E402
from baseline_bh import first_hit as baseline_first_hit  # noqa: E402
from records import write_record  # noqa: E402

import jcsp  # noqa: E402
from jcsp.potentials import EAM, BuckinghamCoulomb, LennardJones, StillingerWeber  # noqa: E402

POTENTIALS = Path("/usr/share/lammps/potentials")
#: LJ sizes offered (``--systems LJ19 ...``): every CCD size from 13 to 60.
LJ_MINIMA = CCD_MINIMA


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
    "bh-scipy": (None, {}, {}),                   # the baseline (clusters only)
    "basin": ("basin", {}, {}),
    "basin-all": ("basin", {"move": "all"}, {}),  # displacements only
    "basin-mixed": ("basin", {"move": "mixed"}, {}),  # with surface moves (crystals too)
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
            kwargs["cluster_symmetry"] = None
        budget = args.budget if cluster else args.crystal_budget
        print(f"\n{name}: target {target:.6f} eV/atom, budget {budget}, "
              f"seeds {args.seeds}, population {args.population}")
        print(f"{'algorithm':>13}  {'success':>7}  {'median hit':>10}  {'median s':>8}  "
              f"{'vs bh-scipy':>11}  hits")
        baseline = None
        summary[name] = {}
        for variant in args.algorithms:
            algorithm, options, extra = VARIANTS[variant]
            if algorithm is None and not (cluster and composition.startswith("LJ")):
                continue  # the scipy baseline knows Lennard-Jones clusters only
            hits, times = [], []
            for seed in range(args.seeds):
                start = time.perf_counter()
                if algorithm is None:
                    hit, energy = baseline_first_hit(int(composition[2:]), seed, budget,
                                                     tol=args.tol)
                    best = energy / int(composition[2:])
                else:
                    res = jcsp.search(composition, potential, algorithm=algorithm,
                                      budget=budget, seed=seed, target=target,
                                      population=args.population, options=options,
                                      **kwargs, **extra)
                    hit = res.first_hit(target, tol=args.tol)
                    best = res.best.info["enthalpy"] / len(res.best)
                times.append(time.perf_counter() - start)
                hits.append(hit)
                if args.verbose:
                    print(f"    {variant} seed {seed}: hit {hit}, best {best:.6f} eV/atom, "
                          f"{times[-1]:.0f} s", flush=True)
            summary[name][variant] = hits
            walls.setdefault(name, {})[variant] = [round(t, 1) for t in times]
            found = [h for h in hits if h is not None]
            median = median_hit(hits)
            if algorithm is None:
                baseline = median
            ratio = (f"{median / baseline:11.2f}" if median and baseline else f"{'-':>11}")
            print(f"{variant:>13}  {len(found):>3}/{args.seeds:<3}  "
                  f"{median if median is not None else f'>{budget}':>10}  "
                  f"{statistics.median(times):8.1f}  {ratio}  {hits}", flush=True)
        if args.record:
            save(args, summary)
    return summary


def start_hits(args) -> dict:
    """For each cluster system: how many of ``args.starts`` random starts (symmetric
    unless ``--no-symmetry``, as a search draws them, seed 7) relax straight into the
    global minimum, by generating point group."""
    import collections

    from jcsp.search import generate

    out = {}
    for name in args.systems:
        composition, potential, kwargs, target = systems()[name]
        if not kwargs.get("cluster"):
            continue
        counts = {"LJ": int(composition[2:])}
        starts = generate.random_clusters(counts, args.starts, seed=7, jitter=0.03,
                                          symmetry=None if args.no_symmetry else True)
        relaxed = jcsp.relax(starts, potential, fmax=0.01, max_steps=2000)
        hits, drawn = collections.Counter(), collections.Counter()
        for start, atoms in zip(starts, relaxed):
            group = start.info.get("generator_pointgroup", "C1")
            drawn[group] += 1
            hits[group] += atoms.info["energy"] / len(atoms) <= target + args.tol
        out[name] = {"hits": sum(hits.values()), "starts": args.starts,
                     "hits_by_group": {g: k for g, k in hits.items() if k},
                     "drawn_by_group": dict(drawn)}
        print(f"{name}: {out[name]['hits']} of {args.starts} starts relax into the minimum "
              f"{out[name]['hits_by_group']}", flush=True)
    return out


def median_hit(hits) -> float | None:
    """Median relaxations to the first hit over all seeds, a miss counting as more than
    the budget; None when at least half the seeds missed."""
    value = statistics.median([math.inf if h is None else h for h in hits])
    return None if math.isinf(value) else value


def markdown(summary: dict, seeds: int) -> str:
    """The summary as a markdown table: success over seeds and median relaxations to
    the first hit over all seeds (a miss counts as more than the budget: ">B" when at
    least half missed), systems as rows, algorithms as columns (the baseline first)."""
    variants = list(dict.fromkeys(v for rows in summary.values() for v in rows))
    head = ["system"] + [v + (" (baseline)" if v == "bh-scipy" else "") for v in variants]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in summary.items():
        cells = [name]
        for v in variants:
            if v not in rows:
                cells.append("")
                continue
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
                        help="plain random cluster starts (cluster_symmetry=None)")
    parser.add_argument("--verbose", action="store_true", help="a line per seed")
    parser.add_argument("--record", default=None, metavar="PATH",
                        help="write the settings, hits per seed, wall times and the "
                             "markdown table to this JSON record (experiments/records.py)")
    parser.add_argument("--starts", type=int, default=0, metavar="M",
                        help="instead of searching: relax M random starts of each cluster "
                             "and count those that relax straight into the minimum")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: LJ13, LJ19 and Si8, 2 seeds, budgets 96/32")
    args = parser.parse_args()
    if args.quick:
        args.systems, args.seeds, args.budget, args.crystal_budget = (
            ["LJ13", "LJ19", "Si8"], 2, 96, 32)
    if args.starts:
        found = start_hits(args)
        if args.record:
            write_record(args.record, settings={
                "systems": args.systems, "starts": args.starts, "seed": 7,
                "cluster_symmetry": not args.no_symmetry, "fmax": 0.01,
                "tol_eV_per_atom": args.tol, "dtype": "float64"}, results=found)
        return
    summary = run(args)
    print("\n" + markdown(summary, args.seeds))
    if args.record:
        save(args, summary)


def save(args, summary: dict) -> None:
    """Write the record of the systems done so far."""
    write_record(args.record, settings={
        "systems": args.systems, "systems_done": list(summary), "algorithms": args.algorithms,
        "seeds": list(range(args.seeds)), "cluster_budget": args.budget,
        "crystal_budget": args.crystal_budget, "population": args.population,
        "tol_eV_per_atom": args.tol, "cluster_symmetry": not args.no_symmetry,
        "dtype": "float64", "machine_shared": "2 cores shared with other jobs: wall times "
        "are indicative only"},
        results={"first_hit": summary, "wall_s": args.walls,
                 "markdown": markdown(summary, args.seeds)})


if __name__ == "__main__":
    main()

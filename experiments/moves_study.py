"""Do the new moves help? GA (and PSO) on Lennard-Jones clusters with and without them.

For each cluster size, variant and seed, runs ``jcsp.search`` from plain random starts
(``cluster_symmetry=None``: no point-group starts, so the moves have to find the
symmetry themselves), stopping at the Cambridge Cluster Database minimum (``target``) or
at the budget, and records the relaxations to the first hit (None: missed) and the wall
time. Variants (``--variants``):

- ``ga``: the genetic algorithm with its default operators (Deaven-Ho cut-and-splice,
  rattle, surface mutation, random);
- ``ga+sym``: the same with ``moves={"symmetrize": 0.15}`` (GMIN-style symmetrisation
  of the parent in 15 % of the mutations... of all children made from one parent);
- ``ga+soft``: ``moves={"softmode": 0.15}`` (USPEX soft-mode mutation);
- ``ga+both``: ``moves={"symmetrize": 0.1, "softmode": 0.1}``;
- ``ga-opsym``: GA operator weight ``symmetrize=0.15`` (a GA operator rather than a
  replacement of mutations);
- ``pso`` and ``pso+sym``: the particle swarm without and with ``symmetrize`` 0.15.

Crystals (``--crystals``): the GA on binary Stillinger-Weber semiconductors of 8 and 16 atoms
(Ga4N4, Ga8N8: GaN.sw of Bere & Serra; Cd4Te4, Cd8Te8: CdTe.sw of Zhou et al.;
LAMMPS's files), whose
ground states are the tetrahedral wurtzite/zincblende (degenerate for a
Stillinger-Weber potential: both have the same nearest-neighbour shell), target the
relaxed zincblende of ASE's ``bulk`` (relaxed here with ``jcsp.relax``, fmax 1e-4), with
variants ``ga`` (wyckoff 0), ``ga-wyck`` (``options={"wyckoff": 0.5}``), ``ga-wyck1``
(``wyckoff`` 1) and ``ga+swap`` (``moves={"swap_orbits": 0.1}``).

Reference energies: ``experiments/baseline_bh.py`` (CCD, Wales & Doye 1997). The
machine is shared; wall times are indicative only. Not run in CI.

Examples:
  python experiments/moves_study.py --sizes 26 31 38 --seeds 0 1 2 --budget 1500 \\
      --record experiments/results/moves_lj.json
  python experiments/moves_study.py --crystals Ga8N8 --seeds 0 1 2 --budget 240 \
      --record experiments/results/moves_crystals.json
  python experiments/moves_study.py --sizes 13 --seeds 0 --budget 100 --variants ga ga+sym
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baseline_bh import CCD_MINIMA  # noqa: E402
from records import write_record  # noqa: E402

import jcsp  # noqa: E402
from jcsp.potentials import LennardJones, StillingerWeber  # noqa: E402

POTENTIALS = "/usr/share/lammps/potentials"
#: composition -> (potential file, element pair, zincblende lattice constant guess, Å)
CRYSTALS = {"Ga4N4": ("GaN.sw", "GaN", 4.5), "Ga8N8": ("GaN.sw", "GaN", 4.5),
            "Cd4Te4": ("CdTe.sw", "CdTe", 6.48), "Cd8Te8": ("CdTe.sw", "CdTe", 6.48)}
CRYSTAL_VARIANTS = {
    "ga": ({}, {}),
    "ga-wyck": ({}, {"wyckoff": 0.5}),
    "ga-wyck1": ({}, {"wyckoff": 1.0}),
    "ga+swap": ({"swap_orbits": 0.1}, {}),
}

VARIANTS = {
    "ga": ("ga", {}, {}),
    "ga+sym": ("ga", {"symmetrize": 0.15}, {}),
    "ga+soft": ("ga", {"softmode": 0.15}, {}),
    "ga+both": ("ga", {"symmetrize": 0.1, "softmode": 0.1}, {}),
    "ga-opsym": ("ga", {}, {"symmetrize": 0.15}),
    "pso": ("pso", {}, {}),
    "pso+sym": ("pso", {"symmetrize": 0.15}, {}),
}


def run_one(size: int, variant: str, seed: int, budget: int) -> dict:
    algorithm, moves, options = VARIANTS[variant]
    target = CCD_MINIMA[size] / size
    lj = LennardJones(1.0, 1.0, None)
    start = time.perf_counter()
    res = jcsp.search(f"LJ{size}", lj, algorithm=algorithm, budget=budget, cluster=True,
                      cluster_symmetry=None, seed=seed, target=target, moves=moves,
                      options=options)
    wall = time.perf_counter() - start
    hit = res.first_hit(target, tol=1e-4)
    best = res.best.info["energy"] if res.best is not None else float("nan")
    return {"size": size, "variant": variant, "seed": seed, "first_hit": hit,
            "relaxations": res.n_relaxations, "best_energy": best,
            "failed": res.n_failed, "wall_s": round(wall, 1)}


def run_crystal(name: str, variant: str, seed: int, budget: int) -> dict:
    from ase.build import bulk

    path, formula, a = CRYSTALS[name]
    potential = StillingerWeber.from_lammps(f"{POTENTIALS}/{path}")
    ref = jcsp.relax([bulk(formula, "zincblende", a=a)], potential, fmax=1e-4)[0]
    target = ref.info["enthalpy"] / len(ref)
    moves, options = CRYSTAL_VARIANTS[variant]
    start = time.perf_counter()
    res = jcsp.search(name, potential, algorithm="ga", budget=budget, seed=seed,
                      target=target + 5e-5, moves=moves, options=options)
    wall = time.perf_counter() - start
    best = res.best.info["enthalpy"] / len(res.best) if res.best is not None else float("nan")
    return {"size": name, "variant": variant, "seed": seed,
            "first_hit": res.first_hit(target, tol=1e-4), "target": target,
            "relaxations": res.n_relaxations, "best_enthalpy_per_atom": best,
            "failed": res.n_failed, "wall_s": round(wall, 1)}


def summary(rows: list[dict], budget: int) -> dict:
    out = {}
    for size in sorted({r["size"] for r in rows}, key=str):
        for variant in list(VARIANTS) + [v for v in CRYSTAL_VARIANTS if v not in VARIANTS]:
            mine = [r for r in rows if r["size"] == size and r["variant"] == variant]
            if not mine:
                continue
            hits = [r["first_hit"] for r in mine if r["first_hit"] is not None]
            cost = sorted(r["first_hit"] if r["first_hit"] is not None else budget + 1
                          for r in mine)
            label = f"LJ{size}" if isinstance(size, int) else size
            out[f"{label} {variant}"] = {
                "success": f"{len(hits)}/{len(mine)}",
                "median_first_hit": statistics.median(cost) if 2 * len(hits) > len(mine)
                else None,
                "first_hits": [r["first_hit"] for r in mine],
                "median_wall_s": statistics.median(r["wall_s"] for r in mine)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[26, 31, 38])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=1500)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--crystals", nargs="+", default=None, choices=list(CRYSTALS),
                        help="run the crystal GA variants on these instead of clusters")
    parser.add_argument("--crystal-variants", nargs="+", default=list(CRYSTAL_VARIANTS),
                        choices=list(CRYSTAL_VARIANTS))
    parser.add_argument("--record", default=None)
    args = parser.parse_args(argv)
    rows = []
    if args.crystals:
        args.sizes, args.variants = args.crystals, args.crystal_variants
    for size in args.sizes:
        for variant in args.variants:
            for seed in args.seeds:
                if args.crystals:
                    row = run_crystal(size, variant, seed, args.budget)
                else:
                    row = run_one(size, variant, seed, args.budget)
                rows.append(row)
                print(row, flush=True)
                if args.record:  # after every run, so a time-boxed study keeps its rows
                    _record(args, rows)
    table = summary(rows, args.budget)
    for key, value in table.items():
        print(f"{key:>18}  {value['success']:>5}  median first hit "
              f"{value['median_first_hit']}  hits {value['first_hits']}  "
              f"wall {value['median_wall_s']} s")
    if args.record:
        _record(args, rows)


def _record(args, rows: list[dict]) -> None:
    settings = {**CRYSTAL_VARIANTS, **{k: v[1:] for k, v in VARIANTS.items()}}
    write_record(args.record,
                 settings={"sizes": args.sizes, "seeds": args.seeds, "budget": args.budget,
                           "variants": args.variants, "cluster_symmetry": None,
                           "crystals": args.crystals,
                           "variant_settings": {k: settings[k] for k in args.variants}},
                 results={"summary": summary(rows, args.budget), "runs": rows},
                 notes="2 shared CPU cores (about 6 agents, load ~9); wall times indicative only")


if __name__ == "__main__":
    main()

"""Active learning against the direct search: oracle calls to the oracle's ground state.

For each system the oracle is a classical potential behind an ASE calculator that counts
its calls (so the numbers are exact and cheap to check), and the ground state is the
lowest of the known phases relaxed with it. Per seed:

- **direct**: ``jcsp.search`` with the oracle's own potential (random symmetric
  structures, FIRE), stopped at the ground state; its cost is every force call of its
  relaxations (steps + 1 per relaxation) up to and including the first relaxation that
  reaches the ground state (within ``--tol`` eV/atom).
- **active**: ``jcsp.search(..., oracle=calculator, oracle_budget=N)`` with the default
  loop settings; its cost is the oracle calls of the whole run (seed data, labels, the
  final oracle relaxations), a success when its answer's enthalpy per atom, recomputed
  here with the potential, is within ``--tol`` of the ground state. Wall time includes
  training.

The record also holds, per active run, the committee's calibration per round (Spearman
rank correlation of force spread against true force error on the labels each round's
committee asked for, before it was trained on them).

For an expensive oracle given by spec (``c8-gfn1``: tblite GFN1-xTB) only the active
search runs; its answer is checked with the oracle's own forces, and compared with the
known carbon phases relaxed by the oracle.

Usage:
  python experiments/active_learning/compare.py --systems si8-sw tio2x2-ma --seeds 0 1 2 \\
      --record experiments/results/active_learning.json
  python experiments/active_learning/compare.py --systems c8-gfn1 --seeds 0 \\
      --record experiments/results/active_learning_tblite.json
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.spacegroup import crystal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jcsp  # noqa: E402
from jcsp.calculator import JCSPCalculator  # noqa: E402
from jcsp.io import load_potential  # noqa: E402
from jcsp.potentials import BuckinghamCoulomb  # noqa: E402
from jcsp.search import database as dbm  # noqa: E402
from jcsp.units import gpa_to_ev_per_a3  # noqa: E402
from records import write_record  # noqa: E402


class CountingCalculator(JCSPCalculator):
    """The oracle as a user would plug it in: an ASE calculator; counts its calls."""

    def __init__(self, potential):
        super().__init__(potential)
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        self.calls += 1
        if system_changes is None:
            super().calculate(atoms, properties)
        else:
            super().calculate(atoms, properties, system_changes)


def matsui_akaogi() -> BuckinghamCoulomb:
    """TiO2, Matsui & Akaogi (1991), Buckingham + Coulomb (10 Å Ewald real-space cutoff)."""
    return BuckinghamCoulomb(
        {("Ti", "Ti"): (31120.1, 0.1540, 5.25), ("O", "O"): (11782.7, 0.2340, 30.22),
         ("Ti", "O"): (16957.5, 0.1940, 12.59)}, {"Ti": 2.196, "O": -1.098}, cutoff=10.0)


def si_phases() -> dict:
    return {"diamond": bulk("Si", "diamond", a=5.431, cubic=True)}


def tio2_phases() -> dict:
    rutile = crystal(["Ti", "O"], basis=[(0, 0, 0), (0.3048, 0.3048, 0)], spacegroup=136,
                     cellpar=[4.594, 4.594, 2.959, 90, 90, 90])
    anatase = crystal(["Ti", "O"], basis=[(0, 0, 0), (0, 0, 0.2081)], spacegroup=141,
                      cellpar=[3.785, 3.785, 9.514, 90, 90, 90], primitive_cell=True)
    return {"rutile": rutile, "anatase": anatase}


def carbon_phases() -> dict:
    diamond = bulk("C", "diamond", a=3.567, cubic=True)
    graphite = crystal(["C", "C"], basis=[(0, 0, 0.25), (1 / 3, 2 / 3, 0.25)], spacegroup=194,
                       cellpar=[2.46, 2.46, 6.70, 90, 90, 120]).repeat((1, 1, 2))
    lonsdaleite = crystal("C", basis=[(1 / 3, 2 / 3, 0.0625)], spacegroup=194,
                          cellpar=[2.51, 2.51, 4.12, 90, 90, 120]).repeat((1, 1, 2))
    return {"diamond": diamond, "graphite": graphite, "lonsdaleite": lonsdaleite}


#: Systems whose oracle is an expensive method given by spec (no direct search here: a
#: direct search with it would take hours on this CPU): name -> (composition, pressure,
#: oracle spec, known phases factory).
SPEC_SYSTEMS = {"c8-gfn1": ("C8", 0.0, "tblite:GFN1-xTB", carbon_phases)}

def cu_phases() -> dict:
    return {"fcc": bulk("Cu", "fcc", a=3.615, cubic=True).repeat((2, 1, 1)),
            "hcp": bulk("Cu", "hcp", a=2.556, c=4.174).repeat((2, 2, 1)),
            "bcc": bulk("Cu", "bcc", a=2.87, cubic=True).repeat((2, 2, 1))}


#: name -> (composition, pressure GPa, potential factory, known phases factory)
SYSTEMS = {
    "cu8-eam": ("Cu8", 0.0, lambda: load_potential("/usr/share/lammps/potentials/Cu_u3.eam"),
                cu_phases),
    "si8-sw": ("Si8", 0.0, lambda: load_potential("sw-si"), si_phases),
    "tio2x2-ma": ("Ti2O4", 0.0, matsui_akaogi, tio2_phases),
}


def reference(potential, phases: dict, pressure: float) -> tuple[float, dict]:
    relaxed = jcsp.relax(list(phases.values()), potential, fmax=1e-4, pressure=pressure,
                         max_steps=5000)
    per_atom = {n: a.info["enthalpy"] / len(a) for n, a in zip(phases, relaxed)}
    return min(per_atom.values()), per_atom


def enthalpy_per_atom(atoms, potential, pressure: float) -> float:
    """Recomputed here, independently of the search's own numbers."""
    probe = atoms.copy()
    probe.calc = JCSPCalculator(potential)
    energy = probe.get_potential_energy()
    return (energy + gpa_to_ev_per_a3(pressure) * probe.get_volume()) / len(probe)


def direct(composition, pressure, potential, seed, target, tol, budget, folder) -> dict:
    start = time.perf_counter()
    res = jcsp.search(composition, potential, seed=seed, budget=budget, pressure=pressure,
                      target=target + tol, out=folder, n_best=0)
    wall = time.perf_counter() - start
    with dbm.open_run(Path(folder) / "structures.db") as db:
        rows = dbm.read_all(db)
    calls, hit_calls, hit_at = 0, None, None
    for k, atoms in enumerate(rows):
        if atoms.info.get("discarded"):
            continue
        calls += int(atoms.info.get("steps", 0)) + 1
        h = atoms.info.get("enthalpy", math.inf) / len(atoms)
        if hit_calls is None and not atoms.info.get("failed") and h <= target + tol:
            hit_calls, hit_at = calls, k + 1
    run = {"seed": seed, "force_calls_to_hit": hit_calls, "relaxations_to_hit": hit_at,
           "relaxations": res.n_relaxations, "force_calls": calls, "wall_s": round(wall, 1)}
    print(f"  direct seed {seed}: hit after {hit_at} relaxations = {hit_calls} force calls "
          f"({wall:.0f} s)", flush=True)
    return run


def active(composition, pressure, potential, seed, target, tol, oracle_budget, budget,
           folder) -> dict:
    oracle = CountingCalculator(potential)
    start = time.perf_counter()
    res = jcsp.search(composition, oracle=oracle, oracle_budget=oracle_budget, seed=seed,
                      budget=budget, pressure=pressure, out=folder, n_best=3)
    wall = time.perf_counter() - start
    best = res.best
    h = enthalpy_per_atom(best, potential, pressure) if best is not None else math.nan
    run = {"seed": seed, "success": bool(h <= target + tol), "oracle_calls": res.n_oracle_calls,
           "calculator_calls": oracle.calls, "best_eV_per_atom": h,
           "best_spacegroup": best.info.get("spacegroup") if best is not None else None,
           "rounds": len(res.rounds), "relaxations": res.n_relaxations,
           "wall_s": round(wall, 1), "train_s": round(res.train_seconds, 1),
           "forces_spearman_per_round": [r.get("new_forces_spearman") for r in res.rounds],
           "energy_spearman_per_round": [r.get("new_energy_spearman") for r in res.rounds],
           "forces_rmse_over_std_per_round": [r.get("new_forces_rmse_over_std")
                                              for r in res.rounds]}
    print(f"  active seed {seed}: {'hit' if run['success'] else 'MISS'} {h:.5f} eV/atom "
          f"({run['best_spacegroup']}) with {res.n_oracle_calls} oracle calls, "
          f"{len(res.rounds)} rounds, {wall:.0f} s ({res.train_seconds:.0f} s training)",
          flush=True)
    return run


def spec_reference(spec: str, phases: dict, pressure: float) -> tuple[float, dict]:
    """Known phases relaxed by the oracle itself (fmax 1e-3 eV/Å)."""
    from jcsp.oracle import make_oracle, oracle_relax
    per_atom = {}
    with make_oracle(spec) as oracle:
        for name, atoms in phases.items():
            relaxed = oracle_relax(atoms, oracle, fmax=1e-3, pressure=pressure, max_steps=300)
            per_atom[name] = (relaxed.info["enthalpy"] / len(relaxed)
                              if not relaxed.info.get("failed") else math.nan)
    return min(v for v in per_atom.values() if math.isfinite(v)), per_atom


def spec_active(name: str, seed: int, oracle_budget: int, budget: int, tol: float,
                folder) -> dict:
    """An active search with an oracle spec; its answer checked with the oracle's own
    forces (a fresh calculator)."""
    from jcsp.oracle import make_oracle
    composition, pressure, spec, make_phases = SPEC_SYSTEMS[name]
    target, phases = spec_reference(spec, make_phases(), pressure)
    print(f"{name}: known phases {phases}", flush=True)
    start = time.perf_counter()
    res = jcsp.search(composition, oracle=spec, oracle_budget=oracle_budget, seed=seed,
                      budget=budget, pressure=pressure, out=folder, n_best=3)
    wall = time.perf_counter() - start
    best = res.best
    with make_oracle(spec) as oracle:
        label = oracle.compute([best])[0]
    max_force = float(np.linalg.norm(label.forces, axis=1).max())
    h = (label.energy + gpa_to_ev_per_a3(pressure) * best.get_volume()) / len(best)
    run = {"seed": seed, "oracle_calls": res.n_oracle_calls, "best_eV_per_atom": h,
           "best_spacegroup": best.info.get("spacegroup"), "max_force_eV_per_A": max_force,
           "fmax": res.config.fmax, "confirmed": bool(max_force < res.config.fmax),
           "reaches_lowest_known_phase": bool(h <= target + tol),
           "rounds": len(res.rounds), "relaxations": res.n_relaxations,
           "wall_s": round(wall, 1), "train_s": round(res.train_seconds, 1),
           "forces_spearman_per_round": [r.get("new_forces_spearman") for r in res.rounds]}
    print(f"  active seed {seed}: {h:.5f} eV/atom ({run['best_spacegroup']}), max force "
          f"{max_force:.4f} eV/Å, {res.n_oracle_calls} oracle calls, {wall:.0f} s", flush=True)
    return {"composition": composition, "oracle": spec, "pressure_GPa": pressure,
            "lowest_known_eV_per_atom": target, "phases_eV_per_atom": phases, "run": run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS) + list(SPEC_SYSTEMS),
                        default=list(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--oracle-budget", type=int, default=300)
    parser.add_argument("--budget", type=int, default=1000, help="committee relaxations")
    parser.add_argument("--direct-budget", type=int, default=400, help="direct relaxations")
    parser.add_argument("--tol", type=float, default=2e-3, help="eV/atom tolerance of a hit")
    parser.add_argument("--work", default=None, help="folder for the runs (default: temp)")
    parser.add_argument("--record", default=None, metavar="PATH")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="jcsp-al-"))
    results = {}
    for name in args.systems:
        if name in SPEC_SYSTEMS:
            results[name] = [spec_active(name, seed, args.oracle_budget, args.budget, args.tol,
                                         work / f"{name}-active-{seed}") for seed in args.seeds]
            continue
        composition, pressure, make_potential, make_phases = SYSTEMS[name]
        potential = make_potential()
        target, phases = reference(potential, make_phases(), pressure)
        print(f"{name}: ground state {target:.5f} eV/atom {phases}", flush=True)
        runs_d, runs_a = [], []
        for seed in args.seeds:
            runs_d.append(direct(composition, pressure, potential, seed, target, args.tol,
                                 args.direct_budget, work / f"{name}-direct-{seed}"))
            runs_a.append(active(composition, pressure, potential, seed, target, args.tol,
                                 args.oracle_budget, args.budget, work / f"{name}-active-{seed}"))
        ratios = [a["oracle_calls"] / d["force_calls_to_hit"]
                  for a, d in zip(runs_a, runs_d)
                  if a["success"] and d["force_calls_to_hit"]]
        results[name] = {
            "composition": composition, "pressure_GPa": pressure,
            "ground_state_eV_per_atom": target, "phases_eV_per_atom": phases,
            "direct": runs_d, "active": runs_a,
            "active_success": f"{sum(a['success'] for a in runs_a)}/{len(runs_a)}",
            "calls_ratio_active_over_direct": ratios,
            "seeds_within_one_tenth": sum(r <= 0.1 for r in ratios),
        }
        print(f"{name}: active/direct call ratios {[round(r, 3) for r in ratios]}", flush=True)
    if args.record:
        write_record(args.record, settings={
            "systems": args.systems, "seeds": args.seeds, "oracle_budget": args.oracle_budget,
            "budget": args.budget, "direct_budget": args.direct_budget,
            "tol_eV_per_atom": args.tol, "active": "default ActiveConfig",
            "note": "2-core CPU shared with other jobs; wall times are indicative"},
            results=results)


if __name__ == "__main__":
    main()

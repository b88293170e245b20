"""Which ASE optimizer should :func:`jcsp.oracle.oracle_relax` use: oracle calls to converge.

The final step of an active-learning run relaxes its best candidates with the oracle itself,
from geometries that are already good (relaxed with the learned potential). Every force
call is an oracle call, so the optimizer that needs fewer calls from a near-minimum
geometry is the one to use. This script counts the oracle calls (new labels in the
store, the first single point included) of ASE's BFGS and FIRE, both on ASE's
``FrechetCellFilter`` at zero pressure, fmax = 0.01 eV/Å, for two oracles: the shipped
Stillinger-Weber potential on diamond Si8 and tblite GFN1-xTB on diamond C8 (tblite's
Gamma-point Si8 is no near-minimum: its SCF fails or the cell leaves diamond). Each
oracle's own diamond minimum is found first (BFGS to fmax = 1e-3 from a = 5.431 Å or
3.567 Å; not counted); each start is that minimum with the cell scaled by 1.01 and the
atoms rattled by 0.05 Å (Gaussian, one seed per start).

Run:  python experiments/oracle_relax_optimizer.py [--seeds 5] [--oracles sw-si,tblite:GFN1-xTB]
Writes experiments/results/oracle_relax_optimizer.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from ase.build import bulk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from records import RESULTS, write_record  # noqa: E402

from jcsp.oracle import LabelStore, make_oracle, oracle_relax  # noqa: E402

#: Oracle spec -> (element, starting lattice constant in Å).
SYSTEMS = {"sw-si": ("Si", 5.431), "tblite:GFN1-xTB": ("C", 3.567)}


def minimum(oracle, element: str, a: float):
    """The oracle's own diamond minimum (8 atoms, conventional cell)."""
    ideal = bulk(element, "diamond", a=a, cubic=True)
    found = oracle_relax(ideal, oracle, LabelStore(), fmax=1e-3, max_steps=200)
    if not found.info["converged"]:
        raise RuntimeError(f"{oracle.describe()}: no diamond minimum found ({found.info})")
    found.calc = None
    return found


def start(minimum_atoms, seed: int):
    atoms = minimum_atoms.copy()
    atoms.set_cell(atoms.cell[:] * 1.01, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--oracles", default="sw-si,tblite:GFN1-xTB")
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--out", default=os.path.join(RESULTS, "oracle_relax_optimizer.json"))
    args = parser.parse_args()
    results = {}
    for spec in args.oracles.split(","):
        oracle = make_oracle(spec)
        element, a = SYSTEMS[spec]
        ground = minimum(oracle, element, a)
        per = {"system": f"{element}8 diamond", "minimum_a": float(ground.cell.cellpar()[0]),
               "minimum_energy_per_atom": ground.info["oracle_energy"] / len(ground)}
        for name in ("BFGS", "FIRE"):
            runs = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                final = oracle_relax(start(ground, seed), oracle, LabelStore(), fmax=args.fmax,
                                     optimizer=name, max_steps=500)
                info = final.info
                runs.append({"seed": seed, "n_calls": info["n_calls"], "steps": info["steps"],
                             "converged": info["converged"], "error": info.get("error"),
                             "energy_per_atom": info["oracle_energy"] / len(final),
                             "seconds": time.perf_counter() - t0})
                print(spec, name, runs[-1], flush=True)
            calls = [r["n_calls"] for r in runs]
            per[name] = {"runs": runs, "mean_calls": statistics.mean(calls),
                         "max_calls": max(calls),
                         "all_converged": all(r["converged"] for r in runs)}
        per["fewer_calls"] = min(("BFGS", "FIRE"), key=lambda n: per[n]["mean_calls"])
        results[spec] = per
    write_record(args.out, settings={"structure": "the oracle's diamond minimum (Si8 for "
                                     "sw-si, C8 for tblite), cell x 1.01, rattle 0.05 A "
                                     "(seed per start)",
                                     "seeds": args.seeds, "fmax": args.fmax, "pressure_gpa": 0.0,
                                     "filter": "ase FrechetCellFilter", "max_steps": 500},
                 results=results,
                 notes="n_calls counts every oracle single point of the relaxation (the "
                       "first one included). Machine shared with other jobs: seconds are "
                       "indicative only; the call counts do not depend on it.")


if __name__ == "__main__":
    main()

"""Speed of a trained equivariant potential: batched jcsp against one-at-a-time ASE.

1. One energy + forces + stress call on a batch of ``--batch`` structures of 32 atoms
   (rattled, strained diamond silicon), jitted and vmapped, against the same model
   called one structure at a time through ``jcsp.JCSPCalculator`` in ASE (compiled once,
   reused): structures per second and the ratio.
2. A full relaxation (positions + cell, FIRE, fmax ``--fmax``) of the batch by
   ``jcsp.relax`` against ASE's FIRE + FrechetCellFilter with the same calculator, one
   structure at a time, on a sample of ``--ase-sample`` structures (time scaled).

Compilation is timed separately (first call) and counted.

    python experiments/bench_ml.py                       # the shipped Si model
    python experiments/bench_ml.py --model runs/mlearn/Si --batch 64
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

import jcsp  # noqa: E402
from jcsp import neighbors as nl  # noqa: E402
from jcsp.derivatives import evaluate_population  # noqa: E402
from jcsp.io import SHIPPED_MODELS  # noqa: E402
from jcsp.structures.convert import from_atoms  # noqa: E402


def population(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 2, 1))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.02 * rng.normal(size=(3, 3))),
                       scale_atoms=True)
        atoms.positions += 0.08 * rng.normal(size=atoms.positions.shape)
        out.append(atoms)
    return out


def bench_calls(pot, structures, repeats, dtype):
    pop = from_atoms(structures)
    pop = pop.replace(frac=pop.frac.astype(dtype), cell=pop.cell.astype(dtype))
    spec = nl.spec_for(pot.cutoff, pop.frac, pop.cell, pop.mask, pop.pbc)
    t0 = time.perf_counter()
    jax.block_until_ready(evaluate_population(pot, pot.params, pop, spec))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(evaluate_population(pot, pot.params, pop, spec))
    batched = (time.perf_counter() - t0) / repeats
    calc = jcsp.JCSPCalculator(pot)
    first = structures[0].copy()
    first.calc = calc
    t0 = time.perf_counter()
    first.get_forces()
    ase_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    one_by_one = time.perf_counter() - t0
    return {"structures": len(structures), "atoms": int(pop.mask.sum()),
            "batched_call_s": batched, "batched_compile_s": compile_s,
            "ase_one_at_a_time_s": one_by_one, "ase_compile_s": ase_compile,
            "speedup": one_by_one / batched,
            "batched_atoms_per_s": float(pop.mask.sum()) / batched}


def bench_relax(pot, structures, fmax, sample, dtype):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    opts = dict(fmax=fmax, max_steps=1000, progress=False, dtype=dtype)
    t0 = time.perf_counter()
    jcsp.relax(structures, pot, **opts)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jcsp.relax(structures, pot, **opts)
    again = time.perf_counter() - t0
    calc = jcsp.JCSPCalculator(pot)
    t0 = time.perf_counter()
    steps = []
    for atoms in structures[:sample]:
        atoms = atoms.copy()
        atoms.calc = calc
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        opt.run(fmax=fmax, steps=1000)
        steps.append(opt.nsteps)
    ase_s = (time.perf_counter() - t0) * len(structures) / sample
    return {"jcsp_s": again, "jcsp_with_compile_s": first,
            "jcsp_converged": float(np.mean([a.info["converged"] for a in out])),
            "jcsp_mean_steps": float(np.mean([a.info["steps"] for a in out])),
            "ase_s_scaled": ase_s, "ase_mean_steps": float(np.mean(steps)),
            "speedup": ase_s / again, "speedup_with_compile": ase_s / first}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SHIPPED_MODELS["ml-si"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--ase-sample", type=int, default=4)
    parser.add_argument("--no-relax", action="store_true")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="precision of the model, in both paths")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype).type
    pot = jcsp.io.load_potential(args.model)
    print(f"model {args.model}: {pot!r}, {args.dtype} on "
          f"{jax.devices()[0].platform}")
    structures = population(args.batch)
    calls = bench_calls(pot.astype(dtype), structures, args.repeats, dtype)
    print(f"energy+forces+stress, {calls['structures']} x 32 atoms: batched "
          f"{1e3 * calls['batched_call_s']:.1f} ms per call (compile "
          f"{calls['batched_compile_s']:.1f} s), ASE one at a time "
          f"{1e3 * calls['ase_one_at_a_time_s']:.1f} ms -> {calls['speedup']:.1f}x")
    result = {"device": str(jax.devices()[0]), "dtype": args.dtype, "calls": calls}
    if not args.no_relax:
        rel = bench_relax(pot.astype(dtype), structures, args.fmax, args.ase_sample, dtype)
        print(f"relaxation of {args.batch} structures (fmax {args.fmax}): jcsp "
              f"{rel['jcsp_s']:.1f} s ({rel['jcsp_with_compile_s']:.1f} s with compilation, "
              f"{rel['jcsp_converged']:.0%} converged, {rel['jcsp_mean_steps']:.0f} steps), "
              f"ASE one at a time {rel['ase_s_scaled']:.1f} s (scaled from "
              f"{args.ase_sample}) -> {rel['speedup']:.1f}x "
              f"({rel['speedup_with_compile']:.1f}x with compilation)")
        result["relax"] = rel
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: strong and weak scaling of a relaxation population over devices.

``jcsp.relax`` splits the slots of a batch over every local device (:mod:`jcsp.sharding`).
This script relaxes Stillinger-Weber silicon populations (random 8-atom P1 cells,
positions and cell, FIRE) on 1, 2, 4 ... devices, one subprocess per device count,
since XLA reads the device count when it starts:

- **strong scaling**: the same ``--population`` structures in one batch, split over
  ``n`` devices (ideal: time / n);
- **weak scaling**: ``--per-device`` structures per device (the same structures on each
  device, so every device has the same work; ideal: constant time).

Each worker compiles with one untimed run, then times ``--repeats`` runs (median
reported) and saves its relaxed positions; the parent checks they equal the one-device
run (largest difference in Å) and writes ``experiments/results/bench_scaling.json``.

On a CPU the devices are forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=n``) sharing the process's cores:
the numbers measure the sharded code path (its overhead, and whatever parallelism the
cores allow), not the scaling of real accelerators. ``--cores`` pins the workers
(``taskset``); the record states the machine.

Run:  python experiments/bench_scaling.py                  (1, 2, 4 devices; ~5 min)
      python experiments/bench_scaling.py --devices 1 2 --population 16 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
SW_FILE = "/usr/share/lammps/potentials/Si.sw"


def population(n: int, seed: int):
    from jcsp.search.generate import random_crystals
    rng = np.random.default_rng(seed)
    return [random_crystals({"Si": 8}, 1, seed=rng, groups=[1], volume=20.0 * 8)[0]
            for _ in range(n)]


def worker(args) -> None:
    """One device count: time the strong and weak runs, save the positions."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jcsp
    from jcsp.potentials import StillingerWeber
    sw = StillingerWeber.from_lammps(SW_FILE if os.path.exists(SW_FILE)
                                     else os.path.join(os.path.dirname(jcsp.__file__),
                                                       "data", "Si.sw"))
    n = jax.local_device_count()
    assert n == args.worker, (n, args.worker)
    out = {"devices": n, "device": str(jax.devices()[0])}

    def run(structures, batch):
        jcsp.relax(structures, sw, fmax=args.fmax, max_steps=args.max_steps,
                   batch_size=batch)  # compiles
        times, relaxed = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            relaxed = jcsp.relax(structures, sw, fmax=args.fmax, max_steps=args.max_steps,
                                 batch_size=batch)
            times.append(time.perf_counter() - start)
        steps = int(sum(a.info["steps"] for a in relaxed))
        return times, steps, np.stack([a.positions for a in relaxed])

    strong = population(args.population, seed=0)
    times, steps, pos = run(strong, args.population)
    out["strong"] = {"times_s": times, "steps": steps, "structures": len(strong)}
    base = population(args.per_device, seed=1)
    times, steps, pos_weak = run(base * n, args.per_device * n)
    out["weak"] = {"times_s": times, "steps": steps, "structures": len(base) * n}
    np.savez(args.save, strong=pos, weak=pos_weak[: args.per_device])
    with open(args.save + ".json", "w") as fh:
        json.dump(out, fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--population", type=int, default=32,
                        help="structures of the strong-scaling run (one batch)")
    parser.add_argument("--per-device", type=int, default=8,
                        help="structures per device of the weak-scaling run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fmax", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--cores", default="1",
                        help="CPU cores the workers are pinned to (taskset list), '' for none")
    parser.add_argument("--quick", action="store_true", help="one repeat, 150 steps")
    parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results",
                                                      "bench_scaling.json"))
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.max_steps = 1, 150
    if args.worker:
        worker(args)
        return
    for n in args.devices:
        if args.population % n:
            parser.error(f"--population {args.population} is not a multiple of {n} devices")
    runs, positions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.devices:
            path = [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]
            env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(path),
                       XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
            save = os.path.join(tmp, f"n{n}")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--save", save,
                   "--population", str(args.population), "--per-device", str(args.per_device),
                   "--repeats", str(args.repeats), "--fmax", str(args.fmax),
                   "--max-steps", str(args.max_steps)]
            if args.cores:
                cmd = ["taskset", "-c", args.cores] + cmd
            print(f"{n} device(s) ...", flush=True)
            subprocess.run(cmd, env=env, check=True)
            with open(save + ".json") as fh:
                runs[n] = json.load(fh)
            positions[n] = dict(np.load(save + ".npz"))
    first = args.devices[0]
    results = {}
    for n in args.devices:
        strong, weak = runs[n]["strong"], runs[n]["weak"]
        t_strong, t_weak = float(np.median(strong["times_s"])), float(np.median(weak["times_s"]))
        base_strong = float(np.median(runs[first]["strong"]["times_s"]))
        base_weak = float(np.median(runs[first]["weak"]["times_s"]))
        results[str(n)] = {
            "strong_time_s": t_strong, "strong_times_s": strong["times_s"],
            "strong_speedup": base_strong / t_strong,
            "strong_structures": strong["structures"], "strong_steps": strong["steps"],
            "weak_time_s": t_weak, "weak_times_s": weak["times_s"],
            "weak_efficiency": base_weak / t_weak,
            "weak_structures": weak["structures"], "weak_steps": weak["steps"],
            "max_position_difference_vs_1_device_A": float(max(
                np.abs(positions[n][k] - positions[first][k]).max() for k in ("strong", "weak"))),
        }
        print(f"{n} device(s): strong {t_strong:.2f} s (speedup {base_strong / t_strong:.2f}), "
              f"weak {t_weak:.2f} s for {weak['structures']} (efficiency "
              f"{base_weak / t_weak:.2f}), max |dx| vs {first} device "
              f"{results[str(n)]['max_position_difference_vs_1_device_A']:.1e} Å")
    from records import write_record
    cores = args.cores or ",".join(map(str, sorted(os.sched_getaffinity(0))))
    write_record(args.out, settings={
        "potential": "Stillinger-Weber Si (LAMMPS Si.sw)", "structures": "random P1 Si8 cells, "
        "volume 20 A^3/atom (jcsp.search.generate.random_crystals)",
        "optimizer": "fire", "fmax_eV_per_A": args.fmax, "max_steps": args.max_steps,
        "dtype": "float64", "devices": args.devices, "population_strong": args.population,
        "per_device_weak": args.per_device, "repeats": args.repeats,
        "pinned_cores": cores, "device_kind": "forced host CPU devices",
        "schedule": "serial (the CPU schedule: each device loops over its own slots)"},
        results=results,
        notes=(f"Forced host devices on a 2-core CPU shared with other jobs, workers pinned "
               f"to core(s) {cores}: the devices share those cores, so this measures the "
               "sharded code path (overhead, and the parallelism the pinned cores allow), "
               "not the scaling of real accelerators. Speedup = t(1 device)/t(n); weak "
               "efficiency = t(1)/t(n) with n times the structures."))


if __name__ == "__main__":
    main()

"""Benchmark: batched Buckingham + Ewald relaxations in jcsp against serial LAMMPS.

The case of issue 21: random symmetric TiO2 cells (Z = 2, ``random_crystals({"Ti": 2,
"O": 4}, n, seed)``), the Matsui-Akaogi rigid-ion model (charges Ti 2.196, O -1.098;
Buckingham Ti-Ti 31120.1 eV 0.1540 Å 5.25 eV Å^6, O-O 11782.7 0.2340 30.22, Ti-O
16957.5 0.1940 12.59; Matsui & Akaogi, Mol. Simul. 6, 239 (1991), as in XtalOpt's GULP
file), 10 Å real-space cutoff, positions and cell relaxed at zero pressure, in one run:

1. LAMMPS (``lmp`` binary, one process for all structures): ``pair_style buck/coul/long
   10`` + ``kspace_style ewald 1e-6``, CG (``min_style cg``) with ``fix box/relax tri
   0.0 vmax 0.001``, ``minimize 0 FTOL 20000 200000`` where FTOL is the 2-norm of the
   whole force vector (atoms and box), which bounds every atomic force by FTOL;
2. jcsp, ``jcsp.relax(structures, potential, fmax=FMAX, optimizer=...)`` (the cell
   filter's criterion on atoms and cell, 3000 steps at most): the defaults (FIRE, Ewald
   accuracy 1e-8), FIRE at accuracy 1e-6 (LAMMPS's setting) and L-BFGS at 1e-6 (see
   :data:`CONFIGS`); each run three times in one process: cold (compilation included;
   JAX's persistent cache is off), second and warm (the third call: the compiled code
   of the earlier calls reused, as in a search that relaxes batch after batch; the
   second call can still compile, e.g. the slot refill at a neighbor capacity the
   first call grew to after its last refill).

Times are CPU seconds of the process (jcsp: ``time.process_time``; LAMMPS: the child's
``RUSAGE_CHILDREN``) on one core (run under ``taskset -c 0``): on a shared machine the
wall time also counts other programs' turns on that core, so it is recorded but the
ratios use CPU time. Structures per second = n / CPU time. Also recorded: steps (jcsp)
and force evaluations (LAMMPS), converged and failed counts, final energies, and how
many structures both codes relaxed to the same energy (|dE| < 1e-3 eV/atom).

Run:  taskset -c 0 python experiments/bench_ionic.py            (~5-10 min)
      taskset -c 0 python experiments/bench_ionic.py --n 8 --no-record  (smoke test)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JCSP_NO_CACHE", "1")  # cold means cold: no compiled kernels from disk

import argparse
import collections
import re
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

import jcsp
from jcsp.potentials import ewald
from jcsp.potentials.buckingham import BuckinghamCoulomb
from jcsp.relax import kernel
from jcsp.search.generate import random_crystals

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import lammps_ref  # noqa: E402
from records import write_record  # noqa: E402

jax.config.update("jax_enable_x64", True)

CHARGES = {"Ti": 2.196, "O": -1.098}
PAIRS = {("Ti", "Ti"): (31120.1, 0.1540, 5.25), ("O", "O"): (11782.7, 0.2340, 30.22),
         ("Ti", "O"): (16957.5, 0.1940, 12.59)}
MASSES = {"O": 15.999, "Ti": 47.867}
CUTOFF = 10.0
SAME = 1e-3  # eV/atom: two relaxations that end this close found the same minimum
#: jcsp runs: (label, Ewald accuracy, optimizer). The first is jcsp.relax's defaults.
CONFIGS = [("jcsp_default", 1e-8, "fire"), ("jcsp_fire_1e-6", 1e-6, "fire"),
           ("jcsp_lbfgs_1e-6", 1e-6, "lbfgs")]


def lammps_relax(structures, *, ftol, accuracy=1e-6, box="tri"):
    """Relax every structure in one LAMMPS process; CPU and wall time, per-structure
    results (energy eV, volume, max force eV/Å, pressure bar, evaluations, stop)."""
    types = sorted(MASSES)
    script = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, atoms in enumerate(structures):
            lower, rot = lammps_ref.lower_triangular(atoms.cell[:])
            lower, pos = lower.tolist(), (atoms.positions @ rot).tolist()
            lines = ["jcsp bench_ionic", "", f"{len(atoms)} atoms", f"{len(types)} atom types",
                     "", f"0 {lower[0][0]!r} xlo xhi", f"0 {lower[1][1]!r} ylo yhi",
                     f"0 {lower[2][2]!r} zlo zhi",
                     f"{lower[1][0]!r} {lower[2][0]!r} {lower[2][1]!r} xy xz yz", "",
                     "Masses", ""] + [f"{t + 1} {MASSES[s]}" for t, s in enumerate(types)]
            lines += ["", "Atoms # charge", ""]
            for i, (s, p) in enumerate(zip(atoms.get_chemical_symbols(), pos)):
                lines.append(f"{i + 1} {types.index(s) + 1} {CHARGES[s]!r} {p[0]!r} {p[1]!r} "
                             f"{p[2]!r}")
            with open(os.path.join(tmp, f"data{k}"), "w") as fh:
                fh.write("\n".join(lines) + "\n")
            script += ["clear", "units metal", "atom_style charge", "boundary p p p",
                       "box tilt large", f"read_data data{k}",
                       f"pair_style buck/coul/long {CUTOFF}"]
            for a, sa in enumerate(types):
                for b, sb in enumerate(types[a:], start=a):
                    p = PAIRS.get((sa, sb)) or PAIRS.get((sb, sa))
                    script.append(f"pair_coeff {a + 1} {b + 1} {p[0]} {p[1]} {p[2]}")
            script += [f"kspace_style ewald {accuracy}", "neighbor 1.0 bin",
                       "thermo 100000", f"fix relax all box/relax {box} 0.0 vmax 0.001",
                       "min_style cg", f"minimize 0.0 {ftol} 20000 200000",
                       f'print "RESULT {k} $(pe:%.12g) $(vol:%.8g) $(fmax:%.6g) '
                       f'$(press:%.6g)"']
        with open(os.path.join(tmp, "in.lmp"), "w") as fh:
            fh.write("\n".join(script) + "\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        proc = subprocess.run([lammps_ref.LMP, "-in", "in.lmp", "-log", "log.lammps",
                               "-nocite", "-screen", "none"], cwd=tmp, capture_output=True,
                              text=True)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = open(os.path.join(tmp, "log.lammps")).read()
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{log[-3000:]}")
    rows = {int(r[1]): r[2:] for r in (line.split() for line in log.splitlines())
            if r[:1] == ["RESULT"]}
    evals = [int(x) for x in re.findall(r"Iterations, force evaluations = \d+ (\d+)", log)]
    stops = re.findall(r"Stopping criterion = (.*)", log)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out = []
    for k, atoms in enumerate(structures):
        e, vol, fmax, press = (float(x) for x in rows[k])
        out.append(dict(energy_per_atom=e / len(atoms), volume=vol, max_force=fmax,
                        pressure_bar=press, evaluations=evals[k], stop=stops[k].strip()))
    return dict(cpu_s=cpu, wall_s=wall, structures=out)


def jcsp_relax(structures, potential, *, fmax, optimizer):
    """One timed ``jcsp.relax`` call (CPU and wall seconds) and its per-structure results."""
    kernel.TRACE_COUNTS.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    out = jcsp.relax(structures, potential, fmax=fmax, optimizer=optimizer)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rows = [dict(energy_per_atom=a.info["energy"] / len(a), volume=a.info["volume"],
                 max_force=a.info["max_force"], pressure_gpa=a.info["pressure"],
                 steps=a.info["steps"], converged=a.info["converged"],
                 failed=a.info["failed"], failure=a.info.get("failure_reason"))
            for a in out]
    return dict(cpu_s=cpu, wall_s=wall, compilations=dict(kernel.TRACE_COUNTS), structures=rows)


def _direct_reciprocal(positions, reduced, volume, q, spec):
    """The reciprocal-space energies with one cos and sin per (atom, k) pair over the
    half space of the box: the textbook form, timed against jcsp's factorised sum."""
    import jax.numpy as jnp

    recip = 2.0 * jnp.pi * jnp.linalg.inv(reduced).T
    g = jnp.asarray(ewald.half_space(spec.kmax), positions.dtype) @ recip
    g2 = jnp.sum(g * g, axis=-1)
    inside = g2 <= spec.gmax**2
    g2 = jnp.where(inside, g2, 1.0)
    weight = jnp.where(inside, 4 * jnp.pi / volume * jnp.exp(-g2 / (4 * spec.alpha**2)) / g2,
                       0.0)
    phase = positions @ g.T
    cos, sin = jnp.cos(phase), jnp.sin(phase)
    return q * ((cos * (q @ cos) + sin * (q @ sin)) @ weight)


def reciprocal_timing(structures, accuracy, repeats=200):
    """CPU microseconds per energy + forces + stress of the reciprocal sum of one cell,
    factorised (jcsp) and direct, for the box ``for_cells`` gives these cells."""
    import jax.numpy as jnp

    potential = BuckinghamCoulomb(PAIRS, CHARGES, cutoff=CUTOFF, accuracy=accuracy)
    spec = potential.for_cells([a.cell[:] for a in structures]).ewald
    atoms = structures[0]
    q = jnp.asarray([CHARGES[s] for s in atoms.get_chemical_symbols()])
    out = {"kmax": list(spec.kmax)}
    for name, fn in [("factorised", ewald._reciprocal), ("direct", _direct_reciprocal)]:
        def total(pos, cell, fn=fn):
            return jnp.sum(fn(pos, cell, jnp.abs(jnp.linalg.det(cell)), q, spec))

        grad = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))
        args = (jnp.asarray(atoms.positions), jnp.asarray(atoms.cell[:]))
        value = jax.block_until_ready(grad(*args))
        best = np.inf
        for _ in range(5):
            start = time.process_time()
            for _ in range(repeats):
                jax.block_until_ready(grad(*args))
            best = min(best, (time.process_time() - start) / repeats)
        out[f"{name}_us"] = round(best * 1e6, 1)
        out[f"{name}_energy"] = float(value[0])
    return out


def summary(run, n):
    rows = run["structures"]
    steps = [r.get("steps", r.get("evaluations")) for r in rows]
    return dict(cpu_s=round(run["cpu_s"], 3), wall_s=round(run["wall_s"], 3),
                structures_per_cpu_s=round(n / run["cpu_s"], 3),
                steps_mean=round(float(np.mean(steps)), 1), steps_max=int(max(steps)),
                converged=sum(bool(r.get("converged", r.get("stop") == "force tolerance"))
                              for r in rows),
                failed=sum(bool(r.get("failed", False)) for r in rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å (jcsp fmax, LAMMPS ftol)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                       "bench_ionic.json"))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    structures = random_crystals({"Ti": 2, "O": 4}, args.n, seed=args.seed)
    n = len(structures)
    print(f"{n} random TiO2 cells (Z = 2), {jax.devices()[0]}, affinity "
          f"{sorted(os.sched_getaffinity(0))}", flush=True)

    timing = {f"accuracy_{acc:g}": reciprocal_timing(structures, acc) for acc in (1e-8, 1e-6)}
    for key, row in timing.items():
        print(f"reciprocal sum, one cell, {key}, box {row['kmax']}: factorised "
              f"{row['factorised_us']} us, direct cos/sin {row['direct_us']} us (CPU, with "
              f"forces and stress)", flush=True)
    lmp = lammps_relax(structures, ftol=args.fmax)
    print(f"LAMMPS: {lmp['cpu_s']:.2f} s CPU ({lmp['wall_s']:.2f} s wall)", flush=True)
    results = {"lammps": summary(lmp, n)}
    results["lammps"]["stops"] = dict(collections.Counter(r["stop"] for r in lmp["structures"]))
    per_structure = {"lammps": lmp["structures"]}
    for label, accuracy, optimizer in CONFIGS:
        potential = BuckinghamCoulomb(PAIRS, CHARGES, cutoff=CUTOFF, accuracy=accuracy)
        for phase in ("cold", "second", "warm"):
            run = jcsp_relax(structures, potential, fmax=args.fmax, optimizer=optimizer)
            row = summary(run, n)
            row["compilations"] = run["compilations"]
            same = [abs(a["energy_per_atom"] - b["energy_per_atom"]) < SAME
                    for a, b in zip(run["structures"], lmp["structures"])]
            row["same_minimum_as_lammps"] = int(sum(same))
            row["cpu_ratio_to_lammps"] = round(run["cpu_s"] / lmp["cpu_s"], 3)
            results[f"{label}_{phase}"] = row
            per_structure[f"{label}_{phase}"] = run["structures"]
            print(f"{label} {phase}: {run['cpu_s']:.2f} s CPU ({run['wall_s']:.2f} s wall), "
                  f"{row['cpu_ratio_to_lammps']}x LAMMPS, steps {row['steps_mean']} mean "
                  f"{row['steps_max']} max, {row['converged']} converged, {row['failed']} "
                  f"failed, same minimum as LAMMPS {row['same_minimum_as_lammps']}/{n}, "
                  f"compilations {row['compilations']}", flush=True)

    print(f"\n{'run':28s} {'CPU s':>8s} {'wall s':>8s} {'struct/CPU s':>13s} {'x LAMMPS':>9s}")
    for key, row in results.items():
        print(f"{key:28s} {row['cpu_s']:8.2f} {row['wall_s']:8.2f} "
              f"{row['structures_per_cpu_s']:13.2f} {row.get('cpu_ratio_to_lammps', 1.0):9.2f}")
    if not args.no_record:
        write_record(args.json, settings=dict(
            n=n, seed=args.seed, fmax=args.fmax, cutoff=CUTOFF, jcsp_runs=CONFIGS,
            lammps="buck/coul/long + ewald 1e-6, CG, fix box/relax tri 0.0 vmax 0.001, "
                   f"minimize 0 {args.fmax} 20000 200000 (ftol: 2-norm of all forces)",
            jcsp="jcsp.relax(fmax=FMAX): FrechetCellFilter criterion on atoms and cell; "
                 "runs (label, Ewald accuracy, optimizer) as in jcsp_runs; cold = first call "
                 "(compilation included, persistent cache off), second = second call, warm = "
                 "third call",
            timing="CPU seconds of the process (jcsp) and of the LAMMPS child, one core "
                   "(taskset); shared machine, wall time recorded too"),
            results=dict(results, reciprocal_sum=timing), per_structure=per_structure)


if __name__ == "__main__":
    main()

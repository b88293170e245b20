"""Benchmark: jcsp's batched relaxation against the peer tools, side by side in one run.

Sections (each prints a table; ``--json`` saves everything):

1. Stillinger-Weber silicon: N random 8-24-atom cells relaxed (positions + cell, FIRE)
   by jcsp in batches, and by ASE's FIRE + FrechetCellFilter one structure at a time
   (jcsp's calculator; and LAMMPS through ASE's LAMMPSlib when the ``lammps`` Python
   module imports), on a random sample whose time is scaled to N.
2. Lennard-Jones argon: the same against TorchSim's batched ``frechet_cell_fire``
   (``torch-sim-atomistic``, optional) and ASE one at a time.
3. Fixed cell: rattled 64-atom diamond supercells (wide enough for jax-md's neighbor
   list) relaxed by jcsp and by jax-md's ``fire_descent`` (positions only).
4. Cost of a relaxation step over one batched force call (energy + forces + stress with
   a valid neighbor list), and the per-step time as the batch grows from 1e2 to 1e5
   atoms.

All runs use the same convergence criteria: max force ``--fmax`` (eV/Å) and, with the
cell, ASE's FrechetCellFilter criterion on the cell degrees of freedom.

Run:  python experiments/bench_relax.py            (full, ~20-40 min on 2 CPU cores)
      python experiments/bench_relax.py --quick    (smoke test, a few minutes)
"""

from __future__ import annotations

import os

# The one-at-a-time baselines make thousands of tiny LAPACK calls (ASE's filter, scipy's
# expm); a multi-threaded OpenBLAS turns each into a thread hand-off and makes them
# several times slower on a busy 2-core machine. One thread is the fair setting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
import time

import numpy as np

import jcsp
from jcsp.search.generate import random_crystals

SW_FILE = "/usr/share/lammps/potentials/Si.sw"
LJ = dict(epsilon=0.0104, sigma=3.40, cutoff=8.5)


def si_population(n, seed=0, sizes=(8, 24)):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        out += random_crystals({"Si": size}, 1, seed=rng, groups=[1], volume=20.0 * size)
    return out


def ar_population(n, seed=1, sizes=(8, 24)):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        atoms = random_crystals({"Ar": size}, 1, seed=rng, groups=[1], volume=42.0 * size,
                                min_separation=1.2)[0]
        out.append(atoms)
    return out


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def run_jcsp(structures, pot, args, **kw):
    """Relax twice: the first run includes compilation, the second is steady state."""
    opts = dict(fmax=args.fmax, max_steps=args.max_steps, progress=False, optimizer="fire")
    opts.update(kw)
    first, t_first = timed(jcsp.relax, structures, pot, **opts)
    again, t_again = timed(jcsp.relax, structures, pot, **opts)
    conv = np.mean([a.info["converged"] for a in again])
    steps = np.mean([a.info["steps"] for a in again])
    return dict(n=len(structures), seconds_with_compile=t_first, seconds=t_again,
                per_second=len(structures) / t_again, converged=float(conv),
                mean_steps=float(steps), energies=[a.info["enthalpy"] for a in again])


def run_ase(structures, calc_factory, args, *, cell=True):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    t0 = time.perf_counter()
    conv, steps = [], []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc_factory()
        target = FrechetCellFilter(atoms) if cell else atoms
        opt = FIRE(target, logfile=None)
        ok = opt.run(fmax=args.fmax, steps=args.max_steps)
        conv.append(bool(ok))
        steps.append(opt.nsteps)
    dt = time.perf_counter() - t0
    return dict(n=len(structures), seconds=dt, per_second=len(structures) / dt,
                converged=float(np.mean(conv)), mean_steps=float(np.mean(steps)))


def _import_lammps():
    """The ``lammps`` Python module; Debian's python3-lammps lives outside this
    interpreter's path, so fall back to a private path holding only that package."""
    try:
        import lammps  # noqa: F401
        return True
    except ImportError:
        debian = "/usr/lib/python3/dist-packages/lammps"
        if not os.path.isdir(debian):
            return False
        import tempfile
        shim = tempfile.mkdtemp(prefix="jcsp-lammps-")
        os.symlink(debian, os.path.join(shim, "lammps"))
        sys.path.insert(0, shim)
        try:
            import lammps  # noqa: F401,F811
            return True
        except Exception:
            return False


def lammpslib_factory():
    if not _import_lammps():
        return None
    try:
        from ase.calculators.lammpslib import LAMMPSlib
    except Exception:
        return None
    return lambda: LAMMPSlib(lmpcmds=["pair_style sw", f"pair_coeff * * {SW_FILE} Si"],
                             atom_types={"Si": 1}, log_file=None, keep_alive=True)


def run_torchsim(structures, args):
    try:
        import torch
        import torch_sim as ts
        from torch_sim.models.lennard_jones import LennardJonesModel
    except Exception as exc:  # optional peer
        return {"skipped": f"torch-sim not importable ({exc.__class__.__name__})"}
    torch.set_num_threads(os.cpu_count() or 1)
    model = LennardJonesModel(sigma=LJ["sigma"], epsilon=LJ["epsilon"], cutoff=LJ["cutoff"],
                              compute_stress=True, dtype=torch.float64)
    conv = ts.generate_force_convergence_fn(args.fmax, include_cell_forces=True)

    def go():
        return ts.optimize(system=[a.copy() for a in structures], model=model,
                           optimizer=ts.frechet_cell_fire, convergence_fn=conv,
                           max_steps=args.max_steps)

    _, t_first = timed(go)
    final, t = timed(go)
    n_atoms = np.array([len(a) for a in structures])
    energy = final.energy.detach().numpy()
    return dict(n=len(structures), seconds_with_warmup=t_first, seconds=t,
                per_second=len(structures) / t, mean_energy_per_atom=float(np.mean(energy / n_atoms)))


def run_jaxmd(structures, args):
    import jax
    import jax.numpy as jnp
    from jax_md import energy, minimize, space
    box = jnp.asarray(structures[0].cell[:].T)  # jax-md: columns are lattice vectors
    disp, shift = space.periodic_general(box, fractional_coordinates=True)
    nbr_fn, e_fn = energy.stillinger_weber_neighbor_list(disp, box, fractional_coordinates=True)
    init, apply = minimize.fire_descent(lambda r, **kw: e_fn(r, **kw), shift, dt_start=0.1,
                                        dt_max=1.0)
    force = jax.grad(lambda r, nbrs: -e_fn(r, neighbor=nbrs))
    inv = jnp.linalg.inv(box)

    @jax.jit
    def relax_one(frac, nbrs):
        def cond(c):
            state, nbrs, k = c
            f = force(state.position, nbrs) @ inv  # cartesian force
            return (jnp.max(jnp.linalg.norm(f, axis=-1)) > args.fmax) & (k < args.max_steps)

        def body(c):
            state, nbrs, k = c
            state = apply(state, neighbor=nbrs)
            nbrs = nbrs.update(state.position)
            return state, nbrs, k + 1

        state = init(frac, neighbor=nbrs)
        state, nbrs, k = jax.lax.while_loop(cond, body, (state, nbrs, 0))
        return state.position, k, nbrs.did_buffer_overflow

    fracs = [jnp.asarray(a.get_scaled_positions()) for a in structures]
    nbrs = nbr_fn.allocate(fracs[0])
    relax_one(fracs[0], nbrs)[0].block_until_ready()  # compile
    t0 = time.perf_counter()
    steps = []
    for f in fracs:
        _, k, over = relax_one(f, nbr_fn.allocate(f))
        steps.append(int(k))
    dt = time.perf_counter() - t0
    return dict(n=len(structures), seconds=dt, per_second=len(structures) / dt,
                mean_steps=float(np.mean(steps)))


def step_vs_force(structures, pot, args, batch_size):
    """Per-step wall time of a relaxation that never converges (fmax tiny) vs one
    batched force call with a ready neighbor list."""
    import jax
    from jcsp import neighbors as nl
    from jcsp.derivatives import evaluate_with
    from jcsp.structures.convert import from_atoms
    n_steps = args.probe_steps
    opts = dict(fmax=1e-9, max_steps=n_steps, progress=False, batch_size=batch_size)
    jcsp.relax(structures, pot, **opts)  # compile
    out, dt = timed(jcsp.relax, structures, pot, **opts)
    total_steps = max(a.info["steps"] for a in out)
    n_batches = int(np.ceil(len(structures) / batch_size))
    per_step = dt / (total_steps * n_batches)
    pop = from_atoms(structures)
    spec = nl.spec_for(pot.cutoff * 1.1, pop.frac, pop.cell, pop.mask, pop.pbc)
    build = jax.jit(jax.vmap(lambda f, c, m: nl.build(spec, f, c, m, pop.pbc)))
    nbrs = build(pop.frac, pop.cell, pop.mask)

    @jax.jit
    def force_call(frac, cell, species, mask, nbrs):
        return jax.vmap(lambda f, c, z, m, n: evaluate_with(pot, pot.params, f, c, z, m, n,
                                                            pop.pbc))(frac, cell, species, mask, nbrs)

    args_ = (pop.frac, pop.cell, pop.species, pop.mask, nbrs)
    jax.block_until_ready(force_call(*args_))
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(force_call(*args_))
    t_force = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(build(pop.frac, pop.cell, pop.mask))
    t_build = (time.perf_counter() - t0) / reps
    return dict(atoms=int(sum(len(a) for a in structures)), per_step=per_step,
                force_call=t_force, list_build=t_build, ratio=per_step / t_force)


def table(rows, cols):
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(cols, widths)))


def fmt(x, d=3):
    return f"{x:.{d}g}" if isinstance(x, (float, np.floating)) else x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--n-si", type=int, default=512)
    ap.add_argument("--n-lj", type=int, default=256)
    ap.add_argument("--ase-sample", type=int, default=16)
    ap.add_argument("--n-jaxmd", type=int, default=32)
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--probe-steps", type=int, default=100)
    ap.add_argument("--scaling", default="100,1000,10000,100000",
                    help="total atoms per batch for the scaling section")
    ap.add_argument("--sections", default="si,lj,jaxmd,ratio,scaling")
    ap.add_argument("--json", default=None, help="write all numbers to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_si, args.n_lj, args.ase_sample, args.n_jaxmd = 32, 32, 4, 4
        args.scaling, args.probe_steps = "100,1000", 30
    import jax
    results = {"device": str(jax.devices()[0]), "dtype": str(jax.numpy.zeros(()).dtype),
               "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "args": vars(args)}
    sections = args.sections.split(",")
    sw = jcsp.potentials.StillingerWeber.from_lammps(
        SW_FILE if os.path.exists(SW_FILE) else os.path.join(os.path.dirname(jcsp.__file__),
                                                             "data", "Si.sw"))
    rng = np.random.default_rng(123)

    if "si" in sections:
        print(f"\n== 1. SW silicon: {args.n_si} random 8-24-atom cells, FIRE, cell + positions, "
              f"fmax {args.fmax} eV/Å ==")
        pop = si_population(args.n_si)
        ours = run_jcsp(pop, sw, args)
        sample = [pop[i] for i in rng.choice(len(pop), args.ase_sample, replace=False)]
        ase_j = run_ase(sample, lambda: jcsp.JCSPCalculator(sw), args)
        rows = [dict(tool="jcsp batched", **{k: fmt(v) for k, v in ours.items() if k != "energies"}),
                dict(tool="ASE FIRE+Frechet (jcsp calc), 1 at a time",
                     **{k: fmt(v) for k, v in ase_j.items()})]
        factory = lammpslib_factory()
        if factory is not None:
            ase_l = run_ase(sample, factory, args)
            rows.append(dict(tool="ASE FIRE+Frechet (LAMMPSlib), 1 at a time",
                             **{k: fmt(v) for k, v in ase_l.items()}))
            results["si_ase_lammps"] = ase_l
        table(rows, ["tool", "n", "seconds", "per_second", "converged", "mean_steps",
                     "seconds_with_compile"])
        print(f"speed-up jcsp / ASE one-at-a-time: {ours['per_second'] / ase_j['per_second']:.1f}x"
              f" (steady state), {args.n_si / ours['seconds_with_compile'] / ase_j['per_second']:.1f}x"
              " including compilation")
        results["si_jcsp"], results["si_ase"] = ours, ase_j

    lj = jcsp.potentials.LennardJones(LJ["epsilon"], LJ["sigma"], LJ["cutoff"], truncation="plain")
    if "lj" in sections:
        print(f"\n== 2. LJ argon: {args.n_lj} random 8-24-atom cells, FIRE, cell + positions ==")
        pop = ar_population(args.n_lj)
        ours = run_jcsp(pop, lj, args)
        ts_res = run_torchsim(pop, args)
        sample = [pop[i] for i in rng.choice(len(pop), args.ase_sample, replace=False)]
        ase_j = run_ase(sample, lambda: jcsp.JCSPCalculator(lj), args)
        rows = [dict(tool="jcsp batched", **{k: fmt(v) for k, v in ours.items() if k != "energies"}),
                dict(tool="TorchSim frechet_cell_fire batched", **{k: fmt(v) for k, v in ts_res.items()}),
                dict(tool="ASE FIRE+Frechet (jcsp calc), 1 at a time",
                     **{k: fmt(v) for k, v in ase_j.items()})]
        table(rows, ["tool", "n", "seconds", "per_second", "converged", "mean_steps", "skipped"])
        if "per_second" in ts_res:
            print(f"speed-up jcsp / TorchSim: {ours['per_second'] / ts_res['per_second']:.1f}x; "
                  f"mean E/atom jcsp {np.mean([e / len(a) for e, a in zip(ours['energies'], pop)]):.5f}"
                  f" vs TorchSim {ts_res['mean_energy_per_atom']:.5f} eV")
        print(f"speed-up jcsp / ASE one-at-a-time: {ours['per_second'] / ase_j['per_second']:.1f}x")
        results["lj_jcsp"], results["lj_torchsim"], results["lj_ase"] = ours, ts_res, ase_j

    if "jaxmd" in sections:
        print(f"\n== 3. Fixed cell: {args.n_jaxmd} rattled 64-atom SW diamond supercells ==")
        from ase.build import bulk
        base = bulk("Si", "diamond", a=5.431, cubic=True) * (2, 2, 2)
        pop = []
        for k in range(args.n_jaxmd):
            a = base.copy()
            a.rattle(0.15, seed=k)
            pop.append(a)
        ours = run_jcsp(pop, sw, args, relax_cell=False)
        jm = run_jaxmd(pop, args)
        table([dict(tool="jcsp batched (fixed cell)", **{k: fmt(v) for k, v in ours.items() if k != "energies"}),
               dict(tool="jax-md fire_descent, 1 at a time", **{k: fmt(v) for k, v in jm.items()})],
              ["tool", "n", "seconds", "per_second", "mean_steps"])
        print(f"speed-up jcsp / jax-md: {ours['per_second'] / jm['per_second']:.1f}x")
        results["fixed_jcsp"], results["fixed_jaxmd"] = ours, jm

    if "ratio" in sections:
        print("\n== 4a. One relaxation step vs one batched force call (SW Si, 16-atom cells) ==")
        pop = si_population(64, seed=5, sizes=(16, 16))
        r = step_vs_force(pop, sw, args, batch_size=64)
        table([{k: fmt(v) for k, v in r.items()}], list(r))
        results["step_vs_force"] = r

    if "scaling" in sections:
        print("\n== 4b. Per-step time as the batch grows (SW Si, 16-atom cells) ==")
        rows = []
        for total in [int(x) for x in args.scaling.split(",")]:
            b = max(1, total // 16)
            pop = si_population(b, seed=7, sizes=(16, 16))
            r = step_vs_force(pop, sw, args, batch_size=b)
            r["us_per_atom_step"] = r["per_step"] / r["atoms"] * 1e6
            rows.append({k: fmt(v) for k, v in r.items()})
            results.setdefault("scaling", []).append(r)
            print(f"  {r['atoms']} atoms: {r['per_step'] * 1e3:.2f} ms/step", flush=True)
        table(rows, list(rows[0]))

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

"""Benchmark: the cost of an implicit gradient relative to the relaxation it differentiates.

For each system a batch of rattled, strained crystals (and random cells, whose relaxed
end points have no symmetry) is relaxed by
``jcsp.relax_differentiable`` (L-BFGS to ``fmax`` plus the Newton polish and the
curvature probe) and the gradient of a relaxed property (the summed volume, or the sum
of distances from atom 0 to the other atoms) with respect to every potential
parameter is taken by the implicit VJP (one batched conjugate-gradient solve
on Hessian-vector products plus one mixed vector-Jacobian product). Times are warm
(compilation excluded: each call is made once before timing) and the median of
``--repeats`` runs; the relaxation always starts again from the same unrelaxed batch.

Ratios reported per system:

- ``gradient / relaxation``: the backward pass over the whole forward pass of
  ``relax_differentiable`` (relaxer + polish + probe), the cost a user pays;
- ``gradient / relaxer``: the backward pass over ``jcsp.relax`` alone (L-BFGS, same
  fmax), the strictest reading of "the relaxation that produced it".

Run:  taskset -c 1 python experiments/differentiable/bench_gradient_cost.py
      (a few minutes on one core; ``--quick`` for a smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.build import bulk

import jcsp
from jcsp.potential_spec import load_potential
from jcsp.potentials.lennard_jones import LennardJones
from jcsp.relax.lbfgs import LBFGSConfig
from jcsp.structures.convert import from_atoms, to_atoms

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from records import RESULTS, write_record  # noqa: E402


def _batch(atoms, repeat, batch, rattle, strain, seed):
    """``batch`` rattled and strained copies of ``atoms`` repeated ``repeat``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        a = atoms.repeat(repeat)
        a.rattle(rattle, seed=int(rng.integers(1 << 30)))
        eps = rng.uniform(-strain, strain, (3, 3))
        a.set_cell(a.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        out.append(a)
    return out


def _random_cells(symbol, n_atoms, batch, volume_per_atom, min_distance, potential, fmax,
                  seed):
    """``batch`` random cells (uniform positions, no pair closer than ``min_distance``)
    whose relaxation ends at a valid (converged, strictly stable) minimum: low-symmetry
    end points, where the conjugate-gradient solve has every mode to resolve."""
    rng = np.random.default_rng(seed)
    keep = []
    while len(keep) < batch:
        length = (n_atoms * volume_per_atom) ** (1 / 3)
        pos = []
        while len(pos) < n_atoms:
            x = rng.uniform(0, length, 3)
            d = np.array(pos) - x if pos else np.zeros((0, 3))
            d -= length * np.round(d / length)
            if len(pos) == 0 or np.min(np.linalg.norm(d, axis=1)) > min_distance:
                pos.append(x)
        keep.append(Atoms(symbol * n_atoms, positions=pos, cell=[length] * 3, pbc=True))
        out = jcsp.relax_differentiable(from_atoms(keep[-1:]), potential, fmax=fmax)
        if not out.valid[0]:
            keep.pop()
    return keep


def _distances_from_first(out):
    """Sum over structures of the distances from atom 0 to every other real atom, Å
    (a property of the relaxed positions that no symmetry simplifies)."""
    d = jnp.linalg.norm(out.positions - out.positions[:, :1], axis=-1)
    return jnp.sum(d)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


PROPERTIES = {"volume": lambda out: out.volume.sum(), "distances": _distances_from_first}


def measure(name, potential, structures, *, fmax, repeats, prop="volume"):
    pop = from_atoms(structures)
    params = potential.params

    def volume(p):
        return PROPERTIES[prop](jcsp.relax_differentiable(pop, potential, params=p, fmax=fmax))

    # warm-up: compile everything once
    _, pull = jax.vjp(volume, params)
    jax.block_until_ready(pull(1.0))
    jcsp.relax(to_atoms(pop), potential, fmax=fmax, optimizer=LBFGSConfig())

    out = jcsp.relax_differentiable(pop, potential, fmax=fmax)
    assert out.valid.all(), (name, out.converged, out.stable)
    t_relaxer = _median_time(lambda: jcsp.relax(to_atoms(pop), potential, fmax=fmax,
                                                optimizer=LBFGSConfig()), repeats)
    t_forward = _median_time(lambda: jax.block_until_ready(
        jcsp.relax_differentiable(pop, potential, fmax=fmax).volume), repeats)
    _, pull = jax.vjp(volume, params)
    t_backward = _median_time(lambda: jax.block_until_ready(pull(1.0)), repeats)
    row = {"system": name, "property": prop, "batch": len(structures),
           "atoms_per_structure": len(structures[0]),
           "relaxer_steps_mean": float(np.mean(out.steps)),
           "relaxer_s": t_relaxer, "relax_differentiable_forward_s": t_forward,
           "gradient_s": t_backward,
           "gradient_over_relaxation": t_backward / t_forward,
           "gradient_over_relaxer": t_backward / t_relaxer}
    print(f"{name:28s} {prop:9s} B={row['batch']:3d} N={row['atoms_per_structure']:3d} "
          f"steps={row['relaxer_steps_mean']:6.1f}  relaxer {t_relaxer:7.3f} s  "
          f"forward {t_forward:7.3f} s  gradient {t_backward:7.3f} s  "
          f"grad/forward {row['gradient_over_relaxation']:5.2f}  "
          f"grad/relaxer {row['gradient_over_relaxer']:5.2f}", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fmax", type=float, default=1e-6)
    parser.add_argument("--out", default=os.path.join(RESULTS, "bench_gradient_cost.json"))
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    batch = 2 if args.quick else 8
    sw = load_potential("sw-si")
    lj = LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5)
    systems = [
        ("SW Si diamond 8 atoms", sw, _batch(bulk("Si", "diamond", a=5.43, cubic=True), 1,
                                             batch, 0.05, 0.02, 0)),
        ("SW Si diamond 64 atoms", sw, _batch(bulk("Si", "diamond", a=5.43, cubic=True), 2,
                                              batch, 0.05, 0.02, 1)),
        ("LJ Ar fcc 32 atoms", lj, _batch(bulk("Ar", "fcc", a=5.30, cubic=True), 2, batch,
                                          0.05, 0.02, 2)),
    ]
    if args.quick:
        systems = systems[:1]
    else:
        systems.append(("SW Si random 16 atoms", sw,
                        _random_cells("Si", 16, batch, 20.0, 2.2, sw, args.fmax, 3)))
    rows = [measure(name, pot, structures, fmax=args.fmax, repeats=repeats, prop=prop)
            for name, pot, structures in systems for prop in PROPERTIES]
    write_record(args.out, settings={"fmax": args.fmax, "repeats": repeats, "batch": batch,
                                     "rattle_A": 0.05, "strain": 0.02,
                                     "optimizer": "lbfgs (jcsp default LBFGSConfig)",
                                     "properties": {
                                         "volume": "sum of relaxed volumes",
                                         "distances": "sum of distances from atom 0 to the "
                                                      "others, relaxed positions"},
                                     "gradient_wrt": "every potential parameter"},
                 results={"systems": rows,
                          "max_gradient_over_relaxation": max(r["gradient_over_relaxation"]
                                                              for r in rows),
                          "max_gradient_over_relaxer": max(r["gradient_over_relaxer"]
                                                           for r in rows)},
                 notes="Warm timings (compilation excluded), median of repeats, float64 on "
                       "CPU. The machine was shared with other jobs; ratios are measured in "
                       "the same run and are the meaningful figures.")


if __name__ == "__main__":
    main()

"""Experiment (b): the diamond -> beta-tin transition pressure of Stillinger-Weber
silicon by Newton's method on dH/dp through relaxations, against a brute-force scan.

At the transition pressure p* the relaxed enthalpies per atom of the two phases are
equal: f(p) = h_beta(p) - h_diamond(p) = 0. Its derivative is exact and cheap,
f'(p) = v_beta - v_diamond (the envelope theorem, dH/dp = V), and here it is taken
with ``jax.grad`` through ``jcsp.relax_differentiable`` (so the script also checks
that the gradient equals the volume difference). Newton: p <- p - f / f'. The
reference is a scan of relaxed enthalpies on a pressure grid with the sign change
located by linear and by cubic interpolation, and refined on a finer grid.

Run:  python experiments/differentiable/transition_pressure.py   (about a minute)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.interpolate import CubicSpline

import jcsp
from jcsp.potential_spec import load_potential
from jcsp.structures.convert import from_atoms
from jcsp.units import gpa_to_ev_per_a3

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from phases import phases  # noqa: E402
from records import RESULTS, write_record  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=float, default=0.0, help="Newton's first pressure, GPa")
    parser.add_argument("--scan-max", type=float, default=30.0)
    parser.add_argument("--scan-step", type=float, default=1.0)
    parser.add_argument("--out", default=os.path.join(
        RESULTS, "differentiable_transition_pressure.json"))
    parser.add_argument("--plot", default=os.path.join(HERE, "transition_pressure.png"))
    args = parser.parse_args()

    sw = load_potential("sw-si")
    start = phases()
    pop = from_atoms([start["diamond"], start["beta-tin"]])
    n_atoms = jnp.asarray([len(start["diamond"]), len(start["beta-tin"])], float)

    def relaxed(p):
        out = jcsp.relax_differentiable(pop, sw, pressure=p)
        if not out.valid.all():
            raise RuntimeError(f"not a strict minimum at {float(p)} GPa: {out.valid}")
        return out

    def gap(p):
        """f(p) = h_beta - h_diamond, eV/atom, and the per-atom volumes."""
        out = relaxed(p)
        h = out.enthalpy / n_atoms
        return h[1] - h[0], out.volume / n_atoms

    value_and_grad = jax.value_and_grad(gap, has_aux=True)
    value_and_grad(jnp.asarray(args.start))  # compile once: both timings below are warm
    t0 = time.perf_counter()
    p = jnp.asarray(args.start)
    newton = []
    for it in range(20):
        (f, v), df = value_and_grad(p)
        dv = float(v[1] - v[0])
        envelope = float(df) / gpa_to_ev_per_a3(dv) - 1.0
        newton.append({"iteration": it, "pressure_GPa": float(p), "gap_eV_per_atom": float(f),
                       "dgap_dp_eV_per_GPa": float(df), "volume_difference_A3_per_atom": dv,
                       "envelope_relative_error": envelope})
        print(f"newton {it}: p = {float(p):.12f} GPa  f = {float(f):+.3e} eV/atom  "
              f"f' = {float(df):.6e} eV/GPa  (f' / dV - 1 = {envelope:+.1e})", flush=True)
        if abs(float(f)) < 1e-13:
            break
        p = p - f / df
    t_newton = time.perf_counter() - t0
    p_newton = float(p)

    t0 = time.perf_counter()
    grid = np.arange(0.0, args.scan_max + 1e-9, args.scan_step)
    gaps = np.array([float(gap(q)[0]) for q in grid])
    t_scan = time.perf_counter() - t0
    k = int(np.flatnonzero(np.sign(gaps[:-1]) != np.sign(gaps[1:]))[0])
    p_linear = grid[k] - gaps[k] * (grid[k + 1] - grid[k]) / (gaps[k + 1] - gaps[k])
    spline = CubicSpline(grid, gaps)
    roots = [r for r in spline.roots(extrapolate=False) if grid[k] <= r <= grid[k + 1]]
    p_cubic = float(roots[0])
    fine = np.linspace(grid[k], grid[k + 1], 11)
    fine_gaps = np.array([float(gap(q)[0]) for q in fine])
    j = int(np.flatnonzero(np.sign(fine_gaps[:-1]) != np.sign(fine_gaps[1:]))[0])
    p_fine = fine[j] - fine_gaps[j] * (fine[j + 1] - fine[j]) / (fine_gaps[j + 1] - fine_gaps[j])
    print(f"Newton {p_newton:.9f} GPa in {len(newton)} relaxations ({t_newton:.2f} s); scan "
          f"({len(grid)} relaxations, {t_scan:.2f} s): linear {p_linear:.6f}, cubic {p_cubic:.6f}, "
          f"fine grid ({len(fine)} more) {p_fine:.9f} GPa")

    write_record(args.out, settings={
        "potential": "jcsp shipped Si.sw", "phases": ["diamond", "beta-tin"],
        "newton_start_GPa": args.start, "scan_GPa": [0.0, args.scan_max, args.scan_step],
        "fine_grid_points": len(fine), "fmax": 1e-6},
        results={"newton_pressure_GPa": p_newton, "newton_relaxations": len(newton),
                 "newton_history": newton, "scan_linear_GPa": float(p_linear),
                 "scan_cubic_GPa": p_cubic, "fine_scan_linear_GPa": float(p_fine),
                 "scan_relaxations": len(grid),
                 "newton_minus_fine_scan_GPa": p_newton - float(p_fine),
                 "newton_minus_cubic_scan_GPa": p_newton - p_cubic,
                 "max_envelope_relative_error": max(abs(r["envelope_relative_error"])
                                                    for r in newton),
                 "newton_seconds": t_newton, "scan_seconds": t_scan,
                 "scan": {"pressure_GPa": grid.tolist(), "gap_eV_per_atom": gaps.tolist()}},
        notes="Each relaxation relaxes both phases in one batch; a Newton iteration also "
              "takes the pressure gradient. Warm timings (compiled before), shared 2-core CPU.")
    _plot(grid, gaps, newton, p_newton, args.plot)


def _plot(grid, gaps, newton, p_newton, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, gaps, "o-", ms=3, label="scan: relaxed h(beta-tin) - h(diamond)")
    for r in newton[:-1]:
        p, f, df = r["pressure_GPa"], r["gap_eV_per_atom"], r["dgap_dp_eV_per_GPa"]
        ax.plot([p, p - f / df], [f, 0.0], "r--", lw=0.8)
    ax.plot([r["pressure_GPa"] for r in newton], [r["gap_eV_per_atom"] for r in newton], "rx",
            label="Newton iterates (tangent = volume difference)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(p_newton, color="r", lw=0.5)
    ax.set_xlabel("pressure (GPa)")
    ax.set_ylabel("enthalpy difference (eV/atom)")
    ax.set_title(f"SW Si diamond -> beta-tin: p* = {p_newton:.3f} GPa")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print("plot:", path)


if __name__ == "__main__":
    main()

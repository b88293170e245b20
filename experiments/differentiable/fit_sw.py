"""Experiment (a): recover Stillinger-Weber parameters by gradient descent through
relaxations.

Targets are the relaxed conventional lattice constants of diamond (a), beta-tin (a, c)
and bcc (a) silicon under jcsp's shipped Si.sw (Stillinger & Weber, Phys. Rev. B 31,
5262 (1985)), at 0 and 10 GPa (at zero pressure the energy scale epsilon leaves every
geometry unchanged; a pressure makes it identifiable). Starting from perturbed values
of epsilon, sigma and lambda, the loss

    L = sum_i (a_i(theta) / a_i^target - 1)^2

is minimised over log(theta), every evaluation relaxing the six structures (three
phases x two pressures) in one batch with ``jcsp.relax_differentiable`` and its
gradient coming from the implicit VJP. Stage 1 is Adam (Kingma & Ba, ICLR 2015) on
the gradient; stage 2 is a few Gauss-Newton steps with the full Jacobian of the
residuals (``jax.jacrev`` through the relaxations), to show the parameters come back
to round-off.

Run:  python experiments/differentiable/fit_sw.py      (about a minute after compiling)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jcsp
from jcsp.potential_spec import load_potential
from jcsp.structures.convert import from_atoms

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from phases import lattice_constants, phases  # noqa: E402
from records import RESULTS, write_record  # noqa: E402

FIT = ("epsilon", "sigma", "lambda")
PERTURB = {"epsilon": 1.08, "sigma": 0.96, "lambda": 1.10}
PRESSURES = (0.0, 10.0)  # GPa


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adam-steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--newton-steps", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(RESULTS, "differentiable_fit_sw.json"))
    parser.add_argument("--plot", default=os.path.join(HERE, "fit_sw.png"))
    args = parser.parse_args()

    sw = load_potential("sw-si")
    start = phases()
    names = [n for _ in PRESSURES for n in start]
    pop = from_atoms([start[n] for n in names])
    pressure = jnp.asarray([p for p in PRESSURES for _ in start])
    truth = {k: float(sw.params[k][0, 0, 0]) for k in FIT}

    def params_of(u):
        return {k: (jnp.exp(u[k]) * jnp.ones_like(v) if k in FIT else v)
                for k, v in sw.params.items()}

    def lattice(u):
        out = jcsp.relax_differentiable(pop, sw, params=params_of(u), pressure=pressure)
        if not out.valid.all():
            raise RuntimeError(f"a structure is not a strict minimum: {out.valid}")
        return jnp.concatenate([lattice_constants(n, out.cell[b]) for b, n in enumerate(names)])

    u_true = {k: jnp.log(truth[k]) for k in FIT}
    target = lattice(u_true)

    def residuals(u):
        return lattice(u) / target - 1.0

    def loss(u):
        r = residuals(u)
        return jnp.sum(r * r)

    u = {k: jnp.log(truth[k] * PERTURB[k]) for k in FIT}
    history = []

    def log(stage, step, value, u):
        errors = {k: float(jnp.exp(u[k]) / truth[k] - 1) for k in FIT}
        history.append({"stage": stage, "step": step, "loss": float(value),
                        "relative_error": errors})
        if step % 10 == 0 or stage == "gauss-newton":
            print(f"{stage:12s} {step:4d} loss {float(value):.3e}  "
                  + "  ".join(f"{k} {e:+.2e}" for k, e in errors.items()), flush=True)

    t0 = time.perf_counter()
    optimizer = optax.adam(args.lr)
    state = optimizer.init(u)
    value_and_grad = jax.value_and_grad(loss)
    for step in range(args.adam_steps):
        value, grad = value_and_grad(u)
        log("adam", step, value, u)
        updates, state = optimizer.update(grad, state, u)
        u = optax.apply_updates(u, updates)
    t_adam = time.perf_counter() - t0
    adam_final = {k: float(jnp.exp(u[k]) / truth[k] - 1) for k in FIT}
    for step in range(args.newton_steps + 1):
        r = residuals(u)
        log("gauss-newton", step, jnp.sum(r * r), u)
        if step == args.newton_steps:
            break
        jac = jax.jacrev(residuals)(u)
        j = jnp.stack([jac[k] for k in FIT], axis=1)  # [targets, params]
        delta = jnp.linalg.lstsq(j, -r)[0]
        u = {k: u[k] + delta[i] for i, k in enumerate(FIT)}
    t_total = time.perf_counter() - t0
    final = {k: float(jnp.exp(u[k])) for k in FIT}
    errors = {k: final[k] / truth[k] - 1 for k in FIT}
    print("recovered", final, "true", truth, f"({t_total:.1f} s)")

    write_record(args.out, settings={
        "potential": "jcsp shipped Si.sw", "fitted": list(FIT), "perturbation": PERTURB,
        "pressures_GPa": list(PRESSURES), "phases": list(start),
        "targets": "conventional lattice constants: diamond a, beta-tin a and c, bcc a",
        "adam_steps": args.adam_steps, "adam_lr_log_params": args.lr,
        "gauss_newton_steps": args.newton_steps, "fmax": 1e-6},
        results={"true": truth, "start": {k: truth[k] * PERTURB[k] for k in FIT},
                 "after_adam_relative_error": adam_final, "recovered": final,
                 "relative_error": errors,
                 "max_abs_relative_error": max(abs(e) for e in errors.values()),
                 "target_lattice_constants_A": [float(x) for x in target],
                 "initial_loss": history[0]["loss"],
                 "loss_after_adam": history[args.adam_steps]["loss"],
                 "final_loss": history[-1]["loss"], "adam_seconds": t_adam,
                 "total_seconds": t_total, "history": history},
        notes="Each step relaxes 6 structures in one batch (compiled once) and back-"
              "propagates through them implicitly; times are warm, on a shared 2-core CPU.")
    _plot(history, args.plot)


def _plot(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    steps = np.arange(len(history))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogy(steps, [h["loss"] for h in history], "k-")
    ax1.set_xlabel("iteration (Adam, then Gauss-Newton)")
    ax1.set_ylabel("loss (sum of squared relative lattice errors)")
    for k in FIT:
        ax2.semilogy(steps, [abs(h["relative_error"][k]) + 1e-17 for h in history], label=k)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("|relative parameter error|")
    ax2.legend()
    n_adam = sum(h["stage"] == "adam" for h in history)
    for ax in (ax1, ax2):
        ax.axvline(n_adam - 0.5, color="grey", ls=":")
    fig.suptitle("Recovering Si.sw parameters through relaxations (diamond, beta-tin, bcc)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print("plot:", path)


if __name__ == "__main__":
    main()

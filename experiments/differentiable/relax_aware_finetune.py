"""Experiment (c): relaxation-aware fine-tuning of the shipped jcsp.ml silicon model.

The shipped ``ml-si`` model was trained on energies, forces and stresses of the mlearn
Si data (Zuo et al., J. Phys. Chem. A 124, 731 (2020)). Here it is fine-tuned on a loss
on *relaxed geometries* instead: the mlearn surface slabs whose DFT forces are below
``--max-dft-force`` (their atoms sit at a DFT minimum, to that precision) are relaxed
by the model at the DFT cell (``relax_cell=False``), and the loss is the mean squared
displacement of the model-relaxed atoms from the DFT positions (net translation
removed), plus the squared relative error of the model's relaxed diamond lattice
constant against the DFT one (the unstrained cell of the mlearn "Elastic" group), plus
an anchor: the usual energy and force errors on a fixed batch of labelled training
structures (without it the geometry loss alone pulls energies away from the data).
Its gradient with respect to the 28k network parameters comes from
``jcsp.relax_differentiable`` (implicit differentiation; no optimiser iterations are
back-propagated). Adam (Kingma & Ba, ICLR 2015) takes the steps.

Reported before and after: the relaxed-geometry RMSD of the training slabs and of the
held-out slabs of ``test.json`` (never in the loss), the lattice constant, and the
model's energy / force / stress errors on the whole mlearn test set (to see what the
fine-tuning costs there).

Run:  python experiments/differentiable/relax_aware_finetune.py     (several minutes)
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
from ase.build import bulk

import jcsp
from jcsp.ml.batch_eval import predict, to_device
from jcsp.ml.data import Packer, labels_of, read_mlearn
from jcsp.ml.evaluate import metrics, predict_structures
from jcsp.potential_spec import load_potential
from jcsp.structures.convert import from_atoms

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from records import RESULTS, write_record  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "..", "shared", "data", "mlearn", "Si")


def _relaxed_slabs(structures, max_force, max_atoms):
    out = [a for a in structures if a.info["group"] == "Surface"
           and np.abs(a.get_forces()).max() < max_force and len(a) <= max_atoms]
    return sorted(out, key=len)


def _dft_lattice_constant(structures):
    """Diamond a from the mlearn Elastic group: the unstrained edge of its 2x2x2 cells."""
    edges = [np.linalg.norm(a.cell[:], axis=1) for a in structures if a.info["group"] == "Elastic"]
    values, counts = np.unique(np.round(np.concatenate(edges), 6), return_counts=True)
    return float(values[np.argmax(counts)]) / 2


def _anchor(potential, structures, atoms, seed):
    """A fixed packed batch of about ``atoms`` atoms of labelled training structures
    (not slabs) and the loss of the model on it: squared errors of energy per atom and
    of force components, each over the shipped model's own MAE on the test set."""
    rng = np.random.default_rng(seed)
    pool = [a for a in structures if a.info["group"] != "Surface"]
    chosen, total = [], 0
    for k in rng.permutation(len(pool)):
        if total + len(pool[k]) > atoms:
            continue
        chosen.append(pool[k])
        total += len(pool[k])
    labels = labels_of(chosen)
    packer = Packer.for_data([labels], potential.cutoff, atoms_per_batch=atoms)
    (group,) = packer.plan(labels)
    b = to_device(packer.batch(labels, group), jnp.float64)
    sigma_e, sigma_f = 2.2e-3, 0.055  # eV/atom, eV/Å: the shipped model's test MAE

    def loss(params):
        out = predict(potential, params, b)
        n = jnp.maximum(b["n_atoms"], 1)
        de = jnp.where(b["slot_mask"], (out["energy"] - b["energy"]) / n, 0.0)
        df = jnp.where(b["mask"][:, None], out["forces"] - b["forces"], 0.0)
        e_mse = jnp.sum(de * de) / jnp.sum(b["slot_mask"])
        f_mse = jnp.sum(df * df) / (3 * jnp.sum(b["mask"]))
        return e_mse / sigma_e**2 + f_mse / sigma_f**2

    return loss, [a.info["description"] for a in chosen]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-dft-force", type=float, default=0.04, help="eV/Å")
    parser.add_argument("--max-atoms", type=int, default=24, help="largest training slab")
    parser.add_argument("--max-held-out-atoms", type=int, default=40)
    parser.add_argument("--lattice-weight", type=float, default=100.0, help="Å² per unit "
                        "squared relative lattice error")
    parser.add_argument("--rmsd-scale", type=float, default=0.05,
                        help="Å: the relaxed-geometry term is mean(RMSD^2) / scale^2")
    parser.add_argument("--anchor-atoms", type=int, default=512,
                        help="atoms of labelled training data in the anchor term (0: none)")
    parser.add_argument("--out", default=os.path.join(
        RESULTS, "differentiable_relax_aware_finetune.json"))
    parser.add_argument("--plot", default=os.path.join(HERE, "relax_aware_finetune.png"))
    args = parser.parse_args()

    ml = load_potential("ml-si")
    train = read_mlearn(os.path.join(args.data, "training.json"))
    test = read_mlearn(os.path.join(args.data, "test.json"))
    slabs = _relaxed_slabs(train, args.max_dft_force, args.max_atoms)
    held_out = _relaxed_slabs(test, args.max_dft_force, args.max_held_out_atoms)
    a_dft = _dft_lattice_constant(train)
    print(f"{len(slabs)} training slabs, {len(held_out)} held-out slabs, DFT a = {a_dft} Å")
    pop = from_atoms(slabs)
    pop_held = from_atoms(held_out)
    diamond = from_atoms([bulk("Si", "diamond", a=a_dft)])
    target = [jnp.asarray(p) for p in (pop.positions, pop_held.positions)]

    def rmsd(params, population, reference):
        """[B] RMSD (Å) of the model-relaxed atoms from the DFT ones, translation removed,
        and [B] whether each relaxation ended at a converged strict minimum (a gradient
        is only asked of those)."""
        out = jcsp.relax_differentiable(population, ml, params=params, relax_cell=False)
        m = population.mask[..., None]
        n = jnp.sum(population.mask, axis=1)
        d = jnp.where(m, out.positions - reference, 0.0)
        d = jnp.where(m, d - jnp.sum(d, axis=1, keepdims=True) / n[:, None, None], 0.0)
        r = jnp.sqrt(jnp.sum(d * d, axis=(1, 2)) / n)
        return jnp.where(out.valid, r, jax.lax.stop_gradient(r)), out.valid

    def lattice_error(params):
        out = jcsp.relax_differentiable(diamond, ml, params=params)
        if not out.valid.all():
            raise RuntimeError("diamond is not a strict minimum of the model")
        a = jnp.sqrt(2.0) * jnp.mean(jnp.linalg.norm(out.cell[0], axis=1))
        return a / a_dft - 1.0

    if args.anchor_atoms:
        anchor, anchor_structures = _anchor(ml, train, args.anchor_atoms, 0)
    else:
        anchor, anchor_structures = (lambda params: 0.0), []

    def loss(params):
        r, valid = rmsd(params, pop, target[0])
        e = lattice_error(params)
        a = anchor(params)
        # slabs whose relaxation did not end at a strict minimum sit out this step
        msd = jnp.sum(jnp.where(valid, r * r, 0.0)) / max(int(valid.sum()), 1)
        geometry = (msd + args.lattice_weight * e * e) / args.rmsd_scale**2
        return geometry + a, (r, e, a, valid)

    def report(params, label):
        r_train, v_train = (np.asarray(x) for x in rmsd(params, pop, target[0]))
        r_held, v_held = (np.asarray(x) for x in rmsd(params, pop_held, target[1]))
        e = float(lattice_error(params))
        tuned = type(ml)(ml.config, params)
        m = metrics(predict_structures(tuned, test))
        row = {"train_slab_rmsd_A": r_train.tolist(), "held_out_slab_rmsd_A": r_held.tolist(),
               "train_slab_valid": v_train.tolist(), "held_out_slab_valid": v_held.tolist(),
               "train_slab_rmsd_mean_A": float(r_train.mean()),
               "held_out_slab_rmsd_mean_A": float(r_held.mean()),
               "lattice_constant_A": a_dft * (1 + e), "lattice_relative_error": e,
               "test_set_metrics": m}
        print(f"{label}: slab RMSD train {r_train.mean():.4f} Å, held-out {r_held.mean():.4f} Å, "
              f"a = {a_dft * (1 + e):.5f} Å ({e:+.2e}); test E MAE "
              f"{1000 * m['energy_mae']:.2f} meV/atom, F MAE {m['forces_mae']:.4f} eV/Å",
              flush=True)
        return row

    params = ml.params
    before = report(params, "before")
    optimizer = optax.adam(args.lr)
    state = optimizer.init(params)
    value_and_grad = jax.value_and_grad(loss, has_aux=True)
    history = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        (value, (r, e, a, valid)), grad = value_and_grad(params)
        history.append({"step": step, "loss": float(value), "train_rmsd_mean_A": float(jnp.mean(r)),
                        "lattice_relative_error": float(e), "anchor_loss": float(a),
                        "slabs_sitting_out": np.flatnonzero(~np.asarray(valid)).tolist()})
        print(f"step {step:3d} loss {float(value):.4e} RMSD {float(jnp.mean(r)):.4f} Å "
              f"a error {float(e):+.2e} anchor {float(a):.3f} invalid "
              f"{np.flatnonzero(~np.asarray(valid)).tolist()} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        updates, state = optimizer.update(grad, state, params)
        params = optax.apply_updates(params, updates)
    seconds = time.perf_counter() - t0
    after = report(params, "after")
    write_record(args.out, settings={
        "model": "shipped ml-si (jcsp/data/models/si-mlearn)", "optimizer": "adam",
        "lr": args.lr, "steps": args.steps, "max_dft_force_eV_per_A": args.max_dft_force,
        "max_atoms": args.max_atoms, "max_held_out_atoms": args.max_held_out_atoms,
        "lattice_weight_A2": args.lattice_weight, "rmsd_scale_A": args.rmsd_scale,
        "anchor_atoms": args.anchor_atoms, "anchor_structures": anchor_structures,
        "train_slabs": [a.info["description"] for a in slabs],
        "held_out_slabs": [a.info["description"] for a in held_out],
        "dft_lattice_constant_A": a_dft, "fmax": 1e-6, "relax_cell_slabs": False},
        results={"before": before, "after": after, "history": history,
                 "fine_tuning_seconds": seconds},
        notes="Every step relaxes the training slabs (fixed DFT cells) and diamond (cell "
              "relaxed) with the model and differentiates through the relaxations "
              "implicitly. Shared 2-core CPU; float64.")
    _plot(history, before, after, args.plot)


def _plot(history, before, after, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([h["step"] for h in history], [h["train_rmsd_mean_A"] for h in history], "k.-")
    ax1.set_xlabel("Adam step")
    ax1.set_ylabel("mean relaxed-slab RMSD vs DFT (Å)")
    n = len(before["train_slab_rmsd_A"])
    x = np.arange(n + len(before["held_out_slab_rmsd_A"]))
    ax2.bar(x - 0.2, before["train_slab_rmsd_A"] + before["held_out_slab_rmsd_A"], 0.4,
            label="before")
    ax2.bar(x + 0.2, after["train_slab_rmsd_A"] + after["held_out_slab_rmsd_A"], 0.4,
            label="after")
    ax2.axvline(n - 0.5, color="grey", ls=":")
    ax2.set_xlabel("slab (left: training, right of the line: held out)")
    ax2.set_ylabel("RMSD (Å)")
    ax2.legend()
    fig.suptitle("Relaxation-aware fine-tuning of ml-si on DFT-relaxed mlearn slabs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print("plot:", path)


if __name__ == "__main__":
    main()

"""Scoring a potential on labelled structures: errors, committee spread, parity plots.

:func:`predict_structures` runs the potential on packed batches (one compilation for the
whole set) and returns per-structure predictions; :func:`metrics` turns them into MAE and
RMSE of energy per atom (eV/atom), force components (eV/Å) and stress components (GPa);
for a committee it adds the spread of the members and how well the spread ranks the
true error (:func:`calibration`). :func:`parity_plots` draws predicted against
reference values.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..potentials.base import Potential
from ..units import ev_per_a3_to_gpa
from .batch_eval import predict, to_device
from .data import Labels, Packer, labels_of


@dataclasses.dataclass
class Predictions:
    """Per-structure predictions next to the reference labels.

    Attributes:
      labels: the reference data.
      energy: [M] eV; forces: list of [n_m, 3] eV/Å; stress: [M, 3, 3] eV/Å³.
      energy_std, forces_std, stress_std: committee spread (None for one model):
        [M] eV, list of [n_m, 3], [M, 3, 3].
    """

    labels: Labels
    energy: np.ndarray
    forces: list
    stress: np.ndarray
    energy_std: np.ndarray | None = None
    forces_std: list | None = None
    stress_std: np.ndarray | None = None


def predict_structures(potential: Potential, structures: list, *, atoms_per_batch: int = 256,
                       dtype=jnp.float64) -> Predictions:
    """Energies, forces and stresses of labelled structures (and the committee spread)."""
    potential.check_species({int(z) for a in structures for z in a.numbers})
    labels = labels_of(structures)
    packer = Packer.for_data([labels], potential.cutoff, atoms_per_batch=atoms_per_batch)
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), potential.params)
    committee = potential.committee_size is not None

    @jax.jit
    def run(params, b):
        if committee:
            members = jax.vmap(lambda p: predict(potential.member, p, b))(
                potential.member_params(params))
            mean = jax.tree.map(lambda x: jnp.mean(x, 0), members)
            std = jax.tree.map(lambda x: jnp.std(x, 0), members)
            return mean, std
        return predict(potential, params, b), None

    n = len(labels)
    energy, stress = np.zeros(n), np.zeros((n, 3, 3))
    forces = [None] * n
    e_std, s_std = (np.zeros(n), np.zeros((n, 3, 3))) if committee else (None, None)
    f_std = [None] * n if committee else None
    cache: dict = {}
    for group in packer.plan(labels):
        batch = packer.batch(labels, group, cache)
        mean, std = jax.device_get(run(params, to_device(batch, dtype)))
        start = 0
        for slot, m in enumerate(group):
            k = int(batch.n_atoms[slot])
            energy[m] = mean["energy"][slot]
            stress[m] = mean["stress"][slot]
            forces[m] = np.asarray(mean["forces"][start:start + k])
            if committee:
                e_std[m] = std["energy"][slot]
                s_std[m] = std["stress"][slot]
                f_std[m] = np.asarray(std["forces"][start:start + k])
            start += k
    return Predictions(labels, energy, forces, stress, e_std, f_std, s_std)


def metrics(pred: Predictions) -> dict:
    """MAE / RMSE of energy per atom (eV/atom), force components (eV/Å), stress (GPa)."""
    lab = pred.labels
    n = lab.n_atoms
    de = (pred.energy - lab.energy) / n
    df = np.concatenate([(p - r).ravel() for p, r in zip(pred.forces, lab.forces)])
    out = {"structures": int(len(lab)), "atoms": int(n.sum()),
           "energy_mae": float(np.mean(np.abs(de))), "energy_rmse": float(np.sqrt(np.mean(de ** 2))),
           "forces_mae": float(np.mean(np.abs(df))), "forces_rmse": float(np.sqrt(np.mean(df ** 2)))}
    if lab.has_stress.any():
        ds = ev_per_a3_to_gpa(pred.stress - lab.stress)[lab.has_stress].ravel()
        out["stress_mae"] = float(np.mean(np.abs(ds)))
        out["stress_rmse"] = float(np.sqrt(np.mean(ds ** 2)))
    if pred.energy_std is not None:
        out.update(calibration(pred))
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def calibration(pred: Predictions) -> dict:
    """How the committee spread tracks the true error on these structures.

    Returns the mean spread, the Spearman rank correlation between spread and absolute
    error (per structure for energy per atom, per atom for force vectors), and the ratio
    RMSE / RMS spread (1 for a calibrated Gaussian committee; > 1 overconfident).
    """
    lab = pred.labels
    n = lab.n_atoms
    e_err = np.abs(pred.energy - lab.energy) / n
    e_std = pred.energy_std / n
    f_err = np.concatenate([np.linalg.norm(p - r, axis=1) for p, r in zip(pred.forces, lab.forces)])
    f_std = np.concatenate([np.linalg.norm(s, axis=1) for s in pred.forces_std])
    return {"energy_std_mean": float(np.mean(e_std)),
            "forces_std_mean": float(np.mean(f_std) / np.sqrt(3.0)),
            "energy_spearman": _spearman(e_std, e_err),
            "forces_spearman": _spearman(f_std, f_err),
            "energy_rmse_over_std": float(np.sqrt(np.mean(e_err ** 2))
                                          / max(np.sqrt(np.mean(e_std ** 2)), 1e-30)),
            "forces_rmse_over_std": float(np.sqrt(np.mean(f_err ** 2))
                                          / max(np.sqrt(np.mean(f_std ** 2)), 1e-30))}


def format_metrics(m: dict) -> str:
    """A short human-readable table of :func:`metrics`."""
    lines = [f"{m['structures']} structures, {m['atoms']} atoms",
             f"{'quantity':<22}{'MAE':>12}{'RMSE':>12}",
             f"{'energy (meV/atom)':<22}{1e3 * m['energy_mae']:>12.3f}{1e3 * m['energy_rmse']:>12.3f}",
             f"{'forces (eV/Å)':<22}{m['forces_mae']:>12.4f}{m['forces_rmse']:>12.4f}"]
    if "stress_mae" in m:
        lines.append(f"{'stress (GPa)':<22}{m['stress_mae']:>12.4f}{m['stress_rmse']:>12.4f}")
    if "energy_std_mean" in m:
        lines.append(f"committee spread: energy {1e3 * m['energy_std_mean']:.3f} meV/atom, "
                     f"forces {m['forces_std_mean']:.4f} eV/Å; rank correlation with the "
                     f"error: energy {m['energy_spearman']:.2f}, forces {m['forces_spearman']:.2f}; "
                     f"RMSE/spread: energy {m['energy_rmse_over_std']:.2f}, "
                     f"forces {m['forces_rmse_over_std']:.2f}")
    return "\n".join(lines)


def parity_plots(pred: Predictions, path: str, *, title: str = "") -> str:
    """Predicted vs reference energy per atom, force components and stress; one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = pred.labels
    n = lab.n_atoms
    panels = [("energy (eV/atom)", lab.energy / n, pred.energy / n),
              ("force component (eV/Å)", np.concatenate([f.ravel() for f in lab.forces]),
               np.concatenate([f.ravel() for f in pred.forces]))]
    if lab.has_stress.any():
        stressed = lab.has_stress
        panels.append(("stress component (GPa)", ev_per_a3_to_gpa(lab.stress[stressed]).ravel(),
                       ev_per_a3_to_gpa(pred.stress[stressed]).ravel()))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0))
    for ax, (name, ref, got) in zip(np.atleast_1d(axes), panels):
        lo, hi = float(min(ref.min(), got.min())), float(max(ref.max(), got.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1)
        ax.scatter(ref, got, s=6, alpha=0.6)
        mae = np.mean(np.abs(got - ref))
        ax.set_title(f"{name}\nMAE {mae:.3g}", fontsize=10)
        ax.set_xlabel("reference (DFT)")
        ax.set_ylabel("predicted")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

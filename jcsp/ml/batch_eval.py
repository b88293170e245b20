"""Energies, forces and stresses of a packed batch of structures (training and scoring).

The structures of a :class:`jcsp.ml.data.Batch` share one atom axis; each has its own
cell and its own symmetric strain, so one ``value_and_grad`` gives every structure's
forces (``-dE/dr``) and stress (``(1/V) dE/d strain``, ASE sign), exactly as
:mod:`jcsp.derivatives` does for one structure. Committees map this over a leading
member axis of the parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..graph import FAR, Graph
from ..potentials.base import Potential


def to_device(batch, dtype) -> dict:
    """A :class:`~jcsp.ml.data.Batch` as a dict of device arrays (floats in ``dtype``).

    The fields are cast in numpy and moved in one ``device_put``: a jnp operation per
    field cost as much as the training step itself on a CPU.
    """
    return jax.device_put(to_host(batch, dtype))


def to_host(batch, dtype) -> dict:
    """A :class:`~jcsp.ml.data.Batch` as a dict of numpy arrays (floats in ``dtype``)."""
    dtype = np.dtype(dtype)
    return {name: value.astype(dtype) if np.issubdtype(value.dtype, np.floating) else value
            for name, value in vars(batch).items()}


def predict(potential: Potential, params, b: dict) -> dict:
    """Per-structure energies [S], forces [A, 3] and stresses [S, 3, 3] of a batch."""
    dtype = b["positions"].dtype
    n_slots = b["cell"].shape[0]
    onehot = (b["structure"][None, :] == jnp.arange(n_slots)[:, None]).astype(dtype)  # [S, A]
    far = jnp.zeros(3, dtype).at[0].set(FAR)

    def total(pos, strain):
        deform = jnp.eye(3, dtype=dtype) + 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        per_atom = deform[b["structure"]]
        pos_d = jnp.einsum("ai,aij->aj", pos, per_atom)
        cell_d = jnp.einsum("sij,sjk->sik", b["cell"], deform)
        vec = (pos_d[b["nbr_idx"]] - pos_d[:, None, :]
               + jnp.einsum("akj,ajl->akl", b["nbr_shift"], cell_d[b["structure"]]))
        vec = jnp.where(b["nbr_mask"][..., None], vec, far)
        graph = Graph(positions=pos_d, cell=cell_d, species=b["species"], mask=b["mask"],
                      nbr_idx=b["nbr_idx"], nbr_vec=vec, nbr_mask=b["nbr_mask"])
        e = jnp.where(b["mask"], potential.energies(params, graph), 0.0)
        energy = onehot @ e
        return jnp.sum(energy), energy

    zero = jnp.zeros((n_slots, 3, 3), dtype)
    (_, energy), (g_pos, g_strain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        b["positions"], zero)
    volume = jnp.abs(jnp.linalg.det(b["cell"]))
    stress = g_strain / volume[:, None, None]
    return {"energy": energy, "forces": -g_pos, "stress": stress}


#: eV/Å³ -> GPa, for the stress term of the loss.
GPA = 160.21766208


def errors(pred: dict, b: dict) -> dict:
    """Masked residuals: energy per atom [S], forces [A, 3], stress in GPa [S, 3, 3]."""
    n = jnp.maximum(b["n_atoms"], 1).astype(pred["energy"].dtype)
    return {"energy": jnp.where(b["slot_mask"], (pred["energy"] - b["energy"]) / n, 0.0),
            "forces": jnp.where(b["mask"][:, None], pred["forces"] - b["forces"], 0.0),
            "stress": jnp.where(b["has_stress"][:, None, None],
                                GPA * (pred["stress"] - b["stress"]), 0.0)}


def loss_terms(err: dict, b: dict) -> dict:
    """Mean squared residuals of one batch (each over the entries that exist)."""
    n_s = jnp.maximum(jnp.sum(b["slot_mask"]), 1)
    n_f = jnp.maximum(3 * jnp.sum(b["mask"]), 1)
    n_v = jnp.maximum(9 * jnp.sum(b["has_stress"]), 1)
    return {"energy": jnp.sum(err["energy"] ** 2) / n_s,
            "forces": jnp.sum(err["forces"] ** 2) / n_f,
            "stress": jnp.sum(err["stress"] ** 2) / n_v}

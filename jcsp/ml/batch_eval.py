"""Energies, forces and stresses of a packed batch of structures (training and scoring).

The structures of a :class:`jcsp.ml.data.Batch` share one atom axis; each has its own
cell. This module builds the packed graph and the loss; forces and stresses come from
:func:`jcsp.derivatives.strain_derivatives` with one strain per structure, the same
engine that serves single structures. Committees map :func:`predict` over a leading
member axis of the parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..derivatives import strain_derivatives
from ..graph import Graph, edge_vectors
from ..potentials.base import Potential
from ..units import ev_per_a3_to_gpa


def to_device(batch, dtype) -> dict:
    """A :class:`~jcsp.ml.data.Batch` as a dict of device arrays (floats in ``dtype``),
    cast on the host and moved in one ``device_put``."""
    return jax.device_put(to_host(batch, dtype))


def to_host(batch, dtype) -> dict:
    """A :class:`~jcsp.ml.data.Batch` as a dict of numpy arrays (floats in ``dtype``)."""
    dtype = np.dtype(dtype)
    return {name: value.astype(dtype) if np.issubdtype(value.dtype, np.floating) else value
            for name, value in vars(batch).items()}


def predict(potential: Potential, params, b: dict) -> dict:
    """Per-structure energies [S], forces [A, 3] and stresses [S, 3, 3] of a batch."""
    def atom_energies(positions, cells):
        offsets = jnp.einsum("akj,ajl->akl", b["nbr_shift"], cells[b["structure"]])
        graph = Graph(positions=positions, cell=cells, species=b["species"], mask=b["mask"],
                      nbr_idx=b["nbr_idx"],
                      nbr_vec=edge_vectors(positions, b["nbr_idx"], offsets, b["nbr_mask"]),
                      nbr_mask=b["nbr_mask"])
        return potential.energies(params, graph)

    out = strain_derivatives(atom_energies, b["positions"], b["cell"], b["mask"],
                             b["structure"])
    return {"energy": out.energy, "forces": out.forces, "stress": out.stress}


def errors(pred: dict, b: dict) -> dict:
    """Masked residuals: energy per atom [S], forces [A, 3], stress in GPa [S, 3, 3]."""
    n = jnp.maximum(b["n_atoms"], 1).astype(pred["energy"].dtype)
    return {"energy": jnp.where(b["slot_mask"], (pred["energy"] - b["energy"]) / n, 0.0),
            "forces": jnp.where(b["mask"][:, None], pred["forces"] - b["forces"], 0.0),
            "stress": jnp.where(b["has_stress"][:, None, None],
                                ev_per_a3_to_gpa(pred["stress"] - b["stress"]), 0.0)}


def loss_terms(err: dict, b: dict) -> dict:
    """Mean squared residuals of one batch (each over the entries that exist)."""
    n_s = jnp.maximum(jnp.sum(b["slot_mask"]), 1)
    n_f = jnp.maximum(3 * jnp.sum(b["mask"]), 1)
    n_v = jnp.maximum(9 * jnp.sum(b["has_stress"]), 1)
    return {"energy": jnp.sum(err["energy"] ** 2) / n_s,
            "forces": jnp.sum(err["forces"] ** 2) / n_f,
            "stress": jnp.sum(err["stress"] ** 2) / n_v}

"""The graph an energy model sees: atoms, cell and neighbor edge vectors of one structure.

Edge vectors are recomputed from positions and cell inside differentiated code, so the
derivative engine (:mod:`jcsp.derivatives`) gets forces and stress by autodiff through
them; neighbor indices and shifts are integers and carry no gradient.

Padded edges hold :data:`FAR`, a vector far beyond any cutoff, so ``norm`` stays finite
and differentiable there; models still mask them with ``nbr_mask``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from .neighbors import NeighborList

Array = jax.Array

#: Length (Å) of the stand-in vector stored on padded edges.
FAR = 1.0e4


@struct.dataclass
class Graph:
    """One structure as an energy model sees it.

    Attributes:
      positions: [N, 3] Cartesian positions, Å.
      cell: [3, 3] rows are lattice vectors, Å.
      species: [N] int32 atomic numbers.
      mask: [N] bool, real atoms.
      nbr_idx: [N, K] int32 neighbor index j of each edge i -> j.
      nbr_vec: [N, K, 3] r_j + shift @ cell - r_i, Å; FAR along x on padded edges.
      nbr_mask: [N, K] bool, real edges.
      pbc: static periodicity (bool, bool, bool).
      half: static; the edges are a half list (each pair once, from one end), which
        only potentials that declare ``half_lists`` accept.
    """

    positions: Array
    cell: Array
    species: Array
    mask: Array
    nbr_idx: Array
    nbr_vec: Array
    nbr_mask: Array
    pbc: tuple = struct.field(pytree_node=False, default=(True, True, True))
    half: bool = struct.field(pytree_node=False, default=False)

    @property
    def volume(self) -> Array:
        return jnp.abs(jnp.linalg.det(self.cell))


def make_graph(positions, cell, species, mask, nbrs: NeighborList, pbc) -> Graph:
    """Edge vectors from (differentiable) positions and cell and a neighbor list."""
    offsets = jnp.einsum("nka,ab->nkb", nbrs.shift, cell)
    vec = edge_vectors(positions, nbrs.idx, offsets, nbrs.mask)
    return Graph(positions=positions, cell=cell, species=species, mask=mask,
                 nbr_idx=nbrs.idx, nbr_vec=vec, nbr_mask=nbrs.mask, pbc=tuple(pbc),
                 half=nbrs.half)


def edge_vectors(positions: Array, nbr_idx: Array, offsets: Array, nbr_mask: Array) -> Array:
    """[N, K, 3] ``r_j + offset - r_i`` on real edges, :data:`FAR` along x on padded ones.

    Args:
      positions: [N, 3] Cartesian positions, Å.
      nbr_idx: [N, K] neighbor index j of each edge.
      offsets: [N, K, 3] Cartesian lattice translation of each edge (its integer shift
        times the cell of the atom's structure), Å.
      nbr_mask: [N, K] real edges.
    """
    vec = positions[nbr_idx] + offsets - positions[:, None, :]
    far = jnp.zeros(3, positions.dtype).at[0].set(FAR)
    return jnp.where(nbr_mask[..., None], vec, far)


def safe_norm(vec: Array, mask: Array) -> Array:
    """|vec| over the last axis with a finite gradient where ``mask`` is false."""
    ok = mask[..., None]
    safe = jnp.where(ok, vec, jnp.ones_like(vec))
    return jnp.where(mask, jnp.sqrt(jnp.sum(safe * safe, axis=-1)), 0.0)

"""Periodic neighbor lists with fixed capacity, correct for any cell.

Each real atom ``i`` gets up to ``capacity`` neighbors ``(j, shift)`` with
``|r_j + shift @ cell - r_i| < cutoff``. ``shift`` is an integer vector of lattice
translations, so a pair may appear with several shifts and an atom may neighbor its own
images: cells thinner than twice the cutoff (common in structure prediction) are
handled exactly, unlike minimum-image lists.

A *half* list (``NeighborSpec.half``) holds each pair once instead of once from each
end: ``(i, j, shift)`` is kept when ``shift`` is lexicographically positive, or is zero
and ``j > i``, so of ``(i, j, S)`` and ``(j, i, -S)`` exactly one is kept and every atom
keeps about half of its neighbors (in cells smaller than the cutoff, where most
neighbors are images). Pair potentials evaluate half lists in half the work; a
potential declares that it can (:attr:`jcsp.potentials.Potential.half_lists`).

The candidate images are a static box ``[-n_a..n_a] x [-n_b..n_b] x [-n_c..n_c]``:
``n_k = ceil(cutoff / d_k)`` with ``d_k`` the spacing of the lattice planes normal to
reciprocal vector ``k``. Two things can outgrow a static spec while cells change under
relaxation: more neighbors than ``capacity``, or a cell thin enough to need more
images. Both raise the per-structure ``overflow`` flag instead of dropping pairs; the
host (:func:`spec_for`; :class:`jcsp.capacity.Capacity` for streams of batches)
reallocates and reruns. Nothing is ever silently lost.

Functions here act on one structure; batch them with ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class NeighborSpec:
    """Static shape of a neighbor list (hashable: it decides compiled shapes).

    Attributes:
      cutoff: interaction cutoff in Å; ``None`` means all pairs (clusters only).
      capacity: maximum neighbors per atom (K).
      images: (n_a, n_b, n_c) image range searched along each lattice vector.
      half: each pair once (see the module docstring) instead of once from each end.
    """

    cutoff: float | None
    capacity: int
    images: tuple[int, int, int]
    half: bool = False

    @property
    def shifts(self) -> np.ndarray:
        """[S, 3] candidate lattice shifts, (0, 0, 0) first."""
        axes = [np.arange(-n, n + 1) for n in self.images]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        order = np.argsort(np.abs(grid).sum(1), kind="stable")
        return grid[order].astype(np.float64)


@struct.dataclass
class NeighborList:
    """Neighbors of each atom, padded to ``capacity``.

    Attributes:
      idx: [N, K] int32 index j of each neighbor (i itself on padded entries).
      shift: [N, K, 3] lattice shift of each neighbor, in units of the cell rows,
        relative to the *unwrapped* fractional coordinates given to :func:`build`.
      mask: [N, K] bool, true on real entries.
      count: [] int32, the largest number of neighbors any atom has.
      overflow: [] bool, true when ``count > capacity`` or the cell needs more images.
      ref_frac: [N, 3] the fractional coordinates the list was built from.
      ref_cell: [3, 3] the cell the list was built from.
      half: static; each pair once (a half list) rather than from both ends.
    """

    idx: Array
    shift: Array
    mask: Array
    count: Array
    overflow: Array
    ref_frac: Array
    ref_cell: Array
    half: bool = struct.field(pytree_node=False, default=False)


def half_keep(shifts, n: int, xp=jnp):
    """[N(i), S, N(j)] bool: the pairs a half list keeps, for candidate lattice
    ``shifts`` [S, 3] (integers as floats) between ``n`` atoms."""
    a, b, c = shifts[:, 0], shifts[:, 1], shifts[:, 2]
    positive = (a > 0) | ((a == 0) & ((b > 0) | ((b == 0) & (c > 0))))
    zero = (a == 0) & (b == 0) & (c == 0)
    later = xp.arange(n)[None, :] > xp.arange(n)[:, None]  # j > i
    return positive[None, :, None] | (zero[None, :, None] & later[:, None, :])


def plane_spacings(cell):
    """[..., 3] spacing of lattice planes normal to each reciprocal vector, Å."""
    cell = jnp.asarray(cell)
    recip = jnp.linalg.inv(cell)  # columns are reciprocal vectors / 2pi
    return 1.0 / jnp.linalg.norm(recip, axis=-2)


def required_images(cell, cutoff: float | None, pbc) -> np.ndarray:
    """[..., 3] image range needed to find every neighbor within ``cutoff`` (host side)."""
    cell = np.asarray(cell, float)
    if cutoff is None:
        if any(pbc):
            raise ValueError("an infinite cutoff (all pairs) needs a non-periodic cluster")
        return np.zeros(cell.shape[:-2] + (3,), int)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=-2)
    n = np.ceil(cutoff / spacing - 1e-12).astype(int)
    return np.where(np.asarray(pbc, bool), n, 0)


def _candidates(cutoff, shifts, frac, cell, mask, periodic, half=False):
    """[N(i), S, N(j)] bool: is (i, shift, j) a pair within ``cutoff``? Also the floors
    used to wrap the coordinates, [N, 3]."""
    n = frac.shape[0]
    floor = jnp.where(periodic, jnp.floor(frac), 0.0)
    pos = (frac - floor) @ cell
    # |d_ij + T_s|^2 expanded so the only large product is a matrix multiplication.
    delta = pos[None, :, :] - pos[:, None, :]  # [N(i), N(j), 3]
    trans = shifts @ cell  # [S, 3]
    d2 = (jnp.sum(delta * delta, -1)[:, None, :]
          + 2.0 * jnp.einsum("ija,sa->isj", delta, trans)
          + jnp.sum(trans * trans, -1)[None, :, None])
    is_self = jnp.eye(n, dtype=bool)[:, None, :] & jnp.all(shifts == 0, axis=-1)[None, :, None]
    valid = mask[:, None, None] & mask[None, None, :] & ~is_self
    if cutoff is not None:
        valid = valid & (d2 < cutoff**2)
    if half:
        valid = valid & half_keep(shifts, n)
    return valid, floor


def build(spec: NeighborSpec, frac: Array, cell: Array, mask: Array, pbc) -> NeighborList:
    """Neighbor list of one structure (safe under jit and vmap).

    Args:
      spec: static shape (cutoff, capacity, image range).
      frac: [N, 3] fractional coordinates (any values; wrapped internally).
      cell: [3, 3] rows are lattice vectors, Å.
      mask: [N] bool, real atoms.
      pbc: static (bool, bool, bool).
    """
    n = frac.shape[0]
    k = spec.capacity
    shifts = jnp.asarray(spec.shifts, frac.dtype)  # [S, 3]
    s = shifts.shape[0]
    periodic = jnp.asarray(pbc, bool)
    valid, floor = _candidates(spec.cutoff, shifts, frac, cell, mask, periodic, spec.half)
    # Compaction: running count of the candidates of each atom in (shift, j) order, and
    # slot q holds the first candidate whose running count exceeds q (a binary search per
    # slot: O(K log(S N)) per atom, no scatter, no work that grows with S^2 or S K).
    running = jnp.cumsum(valid.reshape(n, s * n).astype(jnp.int32), axis=1)  # inclusive
    counts = running[:, -1] if s * n else jnp.zeros((n,), jnp.int32)
    q = jnp.arange(k, dtype=jnp.int32)
    flat = jax.vmap(lambda row: jnp.searchsorted(row, q, side="right", method="scan"))(running)
    flat = jnp.minimum(flat, s * n - 1)
    block = flat // n
    j = (flat % n).astype(jnp.int32)
    filled = jnp.arange(k)[None, :] < jnp.minimum(counts, k)[:, None]
    self_idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, k))
    idx = jnp.where(filled, j, self_idx)
    # Shift relative to unwrapped coordinates: r_j - r_i + (S - floor_j + floor_i) @ cell.
    shift = shifts[block] - floor[idx] + floor[:, None, :]
    shift = jnp.where(filled[..., None], shift, 0.0)
    nbr_mask = filled
    count = jnp.max(counts) if n else jnp.int32(0)
    overflow = count > k
    if spec.cutoff is not None:
        need = jnp.ceil(spec.cutoff / plane_spacings(cell) - 1e-12)
        short = periodic & (need > jnp.asarray(spec.images))
        overflow = overflow | jnp.any(short)
    return NeighborList(idx=idx, shift=shift, mask=nbr_mask, count=count.astype(jnp.int32),
                        overflow=overflow, ref_frac=frac, ref_cell=cell, half=spec.half)


def needs_rebuild(nbrs: NeighborList, frac: Array, cell: Array, mask: Array,
                  cutoff: float | None, list_cutoff: float | None) -> Array:
    """[] bool: may a pair now within ``cutoff`` be missing from a list built with
    ``list_cutoff = cutoff + skin`` at ``(nbrs.ref_frac, nbrs.ref_cell)``?

    With ``u`` the largest atomic displacement measured in the current cell and ``e`` the
    strain from the reference cell, every pair distance changed by at most
    ``2 |u| + list_cutoff * |e|_F``; the list stays complete while that is below the skin
    (Verlet's criterion extended to a deforming cell). Coordinates must not be wrapped
    between builds, since shifts refer to the unwrapped ones.
    """
    if cutoff is None or list_cutoff is None:
        return jnp.zeros((), bool)
    skin = list_cutoff - cutoff
    disp = (frac - nbrs.ref_frac) @ cell
    u = jnp.sqrt(jnp.max(jnp.where(mask, jnp.sum(disp * disp, axis=-1), 0.0)))
    strain = jnp.linalg.solve(nbrs.ref_cell, cell) - jnp.eye(3, dtype=cell.dtype)
    moved = 2.0 * u + list_cutoff * jnp.sqrt(jnp.sum(strain * strain))
    return ~(moved < skin)


def _round_up(x: int, multiple: int) -> int:
    return int(math.ceil(max(x, 1) / multiple) * multiple)


def count_neighbors(cutoff: float, images, frac, cell, mask, pbc, half: bool = False) -> int:
    """The largest number of neighbors within ``cutoff`` of any atom of a batch
    ([B, N, 3], [B, 3, 3], [B, N]), searching ``images`` (host side, numpy: sizing
    must not compile anything); ``half``: in a half list."""
    frac, cell, mask = (np.asarray(x) for x in (frac, cell, mask))
    shifts = NeighborSpec(cutoff, 1, tuple(images)).shifts  # [S, 3]
    periodic = np.asarray(pbc, bool)
    biggest = 0
    for f, c, m in zip(frac, cell, mask):
        if not m.any():
            continue
        f = f[m]
        pos = (f - np.where(periodic, np.floor(f), 0.0)) @ c
        trans = shifts @ c  # [S, 3]
        kept = half_keep(shifts, len(pos), np) if half else None
        for start in range(0, len(pos), 64):  # rows of i in chunks: bounded memory
            rows = pos[start:start + 64]
            d = pos[None, None, :, :] + trans[None, :, None, :] - rows[:, None, None, :]
            d2 = np.einsum("isjk,isjk->isj", d, d)
            near = d2 < cutoff**2
            self_pair = np.zeros_like(near)
            zero = int(np.flatnonzero((shifts == 0).all(1))[0])
            self_pair[np.arange(len(rows)), zero, start + np.arange(len(rows))] = True
            keep = near & ~self_pair
            if half:
                keep &= kept[start:start + 64]
            counts = np.sum(keep, axis=(1, 2))
            biggest = max(biggest, int(counts.max()))
    return max(biggest, 1)


def spec_for(cutoff: float | None, frac, cell, mask, pbc, *, margin: float = 1.2,
             cell_margin: float = 1.1) -> NeighborSpec:
    """Choose a spec that fits a batch now, with room to move (host side).

    Args:
      cutoff: Å, or ``None`` for all pairs of a cluster.
      frac, cell, mask: [B, N, 3], [B, 3, 3], [B, N] arrays of the batch.
      pbc: static periodicity.
      margin: capacity = margin x the largest neighbor count found.
      cell_margin: images are sized for ``cutoff * cell_margin`` so moderate cell
        changes during relaxation do not need a new spec.
    """
    frac = np.asarray(frac)
    n = frac.shape[1]
    if cutoff is None:
        return NeighborSpec(None, max(n - 1, 1), (0, 0, 0))
    images = required_images(cell, cutoff * cell_margin, pbc).reshape(-1, 3).max(axis=0)
    images = tuple(int(x) for x in images)
    biggest = count_neighbors(cutoff, images, frac, cell, mask, tuple(pbc))
    return NeighborSpec(cutoff, _round_up(int(biggest * margin) + 1, 4), images)

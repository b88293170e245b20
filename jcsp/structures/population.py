"""The padded population: many periodic crystals (or clusters) as one pytree.

A :class:`Population` holds ``B`` structures padded to ``N`` atoms each. Padding only
appends: atom ``i`` of structure ``b`` is real when ``mask[b, i]`` is true, and every
reduction in jcsp masks with it. An empty slot (all atoms masked) is a valid structure
with zero energy; batch drivers use such slots to keep shapes fixed.

Every array field has a scope, declared in :data:`SCOPE`: ``"atom"`` fields are
``[B, N, ...]``, ``"structure"`` fields are ``[B, ...]``. ``take``, ``concat``, ``pad``
and ``where`` are written once against that table.
"""

from __future__ import annotations


from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array

#: Scope of every array field: "atom" -> [B, N, ...], "structure" -> [B, ...].
SCOPE = {"frac": "atom", "species": "atom", "mask": "atom", "cell": "structure"}


@struct.dataclass
class Population:
    """A padded batch of structures.

    Attributes:
      frac: [B, N, 3] fractional coordinates (per atom). Not necessarily wrapped.
      cell: [B, 3, 3] cells in Å, rows are lattice vectors (per structure).
      species: [B, N] int32 atomic numbers (per atom); any value on padded atoms.
      mask: [B, N] bool, true on real atoms (per atom).
      pbc: static (bool, bool, bool); (False, False, False) for clusters, whose
        ``cell`` is then only a box that holds the atoms.
    """

    frac: Array
    cell: Array
    species: Array
    mask: Array
    pbc: tuple = struct.field(pytree_node=False, default=(True, True, True))

    @property
    def batch_size(self) -> int:
        return self.frac.shape[0]

    @property
    def n_max(self) -> int:
        return self.frac.shape[1]

    @property
    def positions(self) -> Array:
        """[B, N, 3] Cartesian positions in Å."""
        return jnp.einsum("bni,bij->bnj", self.frac, self.cell)

    @property
    def n_atoms(self) -> Array:
        """[B] number of real atoms."""
        return jnp.sum(self.mask, axis=-1)

    @property
    def volume(self) -> Array:
        """[B] cell volume in Å³."""
        return jnp.abs(jnp.linalg.det(self.cell))


def _xp(pop: Population):
    """The array module of a population: numpy for host-side ones (bookkeeping that
    should compile nothing), jax.numpy otherwise."""
    return np if isinstance(pop.frac, np.ndarray) else jnp


def _map_fields(pop: Population, atom_fn, structure_fn) -> Population:
    updates = {}
    for name, scope in SCOPE.items():
        value = getattr(pop, name)
        updates[name] = atom_fn(value) if scope == "atom" else structure_fn(value)
    return pop.replace(**updates)


def take(pop: Population, index) -> Population:
    """Structures ``index`` (int array) of a population, in that order."""
    index = np.asarray(index)
    return _map_fields(pop, lambda v: v[index], lambda v: v[index])


def where(select: Array, a: Population, b: Population) -> Population:
    """Per structure: ``a`` where ``select[b]`` is true, else ``b``. Same shapes."""

    def pick(x, y):
        s = select.reshape(select.shape + (1,) * (x.ndim - 1))
        return jnp.where(s, x, y)

    return jax.tree_util.tree_map(pick, a, b)


def concat(pops: Sequence[Population]) -> Population:
    """Concatenate along the batch axis; all must share N and pbc."""
    if len({p.n_max for p in pops}) != 1 or len({p.pbc for p in pops}) != 1:
        raise ValueError("concat needs populations with the same N_max and pbc")
    xp = _xp(pops[0])
    fields = {name: xp.concatenate([getattr(p, name) for p in pops]) for name in SCOPE}
    return Population(**fields, pbc=pops[0].pbc)


def _room(have: int, want: int, what: str) -> int:
    """How many ``what`` padding appends to go from ``have`` to ``want``."""
    if want < have:
        raise ValueError(f"cannot pad {have} {what} down to {want}")
    return want - have


def pad_atoms(pop: Population, n_max: int) -> Population:
    """Append masked atoms up to ``n_max`` per structure."""
    extra = _room(pop.n_max, n_max, "atoms")
    if extra == 0:
        return pop
    xp = _xp(pop)

    def pad(v):
        widths = [(0, 0), (0, extra)] + [(0, 0)] * (v.ndim - 2)
        return xp.pad(v, widths)

    return _map_fields(pop, pad, lambda v: v)


def empty_like(pop: Population, batch_size: int) -> Population:
    """A population of ``batch_size`` empty slots with the shapes of ``pop`` (10 Å
    cubic cells, no atoms)."""
    xp = _xp(pop)
    cell = xp.broadcast_to(xp.eye(3, dtype=pop.cell.dtype) * 10.0, (batch_size, 3, 3))
    return Population(
        frac=xp.zeros((batch_size, pop.n_max, 3), pop.frac.dtype),
        cell=cell,
        species=xp.zeros((batch_size, pop.n_max), pop.species.dtype),
        mask=xp.zeros((batch_size, pop.n_max), bool),
        pbc=pop.pbc,
    )


def pad_structures(pop: Population, batch_size: int) -> Population:
    """Append empty slots up to ``batch_size`` structures."""
    extra = _room(pop.batch_size, batch_size, "structures")
    return pop if extra == 0 else concat([pop, empty_like(pop, extra)])


def place(pop: Population, slots, batch_size: int) -> Population:
    """A population of ``batch_size`` slots holding structure ``k`` of ``pop`` in slot
    ``slots[k]``; the other slots are empty (as :func:`empty_like`)."""
    slots = np.asarray(slots, int)
    if len(slots) != pop.batch_size:
        raise ValueError(f"{pop.batch_size} structures need {pop.batch_size} slots, "
                         f"got {len(slots)}")
    empty = empty_like(pop, batch_size)
    if _xp(pop) is np:
        def put(e, v):
            e = np.array(e)
            e[slots] = v
            return e
    else:
        def put(e, v):
            return e.at[slots].set(v)
    return jax.tree_util.tree_map(put, empty, pop)


#: N_max ladder used by :func:`bucket_size`: sizes are rounded up to the next rung,
#: so mixed sizes share a few compiled shapes instead of one per size.
BUCKETS = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def bucket_size(n_atoms: int) -> int:
    """The N_max rung a structure of ``n_atoms`` atoms is padded to."""
    for rung in BUCKETS:
        if n_atoms <= rung:
            return rung
    return int(np.ceil(n_atoms / 256) * 256)


def bucket_indices(n_atoms: Sequence[int]) -> dict[int, list[int]]:
    """Group structure indices by their N_max rung, ascending."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(n_atoms):
        groups.setdefault(bucket_size(int(n)), []).append(i)
    return dict(sorted(groups.items()))


def stack(frac, cell, species, pbc=(True, True, True), *, n_max=None, dtype=None) -> Population:
    """Build a population from per-structure numpy arrays (host side).

    Args:
      frac: sequence of [n_b, 3] fractional coordinates.
      cell: sequence of [3, 3] cells (rows are lattice vectors), Å.
      species: sequence of [n_b] atomic numbers.
      pbc: periodicity, shared by all structures.
      n_max: pad to this many atoms (default: the largest structure).
      dtype: float dtype (default: float64 when x64 is enabled, else float32).
    """
    dtype = dtype or jnp.zeros(()).dtype
    sizes = [len(s) for s in species]
    n_max = n_max or max(sizes + [1])
    if max(sizes + [0]) > n_max:
        raise ValueError(f"a structure has {max(sizes)} atoms, more than n_max={n_max}")
    b = len(sizes)
    f = np.zeros((b, n_max, 3))
    z = np.zeros((b, n_max), np.int32)
    m = np.zeros((b, n_max), bool)
    for k, n in enumerate(sizes):
        f[k, :n] = frac[k]
        z[k, :n] = species[k]
        m[k, :n] = True
    return Population(
        frac=jnp.asarray(f, dtype),
        cell=jnp.asarray(np.asarray(cell, float).reshape(b, 3, 3), dtype),
        species=jnp.asarray(z),
        mask=jnp.asarray(m),
        pbc=tuple(bool(p) for p in pbc),
    )


def unstack(pop: Population) -> list[dict]:
    """Host-side view: a list of dicts with numpy ``frac``, ``cell``, ``species``."""
    frac, cell, z, m = (np.asarray(x) for x in (pop.frac, pop.cell, pop.species, pop.mask))
    return [
        {"frac": frac[b][m[b]], "cell": cell[b], "species": z[b][m[b]]}
        for b in range(pop.batch_size)
    ]


__all__ = [
    "Population", "SCOPE", "take", "where", "concat", "pad_atoms", "pad_structures",
    "empty_like", "place", "bucket_size", "bucket_indices", "stack", "unstack", "BUCKETS",
]

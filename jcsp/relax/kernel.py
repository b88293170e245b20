"""The jitted heart of :func:`jcsp.relax`: per-slot state and the compiled segment.

``Slots`` holds a batch of ``B`` structures being relaxed; :func:`_build_kernel` returns
the compiled ``segment`` (many optimizer steps with per-slot masks, Verlet-list upkeep
and failure detection) and ``refill`` functions for one potential, list spec, batch shape
and optimizer. Everything here is safe under jit; the host-side orchestration (bucketing,
streaming, reallocation, caching) lives in :mod:`jcsp.relax.driver`.

Several devices (:mod:`jcsp.sharding`): given a mesh, the slots are split over its one
axis and ``segment`` and ``refill`` run per device under :func:`jax.shard_map`, each on
its own block of slots. Nothing per slot crosses devices; the only communication is, in
the vmapped schedule, one sum of three integers per iteration so that every device
stops at the iteration one device would (the same segment boundaries, hence the same
numbers). The serial schedule communicates nothing.

Bit for bit across device counts: XLA rewrites a division by a broadcast value
(``x / r[..., None]``) into a multiplication by its reciprocal in some programs and not in
others (the partitioned one, here), and the two round differently. The potentials, the
cell filter and the optimizers therefore write such divisions as ``x * (1.0 / r)[...,
None]`` themselves; with that, the CPU schedule on 4 devices equals 1 device bit for bit
for every potential family (``tests/test_sharding.py``). The vmapped schedule differs by
~1e-13 Å when a device holds one slot (a batch axis of length 1 compiles differently).
"""

from __future__ import annotations

import collections
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import PartitionSpec

from .. import neighbors as nl
from .. import sharding
from ..capacity import ListSpec
from ..derivatives import evaluate_with
from ..potentials.base import Potential
from . import cell_filter as cf
from .fire import FireConfig, fire
from .lbfgs import lbfgs

Array = jax.Array


#: A force above this (eV/Å) marks a structure as failed (atoms on top of each other).
MAX_FORCE = 1.0e4
#: A cell below this volume per atom (Å³) has collapsed.
MIN_VOLUME_PER_ATOM = 0.5
#: A cell above this multiple of its starting volume has exploded. Four times the volume
#: is 1.6 times every length: beyond the margin with which the static sizes (neighbor
#: images and capacity, an Ewald k box) were chosen, so an unbound structure (random
#: oxide cells whose fragments drift apart) would otherwise make them grow, and every
#: other structure pay for it, before it failed anyway.
MAX_VOLUME_RATIO = 4.0
#: Failure codes -> messages for ``info["failure_reason"]``.
REASONS = {
    1: "non-finite energy, forces or stress",
    2: f"exploding forces (a force above {MAX_FORCE:g} eV/Å)",
    3: f"cell collapsed (volume below {MIN_VOLUME_PER_ATOM} Å³ per atom)",
    4: f"cell exploded (volume above {MAX_VOLUME_RATIO:g} times the starting volume)",
}
#: How often each compiled function has been traced (compile-count tests read this).
TRACE_COUNTS: collections.Counter = collections.Counter()

@struct.dataclass
class Slots:
    """Everything about the ``B`` slots of a batch (every field has a leading ``B`` axis).

    Per atom ``[B, N, ...]``: species, mask, forces, frac. Per structure ``[B, ...]``: the
    rest. ``dofs [B, R, 3]`` are the cell-filter rows, ``opt`` the optimizer state and
    ``nbrs`` each slot's Verlet list (``stale``: must be rebuilt before use).
    ``energy``, ``enthalpy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å³), ``frac``,
    ``cell`` and ``residual`` (largest generalized-force row) are from the last
    evaluation. ``pressure``, ``smax`` are eV/Å³; ``smax <= 0`` selects ASE's criterion.
    """

    species: Array
    mask: Array
    ref_cell: Array
    ref_inv: Array
    n_atoms: Array
    pressure: Array
    fmax: Array
    smax: Array
    max_steps: Array
    volume0: Array
    dofs: Array
    opt: object
    nbrs: nl.NeighborList
    stale: Array
    steps: Array
    live: Array
    converged: Array
    failed: Array
    reason: Array
    energy: Array
    enthalpy: Array
    forces: Array
    stress: Array
    frac: Array
    cell: Array
    residual: Array
    overflow: Array
    count: Array
    count_cut: Array
    overflow_cell: Array


def _trim(nbrs: nl.NeighborList, frac, cell, cutoff: float, capacity: int) -> nl.NeighborList:
    """The entries of a Verlet list now within ``cutoff``, compacted to ``capacity``
    (one structure). Many-body potentials cost ~K^2 per atom, so they should not pay
    for the skin; order is kept, padded entries point at the atom itself."""
    n = frac.shape[0]
    positions = frac @ cell
    vec = positions[nbrs.idx] + jnp.einsum("nka,ab->nkb", nbrs.shift, cell) - positions[:, None]
    keep = nbrs.mask & (jnp.sum(vec * vec, axis=-1) < cutoff**2)
    # Compaction by gathers: slot q takes the entry whose running count of kept entries
    # first exceeds q (a binary search per slot; scatters are slow on CPUs).
    running = jnp.cumsum(keep.astype(jnp.int32), axis=1)
    counts = running[:, -1]
    q = jnp.arange(capacity, dtype=jnp.int32)
    src = jax.vmap(lambda row: jnp.searchsorted(row, q, side="right", method="scan"))(running)
    src = jnp.minimum(src, nbrs.idx.shape[1] - 1)
    filled = q[None, :] < counts[:, None]
    self_idx = jnp.broadcast_to(jnp.arange(n, dtype=nbrs.idx.dtype)[:, None], (n, capacity))
    idx = jnp.where(filled, jnp.take_along_axis(nbrs.idx, src, axis=1), self_idx)
    shift = jnp.where(filled[..., None],
                      jnp.take_along_axis(nbrs.shift, src[..., None], axis=1), 0.0)
    count = jnp.max(counts).astype(jnp.int32)
    return nl.NeighborList(idx=idx, shift=shift,
                           mask=filled,
                           count=count, overflow=nbrs.overflow | (count > capacity),
                           ref_frac=nbrs.ref_frac, ref_cell=nbrs.ref_cell, half=nbrs.half)


def serial_schedule() -> bool:
    """Whether compiled segments step their slots one after another (CPUs) rather
    than all together (``vmap``: accelerators).

    On a CPU a vmapped batch costs every slot's evaluation at every iteration, so the
    finished and empty slots of a batch that waits for its slowest structure cost as
    much as live ones (for 32 random TiO2 cells: five times the work of the steps the
    structures took). A loop over slots runs each live slot's own iterations and skips
    the rest; on accelerators the batch is parallel and a loop would serialise it.
    """
    return jax.default_backend() == "cpu"


class Kernel(NamedTuple):
    """The compiled functions of one shape (``segment``, ``refill``), and ``blank``,
    which gives zero-filled :class:`Slots` of the right shapes without compiling (on
    the mesh's devices, split over the population axis, when there is a mesh)."""

    segment: object
    refill: object
    blank: object


def _build_kernel(potential: Potential, cutoff, lists: ListSpec, config,
                  relax_cell: bool, pbc: tuple, batch: int, *,
                  serial: bool | None = None, mesh=None) -> Kernel:
    """The kernel of one shape; ``mesh``: a :func:`jcsp.sharding.population_mesh` of
    several devices to split the ``batch`` slots over (a multiple of its size), or
    None (one device)."""
    spec = lists.skin
    serial = serial_schedule() if serial is None else bool(serial)
    periodic = any(pbc)
    cell_dofs = relax_cell and periodic
    opt = fire(config) if isinstance(config, FireConfig) else lbfgs(config)
    if mesh is not None and mesh.size == 1:
        mesh = None
    if mesh is not None and batch % mesh.size:
        raise ValueError(f"a batch of {batch} slots cannot be split evenly over "
                         f"{mesh.size} devices; use a multiple of {mesh.size}")
    local = batch if mesh is None else batch // mesh.size  # slots per device
    chunk = max(1, local // 8)

    def build(frac, cell, mask):
        return nl.build(spec, frac, cell, mask, pbc)

    def fresh(frac, cell, species, mask, pressure, fmax, smax, max_steps):
        dtype = frac.dtype
        dofs = cf.init_dofs(frac, cell, relax_cell=cell_dofs)
        n_atoms = jnp.sum(mask).astype(dtype)
        zero = jnp.zeros((), dtype)
        nbrs = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(build, frac, cell, mask))
        return Slots(
            species=species, mask=mask, ref_cell=cell, ref_inv=cf.inv3(cell),
            n_atoms=n_atoms, pressure=pressure, fmax=fmax, smax=smax, max_steps=max_steps,
            volume0=jnp.abs(cf.det3(cell)), dofs=dofs, opt=opt.init(dofs), nbrs=nbrs,
            stale=jnp.bool_(True), steps=jnp.int32(0), live=n_atoms > 0,
            converged=jnp.bool_(False), failed=jnp.bool_(False), reason=jnp.int32(0),
            energy=zero, enthalpy=zero, forces=jnp.zeros_like(frac),
            stress=jnp.zeros((3, 3), dtype), frac=frac, cell=cell,
            residual=jnp.asarray(jnp.inf, dtype), overflow=jnp.bool_(False),
            count=jnp.int32(0), count_cut=jnp.int32(0), overflow_cell=cell)

    def geometry(s: Slots) -> cf.Transform:
        return cf.apply(s.dofs, s.ref_cell, s.ref_inv, s.n_atoms, relax_cell=cell_dofs)

    def refresh(s: Slots, t: cf.Transform) -> Slots:
        """Rebuild the lists of live slots that need it, ``chunk`` slots at a time."""
        moved = jax.vmap(lambda n, f, c, m: nl.needs_rebuild(n, f, c, m, cutoff, spec.cutoff))(
            s.nbrs, t.frac, t.cell, s.mask)
        need = s.live & (s.stale | moved)

        def body(carry):
            nbrs, todo = carry
            idx = jnp.nonzero(todo, size=chunk, fill_value=local)[0]
            take = jnp.minimum(idx, local - 1)
            new = jax.vmap(build)(t.frac[take], t.cell[take], s.mask[take])
            nbrs = jax.tree_util.tree_map(lambda o, n: o.at[idx].set(n, mode="drop"), nbrs, new)
            return nbrs, todo.at[idx].set(False, mode="drop")

        nbrs, _ = jax.lax.while_loop(lambda c: jnp.any(c[1]), body, (s.nbrs, need))
        return s.replace(nbrs=nbrs, stale=s.stale & ~need)

    def one_step(params, s: Slots, t: cf.Transform) -> Slots:
        nbrs = s.nbrs
        if lists.capacity is not None:
            nbrs = _trim(nbrs, t.frac, t.cell, cutoff, lists.capacity)
        res = evaluate_with(potential, params, t.frac, t.cell, s.species, s.mask, nbrs, pbc)
        g = cf.generalized_forces(t, res.forces, res.stress, s.pressure, s.n_atoms,
                                  relax_cell=cell_dofs)
        h = cf.enthalpy(res.energy, t.cell, s.pressure, periodic=periodic)
        eye = jnp.eye(3, dtype=h.dtype)
        residual = cf.row_norm_max(g)
        max_force = cf.row_norm_max(res.forces)
        max_stress = jnp.max(jnp.abs(res.stress + s.pressure * eye))
        by_smax = (max_force < s.fmax) & ((max_stress < s.smax) if cell_dofs else True)
        # ASE's test on the filter's generalized forces, and the true atomic forces too
        # (they differ by the deformation gradient), so fmax means what it says.
        criterion = jnp.where(s.smax > 0, by_smax, (residual < s.fmax) & (max_force < s.fmax))

        volume = jnp.abs(cf.det3(t.cell))
        collapsed = periodic & ~(volume >= MIN_VOLUME_PER_ATOM * s.n_atoms)
        exploded = periodic & (volume > MAX_VOLUME_RATIO * s.volume0)
        finite = (jnp.isfinite(h) & jnp.all(jnp.isfinite(res.forces))
                  & jnp.all(jnp.isfinite(res.stress)) & jnp.all(jnp.isfinite(g)))
        reason = jnp.where(~finite, 1, jnp.where(max_force > MAX_FORCE, 2,
                           jnp.where(collapsed, 3, jnp.where(exploded, 4, 0))))
        # A collapsed or exploded cell fails even if its neighbor list overflowed.
        overflow = s.live & res.overflow & ~(collapsed | exploded)
        evaluated = s.live & ~overflow
        failed = reason > 0
        converged = ~failed & criterion
        done = evaluated & (failed | converged | (s.steps >= s.max_steps))
        go = evaluated & ~done
        dofs, opt_state = opt.step(s.opt, s.dofs, g, h, go)

        def upd(new, old):
            return jnp.where(evaluated, new, old)

        return s.replace(
            dofs=dofs, opt=opt_state, steps=s.steps + go.astype(jnp.int32),
            live=s.live & ~done,
            converged=jnp.where(done, converged, s.converged),
            failed=jnp.where(done, failed, s.failed),
            reason=jnp.where(done & failed, reason, s.reason).astype(jnp.int32),
            energy=upd(res.energy, s.energy), enthalpy=upd(h, s.enthalpy),
            forces=upd(res.forces, s.forces), stress=upd(res.stress, s.stress),
            frac=upd(t.frac, s.frac), cell=upd(t.cell, s.cell),
            residual=upd(residual, s.residual), overflow=s.overflow | overflow,
            count=jnp.maximum(s.count, jnp.where(s.live, s.nbrs.count, 0)),
            count_cut=jnp.maximum(s.count_cut, jnp.where(s.live, res.count, 0)),
            overflow_cell=jnp.where(overflow, t.cell, s.overflow_cell))

    step_all = jax.vmap(one_step, in_axes=(None, 0, 0))

    def segment(params, slots: Slots, n_steps, free_target) -> Slots:
        TRACE_COUNTS["segment"] += 1
        with jax.default_matmul_precision("highest"):  # no TF32 geometry on GPUs
            if serial:
                return _segment_serial(params, slots, n_steps)
            return _segment(params, slots, n_steps, free_target)

    def _segment_serial(params, slots: Slots, n_steps) -> Slots:
        """The slots one after another, each for up to ``n_steps`` iterations of its
        own: a finished or empty slot costs nothing (``free_target`` is moot, since no
        slot waits for another). The same per-slot iteration as :func:`_segment`."""
        b = slots.live.shape[0]
        zero = jnp.zeros((b,), jnp.int32)
        slots = slots.replace(overflow=jnp.zeros((b,), bool), count=zero, count_cut=zero)

        def refresh_one(s: Slots, t: cf.Transform) -> Slots:
            moved = nl.needs_rebuild(s.nbrs, t.frac, t.cell, s.mask, cutoff, spec.cutoff)
            need = s.live & (s.stale | moved)
            nbrs = jax.lax.cond(need, lambda: build(t.frac, t.cell, s.mask), lambda: s.nbrs)
            return s.replace(nbrs=nbrs, stale=s.stale & ~need)

        def cond(carry):
            i, s = carry
            return (i < n_steps) & s.live & ~s.overflow

        def body(carry):
            i, s = carry
            t = geometry(s)
            s = refresh_one(s, t)
            return i + 1, one_step(params, s, t)

        def run_slot(k, all_slots):
            s = jax.tree_util.tree_map(lambda x: x[k], all_slots)
            s = jax.lax.while_loop(cond, body, (jnp.int32(0), s))[1]
            return jax.tree_util.tree_map(lambda x, y: x.at[k].set(y), all_slots, s)

        return jax.lax.fori_loop(0, b, run_slot, slots)

    def _segment(params, slots: Slots, n_steps, free_target) -> Slots:
        b = slots.live.shape[0]
        zero = jnp.zeros((b,), jnp.int32)
        slots = slots.replace(overflow=jnp.zeros((b,), bool), count=zero, count_cut=zero)

        def cond(carry):
            i, s = carry
            # live, overflowed and free slots of the whole batch (all devices)
            tally = jnp.stack([jnp.sum(s.live), jnp.sum(s.overflow), jnp.sum(~s.live)])
            if mesh is not None:
                tally = jax.lax.psum(tally, sharding.AXIS)
            return (i < n_steps) & (tally[0] > 0) & (tally[1] == 0) & (tally[2] < free_target)

        def body(carry):
            i, s = carry
            t = jax.vmap(geometry)(s)
            s = refresh(s, t)
            return i + 1, step_all(params, s, t)

        return jax.lax.while_loop(cond, body, (jnp.int32(0), slots))[1]

    def refill(slots: Slots, select, frac, cell, species, mask, pressure, fmax, smax,
               max_steps) -> Slots:
        TRACE_COUNTS["refill"] += 1
        with jax.default_matmul_precision("highest"):
            new = jax.vmap(fresh)(frac, cell, species, mask, pressure, fmax, smax, max_steps)

        def pick(a, b):
            return jnp.where(select.reshape(select.shape + (1,) * (a.ndim - 1)), a, b)

        return jax.tree_util.tree_map(pick, new, slots)

    shapes: dict = {}

    def blank(*args) -> Slots:
        key = tuple((a.shape, str(a.dtype)) for a in args)
        if key not in shapes:
            shapes[key] = jax.eval_shape(jax.vmap(fresh), *args)
        zeros = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), shapes[key])
        if mesh is not None:
            return sharding.shard_population(zeros, mesh)
        return jax.device_put(zeros)

    if mesh is None:
        return Kernel(segment=jax.jit(segment), refill=jax.jit(refill), blank=blank)
    # One block of slots per device: every per-slot array is split on its leading axis,
    # the parameters and the two loop limits are the same everywhere.
    split, whole = PartitionSpec(sharding.AXIS), PartitionSpec()
    # check_vma=False: the loops' carries mix per-device slots with shared counters, which
    # the varying-axes type check would reject; every output is per device by design.
    segment_sharded = jax.jit(jax.shard_map(segment, mesh=mesh,
                                            in_specs=(whole, split, whole, whole),
                                            out_specs=split, check_vma=False))
    refill_sharded = jax.jit(jax.shard_map(refill, mesh=mesh, in_specs=split, out_specs=split,
                                           check_vma=False))

    def segment_on_mesh(params, slots: Slots, n_steps, free_target) -> Slots:
        return segment_sharded(sharding.replicate(params, mesh),
                               sharding.shard_population(slots, mesh), n_steps, free_target)

    def refill_on_mesh(slots: Slots, select, *args) -> Slots:
        return refill_sharded(*sharding.shard_population((slots, select) + args, mesh))

    return Kernel(segment=segment_on_mesh, refill=refill_on_mesh, blank=blank)

"""``jcsp.relax``: batched, streaming relaxation of many structures (host-side driver).

The driver is host code around two compiled functions per shape:

- ``segment``: up to ``steps_per_segment`` iterations (a ``lax.while_loop``) of
  [refresh stale neighbor lists -> energy, forces, stress of every slot
  (:func:`jcsp.derivatives.evaluate_with`, vmapped) -> generalized forces of the cell
  filter -> optimizer step], with per-slot masks: a slot that is empty, converged,
  failed or out of steps is frozen bit for bit;
- ``refill``: put new structures into chosen slots.

Structures are bucketed by atom count (:func:`jcsp.structures.bucket_indices`); each
bucket runs in batches of ``B`` fixed slots. Between segments the host harvests finished
slots and refills them from the queue, so populations larger than a batch stream through
with no recompilation. Pressures, ``fmax``, ``smax`` and step limits are arrays: changing
them never recompiles. Compiled functions are cached per (potential object, its static
sizing, neighbor spec, B, N, optimizer config, cell mode, pbc, dtype).

Neighbor lists are Verlet lists with a skin (:func:`jcsp.neighbors.needs_rebuild`): each
slot keeps its list and rebuilds it only when its own atoms or cell moved too far, in
compacted chunks of ``B/8`` slots; each step trims it to the potential's own cutoff (so
many-body potentials, ~K^2 per atom, do not pay for the skin). A step then costs about
one force evaluation without the list build, and a slot's numbers never depend on the
other slots. Matrix products run at
full precision of the dtype (``default_matmul_precision("highest")``): the TF32 default of
GPUs would leave float32 forces too noisy to converge.

Overflow is data (STYLE rule 7): a slot whose list overflowed is frozen *before* that
evaluation is used, the segment stops at the end of that iteration, and the host grows
the spec (:func:`jcsp.neighbors.grow`), rebuilds the lists and carries on from the
returned state, so every structure follows the trajectory it would have with ample
capacity; only the order of a few floating-point sums changes with the capacity
(differences of order 1e-16 relative). Likewise, potentials with static shapes sized per
cell (:meth:`jcsp.potentials.Potential.for_cells`, e.g. an Ewald k box) are sized per
bucket, and a structure whose energy turns non-finite because its cell outgrew that size
is resized and resumed rather than failed. Bit-for-bit identity holds for the same batch
shape and static sizes: a failed slot never changes another slot's numbers.

A structure fails (and is frozen and reported with ``info["failure_reason"]``) when its
energy, forces or stress are not finite, when a force exceeds :data:`MAX_FORCE`, or when
its cell collapses below :data:`MIN_VOLUME_PER_ATOM` or grows beyond
:data:`MAX_VOLUME_RATIO` times its starting volume.
"""

from __future__ import annotations

import collections
import weakref
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from flax import struct
from tqdm import tqdm

from .. import neighbors as nl
from ..derivatives import evaluate_with
from ..potentials.base import Potential
from ..structures.convert import check_structure, from_atoms
from ..structures.population import bucket_indices
from ..units import EV_PER_A3_IN_GPA, full_to_voigt, gpa_to_ev_per_a3
from . import cell_filter as cf
from .fire import FireConfig, fire
from .lbfgs import LBFGSConfig, lbfgs

Array = jax.Array

#: A force above this (eV/Å) marks a structure as failed (atoms on top of each other).
MAX_FORCE = 1.0e4
#: A cell below this volume per atom (Å³) has collapsed.
MIN_VOLUME_PER_ATOM = 0.5
#: A cell above this multiple of its starting volume has exploded.
MAX_VOLUME_RATIO = 10.0
#: Atoms per batch the automatic batch size aims for.
TARGET_ATOMS = 4096
#: Default Verlet skin: this fraction of the potential's cutoff, at most MAX_SKIN Å.
#: A wider skin means fewer list rebuilds and more (masked) pairs per evaluation.
SKIN_FRACTION = 0.25
MAX_SKIN = 1.0
#: Failure codes -> messages for ``info["failure_reason"]``.
REASONS = {
    1: "non-finite energy, forces or stress",
    2: f"exploding forces (a force above {MAX_FORCE:g} eV/Å)",
    3: f"cell collapsed (volume below {MIN_VOLUME_PER_ATOM} Å³ per atom)",
    4: f"cell exploded (volume above {MAX_VOLUME_RATIO:g} times the starting volume)",
}
#: How often each compiled function has been traced (compile-count tests read this).
TRACE_COUNTS: collections.Counter = collections.Counter()

OPTIMIZERS = {"fire": FireConfig, "lbfgs": LBFGSConfig}


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


class ListSpec(NamedTuple):
    """Static neighbor-list shapes of a kernel (hashable).

    Attributes:
      skin: spec of the stored Verlet lists (cutoff = potential cutoff + skin).
      capacity: neighbors per atom after trimming to the potential's cutoff each step,
        or None when nothing is trimmed (no skin, or all pairs).
    """

    skin: nl.NeighborSpec
    capacity: int | None


def _trim(nbrs: nl.NeighborList, frac, cell, cutoff: float, capacity: int) -> nl.NeighborList:
    """The entries of a Verlet list now within ``cutoff``, compacted to ``capacity``
    (one structure). Many-body potentials cost ~K^2 per atom, so they should not pay
    for the skin; order is kept, padded entries point at the atom itself."""
    n = frac.shape[0]
    positions = frac @ cell
    vec = positions[nbrs.idx] + jnp.einsum("nka,ab->nkb", nbrs.shift, cell) - positions[:, None]
    keep = nbrs.mask & (jnp.sum(vec * vec, axis=-1) < cutoff**2)
    counts = jnp.sum(keep, axis=1)
    slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, capacity)
    rows = jnp.arange(n)[:, None]
    idx = jnp.broadcast_to(jnp.arange(n, dtype=nbrs.idx.dtype)[:, None], (n, capacity))
    idx = idx.at[rows, slot].set(nbrs.idx, mode="drop")
    shift = jnp.zeros((n, capacity, 3), nbrs.shift.dtype).at[rows, slot].set(nbrs.shift,
                                                                             mode="drop")
    count = jnp.max(counts).astype(jnp.int32)
    return nl.NeighborList(idx=idx, shift=shift,
                           mask=jnp.arange(capacity)[None, :] < jnp.minimum(counts, capacity)[:, None],
                           count=count, overflow=nbrs.overflow | (count > capacity),
                           ref_frac=nbrs.ref_frac, ref_cell=nbrs.ref_cell)


class Kernel(NamedTuple):
    """The compiled functions of one shape (``segment``, ``refill``), and ``blank``,
    which gives zero-filled :class:`Slots` of the right shapes without compiling."""

    segment: object
    refill: object
    blank: object


def _build_kernel(potential: Potential, cutoff, lists: ListSpec, config,
                  relax_cell: bool, pbc: tuple, batch: int) -> Kernel:
    spec = lists.skin
    periodic = any(pbc)
    cell_dofs = relax_cell and periodic
    opt = fire(config) if isinstance(config, FireConfig) else lbfgs(config)
    chunk = max(1, batch // 8)

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
            idx = jnp.nonzero(todo, size=chunk, fill_value=batch)[0]
            take = jnp.minimum(idx, batch - 1)
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
            return _segment(params, slots, n_steps, free_target)

    def _segment(params, slots: Slots, n_steps, free_target) -> Slots:
        b = slots.live.shape[0]
        zero = jnp.zeros((b,), jnp.int32)
        slots = slots.replace(overflow=jnp.zeros((b,), bool), count=zero, count_cut=zero)

        def cond(carry):
            i, s = carry
            n_free = jnp.sum(~s.live)
            return (i < n_steps) & jnp.any(s.live) & ~jnp.any(s.overflow) & (n_free < free_target)

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

    def blank(*args) -> Slots:
        shapes = jax.eval_shape(jax.vmap(fresh), *args)
        return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    return Kernel(segment=jax.jit(segment), refill=jax.jit(refill), blank=blank)


# --- caches keyed by the potential object (weakly: a dead potential frees its entries) ---
_KERNELS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_STATIC: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: Cells kept per bucket to size potentials with per-cell static shapes across calls.
_ARCHIVE = 64


def _cache(table, potential) -> dict:
    try:
        return table.setdefault(potential, {})
    except TypeError:  # unhashable or not weak-referenceable: no caching across calls
        return {}


def _signature(sized, potential):
    """Hashable summary of the static configuration :meth:`Potential.for_cells` chose."""
    if sized is potential:
        return None
    items = []
    for key, value in sorted(vars(sized).items()):
        try:
            hash(value)
        except TypeError:
            continue
        items.append((key, value))
    return (type(sized).__name__, tuple(items))


class _Static:
    """Host-side static sizes of one bucket: neighbor spec and sized potential, grown
    (never shrunk) across calls so that repeated calls share compiled code."""

    def __init__(self):
        self.lists = None
        self.sized = None
        self.signature = None
        self.archive = np.zeros((0, 3, 3))

    def fit_lists(self, cutoff, list_cutoff, frac, cell, mask, pbc, batch) -> ListSpec:
        """List shapes that fit these structures (and every earlier call's)."""
        trim = cutoff is not None and list_cutoff > cutoff
        for start in range(0, len(frac), batch):  # fixed chunk shape: one count compile
            stop = min(start + batch, len(frac))
            chunk = [np.zeros((batch,) + a.shape[1:], a.dtype) for a in (frac, cell, mask)]
            for c, a in zip(chunk, (frac, cell, mask)):
                c[: stop - start] = a[start:stop]
            chunk[1][stop - start:] = np.eye(3) * 10.0
            skin = nl.spec_for(list_cutoff, chunk[0], chunk[1], chunk[2], pbc)
            cap = nl.spec_for(cutoff, chunk[0], chunk[1], chunk[2], pbc).capacity if trim else None
            need = ListSpec(skin, cap)
            self.lists = need if self.lists is None else _union(self.lists, need)
        return self.lists

    def fit_potential(self, potential, cells):
        """Size ``potential`` for ``cells``; True when its static shapes changed."""
        cells = np.asarray(cells, float).reshape(-1, 3, 3)
        sized = potential.for_cells(cells)
        if sized is potential:
            changed = self.sized is not potential
            self.sized, self.signature = potential, None
            return changed
        signature = _signature(sized, potential)
        if self.sized is not None and signature != self.signature:
            sized = potential.for_cells(np.concatenate([self.archive, cells]))
            signature = _signature(sized, potential)
        merged = np.concatenate([self.archive, cells])
        size = np.linalg.norm(merged, axis=-1).sum(-1)
        self.archive = merged[np.argsort(-size, kind="stable")[:_ARCHIVE]]
        if signature == self.signature and self.sized is not None:
            return False
        self.sized, self.signature = sized, signature
        return True


def _union(a: ListSpec, b: ListSpec) -> ListSpec:
    images = tuple(max(x, y) for x, y in zip(a.skin.images, b.skin.images))
    skin = nl.NeighborSpec(a.skin.cutoff, max(a.skin.capacity, b.skin.capacity), images)
    cap = None if a.capacity is None else max(a.capacity, b.capacity)
    return ListSpec(skin, cap)


def _grow(lists: ListSpec, slots: Slots, overflow, pbc) -> ListSpec:
    """Larger list shapes after an overflow in the slots ``overflow`` (host side)."""
    cells = np.asarray(slots.overflow_cell)[overflow]
    skin = nl.grow(lists.skin, int(np.asarray(slots.count)[overflow].max()), cells, pbc)
    cap = lists.capacity
    if cap is not None:
        cut = int(np.asarray(slots.count_cut)[overflow].max())
        cap = max(cap, int(np.ceil((cut * 1.2 + 1) / 4) * 4))
    grown = ListSpec(skin, cap)
    if grown == lists:  # never spin: an overflow always buys room
        grown = ListSpec(nl.NeighborSpec(skin.cutoff, 2 * skin.capacity, skin.images),
                         None if cap is None else 2 * cap)
    return grown


def _list_cutoff(potential, skin=None):
    """Cutoff of the Verlet lists: the potential's plus the skin (None for all pairs)."""
    if potential.cutoff is None:
        return None
    skin = min(SKIN_FRACTION * potential.cutoff, MAX_SKIN) if skin is None else float(skin)
    return potential.cutoff + skin


def _static_for(potential, pbc, n_max, list_cutoff) -> _Static:
    table = _cache(_STATIC, potential)
    return table.setdefault((pbc, n_max, list_cutoff), _Static())


def _kernel(potential, static: _Static, lists, batch, n_max, config, relax_cell, pbc,
            dtype) -> Kernel:
    table = _cache(_KERNELS, potential)
    key = (static.signature, lists, batch, n_max, config, bool(relax_cell and any(pbc)), pbc,
           np.dtype(dtype).name)
    if key not in table:
        table[key] = _build_kernel(static.sized, potential.cutoff, lists, config, relax_cell,
                                   pbc, batch)
    return table[key]


# --- validation -----------------------------------------------------------------------
def _number(value, name, *, positive=True) -> float:
    if isinstance(value, (bool, str, bytes)) or np.asarray(value).dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, "
                         f"got {value!r}")
    return v


def _pressures(pressure, n) -> np.ndarray:
    arr = np.asarray(pressure) if not isinstance(pressure, (str, bytes)) else None
    if arr is None or isinstance(pressure, bool) or arr.dtype.kind not in "iuf":
        raise ValueError(f"pressure must be a number in GPa (or one per structure), "
                         f"got {pressure!r}")
    arr = arr.astype(float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    elif arr.shape != (n,):
        raise ValueError(f"pressure must be one number or one per structure ({n}), "
                         f"got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("pressure must be finite (GPa)")
    return arr


def _config(optimizer):
    if isinstance(optimizer, (FireConfig, LBFGSConfig)):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"unknown optimizer {optimizer!r}: use 'fire' or 'lbfgs' "
                     "(or a FireConfig / LBFGSConfig)")


def _integer(value, name, minimum) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _plainly_valid(structures) -> np.ndarray:
    """[S] bool: structures that certainly pass :func:`check_structure` (host side).

    A vectorised screen (finite numbers, volume, no two atoms or images closer than
    ``MIN_DISTANCE``); structures it cannot clear go through ``check_structure`` itself,
    which gives the error message. For cells with every lattice-plane spacing above
    ``MIN_DISTANCE``, a shorter separation has fractional components below 1, so the
    rounded fractional difference plus shifts in {-1, 0, 1} finds it.
    """
    from ..structures.convert import MIN_DISTANCE
    ok = np.zeros(len(structures), bool)
    groups: dict = {}
    for k, atoms in enumerate(structures):
        pbc = tuple(bool(p) for p in atoms.pbc)
        if pbc in ((True,) * 3, (False,) * 3) and len(atoms) > 1:
            groups.setdefault((pbc, len(atoms)), []).append(k)
    shifts = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for (pbc, n), members in groups.items():
        periodic = pbc[0]
        step = max(1, 2_000_000 // (n * n * (27 if periodic else 1)))
        for start in range(0, len(members), step):
            idx = members[start:start + step]
            pos = np.stack([structures[k].positions for k in idx])
            good = np.isfinite(pos).all(axis=(1, 2))
            if periodic:
                cell = np.stack([structures[k].cell[:] for k in idx])
                vol = np.abs(np.linalg.det(cell))
                good &= np.isfinite(cell).all(axis=(1, 2))
                good &= vol >= 1e-6 * np.maximum(1.0, np.linalg.norm(cell, axis=(1, 2)) ** 3)
                cell = np.where(good[:, None, None], cell, np.eye(3))
                spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=-2)
                good &= (spacing > MIN_DISTANCE).all(1)
                frac = np.einsum("bni,bij->bnj", np.nan_to_num(pos), np.linalg.inv(cell))
                d = frac[:, None] - frac[:, :, None]
                d = (d - np.round(d))[:, :, :, None, :] + shifts
                vec = np.einsum("bijsk,bkl->bijsl", d, cell)
                self_pair = (np.eye(n, dtype=bool)[:, :, None] & (shifts == 0).all(1))
            else:
                vec = (pos[:, None] - pos[:, :, None])[:, :, :, None, :]
                self_pair = np.eye(n, dtype=bool)[:, :, None]
            d2 = np.where(self_pair, np.inf, np.sum(vec * vec, axis=-1))
            good &= d2.reshape(len(idx), -1).min(1) >= MIN_DISTANCE**2
            ok[idx] = good
    return ok


def _validate(structures, potential):
    if isinstance(structures, Atoms) or not isinstance(structures, Sequence):
        raise ValueError("relax expects a list of ase.Atoms (wrap a single one: [atoms])")
    if len(structures) == 0:
        raise ValueError("relax got no structures")
    if not isinstance(potential, Potential):
        raise ValueError(f"potential must be a jcsp potential, got {type(potential).__name__}")
    for k, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise ValueError(f"structure {k} is a {type(atoms).__name__}, not an ase.Atoms")
    plain = _plainly_valid(structures)
    for k, atoms in enumerate(structures):
        if not plain[k]:
            check_structure(atoms, label=f"structure {k}")
        if any(atoms.pbc) and potential.cutoff is None:
            raise ValueError(f"structure {k} is periodic but {potential!r} has no cutoff "
                             "(all pairs), which only works for clusters; give a cutoff")
    potential.check_species(np.unique(np.concatenate([a.numbers for a in structures])))


# --- the public entry point -----------------------------------------------------------
def relax(structures: Sequence[Atoms], potential: Potential, fmax: float = 0.01,
          pressure=0.0, relax_cell: bool = True, optimizer="fire", max_steps: int = 3000,
          *, smax: float | None = None, batch_size: int | None = None,
          steps_per_segment: int = 100, progress: bool = False, dtype=None, params=None,
          skin: float | None = None, _spec: nl.NeighborSpec | None = None) -> list[Atoms]:
    """Relax many structures at once (positions and, for crystals, the cell).

    Minimises the enthalpy ``H = E + p V`` with FIRE or L-BFGS over the coordinates of
    :mod:`jcsp.relax.cell_filter` (ASE ``FrechetCellFilter`` semantics). Host-side.

    Args:
      structures: ``ase.Atoms`` crystals (pbc all true) and/or clusters (pbc all false).
      potential: a :class:`jcsp.potentials.Potential`.
      fmax: force criterion, eV/Å. With ``smax=None`` a structure has converged when every
        row of the generalized forces (atoms and ``exp_cell_factor``-scaled cell rows) is
        below ``fmax`` (ASE's test on ``FrechetCellFilter``) and so is every true atomic
        force.
      pressure: external pressure in GPa, one number or one per structure.
      relax_cell: relax the cell of crystals too (clusters: positions only).
      optimizer: ``"fire"``, ``"lbfgs"``, or a :class:`FireConfig` / :class:`LBFGSConfig`.
      max_steps: optimizer steps allowed per structure.
      smax: if given, converge on ``max |F| < fmax`` (eV/Å) and, with the cell, every
        component of ``stress + p I`` below ``smax`` GPa instead.
      batch_size: slots per batch (default: about 4096 atoms, at most the structures of
        the bucket rounded up to a power of two).
      steps_per_segment: iterations per compiled segment between host refills.
      progress: show a tqdm bar over finished structures.
      dtype: float dtype (``jnp.float32`` is the fast choice on accelerators).
      params: potential parameters to use instead of ``potential.params``.
      skin: Verlet skin of the neighbor lists, Å (default: 0.1 x the cutoff; 0 rebuilds
        every list at every step).

    Returns:
      New ``ase.Atoms``, in input order, with a ``SinglePointCalculator`` (energy,
      forces, stress) and ``info``: ``energy``, ``enthalpy`` (eV), ``converged``,
      ``failed``, ``steps``, ``pressure`` (GPa, from the stress), ``volume`` (Å³),
      ``max_force`` (eV/Å), ``max_stress`` (GPa, largest ``|stress + p I|``) and, when
      failed, ``failure_reason``. Clusters get NaN pressure, volume and max_stress.
      Constraints of the input are not applied (and are dropped from the output).

    Example:
      >>> out = jcsp.relax(structures, lj, fmax=0.01, pressure=10.0)
      >>> best = min(out, key=lambda a: a.info["enthalpy"] / len(a))
    """
    _validate(structures, potential)
    n = len(structures)
    fmax = _number(fmax, "fmax")
    smax_gpa = None if smax is None else _number(smax, "smax")
    p_gpa = _pressures(pressure, n)
    config = _config(optimizer)
    max_steps = _integer(max_steps, "max_steps", 0)
    steps_per_segment = _integer(steps_per_segment, "steps_per_segment", 1)
    if batch_size is not None:
        batch_size = _integer(batch_size, "batch_size", 1)
    if skin is not None and (_number(skin, "skin", positive=False) < 0):
        raise ValueError(f"skin must be >= 0 Å, got {skin!r}")
    dtype = np.dtype(jnp.zeros(()).dtype if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    params = potential.params if params is None else params
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
        else jnp.asarray(a), params)

    targets = dict(pressure=gpa_to_ev_per_a3(p_gpa), fmax=np.full(n, fmax),
                   smax=np.full(n, -1.0 if smax_gpa is None else gpa_to_ev_per_a3(smax_gpa)),
                   max_steps=np.full(n, max_steps, np.int32))
    out: list = [None] * n
    groups: dict = {}
    for i, atoms in enumerate(structures):
        groups.setdefault(tuple(bool(p) for p in atoms.pbc), []).append(i)
    with tqdm(total=n, disable=not progress, desc="relax", unit="structure") as bar:
        for pbc, members in groups.items():
            for n_max, local in bucket_indices([len(structures[i]) for i in members]).items():
                index = [members[k] for k in local]
                _relax_bucket(structures, index, potential, params, n_max, pbc, config,
                              relax_cell, dtype, targets, batch_size, steps_per_segment,
                              skin, _spec, out, bar)
    return out


def _batch_for(count: int, n_max: int, batch_size) -> int:
    if batch_size is not None:
        return batch_size
    cap = max(1, TARGET_ATOMS // n_max)
    return min(cap, 1 << (count - 1).bit_length())


def _relax_bucket(structures, index, potential, params, n_max, pbc, config, relax_cell,
                  dtype, targets, batch_size, steps_per_segment, skin, spec, out, bar):
    """Stream the structures ``index`` (one shape bucket) through fixed slots."""
    pop = from_atoms([structures[i] for i in index], n_max=n_max, dtype=dtype, validate=False)
    frac, cell, species, mask = (np.asarray(x) for x in (pop.frac, pop.cell, pop.species,
                                                         pop.mask))
    batch = _batch_for(len(index), n_max, batch_size)
    list_cutoff = _list_cutoff(potential, skin)
    static = _static_for(potential, pbc, n_max, list_cutoff)
    shared = spec is None  # the private ``_spec`` hook neither reads nor grows the cache
    if shared:
        lists = static.fit_lists(potential.cutoff, list_cutoff, frac, cell, mask, pbc, batch)
    else:
        trim = potential.cutoff is not None and spec.cutoff > potential.cutoff
        lists = ListSpec(spec, spec.capacity if trim else None)
    static.fit_potential(potential, cell[mask.any(1)] if all(pbc) else np.eye(3)[None])
    kernel = _kernel(potential, static, lists, batch, n_max, config, relax_cell, pbc, dtype)
    per = {k: np.asarray(v)[index] for k, v in targets.items()}
    queue = collections.deque(range(len(index)))
    holder = np.full(batch, -1)

    def fill(slots):
        free = np.nonzero(holder < 0)[0][: len(queue)]
        take = np.array([queue.popleft() for _ in free], int)
        holder[free] = take
        select = np.zeros(batch, bool)
        select[free] = True
        arrays = [np.zeros((batch,) + a.shape[1:], a.dtype) for a in (frac, cell, species, mask)]
        arrays[1][:] = np.eye(3) * 10.0
        for a, src in zip(arrays, (frac, cell, species, mask)):
            a[free] = src[take]
        names = ("pressure", "fmax", "smax", "max_steps")
        extra = [np.zeros(batch, per[k].dtype) for k in names]
        for a, k in zip(extra, names):
            a[free] = per[k][take]
        args = [jnp.asarray(a, dtype) for a in arrays[:2]] + [jnp.asarray(a) for a in arrays[2:]]
        args += [jnp.asarray(a, dtype) for a in extra[:3]] + [jnp.asarray(extra[3])]
        if slots is None:
            slots = kernel.blank(*args)
        return kernel.refill(slots, jnp.asarray(select), *args)

    slots = fill(None)
    while (holder >= 0).any():
        free_target = batch + 1
        if queue:
            free_target = int((holder < 0).sum()) + min(len(queue), max(1, batch // 8))
        slots = kernel.segment(params, slots, steps_per_segment, free_target)
        overflow = np.asarray(slots.overflow)
        if overflow.any():  # grow the lists; a new skin spec means every slot rebuilds
            grown = _grow(lists, slots, overflow, pbc)
            if shared:
                static.lists = grown = _union(static.lists, grown)
            if grown.skin != lists.skin:
                slots = _restale(slots, grown.skin, pbc)
            lists = grown
            kernel = _kernel(potential, static, lists, batch, n_max, config, relax_cell, pbc,
                             dtype)
            continue
        live = np.asarray(slots.live)
        finished = np.nonzero((holder >= 0) & ~live)[0]
        if finished.size and static.signature is not None:
            slots, revived = _resize(slots, finished, static, potential)
            if revived.size:
                kernel = _kernel(potential, static, lists, batch, n_max, config, relax_cell,
                                 pbc, dtype)
                finished = np.setdiff1d(finished, revived)
        if finished.size:
            _harvest(slots, finished, holder, index, structures, frac, cell, pbc, out)
            holder[finished] = -1
            bar.update(finished.size)
        if queue and (holder < 0).any():
            slots = fill(slots)


def _restale(slots: Slots, spec, pbc) -> Slots:
    """Blank lists of the shape of ``spec``, all marked stale (host side)."""
    b, n = slots.mask.shape
    dtype = slots.frac.dtype
    shapes = jax.eval_shape(
        jax.vmap(lambda f, c, m: nl.build(spec, f, c, m, pbc)),
        jax.ShapeDtypeStruct((b, n, 3), dtype), jax.ShapeDtypeStruct((b, 3, 3), dtype),
        jax.ShapeDtypeStruct((b, n), bool))
    nbrs = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    return slots.replace(nbrs=nbrs, stale=jnp.ones((b,), bool))


def _resize(slots: Slots, finished, static: _Static, potential):
    """Slots that failed with non-finite numbers because their cell outgrew the
    potential's static size: resize the potential and revive them (host side)."""
    reason = np.asarray(slots.reason)
    suspects = finished[reason[finished] == 1]
    if not suspects.size or not static.fit_potential(potential, np.asarray(slots.cell)[suspects]):
        return slots, suspects[:0]
    live, failed, code = (np.array(x) for x in (slots.live, slots.failed, slots.reason))
    live[suspects], failed[suspects], code[suspects] = True, False, 0
    return slots.replace(live=jnp.asarray(live), failed=jnp.asarray(failed),
                         reason=jnp.asarray(code)), suspects


def _harvest(slots, finished, holder, index, structures, frac0, cell0, pbc, out):
    """Turn finished slots into output ``ase.Atoms`` (host side)."""
    names = ("energy", "enthalpy", "forces", "stress", "frac", "cell", "steps", "converged",
             "failed", "reason", "pressure")
    data = dict(zip(names, jax.device_get(tuple(getattr(slots, k) for k in names))))
    periodic = all(pbc)
    for b in finished:
        local = holder[b]
        g = index[local]
        src = structures[g]
        n = len(src)
        atoms = src.copy()
        del atoms.constraints
        positions = data["frac"][b][:n] @ data["cell"][b]
        if periodic:
            atoms.set_cell(data["cell"][b])
        else:  # undo the centring of the cluster inside its bookkeeping box
            start = frac0[local][:n] @ cell0[local]
            positions = positions + np.mean(src.get_positions() - start, axis=0)
        atoms.positions[:] = positions
        energy = float(data["energy"][b])
        forces = np.array(data["forces"][b][:n], float)
        stress = np.array(data["stress"][b], float)
        p_ext = float(data["pressure"][b])
        calc = dict(energy=energy, free_energy=energy, forces=forces)
        info = {k: v for k, v in atoms.info.items() if k != "failure_reason"}
        info.update(energy=energy, enthalpy=float(data["enthalpy"][b]),
                    converged=bool(data["converged"][b]), failed=bool(data["failed"][b]),
                    steps=int(data["steps"][b]),
                    max_force=float(np.sqrt((forces**2).sum(1)).max()))
        if periodic:
            calc["stress"] = full_to_voigt(stress)
            info.update(pressure=float(-np.trace(stress) / 3 * EV_PER_A3_IN_GPA),
                        volume=float(abs(np.linalg.det(data["cell"][b]))),
                        max_stress=float(np.abs(stress + p_ext * np.eye(3)).max()
                                         * EV_PER_A3_IN_GPA))
        else:
            info.update(pressure=float("nan"), volume=float("nan"), max_stress=float("nan"))
        if info["failed"]:
            info["failure_reason"] = REASONS.get(int(data["reason"][b]), "unknown")
        atoms.info = info
        atoms.calc = SinglePointCalculator(atoms, **calc)
        out[g] = atoms


__all__ = ["relax", "FireConfig", "LBFGSConfig", "MAX_FORCE", "MIN_VOLUME_PER_ATOM",
           "MAX_VOLUME_RATIO", "REASONS", "Slots"]


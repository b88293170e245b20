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
them never recompiles. Compiled functions are cached per (potential object, its
:class:`jcsp.capacity.Capacity` key, B, N, optimizer config, cell mode, pbc, dtype).

Neighbor lists are Verlet lists with a skin (:func:`jcsp.neighbors.needs_rebuild`): each
slot keeps its list and rebuilds it only when its own atoms or cell moved too far, in
compacted chunks of ``B/8`` slots; each step trims it to the potential's own cutoff (so
many-body potentials, ~K^2 per atom, do not pay for the skin). A step then costs about
one force evaluation without the list build, and a slot's numbers never depend on the
other slots. Matrix products run at
full precision of the dtype (``default_matmul_precision("highest")``): the TF32 default of
GPUs would leave float32 forces too noisy to converge.

Overflow is data (STYLE rule 7): a slot whose list overflowed is frozen *before* that
evaluation is used, the segment stops at the end of that iteration, and the host asks
the bucket's :class:`~jcsp.capacity.Capacity` to grow, rebuilds the lists and carries
on from the returned state, so every structure follows the trajectory it would have
with ample capacity; only the order of a few floating-point sums changes with the
capacity (differences of order 1e-16 relative). Likewise, potentials with static shapes
sized per cell (:meth:`jcsp.potentials.Potential.for_cells`, e.g. an Ewald k box) are
sized by the same object, and a structure whose energy turns non-finite because its
cell outgrew that size is resized and resumed rather than failed. One capacity per
(potential, periodicity, bucket, skin) lives across calls and only grows, so later calls
reuse the compiled code of earlier ones. Bit-for-bit identity holds for the same batch
shape and static sizes: a failed slot never changes another slot's numbers.

Devices and processes (:mod:`jcsp.sharding`, ``docs/scaling.md``). With several local
devices the ``B`` slots of a batch are split over all of them (``B`` rounded up to a
multiple of their number): each device steps its own block of slots with no exchange,
and the host reads back per-slot results as before. A structure's numbers are those of
one device: bit for bit in the serial schedule of CPUs for every potential family
(``tests/test_sharding.py``; how, in :mod:`jcsp.relax.kernel`), and in the vmapped
schedule of accelerators with two or more slots per device (one slot per device compiles
a batch axis of length 1 differently: ~1e-13 Å). In a ``jax.distributed`` job, each process
relaxes a contiguous block of every bucket, with the neighbor capacity the whole bucket
gives and its share of the batch (``B / processes`` slots), and the results are
exchanged once at the end of the call.

Invalid inputs (:func:`~.inputs.screen`, with the other checks of the arguments in
:mod:`jcsp.relax.inputs`) are set aside before bucketing and come back flagged,
so the batches, list shapes and numbers of the valid structures are those of a run
without them. A structure fails during the run (and is frozen and reported with
``info["failure_reason"]`` and ``info["error"]``) when its energy, forces or stress are
not finite, when a force exceeds :data:`MAX_FORCE`, or when its cell collapses below
:data:`MIN_VOLUME_PER_ATOM` or grows beyond :data:`MAX_VOLUME_RATIO` times its starting
volume.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm import tqdm

from .. import compile_cache
from .. import neighbors as nl
from .. import sharding
from ..capacity import Capacity, ListSpec
from ..potentials.base import Potential
from ..structures.convert import StructureError, from_atoms
from ..structures import population
from ..structures.population import bucket_indices, place
from ..units import EV_PER_A3_IN_GPA, full_to_voigt, gpa_to_ev_per_a3
from .fire import FireConfig
from .inputs import (_check_arguments, _options, _pressures, _rejected,  # noqa: F401
                     _skin, screen)
from .lbfgs import LBFGSConfig

Array = jax.Array


from .kernel import (MAX_FORCE, MAX_VOLUME_RATIO, MIN_VOLUME_PER_ATOM, REASONS,  # noqa: F401
                     TRACE_COUNTS, Kernel, Slots, _build_kernel)
from . import kernel as kernel_module

#: Atoms per batch and local device the automatic batch size aims for.
TARGET_ATOMS = 4096
#: Batches at least this wide are repacked into narrower ones once the queue is empty
#: and three quarters of their slots are done (the slow tail of a population).
MIN_SHRINK = 64
#: What to do about each failure code of :data:`REASONS` (appended in ``info["error"]``).
ADVICE = {
    1: "the potential is undefined here (atoms far closer than it was made for, or "
       "outside a trained model's range); check the structure",
    2: "two atoms are nearly on top of each other; push them apart or drop the structure",
    3: "the potential has too little repulsion at this density; start from a larger "
       "cell or use a potential with a repulsive core",
    4: "the structure is unbound under this potential and pressure; check the "
       "composition and the potential's cutoff, or apply pressure",
}
#: ``info`` keys that describe a failure; cleared from inputs before results are set.
FAILURE_KEYS = ("failure_reason", "error", "invalid")


# --- caches keyed by the potential object (weakly: a dead potential frees its entries) ---
_KERNELS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_CAPACITIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cache(table, potential) -> dict:
    try:
        return table.setdefault(potential, {})
    except TypeError:  # unhashable or not weak-referenceable: no caching across calls
        return {}


def _capacity_for(potential, pbc, n_max, skin, headroom=1.0) -> Capacity:
    """The capacity of one bucket, shared by every call with this potential (so later
    calls reuse the compiled code of earlier ones); ``headroom`` applies when it is
    created."""
    table = _cache(_CAPACITIES, potential)
    key = (pbc, n_max, skin)
    if key not in table:
        table[key] = Capacity(potential, pbc, skin=skin, headroom=headroom, half=True)
    return table[key]


def _mesh():
    """The mesh the slots are split over: every local device, or None with one."""
    return sharding.population_mesh() if sharding.local_device_count() > 1 else None


def _kernel(potential, capacity: Capacity, batch, n_max, config, relax_cell, pbc,
            dtype) -> Kernel:
    compile_cache.release_if_crowded()  # before a kernel runs: room for its executable
    table = _cache(_KERNELS, potential)
    mesh = _mesh()
    key = (capacity.key, batch, n_max, config, bool(relax_cell and any(pbc)), pbc,
           np.dtype(dtype).name, None if mesh is None else mesh.devices.size)
    if key not in table:
        table[key] = _build_kernel(capacity.sized, potential.cutoff, capacity.lists, config,
                                   relax_cell, pbc, batch, mesh=mesh)
    return table[key]


# --- the public entry point -----------------------------------------------------------
def relax(structures: Sequence[Atoms], potential: Potential, fmax: float = 0.01,
          pressure=0.0, relax_cell: bool = True, optimizer="fire", max_steps: int = 3000,
          *, smax: float | None = None, batch_size: int | None = None,
          steps_per_segment: int = 100, progress: bool = False, dtype=None, params=None,
          skin: float | None = None, strict: bool = False, headroom: float = 1.0,
          distribute: bool = True, _spec: nl.NeighborSpec | None = None) -> list[Atoms]:
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
      batch_size: slots per batch (default: about 4096 atoms per local device, at most
        the structures of the bucket rounded up to a power of two), rounded up to a
        multiple of the local device count: the slots are split over every device of
        the process (:mod:`jcsp.sharding`), with the numbers of one device.
      steps_per_segment: iterations per compiled segment between host refills.
      progress: show a tqdm bar over finished structures.
      dtype: float dtype (``jnp.float32`` is the fast choice on accelerators).
      params: potential parameters to use instead of ``potential.params``.
      skin: Verlet skin of the neighbor lists, Å (default: a quarter of the cutoff, at
        most 1 Å; 0 rebuilds every list at every step).
      strict: raise :class:`~jcsp.structures.convert.StructureError` on the first invalid
        input instead of returning it flagged.
      headroom: extra room (a factor) in the neighbor-list capacities when this potential
        and atom count are sized for the first time. Callers that relax many similar
        batches one after another (searches) pass about 1.5, so later batches reuse the
        first compiled code instead of growing it; the sizes are kept across calls.
      distribute: in a multi-process job (:func:`jcsp.sharding.initialize`), each
        process relaxes a contiguous block of every bucket and all processes return
        every result (exchanged once at the end), so every process must make the same
        call (checked: different structures or targets raise ``ValueError`` in every
        process); False relaxes everything here, for calls only some processes make.

    Returns:
      One new ``ase.Atoms`` per input, in input order, with a ``SinglePointCalculator``
      (energy, forces, stress) and ``info``: ``energy``, ``enthalpy`` (eV),
      ``converged``, ``failed``, ``steps``, ``pressure`` (GPa, from the stress),
      ``volume`` (Å³), ``max_force`` (eV/Å), ``max_stress`` (GPa, largest
      ``|stress + p I|``) and, when failed, ``error`` (what went wrong and what to do)
      and ``failure_reason`` (what went wrong). Clusters get NaN pressure, volume and
      max_stress. Constraints of the input are not applied (and are dropped from the
      output).

      An invalid input (see :func:`screen`: overlapping atoms, non-finite numbers, zero
      volume, a species the potential does not cover, ...) is not relaxed: it comes back
      as given, with ``failed`` and ``invalid`` true, ``error`` set, NaN energies and no
      calculator. The other structures are relaxed exactly as in a run without it (bit
      for bit). A structure whose relaxation breaks down (non-finite numbers, exploding
      forces, a collapsing or exploding cell) is frozen there and returned failed, and
      never affects the others.

    Raises:
      ValueError: bad options (pressure, fmax, optimizer, ...), an empty list or an
        entry that is not an ``ase.Atoms``, processes of a multi-process job relaxing
        different lists; with ``strict``, the first invalid structure
        (:class:`~jcsp.structures.convert.StructureError` for its geometry).

    Example:
      >>> out = jcsp.relax(structures, lj, fmax=0.01, pressure=10.0)
      >>> best = min(out, key=lambda a: a.info["enthalpy"] / len(a))
    """
    _check_arguments(structures, potential)
    if not isinstance(distribute, bool):
        raise ValueError(f"distribute must be True or False, got {distribute!r}")
    n = len(structures)
    p_gpa = _pressures(pressure, n)
    opts = _options(potential, fmax=fmax, smax=smax, optimizer=optimizer, max_steps=max_steps,
                    steps_per_segment=steps_per_segment, batch_size=batch_size,
                    headroom=headroom, skin=skin, dtype=dtype, params=params)
    fmax, smax_gpa, max_steps, dtype = opts["fmax"], opts["smax"], opts["max_steps"], opts["dtype"]
    params, config, batch_size = opts["params"], opts["optimizer"], opts["batch_size"]
    steps_per_segment, headroom = opts["steps_per_segment"], opts["headroom"]

    targets = dict(pressure=gpa_to_ev_per_a3(p_gpa), fmax=np.full(n, fmax),
                   smax=np.full(n, -1.0 if smax_gpa is None else gpa_to_ev_per_a3(smax_gpa)),
                   max_steps=np.full(n, max_steps, np.int32))
    out: list = [None] * n
    groups: dict = {}
    for i, error in enumerate(screen(structures, potential)):
        if error is None:
            groups.setdefault(tuple(bool(p) for p in structures[i].pbc), []).append(i)
        elif strict:
            raise StructureError(f"structure {i}: {error}")
        else:
            out[i] = _rejected(structures[i], error)
    n_valid = sum(len(members) for members in groups.values())
    job = _Job(potential=potential, params=params, optimizer=config, relax_cell=relax_cell,
               dtype=dtype, targets=targets, batch_size=batch_size,
               steps_per_segment=steps_per_segment, skin=opts["skin"],
               headroom=headroom, spec=_spec)
    split = distribute and jax.process_count() > 1
    if split:
        _check_same_call(structures, targets)
    owned: list = []  # the structures this process relaxes
    with tqdm(total=n_valid, disable=not progress or not sharding.is_writer(), desc="relax",
              unit="structure") as bar:
        for pbc, members in groups.items():
            for n_max, local in bucket_indices([len(structures[i]) for i in members]).items():
                index = [members[k] for k in local]
                mine = sharding.process_block(len(index)) if split else np.arange(len(index))
                owned.extend(index[k] for k in mine)
                _relax_bucket(job, structures, index, mine, n_max, pbc, out, bar,
                              jax.process_count() if split else 1)
    if split:  # every process ends with every result (one collective per call)
        for part in sharding.allgather_objects({i: out[i] for i in owned}):
            for i, atoms in part.items():
                out[i] = atoms
    return out


def _check_same_call(structures, targets) -> None:
    """Several processes: every one must relax the same structures with the same
    targets (each relaxes a block and takes the others' results); a collective."""
    digest = hashlib.sha256()
    for atoms in structures:
        for part in (atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc):
            digest.update(np.ascontiguousarray(part).tobytes())
    for key in sorted(targets):
        digest.update(np.ascontiguousarray(targets[key]).tobytes())
    seen = sharding.allgather_objects(digest.hexdigest())
    if len(set(seen)) > 1:
        raise ValueError(
            "jcsp.relax was called with different structures or settings in different "
            f"processes (these differ: {[k for k, d in enumerate(seen) if d != seen[0]]}); "
            "in a multi-process job every process must make the same call, or pass "
            "distribute=False to relax only here")


def _batch_for(count: int, n_max: int, batch_size) -> int:
    """Slots of a bucket of ``count`` structures: ``batch_size`` or the automatic size
    (about :data:`TARGET_ATOMS` atoms per local device), rounded up to a multiple of the
    local device count."""
    if batch_size is None:
        cap = max(1, TARGET_ATOMS * sharding.local_device_count() // n_max)
        batch_size = min(cap, 1 << (count - 1).bit_length())
    return sharding.round_batch(batch_size)


@dataclasses.dataclass(frozen=True)
class _Job:
    """What one :func:`relax` call settled, for the streaming of each bucket.

    ``targets`` holds per-structure arrays (``pressure``, ``fmax``, ``smax`` in eV/Å³ and
    eV/Å, ``max_steps``) over all inputs; ``skin`` is in Å; ``spec`` is the private
    fixed-list hook (None: capacities are sized and cached).
    """

    potential: Potential
    params: object
    optimizer: FireConfig | LBFGSConfig
    relax_cell: bool
    dtype: np.dtype
    targets: dict
    batch_size: int | None
    steps_per_segment: int
    skin: float
    headroom: float
    spec: nl.NeighborSpec | None


class _Bucket:
    """The ``B`` fixed slots of one bucket (one ``n_max``, one periodicity) being
    streamed (host side): load structures into free slots, run a segment, harvest.

    Every structure is identified by a ``key`` (an int of the caller's); ``holder[b]``
    is the key in slot ``b`` (-1: free). Capacity growth, overflow and resizing are
    handled here, so :func:`relax` and :func:`relax_stream` run the same code.
    """

    def __init__(self, job: _Job, n_max: int, pbc: tuple, batch: int, capacity: Capacity):
        self.job, self.n_max, self.pbc, self.batch, self.capacity = job, n_max, pbc, batch, capacity
        self.kernel = self.compiled()
        self.slots = None
        self.holder = np.full(batch, -1)
        self.sources: dict = {}  # key -> (input Atoms, its frac [n, 3], cell [3, 3])
        self.n_segments = 0
        self.slot_steps = 0      # sum over segments of the steps each slot advanced
        self.slot_capacity = 0   # sum over segments of batch x the iterations it ran

    def compiled(self) -> Kernel:
        job = self.job
        return _kernel(job.potential, self.capacity, self.batch, self.n_max, job.optimizer,
                       job.relax_cell, self.pbc, job.dtype)

    @property
    def n_free(self) -> int:
        return int((self.holder < 0).sum())

    @property
    def busy(self) -> bool:
        return bool((self.holder >= 0).any())

    def load(self, pop, per: dict, keys, structures) -> None:
        """Put the structures of ``pop`` (numpy, padded to ``n_max``; at most
        :attr:`n_free` of them) into free slots; ``per`` holds their [k] targets."""
        batch, dtype = self.batch, self.job.dtype
        keys = np.asarray(keys, int)
        free = np.nonzero(self.holder < 0)[0][: len(keys)]
        if len(free) < len(keys):
            raise ValueError(f"{len(keys)} structures for {len(free)} free slots")
        self.holder[free] = keys
        for k, key in enumerate(keys):
            self.sources[int(key)] = (structures[k], pop.frac[k], pop.cell[k])
        select = np.zeros(batch, bool)
        select[free] = True
        incoming = place(pop, free, batch)
        extra = {}
        for k in ("pressure", "fmax", "smax", "max_steps"):
            extra[k] = np.zeros(batch, per[k].dtype)
            extra[k][free] = per[k]
        args = [incoming.frac, incoming.cell, incoming.species, incoming.mask]
        args += [extra[k].astype(dtype) for k in ("pressure", "fmax", "smax")]
        args = jax.device_put(args + [extra["max_steps"]])
        if self.slots is None:
            self.slots = self.kernel.blank(*args)
        self.slots = self.kernel.refill(self.slots, jnp.asarray(select), *args)

    def refit(self, pop) -> None:
        """Size the capacity for new structures too (streams learn their structures as
        they come); a grown list spec marks every slot's list stale."""
        before = self.capacity.spec
        if self.capacity.fit(pop):
            if self.slots is not None and self.capacity.spec != before:
                self.slots = _restale(self.slots, self.capacity.spec, self.pbc)
            self.kernel = self.compiled()

    def advance(self, free_target: int) -> np.ndarray:
        """One segment; returns the slots whose structure is finished (empty after an
        overflow, which grows the lists for the next segment)."""
        self.launch(free_target)
        return self.collect()

    def launch(self, free_target: int) -> None:
        """Start a segment without waiting for it (JAX dispatches asynchronously): the
        host can work until :meth:`collect`, but must not load slots before then."""
        self._before = np.asarray(self.slots.steps)
        self.slots = self.kernel.segment(self.job.params, self.slots,
                                         self.job.steps_per_segment, free_target)

    def collect(self) -> np.ndarray:
        """Wait for the segment started by :meth:`launch`; as :meth:`advance`."""
        capacity = self.capacity
        slots = self.slots
        advanced = np.where(self.holder >= 0, np.asarray(slots.steps) - self._before, 0)
        self.n_segments += 1
        self.slot_steps += int(advanced.sum())
        self.slot_capacity += self.batch * int(advanced.max(initial=0))
        overflow = np.asarray(slots.overflow)
        if overflow.any():  # grow the lists; a new skin spec means every slot rebuilds
            if capacity.grow(int(np.asarray(slots.count)[overflow].max()),
                             int(np.asarray(slots.count_cut)[overflow].max()),
                             np.asarray(slots.overflow_cell)[overflow]):
                self.slots = _restale(slots, capacity.spec, self.pbc)
            self.kernel = self.compiled()
            return np.zeros(0, int)
        live = np.asarray(slots.live)
        finished = np.nonzero((self.holder >= 0) & ~live)[0]
        if finished.size:
            self.slots, revived = _resize(slots, finished, capacity)
            if revived.size:
                self.kernel = self.compiled()
                finished = np.setdiff1d(finished, revived)
        return finished

    def harvest(self, finished) -> list[tuple[int, Atoms]]:
        """(key, relaxed Atoms) of the finished slots, which become free."""
        out = _harvest(self.slots, finished, [self.sources.pop(int(self.holder[b]))
                                              for b in finished], self.pbc)
        keys = [int(self.holder[b]) for b in finished]
        self.holder[finished] = -1
        return list(zip(keys, out))

    def shrink(self) -> None:
        """With nothing left to load and at most a quarter of a wide batch busy, repack
        the slow tail into a narrower batch (its own compiled shape, cached). Not with
        the serial schedule of CPUs (:func:`.kernel.serial_schedule`), where idle slots
        cost nothing and a narrower batch would only cost a compilation."""
        occupied = np.nonzero(self.holder >= 0)[0]
        batch = self.batch
        if not kernel_module.serial_schedule() and batch >= MIN_SHRINK and 0 < occupied.size <= batch // 4:
            narrow = max(MIN_SHRINK // 4, 1 << int(np.ceil(np.log2(2 * occupied.size))))
            narrow = min(batch, sharding.round_batch(narrow))
            keep = np.concatenate([occupied, np.nonzero(self.holder < 0)[0]])[:narrow]
            self.slots = jax.tree_util.tree_map(lambda x: x[keep], self.slots)
            self.holder = self.holder[keep]
            self.batch = narrow
            self.kernel = self.compiled()

    def tail_target(self) -> int:
        """``free_target`` of a segment when nothing is waiting to be loaded: run to the
        end, or (wide vmapped batches, which :meth:`shrink` repacks) until three quarters
        of the slots are free."""
        if self.batch >= MIN_SHRINK and not kernel_module.serial_schedule():
            return self.batch - self.batch // 4
        return self.batch + 1


def _bucket_capacity(job: _Job, pbc, n_max, pop) -> Capacity:
    """The bucket's capacity, fitted to ``pop`` (or the private ``_spec`` hook's)."""
    spec = job.spec
    if spec is None:
        capacity = _capacity_for(job.potential, pbc, n_max, job.skin, job.headroom)
        capacity.fit(pop)
        return capacity
    # the private ``_spec`` hook: these lists, a capacity of its own (not cached)
    capacity = Capacity(job.potential, pbc, skin=0.0 if spec.cutoff is None
                        else spec.cutoff - job.potential.cutoff)
    capacity.lists = ListSpec(spec, spec.capacity if capacity.trimmed else None)
    capacity.fit_potential(pop.cell[pop.mask.any(1)] if all(pbc) else np.eye(3)[None])
    return capacity


def _relax_bucket(job: _Job, structures, index, mine, n_max, pbc, out, bar, processes=1):
    """Stream the structures ``index`` (one shape bucket) through fixed slots; only the
    positions ``mine`` of ``index`` (this process's block of ``processes``) are relaxed
    here, with the neighbor capacity the whole bucket gives (that of a single process)
    and this process's share of its batch."""
    pop = from_atoms([structures[i] for i in index], n_max=n_max, dtype=job.dtype,
                     validate=False)
    pop = jax.tree_util.tree_map(np.asarray, pop)  # host bookkeeping compiles nothing
    capacity = _bucket_capacity(job, pbc, n_max, pop)
    if not len(mine):
        return
    batch = _batch_for(len(index), n_max, job.batch_size)
    if processes > 1:
        batch = sharding.round_batch(-(-batch // processes))
    bucket = _Bucket(job, n_max, pbc, batch, capacity)
    per = {k: np.asarray(v)[index] for k, v in job.targets.items()}
    queue = collections.deque(int(k) for k in mine)

    def fill():
        take = np.array([queue.popleft() for _ in range(min(bucket.n_free, len(queue)))], int)
        bucket.load(population.take(pop, take), {k: v[take] for k, v in per.items()}, take,
                    [structures[index[t]] for t in take])

    fill()
    while bucket.busy:
        free_target = bucket.tail_target()
        if queue:
            free_target = bucket.n_free + min(len(queue), max(1, bucket.batch // 8))
        finished = bucket.advance(free_target)
        if finished.size:
            for local, atoms in bucket.harvest(finished):
                out[index[local]] = atoms
            bar.update(finished.size)
        if queue and bucket.n_free:
            fill()
        if not queue:
            bucket.shrink()


def _restale(slots: Slots, spec, pbc) -> Slots:
    """Blank lists of the shape of ``spec``, all marked stale (host side)."""
    b, n = slots.mask.shape
    dtype = slots.frac.dtype
    shapes = jax.eval_shape(
        jax.vmap(lambda f, c, m: nl.build(spec, f, c, m, pbc)),
        jax.ShapeDtypeStruct((b, n, 3), dtype), jax.ShapeDtypeStruct((b, 3, 3), dtype),
        jax.ShapeDtypeStruct((b, n), bool))
    nbrs = jax.device_put(jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), shapes))
    return slots.replace(nbrs=nbrs, stale=jax.device_put(np.ones((b,), bool)))


def _resize(slots: Slots, finished, capacity: Capacity):
    """Slots that failed with non-finite numbers because their cell outgrew the
    potential's static size: resize the potential and revive them (host side)."""
    reason = np.asarray(slots.reason)
    suspects = finished[reason[finished] == 1]
    if not suspects.size or not capacity.refit(np.asarray(slots.cell)[suspects]):
        return slots, suspects[:0]
    live, failed, code = (np.array(x) for x in (slots.live, slots.failed, slots.reason))
    live[suspects], failed[suspects], code[suspects] = True, False, 0
    return slots.replace(live=jnp.asarray(live), failed=jnp.asarray(failed),
                         reason=jnp.asarray(code)), suspects


def _harvest(slots, finished, sources, pbc) -> list[Atoms]:
    """Output ``ase.Atoms`` of the finished slots (host side); ``sources[k]`` is
    (input Atoms, its padded starting frac, its starting cell) of ``finished[k]``."""
    names = ("energy", "enthalpy", "forces", "stress", "frac", "cell", "steps", "converged",
             "failed", "reason", "pressure")
    data = dict(zip(names, jax.device_get(tuple(getattr(slots, k) for k in names))))
    periodic = all(pbc)
    out = []
    for b, (src, frac0, cell0) in zip(finished, sources):
        n = len(src)
        atoms = src.copy()
        del atoms.constraints
        positions = data["frac"][b][:n] @ data["cell"][b]
        if periodic:
            atoms.set_cell(data["cell"][b])
        else:  # undo the centring of the cluster inside its bookkeeping box
            start = frac0[:n] @ cell0
            positions = positions + np.mean(src.get_positions() - start, axis=0)
        atoms.positions[:] = positions
        energy = float(data["energy"][b])
        forces = np.array(data["forces"][b][:n], float)
        stress = np.array(data["stress"][b], float)
        p_ext = float(data["pressure"][b])
        calc = dict(energy=energy, free_energy=energy, forces=forces)
        info = {k: v for k, v in atoms.info.items() if k not in FAILURE_KEYS}
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
            code = int(data["reason"][b])
            info["failure_reason"] = REASONS[code]
            info["error"] = f"{REASONS[code]}; {ADVICE[code]}"
        atoms.info = info
        atoms.calc = SinglePointCalculator(atoms, **calc)
        out.append(atoms)
    return out


__all__ = ["relax", "screen", "ADVICE", "FireConfig", "LBFGSConfig", "MAX_FORCE",
           "MIN_VOLUME_PER_ATOM", "MAX_VOLUME_RATIO", "REASONS", "Slots"]


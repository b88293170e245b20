"""``relax_stream``: relaxation of structures as they come, for searches (host side).

A search does not know its next candidates until earlier ones are relaxed. This
generator keeps a fixed number of slots of one bucket busy: at every segment boundary it
asks a ``feed`` callback for as many structures as there are free slots and yields each
finished structure at once. It runs on the bucket, capacity, compiled kernel and checks
of :func:`jcsp.relax.driver.relax`, so it compiles nothing new and gives every
structure the numbers ``relax`` gives it. Its slots are split over the local devices as
``relax``'s are and, in a ``jax.distributed`` job, over the processes, which exchange
their finished structures at every segment boundary (:mod:`jcsp.sharding`).
"""

from __future__ import annotations

import collections
from typing import Sequence

import jax
import numpy as np
from ase import Atoms

from .. import sharding
from ..potentials.base import Potential
from ..structures import population
from ..structures.convert import from_atoms
from ..units import gpa_to_ev_per_a3
from .driver import _Bucket, _Job, _bucket_capacity
from .inputs import _check_arguments, _integer, _options, _pressures, _rejected, screen


def relax_stream(feed, potential: Potential, fmax: float = 0.01, pressure: float = 0.0,
                 relax_cell: bool = True, optimizer="fire", max_steps: int = 3000, *,
                 batch_size: int, smax: float | None = None, steps_per_segment: int = 100,
                 dtype=None, params=None, skin: float | None = None, headroom: float = 1.0,
                 overlap: bool = False, stats: dict | None = None, distribute: bool = True):
    """Relax structures as they come, keeping ``batch_size`` slots busy (host side).

    A generator over the finished structures. Whenever slots are free (at the start and
    after each segment of the compiled relaxation), ``feed(n)`` is called for up to
    ``n`` new structures (the free slots); each finished one is yielded as soon as its segment ends,
    so a search can turn it into its next candidate while the others keep relaxing.
    Every structure runs through the same bucket, capacity, compiled kernel and checks
    as in :func:`~.driver.relax` (no extra compilation), and its numbers are those it gets from
    ``relax(..., batch_size=batch_size)``: a slot's numbers do not depend on the other
    slots or on when it was loaded (``tests/test_search_pipeline.py`` checks it bit for
    bit). Invalid inputs (:func:`~.inputs.screen`) take no slot and come back flagged, as in
    :func:`~.driver.relax`.

    Args:
      feed: ``feed(n) -> list[Atoms] | None``: up to ``n`` new structures, ``[]`` when
        none are ready now (with nothing relaxing, that ends the stream), ``None`` when
        no more will come. All must be of
        one atom count (bucket) and periodicity, that of the first one.
      potential, fmax, pressure, relax_cell, optimizer, max_steps, smax,
        steps_per_segment, dtype, params, skin, headroom: as in :func:`~.driver.relax`
        (``pressure``: one number, GPa).
      batch_size: the number of slots, rounded up to a multiple of the local device
        count (:mod:`jcsp.sharding`: the slots are split over every local device).
      overlap: start each segment before handing back the results of the previous one
        (JAX runs it asynchronously), so the caller's work on them (a search's
        recording and next candidates) runs while the device relaxes; the structures
        it makes are loaded at the end of that segment, so a freed slot waits one
        segment. Worth it where host and device work in parallel (a GPU, or CPU cores
        to spare); the numbers of every structure are the same either way. ``feed`` may
        then be asked for up to a batch ahead.
      stats: if given, filled with ``segments``, ``occupancy`` (mean fraction of the
        slots that were relaxing during the segments' iterations) and ``batch``.
      distribute: in a multi-process job (:func:`jcsp.sharding.initialize`), the slots
        are split over the processes (``batch_size / processes`` each) and every
        process must run the same stream with the same ``feed`` answers (a replicated
        search does): every segment boundary, the processes exchange their finished
        structures, and each yields all of them in slot order, so every process sees
        the stream one process would give (without ``overlap``, which is then off).
        False runs the whole stream in this process.

    Yields:
      ``(k, relaxed)``: ``k`` counts the structures in the order ``feed`` gave them
      (from 0); ``relaxed`` is as in :func:`~.driver.relax`'s output.

    Raises:
      ValueError: bad options, a fed entry that is not an ``ase.Atoms``, more
        structures than asked for, or one of another bucket than the first.

    Example:
      >>> todo = iter(structures)
      >>> feed = lambda n: [a for _, a in zip(range(n), todo)] or None
      >>> for k, atoms in relax_stream(feed, lj, batch_size=16):
      ...     print(k, atoms.info["enthalpy"])
    """
    if not isinstance(potential, Potential):
        raise ValueError(f"potential must be a jcsp potential, got {type(potential).__name__}")
    if not isinstance(distribute, bool):
        raise ValueError(f"distribute must be True or False, got {distribute!r}")
    processes = jax.process_count() if distribute else 1
    batch_size = _integer(batch_size, "batch_size", 1)
    # slots of this process; with several processes, each owns a block of the
    # ``batch_size`` global slots: rank * local .. (rank + 1) * local
    local = sharding.round_batch(-(-batch_size // processes))
    batch_size = local * processes
    p_ev = float(gpa_to_ev_per_a3(_pressures(pressure, 1)[0]))
    opts = _options(potential, fmax=fmax, smax=smax, optimizer=optimizer, max_steps=max_steps,
                    steps_per_segment=steps_per_segment, batch_size=batch_size,
                    headroom=headroom, skin=skin, dtype=dtype, params=params)
    smax_ev = -1.0 if opts["smax"] is None else float(gpa_to_ev_per_a3(opts["smax"]))
    job = _Job(potential=potential, params=opts["params"], optimizer=opts["optimizer"],
               relax_cell=relax_cell, dtype=opts["dtype"], targets={}, batch_size=batch_size,
               steps_per_segment=opts["steps_per_segment"], skin=opts["skin"],
               headroom=opts["headroom"], spec=None)
    bucket = None
    shape = None  # (pbc, n_max) of the stream
    counter = 0
    overlap = overlap and processes == 1
    start = jax.process_index() * local if processes > 1 else 0  # first own global slot
    holder = np.full(batch_size, -1)  # the key in each global slot (-1: free)
    slot_of: dict = {}  # key -> its global slot
    ready: list = []  # finished (and invalid) structures not yet handed back
    queue: collections.deque = collections.deque()  # (key, atoms, pop, k) to load
    exhausted = False

    def pull(n) -> bool:
        """Ask ``feed`` for up to ``n``; queue the valid ones; True if it gave any."""
        nonlocal shape, counter, exhausted
        new = feed(n)
        if new is None:
            exhausted = True
            return False
        if isinstance(new, Atoms) or not isinstance(new, Sequence):
            raise ValueError("feed must return a list of ase.Atoms (or None when done)")
        if len(new) > n:
            raise ValueError(f"feed returned {len(new)} structures for {n} free slots")
        if not new:
            return False
        keys = list(range(counter, counter + len(new)))
        counter += len(new)
        _check_arguments(new, potential)
        valid = []
        for key, atoms, error in zip(keys, new, screen(new, potential)):
            if error is not None:
                ready.append((key, _rejected(atoms, error)))
                continue
            here = (tuple(bool(p) for p in atoms.pbc), population.bucket_size(len(atoms)))
            if shape is None:
                shape = here
            elif here != shape:
                raise ValueError(
                    f"relax_stream relaxes one bucket: structure {key} has {len(atoms)} "
                    f"atoms and pbc {here[0]}, the stream holds up to {shape[1]} atoms with "
                    f"pbc {shape[0]}; relax other sizes in a stream (or relax call) of "
                    "their own")
            valid.append((key, atoms))
        if valid:
            pop = from_atoms([a for _, a in valid], n_max=shape[1], dtype=job.dtype,
                             validate=False)
            pop = jax.tree_util.tree_map(np.asarray, pop)
            queue.extend((key, atoms, pop, k) for k, (key, atoms) in enumerate(valid))
        return True

    def load() -> None:
        """Move queued structures into free slots (sizing the capacity for them)."""
        nonlocal bucket
        if not queue:
            return
        if bucket is None:
            pbc, n_max = shape
            first = population.take(queue[0][2], np.array([queue[0][3]]))
            bucket = _Bucket(job, n_max, pbc, local,
                             _bucket_capacity(job, pbc, n_max, first))
        free = np.nonzero(holder < 0)[0][: len(queue)]  # lowest free global slots
        take = [queue.popleft() for _ in free]
        if not take:
            return
        pop = population.concat([population.take(t[2], np.array([t[3]])) for t in take]) \
            if len(take) > 1 else population.take(take[0][2], np.array([take[0][3]]))
        bucket.refit(pop)  # every process sizes its lists for every structure
        for slot, t in zip(free, take):
            holder[slot], slot_of[t[0]] = t[0], int(slot)
        if processes > 1:  # the ones that landed in this process's slots
            here = np.nonzero((free >= start) & (free < start + local))[0]
            if not here.size:
                return
            pop, take = population.take(pop, here), [take[i] for i in here]
        k = len(take)
        per = dict(pressure=np.full(k, p_ev), fmax=np.full(k, opts["fmax"]),
                   smax=np.full(k, smax_ev), max_steps=np.full(k, opts["max_steps"], np.int32))
        bucket.load(pop, per, [t[0] for t in take], [t[1] for t in take])

    def finish(finished) -> list:
        """Harvest this process's finished slots; with several processes, every
        process's, exchanged (in rank order: global slot order). Frees their slots."""
        done = bucket.harvest(finished) if finished.size else []
        if processes > 1:
            done = [item for part in sharding.allgather_objects(done) for item in part]
        for key, _ in done:
            holder[slot_of.pop(key)] = -1
        return done

    def room() -> int:
        """Structures the stream can take now: free slots, less what is queued."""
        return max(0, int((holder < 0).sum()) - len(queue))

    def target() -> int:
        if exhausted and not queue:
            return bucket.tail_target()
        return bucket.n_free + max(1, bucket.batch // 8)

    try:
        while True:
            fed = False
            while not exhausted and room() > 0:  # fill the free slots
                if not pull(room()):
                    break
                fed = True
                if ready:  # invalid ones: the caller sees them before it is asked again
                    break
            load()
            idle = bucket is None or not (holder >= 0).any()
            gave = bool(ready)
            if idle or not overlap:
                while ready:
                    yield ready.pop(0)
            if idle:
                if queue or ((fed or gave) and not exhausted):
                    continue  # more to load, or the caller may answer what it got
                return
            if not overlap:
                # every process runs one segment (or none, with no structure of its
                # own) and then meets the others in finish()
                finished = bucket.advance(target()) if bucket.busy else np.zeros(0, int)
                yield from finish(finished)
                if exhausted and not queue:
                    bucket.shrink()
                continue
            # Overlapped: the device relaxes while the caller works on the results of the
            # previous segment and prepares the next structures (loaded after it).
            bucket.launch(target())
            while ready:
                yield ready.pop(0)
            if not exhausted:
                limit = bucket.batch - len(queue)
                if limit > 0:
                    pull(limit)
            ready.extend(finish(bucket.collect()))
            load()
            if exhausted and not queue and not ready:
                bucket.shrink()
    finally:
        if stats is not None and bucket is not None:
            stats.update(segments=bucket.n_segments, batch=batch_size,
                         occupancy=(bucket.slot_steps / bucket.slot_capacity
                                    if bucket.slot_capacity else float("nan")))


__all__ = ["relax_stream"]

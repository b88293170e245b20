"""Populations over devices and hosts: the one-axis device mesh, multi-process setup.

A population of structures is the one axis jcsp spreads over hardware:

- **Devices of one process** (the GPUs of a node, or forced CPU devices with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``): :func:`population_mesh` is a
  one-axis :class:`jax.sharding.Mesh` (axis :data:`AXIS`) over the process's local
  devices; the leading (population) axis of every per-slot array of the relaxer is
  split over it (:func:`population_sharding`, :func:`shard_population`), so each device
  steps its own block of slots (:func:`jax.shard_map`) and the step exchanges nothing
  between devices. Batch sizes are rounded up to a multiple of the device count
  (:func:`round_batch`).
- **Processes** (several hosts, or one process per GPU), through JAX's own
  multi-controller runtime :mod:`jax.distributed`: :func:`initialize` starts it when the
  environment is a multi-process job (SLURM ``srun``, Open MPI ``mpirun``, or the
  variables below) and every process then runs the same program. Each process owns a
  contiguous block of every list of structures (:func:`process_block`) and relaxes it on
  its local devices; results are exchanged with :func:`allgather_objects`, so every
  process ends with the same results, and only :func:`is_writer` (process 0) writes
  files.

Host side: nothing here is called under ``jit``. See ``docs/scaling.md`` for launch
lines.

Manual launches (no SLURM or Open MPI) set, for each process, ``JAX_COORDINATOR_ADDRESS``
(``host:port`` of process 0), ``JCSP_NUM_PROCESSES`` and ``JCSP_PROCESS_ID``.

References: JAX, "Distributed arrays and automatic parallelization" and
"Multi-host and multi-process environments" (jax.readthedocs.io).
"""

from __future__ import annotations

import functools
import os
import pickle

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import compile_cache

#: Name of the mesh axis the population is split over.
AXIS = "population"
#: Environment variables of a manual multi-process launch (with ``JAX_COORDINATOR_ADDRESS``).
ENV_NUM_PROCESSES = "JCSP_NUM_PROCESSES"
ENV_PROCESS_ID = "JCSP_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, "
                         f"got {value!r}") from None


def detected_launcher() -> str | None:
    """The multi-process launcher the environment shows, or None (one process).

    ``"slurm"``: inside ``srun`` with more than one task (JAX's own SLURM detection:
    ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``,
    ``SLURM_LOCALID``); ``"ompi"``: under Open MPI's ``mpirun`` with more than one rank
    (``OMPI_MCA_orte_hnp_uri``, ``OMPI_COMM_WORLD_SIZE``); ``"manual"``:
    ``JAX_COORDINATOR_ADDRESS`` with :data:`ENV_NUM_PROCESSES` above one.
    """
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
    if all(k in env for k in slurm) and (_env_int("SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    if env.get("JAX_COORDINATOR_ADDRESS") and (_env_int(ENV_NUM_PROCESSES) or 1) > 1:
        return "manual"
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None,
               force: bool = False) -> bool:
    """Start :mod:`jax.distributed` if this is a multi-process job (host side).

    Call it once, first thing, before any other JAX work (JAX requires that). With
    explicit arguments (all three), or ``force``, it always initialises; otherwise only
    when :func:`detected_launcher` finds SLURM, Open MPI or a manual launch, and then it
    lets JAX read the cluster's own variables. A second call does nothing.

    Args:
      coordinator_address: ``host:port`` of process 0 (reachable by every process).
      num_processes: number of processes of the job.
      process_id: this process's rank, 0 .. ``num_processes - 1``.
      local_device_ids: the devices (GPU indices) this process uses. Default: under
        SLURM or Open MPI, JAX's choice, the one GPU of the process's local rank (launch
        one process per GPU); with a manual launch or explicit arguments, all visible
        devices. One process per node driving all its GPUs under SLURM passes them all,
        e.g. ``[0, 1, 2, 3]``.
      force: initialise even when the environment shows no launcher (JAX's own cluster
        detection then decides, e.g. on Cloud TPU).

    Returns:
      True when this process is part of a multi-process job (``jax.process_count() > 1``).

    Raises:
      ValueError: only some of the three arguments given, or bad values.

    Example:
      >>> import jcsp.sharding
      >>> jcsp.sharding.initialize()   # under srun / mpirun; a no-op on a laptop
      >>> writer = jcsp.sharding.is_writer()
      >>> res = jcsp.search("Si8", sw, budget=2000, out="run" if writer else None)
    """
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError("give coordinator_address, num_processes and process_id together "
                         "(or none of them, to detect the launcher)")
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if all(given):
        num_processes, process_id = int(num_processes), int(process_id)
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be in 0..{num_processes - 1} and num_processes "
                             f">= 1, got {process_id} of {num_processes}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids)
    else:
        launcher = detected_launcher()
        if launcher == "manual":
            count, rank = _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID)
            if rank is None:
                raise ValueError(f"{ENV_PROCESS_ID} must be set (this process's rank) when "
                                 f"{ENV_NUM_PROCESSES} is")
            jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], count, rank,
                                       local_device_ids=local_device_ids)
        elif launcher is not None or force:
            jax.distributed.initialize(local_device_ids=local_device_ids)
        else:
            return False
    if jax.process_count() > 1:  # each process its own persistent compilation cache
        compile_cache.per_process(jax.process_index())
    return jax.process_count() > 1


def is_writer() -> bool:
    """True in the one process that writes files (process 0; always in a single process)."""
    return jax.process_index() == 0


def local_device_count() -> int:
    """Devices of this process the population is split over."""
    return jax.local_device_count()


@functools.lru_cache(maxsize=None)
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.array(devices, dtype=object), (AXIS,))


def population_mesh(n_devices: int | None = None) -> Mesh:
    """A one-axis mesh (axis :data:`AXIS`) over this process's first ``n_devices`` local
    devices (default: all). Meshes are cached, so equal calls give the same object."""
    devices = tuple(jax.local_devices())
    if n_devices is not None:
        if isinstance(n_devices, bool) or not 1 <= int(n_devices) <= len(devices):
            raise ValueError(f"n_devices must be between 1 and the {len(devices)} local "
                             f"devices, got {n_devices!r}")
        devices = devices[: int(n_devices)]
    return _mesh(devices)


def population_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``mesh``'s :data:`AXIS`, the others whole."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same array on every device of ``mesh`` (parameters, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def round_batch(batch: int, n_devices: int | None = None) -> int:
    """``batch`` rounded up to a multiple of the device count (each device gets the same
    number of slots)."""
    n = local_device_count() if n_devices is None else int(n_devices)
    return -(-int(batch) // n) * n


def shard_population(tree, mesh: Mesh):
    """Put a pytree whose leaves all have the population as leading axis onto ``mesh``,
    that axis split over the devices (0-d leaves are replicated). Leaves already placed
    so are not copied."""
    split, whole = population_sharding(mesh), replicated(mesh)

    def put(x):
        target = whole if np.ndim(x) == 0 else split
        if isinstance(x, jax.Array) and x.sharding == target:
            return x
        return jax.device_put(x, target)

    return jax.tree_util.tree_map(put, tree)


def replicate(tree, mesh: Mesh):
    """Put every leaf of ``tree`` whole on each device of ``mesh``."""
    whole = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == whole:
            return x
        return jax.device_put(x, whole)

    return jax.tree_util.tree_map(put, tree)


def process_block(n: int, process: int | None = None, count: int | None = None) -> np.ndarray:
    """Indices ``0 .. n-1`` owned by ``process`` (default: this one) of ``count``
    processes: contiguous blocks, sizes differing by at most one, in rank order."""
    count = jax.process_count() if count is None else int(count)
    process = jax.process_index() if process is None else int(process)
    return np.array_split(np.arange(int(n)), count)[process]


def allgather_objects(obj) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process.

    A collective: every process must call it, in the same order as its other
    collectives. The objects travel as pickled bytes through
    :func:`jax.experimental.multihost_utils.process_allgather`, so numbers arrive bit
    for bit. With one process it returns ``[obj]`` without pickling.
    """
    if jax.process_count() == 1:
        return [obj]
    blob = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int64)))
    sizes = sizes.reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: blob.size] = blob
    blobs = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(blobs[k, : int(sizes[k])].tobytes()) for k in range(len(sizes))]


def run_on_writer(fn, *args, share: bool = False):
    """``fn(*args)`` in the writing process only (:func:`is_writer`); an exception it
    raises is raised in every process, so all processes fail together instead of some
    waiting forever at their next collective.

    A collective with several processes. Returns ``fn``'s value in the writer and, in
    the others, that value too with ``share`` (it must be picklable: e.g. the
    structures a resumed run read from its database) or None.

    Example:
      >>> db = sharding.run_on_writer(open_run, path, record)       # None elsewhere
      >>> stored = sharding.run_on_writer(read_stored, db, share=True)  # everywhere
    """
    if jax.process_count() == 1:
        return fn(*args)
    value, error = None, None
    if is_writer():
        try:
            value = fn(*args)
        except Exception as err:  # raised everywhere below
            error = err
            try:
                pickle.dumps(error)
            except Exception:  # an exception that cannot travel: its type and message
                error = RuntimeError(f"{type(err).__name__}: {err}")
    sent = allgather_objects((value if share else None, error) if is_writer() else None)[0]
    if sent[1] is not None:
        raise sent[1]
    return value if is_writer() else sent[0]


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


__all__ = ["AXIS", "allgather_objects", "barrier", "detected_launcher", "initialize",
           "is_writer", "local_device_count", "population_mesh", "population_sharding",
           "process_block", "replicate", "replicated", "round_batch", "run_on_writer",
           "shard_population"]

"""JAX's persistent compilation cache, on by default (host side).

Every ``jcsp`` command and every new Python process would otherwise compile its kernels
(relaxation segments, neighbor lists, energies) afresh; with the cache, a kernel compiled
once on this machine is read back from disk by later processes. Importing this module
(which ``import jcsp`` does first) calls :func:`enable`.

Where the cache lives, from the environment at import:

- ``JCSP_NO_CACHE=1`` (or ``true``/``yes``): no persistent cache;
- ``JCSP_CACHE_DIR=DIR``: the cache is ``DIR``;
- otherwise ``$XDG_CACHE_HOME/jcsp/jax``, or ``~/.cache/jcsp/jax`` when ``XDG_CACHE_HOME``
  is unset.

A cache directory the user already gave JAX (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)`` before importing jcsp) is kept.
When the directory cannot be created or written, jcsp warns once and runs uncached.

Settings: every kernel is cached whatever its compile time or size
(``jax_persistent_cache_min_compile_time_secs = 0``,
``jax_persistent_cache_min_entry_size_bytes = -1``), because on a CPU most of jcsp's
kernels compile in well under JAX's default threshold of 1 s, yet together they take
tens of seconds.

Sharing: the cache is keyed by a hash of the program, the compile options, the backend
and the jax/jaxlib versions, so processes of different versions can share a directory.
JAX's file cache (``jax._src.lru_cache.LRUCache``) writes an entry with a plain
``write_bytes`` of the zlib-compressed executable and never overwrites an existing
entry; it is not an atomic rename. jcsp leaves the cache without a size limit, so JAX
runs it unlocked: a reader that catches an entry while another process writes it gets a
truncated zlib stream, which zlib's checksum rejects, and JAX warns and compiles that
kernel itself (its ``_cache_read`` turns read errors into warnings), so a race costs one
recompilation, never a wrong kernel. A size limit would make JAX lock the directory and
scan every entry on each write (its least-recently-used eviction), which costs time that
grows with the number of entries: the test suite, which writes thousands, ran for minutes
longer with it.

Memory maps (Linux): every executable XLA's CPU backend compiles or loads from this cache
is mapped into the process as a few small regions per kernel (about 700 for one
relaxation kernel), and a process may hold at most ``vm.max_map_count`` of them (65530
by default). A long-lived process that compiles thousands of kernels, such as a session
that relaxes many different compositions and sizes, crossed that limit, and XLA then
crashed the interpreter (a segmentation fault in its compile or cache-load step) instead
of raising. :func:`release_if_crowded`, which the relaxer calls before it uses a kernel,
drops JAX's in-memory executables (``jax.clear_caches``) when the process holds more than
half the limit; they are recompiled, or read back from this cache, when next used.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

_TRUE = {"1", "true", "yes", "on"}
_state: dict = {"enabled": None, "warned": False, "checked": -float("inf")}
_MAPS = "/proc/self/maps"
_MAP_LIMIT = "/proc/sys/vm/max_map_count"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache directory the environment asks for, or None when ``JCSP_NO_CACHE`` is set.

    >>> str(cache_dir({"JCSP_CACHE_DIR": "/scratch/c"}))
    '/scratch/c'
    """
    env = os.environ if environ is None else environ
    if env.get("JCSP_NO_CACHE", "").strip().lower() in _TRUE:
        return None
    if env.get("JCSP_CACHE_DIR"):
        return Path(env["JCSP_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jcsp" / "jax"


def _writable(path: Path) -> OSError | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return err
    return None


def enable(environ: Mapping[str, str] | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (host side).

    Returns the directory in use, or None when the cache is off (``JCSP_NO_CACHE``) or
    its directory is not writable (then a warning says so, once per process). A cache
    directory already configured in JAX is left as it is and returned.
    """
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        _state["enabled"] = Path(configured)
        return _state["enabled"]
    path = cache_dir(environ)
    if path is None:
        _state["enabled"] = None
        return None
    err = _writable(path)
    if err is not None:
        if not _state["warned"]:
            warnings.warn(f"jcsp: cannot use the compilation cache {path} ({err}); running "
                          "without it, so every process compiles its kernels afresh (set "
                          "JCSP_CACHE_DIR to a writable directory, or JCSP_NO_CACHE=1 to "
                          "silence this)", RuntimeWarning, stacklevel=2)
            _state["warned"] = True
        _state["enabled"] = None
        return None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_dir", str(path))
    _state["enabled"] = path
    return path


def enabled() -> Path | None:
    """The cache directory :func:`enable` set up in this process (None: uncached)."""
    return _state["enabled"]


def per_process(index: int) -> Path | None:
    """Move this process's cache to ``<cache>/process-<index>`` (host side), for the
    processes of a ``jax.distributed`` job (:func:`jcsp.sharding.initialize` calls it).

    Executables compiled by one rank of a distributed job are not safe to load on
    another (their compile options are not all part of the key: openxla/xla#18286), and
    JAX writes cache files without locking or an atomic rename, so every process keeps
    its own. Returns the new directory, or None when the cache is off."""
    base = _state["enabled"]
    if base is None:
        return None
    path = base / f"process-{int(index)}"
    error = _writable(path)
    if error is not None:
        warnings.warn(f"jcsp: cannot use the compilation cache {path} ({error}); this "
                      "process runs uncached", stacklevel=2)
        jax.config.update("jax_compilation_cache_dir", None)
        _state["enabled"] = None
    else:
        jax.config.update("jax_compilation_cache_dir", str(path))
        _state["enabled"] = path
    compilation_cache.reset_cache()
    return _state["enabled"]


def memory_maps() -> tuple[int, int] | None:
    """(memory regions this process maps, the kernel's per-process limit), or None where
    ``/proc`` does not say (not Linux)."""
    try:
        with open(_MAPS, "rb") as maps:
            count = maps.read().count(b"\n")
        with open(_MAP_LIMIT) as limit:
            return count, int(limit.read())
    except (OSError, ValueError):
        return None


def release_if_crowded(fraction: float = 0.5, every: float = 2.0) -> bool:
    """Drop JAX's compiled executables from memory (``jax.clear_caches``, then a garbage
    collection) when this process maps more than ``fraction`` of ``vm.max_map_count``
    regions (see the module notes); checks at most once per ``every`` seconds. Returns
    True when it released them. Jitted functions stay valid: they recompile, or load from
    the persistent cache, at their next call."""
    now = time.monotonic()
    if now - _state["checked"] < every:
        return False
    _state["checked"] = now
    maps = memory_maps()
    if maps is None or maps[0] <= fraction * maps[1]:
        return False
    jax.clear_caches()
    gc.collect()
    return True


enable()

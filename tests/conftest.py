"""Shared test setup: float64 everywhere, and LAMMPS required in CI.

Tests marked ``@pytest.mark.lammps`` need Debian's ``lammps`` package: the ``lmp``
binary as a reference and/or its potential files (``/usr/share/lammps/potentials``).
``.ci/run`` installs it, so in CI (environment variable ``CI`` set to anything but
empty, ``0`` or ``false``) a missing LAMMPS makes those tests fail, as a broken
reference must. Elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import tempfile

# One BLAS thread per test process (CI runs two, one per core). ASE's FrechetCellFilter
# makes thousands of 3x3 scipy solves per relaxation; with OpenBLAS's default thread pool
# each costs ~50 us instead of ~10 us, and the ASE-parity tests ran ten times slower.
# Set before numpy loads OpenBLAS (later settings are ignored).
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# Compiled kernels go to a cache of the test runs, shared by the two workers, not to the
# user's own cache directory (jcsp.compile_cache reads this when jcsp is imported).
os.environ.setdefault("JCSP_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jcsp-test-jax-cache"))

import jax  # noqa: E402
import pytest  # noqa: E402

import lammps_ref  # noqa: E402
from jcsp import compile_cache  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def _room_for_executables():
    """After each test, drop JAX's in-memory executables once the worker maps a quarter
    of ``vm.max_map_count`` regions: a worker runs hundreds of tests and compiles
    thousands of kernels, and past the limit XLA segfaults (see jcsp.compile_cache)."""
    yield
    compile_cache.release_if_crowded(fraction=0.25, every=0.0)


def pytest_collection_modifyitems(config, items):
    missing = lammps_ref.missing()
    if missing is None or lammps_ref.IN_CI:
        return
    skip = pytest.mark.skip(reason=missing)
    for item in items:
        if item.get_closest_marker("lammps") is not None:
            item.add_marker(skip)

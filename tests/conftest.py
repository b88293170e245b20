"""Shared test setup: float64 everywhere, and a clean skip where LAMMPS is missing.

Tests marked ``@pytest.mark.lammps`` compare against Debian's ``lmp`` binary (installed
by ``.ci/run``); without it they are skipped with the reason, instead of failing.
"""

from __future__ import annotations

import shutil

import jax
import pytest

jax.config.update("jax_enable_x64", True)

#: Path of the LAMMPS binary, or None.
LMP = shutil.which("lmp") or shutil.which("lmp_serial")

requires_lammps = pytest.mark.skipif(
    LMP is None, reason="LAMMPS binary 'lmp' not found (apt-get install lammps)")


def pytest_collection_modifyitems(config, items):
    if LMP is not None:
        return
    skip = pytest.mark.skip(reason="LAMMPS binary 'lmp' not found (apt-get install lammps)")
    for item in items:
        if item.get_closest_marker("lammps") is not None:
            item.add_marker(skip)

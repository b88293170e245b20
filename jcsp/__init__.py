"""jcsp: crystal structure prediction as one batched, JIT-compiled JAX program.

Importing jcsp enables JAX's float64 support (set ``JCSP_X64=0`` before import to keep
JAX's float32-only default); arrays then default to float64 on the CPU, and relaxers
accept ``dtype=`` for float32 on accelerators.
"""

from __future__ import annotations

import os

import jax

if os.environ.get("JCSP_X64", "1") != "0":
    jax.config.update("jax_enable_x64", True)

from . import compile_cache  # noqa: E402,F401  (persistent compilation cache, see module)
from . import neighbors, potentials, units  # noqa: E402
from .calculator import JCSPCalculator  # noqa: E402
from .derivatives import evaluate, evaluate_population  # noqa: E402
from .structures import Population  # noqa: E402
from .relax import relax, relax_differentiable  # noqa: E402
from . import search  # noqa: E402  (a callable module: jcsp.search(...) runs a search)
from . import generative  # noqa: E402
from .generative import generate  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["JCSPCalculator", "Population", "__version__", "evaluate", "evaluate_population",
           "generate", "generative", "neighbors", "potentials", "relax", "relax_differentiable",
           "search", "units"]

"""Relaxers: batched FIRE and L-BFGS over positions and cell, and the ``relax`` driver.

- :mod:`.cell_filter`: the cell as a coordinate transform (ASE ``FrechetCellFilter``).
- :mod:`.fire`, :mod:`.lbfgs`: optimizers as pure ``init``/``step`` functions.
- :mod:`.driver`: ``relax``, the host-side streaming batch driver.
- :mod:`.stream`: ``relax_stream``, structures relaxed as a search makes them.
- :mod:`.implicit`: ``relax_differentiable``, relaxed structures as differentiable
  functions of the potential's parameters and the pressure (implicit differentiation).
- :mod:`.properties`: relaxed-ion elastic constants and Gamma-point phonons from
  autodiff Hessians, and the stability checks built on them.
"""

from . import cell_filter
from .driver import relax
from .fire import FireConfig, FireState, Optimizer, fire
from .implicit import DifferentiableRelaxation, NotAMinimumError, relax_differentiable
from .lbfgs import LBFGSConfig, LBFGSState, lbfgs
from .properties import dynamically_stable, elastic_constants, mechanically_stable, phonons_gamma
from .stream import relax_stream

__all__ = ["relax", "relax_stream", "relax_differentiable", "DifferentiableRelaxation",
           "NotAMinimumError", "fire", "lbfgs", "FireConfig", "LBFGSConfig", "FireState", "LBFGSState",
           "Optimizer", "cell_filter", "elastic_constants", "phonons_gamma",
           "mechanically_stable", "dynamically_stable"]

"""Energy models. Each maps (params, graph) -> per-atom energies; see :mod:`.base`."""

from .base import Potential
from .lennard_jones import LennardJones

__all__ = ["Potential", "LennardJones"]

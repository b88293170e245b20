"""Energy models. Each maps (params, graph) -> per-atom energies; see :mod:`.base`."""

from . import ewald
from .base import Potential
from .buckingham import BuckinghamCoulomb
from .lennard_jones import LennardJones

__all__ = ["BuckinghamCoulomb", "LennardJones", "Potential", "ewald"]

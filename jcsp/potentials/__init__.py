"""Energy models. Each maps (params, graph) -> per-atom energies; see :mod:`.base`.

Trained ML potentials live in :mod:`jcsp.ml` (``jcsp.ml.load(directory).potential``);
:func:`jcsp.io.load_potential` loads any potential by name, file or table.
"""

from . import ewald, gulp
from .base import Potential
from .buckingham import BuckinghamCoulomb
from .eam import EAM
from .gulp import gulp_potential, read_gulp_library
from .lennard_jones import LennardJones
from .stillinger_weber import StillingerWeber

__all__ = ["BuckinghamCoulomb", "EAM", "LennardJones", "Potential", "StillingerWeber", "ewald",
           "gulp", "gulp_potential", "read_gulp_library"]

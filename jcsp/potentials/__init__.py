"""Energy models. Each maps (params, graph) -> per-atom energies; see :mod:`.base`.

Trained ML potentials live in :mod:`jcsp.ml` (``jcsp.ml.load(directory).potential``);
:func:`jcsp.io.load_potential` loads any potential by name, file or table.
"""

from . import ewald
from .base import Potential
from .buckingham import BuckinghamCoulomb
from .eam import EAM
from .lennard_jones import LennardJones
from .stillinger_weber import StillingerWeber

__all__ = ["BuckinghamCoulomb", "EAM", "LennardJones", "Potential", "StillingerWeber", "ewald"]

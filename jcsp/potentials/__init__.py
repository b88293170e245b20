"""Energy models. Each maps (params, graph) -> per-atom energies; see :mod:`.base`."""

from . import ewald
from .base import Potential
from .buckingham import BuckinghamCoulomb
from .eam import EAM
from .lennard_jones import LennardJones
from .stillinger_weber import StillingerWeber



def load(path):
    """A trained ML potential from a model directory written by ``jcsp train``.

    Returns a :class:`jcsp.ml.EquivariantPotential`, or a :class:`jcsp.ml.Committee` when
    the directory holds several members; either works in ``jcsp.relax``, ``jcsp.search``
    and ``jcsp.JCSPCalculator`` like the classical potentials.

    Raises:
      jcsp.ml.CheckpointError: missing, corrupt or mismatched files.
    """
    from ..ml.checkpoint import load as load_trained
    return load_trained(str(path)).potential


__all__ = ["load", "BuckinghamCoulomb", "EAM", "LennardJones", "Potential", "StillingerWeber", "ewald"]

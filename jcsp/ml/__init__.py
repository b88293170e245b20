"""Machine-learned interatomic potentials: an E(3)-equivariant network, its training and
committees. See ``docs/ml.md``."""

from .checkpoint import CheckpointError, load
from .data import DataError, read_structures
from .domain import Domain, extrapolation_grades
from .model import Backbone, EnergyNet, ModelConfig
from .potential import Committee, EquivariantPotential, GuardedCommittee
from .training import TrainConfig, train

__all__ = ["Backbone", "CheckpointError", "Committee", "GuardedCommittee", "DataError", "Domain", "EnergyNet",
           "EquivariantPotential", "ModelConfig", "TrainConfig", "extrapolation_grades", "load",
           "read_structures", "train"]

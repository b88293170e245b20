"""Structures: the padded population, conversions to and from ASE, symmetry analysis."""

from .population import Population, bucket_indices, bucket_size, stack, unstack
from .symmetry import spacegroup

__all__ = ["Population", "bucket_indices", "bucket_size", "spacegroup", "stack", "unstack"]

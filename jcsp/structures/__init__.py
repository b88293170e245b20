"""Structures: the padded population and conversions to and from ASE and files."""

from .population import Population, bucket_indices, bucket_size, stack, unstack

__all__ = ["Population", "bucket_indices", "bucket_size", "stack", "unstack"]

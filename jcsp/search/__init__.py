"""Structure search: random symmetric structures (Wyckoff sets from spglib) and drivers."""

from .generate import parse_composition, random_clusters, random_crystals

__all__ = ["parse_composition", "random_clusters", "random_crystals"]

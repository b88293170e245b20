"""Structure search: random symmetric structures (Wyckoff sets from spglib), fingerprints,
the archive of unique structures, convex hulls and the resumable run database."""

from .archive import AddResult, Archive
from .database import (ResumeError, has, make_uid, open_run, read_all, run_config,
                       write_structure, written_uids)
from .fingerprint import FingerprintSpec, cosine_distance, default_spec, fingerprints, pair_weights
from .generate import parse_composition, random_clusters, random_crystals
from .hull import Hull, annotate, convex_hull

__all__ = [
    "AddResult", "Archive", "FingerprintSpec", "Hull", "ResumeError", "annotate",
    "convex_hull", "cosine_distance", "default_spec", "fingerprints", "has", "make_uid",
    "open_run", "pair_weights", "parse_composition", "random_clusters", "random_crystals",
    "read_all", "run_config", "write_structure", "written_uids",
]

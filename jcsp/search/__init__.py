"""Structure search: random symmetric structures (Wyckoff sets from spglib), fingerprints,
the archive of unique structures, convex hulls, the resumable run database, the
search drivers and variable-composition searches of binaries.

The package is callable: ``jcsp.search(composition, potential, **settings)`` is
:func:`jcsp.search.api.search` (:func:`jcsp.search.run.search`, the settings being the
fields of :class:`SearchConfig`; with ``oracle=``, the active-learning search of
:mod:`jcsp.search.active`); ``jcsp.search.Archive`` and the submodules stay reachable as
usual.
"""

import sys as _sys
import types as _types

from . import pointgroup
from .archive import AddResult, Archive
from .config import SearchConfig
from .database import (ResumeError, has, make_uid, open_run, read_all, run_config,
                       write_structure, written_uids)
from .fingerprint import FingerprintSpec, cosine_distance, default_spec, fingerprints, pair_weights
from .generate import parse_composition, random_clusters, random_crystals
from .hull import Hull, annotate, convex_hull
from .run import ALGORITHMS, SearchResult
from .api import search
from .active import ActiveConfig, ActiveResult
from .variable import VariableResult, plot_hull, variable_composition

__all__ = [
    "ALGORITHMS", "ActiveConfig", "ActiveResult", "AddResult", "Archive", "FingerprintSpec", "Hull", "ResumeError",
    "SearchConfig", "SearchResult", "annotate", "search",
    "convex_hull", "cosine_distance", "default_spec", "fingerprints", "has", "make_uid",
    "open_run", "pair_weights", "parse_composition", "random_clusters", "random_crystals",
    "read_all", "run_config", "write_structure", "written_uids", "VariableResult",
    "plot_hull", "variable_composition", "pointgroup",
]


class _CallableModule(_types.ModuleType):
    """The ``jcsp.search`` package, callable as :func:`jcsp.search.api.search`."""

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule

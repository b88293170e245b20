"""Oracles: the expensive reference method of active learning (host side).

An oracle is any ASE calculator (DFT, xTB, a classical potential) asked for single points:
energy (eV), forces (eV/Å) and, for periodic structures, stress (eV/Å³, ASE's sign and
Voigt order). Its calls are the costly resource of an active-learning run, so this module

* builds oracles from short specs (:func:`make_oracle`): ``tblite:GFN1-xTB``,
  ``gpaw:mode=pw,...``, any jcsp potential (``sw-si``, ``x.sw``, ``x.eam.alloy``,
  ``lj:...``, ``gulp:...``, ``x.toml``), ``python:module:factory``, or an ASE calculator
  object;
* runs their calls concurrently in a pool of processes when asked (``workers``), each
  worker building its own calculator once;
* turns a call that raises, or that returns non-finite numbers (an SCF that did not
  converge), into a :class:`Label` with ``error`` set, never an exception for the batch;
* keys every result by its geometry in a :class:`LabelStore` (an ASE SQLite database),
  written and committed the moment it returns, so no call is ever repeated, across a
  kill and a resume too;
* relaxes a structure with the oracle itself (:func:`oracle_relax`, ASE's BFGS on a
  ``FrechetCellFilter``), every force call going through the store.

Example:
  >>> from jcsp.oracle import LabelStore, make_oracle, oracle_relax
  >>> with make_oracle("sw-si") as oracle:
  ...     store = LabelStore("out/oracle.db")
  ...     labels = store.label(oracle, structures, round=0, kind="seed")
  ...     best = oracle_relax(structures[0], oracle, store, fmax=0.01, pressure=0.0)
"""

from __future__ import annotations

from .calculators import (ORACLE_FORMS, TBLITE_METHODS, Label, OracleError, build,
                          single_point)
from .pool import Oracle, make_oracle
from .relax import OPTIMIZERS, oracle_relax
from .store import KEY_RESOLUTION, LabelStore, geometry_key

__all__ = ["KEY_RESOLUTION", "OPTIMIZERS", "ORACLE_FORMS", "TBLITE_METHODS", "Label",
           "LabelStore", "Oracle", "OracleError", "build", "geometry_key", "make_oracle",
           "oracle_relax", "single_point"]

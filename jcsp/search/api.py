"""``jcsp.search(...)``: one entry point for plain and active-learning searches.

Without ``oracle=`` it is :func:`jcsp.search.run.search` (a search with a potential);
with one, :func:`jcsp.search.active.search_active` (a committee of ML models learns the
oracle during the search, :mod:`jcsp.search.active`).
"""

from __future__ import annotations

from ..potentials.base import Potential
from . import active as active_learning
from . import run
from .config import SearchConfig
from .outputs import SearchResult

#: Committee relaxations of an active-learning search when ``budget`` is not given.
ACTIVE_BUDGET = 1000


def search(composition: str | SearchConfig, potential: Potential | None = None, *,
           oracle=None, oracle_budget: int | None = None, active=None, out=None,
           n_best: int = 10, progress: bool = False, **settings) -> SearchResult:
    """Search for the lowest-enthalpy structures of a composition.

    Args:
      composition: e.g. ``"Si8"``, ``"Ti2O4"``, or a whole
        :class:`~jcsp.search.config.SearchConfig`.
      potential: the potential that relaxes the candidates. With ``oracle=`` it is
        optional: a trained :mod:`jcsp.ml` model to start learning from, or (with
        ``active={"mode": "direct"}``) the potential that searches while the oracle only
        confirms the best minima.
      oracle: the reference method (an ASE calculator, or a spec such as
        ``"tblite:GFN1-xTB"``, ``"sw-si"``, ``"python:module:factory"``; see
        :func:`jcsp.oracle.make_oracle`). Turns the search into an active-learning
        search (:mod:`jcsp.search.active`) and returns an
        :class:`~jcsp.search.active.ActiveResult`: ``best`` relaxed by the oracle,
        ``n_oracle_calls``, ``potential`` (the trained committee).
      oracle_budget: the most oracle single points (required with ``oracle``).
      active: settings of the loop, :class:`~jcsp.search.active.ActiveConfig` or a dict.
      out, n_best, progress, **settings: as in :func:`jcsp.search.run.search`;
        ``budget`` counts the committee's relaxations over all rounds
        (default :data:`ACTIVE_BUDGET` with an oracle).

    Example:
      >>> from ase.calculators.emt import EMT
      >>> res = jcsp.search("Cu4", oracle=EMT(), oracle_budget=150, seed=0)
      >>> res.best.info["oracle_energy"], res.n_oracle_calls
    """
    if oracle is None:
        if oracle_budget is not None or active is not None:
            raise ValueError("oracle_budget= and active= belong to active-learning searches: "
                             "give oracle= as well")
        if potential is None:
            raise ValueError("a search needs a potential (e.g. jcsp.io.load_potential("
                             "'sw-si')), or oracle= and oracle_budget= to learn one")
        return run.search(composition, potential, out=out, n_best=n_best, progress=progress,
                          **settings)
    if oracle_budget is None:
        raise ValueError("an active-learning search needs oracle_budget= (the most oracle "
                         "single points it may make)")
    if not isinstance(composition, SearchConfig):  # a config carries its own budget
        settings.setdefault("budget", ACTIVE_BUDGET)
    config = SearchConfig.from_keywords(composition, **settings)
    return active_learning.search_active(config, oracle=oracle, oracle_budget=oracle_budget,
                                         potential=potential, active=active, out=out,
                                         n_best=n_best, progress=progress)

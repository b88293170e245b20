"""Search drivers: each proposes batches of candidates to one :class:`jcsp.search.run.Session`.

A driver module defines a frozen ``Config`` dataclass (its options, declared with
:func:`jcsp.settings.setting` so they are checked in one place) and
``run(session, config)``, host-side. Drivers made of independent walkers (random
search, basin and minima hopping) hand ``session.walk`` a function that turns each
walker's finished structure into its next candidate: the session keeps the relaxation
slots full, refilling each freed slot at once. Drivers that need whole generations
(GA, PSO, annealing) loop over generations and ask ``session.evaluate`` to relax each
generation's candidates in one batch. Either way every candidate is repaired or
discarded first (:mod:`jcsp.search.repair`). Drivers know the session only through its
methods and never import the search entry point, which imports this table.
"""

from . import anneal, basin, genetic, minima, random_search, swarm

#: algorithm name -> (Config class, run function)
DRIVERS = {
    "random": (random_search.Config, random_search.run),
    "basin": (basin.Config, basin.run),
    "minima": (minima.Config, minima.run),
    "anneal": (anneal.Config, anneal.run),
    "ga": (genetic.Config, genetic.run),
    "pso": (swarm.Config, swarm.run),
}

__all__ = ["DRIVERS"]

"""Random search (AIRSS; Pickard & Needs, J. Phys.: Condens. Matter 23, 053201 (2011)).

Every walker of a steady-state :meth:`~jcsp.search.run.Session.walk` proposes fresh
random symmetric crystals (or random clusters) one after another: as soon as one of its
structures is relaxed, its next one takes the freed slot. With ``shake`` > 0 a walker's
candidate is instead, with probability ``shake_fraction``, the "relax and shake" move:
one of the ``n_shaken`` best structures found so far, its atoms displaced by ``shake``
x the bond length and (crystals) its cell strained (or one of the search's ``moves``),
then relaxed again.

Each walker draws from its own random stream (:meth:`~jcsp.search.run.Session.walker_rng`),
so without shaking a walker's structures depend only on the seed and the walker. Shaken
candidates read the archive (shared by all walkers), so they follow the order in which
structures finish.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import Settings, setting
from . import operators as ops


@dataclass(frozen=True)
class Config(Settings):
    """Random search settings.

    Attributes:
      shake: amplitude of relax-and-shake moves, in units of the bond length (0: off).
      shake_fraction: fraction of the candidates made of shaken best structures.
      n_shaken: how many of the best structures are shaken.
    """

    shake: float = setting(0.0, ge=0)
    shake_fraction: float = setting(0.25, ge=0, le=1)
    n_shaken: int = setting(4, kind=int, ge=1)


def run(session, config: Config) -> None:
    """Generate, relax, keep, until the budget is spent (host side)."""
    archive = session.archive

    def candidate(w: int):
        rng = session.walker_rng(w)
        if config.shake > 0 and len(archive) and rng.uniform() < config.shake_fraction:
            best = archive.ranking()[: config.n_shaken]
            parent = archive.entry(best[int(rng.integers(len(best)))])
            moved = session.special_move(parent, rng)
            if moved is None:
                moved = ops.displace(parent, rng, config.shake * session.length,
                                     strain_scale=config.shake * 0.5)
            return moved, [parent.info.get("uid", "")]
        return session.random_structures(1, rng)[0], []

    session.walk(session.population, lambda done: [candidate(w) for w, _ in done])

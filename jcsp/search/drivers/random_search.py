"""Random search (AIRSS; Pickard & Needs, J. Phys.: Condens. Matter 23, 053201 (2011)).

Each generation is a batch of fresh random symmetric crystals (or random clusters),
relaxed together. With ``shake`` > 0 a fraction of each generation is instead the
"relax and shake" move: one of the best structures found so far, its atoms displaced
by ``shake`` x the bond length and (crystals) its cell strained, then relaxed again.
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
      shake_fraction: fraction of each generation made of shaken best structures.
      n_shaken: how many of the best structures are shaken.
    """

    shake: float = setting(0.0, ge=0)
    shake_fraction: float = setting(0.25, ge=0, le=1)
    n_shaken: int = setting(4, kind=int, ge=1)


def run(session, config: Config) -> None:
    """Generate, relax, keep, until the budget is spent (host side)."""
    for generation, rng in session.generations(start=0):
        n = min(session.population, session.remaining)
        n_shake = int(round(config.shake_fraction * n)) if config.shake > 0 else 0
        best = session.archive.structures[: config.n_shaken] if n_shake else []
        n_shake = n_shake if best else 0
        candidates = session.random_structures(n - n_shake, rng)
        parents = [[] for _ in candidates]
        for k in range(n_shake):
            parent = best[k % len(best)]
            candidates.append(ops.displace(parent, rng, config.shake * session.length,
                                           strain_scale=config.shake * 0.5))
            parents.append([parent.info.get("uid", "")])
        session.evaluate(generation, candidates, parents)

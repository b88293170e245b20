"""Named single-parent moves any search driver can use (host side, numpy).

A move takes a relaxed structure and returns a new candidate of the same composition.
The drivers have their own moves (basin hopping displaces atoms, the GA breeds parents,
the swarm flies); a search's ``moves`` setting (:attr:`jcsp.search.SearchConfig.moves`)
adds named moves from this table on top of them: each proposal a driver makes from a
parent is, with the move's probability, replaced by that move applied to the same
parent (:meth:`jcsp.search.run.Session.special_move`). ``moves={"surface": 0.2}`` thus
gives every driver surface moves one time in five.

Every move is a function ``move(session, atoms, rng) -> Atoms`` that reads from the
session only :attr:`~jcsp.search.run.Session.length` (bond length, Å),
:attr:`~jcsp.search.run.Session.cluster`, :attr:`~jcsp.search.run.Session.potential`
and :meth:`~jcsp.search.run.Session.atom_energies`, and draws its random numbers from
``rng`` only, so a search stays reproducible and resumable.

References: Wales & Doye, J. Phys. Chem. A 101, 5111 (1997) (displacements); Locatelli &
Schoen, Comput. Optim. Appl. 26, 173 (2003) and Cheng et al., J. Phys. Chem. A 113, 9309
(2009) (surface moves of the worst-bound atoms); Oganov & Glass, J. Chem. Phys. 124,
244704 (2006) (lattice mutation, permutation, rattling); see docs/search.md.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from ase import Atoms

from .drivers import operators as ops

#: Bond lengths of the uniform displacement of the ``displace`` move.
DISPLACE_STEP = 0.35
#: Width of the random strain of the ``strain`` move.
STRAIN_SCALE = 0.1
#: Bond lengths of the Gaussian noise of the ``rattle`` move (on a third of the atoms).
RATTLE_AMPLITUDE = 0.25
#: Surface moves rebuild 1 to this fraction of the atoms.
SURFACE_FRACTION = 0.1


def displace(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Every atom displaced uniformly within 0.35 bond lengths (crystals: fractional
    coordinates wrapped, cell kept): the basin-hopping step of Wales & Doye."""
    return ops.displace(atoms, rng, DISPLACE_STEP * session.length)


def surface(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """The highest-energy atoms (1 to 10 % of them, drawn with weights rising with their
    energy) moved to surface sites of a cluster or to the emptiest points of a cell
    (:func:`.drivers.operators.relocate`)."""
    (energies,) = session.atom_energies([atoms])
    count = int(rng.integers(1, max(1, int(round(SURFACE_FRACTION * len(atoms)))) + 1))
    return ops.relocate(atoms, rng, energies, count, session.length)


def rattle(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """A random third of the atoms displaced by Gaussian noise of 0.25 bond lengths."""
    return ops.rattle(atoms, rng, RATTLE_AMPLITUDE * session.length, fraction=1 / 3)


def strain(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Lattice mutation: a random symmetric strain of width 0.1 at constant volume
    (crystals; a cluster is displaced instead)."""
    if session.cluster:
        return displace(session, atoms, rng)
    return ops.strain(atoms, rng, STRAIN_SCALE)


def permute(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """One to three exchanges of atoms of unlike species (a displacement when every atom
    is alike)."""
    if len(set(atoms.numbers)) < 2:
        return displace(session, atoms, rng)
    return ops.permute(atoms, rng, swaps=int(rng.integers(1, 4)))


#: move name -> ``move(session, atoms, rng) -> Atoms``
MOVES: dict[str, Callable] = {
    "displace": displace,
    "surface": surface,
    "rattle": rattle,
    "strain": strain,
    "permute": permute,
}


def parse(spec: Mapping[str, float] | str | None) -> dict[str, float]:
    """Check a ``moves`` setting: ``{name: probability}`` (or ``"name=p,name=p"``) with
    known names, probabilities in (0, 1] and summing to at most 1.

    Raises:
      ValueError: naming the unknown move (and the known ones) or the bad probability.
    """
    if spec is None or spec == "" or spec == {}:
        return {}
    if isinstance(spec, str):
        table = {}
        for item in spec.split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"moves are written name=probability, e.g. "
                                 f"'surface=0.2,strain=0.1'; got {item!r}")
            try:
                table[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"move {name.strip()!r}: probability {value!r} is not a "
                                 "number") from None
        spec = table
    if not isinstance(spec, Mapping):
        raise ValueError(f"moves must be a table {{name: probability}}, got {spec!r}")
    out = {}
    for name, p in spec.items():
        if name not in MOVES:
            raise ValueError(f"unknown move {name!r}; known moves: {', '.join(sorted(MOVES))}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0 < p <= 1):
            raise ValueError(f"move {name!r}: probability must be in (0, 1], got {p!r}")
        out[str(name)] = float(p)
    if sum(out.values()) > 1 + 1e-12:
        raise ValueError(f"move probabilities add up to {sum(out.values()):g} > 1: {out}")
    return out


def draw(weights: Mapping[str, float], rng: np.random.Generator) -> str | None:
    """One move name drawn with its probability, or None (the driver's own move) with
    the rest. Draws no random number when ``weights`` is empty."""
    if not weights:
        return None
    u = rng.uniform()
    total = 0.0
    for name, p in weights.items():
        total += p
        if u < total:
            return name
    return None


def apply(session, name: str, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """The move ``name`` applied to ``atoms``; the result has the parent's composition."""
    new = MOVES[name](session, atoms, rng)
    if sorted(new.numbers) != sorted(atoms.numbers) or len(new) != len(atoms):
        raise RuntimeError(f"move {name!r} changed the composition")  # a bug, never data
    if not math.isfinite(float(np.abs(new.positions).max(initial=0.0))):
        raise RuntimeError(f"move {name!r} produced non-finite positions")
    return new


__all__ = ["MOVES", "apply", "displace", "draw", "parse", "permute", "rattle", "strain",
           "surface"]

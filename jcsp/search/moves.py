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
244704 (2006) (lattice mutation, permutation, rattling); Oakley, Johnston & Wales, Phys.
Chem. Chem. Phys. 15, 3965 (2013) (symmetrisation, :mod:`jcsp.search.symmetrize`);
Lyakhov, Oganov & Valle, Comput. Phys. Commun. 181, 1623 (2010) (soft-mode mutation,
:mod:`jcsp.search.softmode`); Lyakhov, Oganov, Stokes & Zhu, Comput. Phys. Commun. 184,
1172 (2013) (operators on whole Wyckoff orbits); see docs/search.md.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from ase import Atoms

from . import softmode as soft
from . import symmetrize as sym
from .drivers import operators as ops

#: Bond lengths of the uniform displacement of the ``displace`` move.
DISPLACE_STEP = 0.35
#: Width of the random strain of the ``strain`` move.
STRAIN_SCALE = 0.1
#: Bond lengths of the Gaussian noise of the ``rattle`` move (on a third of the atoms).
RATTLE_AMPLITUDE = 0.25
#: Surface moves rebuild 1 to this fraction of the atoms.
SURFACE_FRACTION = 0.1
#: Tolerances of the ``symmetrize`` move, in bond lengths: the root-mean-square fit of
#: each point-group operation (clusters) or spglib's ``symprec`` (crystals). The move
#: starts at a random one and loosens until the structure changes.
SYMMETRIZE_TOLERANCES = (0.1, 0.2, 0.3)
SYMPREC_TOLERANCES = (0.05, 0.1, 0.2)
#: Fraction of a cluster's atoms (lowest per-atom energies) that make its core; the
#: ``symmetrize`` move looks for the group of the core half of the time.
CORE_FRACTION = 0.8
#: The ``softmode`` move follows one of this many softest modes ...
SOFTEST = 3
#: ... so that the atom moving most moves this many bond lengths (uniform in the range).
SOFT_AMPLITUDE = (0.3, 0.5)
#: spglib ``symprec`` (bond lengths) of the Wyckoff orbits of ``swap_orbits``.
ORBIT_SYMPREC = 0.05
#: A move result that moved no atom by more than this (bond lengths) counts as unchanged.
UNCHANGED = 0.02


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


def symmetrize(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Symmetrisation (GMIN; Oakley, Johnston & Wales 2013): the structure completed
    toward a nearby point group (clusters, :func:`.symmetrize.find_point_group` on all
    atoms or, half the time, on the core of lowest-energy atoms, then
    :func:`.symmetrize.symmetrize_cluster`) or space group (crystals, spglib,
    :func:`.symmetrize.average_crystal`). The tolerance starts at a random rung of
    :data:`SYMMETRIZE_TOLERANCES` (:data:`SYMPREC_TOLERANCES`) and loosens until the
    result differs from the input. A structure that already has every group it fits is
    displaced at random and averaged back onto that group (a symmetric move); one with no
    group at all is displaced."""
    length = session.length
    if session.cluster:
        return _symmetrize_cluster(session, atoms, rng)
    start = int(rng.integers(len(SYMPREC_TOLERANCES)))
    group = None
    for tol in SYMPREC_TOLERANCES[start:]:
        found = sym.crystal_operations(atoms, tol * length)
        if found is None or found[0] == 1:
            continue
        group = found
        new = sym.average_crystal(atoms, found[1], found[2])
        if _changed(atoms, new, length):
            return ops._fresh(atoms, new.numbers, frac=new.get_scaled_positions(),
                              cell=new.cell[:])
    if group is None:
        return displace(session, atoms, rng)
    moved = ops.displace(atoms, rng, DISPLACE_STEP * length)
    new = sym.average_crystal(moved, group[1], group[2])
    return ops._fresh(atoms, new.numbers, frac=new.get_scaled_positions(), cell=new.cell[:])


def _symmetrize_cluster(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    length = session.length
    x = atoms.positions - atoms.positions.mean(0)
    numbers = atoms.numbers
    select = np.arange(len(atoms))
    if len(atoms) >= 8 and rng.uniform() < 0.5:
        (energies,) = session.atom_energies([atoms])
        select = np.sort(np.argsort(energies)[: max(4, int(round(CORE_FRACTION * len(atoms))))])
    centre = x[select].mean(0)
    start = int(rng.integers(len(SYMMETRIZE_TOLERANCES)))
    group = None
    for tol in SYMMETRIZE_TOLERANCES[start:]:
        found = sym.find_point_group(x[select], numbers[select], length, tol * length)
        if found is None:
            continue
        group = found
        new = sym.symmetrize_cluster(x, numbers, found[1], length, rng, centre=centre)
        if np.linalg.norm(new - (x - centre), axis=1).max() > UNCHANGED * length:
            return ops._fresh(atoms, numbers, positions=new - new.mean(0))
    if group is None:
        return displace(session, atoms, rng)
    moved = x + rng.uniform(-DISPLACE_STEP * length, DISPLACE_STEP * length, x.shape)
    new = sym.symmetrize_cluster(moved, numbers, group[1], length, rng, centre=centre)
    return ops._fresh(atoms, numbers, positions=new - new.mean(0))


def _changed(old: Atoms, new: Atoms, length: float) -> bool:
    d = new.get_scaled_positions() - old.get_scaled_positions()
    d -= np.round(d)
    moved = np.linalg.norm(d @ old.cell[:], axis=1).max()
    strained = np.abs(new.cell[:] - old.cell[:]).max()
    return max(moved, strained) > UNCHANGED * length


def softmode(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Soft-mode mutation (USPEX; Lyakhov, Oganov & Valle 2010): the atoms displaced
    along one of the :data:`SOFTEST` softest modes of the search potential's Hessian
    at the structure (autodiff, not mass-weighted, translations and cluster rotations
    projected out; :mod:`jcsp.search.softmode`), random sign, the largest atomic
    displacement :data:`SOFT_AMPLITUDE` bond lengths; the cell is kept."""
    h = soft.hessian(session.potential, atoms)
    _, modes = soft.soft_modes(h, atoms)
    step = rng.uniform(*SOFT_AMPLITUDE) * session.length
    disp, _ = soft.soft_displacement(modes, rng, softest=SOFTEST, amplitude=step)
    pos = atoms.positions + disp
    if session.cluster:
        return ops._fresh(atoms, atoms.numbers, positions=pos - pos.mean(0))
    frac = np.linalg.solve(atoms.cell[:].T, pos.T).T % 1.0
    return ops._fresh(atoms, atoms.numbers, frac=frac)


def swap_orbits(session, atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Permutation of whole Wyckoff orbits (crystals, :func:`.operators.permute_orbits`):
    the species of two orbits of equal size exchanged, which keeps the space group; an
    ordinary :func:`permute` when no such pair exists (and for clusters)."""
    if not session.cluster:
        new = ops.permute_orbits(atoms, rng, ORBIT_SYMPREC * session.length)
        if new is not None:
            return new
    return permute(session, atoms, rng)


#: move name -> ``move(session, atoms, rng) -> Atoms``
MOVES: dict[str, Callable] = {
    "displace": displace,
    "surface": surface,
    "rattle": rattle,
    "strain": strain,
    "permute": permute,
    "symmetrize": symmetrize,
    "softmode": softmode,
    "swap_orbits": swap_orbits,
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


__all__ = ["MOVES", "apply", "displace", "draw", "parse", "permute", "rattle", "softmode",
           "strain", "surface", "swap_orbits", "symmetrize"]

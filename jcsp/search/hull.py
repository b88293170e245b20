"""Formation enthalpies, the lower convex hull and the energy above it (host side).

For a variable-composition search of elements A and B, every structure is a point
``(x, H_f)``: ``x`` the atomic fraction of B and

    H_f = H / N - (1 - x) mu_A - x mu_B

its formation enthalpy per atom relative to the elemental references ``mu`` (by default
the lowest enthalpy per atom among the pure-element structures given). Structures on
the lower convex hull of these points are stable against decomposition into any mixture
of the others; the rest lie ``H_f - hull(x)`` above it (eV/atom).

The binary hull is Andrew's monotone chain (A. M. Andrew, Inf. Process. Lett. 9, 216
(1979)) restricted to its lower part; a single element reduces to the lowest enthalpy
per atom. Systems of three or more elements are refused with a clear error.

Example:
  >>> hull = convex_hull(archive.structures)
  >>> [archive.structures[i].get_chemical_formula() for i in hull.vertices]
  >>> annotated = annotate(archive.structures, hull)   # info["e_above_hull"], ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols


@dataclass(frozen=True)
class Hull:
    """The convex hull of a set of structures (arrays follow the input order).

    Attributes:
      elements: atomic numbers (A,) or (A, B); ``fraction`` is the share of B.
      references: {atomic number: reference enthalpy per atom, eV/atom}.
      fraction: [M] atomic fraction of the last element (0 for unaries).
      formation: [M] formation enthalpy per atom, eV/atom.
      above_hull: [M] enthalpy per atom above the hull, eV/atom (>= 0).
      vertices: indices of the structures at the hull's corners, by increasing fraction
        (one per corner; among equal points, the first given; a corner that is only a
        reference passed in ``references`` has no structure and no index).
      corners: [C, 2] (fraction, formation enthalpy per atom) of the hull's corners.
    """

    elements: tuple[int, ...]
    references: dict
    fraction: np.ndarray
    formation: np.ndarray
    above_hull: np.ndarray
    vertices: tuple[int, ...]
    corners: np.ndarray

    def hull_energy(self, fraction) -> np.ndarray:
        """Formation enthalpy per atom (eV/atom) of the hull at ``fraction`` of B."""
        x, y = self.corners[:, 0], self.corners[:, 1]
        if len(x) == 1:
            return np.full(np.shape(fraction), y[0])
        return np.interp(fraction, x, y)


def _number(element) -> int:
    if isinstance(element, str):
        if element not in atomic_numbers:
            raise ValueError(f"unknown element {element!r}")
        return atomic_numbers[element]
    return int(element)


def lower_hull(x, y) -> list[int]:
    """Indices of the corners of the lower convex hull of points ``(x, y)``, by x.

    Andrew's monotone chain, lower half only; points on a straight edge are not corners.
    Among points with equal x only the lowest (then the first given) can be a corner.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    order = np.lexsort((np.arange(len(x)), y, x))
    chain: list[int] = []
    for k in order:
        if chain and x[chain[-1]] == x[k]:
            continue  # same x, not lower: never a corner
        while len(chain) >= 2:
            i, j = chain[-2], chain[-1]
            cross = (x[j] - x[i]) * (y[k] - y[i]) - (y[j] - y[i]) * (x[k] - x[i])
            if cross > 0:
                break
            chain.pop()  # j lies on or above the segment i-k
        chain.append(int(k))
    return chain


def _enthalpy(atoms: Atoms) -> float:
    value = atoms.info.get("enthalpy", atoms.info.get("energy"))
    if value is None:
        raise ValueError("hull structures need info['enthalpy'] or info['energy'] (eV)")
    return float(value)


def convex_hull(structures: Sequence[Atoms], *, elements: Sequence | None = None,
                references: Mapping | None = None) -> Hull:
    """Formation enthalpies and the lower convex hull of unary or binary structures.

    Args:
      structures: ``ase.Atoms`` with ``info["enthalpy"]`` (or ``"energy"``), eV.
      elements: the one or two elements (symbols or numbers); default: those present,
        by atomic number. ``fraction`` measures the second.
      references: {element: enthalpy per atom} of the elemental references (default:
        the lowest-enthalpy-per-atom pure-element structure among ``structures``).

    Raises:
      ValueError: no structures, more than two elements, a structure with other
        elements, a non-finite enthalpy, or an element without a pure reference.
    """
    if len(structures) == 0:
        raise ValueError("convex_hull needs at least one structure")
    present = sorted({int(z) for a in structures for z in a.numbers})
    elements = tuple(present if elements is None else (_number(e) for e in elements))
    if len(elements) > 2 or len(set(elements)) != len(elements):
        raise ValueError(f"convex hulls are computed for one or two distinct elements; got "
                         f"{[chemical_symbols[z] for z in elements]} (for ternaries and "
                         "beyond use ase.phasediagram.PhaseDiagram on the results)")
    extra = sorted(set(present) - set(elements))
    if extra:
        raise ValueError(f"structures contain {[chemical_symbols[z] for z in extra]}, "
                         f"outside the hull's elements {[chemical_symbols[z] for z in elements]}")
    per_atom = np.array([_enthalpy(a) / len(a) for a in structures])
    if not np.all(np.isfinite(per_atom)):
        bad = int(np.flatnonzero(~np.isfinite(per_atom))[0])
        raise ValueError(f"structure {bad} has a non-finite enthalpy")
    share = np.array([[np.mean(a.numbers == z) for z in elements] for a in structures])
    mu = {}
    for k, z in enumerate(elements):
        if references is not None and any(_number(e) == z for e in references):
            mu[z] = float(next(v for e, v in references.items() if _number(e) == z))
            continue
        pure = np.flatnonzero(share[:, k] == 1.0)
        if len(pure) == 0:
            raise ValueError(f"no pure {chemical_symbols[z]} structure to serve as the "
                             f"elemental reference; add one or pass references=")
        mu[z] = float(per_atom[pure].min())
    formation = per_atom - share @ np.array([mu[z] for z in elements])
    fraction = share[:, -1] if len(elements) == 2 else np.zeros(len(structures))
    if len(elements) == 1:
        best = int(np.argmin(formation))
        vertices, corners = [best], np.array([[0.0, formation[best]]])
        above = formation - formation[best]
    else:
        # The references themselves, (0, 0) and (1, 0), close the hull at both ends; a
        # structure at the same point comes first and stands for the corner.
        xs = np.concatenate([fraction, [0.0, 1.0]])
        ys = np.concatenate([formation, [0.0, 0.0]])
        chain = lower_hull(xs, ys)
        corners = np.stack([xs[chain], ys[chain]], axis=1)
        above = np.maximum(formation - np.interp(fraction, xs[chain], ys[chain]), 0.0)
        vertices = [k for k in chain if k < len(structures)]
    return Hull(elements=elements, references=mu, fraction=fraction, formation=formation,
                above_hull=above, vertices=tuple(int(v) for v in vertices), corners=corners)


def annotate(structures: Sequence[Atoms], hull: Hull) -> list[Atoms]:
    """Copies of ``structures`` with ``info["formation_enthalpy"]``,
    ``info["e_above_hull"]`` (eV/atom) and ``info["fraction"]`` from ``hull``."""
    out = []
    for k, atoms in enumerate(structures):
        new = atoms.copy()
        new.info.update(formation_enthalpy=float(hull.formation[k]),
                        e_above_hull=float(hull.above_hull[k]),
                        fraction=float(hull.fraction[k]))
        out.append(new)
    return out


__all__ = ["Hull", "convex_hull", "lower_hull", "annotate"]

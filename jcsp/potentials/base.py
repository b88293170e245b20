"""The energy contract shared by every potential.

A potential maps ``(params, graph)`` to per-atom energies ``[N]`` (eV) and declares its
cutoff and the species it covers. It never computes forces or stress: those come from
:mod:`jcsp.derivatives` by autodiff. ``params`` is a pytree of arrays (passed to jitted
code as an argument, so new parameter values never recompile); the potential object
itself holds only static configuration and is closed over by the compiled functions.

The graph's neighbor list may hold pairs beyond the potential's cutoff (relaxers build
lists with a Verlet skin and reuse them for many steps): every potential must give
such pairs exactly zero energy, with finite gradients.

What a potential can do beyond per-atom energies is declared on :class:`Potential`
(see its docstring); callers read those declarations and never probe for attributes.
"""

from __future__ import annotations

import abc
from typing import Iterable

import jax.numpy as jnp
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..graph import Graph


def to_numbers(symbols: Iterable) -> tuple[int, ...]:
    """Element symbols (or atomic numbers) -> atomic numbers, with a clear error."""
    out = []
    for s in symbols:
        if isinstance(s, (int, np.integer)):
            out.append(int(s))
        elif s in atomic_numbers:
            out.append(atomic_numbers[s])
        else:
            raise ValueError(f"unknown element {s!r}: use a chemical symbol such as 'Si'")
    return tuple(out)


class Potential(abc.ABC):
    """Base class: subclasses set ``cutoff``, ``species``, ``params`` and define
    :meth:`energies`.

    Every potential provides per-atom energies (:meth:`energies`), from which
    :mod:`jcsp.derivatives` derives total energies, forces and stress.

    Attributes:
      cutoff: interaction range in Å; ``None`` for all pairs (non-periodic clusters only).
      species: atomic numbers the potential covers, in its own type order; ``None`` when
        every species is treated the same (e.g. Lennard-Jones particles).
      params: pytree of arrays.

    Optional capabilities, declared here with the value that means "absent"; a potential
    that has one overrides the declaration, and every caller reads the declaration:

    - ``committee_size``: ``None`` for one model; ``K`` for a committee of K members.
      A committee's :meth:`energies` is the members' mean; it also sets ``member``
      (the potential that evaluates one member; ``None`` otherwise), :meth:`member_params`
      (the members' parameters stacked on a leading K axis) and
      :meth:`member_energies`, so that callers can evaluate every member (vmapped) and
      report the spread of energies, forces and stress.
    - ``domain``: the training domain (:class:`jcsp.ml.domain.Domain`) of a learned
      potential, or ``None``. Extrapolation grades
      (:func:`jcsp.ml.domain.extrapolation_grades`) need one.
    - ``has_features``: whether :meth:`features` gives per-atom descriptors on which
      the energy readout is linear (the input of the extrapolation grade and of
      generative heads).
    - ``half_lists``: whether :meth:`energies` accepts a half neighbor list
      (``graph.half``: each pair once, see :mod:`jcsp.neighbors`), as a sum of pair
      terms can (:class:`~jcsp.potentials.BuckinghamCoulomb` does): the total energy,
      forces and stress are the same in half the pair work, but the per-atom energies
      then give each pair's whole energy to one of its atoms, so callers that need
      per-atom energies use full lists. The relaxer uses half lists for potentials that
      accept them.
    """

    cutoff: float | None = None
    species: tuple[int, ...] | None = None
    params: object = None
    committee_size: int | None = None
    member: "Potential | None" = None
    domain: object = None
    has_features: bool = False
    half_lists: bool = False

    @abc.abstractmethod
    def energies(self, params, graph: Graph):
        """[N] per-atom energies in eV; values on padded atoms are ignored."""

    def features(self, params, graph: Graph):
        """[N, F] per-atom descriptors ([K, N, F] for a committee), when ``has_features``.

        Raises:
          TypeError: the potential declares none (``has_features`` is false).
        """
        raise TypeError(f"{type(self).__name__} provides no per-atom features; use a "
                        "learned potential (jcsp.ml.EquivariantPotential or Committee)")

    def member_params(self, params):
        """The members' parameters stacked on a leading K axis (committees only)."""
        raise TypeError(self._not_a_committee())

    def member_energies(self, params, graph: Graph):
        """[K, N] per-atom energies of every member (committees only)."""
        raise TypeError(self._not_a_committee())

    def _not_a_committee(self) -> str:
        return (f"{type(self).__name__} is a single model (committee_size is None); "
                "train a committee (jcsp train --committee K) for member-wise results")

    def for_cells(self, cells) -> "Potential":
        """A potential whose static shapes fit ``cells`` [..., 3, 3] (host side).

        Most potentials have none and return themselves; Ewald sums size their
        reciprocal box here. Drivers call it before compiling for a batch.
        """
        return self

    # --- species handling, shared -------------------------------------------------
    def check_species(self, numbers: Iterable[int]) -> None:
        """Raise ValueError naming any species this potential does not cover."""
        if self.species is None:
            return
        missing = sorted(set(int(z) for z in numbers) - set(self.species))
        if missing:
            have = ", ".join(chemical_symbols[z] for z in self.species)
            miss = ", ".join(chemical_symbols[z] for z in missing)
            raise ValueError(
                f"{type(self).__name__} covers {have} but the structure contains {miss}; "
                "use a potential that includes these elements")

    def type_index(self, species):
        """Atomic numbers -> this potential's type indices (0 for uncovered/padding)."""
        if self.species is None:
            return jnp.zeros_like(species)
        table = np.zeros(119, np.int32)
        table[list(self.species)] = np.arange(len(self.species), dtype=np.int32)
        return jnp.asarray(table)[species]

    @property
    def n_types(self) -> int:
        return 1 if self.species is None else len(self.species)

    def __repr__(self) -> str:
        names = "any" if self.species is None else "".join(chemical_symbols[z] for z in self.species)
        return f"{type(self).__name__}(species={names}, cutoff={self.cutoff})"

"""Capacity: the static sizes a batch of structures needs (host side).

Compiled functions have fixed shapes, and two of them depend on the structures: the
neighbor lists (image range and neighbors per atom, :class:`jcsp.neighbors.NeighborSpec`)
and, for some potentials, a static size per cell (the reciprocal box of an Ewald sum,
:meth:`jcsp.potentials.Potential.for_cells`). A :class:`Capacity` owns both for one
stream of batches: it sizes them for the structures it is shown, grows them after an
overflow or when a cell outgrew the potential's box, and never shrinks them, so that
later batches reuse the compiled code of earlier ones. Sizes are rounded up on a coarse
ladder (:func:`rung`) so that small changes of the structures do not produce new
shapes, and so new compilations.

Drivers only ask it: :meth:`Capacity.fit` before compiling, :meth:`Capacity.grow` after an
overflow flag, :meth:`Capacity.refit` when a structure's numbers turned non-finite (its
cell outgrew the potential's static box), :attr:`Capacity.key` for caches of compiled
code, and :meth:`Capacity.run` to repeat a one-shot evaluation until it fits.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from . import neighbors as nl
from .potentials.base import Potential
from .structures.population import Population

#: Cells remembered to size potentials with per-cell static shapes across calls.
ARCHIVE = 64
#: Headroom of a capacity that had to grow after its first sizing.
REGROWTH = 1.5


def rung(count: int) -> int:
    """The capacity ladder: ``count`` rounded up to 4, 8, 12, 16, 24, 32, 48, 64, 96,
    128, ... (powers of two and one and a half times them). Coarse on purpose: a new
    rung is a new compiled shape, which costs far more than padded neighbors."""
    count = max(int(math.ceil(count)), 1)
    if count <= 16:
        return int(math.ceil(count / 4) * 4)
    power = 2 ** int(math.ceil(math.log2(count)))
    return 3 * power // 4 if count <= 3 * power // 4 else power


class ListSpec(NamedTuple):
    """Static neighbor-list shapes of compiled code (hashable).

    Attributes:
      skin: spec of the stored Verlet lists (cutoff = the potential's cutoff + skin).
      capacity: neighbors per atom after trimming to the potential's own cutoff, or None
        when nothing is trimmed (no skin, or all pairs).
    """

    skin: nl.NeighborSpec
    capacity: int | None


def _signature(sized: Potential, potential: Potential):
    """Hashable summary of the static configuration :meth:`Potential.for_cells` chose."""
    if sized is potential:
        return None
    items = []
    for key, value in sorted(vars(sized).items()):
        try:
            hash(value)
        except TypeError:
            continue
        items.append((key, value))
    return (type(sized).__name__, tuple(items))


class Capacity:
    """Neighbor-list shapes and the potential's per-cell static sizes for a stream of
    batches of one periodicity and atom count (host side; grows, never shrinks).

    Args:
      potential: the potential to size.
      pbc: periodicity of the structures.
      skin: Verlet skin in Å added to the potential's cutoff for the stored lists
        (0: the lists hold exactly the pairs within the cutoff).
      margin: capacity = ``margin`` x the largest neighbor count seen, on the ladder.
      headroom: extra factor on the first sizing, for a stream of many similar batches
        (a search): the first batches rarely show the densest structures to come, and
        each later growth is a new compilation.
      half: size half lists (each pair once) when the potential accepts them
        (``half_lists``) and the structures are crystals with a cutoff; the per-atom
        energies of a half list are not split evenly (totals, forces and stress are).
    """

    def __init__(self, potential: Potential, pbc, *, skin: float = 0.0, margin: float = 1.2,
                 headroom: float = 1.0, half: bool = False):
        self.potential = potential
        self.pbc = tuple(bool(p) for p in pbc)
        self.half = bool(half and potential.half_lists and potential.cutoff is not None
                         and all(self.pbc))
        self.cutoff = potential.cutoff
        self.list_cutoff = None if self.cutoff is None else self.cutoff + float(skin)
        self.margin = margin
        self.headroom = headroom
        self.lists: ListSpec | None = None
        self.sized = potential
        self.signature = None
        self._cells = np.zeros((0, 3, 3))

    @property
    def trimmed(self) -> bool:
        """Whether lists are trimmed from the skin cutoff to the potential's each step."""
        return self.cutoff is not None and self.list_cutoff > self.cutoff

    @property
    def spec(self) -> nl.NeighborSpec:
        """The stored lists' spec (after :meth:`fit`)."""
        return self.lists.skin

    @property
    def key(self):
        """Hashable: equal keys mean the same compiled shapes."""
        return (self.signature, self.lists)

    # --- sizing ---------------------------------------------------------------------
    def fit(self, pop: Population) -> bool:
        """Size lists and potential for the structures of ``pop`` as well as for every
        earlier one (neighbors are counted on the host: sizing compiles nothing). True
        when a size changed."""
        before = self.key
        self._union(self._measure(pop))
        cells = np.asarray(pop.cell)[np.asarray(pop.mask).any(1)]
        self.fit_potential(cells if all(self.pbc) else np.eye(3)[None])
        return self.key != before

    def grow(self, count: int, count_cut: int | None, cells) -> bool:
        """Make room after an overflow: ``count`` neighbors within the list cutoff,
        ``count_cut`` within the potential's, and the image range of ``cells``. True
        when the stored lists' spec changed (lists built with the old one are stale)."""
        old = self.lists
        skin = self._spec(self.list_cutoff, count, cells, old.skin)
        if skin.capacity > old.skin.capacity:  # headroom on the count, rounded up once
            skin = self._list(skin.cutoff, rung(REGROWTH * (count * self.margin + 1)),
                              skin.images)
        capacity = old.capacity
        if capacity is not None and count_cut is not None and \
                count_cut * self.margin + 1 > capacity:
            capacity = rung(REGROWTH * (count_cut * self.margin + 1))
        grown = ListSpec(skin, capacity)
        if grown == old:  # never spin: an overflow always buys room
            grown = ListSpec(self._list(skin.cutoff, rung(2 * skin.capacity), skin.images),
                             None if capacity is None else rung(2 * capacity))
        self.lists = grown
        return grown.skin != old.skin

    def refit(self, cells) -> bool:
        """Resize the potential's static shapes for ``cells`` [S, 3, 3] whose numbers
        turned non-finite; True when they grew (those structures can be resumed)."""
        if self.signature is None:
            return False
        return self.fit_potential(np.asarray(cells, float).reshape(-1, 3, 3))

    def run(self, evaluate: Callable, cells):
        """``evaluate(spec, sized_potential)`` until its result fits, growing the lists
        after each overflow. The result needs ``overflow`` and ``count`` ([S] or [])."""
        cells = np.asarray(cells, float).reshape(-1, 3, 3)
        while True:
            result = evaluate(self.spec, self.sized)
            overflow = np.atleast_1d(np.asarray(result.overflow))
            if not overflow.any():
                return result
            count = int(np.atleast_1d(np.asarray(result.count))[overflow].max())
            over_cells = cells[overflow] if len(cells) == len(overflow) else cells
            self.grow(count, None, over_cells)

    # --- internals --------------------------------------------------------------------
    def _list(self, cutoff, capacity: int, images) -> nl.NeighborSpec:
        """A stored list's spec (half or full, as this capacity keeps them)."""
        return nl.NeighborSpec(cutoff, capacity, tuple(int(x) for x in images), self.half)

    def _measure(self, pop: Population) -> ListSpec:
        frac, cell, mask = (np.asarray(x) for x in (pop.frac, pop.cell, pop.mask))
        skin = self._spec(self.list_cutoff, None, cell, None, frac=frac, mask=mask)
        capacity = None
        if self.trimmed:
            capacity = self._spec(self.cutoff, None, cell, None, frac=frac, mask=mask).capacity
        return ListSpec(skin, capacity)

    def _spec(self, cutoff, count, cells, old, *, frac=None, mask=None) -> nl.NeighborSpec:
        """A spec for ``cells`` holding ``count`` neighbors (counted from ``frac`` when
        None), at least as large as ``old``."""
        if cutoff is None:
            n = frac.shape[1] if frac is not None else old.capacity + 1
            return nl.NeighborSpec(None, max(n - 1, 1), (0, 0, 0))
        images = nl.required_images(cells, cutoff * 1.1, self.pbc).reshape(-1, 3).max(axis=0)
        if count is None:
            count = nl.count_neighbors(cutoff, tuple(int(x) for x in images), frac, cells, mask,
                                       self.pbc, half=self.half)
        spec = self._list(cutoff, rung(count * self.margin + 1), images)
        return spec if old is None else _larger(spec, old)

    def _union(self, need: ListSpec) -> None:
        """Hold ``need`` too. A capacity that has to grow once will likely grow again as
        more structures come: it then grows by an extra rung (:data:`REGROWTH`)."""
        old = self.lists
        if old is None:
            skin, cap = need.skin, need.capacity
            if self.headroom != 1.0:
                skin = self._list(skin.cutoff, rung(self.headroom * skin.capacity),
                                  skin.images)
                cap = None if cap is None else rung(self.headroom * cap)
            self.lists = ListSpec(skin, cap)
            return
        skin = _larger(need.skin, old.skin)
        if skin.capacity > old.skin.capacity:
            skin = self._list(skin.cutoff, rung(REGROWTH * skin.capacity), skin.images)
        cap = old.capacity
        if cap is not None and need.capacity > cap:
            cap = rung(REGROWTH * need.capacity)
        self.lists = ListSpec(skin, cap)

    def fit_potential(self, cells) -> bool:
        """Size the potential's static shapes for ``cells`` [S, 3, 3] and the earlier
        ones; True when they changed."""
        potential = self.potential
        sized = potential.for_cells(cells)
        if sized is potential:
            changed = self.sized is not potential
            self.sized, self.signature = potential, None
            return changed
        signature = _signature(sized, potential)
        merged = np.concatenate([self._cells, cells])
        if self.signature is not None and signature != self.signature:
            sized = potential.for_cells(merged)  # large enough for the earlier cells too
            signature = _signature(sized, potential)
        size = np.linalg.norm(merged, axis=-1).sum(-1)
        self._cells = merged[np.argsort(-size, kind="stable")[:ARCHIVE]]
        if signature == self.signature:
            return False
        self.sized, self.signature = sized, signature
        return True


def _larger(a: nl.NeighborSpec, b: nl.NeighborSpec) -> nl.NeighborSpec:
    """A spec that holds everything either holds."""
    images = tuple(max(x, y) for x, y in zip(a.images, b.images))
    return nl.NeighborSpec(a.cutoff, max(a.capacity, b.capacity), images, a.half or b.half)


__all__ = ["Capacity", "ListSpec", "rung"]

"""The archive of unique relaxed structures, ranked by enthalpy per atom (host side).

Every relaxed structure of a search passes through :meth:`Archive.add`. It is a
duplicate of an archived one only when all of these hold (Oganov & Valle, J. Chem. Phys.
130, 104504 (2009); Lyakhov et al., Comput. Phys. Commun. 181, 1623 (2010)):

- the same reduced composition and periodicity;
- enthalpy per atom within ``e_tol`` (eV/atom);
- volume per atom within ``v_tol`` (relative; crystals only);
- Oganov-Valle fingerprint cosine distance below ``fp_tol``
  (:mod:`jcsp.search.fingerprint`).

Energy and volume alone cannot separate degenerate polymorphs (with Stillinger-Weber,
diamond and lonsdaleite silicon have exactly the same energy and density), and the
fingerprint alone would merge a structure with its strained copy; together they keep
both. A duplicate raises the hit count of the entry it matches, and the entry keeps the
lower-enthalpy copy.

Decisions are sequential: adding a batch is the same as adding its structures one by
one in order, and each fingerprint grid is fixed by the first structure of its species
set, so replaying the same structures in the same order (a resumed search) rebuilds the
same archive.

Example:
  >>> archive = Archive()
  >>> results = archive.add(jcsp.relax(candidates, potential))
  >>> archive.best.info["spacegroup"], len(archive), archive.n_duplicates
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import reduce
from typing import Literal, Sequence

import numpy as np
from ase import Atoms

from ..structures.symmetry import spacegroup
from . import fingerprint as fpm

#: Default enthalpy tolerance, eV/atom.
E_TOL = 2e-3
#: Default relative volume-per-atom tolerance.
V_TOL = 0.02
#: Default fingerprint cosine-distance tolerance. With the default grid, copies rattled
#: by 1 % of the bond length (Gaussian, per component) are about 1e-3 from the
#: original, while diamond and lonsdaleite silicon are 1.7e-2 apart.
FP_TOL = 5e-3
#: spglib tolerances (Å) at which every entry's space group is recorded.
SYMPRECS = (1e-1, 1e-2, 1e-3)


@dataclass(frozen=True)
class AddResult:
    """What happened to one structure given to :meth:`Archive.add`.

    Attributes:
      status: "new" (a new entry), "duplicate" (matched an entry, which kept its own
        structure), "replaced" (matched an entry and replaced it, being lower in
        enthalpy) or "invalid" (non-finite energy or enthalpy; not archived).
      entry: id of the entry it created or matched (None when invalid).
      distance: fingerprint cosine distance to the matched entry (NaN when new).
      fingerprint: [P, n_bins] its fingerprint (None when invalid).
    """

    status: Literal["new", "duplicate", "replaced", "invalid"]
    entry: int | None
    distance: float
    fingerprint: np.ndarray | None


def reduced_composition(numbers) -> tuple[tuple[int, int], ...]:
    """((Z, count / gcd), ...) sorted by Z: equal for a structure and its supercells."""
    z, counts = np.unique(np.asarray(numbers), return_counts=True)
    g = reduce(math.gcd, [int(c) for c in counts])
    return tuple((int(a), int(c) // g) for a, c in zip(z, counts))


def _energetics(atoms: Atoms) -> tuple[float, float, float]:
    """(energy, enthalpy, volume) of a relaxed structure: from ``info``, else its calc."""
    info = atoms.info
    energy = info.get("energy")
    if energy is None and atoms.calc is not None:
        energy = atoms.get_potential_energy()
    if energy is None:
        raise ValueError("archive structures need info['energy'] (or a calculator with "
                         "an energy); pass relaxed structures from jcsp.relax")
    enthalpy = info.get("enthalpy", energy)
    volume = info.get("volume")
    if volume is None:
        volume = abs(atoms.cell.volume) if atoms.pbc.all() else math.nan
    return float(energy), float(enthalpy), float(volume)


class _Class:
    """Entries of one composition and periodicity, as arrays for vectorised matching
    (grown by doubling, so adding n entries costs O(n) copies)."""

    def __init__(self, dim: int):
        self.ids: list[int] = []
        self._h = np.zeros(16)
        self._v = np.zeros(16)
        self._u = np.zeros((16, dim))

    @property
    def h(self) -> np.ndarray:
        return self._h[:len(self.ids)]

    @property
    def v(self) -> np.ndarray:
        return self._v[:len(self.ids)]

    @property
    def u(self) -> np.ndarray:
        return self._u[:len(self.ids)]

    def append(self, entry: int, h: float, v: float, u: np.ndarray) -> None:
        n = len(self.ids)
        if n == len(self._h):
            self._h, self._v = np.resize(self._h, 2 * n), np.resize(self._v, 2 * n)
            self._u = np.concatenate([self._u, np.zeros_like(self._u)])
        self.ids.append(entry)
        self.set(n, h, v, u)

    def set(self, slot: int, h: float, v: float, u: np.ndarray) -> None:
        self._h[slot], self._v[slot], self._u[slot] = h, v, u


class Archive:
    """Unique relaxed structures, ranked by enthalpy per atom (host side).

    Args:
      e_tol: eV/atom, largest enthalpy-per-atom difference of duplicates.
      v_tol: largest relative difference of volume per atom of duplicate crystals.
      fp_tol: largest fingerprint cosine distance of duplicates.
      symprecs: spglib tolerances (Å) recorded in ``info["spacegroups"]``; the one
        nearest 1e-2 also gives ``info["spacegroup"]``.
      length: Å, fingerprint length scale (default: the median nearest-neighbour
        distance of the first structure of each species set).
      r_max: Å, fingerprint grid end (default: 3 x the length scale; clusters: their
        whole diameter).

    Every entry is an ``ase.Atoms`` whose ``info`` holds what the structure came with
    (origin metadata such as ``driver``, ``generation``, ``parents``, ``uid``) and
    ``energy``, ``enthalpy``, ``volume`` (eV, eV, Å³), ``spacegroup`` (e.g.
    ``"Fd-3m (227)"``, ``"-"`` for clusters), ``spacegroups`` ({symprec: label}),
    ``hits`` (times found), ``found_at`` (1-based count of structures added when it was
    first found) and ``entry`` (its id).
    """

    def __init__(self, *, e_tol: float = E_TOL, v_tol: float = V_TOL, fp_tol: float = FP_TOL,
                 symprecs: Sequence[float] = SYMPRECS, length: float | None = None,
                 r_max: float | None = None):
        for name, value in (("e_tol", e_tol), ("v_tol", v_tol), ("fp_tol", fp_tol)):
            if not (isinstance(value, numbers.Real) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not symprecs or any(not s > 0 for s in symprecs):
            raise ValueError(f"symprecs must be positive tolerances in Å, got {symprecs!r}")
        self.e_tol, self.v_tol, self.fp_tol = float(e_tol), float(v_tol), float(fp_tol)
        self.symprecs = tuple(float(s) for s in symprecs)
        self.length, self.r_max = length, r_max
        self._entries: list[Atoms] = []
        self._classes: dict[tuple, _Class] = {}
        self._specs: dict[tuple, fpm.FingerprintSpec] = {}
        self.n_added = 0
        self.n_duplicates = 0
        self.n_invalid = 0

    # --- queries --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def structures(self) -> list[Atoms]:
        """Copies of the unique structures, ascending enthalpy per atom."""
        return [self._entries[i].copy() for i in self.ranking()]

    @property
    def best(self) -> Atoms | None:
        """The lowest-enthalpy-per-atom structure (a copy), or None when empty."""
        return self._entries[self.ranking()[0]].copy() if self._entries else None

    def ranking(self) -> list[int]:
        """Entry ids in ascending enthalpy per atom (ties: first found first)."""
        key = [(a.info["enthalpy"] / len(a), i) for i, a in enumerate(self._entries)]
        return [i for _, i in sorted(key)]

    def entry(self, entry: int) -> Atoms:
        """Entry ``entry`` (a copy)."""
        return self._entries[entry].copy()

    def spec_for(self, atoms: Atoms) -> fpm.FingerprintSpec | None:
        """The fingerprint spec used for structures like ``atoms`` (None if none yet)."""
        return self._specs.get(self._spec_key(atoms))

    # --- adding ---------------------------------------------------------------------
    @staticmethod
    def _spec_key(atoms: Atoms) -> tuple:
        return (bool(atoms.pbc.all()), tuple(sorted({int(z) for z in atoms.numbers})))

    def _spec(self, atoms: Atoms) -> fpm.FingerprintSpec:
        key = self._spec_key(atoms)
        if key not in self._specs:
            self._specs[key] = fpm.default_spec([atoms], species=key[1], r_max=self.r_max,
                                                length=self.length)
        return self._specs[key]

    def add(self, structures: Sequence[Atoms] | Atoms) -> list[AddResult]:
        """Add relaxed structures, in order; returns one :class:`AddResult` each.

        Each structure needs ``info["energy"]`` (or a calculator), and may carry
        ``info["enthalpy"]`` (default: the energy) and ``info["volume"]`` (default: the
        cell volume). Fingerprints are computed for the whole batch at once.

        Raises:
          ValueError: a structure without an energy, or mixed periodicity.
        """
        if isinstance(structures, Atoms):
            structures = [structures]
        structures = list(structures)
        values = [_energetics(a) for a in structures]
        valid = [k for k, (e, h, _) in enumerate(values)
                 if math.isfinite(e) and math.isfinite(h) and len(structures[k])]
        for k in valid:
            self._spec(structures[k])
        fps: dict[int, np.ndarray] = {}
        by_spec: dict[tuple, list[int]] = {}
        for k in valid:
            by_spec.setdefault(self._spec_key(structures[k]), []).append(k)
        for key, members in by_spec.items():
            out = fpm.fingerprints([structures[k] for k in members], self._specs[key])
            fps.update(zip(members, out))
        results = []
        for k, atoms in enumerate(structures):
            self.n_added += 1
            if k not in fps:
                self.n_invalid += 1
                results.append(AddResult("invalid", None, math.nan, None))
                continue
            results.append(self._insert(atoms, values[k], fps[k]))
        return results

    def _insert(self, atoms: Atoms, values, fp: np.ndarray) -> AddResult:
        energy, enthalpy, volume = values
        n = len(atoms)
        h, v = enthalpy / n, volume / n
        spec = self._specs[self._spec_key(atoms)]
        weights = fpm.pair_weights(spec, [atoms.numbers])[0]
        u = fpm.weighted_vector(np.asarray(fp), weights, xp=np)
        key = (self._spec_key(atoms), reduced_composition(atoms.numbers))
        table = self._classes.setdefault(key, _Class(u.size))
        if table.ids:
            close = np.abs(table.h - h) <= self.e_tol
            if atoms.pbc.all():
                close &= np.abs(table.v - v) <= self.v_tol * np.maximum(np.abs(table.v), abs(v))
            distance = 0.5 * (1.0 - table.u @ u)
            close &= distance <= self.fp_tol
            if np.any(close):
                slot = int(np.flatnonzero(close)[np.argmin(distance[close])])
                entry = table.ids[slot]
                kept = self._entries[entry]
                self.n_duplicates += 1
                hits = kept.info["hits"] + 1
                if h < kept.info["enthalpy"] / len(kept):
                    new = self._record(atoms, energy, enthalpy, volume, entry)
                    new.info.update(hits=hits, found_at=kept.info["found_at"])
                    self._entries[entry] = new
                    table.set(slot, h, v, u)
                    return AddResult("replaced", entry, float(distance[slot]), fp)
                kept.info["hits"] = hits
                return AddResult("duplicate", entry, float(distance[slot]), fp)
        entry = len(self._entries)
        new = self._record(atoms, energy, enthalpy, volume, entry)
        new.info.update(hits=1, found_at=self.n_added)
        self._entries.append(new)
        table.append(entry, h, v, u)
        return AddResult("new", entry, math.nan, fp)

    def _record(self, atoms: Atoms, energy: float, enthalpy: float, volume: float,
                entry: int) -> Atoms:
        """A copy of ``atoms`` with the archive's info keys (space groups at each symprec)."""
        new = atoms.copy()  # without the calculator: the energetics live in info
        groups = {s: spacegroup(atoms, s) for s in self.symprecs}
        main = min(self.symprecs, key=lambda s: abs(math.log10(s) + 2))
        new.info.update(energy=energy, enthalpy=enthalpy, volume=volume,
                        spacegroup=groups[main], spacegroups=groups, entry=entry)
        return new


__all__ = ["Archive", "AddResult", "reduced_composition", "E_TOL", "V_TOL", "FP_TOL",
           "SYMPRECS"]

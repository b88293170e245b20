"""Buckingham + Coulomb (Ewald): the rigid-ion model of GULP and LAMMPS ``buck/coul/long``.

``E = sum_{i<j} [A exp(-r/rho) - C / r^6] + E_Coulomb``: the Buckingham term
(Buckingham, Proc. R. Soc. A 168, 264 (1938)) acts between listed species pairs and is
cut at ``cutoff`` without shift, as LAMMPS ``pair_style buck/coul/long`` does; the
Coulomb energy of the point charges is the Ewald sum of :mod:`jcsp.potentials.ewald`
(real-space part within the same cutoff, the role of LAMMPS ``kspace_style ewald``).

GULP-style models (GULP's ``buck`` and ``lennard 12 6`` lines, Gale & Rohl, Mol.
Simul. 29, 291 (2003)) add, per pair, a Lennard-Jones term ``A'/r^12 - B'/r^6`` and give
every term its own cutoff: a pair value ``(A, rho, C, rcut)`` cuts that Buckingham term at
``rcut``, and ``lennard={pair: (A', B', rcut)}`` adds the 12-6 terms. Every term is cut
without shift, as in GULP without ``taper``; each term's cutoff is at most ``cutoff``,
which stays the Ewald real-space cutoff and the neighbor-list range. GULP library files
are read by :mod:`jcsp.potentials.gulp`.

Against LAMMPS: give it the same ``alpha`` (``kspace_modify gewald``) or a tight
accuracy, and ``pair_modify table 0``. Even then LAMMPS evaluates the real-space erfc
with the Abramowitz & Stegun 7.1.26 polynomial (absolute error up to 1.5e-7), so its
energies differ from the exact sum by about 1e-7 eV per close pair; with that
polynomial put back in, the two agree to 1e-10 (see ``tests/test_buckingham.py``).

Typical parameters: MgO with formal charges +2/-2, Mg-O ``A = 1428.5`` eV,
``rho = 0.2945`` Å, ``C = 0``; O-O ``22764.0`` eV, ``0.1490`` Å, ``27.88`` eV Å^6: the
short-range terms of Bush, Gale, Catlow & Battle, J. Mater. Chem. 4, 831 (1994), whose
oxygen is a shell-model ion, used here on rigid ions (rock salt relaxes to a = 4.1985 Å;
``docs/examples/mgo.toml`` and ``tests/test_potential_specs.py``). NaCl with charges +1/-1, Na-Cl
``(1254.9, 0.317, 6.9906)``, Na-Na ``(423.2, 0.317, 1.0486)``, Cl-Cl ``(2567.0, 0.327,
75.054)``: Tosi & Fumi, J. Phys. Chem. Solids 25, 31 (1964), in Buckingham form
``A = b exp(sigma / rho)``, without their r^-8 term.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from ..graph import Graph, safe_norm
from . import ewald
from .base import Potential, to_numbers


class _PairTable(NamedTuple):
    values: list  # one [T, T] array per field
    cut: np.ndarray  # [T, T] cutoffs, Å
    given: dict  # pair -> field values as given


class BuckinghamCoulomb(Potential):
    """Buckingham pair terms plus Ewald-summed Coulomb interactions of fixed charges.

    Args:
      pairs: ``{("Na", "Cl"): (A, rho, C)}`` with A in eV, rho in Å, C in eV·Å⁶; order
        within a pair does not matter; pairs not listed have no Buckingham term. A fourth
        value, ``(A, rho, C, rcut)``, cuts that pair's Buckingham term at ``rcut`` Å
        (at most ``cutoff``; default ``cutoff``).
      charges: ``{"Na": 1.0, "Cl": -1.0}``, in units of e; every species of the model
        (including those named in ``pairs`` and ``lennard``) needs one.
      cutoff: real-space cutoff of the screened Coulomb terms and the default cutoff of
        the pair terms, Å.
      lennard: ``{("Mg", "O"): (A, B)}`` or ``(A, B, rcut)``: Lennard-Jones terms
        ``A / r^12 - B / r^6`` (A in eV·Å¹², B in eV·Å⁶; GULP's ``lennard 12 6``), cut at
        ``rcut`` Å (at most ``cutoff``; default ``cutoff``). Default: none.
      accuracy: relative accuracy of the Ewald sum (see :mod:`.ewald`), sets ``alpha``
        and the reciprocal cutoff ``gmax``.
      alpha: Ewald splitting parameter in 1/Å (LAMMPS ``gewald``), instead of the one
        chosen from ``accuracy``.
      kmax: static reciprocal box, an int or three ints, in the reduced-cell indices of
        :mod:`.ewald`. Default: room for reduced lattice vectors of up to 15, 25 and
        30 Å (``ewald.DEFAULT_CELL_LENGTHS``), enough for cells of a few dozen atoms,
        thin ones included. For larger cells, or for speed on small ones, use
        :meth:`for_cells`; a cell too large for the box gives NaN energies, never a
        truncated sum.

    Example:
      >>> nacl = BuckinghamCoulomb(pairs={("Na", "Cl"): (1254.9, 0.317, 6.99)},
      ...                          charges={"Na": 1.0, "Cl": -1.0}, cutoff=10.0)
      >>> big = nacl.for_cells([atoms.cell[:] for atoms in structures])
      >>> # MAGUS's MgAl2O4 model: buck cut at 7 Å, lennard 12 6 at 6 Å
      >>> spinel = BuckinghamCoulomb(
      ...     {("Mg", "O"): (1428.5, 0.2945, 0.0, 7.0), ("Al", "O"): (1114.9, 0.3118, 0.0, 7.0),
      ...      ("O", "O"): (2023.8, 0.2674, 0.0, 7.0)},
      ...     {"Mg": 2.0, "Al": 3.0, "O": -2.0}, cutoff=10.0,
      ...     lennard={pair: (1.5, 0.0, 6.0) for pair in
      ...              [("Mg", "O"), ("Al", "O"), ("O", "O"), ("Mg", "Mg"), ("Mg", "Al"),
      ...               ("Al", "Al")]})
    """

    half_lists = True

    def __init__(self, pairs: Mapping[tuple, tuple[float, ...]] | None,
                 charges: Mapping, cutoff: float = 10.0, *,
                 lennard: Mapping[tuple, tuple[float, ...]] | None = None,
                 accuracy: float = 1e-8, alpha: float | None = None,
                 kmax: int | Sequence[int] | None = None):
        if not charges:
            raise ValueError("BuckinghamCoulomb needs charges, e.g. {'Na': 1.0, 'Cl': -1.0}")
        if cutoff is None or not cutoff > 0:
            raise ValueError(f"cutoff must be a positive distance in Å (Ewald's real-space "
                             f"cutoff), got {cutoff!r}")
        self.cutoff = float(cutoff)
        charge_of = {}
        for name, q in charges.items():
            (z,) = to_numbers([name])
            charge_of[z] = float(q)
        names = sorted(charge_of)
        self.species = tuple(names)
        buck = self._pair_table(pairs, names, "pairs", ("A", "rho", "C"), (0.0, 1.0, 0.0))
        lj = self._pair_table(lennard, names, "lennard", ("A", "B"), (0.0, 0.0))
        for pair, (_, rho_ij, _) in buck.given.items():
            if not rho_ij > 0:
                raise ValueError(f"rho of pair {pair!r} must be positive (Å), got {rho_ij!r}")
        # Static flags: terms that are absent, or cut at ``cutoff``, cost nothing extra.
        self._buck_cut = bool(np.any(buck.cut < self.cutoff))
        self._lennard = bool(lj.given)
        self._lennard_cut = bool(np.any(lj.cut < self.cutoff))
        a, rho, c = buck.values
        self.params = {"A": jnp.asarray(a), "rho": jnp.asarray(rho), "C": jnp.asarray(c),
                       "charge": jnp.asarray([charge_of[z] for z in names])}
        if self._buck_cut:
            self.params["buck_cutoff"] = jnp.asarray(buck.cut)
        if self._lennard:
            self.params["lennard_A"] = jnp.asarray(lj.values[0])
            self.params["lennard_B"] = jnp.asarray(lj.values[1])
            if self._lennard_cut:
                self.params["lennard_cutoff"] = jnp.asarray(lj.cut)
        self.ewald = ewald.make_spec(self.cutoff, accuracy=accuracy, alpha=alpha, kmax=kmax)

    def _pair_table(self, given, names, what, fields, empty):
        """Symmetric [T, T] tables of per-pair values and cutoffs, checked (host side)."""
        t = len(names)
        values = [np.full((t, t), e) for e in empty]
        cut = np.full((t, t), self.cutoff)
        seen = {}
        for pair, value in dict(given or {}).items():
            if isinstance(pair, str) or len(pair) != 2:
                raise ValueError(f"{what} keys are two elements such as ('Na', 'Cl'), "
                                 f"got {pair!r}")
            numbers = to_numbers(pair)
            for z in numbers:
                if z not in names:
                    raise ValueError(f"{chemical_symbols[z]} appears in {what} but has no "
                                     "charge; add it to charges")
            shape = ", ".join(fields)
            if len(value) not in (len(fields), len(fields) + 1):
                raise ValueError(f"{what} entry {pair!r} needs ({shape}) or ({shape}, "
                                 f"rcut), got {value!r}")
            value = tuple(float(x) for x in value)
            if not all(np.isfinite(value)):
                raise ValueError(f"{what} entry {pair!r} has a non-finite value: {value!r}")
            rcut = value[len(fields)] if len(value) > len(fields) else self.cutoff
            if not 0 < rcut <= self.cutoff:
                raise ValueError(f"cutoff of {what} entry {pair!r} must be in (0, cutoff = "
                                 f"{self.cutoff:g}] Å, got {rcut!r}; raise the model's "
                                 "cutoff (the Ewald real-space cutoff) to allow it")
            i, j = sorted(names.index(z) for z in numbers)
            if (i, j) in seen and seen[(i, j)] != value + (rcut,):
                raise ValueError(f"{what} entry {pair!r} is given twice with different "
                                 "parameters")
            seen[(i, j)] = value + (rcut,)
            for table, x in zip(values + [cut], value[:len(fields)] + (rcut,)):
                table[i, j] = table[j, i] = x
        given = {pair: v[:len(fields)] for pair, v in dict(given or {}).items()}
        return _PairTable(values, cut, given)

    @property
    def alpha(self) -> float:
        """Ewald splitting parameter, 1/Å."""
        return self.ewald.alpha

    @property
    def kmax(self) -> tuple[int, int, int]:
        """Static reciprocal box (reduced-cell indices)."""
        return self.ewald.kmax

    def for_cells(self, cells, *, margin: float = 1.25) -> "BuckinghamCoulomb":
        """A copy whose k box holds these cells [..., 3, 3] (host side).

        Same alpha, gmax and parameters, hence the same energy function to round-off:
        only the static box (and so the compiled shape) changes, to the smallest one
        that holds reduced lattice vectors ``margin`` times longer than those of
        ``cells`` (see :func:`.ewald.kmax_for`).
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.ewald = self.ewald.sized_for(cells, margin=margin)
        return new

    def energies(self, params, graph: Graph):
        t = self.type_index(graph.species)
        n_types = len(self.species)
        charge = params["charge"]
        # Per-pair parameters by pair type: one small one-hot matrix product instead of a
        # gather per parameter (gathers, and the scatters of their gradients, are slow on
        # CPUs); exact, since each row picks one value.
        columns = [params["A"], 1.0 / params["rho"], params["C"],
                   charge[:, None] * charge[None, :]]
        if self._buck_cut:
            columns.append(params["buck_cutoff"])
        if self._lennard:
            columns += [params["lennard_A"], params["lennard_B"]]
            if self._lennard_cut:
                columns.append(params["lennard_cutoff"])
        table = jnp.stack([jnp.reshape(x, (-1,)) for x in columns], axis=-1)  # [T T, P]
        kind = t[:, None] * n_types + t[graph.nbr_idx]  # [N, K] pair type
        one_hot = (kind[..., None] == jnp.arange(n_types * n_types)).astype(table.dtype)
        values = jnp.einsum("nkt,tp->nkp", one_hot, table,
                            precision=jax.lax.Precision.HIGHEST)
        a, inv_rho, c, qq = (values[..., k] for k in range(4))

        r = safe_norm(graph.nbr_vec, graph.nbr_mask)
        edge = graph.nbr_mask & (r < self.cutoff)
        r = jnp.where(edge, r, 1.0)
        inv6 = 1.0 / r**6
        pair = a * jnp.exp(-r * inv_rho) - c * inv6
        k = 4
        if self._buck_cut:
            pair = jnp.where(r < values[..., k], pair, 0.0)
            k += 1
        if self._lennard:
            lj = (values[..., k] * inv6 - values[..., k + 1]) * inv6
            if self._lennard_cut:
                lj = jnp.where(r < values[..., k + 2], lj, 0.0)
            pair = pair + lj
        # The real-space Ewald term rides on the same pass over the edges.
        pair = pair + ewald.screened_coulomb(r, qq, self.ewald.alpha)
        share = 1.0 if graph.half else 0.5  # each pair once, or once from each end
        e_pair = share * jnp.sum(jnp.where(edge, pair, 0.0), axis=-1)
        charges = jnp.where(graph.mask, charge[t], 0.0)
        return e_pair + ewald.long_range_energies(graph, charges, self.ewald)

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        return f"{base}, alpha={self.alpha:.4g}, kmax={self.kmax})"


"""Buckingham + Coulomb (Ewald): the rigid-ion model of GULP and LAMMPS ``buck/coul/long``.

``E = sum_{i<j} [A exp(-r/rho) - C / r^6] + E_Coulomb``: the Buckingham term
(Buckingham, Proc. R. Soc. A 168, 264 (1938)) acts between listed species pairs and is
cut at ``cutoff`` without shift, as LAMMPS ``pair_style buck/coul/long`` does; the
Coulomb energy of the point charges is the Ewald sum of :mod:`jcsp.potentials.ewald`
(real-space part within the same cutoff, the role of LAMMPS ``kspace_style ewald``).

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

from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from ..graph import Graph, safe_norm
from . import ewald
from .base import Potential, to_numbers


class BuckinghamCoulomb(Potential):
    """Buckingham pair terms plus Ewald-summed Coulomb interactions of fixed charges.

    Args:
      pairs: ``{("Na", "Cl"): (A, rho, C)}`` with A in eV, rho in Å, C in eV·Å⁶; order
        within a pair does not matter; pairs not listed have no Buckingham term.
      charges: ``{"Na": 1.0, "Cl": -1.0}``, in units of e; every species of the model
        (including those named in ``pairs``) needs one.
      cutoff: real-space cutoff of both the Buckingham and the screened Coulomb terms, Å.
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
    """

    def __init__(self, pairs: Mapping[tuple, tuple[float, float, float]] | None,
                 charges: Mapping, cutoff: float = 10.0, *, accuracy: float = 1e-8,
                 alpha: float | None = None, kmax: int | Sequence[int] | None = None):
        if not charges:
            raise ValueError("BuckinghamCoulomb needs charges, e.g. {'Na': 1.0, 'Cl': -1.0}")
        if cutoff is None or not cutoff > 0:
            raise ValueError(f"cutoff must be a positive distance in Å (Ewald's real-space "
                             f"cutoff), got {cutoff!r}")
        pairs = dict(pairs or {})
        charge_of = {}
        for name, q in charges.items():
            (z,) = to_numbers([name])
            charge_of[z] = float(q)
        names = sorted(charge_of)
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"pair keys are two elements such as ('Na', 'Cl'), got {pair!r}")
            for z in to_numbers(pair):
                if z not in charge_of:
                    raise ValueError(f"{chemical_symbols[z]} appears in pairs but has no "
                                     "charge; add it to charges")
        self.species = tuple(names)
        t = len(names)
        a = np.zeros((t, t))
        rho = np.ones((t, t))
        c = np.zeros((t, t))
        seen = {}
        for pair, value in pairs.items():
            if len(value) != 3:
                raise ValueError(f"pair {pair!r} needs (A, rho, C), got {value!r}")
            a_ij, rho_ij, c_ij = (float(x) for x in value)
            if not rho_ij > 0:
                raise ValueError(f"rho of pair {pair!r} must be positive (Å), got {rho_ij!r}")
            i, j = sorted(names.index(z) for z in to_numbers(pair))
            if (i, j) in seen and seen[(i, j)] != (a_ij, rho_ij, c_ij):
                raise ValueError(f"pair {pair!r} is given twice with different parameters")
            seen[(i, j)] = (a_ij, rho_ij, c_ij)
            a[i, j] = a[j, i] = a_ij
            rho[i, j] = rho[j, i] = rho_ij
            c[i, j] = c[j, i] = c_ij
        self.cutoff = float(cutoff)
        self.ewald = ewald.make_spec(self.cutoff, accuracy=accuracy, alpha=alpha, kmax=kmax)
        self.params = {"A": jnp.asarray(a), "rho": jnp.asarray(rho), "C": jnp.asarray(c),
                       "charge": jnp.asarray([charge_of[z] for z in names])}

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
        charges = params["charge"][t]
        ti = t[:, None]
        tj = t[graph.nbr_idx]
        a = params["A"][ti, tj]
        rho = params["rho"][ti, tj]
        c = params["C"][ti, tj]
        r = safe_norm(graph.nbr_vec, graph.nbr_mask)
        edge = graph.nbr_mask & (r < self.cutoff)
        r = jnp.where(edge, r, 1.0)
        buck = a * jnp.exp(-r / rho) - c / r**6
        e_buck = 0.5 * jnp.sum(jnp.where(edge, buck, 0.0), axis=-1)
        return e_buck + ewald.ewald_energies(graph, charges, self.ewald)

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        return f"{base}, alpha={self.alpha:.4g}, kmax={self.kmax})"


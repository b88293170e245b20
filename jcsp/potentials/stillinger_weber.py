"""Stillinger-Weber three-body potential, multi-element, as LAMMPS ``pair_style sw``.

The energy (Stillinger & Weber, Phys. Rev. B 31, 5262 (1985); LAMMPS ``pair_style sw``
documentation for the multi-element form) is

``E = sum_i sum_{j>i} phi2(r_ij) + sum_i sum_{j != i} sum_{k > j} phi3(r_ij, r_ik, theta_jik)``

``phi2(r) = A eps [B (sigma/r)^p - (sigma/r)^q] exp(sigma / (r - a sigma))``

``phi3 = lambda eps (cos theta_jik - cos theta0)^2
exp(gamma_ij sigma_ij / (r_ij - a_ij sigma_ij)) exp(gamma_ik sigma_ik / (r_ik - a_ik sigma_ik))``

with, as LAMMPS defines them for element triplets, the two-body parameters of the pair
``i-j`` (and the ``gamma, sigma, a`` of each three-body leg) taken from the entry
``(i, j, j)`` and ``lambda, eps, cos theta0`` of the three-body term from ``(i, j, k)``.

A pair ``i-j`` interacts (and is a three-body leg) for ``r < a sigma``, or, when the
entry's ``tol`` is positive, for ``r < a sigma + s / ln(min(tol, 0.01))`` with
``s = gamma sigma`` if ``gamma < 1`` else ``sigma``, as LAMMPS does.

Per-atom energies split each pair term half and half between its atoms and give each
three-body term to its central atom ``i``; they sum to the LAMMPS total. LAMMPS
evaluates a pair once with the ``(i, j, j)`` or the ``(j, i, i)`` entry depending on
atom ids, and a triplet once with ``(i, j, k)`` or ``(i, k, j)`` depending on neighbor
order. The two-body entries agree in every distributed file, and so do the three-body
ones in most (``Si.sw``, ``GaN.sw``, ``CdTe.sw``); where they differ (e.g.
``CdTeZnSeHgS0.sw``) the LAMMPS result depends on neighbor order, and jcsp uses the mean
of the two entries, which is symmetric.

The neighbor list is per atom ``[N, K]``; the three-body sum runs over ordered pairs of
distinct neighbor *slots* ``(j, k)`` of ``i`` (with a factor 1/2), so two periodic images
of one atom are two neighbors and form a triplet, as they do in LAMMPS.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..graph import Graph, safe_norm
from .base import Potential, to_numbers

#: Order of the eleven numbers of one ``.sw`` entry, after the three element names.
FIELDS = ("epsilon", "sigma", "a", "lambda", "gamma", "costheta0", "A", "B", "p", "q", "tol")

#: exp(-x) underflows to exactly 0.0 in float64 beyond x ~ 745. Pairs and legs are
#: dropped where the exponent is below ``-EXP_GUARD``: their energy is < 1e-300 eV, and
#: gradients stay finite right up to ``a * sigma``.
EXP_GUARD = 700.0


def read_sw(path: str | os.PathLike) -> list[tuple[tuple[str, str, str], dict[str, float]]]:
    """Entries of a LAMMPS ``.sw`` file (host side).

    Comments start with ``#``; an entry is three element names and eleven numbers
    (``FIELDS``) and may wrap over several lines.

    Returns:
      list of ((elem_i, elem_j, elem_k), {field: value}) in file order.
    """
    words: list[str] = []
    with open(path) as fh:
        for line in fh:
            words += line.split("#", 1)[0].split()
    if len(words) % 14:
        raise ValueError(f"{path}: a Stillinger-Weber entry is 3 element names and 11 numbers; "
                         f"the file has {len(words)} words, not a multiple of 14")
    entries = []
    for start in range(0, len(words), 14):
        names = tuple(words[start:start + 3])
        try:
            values = [float(w) for w in words[start + 3:start + 14]]
        except ValueError:
            raise ValueError(f"{path}: entry {' '.join(names)} has a non-numeric parameter: "
                             f"{' '.join(words[start + 3:start + 14])}") from None
        params = dict(zip(FIELDS, values))
        bad = [k for k in FIELDS if k != "costheta0" and params[k] < 0]
        if bad:
            raise ValueError(f"{path}: entry {' '.join(names)} has negative {', '.join(bad)}")
        entries.append((names, params))
    return entries


class StillingerWeber(Potential):
    """Stillinger-Weber potential over a set of elements.

    Args:
      species: element symbols (or atomic numbers), in type order.
      params: ``{field: [T, T, T] array}`` for every name in ``FIELDS``, indexed by the
        type indices of the element triplet ``(i, j, k)``.

    ``params`` is the differentiable parameter pytree; the cutoff (max of ``a * sigma``)
    is fixed at construction.

    Example:
      >>> sw = StillingerWeber.from_lammps("/usr/share/lammps/potentials/Si.sw")
      >>> gan = StillingerWeber.from_lammps("GaN.sw", species=["Ga", "N"])
    """

    def __init__(self, species: Sequence, params: dict):
        self.species = to_numbers(species)
        t = len(self.species)
        if t == 0:
            raise ValueError("StillingerWeber needs at least one element")
        missing = [k for k in FIELDS if k not in params]
        if missing:
            raise ValueError(f"StillingerWeber params lack {', '.join(missing)}")
        self.params = {k: jnp.asarray(np.asarray(params[k], float)) for k in FIELDS}
        for k, v in self.params.items():
            if v.shape != (t, t, t):
                raise ValueError(f"StillingerWeber param {k!r} must have shape {(t, t, t)}, "
                                 f"got {v.shape}")
        cut = np.asarray(params["a"], float) * np.asarray(params["sigma"], float)
        self.cutoff = float(np.max(cut))
        if not self.cutoff > 0:
            raise ValueError("StillingerWeber: every a * sigma is zero, nothing interacts")

    @classmethod
    def from_lammps(cls, path: str | os.PathLike, species: Iterable | None = None
                    ) -> "StillingerWeber":
        """Read a LAMMPS ``.sw`` file (host side).

        Args:
          path: the ``.sw`` file.
          species: elements to use, in type order (default: every element in the file,
            in order of first appearance). Entries naming other elements are skipped;
            every triplet of the chosen elements must be present exactly once.
        """
        entries = read_sw(path)
        if species is None:
            names = list(dict.fromkeys(n for triplet, _ in entries for n in triplet))
        else:
            names = [s if isinstance(s, str) else chemical_symbols[int(s)] for s in species]
            if len(set(names)) != len(names):
                raise ValueError(f"species lists an element twice: {names}")
        unknown = [n for n in names if n not in atomic_numbers]
        if unknown:
            raise ValueError(f"{path}: {', '.join(unknown)} are not chemical symbols; pass "
                             "species=[...] naming the elements to use")
        t = len(names)
        table = {k: np.zeros((t, t, t)) for k in FIELDS}
        seen = np.zeros((t, t, t), bool)
        for triplet, values in entries:
            if not all(n in names for n in triplet):
                continue
            a, b, c = (names.index(n) for n in triplet)
            if seen[a, b, c]:
                raise ValueError(f"{path}: duplicate entry {' '.join(triplet)}")
            seen[a, b, c] = True
            for k in FIELDS:
                table[k][a, b, c] = values[k]
        if not seen.all():
            a, b, c = np.argwhere(~seen)[0]
            raise ValueError(f"{path}: no entry for {names[a]} {names[b]} {names[c]}; the "
                             f"file does not cover {'-'.join(names)} (choose species=...)")
        return cls(names, table)

    def energies(self, params, graph: Graph):
        t = self.type_index(graph.species)
        ti = t[:, None]                                   # [N, 1]
        tj = t[graph.nbr_idx]                             # [N, K]
        mask = graph.nbr_mask
        r = safe_norm(graph.nbr_vec, mask)
        r_ok = jnp.where(mask, r, 1.0)

        def pair(name):                                   # entry (i, j, j) on each edge
            return params[name][ti, tj, tj]

        eps, sigma, a, gamma = pair("epsilon"), pair("sigma"), pair("a"), pair("gamma")
        big_a, big_b, p, q = pair("A"), pair("B"), pair("p"), pair("q")
        cut = a * sigma
        # tol > 0 (capped at 0.01) shortens the range as LAMMPS does, to
        # a sigma + s / ln(tol) with s = gamma sigma if gamma < 1, else sigma.
        tol = jnp.minimum(pair("tol"), 0.01)
        slope = jnp.where(gamma < 1.0, gamma * sigma, sigma)
        reach = jnp.where(tol > 0.0, cut + slope / jnp.log(jnp.where(tol > 0, tol, 0.5)), cut)
        safe_r = jnp.where(cut > 0.0, 0.5 * cut, 1.0)

        # Two-body term, half to each atom.
        in2 = mask & (r_ok < reach) & (r_ok < cut - sigma / EXP_GUARD)
        r2 = jnp.where(in2, r_ok, safe_r)
        s_r = sigma / r2
        phi2 = big_a * eps * (big_b * s_r**p - s_r**q) * jnp.exp(sigma / (r2 - cut))
        e2 = 0.5 * jnp.sum(jnp.where(in2, phi2, 0.0), axis=-1)

        # Three-body legs: radial factor of each edge, zero outside its range.
        gs = gamma * sigma
        in3 = mask & (r_ok < reach) & (r_ok < cut - gs / EXP_GUARD)
        r3 = jnp.where(in3, r_ok, safe_r)
        leg = jnp.where(in3, jnp.exp(gs / (r3 - cut)), 0.0)          # [N, K]
        unit = jnp.where(mask[..., None], graph.nbr_vec * (1.0 / r_ok)[..., None], 0.0)
        if self.n_types == 1:
            return e2 + self._three_body_moments(params, leg, unit)
        cos = jnp.einsum("nja,nka->njk", unit, unit)                  # [N, K, K]
        tk = tj[:, None, :]
        lam_eps = (params["lambda"] * params["epsilon"])[ti[:, :, None], tj[:, :, None], tk]
        cos0 = params["costheta0"][ti[:, :, None], tj[:, :, None], tk]
        k = mask.shape[-1]
        distinct = ~jnp.eye(k, dtype=bool)
        weight = leg[:, :, None] * leg[:, None, :]
        phi3 = lam_eps * (cos - cos0) ** 2 * weight
        e3 = 0.5 * jnp.sum(jnp.where(distinct, phi3, 0.0), axis=(-2, -1))
        return e2 + e3

    @staticmethod
    def _three_body_moments(params, leg, unit):
        """Single-species three-body energy in O(K) per atom instead of O(K^2).

        With g_j the radial leg and u_j the unit vector of edge j, and one (lambda eps,
        cos0) for every triplet, sum_{j != k} g_j g_k (u_j.u_k - c0)^2 expands into
        moments of the legs: |T|_F^2 - 2 c0 |v|^2 + c0^2 S^2 minus the j = k terms
        sum_j g_j^2 (1 - c0)^2, with T = sum_j g_j u_j u_j^T, v = sum_j g_j u_j and
        S = sum_j g_j. Exact algebra; only the rounding differs from the triplet sum.
        """
        lam_eps = params["lambda"][0, 0, 0] * params["epsilon"][0, 0, 0]
        c0 = params["costheta0"][0, 0, 0]
        t = jnp.einsum("nj,nja,njb->nab", leg, unit, unit)
        v = jnp.einsum("nj,nja->na", leg, unit)
        total = jnp.sum(leg, axis=-1)
        diag = jnp.sum(leg * leg, axis=-1) * (1.0 - c0) ** 2
        full = jnp.sum(t * t, axis=(-2, -1)) - 2.0 * c0 * jnp.sum(v * v, axis=-1) \
            + c0 * c0 * total * total
        return 0.5 * lam_eps * (full - diag)

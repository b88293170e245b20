"""Lennard-Jones, multi-species, with three truncations.

``E = 4 eps [(sigma/r)^12 - (sigma/r)^6]`` per pair, truncated at ``cutoff``:

- ``"plain"``: cut without shift (LAMMPS ``lj/cut``);
- ``"shift"``: energy shifted to zero at the cutoff (``lj/cut`` + ``pair_modify shift yes``);
- ``"smooth"``: energy and force go to zero at the cutoff,
  ``E(r) - E(rc) - (r - rc) E'(rc)`` (LAMMPS ``lj/smooth/linear``).

``cutoff=None`` means all pairs, for non-periodic clusters (Wales & Doye's LJ clusters).
"""

from __future__ import annotations

from typing import Literal, Mapping

import jax.numpy as jnp
import numpy as np

from ..graph import Graph, safe_norm
from .base import Potential, to_numbers

Truncation = Literal["plain", "shift", "smooth"]


class LennardJones(Potential):
    """Lennard-Jones pair potential.

    Args:
      epsilon: well depth, eV (single-species form).
      sigma: length scale, Å (single-species form).
      cutoff: Å, or None for all pairs (clusters).
      pairs: optional ``{("A", "B"): (epsilon, sigma)}`` for several species; every pair
        of the listed species must be given (order within a pair does not matter).
      truncation: "plain", "shift" or "smooth" (ignored when cutoff is None).

    Example:
      >>> lj = LennardJones(epsilon=1.0, sigma=1.0, cutoff=None)       # LJ clusters
      >>> ar = LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5, truncation="shift")
    """

    def __init__(self, epsilon: float = 1.0, sigma: float = 1.0, cutoff: float | None = None,
                 *, pairs: Mapping[tuple, tuple[float, float]] | None = None,
                 truncation: Truncation = "shift"):
        if truncation not in ("plain", "shift", "smooth"):
            raise ValueError(f"truncation must be 'plain', 'shift' or 'smooth', not {truncation!r}")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"cutoff must be positive or None, got {cutoff!r}")
        self.cutoff = None if cutoff is None else float(cutoff)
        self.truncation = truncation
        if pairs:
            names = sorted({z for pair in pairs for z in to_numbers(pair)})
            self.species = tuple(names)
            t = len(names)
            eps = np.full((t, t), np.nan)
            sig = np.full((t, t), np.nan)
            for pair, (e, s) in pairs.items():
                a, b = (names.index(z) for z in to_numbers(pair))
                eps[a, b] = eps[b, a] = e
                sig[a, b] = sig[b, a] = s
            if np.isnan(eps).any():
                raise ValueError("LennardJones pairs must list every pair of the species given")
        else:
            self.species = None
            eps = np.array([[float(epsilon)]])
            sig = np.array([[float(sigma)]])
        self.params = {"epsilon": jnp.asarray(eps), "sigma": jnp.asarray(sig)}

    def energies(self, params, graph: Graph):
        t = self.type_index(graph.species)
        ti = t[:, None]
        tj = t[graph.nbr_idx]
        eps = params["epsilon"][ti, tj]
        sig = params["sigma"][ti, tj]
        r = safe_norm(graph.nbr_vec, graph.nbr_mask)
        r = jnp.where(graph.nbr_mask, r, 1.0)

        def lj(x):
            s6 = (sig / x) ** 6
            return 4.0 * eps * (s6 * s6 - s6)

        e = lj(r)
        mask = graph.nbr_mask
        if self.cutoff is not None:
            rc = self.cutoff
            mask = mask & (r < rc)
            if self.truncation in ("shift", "smooth"):
                e = e - lj(jnp.full_like(r, rc))
            if self.truncation == "smooth":
                s6 = (sig / rc) ** 6
                de_rc = 4.0 * eps * (-12.0 * s6 * s6 + 6.0 * s6) / rc
                e = e - (r - rc) * de_rc
        return 0.5 * jnp.sum(jnp.where(mask, e, 0.0), axis=-1)

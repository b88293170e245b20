"""Silicon phases shared by the differentiable experiments (host side).

Primitive cells of diamond, beta-tin (I4_1/amd, body-centred tetragonal) and bcc
silicon, and their conventional lattice constants read back from a (relaxed) cell.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.build import bulk


def beta_tin(a: float = 4.90, c: float = 2.70) -> Atoms:
    """Beta-tin Si, 2 atoms: bct rows (-a/2, a/2, c/2), (a/2, -a/2, c/2), (a/2, a/2, -c/2),
    atoms at conventional (0, 0, 0) and (0, 1/2, 1/4)."""
    cell = np.array([[-a / 2, a / 2, c / 2], [a / 2, -a / 2, c / 2], [a / 2, a / 2, -c / 2]])
    return Atoms("Si2", positions=[(0, 0, 0), (0, a / 2, c / 4)], cell=cell, pbc=True)


def phases() -> dict:
    """Unrelaxed starting cells, name -> ase.Atoms."""
    return {"diamond": bulk("Si", "diamond", a=5.45), "beta-tin": beta_tin(),
            "bcc": bulk("Si", "bcc", a=3.10)}


def lattice_constants(name: str, cell):
    """Conventional lattice constants (Å, a JAX array) of a relaxed primitive cell [3, 3]:
    diamond (fcc rows) -> [a], beta-tin (bct rows) -> [a, c], bcc -> [a]."""
    if name == "diamond":
        return jnp.stack([jnp.sqrt(2.0) * jnp.mean(jnp.linalg.norm(cell, axis=1))])
    if name == "beta-tin":
        return jnp.stack([jnp.linalg.norm(cell[1] + cell[2]), jnp.linalg.norm(cell[0] + cell[1])])
    if name == "bcc":
        return jnp.stack([2.0 / jnp.sqrt(3.0) * jnp.mean(jnp.linalg.norm(cell, axis=1))])
    raise ValueError(f"unknown phase {name!r}")

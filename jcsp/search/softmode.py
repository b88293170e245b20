"""Soft modes: the Hessian of a potential by autodiff and displacements along its softest
eigenvectors (USPEX's softmutation; Lyakhov, Oganov & Valle, Comput. Phys. Commun.
181, 1623 (2010)).

A relaxed structure sits in a basin; its softest vibrational modes point along the
valleys that lead out of it most cheaply, which is why moving along one of them (with a
large amplitude) makes a better mutation than a random displacement. The Hessian here is
the exact second derivative of the search's own potential with respect to the Cartesian
positions, ``H = d^2 E / dr dr`` in eV/Å² ([3N, 3N]), by JAX autodiff (``jax.hessian``)
through the same graph the relaxer differentiates: the neighbor list (with its periodic
image shifts for crystals) is built once at the structure and the edge vectors follow
the positions. It is **not** mass-weighted: the mutation explores the energy surface,
on which masses play no part (USPEX weights by masses only to get phonon frequencies).
The cell is held fixed.

The three uniform translations (and for clusters the three rigid rotations about the
centroid) are projected out of ``H`` (``P H P`` with ``P`` the projector onto their
orthogonal complement), so their zero eigenvalues stay at exactly zero and are skipped;
the remaining modes are sorted by curvature and one of the ``softest`` lowest is
taken, with a random sign, scaled so that the atom that moves most moves
``amplitude`` (Å).

The compiled Hessian is cached per potential, atom count and neighbor-list shape
(:class:`Hessians`, one :class:`jcsp.capacity.Capacity` each), so a search compiles it
once per structure size, not per call.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from .. import neighbors as nl
from ..capacity import Capacity
from ..graph import make_graph
from ..potentials.base import Potential
from ..structures.convert import from_atoms
from ..structures.population import Population

#: Potentials whose Hessian evaluators are kept (each holds its compiled programs).
CACHE_SIZE = 8


class _Hessian(NamedTuple):
    hessian: jax.Array   # [B, N, 3, N, 3] eV/Å²
    overflow: jax.Array  # [B] bool
    count: jax.Array     # [B] int


@functools.partial(jax.jit, static_argnums=(0, 3))
def _hessians(potential: Potential, params, pop: Population, spec: nl.NeighborSpec) -> _Hessian:
    def one(frac, cell, species, mask):
        nbrs = nl.build(spec, frac, cell, mask, pop.pbc)

        def energy(pos):
            graph = make_graph(pos, cell, species, mask, nbrs, pop.pbc)
            return jnp.sum(jnp.where(mask, potential.energies(params, graph), 0.0))

        return jax.hessian(energy)(frac @ cell), nbrs.overflow, nbrs.count

    h, overflow, count = jax.vmap(one)(pop.frac, pop.cell, pop.species, pop.mask)
    return _Hessian(h, overflow, count)


class Hessians:
    """Hessians of single structures under one potential (host side).

    Args:
      potential: the potential.
    """

    def __init__(self, potential: Potential):
        self.potential = potential
        self._capacity: dict[tuple, Capacity] = {}

    def __call__(self, atoms: Atoms) -> np.ndarray:
        """[3N, 3N] ``d^2 E / dr dr`` of ``atoms`` (eV/Å²), rows and columns ordered
        atom by atom (x, y, z)."""
        pop = from_atoms([atoms], validate=False)
        key = (len(atoms), pop.pbc)
        if key not in self._capacity:
            self._capacity[key] = Capacity(self.potential, pop.pbc)
        capacity = self._capacity[key]
        capacity.fit(pop)

        def run(spec, sized):
            return _hessians(sized, sized.params, pop, spec)

        h = np.asarray(capacity.run(run, pop.cell).hessian[0], float)
        n = len(atoms)
        h = h.reshape(3 * n, 3 * n)
        return 0.5 * (h + h.T)


_EVALUATORS: dict[int, tuple[Potential, Hessians]] = {}


def hessian(potential: Potential, atoms: Atoms) -> np.ndarray:
    """[3N, 3N] Hessian of ``atoms`` under ``potential`` (eV/Å²), through a cached
    :class:`Hessians` (the cache holds the potential, so its id is not reused)."""
    key = id(potential)
    if key not in _EVALUATORS:
        if len(_EVALUATORS) >= CACHE_SIZE:
            _EVALUATORS.pop(next(iter(_EVALUATORS)))
        _EVALUATORS[key] = (potential, Hessians(potential))
    return _EVALUATORS[key][1](atoms)


def rigid_modes(atoms: Atoms) -> np.ndarray:
    """[k, 3N] orthonormal rigid-body directions: the 3 translations, and for clusters
    the 3 rotations about the centroid (fewer for a linear molecule)."""
    n = len(atoms)
    basis = [np.tile(np.eye(3)[a], n) for a in range(3)]
    if not atoms.pbc.all():
        x = atoms.positions - atoms.positions.mean(0)
        basis += [np.cross(np.eye(3)[a], x).ravel() for a in range(3)]
    q, r = np.linalg.qr(np.array(basis).T)
    keep = np.abs(np.diag(r)) > 1e-8 * max(1.0, np.abs(r).max())
    return q[:, keep].T


def soft_modes(h: np.ndarray, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Curvatures [m] (eV/Å², ascending) and unit modes [m, N, 3] of the Hessian ``h``
    with the rigid-body directions of ``atoms`` projected out (m = 3N - 3, or 3N - 6
    for clusters)."""
    rigid = rigid_modes(atoms)
    p = np.eye(len(h)) - rigid.T @ rigid
    w, v = np.linalg.eigh(p @ h @ p)
    # the rigid directions are exact null vectors of P H P: drop the eigenvectors that
    # lie in their span (not simply the lowest eigenvalues: those may be negative)
    inside = np.sum((rigid @ v) ** 2, axis=0) > 0.5
    w, v = w[~inside], v[:, ~inside]
    return w, v.T.reshape(len(w), len(atoms), 3)


def soft_displacement(modes: np.ndarray, rng: np.random.Generator, *, softest: int,
                      amplitude: float) -> tuple[np.ndarray, int]:
    """[N, 3] displacement along one of the ``softest`` modes (drawn uniformly), with a
    random sign, scaled so the largest atomic displacement is ``amplitude`` (Å); and
    the index of the mode."""
    k = int(rng.integers(min(softest, len(modes))))
    mode = modes[k] * (1.0 if rng.uniform() < 0.5 else -1.0)
    return mode * amplitude / np.linalg.norm(mode, axis=1).max(), k


__all__ = ["Hessians", "hessian", "rigid_modes", "soft_modes", "soft_displacement"]

"""The one derivative engine: energy, forces and stress of any potential by autodiff.

Forces are ``-dE/dr``. Stress is ``(1/V) dE/d(strain)`` at zero strain, with the strain
applied to positions and cell together (``r -> r (I + e)``, ``cell -> cell (I + e)``) and
symmetrised, which is ASE's sign convention (positive = tensile), in eV/Å³. No potential
writes its own forces.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from . import neighbors as nl
from .graph import make_graph
from .potentials.base import Potential
from .structures.population import Population

Array = jax.Array


@struct.dataclass
class Results:
    """Energy and derivatives of one structure (or a batch, with a leading B axis).

    Attributes:
      energy: [] total energy, eV.
      energies: [N] per-atom energies, eV (0 on padded atoms).
      forces: [N, 3] eV/Å (0 on padded atoms).
      stress: [3, 3] eV/Å³, ASE sign; zero for clusters.
      overflow: [] bool, the neighbor list did not fit its spec (results invalid).
      count: [] int32, largest neighbor count seen (for reallocation).
    """

    energy: Array
    energies: Array
    forces: Array
    stress: Array
    overflow: Array
    count: Array


def evaluate(potential: Potential, params, frac, cell, species, mask, spec: nl.NeighborSpec,
             pbc) -> Results:
    """Energy, forces and stress of one structure, building its neighbor list.

    Safe under jit and vmap.

    Args:
      potential: the model (static).
      params: its parameter pytree.
      frac: [N, 3] fractional coordinates; cell: [3, 3] rows are lattice vectors, Å;
      species: [N] atomic numbers; mask: [N] real atoms.
      spec: static neighbor-list shape; pbc: static periodicity.
    """
    nbrs = nl.build(spec, frac, cell, mask, pbc)
    return evaluate_with(potential, params, frac, cell, species, mask, nbrs, pbc)


def evaluate_with(potential: Potential, params, frac, cell, species, mask,
                  nbrs: nl.NeighborList, pbc) -> Results:
    """Energy, forces and stress of one structure with a given neighbor list.

    The list may have been built with a larger cutoff (a Verlet skin) at earlier
    coordinates, as long as :func:`jcsp.neighbors.needs_rebuild` is false: potentials
    ignore pairs beyond their own cutoff.
    """
    positions = frac @ cell
    dtype = positions.dtype

    def total(pos, strain):
        sym = 0.5 * (strain + strain.T)
        deform = jnp.eye(3, dtype=dtype) + sym
        graph = make_graph(pos @ deform, cell @ deform, species, mask, nbrs, pbc)
        e = jnp.where(mask, potential.energies(params, graph), 0.0)
        return jnp.sum(e), e

    (energy, energies), (grad_pos, grad_strain) = jax.value_and_grad(
        total, argnums=(0, 1), has_aux=True)(positions, jnp.zeros((3, 3), dtype))
    # Non-finite coordinates drop out of a neighbor list (NaN compares false): make them
    # poison this structure's results instead of silently vanishing.
    finite = jnp.all(jnp.where(mask[:, None], jnp.isfinite(positions), True))
    finite = finite & jnp.all(jnp.isfinite(cell))
    energy = jnp.where(finite, energy, jnp.nan)
    forces = jnp.where(mask[:, None] & finite, -grad_pos, jnp.where(finite, 0.0, jnp.nan))
    if any(pbc):
        stress = grad_strain / jnp.abs(jnp.linalg.det(cell))
    else:
        stress = jnp.zeros((3, 3), dtype)
    return Results(energy=energy, energies=energies, forces=forces, stress=stress,
                   overflow=nbrs.overflow, count=nbrs.count)


@functools.partial(jax.jit, static_argnums=(0, 3))
def evaluate_population(potential: Potential, params, pop: Population,
                        spec: nl.NeighborSpec) -> Results:
    """:func:`evaluate` vmapped over the structures of a population: fields get a B axis.

    Jitted, with the potential and the spec static (compiled once per potential object,
    spec and population shape).
    """
    def one(frac, cell, species, mask):
        return evaluate(potential, params, frac, cell, species, mask, spec, pop.pbc)

    return jax.vmap(one)(pop.frac, pop.cell, pop.species, pop.mask)

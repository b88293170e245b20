"""The one derivative engine: energy, forces and stress of any potential by autodiff.

Forces are ``-dE/dr``. Stress is ``(1/V) dE/d(strain)`` at zero strain, with the strain
applied to positions and cell together (``r -> r (I + e)``, ``cell -> cell (I + e)``) and
symmetrised, which is ASE's sign convention (positive = tensile), in eV/Å³. No potential
writes its own forces.

:func:`strain_derivatives` is the core: one ``value_and_grad`` over positions and one
strain per cell, for atoms that belong to one structure (:func:`evaluate_with`) or to
several structures packed on one atom axis (the training batches of
:mod:`jcsp.ml.batch_eval`). Callers supply only how per-atom energies follow from the
deformed positions and cells.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from . import neighbors as nl
from .graph import make_graph
from .potentials.base import Potential
from .structures.population import Population

Array = jax.Array


class StrainDerivatives(NamedTuple):
    """What :func:`strain_derivatives` returns, for A atoms on S cells.

    Attributes:
      energies: [A] per-atom energies, eV (0 on padded atoms).
      energy: [S] total energy of each cell's atoms, eV.
      forces: [A, 3] ``-dE/dr``, eV/Å.
      stress: [S, 3, 3] ``(1/V) dE/d(strain)``, eV/Å³, ASE sign (zeros when not periodic).
    """

    energies: Array
    energy: Array
    forces: Array
    stress: Array


def strain_derivatives(atom_energies: Callable[[Array, Array], Array], positions: Array,
                       cells: Array, mask: Array, structure: Array | None = None, *,
                       periodic: bool = True) -> StrainDerivatives:
    """Energies, forces and stresses by one ``value_and_grad`` over positions and strains.

    Each cell ``s`` gets its own symmetric strain ``e_s``; its atoms move to
    ``r (I + e_s)`` and its cell to ``cell_s (I + e_s)``, and the stress is the energy's
    derivative with respect to ``e_s`` at zero over the cell's volume. Safe under jit
    and vmap.

    Args:
      atom_energies: ``(positions [A, 3], cells [S, 3, 3]) -> [A]`` per-atom energies in
        eV of the deformed atoms (values on padded atoms are ignored).
      positions: [A, 3] Cartesian positions, Å.
      cells: [S, 3, 3] rows are lattice vectors, Å.
      mask: [A] real atoms.
      structure: [A] int index into ``cells`` of each atom's structure (a packed batch);
        None when every atom belongs to the one cell (S = 1).
      periodic: static; false for clusters, whose stress is zero.
    """
    dtype = positions.dtype
    n_cells = cells.shape[0]

    def total(pos, strain):
        deform = jnp.eye(3, dtype=dtype) + 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        if structure is None:
            pos_d = pos @ deform[0]
        else:
            pos_d = jnp.einsum("ai,aij->aj", pos, deform[structure])
        e = jnp.where(mask, atom_energies(pos_d, cells @ deform), 0.0)
        if structure is None:
            energy = jnp.sum(e)[None]
        else:
            member = structure[None, :] == jnp.arange(n_cells)[:, None]  # [S, A]
            energy = member.astype(dtype) @ e
        return jnp.sum(energy), (e, energy)

    (_, (energies, energy)), (grad_pos, grad_strain) = jax.value_and_grad(
        total, argnums=(0, 1), has_aux=True)(positions, jnp.zeros((n_cells, 3, 3), dtype))
    if periodic:
        stress = grad_strain / jnp.abs(jnp.linalg.det(cells))[:, None, None]
    else:
        stress = jnp.zeros((n_cells, 3, 3), dtype)
    return StrainDerivatives(energies=energies, energy=energy, forces=-grad_pos,
                             stress=stress)


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
    if nbrs.half and not potential.half_lists:
        raise ValueError(f"{type(potential).__name__} needs full neighbor lists (each pair "
                         "from both ends); it does not declare half_lists")
    positions = frac @ cell

    def atom_energies(pos, cells):
        return potential.energies(params, make_graph(pos, cells[0], species, mask, nbrs, pbc))

    out = strain_derivatives(atom_energies, positions, cell[None], mask, periodic=any(pbc))
    # Non-finite coordinates drop out of a neighbor list (NaN compares false): make them
    # poison this structure's results instead of silently vanishing.
    finite = jnp.all(jnp.where(mask[:, None], jnp.isfinite(positions), True))
    finite = finite & jnp.all(jnp.isfinite(cell))
    energy = jnp.where(finite, out.energy[0], jnp.nan)
    forces = jnp.where(mask[:, None] & finite, out.forces, jnp.where(finite, 0.0, jnp.nan))
    return Results(energy=energy, energies=out.energies, forces=forces, stress=out.stress[0],
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

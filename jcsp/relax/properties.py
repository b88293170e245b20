"""Hessian-based properties of relaxed crystals: relaxed-ion elastic constants and
Gamma-point phonons, batched over a population, from autodiff second derivatives.

Everything here differentiates the one derivative engine (:func:`jcsp.derivatives.
evaluate_with`) once more, forward over its reverse pass (``jax.jacfwd``), at the given
structure: the forces and the stress of the structure whose atoms are displaced by
``u`` ([N, 3], Å, in the reference frame) and which is then strained by a symmetric
strain ``e`` (Voigt vector, engineering shears: the deformation ``F = I + eps(e)``,
rows ``r -> r F`` as in :mod:`jcsp.derivatives`). The neighbor list is built once at the
structure and the edge vectors follow ``u`` and ``e`` (as in
:mod:`jcsp.search.softmode`). One jitted, vmapped call (:func:`second_derivatives`)
gives, per structure:

- the position Hessian ``H = d^2 E / du du`` = ``-dF/du`` (eV/Å², [3N, 3N]);
- the internal-strain coupling ``Lambda = V dsigma/du`` = ``d^2 E / de du`` (eV/Å, [6, 3N]);
- the clamped-ion stress-strain coefficients ``B0 = dsigma/de`` ([6, 6], eV/Å³): the
  change of the Cauchy stress under a symmetric (rotation-free) strain with the
  fractional coordinates held.

Relaxed ions (the atoms follow the strain to their new minimum, ``du/de = -H^+ Lambda^T``):
``B = B0 - Lambda H^+ Lambda^T / V``, with ``H^+`` the inverse of ``H`` on the
complement of the three uniform translations (exact zero modes, to which ``Lambda`` is
orthogonal by translation invariance). This is the internal-strain (Kleinman) correction
of Born & Huang; see also Wallace, *Thermodynamics of Crystals* (1972), ch. 1-2.

**Which elastic constants.** ``B = dsigma/de`` is what a finite-strain stress
calculation measures (LAMMPS's ``examples/ELASTIC``: ``C_ij = -dP_i/de_j``). At zero
stress it equals the energy's second derivative ``(1/V) d^2 E / de de``. At a residual
stress ``sigma0`` the two differ by terms linear in it: with ``eps_a`` the strain of
unit Voigt component ``a``,

    B_ab = (1/V) d^2 E/de_a de_b + tr(eps_a sigma0 eps_b) - sigma0_a tr(eps_b),

and under a hydrostatic pressure ``P`` (``sigma0 = -P I``) ``B11 = C11 - P``,
``B12 = C12 + P``, ``B44 = C44 - P`` with ``C`` the second derivatives of the energy
with respect to Lagrangian strain (Wallace 1972; Wang, Yip, Phillpot, Lutsko & Wolf,
Phys. Rev. Lett. 71, 4182 (1993)). ``B`` (symmetrised) is the matrix whose positive
definiteness is the Born stability criterion under load (Wang et al. 1993), so it is
the one returned; under a hydrostatic stress simple and pure shears give the same
``B``, under a non-hydrostatic one ``B`` refers to pure (symmetric) strains.

**Phonons at Gamma.** ``omega^2`` are the eigenvalues of the mass-weighted Hessian
``H_ij / sqrt(m_i m_j)`` (ASE's masses, amu), reported as frequencies
``sign(omega^2) sqrt(|omega^2|)`` in THz (imaginary modes as negative numbers, as
phonopy does). The autodiff Hessian obeys translation invariance to round-off, so the
three acoustic modes come out near zero without any projection.

Input structures should be relaxed (forces near zero; any stress is allowed and enters
``B`` as above, but a stress other than the expected ``-pressure`` gets a warning).
Structures with residual forces above ``force_tol`` get a warning; a
structure whose position Hessian has a negative curvature (a saddle point, not a
crystal that can exist) gets NaN relaxed-ion constants and a warning.

Host-side drivers (:func:`elastic_constants`, :func:`phonons_gamma`) size the neighbor
lists with :class:`jcsp.capacity.Capacity`, call the jitted kernel once per population
(compiled once per potential, population shape and list shape), and solve the small
linear-algebra problems per structure with numpy. Memory: ``(3N + 6)^2`` numbers per
structure.

Example:
  >>> from ase.build import bulk
  >>> si = bulk("Si", "diamond", a=5.431)
  >>> C = elastic_constants([si], sw)          # [1, 6, 6] GPa
  >>> nu = phonons_gamma([si], sw)             # [1, 6] THz
  >>> mechanically_stable(C), dynamically_stable(nu)
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from .. import neighbors as nl
from ..capacity import Capacity
from ..derivatives import evaluate_with
from ..potentials.base import Potential
from ..structures.convert import from_atoms
from ..structures.population import Population
from ..units import EV_PER_A3_IN_GPA, VOIGT_PAIRS

#: sqrt(eV / (Å² amu)) in THz: 1e-12 sqrt(e / (1e-20 m_u)) / (2 pi).
THZ_PER_SQRT_EV_A2_AMU = 1e-12 * np.sqrt(1.602176634e-19 / (1e-20 * 1.66053906660e-27)) / (
    2.0 * np.pi)
#: Default largest residual force (eV/Å) of a structure called relaxed.
FORCE_TOL = 1e-3
#: Default largest deviation (GPa) of a relaxed cell's stress from ``-pressure``.
STRESS_TOL = 0.01
#: Default tolerance (THz) below which a negative (imaginary) frequency counts as zero.
FREQUENCY_TOL = 0.05


def voigt_strain(e: jax.Array) -> jax.Array:
    """[6] Voigt strain (engineering shears) -> [3, 3] symmetric strain tensor ``eps``
    (``eps_yz = e_4 / 2``, ...), in ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    rows = [[0, 5, 4], [5, 1, 3], [4, 3, 2]]
    half = jnp.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]], e.dtype)
    return e[jnp.array(rows)] * half


def _voigt(t: jax.Array) -> jax.Array:
    """[..., 3, 3] -> [..., 6] in ASE's Voigt order."""
    return jnp.stack([t[..., i, j] for i, j in VOIGT_PAIRS], axis=-1)


class SecondDerivatives(NamedTuple):
    """What :func:`second_derivatives` returns for a population of B structures of N
    atoms (padded atoms have zero rows and columns).

    Attributes:
      forces: [B, N, 3] eV/Å at the structure.
      stress: [B, 3, 3] eV/Å³, ASE sign (zero for clusters).
      hessian: [B, N, 3, N, 3] ``d^2 E / du du``, eV/Å².
      coupling: [B, 6, N, 3] ``Lambda = V dsigma/du = d^2 E / de du``, eV/Å (zero for
        clusters).
      elastic: [B, 6, 6] clamped-ion ``dsigma_a / de_b``, eV/Å³ (zero for clusters).
      overflow: [B] bool, the neighbor list did not fit (results invalid).
      count: [B] int32, largest neighbor count seen.
    """

    forces: jax.Array
    stress: jax.Array
    hessian: jax.Array
    coupling: jax.Array
    elastic: jax.Array
    overflow: jax.Array
    count: jax.Array


@functools.partial(jax.jit, static_argnums=(0, 3))
def second_derivatives(potential: Potential, params, pop: Population,
                       spec: nl.NeighborSpec) -> SecondDerivatives:
    """Position Hessians, strain couplings and clamped-ion stress-strain coefficients of
    every structure of ``pop``, by ``jax.jacfwd`` over
    :func:`jcsp.derivatives.evaluate_with` (3N + 6 forward passes over its gradient).
    Jitted: ``potential`` and ``spec`` are static.
    """
    dtype = pop.frac.dtype

    def one(frac, cell, species, mask):
        nbrs = nl.build(spec, frac, cell, mask, pop.pbc)
        positions = frac @ cell
        inverse = jnp.linalg.inv(cell)

        def response(u, e):
            deform = jnp.eye(3, dtype=dtype) + voigt_strain(e)
            # positions (r + u) F: fractional (r + u) cell^-1 in the cell cell F
            res = evaluate_with(potential, params, (positions + u) @ inverse, cell @ deform,
                                species, mask, nbrs, pop.pbc)
            return res.forces, _voigt(res.stress), res

        u0 = jnp.zeros_like(positions)
        e0 = jnp.zeros(6, dtype)
        res = response(u0, e0)[2]
        # output-major: ((dforces/du, dforces/de), (dstress/du, dstress/de))
        (df_du, _), (ds_du, ds_de) = jax.jacfwd(
            lambda u, e: response(u, e)[:2], argnums=(0, 1))(u0, e0)
        volume = jnp.abs(jnp.linalg.det(cell))
        return SecondDerivatives(forces=res.forces, stress=res.stress, hessian=-df_du,
                                 coupling=volume * ds_du, elastic=ds_de,
                                 overflow=res.overflow, count=res.count)

    return jax.vmap(one)(pop.frac, pop.cell, pop.species, pop.mask)


def _population(structures) -> Population:
    if isinstance(structures, Population):
        return structures
    if isinstance(structures, Atoms):
        structures = [structures]
    structures = list(structures)
    if not all(isinstance(a, Atoms) for a in structures):
        raise TypeError("structures must be a jcsp Population or a list of ase.Atoms")
    return from_atoms(structures)


def evaluate_second_derivatives(structures, potential: Potential, *, params=None
                                ) -> tuple[Population, SecondDerivatives]:
    """Host side: :func:`second_derivatives` of ``structures`` (a population or
    ``ase.Atoms``), the neighbor lists sized (and grown after an overflow) by
    :class:`jcsp.capacity.Capacity`. Returns the population and numpy results.

    Example:
      >>> pop, d = evaluate_second_derivatives([atoms], potential)
      >>> h = d.hessian[0, :n, :, :n, :].reshape(3 * n, 3 * n)    # eV/Å², n atoms
    """
    pop = _population(structures)
    numbers = np.asarray(pop.species)[np.asarray(pop.mask)]
    potential.check_species(numbers.tolist())
    params = potential.params if params is None else params
    capacity = Capacity(potential, pop.pbc)
    capacity.fit(pop)

    def run(spec, sized):
        return second_derivatives(sized, params, pop, spec)

    out = capacity.run(run, pop.cell)
    return pop, SecondDerivatives(*(np.asarray(x) for x in out))


def _translations(n: int) -> np.ndarray:
    """[3, 3n] orthonormal uniform translations of n atoms."""
    return np.stack([np.tile(np.eye(3)[a], n) for a in range(3)]) / np.sqrt(n)


def _check_relaxed(forces: np.ndarray, mask: np.ndarray, force_tol: float) -> None:
    fmax = np.max(np.where(mask[..., None], np.abs(forces), 0.0), axis=(1, 2))
    bad = np.flatnonzero(fmax > force_tol)
    if bad.size:
        warnings.warn(f"structures {bad.tolist()} are not relaxed (largest force "
                      f"{fmax[bad].max():.3g} eV/Å > force_tol={force_tol} eV/Å): their "
                      "relaxed-ion elastic constants and phonons are not those of a "
                      "minimum; relax them first (jcsp.relax with a small fmax)",
                      RuntimeWarning, stacklevel=3)


def _check_stress(stress: np.ndarray, pressure, stress_tol: float) -> None:
    target = -np.broadcast_to(np.asarray(pressure, float), stress.shape[:1])
    excess = np.abs(stress * EV_PER_A3_IN_GPA - target[:, None, None] * np.eye(3))
    excess = excess.max(axis=(1, 2))
    bad = np.flatnonzero(excess > stress_tol)
    if bad.size:
        warnings.warn(f"structures {bad.tolist()} are not relaxed at the given pressure "
                      f"(stress off by up to {excess[bad].max():.3g} GPa > stress_tol="
                      f"{stress_tol} GPa): their elastic constants are those of the "
                      "stressed cell; relax the cell at that pressure first, or pass "
                      "pressure=None if the load is intended", RuntimeWarning, stacklevel=3)


def elastic_constants(structures, potential: Potential, *, relaxed_ions: bool = True,
                      params=None, pressure=0.0, force_tol: float = FORCE_TOL,
                      stress_tol: float = STRESS_TOL, curvature_tol: float = 1e-6
                      ) -> np.ndarray:
    """Elastic constants ``C_ab = dsigma_a / de_b`` of relaxed crystals, GPa (host side).

    Args:
      structures: a :class:`~jcsp.structures.population.Population` or ``ase.Atoms``
        crystals (periodic in 3D), each relaxed (forces near zero; the cell at whatever
        pressure it was relaxed at).
      potential: any :class:`~jcsp.potentials.Potential`.
      relaxed_ions: let the atoms relax under the strain (the internal-strain
        correction); false gives the clamped-ion (homogeneous deformation) constants.
      params: parameters to use instead of ``potential.params``.
      pressure: GPa the cells were relaxed at (one number or one per structure); only
        checked: a warning names the structures whose stress differs from ``-pressure``
        by more than ``stress_tol`` in some component. ``None`` skips the check (cells
        under a non-hydrostatic load on purpose). The result is the same either way.
      force_tol: largest force (eV/Å) of a relaxed structure; above it a warning.
      stress_tol: GPa, see ``pressure``.
      curvature_tol: position-Hessian eigenvalues (eV/Å², translations removed) below
        ``-curvature_tol`` mark a saddle point (NaN result and a warning); those within
        ``±curvature_tol`` are free internal motions the strain does not couple to and
        are left out of the inverse.

    Returns:
      [B, 6, 6] GPa in ASE's Voigt order (xx, yy, zz, yz, xz, xy; engineering shear
      strains). At zero stress this is ``(1/V) d^2 E / de de``; see the module
      docstring for the stress terms under load. NaN for saddle points.

    Raises:
      ValueError: clusters (no cell to strain).
    """
    pop = _population(structures)
    if not all(pop.pbc):
        raise ValueError("elastic constants need crystals periodic in all three "
                         "directions; these structures are clusters")
    pop, d = evaluate_second_derivatives(pop, potential, params=params)
    n_atoms = np.asarray(pop.mask).sum(axis=1)
    mask = np.asarray(pop.mask)
    _check_relaxed(d.forces, mask, force_tol)
    if pressure is not None:
        _check_stress(d.stress, pressure, stress_tol)
    volume = np.abs(np.linalg.det(np.asarray(pop.cell, float)))
    out = np.array(d.elastic, float)
    saddles = []
    if relaxed_ions:
        for b in range(pop.batch_size):
            n = int(n_atoms[b])
            if n < 2:
                continue  # one atom per cell: no internal coordinates
            real = np.flatnonzero(mask[b])
            h = d.hessian[b][real][:, :, real].reshape(3 * n, 3 * n)
            lam = d.coupling[b][:, real].reshape(6, 3 * n)
            t = _translations(n)
            p = np.eye(3 * n) - t.T @ t
            w, v = np.linalg.eigh(p @ (0.5 * (h + h.T)) @ p)
            internal = np.sum((t @ v) ** 2, axis=0) < 0.5
            w, v = w[internal], v[:, internal]
            if np.any(w < -curvature_tol):
                saddles.append(b)
                out[b] = np.nan
                continue
            stiff = w > curvature_tol
            proj = lam @ v[:, stiff]
            out[b] -= (proj / w[stiff]) @ proj.T / volume[b]
    if saddles:
        warnings.warn(f"structures {saddles} are saddle points (negative position-Hessian "
                      "curvature): relaxed-ion elastic constants are undefined there "
                      "(NaN); relax them further, e.g. from a displaced start",
                      RuntimeWarning, stacklevel=2)
    return out * EV_PER_A3_IN_GPA


def phonons_gamma(structures, potential: Potential, *, params=None,
                  force_tol: float = FORCE_TOL) -> np.ndarray:
    """Gamma-point phonon frequencies from the mass-weighted autodiff Hessian (host side).

    Args:
      structures: a :class:`~jcsp.structures.population.Population` or ``ase.Atoms``
        (crystals or clusters), each relaxed.
      potential: any :class:`~jcsp.potentials.Potential`.
      params: parameters to use instead of ``potential.params``.
      force_tol: largest force (eV/Å) of a relaxed structure; above it a warning.

    Returns:
      [B, 3 N_max] frequencies in THz, ascending; imaginary modes as negative numbers;
      NaN past ``3 n_b`` for a structure of ``n_b`` atoms in a padded population. The
      three acoustic modes (six rigid modes for clusters) are near zero.
    """
    pop, d = evaluate_second_derivatives(structures, potential, params=params)
    n_atoms = np.asarray(pop.mask).sum(axis=1)
    mask = np.asarray(pop.mask)
    _check_relaxed(d.forces, mask, force_tol)
    species = np.asarray(pop.species)
    out = np.full((pop.batch_size, 3 * pop.n_max), np.nan)
    for b in range(pop.batch_size):
        n = int(n_atoms[b])
        if n == 0:
            continue
        real = np.flatnonzero(mask[b])
        h = d.hessian[b][real][:, :, real].reshape(3 * n, 3 * n)
        weight = np.repeat(1.0 / np.sqrt(atomic_masses[species[b, real]]), 3)
        w2 = np.linalg.eigvalsh(0.5 * (h + h.T) * weight[:, None] * weight[None, :])
        out[b, :3 * n] = np.sign(w2) * np.sqrt(np.abs(w2)) * THZ_PER_SQRT_EV_A2_AMU
    return out


def mechanically_stable(elastic: np.ndarray, *, tol: float = 0.0) -> np.ndarray:
    """Born stability: the symmetrised elastic matrix is positive definite.

    Args:
      elastic: [B, 6, 6] (or [6, 6]) GPa, as :func:`elastic_constants` returns (under
        load, the stress-strain coefficients of Wang et al. 1993, as required).
      tol: smallest eigenvalue (GPa) a stable crystal must exceed.

    Returns:
      [B] (or []) bool; false for NaN entries.
    """
    c = np.asarray(elastic, float)
    finite = np.all(np.isfinite(c), axis=(-2, -1))
    c = np.where(finite[..., None, None], c, 0.0)
    lowest = np.linalg.eigvalsh(0.5 * (c + np.swapaxes(c, -1, -2)))[..., 0]
    return finite & (lowest > tol)


def dynamically_stable(frequencies: np.ndarray, *, tol: float = FREQUENCY_TOL) -> np.ndarray:
    """Dynamical stability at Gamma: no imaginary frequency beyond ``tol``.

    Args:
      frequencies: [B, M] (or [M]) THz as :func:`phonons_gamma` returns (imaginary as
        negative, NaN padding ignored).
      tol: THz; a mode counts as imaginary when its frequency is below ``-tol``.

    Returns:
      [B] (or []) bool.
    """
    f = np.asarray(frequencies, float)
    return ~np.any(np.where(np.isfinite(f), f, 0.0) < -tol, axis=-1)


__all__ = ["elastic_constants", "phonons_gamma", "mechanically_stable", "dynamically_stable",
           "second_derivatives", "evaluate_second_derivatives", "SecondDerivatives", "voigt_strain",
           "THZ_PER_SQRT_EV_A2_AMU"]

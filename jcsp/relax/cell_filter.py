"""Cell degrees of freedom as a coordinate transform, with ASE ``FrechetCellFilter`` semantics.

A relaxer sees one array of "rows" per structure, ``dofs [R, 3]``: the first ``N`` rows
are atom positions *undeformed* by the deformation gradient ``F`` of the cell relative to
a reference cell, ``x = r F^-T``; when the cell relaxes, three more rows hold
``c log(F)`` with ``c`` the ``exp_cell_factor`` (the number of atoms, as in ASE). So

    F = expm(L),  L = dofs[N:] / c,  cell = ref_cell F^T,  r = x F^T,  frac = x ref_cell^-1.

The generalized forces on these rows (Tadmor et al., Phys. Rev. B 59, 235 (1999) for the
deformation gradient; the Frechet derivative of the matrix exponential as in ASE's
``FrechetCellFilter``, after C. Ortner's JuLIP.jl and the derivation at
github.com/lan496/lan496.github.io/blob/main/notes/cell_grad.pdf) are

    on x:  f F                         (f = -dE/dr, eV/Å)
    on L:  Dexp(L)^*[W F^-T] / c,      W = -V (sigma + p I)   (the virial under pressure p)

where ``Dexp(L)^*`` is the adjoint of the Frechet derivative of ``expm`` at ``L`` (the
vector-Jacobian product of ``expm``, ASE's ``sum(expm_frechet(L, E_mn) * W F^-T)``),
computed as a forward-mode derivative of the exponential (:func:`expm_adjoint`). ASE
does not symmetrise it and neither does jcsp, so the two filters give the same forces
(``L`` picks up a small antisymmetric part, a rotation that the energy does not feel).
The objective is the enthalpy ``H = E + p V``. With the cell fixed, or for clusters,
``R = N`` and ``x`` are plain positions.

All functions act on one structure (vmap them); ``pressure`` is in eV/Å³ and is an array,
so changing it never recompiles.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

#: Taylor coefficients 1/k! of :func:`expm` (degree 15; with |A|_1 <= 0.5 the truncation
#: error is below 1e-18 relative).
_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(16))
_THETA = 0.5
_MAX_SQUARINGS = 8


def det3(m: Array) -> Array:
    """Determinant of a [3, 3] matrix (closed form: cheap to compile and differentiate)."""
    return jnp.dot(m[0], jnp.cross(m[1], m[2]))


def inv3(m: Array) -> Array:
    """Inverse of a [3, 3] matrix by cofactors."""
    cof = jnp.stack([jnp.cross(m[1], m[2]), jnp.cross(m[2], m[0]), jnp.cross(m[0], m[1])])
    return cof.T / det3(m)


def expm(a: Array) -> Array:
    """Matrix exponential of a small square matrix ``[n, n]`` by scaling and squaring.

    ``exp(A) = T(A / 2^s)^(2^s)`` with ``T`` the degree-15 Taylor polynomial evaluated by
    Paterson-Stockmeyer (6 matrix products) and ``s`` the smallest integer with
    ``|A|_1 / 2^s <= 0.5`` (Moler & Van Loan, SIAM Rev. 45, 3 (2003), method 3). Agrees
    with ``scipy.linalg.expm`` to round-off. The squarings are a fixed, unrolled sequence
    (skipped with ``where``; no data-dependent loop, which costs a host sync per pass on
    GPUs); beyond ``|A|_1 = 0.5 * 2**_MAX_SQUARINGS`` (a stretch of e^128, far past any
    cell the driver keeps) the result is NaN rather than inaccurate.
    """
    norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(a), axis=-2)))
    s = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / _THETA)), 0, None)
    x = a * jnp.exp2(-jnp.minimum(s, _MAX_SQUARINGS)).astype(a.dtype)
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    x2 = x @ x
    x3 = x2 @ x
    x4 = x2 @ x2
    c = _TAYLOR
    blocks = [c[4 * j] * eye + c[4 * j + 1] * x + c[4 * j + 2] * x2 + c[4 * j + 3] * x3
              for j in range(4)]
    p = blocks[3]
    for j in (2, 1, 0):
        p = blocks[j] + x4 @ p
    for k in range(_MAX_SQUARINGS):
        p = jnp.where(k < s, p @ p, p)
    return jnp.where(s <= _MAX_SQUARINGS, p, jnp.nan)


def expm_adjoint(log_f: Array, g: Array) -> Array:
    """``Dexp(L)^*[G]``: the adjoint of the Frechet derivative of ``expm`` at ``L``.

    Equals ``sum_ij G_ij d expm(L)_ij / dL_mn`` (ASE's loop over ``expm_frechet``). Since
    ``Dexp(L)^* = Dexp(L^T)`` (Higham, Functions of Matrices (2008), ch. 3), it is the
    forward-mode derivative of :func:`expm` at ``L^T`` along ``G``: exact for the same
    polynomial, with 3x3 products only.

    Args:
      log_f: [3, 3] ``L``; g: [3, 3] cotangent ``G``.
    """
    return jax.jvp(expm, (log_f.T,), (g,))[1]


def cell_factor(n_atoms: Array, dtype) -> Array:
    """ASE's default ``exp_cell_factor``: the number of atoms (1 for an empty slot)."""
    return jnp.maximum(n_atoms, 1).astype(dtype)


def init_dofs(frac: Array, cell: Array, *, relax_cell: bool) -> Array:
    """[R, 3] starting DOFs: positions (Å) and, with the cell, ``log(F) = 0``.

    Args:
      frac: [N, 3] fractional coordinates; cell: [3, 3] rows are lattice vectors, Å.
      relax_cell: static, add the three cell rows.
    """
    positions = frac @ cell
    if not relax_cell:
        return positions
    return jnp.concatenate([positions, jnp.zeros((3, 3), positions.dtype)])


class Transform(NamedTuple):
    """The structure a DOF array stands for, plus what is needed to map forces back.

    Attributes:
      frac: [N, 3] fractional coordinates.
      cell: [3, 3] current cell, Å.
      deform: [3, 3] deformation gradient F (identity with a fixed cell).
      log_f: [3, 3] ``L = log(F)`` (zero with a fixed cell).
    """

    frac: Array
    cell: Array
    deform: Array
    log_f: Array


def apply(dofs: Array, ref_cell: Array, ref_inv: Array, n_atoms: Array, *,
          relax_cell: bool) -> Transform:
    """DOFs -> fractional coordinates and cell of the structure.

    Args:
      dofs: [R, 3] rows as described in the module docstring.
      ref_cell: [3, 3] reference cell (the starting cell), Å; ref_inv: its inverse.
      n_atoms: [] number of real atoms (the cell factor).
      relax_cell: static.
    """
    n = dofs.shape[0] - (3 if relax_cell else 0)
    x = dofs[:n]
    frac = x @ ref_inv
    if not relax_cell:
        eye = jnp.eye(3, dtype=dofs.dtype)
        return Transform(frac, ref_cell, eye, jnp.zeros_like(eye))
    log_f = dofs[n:] * (1.0 / cell_factor(n_atoms, dofs.dtype))
    deform = expm(log_f)
    return Transform(frac, ref_cell @ deform.T, deform, log_f)


def generalized_forces(t: Transform, forces: Array, stress: Array, pressure: Array,
                       n_atoms: Array, *, relax_cell: bool) -> Array:
    """[R, 3] forces on the DOF rows: minus the gradient of the enthalpy.

    Args:
      t: the :class:`Transform` the energy was evaluated at.
      forces: [N, 3] atomic forces, eV/Å.
      stress: [3, 3] stress, eV/Å³, ASE sign (positive = tensile).
      pressure: [] external pressure, eV/Å³.
      n_atoms: [] number of real atoms.
      relax_cell: static.
    """
    if not relax_cell:
        return forces
    volume = jnp.abs(det3(t.cell))
    eye = jnp.eye(3, dtype=forces.dtype)
    virial = -volume * (stress + pressure * eye)
    ucf = virial @ inv3(t.deform).T
    on_log = expm_adjoint(t.log_f, ucf)
    return jnp.concatenate([forces @ t.deform, on_log * (1.0 / cell_factor(n_atoms, forces.dtype))])


def enthalpy(energy: Array, cell: Array, pressure: Array, *, periodic: bool) -> Array:
    """H = E + p V in eV (``E`` for clusters, whose box has no physical volume)."""
    if not periodic:
        return energy
    return energy + pressure * jnp.abs(det3(cell))


def row_norm_max(rows: Array) -> Array:
    """[] largest Euclidean norm of the 3-vector rows of ``rows [R, 3]`` (ASE's fmax)."""
    return jnp.sqrt(jnp.max(jnp.sum(rows * rows, axis=-1)))

"""Differentiable relaxations: exact derivatives of relaxed structures by the implicit
function theorem (host-driven forward pass, custom VJP).

At a converged minimum the relaxed coordinates ``z*(theta)`` satisfy
``grad_z H(z*, theta) = 0``, with ``H = E + p V`` the enthalpy, so

    dz*/dtheta = -H_zz^-1 d(grad_z H)/dtheta

(Krantz & Parks, *The Implicit Function Theorem* (2002); as used for optimisation
layers by Blondel et al., *Efficient and Modular Implicit Differentiation*, NeurIPS
2022). :func:`relax_differentiable` wraps this in a ``jax.custom_vjp``:

- **forward** (host side, on concrete values): the batched relaxer :func:`jcsp.relax`
  (L-BFGS to ``fmax``) followed by a few Newton steps (conjugate gradients on
  Hessian-vector products) that bring the enthalpy gradient down to round-off; in the
  same batched solves, every structure that needs no further Newton step gets a
  curvature probe (conjugate gradients on a fixed pseudo-random right-hand side) that
  detects saddle points;
- **backward**: one batched conjugate-gradient solve ``H_zz v = dL/dz`` on
  Hessian-vector products (forward-over-reverse, ``jax.linearize`` of ``jax.grad``;
  Pearlmutter, Neural Comput. 6, 147 (1994)),
  then ``theta_bar = -(d grad_z H / d theta)^T v`` by one vector-Jacobian product. The
  optimiser's iterations are never differentiated.

The coordinates ``z`` are local to the relaxed structure: rows ``0..N-1`` are Cartesian
displacements ``u`` of the atoms (Å), and with a relaxing cell three more rows ``s``
give a symmetric strain ``eps = sym(s) / L`` with ``L = V^(1/3)`` (so every row is in
Å and the Hessian blocks have comparable scales). The structure they stand for is

    positions = (r* + u) (I + eps),   cell = cell* (I + eps)

(rows are vectors, as everywhere in jcsp). Symmetric strain leaves out rigid rotations;
the three uniform translations of the atoms, the remaining zero modes of a crystal, are
projected out of every vector the solver sees (as are the antisymmetric part of ``s``
and the padded atoms). Everything downstream of the relaxed positions and cell (energy,
enthalpy, volume, bond lengths, lattice constants, any user function of them) is
ordinary JAX code and differentiates through this rule.

A gradient is only meaningful at a strict local minimum. Each structure carries flags:
``converged`` (the relaxer converged and the polished enthalpy gradient is below
``fmax``), ``stable`` (conjugate gradients met no non-positive curvature) and ``valid``
(both). Asking for a gradient that involves an invalid structure raises
:class:`NotAMinimumError` (or, with ``on_invalid="nan"``, gives NaN with a warning);
it never returns a silent number.

Crystals (periodic in all three directions) and clusters (no periodicity) are supported;
for a cluster only the atoms relax, the three rigid rotations about its centre are
projected out as well, ``volume`` is NaN and ``enthalpy`` is the energy (its box has no
physical volume, as in :func:`jcsp.relax`). The forward pass runs on the host, so :func:`relax_differentiable` works under ``jax.grad``, ``jax.vjp``,
``jax.jacrev`` and ``jax.value_and_grad`` but not inside ``jax.jit`` or ``jax.vmap``.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import neighbors as nl
from ..capacity import Capacity
from ..graph import make_graph
from ..potentials.base import Potential
from ..structures.convert import to_atoms
from ..structures.population import Population
from ..units import ev_per_a3_to_gpa, gpa_to_ev_per_a3
from .driver import relax
from .lbfgs import LBFGSConfig

Array = jax.Array

#: Newton steps of the forward polish after the relaxer (each one conjugate-gradient solve).
NEWTON_STEPS = 6
#: The polish stops once every row of the enthalpy gradient is below this, eV/Å.
POLISH_TOL = 1e-11
#: Curvature (eV/Å²) at or below which a conjugate-gradient direction counts as
#: non-positive: the structure is not a strict minimum.
CURVATURE_TOL = 1e-8
#: A Newton step longer than this (Å, any row) means the relaxer did not end near a
#: minimum; the structure is flagged instead of moved.
MAX_NEWTON_STEP = 0.05


class NotAMinimumError(ValueError):
    """A gradient was asked of a structure that is not a converged strict minimum."""


class DifferentiableRelaxation(NamedTuple):
    """What :func:`relax_differentiable` returns for a population of B structures.

    Attributes:
      positions: [B, N, 3] relaxed Cartesian positions, Å (padded atoms: 0).
      cell: [B, 3, 3] relaxed cells, rows are lattice vectors, Å.
      frac: [B, N, 3] relaxed fractional coordinates.
      energy: [B] potential energy, eV.
      enthalpy: [B] ``E + p V``, eV (``E`` for clusters).
      volume: [B] cell volume, Å³ (NaN for clusters).
      converged: [B] bool, the relaxer converged and the polished gradient is below fmax.
      stable: [B] bool, no non-positive curvature was found (not a saddle point).
      valid: [B] bool, ``converged & stable``: gradients of this structure are exact.
      residual: [B] largest row of the enthalpy gradient after the polish, eV/Å.
      steps: [B] relaxer steps taken.
    """

    positions: Array
    cell: Array
    frac: Array
    energy: Array
    enthalpy: Array
    volume: Array
    converged: np.ndarray
    stable: np.ndarray
    valid: np.ndarray
    residual: np.ndarray
    steps: np.ndarray


class _Reference(NamedTuple):
    """Arrays of the batch at its current reference geometry (z = 0)."""

    positions: Array  # [B, N, 3]
    cell: Array  # [B, 3, 3]
    scale: Array  # [B] L = V^(1/3), Å
    species: Array  # [B, N]
    mask: Array  # [B, N]
    nbrs: nl.NeighborList  # [B, ...] built at the reference geometry


# --- the objective in local coordinates (pure functions; safe under jit and vmap) ------
def _geometry(z, pos0, cell0, scale, relax_cell: bool):
    """One structure's positions [N, 3] and cell [3, 3] at local coordinates z [R, 3]."""
    n = pos0.shape[0]
    pos = pos0 + z[:n]
    if not relax_cell:
        return pos, cell0
    eps = 0.5 * (z[n:] + z[n:].T) / scale
    deform = jnp.eye(3, dtype=z.dtype) + eps
    return pos @ deform, cell0 @ deform


def _energy(potential: Potential, params, pos, cell, species, mask, nbrs, pbc):
    """[] potential energy of one structure, eV."""
    e = potential.energies(params, make_graph(pos, cell, species, mask, nbrs, pbc))
    return jnp.sum(jnp.where(mask, e, 0.0))


def _volume(cell):
    return jnp.abs(jnp.dot(cell[0], jnp.cross(cell[1], cell[2])))


def _rotation_modes(positions, mask):
    """[B, 3, N, 3] orthonormal rigid-rotation modes of each cluster about its centre
    (a zero vector where a mode is degenerate, e.g. the axis of a linear molecule)."""
    m = mask[..., None].astype(positions.dtype)
    centre = jnp.sum(positions * m, axis=1, keepdims=True) / jnp.maximum(
        jnp.sum(m, axis=1, keepdims=True), 1)
    d = (positions - centre) * m
    size = jnp.sqrt(jnp.sum(d * d, axis=(1, 2)))  # [B]
    axes = jnp.eye(3, dtype=positions.dtype)
    modes = []
    for k in range(3):
        v = jnp.cross(axes[k][None, None, :], d)  # [B, N, 3]
        for q in modes:
            v = v - _dot(v, q)[:, None, None] * q
        norm = jnp.sqrt(_dot(v, v))
        keep = norm > 1e-8 * jnp.maximum(size, 1e-30)
        modes.append(jnp.where(keep[:, None, None], v / jnp.where(keep, norm, 1.0)[:, None, None],
                               0.0))
    return jnp.stack(modes, axis=1)


def _project(v, mask, relax_cell: bool, rotations=None):
    """Remove the zero modes from v [B, R, 3]: padded atoms, uniform translations of the
    real atoms, the antisymmetric (rotation) part of the strain rows and, for clusters,
    the rigid rotations ``rotations`` [B, 3, N, 3] (orthonormal)."""
    n = mask.shape[1]
    m = mask[..., None].astype(v.dtype)
    u = v[:, :n] * m
    mean = jnp.sum(u, axis=1, keepdims=True) / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1)
    u = (u - mean) * m
    if rotations is not None:
        u = u - jnp.einsum("bk,bkni->bni", jnp.einsum("bkni,bni->bk", rotations, u), rotations)
    if not relax_cell:
        return u
    s = v[:, n:]
    return jnp.concatenate([u, 0.5 * (s + jnp.swapaxes(s, 1, 2))], axis=1)


def _dot(a, b):
    return jnp.sum(a * b, axis=(1, 2))


class _Solve(NamedTuple):
    x: Array  # [B, R, 3]
    negative: Array  # [B] bool, non-positive curvature met
    iterations: Array  # [] int


def _cg(hvp, b, mask, relax_cell, tol, maxiter, rotations=None) -> _Solve:
    """Batched conjugate gradients for ``H x = b`` (Hestenes & Stiefel, J. Res. NBS 49,
    409 (1952)), each structure with its own step sizes and stopping test.

    A structure stops when its residual is below ``tol |b|`` or when a search direction
    has curvature ``p.Hp <= CURVATURE_TOL |p|^2`` (then ``negative`` is set: the matrix
    is not positive definite on the projected space).
    """
    b = _project(b, mask, relax_cell, rotations)
    b_norm = jnp.sqrt(_dot(b, b))
    x = jnp.zeros_like(b)
    rs = _dot(b, b)
    active = b_norm > 0
    negative = jnp.zeros_like(active)

    def cond(state):
        k, _, _, _, _, active, _ = state
        return (k < maxiter) & jnp.any(active)

    def body(state):
        k, x, r, p, rs, active, negative = state
        hp = _project(hvp(p), mask, relax_cell, rotations)
        php = _dot(p, hp)
        bad = active & (php <= CURVATURE_TOL * _dot(p, p))
        negative = negative | bad
        active = active & ~bad
        alpha = jnp.where(active, rs / jnp.where(active, php, 1.0), 0.0)[:, None, None]
        x = x + alpha * p
        r = r - alpha * hp
        rs_new = _dot(r, r)
        beta = jnp.where(active, rs_new / jnp.where(active, rs, 1.0), 0.0)[:, None, None]
        p = jnp.where(active[:, None, None], r + beta * p, p)
        active = active & (jnp.sqrt(rs_new) > tol * b_norm)
        return k + 1, x, r, p, jnp.where(active, rs_new, rs), active, negative

    state = (jnp.asarray(0), x, b, b, rs, active, negative)
    k, x, _, _, _, _, negative = jax.lax.while_loop(cond, body, state)
    return _Solve(x, negative, k)


def _row_norms(g, mask, relax_cell: bool):
    """[B] largest row norm of g [B, R, 3] over the real atoms and the strain rows."""
    rows = jnp.sqrt(jnp.sum(g * g, axis=-1))
    if relax_cell:
        mask = jnp.concatenate([mask, jnp.ones((mask.shape[0], 3), bool)], axis=1)
    return jnp.max(jnp.where(mask, rows, 0.0), axis=1)


def _geometry_batch(z, ref: _Reference, relax_cell: bool):
    """Positions [B, N, 3] and cells [B, 3, 3] at local coordinates z [B, R, 3]."""
    return jax.vmap(lambda z_b, p, c, s: _geometry(z_b, p, c, s, relax_cell))(
        z, ref.positions, ref.cell, ref.scale)


class _Pass(NamedTuple):
    """What one call of :func:`_implicit_pass` returns (batched over B structures)."""

    positions: Array  # [B, N, 3] after the Newton step (unchanged where not stepped)
    cell: Array  # [B, 3, 3]
    energy: Array  # [B] potential energy at the reference geometry, eV
    residual: Array  # [B] largest row of the enthalpy gradient there, eV/Å
    stepped: Array  # [B] bool, a Newton step was solved for
    step: Array  # [B] largest row of that step, Å
    negative: Array  # [B] bool, conjugate gradients met non-positive curvature
    asked: Array  # [B] bool, the cotangents involve this structure (backward pass)
    params_bar: object  # cotangent of the parameters (backward pass)
    pressure_bar: Array  # [B] cotangent of the pressures, per eV/Å³ (backward pass)


@functools.partial(jax.jit, static_argnames=("potential", "pbc", "relax_cell", "maxiter"))
def _implicit_pass(params, pressure, ref: _Reference, allow, previous, probe, cotangents,
                   backward, invalid, tol, *, potential, pbc, relax_cell, maxiter) -> _Pass:
    """One batched conjugate-gradient solve with the Hessian of the enthalpy at the
    reference geometry, for the forward polish or for the backward pass (one compiled
    function serves both, so each potential and shape compiles its second derivatives
    once).

    Forward (``backward`` false): structures with ``allow`` whose gradient is above
    :data:`POLISH_TOL` and below half of ``previous`` (still converging quadratically)
    take the Newton step ``H_zz dz = -g``; the others solve with ``probe`` as the
    right-hand side, which only serves to detect non-positive curvature.

    Backward (``backward`` true): ``cotangents`` (of positions [B, N, 3], cells
    [B, 3, 3] and energies [B]) are pulled back to ``b = dL/dz``, ``H_zz v = b`` is
    solved and ``-(d grad_z H / d(params, pressure))^T v`` (plus the explicit
    dependence of the energy on the parameters) is returned. Structures flagged
    ``invalid`` or meeting non-positive curvature give NaN where the cotangents
    involve them.
    """
    z = jnp.zeros(_z_shape(ref, relax_cell), ref.positions.dtype)

    def energies(z, params):
        def one(z_b, pos0, cell0, scale, species, mask, nbrs):
            pos, cell = _geometry(z_b, pos0, cell0, scale, relax_cell)
            return _energy(potential, params, pos, cell, species, mask, nbrs, pbc)
        return jax.vmap(one)(z, ref.positions, ref.cell, ref.scale, ref.species, ref.mask,
                             ref.nbrs)

    def enthalpy(z, params, pressure):
        if not any(pbc):  # a cluster's box is no volume: H = E
            return jnp.sum(energies(z, params))
        volumes = jax.vmap(_volume)(_geometry_batch(z, ref, relax_cell)[1])
        return jnp.sum(energies(z, params)) + jnp.sum(pressure * volumes)

    def grad(z, params, pressure):
        return jax.grad(enthalpy)(z, params, pressure)

    rotations = None if any(pbc) else _rotation_modes(ref.positions, ref.mask)
    g, hvp = jax.linearize(lambda z: grad(z, params, pressure), z)
    g = _project(g, ref.mask, relax_cell, rotations)
    residual = _row_norms(g, ref.mask, relax_cell)
    ct_positions, ct_cell, ct_energy = cotangents
    energy, pull_energy = jax.vjp(energies, z, params)
    z_energy, params_energy = pull_energy(ct_energy)
    _, pull_geometry = jax.vjp(lambda z: _geometry_batch(z, ref, relax_cell), z)
    (z_geometry,) = pull_geometry((ct_positions, ct_cell))
    b_backward = _project(z_geometry + z_energy, ref.mask, relax_cell, rotations)
    asked = backward & jnp.any(b_backward != 0, axis=(1, 2))
    todo = ~backward & allow & (residual > POLISH_TOL) & (residual < 0.5 * previous)
    b = jnp.where(backward, b_backward, jnp.where(todo[:, None, None], -g, probe))
    solved = _cg(hvp, b, ref.mask, relax_cell, tol, maxiter, rotations)
    v = jnp.where(((invalid | solved.negative) & asked)[:, None, None], jnp.nan, solved.x)
    _, pull = jax.vjp(lambda params, pressure: grad(z, params, pressure), params, pressure)
    params_bar, pressure_bar = pull(-v)
    params_bar = jax.tree_util.tree_map(jnp.add, params_bar, params_energy)
    step = _row_norms(solved.x, ref.mask, relax_cell)
    move = todo & ~solved.negative & (step <= MAX_NEWTON_STEP)
    positions, cell = _geometry_batch(jnp.where(move[:, None, None], solved.x, 0.0), ref,
                                      relax_cell)
    return _Pass(positions, cell, energy, residual, todo, step, solved.negative, asked,
                 params_bar, pressure_bar)


@functools.partial(jax.jit, static_argnames=("spec", "pbc"))
def _build_lists(spec, frac, cell, mask, *, pbc):
    return jax.vmap(lambda f, c, m: nl.build(spec, f, c, m, pbc))(frac, cell, mask)


def _z_shape(ref: _Reference, relax_cell: bool):
    b, n, _ = ref.positions.shape
    return (b, n + (3 if relax_cell else 0), 3)


# --- host side ------------------------------------------------------------------------
_CAPACITIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _capacity(potential: Potential, pbc, n_max: int) -> Capacity:
    """One capacity (lists without skin, the potential's per-cell sizes) per potential
    and atom count, kept across calls so repeated relaxations reuse compiled code."""
    try:
        table = _CAPACITIES.setdefault(potential, {})
    except TypeError:
        table = {}
    if n_max not in table:
        table[n_max] = Capacity(potential, pbc, skin=0.0, headroom=1.2)
    return table[n_max]


def _reference(capacity: Capacity, positions, cell, species, mask,
               pbc) -> tuple[_Reference, Potential]:
    """Neighbor lists and sized potential at a geometry (host side; grows the capacity
    and rebuilds on overflow)."""
    positions = np.asarray(positions)
    cell = np.asarray(cell)
    frac = np.einsum("bni,bij->bnj", positions, np.linalg.inv(cell))
    pop = Population(frac=jnp.asarray(frac), cell=jnp.asarray(cell), species=jnp.asarray(species),
                     mask=jnp.asarray(mask), pbc=pbc)
    capacity.fit(pop)
    while True:
        nbrs = _build_lists(capacity.spec, pop.frac, pop.cell, pop.mask, pbc=pbc)
        if not bool(jnp.any(nbrs.overflow)):
            break
        capacity.grow(int(jnp.max(nbrs.count)), None, cell)
    scale = np.cbrt(np.abs(np.linalg.det(cell)))
    ref = _Reference(positions=jnp.asarray(positions), cell=jnp.asarray(cell),
                     scale=jnp.asarray(scale), species=pop.species, mask=pop.mask, nbrs=nbrs)
    return ref, capacity.sized


def _maxiter(n_max: int, relax_cell: bool) -> int:
    return 4 * 3 * (n_max + (3 if relax_cell else 0)) + 20


def _polish(capacity, params, pressure, positions, cell, species, mask, ok, pbc, relax_cell,
            cg_tol):
    """Newton steps from the relaxer's result (host loop); returns the final reference,
    the sized potential, energy [B], residual [B], stable [B], ok [B] (Newton steps
    stayed short) and the probe vector.

    A structure stops once its gradient is below :data:`POLISH_TOL` or stops halving
    (the round-off floor); meanwhile, and at the end, a curvature probe (conjugate
    gradients on a fixed pseudo-random right-hand side) checks that it is a strict
    minimum.
    """
    maxiter = _maxiter(mask.shape[1], relax_cell)
    stable = np.ones(len(ok), bool)
    ok = ok.copy()
    previous = np.full(len(ok), np.inf)
    probe = None
    for it in range(NEWTON_STEPS + 1):
        ref, sized = _reference(capacity, positions, cell, species, mask, pbc)
        if probe is None:
            probe = jax.random.normal(jax.random.key(0), _z_shape(ref, relax_cell),
                                      ref.positions.dtype)
            none = (jnp.zeros_like(ref.positions), jnp.zeros_like(ref.cell),
                    jnp.zeros(len(ok), ref.positions.dtype))
        allow = ok & stable & (it < NEWTON_STEPS)
        step = _implicit_pass(params, pressure, ref, jnp.asarray(allow), jnp.asarray(previous),
                              probe, none, jnp.asarray(False), jnp.zeros(len(ok), bool), cg_tol,
                              potential=sized, pbc=pbc, relax_cell=relax_cell, maxiter=maxiter)
        stepped = np.asarray(step.stepped)
        residual = np.asarray(step.residual)
        stable &= ~np.asarray(step.negative)
        ok &= ~(stepped & (np.asarray(step.step) > MAX_NEWTON_STEP))
        if not stepped.any():
            break
        previous = np.where(stepped, residual, 0.0)
        positions, cell = np.asarray(step.positions), np.asarray(step.cell)
    return ref, sized, np.asarray(step.energy), residual, stable, ok, probe


def _concrete(tree, what):
    leaves = jax.tree_util.tree_leaves(tree)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        raise TypeError(
            f"relax_differentiable got a traced {what}: its forward pass is a host-driven "
            "relaxation, so it works under jax.grad, jax.vjp and jax.jacrev but not inside "
            "jax.jit or jax.vmap; call it outside those transformations")
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), tree)


def relax_differentiable(pop: Population, potential: Potential, params=None, pressure=0.0,
                         fmax: float = 1e-6, relax_cell: bool = True, *,
                         max_steps: int = 5000, cg_tol: float = 1e-12,
                         on_invalid: Literal["raise", "nan"] = "raise"
                         ) -> DifferentiableRelaxation:
    """Relax a population and return the relaxed structures as differentiable functions
    of the potential's parameters and the pressure (host side).

    The forward pass runs :func:`jcsp.relax` (L-BFGS) and polishes its result with
    Newton steps; the backward pass solves one linear system per structure by conjugate
    gradients on Hessian-vector products (see the module docstring). Gradients of any
    function of the outputs with respect to ``params`` (any potential's pytree,
    classical or :mod:`jcsp.ml`) and ``pressure`` come out exact up to the solver
    tolerance; the enthalpy obeys ``dH/dp = V`` to round-off.

    Args:
      pop: a padded population of crystals or clusters (``from_atoms``); no empty slots.
        Its structures are where the relaxations start; they are not differentiable
        inputs (a relaxed minimum does not depend on its starting point nearby).
      potential: a :class:`jcsp.potentials.Potential`.
      params: the potential's parameter pytree (default ``potential.params``); the
        argument to differentiate with respect to.
      pressure: external pressure in GPa, a scalar or one per structure [B] (as in
        :func:`jcsp.relax`); so ``d enthalpy / d pressure`` is the volume in eV/GPa,
        ``V / 160.2176621`` with V in Å³.
      fmax: force criterion of the relaxer, eV/Å (its generalized forces, as in
        :func:`jcsp.relax`); the Newton polish then goes to round-off.
      relax_cell: relax the cell too (strain degrees of freedom and the ``p V`` term).
      max_steps: relaxer steps allowed per structure.
      cg_tol: relative residual at which conjugate gradients stop.
      on_invalid: what a gradient involving a structure that is not a converged strict
        minimum gives: ``"raise"`` (:class:`NotAMinimumError`) or ``"nan"`` (NaN, with
        a warning).

    Returns:
      A :class:`DifferentiableRelaxation`; its array fields are JAX arrays that carry
      gradients, its flags are NumPy arrays.

    Raises:
      ValueError: partly periodic structures, empty slots, or bad options.
      TypeError: called inside ``jax.jit`` or ``jax.vmap``, or with a traced population.

    Example:
      >>> pop = from_atoms([bulk("Si", "diamond", a=5.4)])
      >>> sw = jcsp.io.load_potential("sw-si")
      >>> dv = jax.grad(lambda p: jcsp.relax_differentiable(pop, sw, params=p).volume.sum())(
      ...     sw.params)
    """
    if not isinstance(pop, Population):
        raise ValueError("pop must be a jcsp Population (jcsp.structures.convert.from_atoms)")
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(pop)):
        raise TypeError("the starting population is not a differentiable input of "
                        "relax_differentiable (a relaxed minimum does not depend on its "
                        "starting point nearby); differentiate with respect to params or "
                        "pressure")
    if any(pop.pbc) and not all(pop.pbc):
        raise ValueError("relax_differentiable takes crystals (pbc all true) or clusters "
                         "(pbc all false), not partly periodic structures")
    mask = np.asarray(pop.mask)
    if not mask.any(axis=1).all():
        raise ValueError("the population has empty slots; build it from the structures "
                         "alone (from_atoms) so every slot holds one")
    if on_invalid not in ("raise", "nan"):
        raise ValueError(f"on_invalid must be 'raise' or 'nan', got {on_invalid!r}")
    if not (isinstance(fmax, (int, float)) and np.isfinite(fmax) and fmax > 0):
        raise ValueError(f"fmax must be a positive number (eV/Å), got {fmax!r}")
    pbc = tuple(bool(x) for x in pop.pbc)
    relax_cell = bool(relax_cell) and all(pbc)
    params = potential.params if params is None else params
    batch = pop.batch_size
    p_gpa = jnp.broadcast_to(jnp.asarray(pressure, dtype=jnp.float64), (batch,))
    p_ev = gpa_to_ev_per_a3(p_gpa)
    species = np.asarray(pop.species)
    capacity = _capacity(potential, pbc, pop.n_max)
    state: dict = {}

    def forward(params, p_ev):
        params_c = _concrete(params, "params")
        p_c = np.asarray(_concrete(p_ev, "pressure"))
        atoms = to_atoms(pop)
        out = relax(atoms, potential, fmax=fmax, pressure=ev_per_a3_to_gpa(p_c),
                    relax_cell=relax_cell, optimizer=LBFGSConfig(), max_steps=max_steps,
                    params=params_c)
        positions = np.zeros(pop.frac.shape)
        cells = np.zeros((batch, 3, 3))
        ok = np.zeros(batch, bool)
        steps = np.zeros(batch, int)
        for b, a in enumerate(out):
            n = len(a)
            finite = np.isfinite(a.positions).all() and np.isfinite(a.cell[:]).all()
            src = a if finite else atoms[b]
            if all(pbc):
                positions[b, :n] = src.positions
                cells[b] = src.cell[:]
            else:  # a cluster sits in the middle of its population box
                cells[b] = np.asarray(pop.cell[b])
                positions[b, :n] = (src.positions - src.positions.mean(axis=0)
                                    + np.diag(cells[b]) / 2)
            ok[b] = finite and bool(a.info.get("converged")) and not a.info.get("failed")
            steps[b] = a.info.get("steps", 0)
        ref, sized, energy, residual, stable, ok, probe = _polish(
            capacity, params_c, jnp.asarray(p_c), positions, cells, species, mask, ok, pbc,
            relax_cell, cg_tol)
        converged = ok & (residual <= fmax)
        state.update(ref=ref, sized=sized, converged=converged, stable=stable,
                     residual=residual, steps=steps, probe=probe)
        return (ref.positions, ref.cell, jnp.asarray(energy)), (params_c, jnp.asarray(p_c))

    @jax.custom_vjp
    def relaxed(params, p_ev):
        return forward(params, p_ev)[0]

    def backward(res, cts):
        params_c, p_c = res
        invalid = ~(state["converged"] & state["stable"])
        if isinstance(cts[0], jax.core.Tracer) and invalid.any():
            _refuse(np.flatnonzero(invalid), on_invalid, batched=True)
        out = _implicit_pass(params_c, p_c, state["ref"], jnp.zeros(batch, bool),
                             jnp.zeros(batch), state["probe"], cts, jnp.asarray(True),
                             jnp.asarray(invalid), cg_tol, potential=state["sized"], pbc=pbc,
                             relax_cell=relax_cell, maxiter=_maxiter(pop.n_max, relax_cell))
        if not isinstance(out.asked, jax.core.Tracer):
            which = np.flatnonzero((invalid | np.asarray(out.negative)) & np.asarray(out.asked))
            if which.size:
                _refuse(which, on_invalid, batched=False)
        return out.params_bar, out.pressure_bar

    relaxed.defvjp(lambda params, p_ev: forward(params, p_ev), backward)
    positions, cell, energy = relaxed(params, p_ev)
    frac = jnp.einsum("bni,bij->bnj", positions, jnp.linalg.inv(cell))
    if all(pbc):
        volume = jax.vmap(_volume)(cell)
        enthalpy = energy + p_ev * volume
    else:
        volume, enthalpy = jnp.full(batch, jnp.nan), energy
    converged, stable = state["converged"], state["stable"]
    return DifferentiableRelaxation(
        positions=positions, cell=cell, frac=frac, energy=energy, enthalpy=enthalpy,
        volume=volume, converged=converged, stable=stable, valid=converged & stable,
        residual=state["residual"], steps=state["steps"])


def _refuse(which, on_invalid, *, batched: bool) -> None:
    """Raise (or warn about the NaN given) for gradients through non-minima."""
    message = (f"structures {which.tolist()} are not converged strict minima (see "
               "out.converged / out.stable), so a gradient through them is not meaningful; "
               "relax them further (smaller fmax, more max_steps) or move them off the saddle")
    if batched:
        message += " (batched cotangents, e.g. jax.jacrev: every structure counts as asked)"
    if on_invalid == "raise":
        raise NotAMinimumError(message)
    warnings.warn(message + "; their contributions are NaN", RuntimeWarning, stacklevel=3)


__all__ = ["DifferentiableRelaxation", "NotAMinimumError", "relax_differentiable"]

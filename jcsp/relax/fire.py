"""FIRE, the fast inertial relaxation engine, as pure functions over one structure.

Bitzek, Koskinen, Gähler, Moseler, Gumbsch, Phys. Rev. Lett. 97, 170201 (2006), in the
form of ASE's ``ase.optimize.FIRE`` (same defaults, same update order), so a relaxation
here follows ASE's step by step up to round-off:

1. on every step but the first, with ``P = f . v``: if ``P > 0`` mix
   ``v <- (1 - a) v + a |v| f / |f|`` and, after more than ``n_min`` such steps in a row,
   ``dt <- min(finc dt, dtmax)``, ``a <- fa a``; otherwise ``v <- 0``, ``a <- astart``,
   ``dt <- fdec dt`` and restart the count;
2. ``v <- v + dt f``, ``dr = dt v``, scaled down so that ``|dr| <= maxstep`` where the
   norm runs over *all* DOFs of the structure (atoms and cell rows together), as ASE's.

``dt``, ``a`` and the step counter are per structure: vmap ``init`` and ``step`` over a
batch. Forces ``f`` are minus the gradient of the objective (for cells, the generalized
forces of :mod:`jcsp.relax.cell_filter`).

Example:
  >>> opt = fire(FireConfig())
  >>> state = opt.init(x)                    # x: [R, 3]
  >>> x, state = opt.step(state, x, f, h, True)   # f: [R, 3] forces at x, h: objective
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ..settings import Settings, setting

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FireConfig(Settings):
    """FIRE hyperparameters (ASE's defaults; lengths in Å, time in ASE units).

    Attributes:
      dt: initial time step.
      maxstep: largest step length over all DOFs of a structure, Å.
      dtmax: largest time step.
      n_min: steps with ``P > 0`` before ``dt`` may grow (ASE's ``Nmin``).
      finc, fdec: factors that grow and shrink ``dt``.
      astart: mixing parameter after a restart; a0: its first value (ASE's ``a``).
      fa: factor that shrinks the mixing parameter.
    """

    dt: float = setting(0.1, gt=0)
    maxstep: float = setting(0.2, gt=0)
    dtmax: float = setting(1.0, gt=0)
    n_min: int = setting(5, kind=int, ge=0)
    finc: float = setting(1.1, gt=0)
    fdec: float = setting(0.5, gt=0)
    astart: float = setting(0.1, gt=0)
    a0: float = setting(0.1, ge=0)
    fa: float = setting(0.99, gt=0)


@struct.dataclass
class FireState:
    """Per-structure FIRE state.

    Attributes:
      velocity: [R, 3] per row.
      dt: [] time step; a: [] mixing parameter.
      n_pos: [] int32 steps since the last restart (ASE's ``Nsteps``).
      started: [] bool, false before the first step (ASE's ``vel is None``).
    """

    velocity: Array
    dt: Array
    a: Array
    n_pos: Array
    started: Array


class Optimizer(NamedTuple):
    """A relaxer over one structure's DOF rows ``x [R, 3]`` (vmap it over a batch).

    ``init(x) -> state``; ``step(state, x, forces, value, active) -> (x, state)`` with
    ``forces [R, 3]`` minus the gradient of the objective ``value []`` at ``x``. Where
    ``active`` is false the step returns ``x`` and ``state`` unchanged, bit for bit.
    """

    init: Callable
    step: Callable


def fire(config: FireConfig = FireConfig()) -> Optimizer:
    """FIRE as pure ``init`` and ``step`` functions (safe under jit, vmap, while_loop)."""
    c = config

    def init(x: Array) -> FireState:
        dtype = x.dtype
        return FireState(velocity=jnp.zeros_like(x), dt=jnp.asarray(c.dt, dtype),
                         a=jnp.asarray(c.a0, dtype), n_pos=jnp.int32(0),
                         started=jnp.bool_(False))

    def step(state: FireState, x: Array, forces: Array, value: Array, active: Array):
        """One FIRE step from ``x`` [R, 3] with ``forces`` [R, 3]; ``value`` is unused."""
        del value
        v = state.velocity
        vf = jnp.vdot(forces, v)
        f2 = jnp.vdot(forces, forces)
        v2 = jnp.vdot(v, v)
        mix = state.started & (vf > 0.0)
        restart = state.started & ~(vf > 0.0)
        fnorm = jnp.sqrt(jnp.where(f2 > 0.0, f2, 1.0))
        mixed = (1.0 - state.a) * v + state.a * forces / fnorm * jnp.sqrt(v2)
        grow = mix & (state.n_pos > c.n_min)
        dt = jnp.where(grow, jnp.minimum(state.dt * c.finc, c.dtmax),
                       jnp.where(restart, state.dt * c.fdec, state.dt))
        a = jnp.where(grow, state.a * c.fa, jnp.where(restart, c.astart, state.a))
        n_pos = jnp.where(mix, state.n_pos + 1, jnp.where(restart, 0, state.n_pos))
        v = jnp.where(mix, mixed, jnp.where(restart, jnp.zeros_like(v), v))
        v = v + dt * forces
        dr = dt * v
        norm = jnp.sqrt(jnp.vdot(dr, dr))
        dr = jnp.where(norm > c.maxstep, dr * (c.maxstep / jnp.where(norm > 0, norm, 1.0)), dr)
        new = FireState(velocity=v, dt=dt.astype(x.dtype), a=a.astype(x.dtype),
                        n_pos=n_pos.astype(jnp.int32), started=jnp.bool_(True))
        keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
        return keep(x + dr, x), jax.tree_util.tree_map(keep, new, state)

    return Optimizer(init=init, step=step)

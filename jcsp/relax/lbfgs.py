"""L-BFGS with an enthalpy safeguard, as pure functions over one structure.

The quasi-Newton step is ASE's ``ase.optimize.LBFGS`` (Nocedal, Math. Comp. 35, 773
(1980); Liu & Nocedal, Math. Prog. 45, 503 (1989)): the two-loop recursion over the last
``memory`` pairs ``s = x_k - x_{k-1}``, ``y = g_k - g_{k-1}`` with the fixed initial
inverse Hessian ``1/alpha`` (``alpha = 70`` eV/Å², ASE's default), and the step scaled so
that its longest row (atom or cell row) is at most ``maxstep``, then times ``damping``.

ASE takes every step blindly. Here a step after which the objective (the enthalpy) rose
by more than round-off is rejected: the next step starts again from the last accepted
point with its stored forces, the memory is cleared and the step length is capped at
``shrink`` times the rejected one (the cap grows back by ``1/shrink`` per accepted step,
up to ``maxstep``). Pairs with non-positive curvature ``s . y <= 0`` are not stored, and a
direction that is not downhill falls back to steepest descent. Accept/reject decisions
span iterations, so every step costs one evaluation and all shapes stay fixed.

The memory is a ring buffer ``[memory, R, 3]`` written one row per step, so a step costs
``O(k R)`` for the ``k`` pairs stored, not a copy of the whole buffer.

Example:
  >>> opt = lbfgs(LBFGSConfig(memory=20))
  >>> state = opt.init(x)
  >>> x, state = opt.step(state, x, f, h, True)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from ..settings import Settings, setting
from .cell_filter import row_norm_max
from .fire import Optimizer

Array = jax.Array

#: Pairs per unrolled block of the two-loop recursion.
_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class LBFGSConfig(Settings):
    """L-BFGS hyperparameters (ASE's defaults where ASE has them).

    Attributes:
      memory: number of (s, y) pairs kept (static: it sets the state's shape).
      maxstep: largest step of any row, Å.
      alpha: initial Hessian guess, eV/Å² (inverse Hessian ``1/alpha``).
      damping: factor on every step.
      shrink: step-cap factor after a rejected step, in (0, 1).
      rise_tol: an objective rise counts when above ``rise_tol * eps * (|H| + 1)``, with
        ``eps`` the machine epsilon of the dtype (round-off is not a rise).
    """

    memory: int = setting(100, kind=int, ge=1)
    maxstep: float = setting(0.2, gt=0, le=1.0)
    alpha: float = setting(70.0, gt=0)
    damping: float = setting(1.0, gt=0)
    shrink: float = setting(0.5, gt=0, lt=1)
    rise_tol: float = setting(1000.0, gt=0)


@struct.dataclass
class LBFGSState:
    """Per-structure L-BFGS state.

    Attributes:
      s, y: [M, R, 3] ring buffers of position and gradient differences.
      rho: [M] 1 / (s . y) of each stored pair.
      head: [] int32 slot the next pair goes to; count: [] int32 pairs stored (<= M).
      x0: [R, 3] last accepted point; f0: [R, 3] forces there; h0: [] objective there.
      cap: [] current step cap, Å; last: [] longest row of the last step, Å.
      started: [] bool, false before the first step.
    """

    s: Array
    y: Array
    rho: Array
    head: Array
    count: Array
    x0: Array
    f0: Array
    h0: Array
    cap: Array
    last: Array
    started: Array


def lbfgs(config: LBFGSConfig = LBFGSConfig()) -> Optimizer:
    """L-BFGS as pure ``init`` and ``step`` functions (safe under jit, vmap, while_loop)."""
    c = config
    m = c.memory

    def init(x: Array) -> LBFGSState:
        dtype = x.dtype
        zero = jnp.zeros((), dtype)
        return LBFGSState(
            s=jnp.zeros((m,) + x.shape, dtype), y=jnp.zeros((m,) + x.shape, dtype),
            rho=jnp.zeros((m,), dtype), head=jnp.int32(0), count=jnp.int32(0),
            x0=x, f0=jnp.zeros_like(x), h0=zero, cap=jnp.asarray(c.maxstep, dtype),
            last=zero, started=jnp.bool_(False))

    def direction(s, y, rho, head, count, forces):
        """``-H g`` by the two-loop recursion over the ``count`` newest pairs, in
        unrolled blocks of ``_BLOCK`` pairs (a data-dependent loop costs a host sync
        per pass on GPUs); pairs past ``count`` are skipped with ``where``."""
        blocks = (count + _BLOCK - 1) // _BLOCK

        def newest_first(b, carry):
            q, alphas = carry
            for u in range(_BLOCK):
                j = b * _BLOCK + u  # j = 0 is the newest pair
                i = jnp.mod(head - 1 - j, m)
                a = rho[i] * jnp.vdot(s[i], q)
                keep = j < count
                q = jnp.where(keep, q - a * y[i], q)
                alphas = alphas.at[jnp.minimum(j, m - 1)].set(
                    jnp.where(keep, a, alphas[jnp.minimum(j, m - 1)]))
            return q, alphas

        q, alphas = jax.lax.fori_loop(0, blocks, newest_first,
                                      (-forces, jnp.zeros((m,), forces.dtype)))
        z = q / c.alpha

        def oldest_first(b, z):
            for u in range(_BLOCK):
                j = blocks * _BLOCK - 1 - (b * _BLOCK + u)
                i = jnp.mod(head - 1 - j, m)
                jj = jnp.clip(j, 0, m - 1)
                b_ = rho[i] * jnp.vdot(y[i], z)
                z = jnp.where(j < count, z + s[i] * (alphas[jj] - b_), z)
            return z

        z = jax.lax.fori_loop(0, blocks, oldest_first, z)
        return -z

    def step(state: LBFGSState, x: Array, forces: Array, value: Array, active: Array):
        """One step from ``x [R, 3]`` with ``forces [R, 3]`` and objective ``value``."""
        dtype = x.dtype
        eps = jnp.finfo(dtype).eps
        started = state.started
        tol = c.rise_tol * eps * (jnp.abs(state.h0) + 1.0)
        reject = started & (value > state.h0 + tol)
        xb = jnp.where(reject, state.x0, x)
        fb = jnp.where(reject, state.f0, forces)
        hb = jnp.where(reject, state.h0, value)

        s_new = x - state.x0
        y_new = state.f0 - forces
        sy = jnp.vdot(s_new, y_new)
        push = active & started & ~reject & (sy > 0.0)
        head = state.head
        s = state.s.at[head].set(jnp.where(push, s_new, state.s[head]))
        y = state.y.at[head].set(jnp.where(push, y_new, state.y[head]))
        rho = state.rho.at[head].set(
            jnp.where(push, 1.0 / jnp.where(sy > 0.0, sy, 1.0), state.rho[head]))
        count = jnp.where(reject, 0, jnp.where(push, jnp.minimum(state.count + 1, m),
                                               state.count))
        head = jnp.where(push, jnp.mod(head + 1, m), head)

        p = direction(s, y, rho, head, count, fb)
        downhill = jnp.vdot(p, fb) > 0.0
        p = jnp.where(downhill, p, fb / c.alpha)
        count = jnp.where(downhill, count, 0)

        cap = jnp.where(reject, c.shrink * state.last,
                        jnp.where(started, jnp.minimum(state.cap / c.shrink, c.maxstep),
                                  state.cap))
        longest = row_norm_max(p)
        p = jnp.where(longest >= cap, p * (cap / jnp.where(longest > 0, longest, 1.0)), p)
        dr = p * c.damping
        new = LBFGSState(s=s, y=y, rho=rho, head=head.astype(jnp.int32),
                         count=count.astype(jnp.int32), x0=xb, f0=fb, h0=hb.astype(dtype),
                         cap=cap.astype(dtype), last=row_norm_max(dr).astype(dtype),
                         started=jnp.bool_(True))
        keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
        small = {k: keep(getattr(new, k), getattr(state, k))
                 for k in ("head", "count", "x0", "f0", "h0", "cap", "last", "started")}
        return keep(xb + dr, x), new.replace(**small)

    return Optimizer(init=init, step=step)

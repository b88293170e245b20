"""Reverse diffusion: DiffCSP's predictor-corrector sampler as one jitted scan.

From ``L_T ~ N(0, I)`` (Å) and ``F_T ~ U[0, 1)^{N x 3}``, every step ``t -> s`` (``s < t``,
consecutive entries of a decreasing list of steps ending at 0; all of 1..T by default)
does, for a whole batch of crystals at once:

1. corrector (Langevin on the coordinates, Song et al. 2021, Alg. 5 with DiffCSP's step
   ``gamma = step_lr (sigma_t / sigma_1)^2``): ``F <- F + gamma score + sqrt(2 gamma) z``;
2. predictor on the coordinates (the reverse variance-exploding SDE between ``sigma_t``
   and ``sigma_s``): ``F <- F + (sigma_t^2 - sigma_s^2) score +
   sqrt(sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2) z``;
3. the lattice's DDPM posterior ``q(L_s | L_t, L0_hat)`` (Ho et al. 2020, eqs. 6-7) with
   ``L0_hat = (L_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` clipped to
   ``L0_CLIP`` lattice lengths: mean ``sqrt(abar_s) beta / (1 - abar_t) L0_hat +
   sqrt(alpha) (1 - abar_s) / (1 - abar_t) L_t``, variance ``beta (1 - abar_s) /
   (1 - abar_t)``, ``alpha = abar_t / abar_s = 1 - beta`` (unclipped and with
   ``s = t - 1``, DiffCSP's ``c0 (L_t - c1 eps) + sigma_t z``),

where ``score = -eps_F sqrt(lambda_t)`` undoes the training target's normalisation. No
noise is added on the last step. With fewer steps than T the same formulas hold between
the chosen noise levels (the sampler is then a coarser discretisation of the same
reverse process).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .denoiser import DenoiserConfig, apply
from .diffusion import Schedule

#: Bound on the entries of the predicted clean lattice, in units of the training set's
#: mean lattice length. Near t = T the cosine schedule's betas reach 0.9999, where the
#: step divides the prediction error of the noise by sqrt(abar_t / abar_s) (1/100 for
#: consecutive steps, less for coarser ones) and one poor prediction sends the lattice
#: to thousands of Å; clipping the clean-lattice estimate (as DDPM clips images to
#: [-1, 1]) keeps the chain in range and changes nothing once the network is accurate.
L0_CLIP = 5.0

#: DiffCSP's corrector step for Perov-5 (their scripts/eval_utils.py, ``recommand_step_lr``).
STEP_LR = 5e-7


def step_sequence(schedule: Schedule, n_steps: int | None) -> np.ndarray:
    """Decreasing noise levels ``t_0 = T > ... > t_{n-1} >= 1`` followed by 0."""
    total = schedule.steps
    n = total if n_steps is None else int(n_steps)
    if not 1 <= n <= total:
        raise ValueError(f"sampling steps must lie in 1..{total}, got {n_steps}")
    ts = np.unique(np.round(np.linspace(1, total, n)).astype(int))[::-1]
    return np.concatenate([ts, [0]])


@functools.lru_cache(maxsize=16)
def make_sampler(config: DenoiserConfig, schedule: Schedule, n_steps: int | None,
                 step_lr: float, corrector: bool):
    """Jitted ``sample(params, species [B, N], mask [B, N], key) -> (lattice [B, 3, 3],
    frac [B, N, 3], energy [B])``; the energy is the network's energy head on the final
    crystal (t = 1/T), for ranking."""
    seq = step_sequence(schedule, n_steps)
    t_now = jnp.asarray(seq[:-1])
    t_next = jnp.asarray(seq[1:])
    total = schedule.steps
    clip_l0 = L0_CLIP * config.length_scale

    def sample(params, species, mask, key):
        dtype = jax.tree.leaves(params)[0].dtype
        abar = jnp.asarray(schedule.alpha_bar, dtype)
        sigma = jnp.asarray(schedule.sigma, dtype)
        scale = jnp.asarray(schedule.score_scale, dtype)
        b, n = species.shape
        k_l, k_f, key = jax.random.split(key, 3)
        lattice = jax.random.normal(k_l, (b, 3, 3), dtype)
        frac = jax.random.uniform(k_f, (b, n, 3), dtype)
        maskf = mask[..., None].astype(dtype)

        def net(frac, lattice, t):
            tt = jnp.full((b,), t / total, dtype)
            return apply(config, params, species, frac, lattice, mask, tt)

        def body(carry, ts):
            frac, lattice, key = carry
            t, s = ts
            key, k1, k2, k3 = jax.random.split(key, 4)
            last = s == 0
            sig_t, sig_s = sigma[t], sigma[s]
            lam = scale[t]
            if corrector:
                _, eps_f, _ = net(frac, lattice, t)
                gamma = step_lr * (sig_t / sigma[1]) ** 2
                z = jnp.where(last, 0.0, jax.random.normal(k1, frac.shape, dtype))
                frac = jnp.mod(frac - gamma * lam * eps_f + jnp.sqrt(2 * gamma) * z * maskf, 1.0)
            eps_l, eps_f, _ = net(frac, lattice, t)
            var = sig_t ** 2 - sig_s ** 2
            std = jnp.sqrt(sig_s ** 2 * var / sig_t ** 2)
            frac = jnp.mod(frac - var * lam * eps_f
                           + std * jax.random.normal(k2, frac.shape, dtype) * maskf, 1.0)
            a_t, a_s = abar[t], abar[s]
            alpha = a_t / a_s
            beta = 1 - alpha
            l0 = jnp.clip((lattice - jnp.sqrt(1 - a_t) * eps_l) / jnp.sqrt(a_t),
                          -clip_l0, clip_l0)
            mean = (jnp.sqrt(a_s) * beta / (1 - a_t)) * l0 \
                + (jnp.sqrt(alpha) * (1 - a_s) / (1 - a_t)) * lattice
            post = jnp.sqrt(jnp.maximum(beta * (1 - a_s) / (1 - a_t), 0.0))
            lattice = mean + jnp.where(last, 0.0, post) * jax.random.normal(k3, lattice.shape,
                                                                             dtype)
            return (frac, lattice, key), None

        (frac, lattice, _), _ = jax.lax.scan(body, (frac, lattice, key), (t_now, t_next))
        _, _, energy = net(frac, lattice, 1)
        return lattice, frac * maskf, energy

    return jax.jit(sample)


__all__ = ["L0_CLIP", "STEP_LR", "make_sampler", "step_sequence"]

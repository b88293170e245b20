"""The noise processes of joint lattice / fractional-coordinate diffusion (DiffCSP).

DiffCSP (Jiao et al., "Crystal Structure Prediction by Joint Equivariant Diffusion",
NeurIPS 2023) diffuses a crystal ``(L, F)`` of fixed atom types in two ways at once:

- the lattice ``L`` (rows the lattice vectors, Å) by DDPM (Ho et al., NeurIPS 2020):
  ``L_t = sqrt(abar_t) L_0 + sqrt(1 - abar_t) eps`` with the cosine schedule of Nichol &
  Dhariwal (ICML 2021, s = 0.008); the network predicts ``eps``;
- the fractional coordinates ``F`` by score matching on the torus (Song et al., ICLR
  2021; the wrapped normal of Jing et al., NeurIPS 2022): ``F_t = F_0 + sigma_t eps
  (mod 1)`` with ``sigma_t`` geometric from 0.005 to 0.5 over the steps; the network
  predicts ``-grad log p(F_t | F_0) / sqrt(lambda_t)``, ``lambda_t = E[|grad log p|^2]``
  being the score's mean square under the wrapped normal, so every step has a target of
  unit scale.

This module holds the schedules (numpy, computed once) and the wrapped normal; the
network is :mod:`jcsp.generative.denoiser` and the reverse process
:mod:`jcsp.generative.sampling`. Index 0 of every per-step array is the clean crystal
(t = 0); training draws t uniformly from 1..T.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

#: Periodic images summed in the wrapped normal (|k| <= N_IMAGES); with sigma <= 0.5 the
#: terms beyond are below 1e-30 of the largest.
N_IMAGES = 10


def cosine_betas(steps: int, s: float = 0.008) -> np.ndarray:
    """[steps] DDPM noise variances of the cosine schedule (Nichol & Dhariwal 2021, eq.
    17), clipped to 1e-4..0.9999 as DiffCSP does."""
    x = np.linspace(0.0, steps, steps + 1)
    abar = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], 1e-4, 0.9999)


def wrapped_normal_score(x, sigma):
    """``d/dx log p(x)`` of the normal of width ``sigma`` wrapped onto the unit circle,
    p(x) = sum_k N(x + k; 0, sigma^2); broadcasts over ``x`` and ``sigma`` (numpy or jax).

    Computed with the weights ``w_k = exp(-(x + k)^2 / 2 sigma^2)`` relative to their
    largest, so it stays finite however small ``sigma`` is.
    """
    xp = jnp if isinstance(x, jnp.ndarray) or isinstance(sigma, jnp.ndarray) else np
    k = xp.arange(-N_IMAGES, N_IMAGES + 1, dtype=xp.result_type(x, sigma))
    d = x[..., None] + k
    s2 = xp.asarray(sigma)[..., None] ** 2
    e = -d * d / (2 * s2)
    w = xp.exp(e - e.max(axis=-1, keepdims=True))
    return -(d * w).sum(-1) / (s2[..., 0] * w.sum(-1))


def score_mean_square(sigma: np.ndarray, n_grid: int = 2001) -> np.ndarray:
    """``lambda(sigma) = E[score(x)^2]`` for x ~ wrapped normal(sigma), by quadrature
    (DiffCSP estimates it from 10^4 samples).

    The trapezoidal rule is spectrally accurate for both integrands used: over one whole
    period for sigma >= 0.05, and over ``[-12 sigma, 12 sigma]`` below (where the
    density beyond is under ``exp(-72)`` of its peak and wrapping is negligible).
    """
    sigma = np.atleast_1d(np.asarray(sigma, np.float64))
    u = np.linspace(-1.0, 1.0, n_grid)
    k = np.arange(-N_IMAGES, N_IMAGES + 1)
    out = np.empty_like(sigma)
    for start in range(0, len(sigma), 32):  # bounded memory: [G, 32, images]
        sig = sigma[start:start + 32]
        x = u[:, None] * np.where(sig >= 0.05, 0.5, 12.0 * sig)[None, :]   # [G, S]
        e = -(x[..., None] + k) ** 2 / (2 * sig[None, :, None] ** 2)
        w = np.exp(e)
        dens = w.sum(-1) / (np.sqrt(2 * np.pi) * sig)
        score = -((x[..., None] + k) * w).sum(-1) / (sig ** 2 * w.sum(-1))
        out[start:start + 32] = np.trapezoid(dens * score * score, x, axis=0)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """Per-step constants of both processes; arrays of length ``steps + 1`` (index 0 = clean).

    Attributes:
      steps: T, the number of diffusion steps.
      beta, alpha_bar: DDPM variances and their cumulative products (beta[0] = 0,
        alpha_bar[0] = 1).
      posterior_std: std of the lattice's reverse step, ``sqrt(beta_t (1 - abar_{t-1}) /
        (1 - abar_t))`` (0 at t = 1: the last step adds no noise).
      sigma: coordinate noise widths (sigma[0] = 0).
      score_scale: ``sqrt(lambda(sigma_t))`` (1 at t = 0).
    """

    steps: int
    beta: np.ndarray
    alpha_bar: np.ndarray
    posterior_std: np.ndarray
    sigma: np.ndarray
    score_scale: np.ndarray
    sigma_begin: float
    sigma_end: float

    @property
    def key(self) -> tuple:
        return (self.steps, self.sigma_begin, self.sigma_end)

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def build(cls, steps: int = 1000, sigma_begin: float = 0.005,
              sigma_end: float = 0.5) -> "Schedule":
        return _build(cls, int(steps), float(sigma_begin), float(sigma_end))


@functools.lru_cache(maxsize=8)
def _build(cls, steps: int, sigma_begin: float, sigma_end: float) -> Schedule:
    """The schedule for these settings (built once per process: lambda takes a moment)."""
    if steps < 2:
        raise ValueError(f"a diffusion needs at least 2 steps, got {steps}")
    if not 0 < sigma_begin < sigma_end:
        raise ValueError("need 0 < sigma_begin < sigma_end")
    beta = np.concatenate([[0.0], cosine_betas(steps)])
    alpha_bar = np.cumprod(1.0 - beta)
    post = np.zeros(steps + 1)
    post[2:] = beta[2:] * (1 - alpha_bar[1:-1]) / (1 - alpha_bar[2:])
    sigma = np.concatenate([[0.0], np.geomspace(sigma_begin, sigma_end, steps)])
    scale = np.concatenate([[1.0], np.sqrt(score_mean_square(sigma[1:]))])
    return cls(steps, beta, alpha_bar, np.sqrt(post), sigma, scale,
               float(sigma_begin), float(sigma_end))


def noise(schedule: Schedule, lattice, frac, t, eps_l, eps_f):
    """The forward process at step ``t`` (an int array over the batch).

    Args:
      lattice: [B, 3, 3] clean lattices; frac: [B, N, 3] clean fractional coordinates.
      t: [B] steps in 1..T; eps_l: [B, 3, 3], eps_f: [B, N, 3] standard normal draws.

    Returns:
      ``(lattice_t, frac_t, target_f)``: the noisy lattice, the noisy coordinates wrapped
      into [0, 1), and the coordinate target ``-score / sqrt(lambda_t)`` (the lattice
      target is ``eps_l`` itself).
    """
    dtype = frac.dtype
    abar = jnp.asarray(schedule.alpha_bar, dtype)[t][:, None, None]
    sigma = jnp.asarray(schedule.sigma, dtype)[t][:, None, None]
    scale = jnp.asarray(schedule.score_scale, dtype)[t][:, None, None]
    lattice_t = jnp.sqrt(abar) * lattice + jnp.sqrt(1.0 - abar) * eps_l
    shift = sigma * eps_f
    frac_t = jnp.mod(frac + shift, 1.0)
    target_f = -wrapped_normal_score(shift, sigma) / scale
    return lattice_t, frac_t, target_f


__all__ = ["Schedule", "cosine_betas", "noise", "score_mean_square", "wrapped_normal_score"]

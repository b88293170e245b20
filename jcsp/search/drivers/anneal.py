"""Simulated annealing: batched Langevin molecular dynamics with a cooling schedule,
ended by a relaxation (Kirkpatrick, Gelatt & Vecchi, Science 220, 671 (1983)).

Each generation anneals a batch of structures at fixed cell: a fraction ``from_best``
are the best structures found so far (re-annealed from a lower temperature), the rest
fresh random ones. The temperature falls geometrically from ``t_start`` to ``t_end``
over ``steps`` steps of the BAOAB Langevin integrator (Leimkuhler & Matthews, Appl.
Math. Res. Express 2013, 34), all structures of the batch in one jitted program
(:func:`langevin`), then the whole batch is relaxed in one call.

:func:`langevin` is shared with minima hopping (friction 0 gives velocity Verlet). Units
are ASE's: positions Å, energies eV, masses amu, time ``ase.units`` time
(1 fs = ``ase.units.fs``). Clusters feel a soft spherical wall (radius ``wall`` x their
starting radius) so no atom evaporates.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from ...capacity import Capacity
from ...derivatives import evaluate
from ...settings import Settings, setting
from ...structures.convert import from_atoms
from ..generate import species_number

#: Integrator steps per compiled segment (the host checks neighbor overflow between).
SEGMENT = 50


class MDSegment(NamedTuple):
    """What one compiled MD segment returns: [B, N, 3] positions and velocities, and
    per structure whether a neighbor list overflowed and the largest neighbor count."""

    positions: object
    velocities: object
    overflow: object
    count: object


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _segment(potential, spec, pbc, params, pos, vel, cell, species, mask, mass, kt, dt,
             friction, key, center, radius):
    """``len(kt)`` BAOAB steps of every structure; kt: [S] eV per step."""
    inv = jnp.linalg.inv(cell)

    def forces(x):
        def one(p, c, ic, s, m):
            return evaluate(potential, params, p @ ic, c, s, m, spec, pbc)
        res = jax.vmap(one)(x, cell, inv, species, mask)
        f = res.forces
        if not any(pbc):  # soft wall: harmonic beyond the radius
            d = x - center[:, None, :]
            r = jnp.sqrt(jnp.sum(d * d, -1, keepdims=True) + 1e-12)
            excess = jnp.maximum(r - radius[:, None, None], 0.0)
            f = f - 10.0 * excess * d / r
        return jnp.where(mask[..., None], f, 0.0), res.overflow, res.count

    c1 = jnp.exp(-friction * dt)
    inv_m = 1.0 / mass[..., None]

    def step(carry, inputs):
        x, v, f, over, count = carry
        t, k = inputs
        v = v + 0.5 * dt * f * inv_m
        x = x + 0.5 * dt * v
        noise = jax.random.normal(k, v.shape, v.dtype)
        v = c1 * v + jnp.sqrt(jnp.maximum(t, 0.0) * (1 - c1 * c1) * inv_m) * noise
        x = x + 0.5 * dt * v
        f, o, c = forces(x)
        v = v + 0.5 * dt * f * inv_m
        v = jnp.where(mask[..., None], v, 0.0)
        return (x, v, f, over | o, jnp.maximum(count, c)), None

    f0, o0, c0 = forces(pos)
    keys = jax.random.split(key, kt.shape[0])
    (pos, vel, _, over, count), _ = jax.lax.scan(step, (pos, vel, f0, o0, c0), (kt, keys))
    return pos, vel, over, count


def langevin(potential, structures: list[Atoms], kt: np.ndarray, *, dt: float,
             friction: float, rng: np.random.Generator, velocities=None,
             wall: float = 1.5) -> tuple[list[Atoms], np.ndarray]:
    """Batched Langevin MD at fixed cell (host side).

    Args:
      potential: a :class:`jcsp.potentials.Potential`.
      structures: same-size structures, all crystals or all clusters.
      kt: [S] thermostat temperature of each step, eV.
      dt: time step, ASE time units.
      friction: Langevin friction, 1 / ASE time units (0: velocity Verlet).
      rng: explicit randomness (Maxwell-Boltzmann start, noise keys).
      velocities: [B, N, 3] starting velocities (default: Maxwell-Boltzmann at kt[0]).
      wall: clusters are confined to ``wall`` x their starting radius (soft wall).

    Returns:
      (new structures, [B, N, 3] final velocities).
    """
    pop = from_atoms(structures, validate=False)
    pbc = tuple(bool(p) for p in pop.pbc)
    cell = np.asarray(pop.cell)
    pos = np.einsum("bni,bij->bnj", np.asarray(pop.frac), cell)
    mask = np.asarray(pop.mask)
    species = np.asarray(pop.species)
    mass = np.where(mask, atomic_masses[species], 1.0)
    if velocities is None:
        velocities = rng.normal(size=pos.shape) * np.sqrt(kt[0] / mass)[..., None]
        velocities -= velocities.mean(1, keepdims=True)
    center = pos.mean(1)
    radius = wall * np.linalg.norm(pos - center[:, None], axis=-1).max(1) + 1.0
    capacity = Capacity(potential, pbc, margin=2.0)
    capacity.fit(pop)
    vel = np.asarray(velocities, float)
    kt = np.asarray(kt, float)
    for start in range(0, len(kt), SEGMENT):
        chunk = kt[start:start + SEGMENT]
        key = jax.random.PRNGKey(int(rng.integers(2**31)))

        def run(spec, sized):
            return MDSegment(*_segment(sized, spec, pbc, sized.params, jnp.asarray(pos),
                                       jnp.asarray(vel), jnp.asarray(cell),
                                       jnp.asarray(species), jnp.asarray(mask),
                                       jnp.asarray(mass), jnp.asarray(chunk), dt, friction,
                                       key, jnp.asarray(center), jnp.asarray(radius)))

        out = capacity.run(run, cell)
        pos, vel = np.asarray(out.positions), np.asarray(out.velocities)
    result = []
    for b, atoms in enumerate(structures):
        new = Atoms(numbers=atoms.numbers, cell=atoms.cell, pbc=atoms.pbc)
        p = pos[b][: len(atoms)]
        if all(pbc):
            new.positions = p
            new.wrap()
        else:
            new.positions = p - p.mean(0)
        if "labels" in atoms.info:
            new.info["labels"] = list(atoms.info["labels"])
        result.append(new)
    return result, vel


def time_step(session, energy_scale: float, factor: float = 0.03) -> float:
    """``factor`` x bond length x sqrt(lightest mass / energy scale), ASE time units."""
    masses = [atomic_masses[species_number(s)] for s in session.counts]
    return factor * session.length * math.sqrt(min(masses) / max(energy_scale, 1e-6))


@dataclass(frozen=True)
class Config(Settings):
    """Annealing settings (temperatures in units of the energy scale, i.e. the
    |enthalpy per atom| of the best structure of the first batch).

    Attributes:
      t_start, t_end: start and end temperature kT / energy scale.
      steps: MD steps per annealing run.
      friction: Langevin friction x time step (dimensionless).
      from_best: fraction of each batch re-annealed from the best structures.
      reanneal: start temperature of re-annealed best structures, as a fraction of
        ``t_start``.
    """

    t_end: float = setting(0.005, gt=0)
    t_start: float = setting(0.12, gt="t_end")
    steps: int = setting(300, kind=int, ge=1)
    friction: float = setting(0.05, gt=0)
    from_best: float = setting(0.5, ge=0, le=1)
    reanneal: float = setting(0.4, gt=0, le=1)


def run(session, config: Config) -> None:
    """Anneal batches until the budget is spent (host side)."""
    scale = session.energy_scale(session.first_generation())
    dt = time_step(session, scale)
    for generation, rng in session.generations():
        n = min(session.population, session.remaining)
        best = session.archive.structures[: max(1, n // 4)]
        n_best = min(int(round(config.from_best * n)), n) if best else 0
        starts = [best[k % len(best)] for k in range(n_best)]
        parents = [[a.info.get("uid", "")] for a in starts]
        starts += session.random_structures(n - n_best, rng)
        parents += [[] for _ in range(n - n_best)]
        hot = np.array([config.t_start * (config.reanneal if k < n_best else 1.0)
                        for k in range(n)]) * scale
        ratio = (config.t_end * scale / hot)[:, None]
        frac = np.linspace(0.0, 1.0, config.steps)[None, :]
        kt = hot[:, None] * ratio ** frac  # [n, steps]
        # the search's named moves (Session.special_move) replace some re-anneals
        annealed = [session.special_move(starts[k], rng) if k < n_best else None
                    for k in range(n)]
        # one schedule per batch: re-annealed and fresh runs are batched separately
        for members in ([k for k in range(n) if k < n_best and annealed[k] is None],
                        [k for k in range(n) if k >= n_best]):
            if members:
                out, _ = langevin(session.potential, [starts[k] for k in members],
                                  kt[members[0]], dt=dt, friction=config.friction / dt,
                                  rng=rng)
                for k, atoms in zip(members, out):
                    if "origin" in starts[k].info and k >= n_best:  # a generator's start
                        atoms.info["origin"] = starts[k].info["origin"]
                    annealed[k] = atoms
        session.evaluate(generation, annealed, parents)

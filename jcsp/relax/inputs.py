"""The checked inputs of :func:`jcsp.relax` and :func:`jcsp.relax.relax_stream` (host side).

Errors of the call itself (not a list of ``ase.Atoms``, no potential, a bad option) raise
``ValueError`` here. Errors of one structure do not: :func:`screen` says, per structure,
why it cannot be relaxed (and what to do), and :func:`_rejected` is what such a
structure comes back as, so one bad input never stops the others.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from ..potentials.base import Potential
from ..structures.convert import MIN_DISTANCE, StructureError, check_structure
from .fire import FireConfig
from .lbfgs import LBFGSConfig

#: Default Verlet skin: this fraction of the potential's cutoff, at most MAX_SKIN Å.
#: A wider skin means fewer list rebuilds and more (masked) pairs per evaluation.
SKIN_FRACTION = 0.25
MAX_SKIN = 1.0
OPTIMIZERS = {"fire": FireConfig, "lbfgs": LBFGSConfig}


def _skin(potential, skin=None) -> float:
    """Verlet skin in Å: the given one, or the default fraction of the cutoff."""
    if potential.cutoff is None:
        return 0.0
    return min(SKIN_FRACTION * potential.cutoff, MAX_SKIN) if skin is None else float(skin)



def _number(value, name, *, positive=True) -> float:
    if isinstance(value, (bool, str, bytes)) or np.asarray(value).dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, "
                         f"got {value!r}")
    return v


def _pressures(pressure, n) -> np.ndarray:
    arr = np.asarray(pressure) if not isinstance(pressure, (str, bytes)) else None
    if arr is None or isinstance(pressure, bool) or arr.dtype.kind not in "iuf":
        raise ValueError(f"pressure must be a number in GPa (or one per structure), "
                         f"got {pressure!r}")
    arr = arr.astype(float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    elif arr.shape != (n,):
        raise ValueError(f"pressure must be one number or one per structure ({n}), "
                         f"got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("pressure must be finite (GPa)")
    return arr


def _config(optimizer):
    if isinstance(optimizer, (FireConfig, LBFGSConfig)):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"unknown optimizer {optimizer!r}: use 'fire' or 'lbfgs' "
                     "(or a FireConfig / LBFGSConfig)")


def _integer(value, name, minimum) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _plainly_valid(structures) -> np.ndarray:
    """[S] bool: structures that certainly pass :func:`check_structure` (host side).

    A vectorised screen (finite numbers, volume, no two atoms or images closer than
    ``MIN_DISTANCE``); structures it cannot clear go through ``check_structure`` itself,
    which gives the error message. For cells with every lattice-plane spacing above
    ``MIN_DISTANCE``, a shorter separation has fractional components below 1, so the
    rounded fractional difference plus shifts in {-1, 0, 1} finds it.
    """
    ok = np.zeros(len(structures), bool)
    groups: dict = {}
    for k, atoms in enumerate(structures):
        pbc = tuple(bool(p) for p in atoms.pbc)
        if pbc in ((True,) * 3, (False,) * 3) and len(atoms) > 1:
            groups.setdefault((pbc, len(atoms)), []).append(k)
    shifts = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for (pbc, n), members in groups.items():
        periodic = pbc[0]
        step = max(1, 2_000_000 // (n * n * (27 if periodic else 1)))
        for start in range(0, len(members), step):
            idx = members[start:start + step]
            pos = np.stack([structures[k].positions for k in idx])
            good = np.isfinite(pos).all(axis=(1, 2))
            if periodic:
                cell = np.stack([structures[k].cell[:] for k in idx])
                vol = np.abs(np.linalg.det(cell))
                good &= np.isfinite(cell).all(axis=(1, 2))
                good &= vol >= 1e-6 * np.maximum(1.0, np.linalg.norm(cell, axis=(1, 2)) ** 3)
                cell = np.where(good[:, None, None], cell, np.eye(3))
                spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=-2)
                good &= (spacing > MIN_DISTANCE).all(1)
                frac = np.einsum("bni,bij->bnj", np.nan_to_num(pos), np.linalg.inv(cell))
                d = frac[:, None] - frac[:, :, None]
                d = (d - np.round(d))[:, :, :, None, :] + shifts
                vec = np.einsum("bijsk,bkl->bijsl", d, cell)
                self_pair = (np.eye(n, dtype=bool)[:, :, None] & (shifts == 0).all(1))
            else:
                vec = (pos[:, None] - pos[:, :, None])[:, :, :, None, :]
                self_pair = np.eye(n, dtype=bool)[:, :, None]
            d2 = np.where(self_pair, np.inf, np.sum(vec * vec, axis=-1))
            good &= d2.reshape(len(idx), -1).min(1) >= MIN_DISTANCE**2
            ok[idx] = good
    return ok


def _check_arguments(structures, potential) -> None:
    """Errors of the call itself (not of one structure): these always raise."""
    if isinstance(structures, Atoms) or not isinstance(structures, Sequence):
        raise ValueError("relax expects a list of ase.Atoms (wrap a single one: [atoms])")
    if len(structures) == 0:
        raise ValueError("relax got no structures")
    if not isinstance(potential, Potential):
        raise ValueError(f"potential must be a jcsp potential, got {type(potential).__name__}")
    for k, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise ValueError(f"structure {k} is a {type(atoms).__name__}, not an ase.Atoms")


def screen(structures: Sequence[Atoms], potential: Potential) -> list[str | None]:
    """Per structure, None when it can be relaxed with ``potential``, else why not and
    what to do (host side).

    Invalid: no atoms, non-finite coordinates or cell, zero volume, partial
    periodicity, atoms closer than ``MIN_DISTANCE``, species the potential does not
    cover, or a crystal given to a potential without a cutoff.
    """
    plain = _plainly_valid(structures)
    errors: list[str | None] = []
    for k, atoms in enumerate(structures):
        try:
            if not plain[k]:
                check_structure(atoms)
            potential.check_species(atoms.numbers)
            if any(atoms.pbc) and potential.cutoff is None:
                raise StructureError(
                    f"the structure is periodic but {potential!r} has no cutoff (all pairs),"
                    " which only works for clusters; give the potential a cutoff")
        except ValueError as err:
            errors.append(str(err))
        else:
            errors.append(None)
    return errors


def _rejected(atoms: Atoms, error: str) -> Atoms:
    """The output for an input that was not relaxed: the input itself, flagged."""
    out = atoms.copy()
    del out.constraints
    nan = float("nan")
    out.info.update(failed=True, invalid=True, error=error, failure_reason=error,
                    converged=False, steps=0, energy=nan, enthalpy=nan, pressure=nan,
                    volume=nan, max_force=nan, max_stress=nan)
    return out


def _options(potential, *, fmax, smax, optimizer, max_steps, steps_per_segment, batch_size,
             headroom, skin, dtype, params) -> dict:
    """The checked options of :func:`relax` and :func:`relax_stream` (host side)."""
    out = dict(fmax=_number(fmax, "fmax"),
               smax=None if smax is None else _number(smax, "smax"),
               optimizer=_config(optimizer), max_steps=_integer(max_steps, "max_steps", 0),
               steps_per_segment=_integer(steps_per_segment, "steps_per_segment", 1),
               batch_size=None if batch_size is None else _integer(batch_size, "batch_size", 1),
               headroom=_number(headroom, "headroom"))
    if out["headroom"] < 1:
        raise ValueError(f"headroom must be >= 1, got {headroom!r}")
    if skin is not None and (_number(skin, "skin", positive=False) < 0):
        raise ValueError(f"skin must be >= 0 Å, got {skin!r}")
    out["skin"] = _skin(potential, skin)
    dtype = np.dtype(jnp.zeros(()).dtype if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    out["dtype"] = dtype
    params = potential.params if params is None else params
    out["params"] = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
        else jnp.asarray(a), params)
    return out

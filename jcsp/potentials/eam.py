"""Embedded-atom method (EAM) from LAMMPS tables: ``eam``, ``eam/alloy`` and ``eam/fs``.

``E_i = F_a(rho_i) + 1/2 sum_j phi_ab(r_ij)``, ``rho_i = sum_j rho_ba(r_ij)``, with ``a``
the element of atom ``i`` and ``b`` that of its neighbor ``j`` (Daw & Baskes, Phys. Rev.
B 29, 6443 (1984); Finnis & Sinclair, Phil. Mag. A 50, 45 (1984) for density functions
that depend on both elements). ``phi`` is tabulated as ``z2(r) = r phi(r)``.

Files are read as LAMMPS ``pair_style eam``, ``eam/alloy`` and ``eam/fs`` read them (see
their documentation for the DYNAMO ``funcfl`` and ``setfl`` formats), and the tables are
interpolated exactly the way LAMMPS does it, so energies, forces and stresses agree with
it to round-off:

- ``funcfl`` (``.eam``, one element per file): the effective charge ``Z(r)`` becomes the
  pair term ``z2 = 27.2 * 0.529 * Z_a Z_b`` (Hartree x Bohr as DYNAMO wrote it). Files
  are resampled with 4-point Lagrange interpolation onto one common grid: the largest
  step and range of the files, with ``int(range / step + 0.5)`` points, i.e. one point
  fewer than a file on that grid has (its last point is dropped), while ``rhomax`` stays
  ``(nrho - 1) drho`` of the file. With several files, LAMMPS builds that grid from the
  files of the elements present, so jcsp matches it on structures holding every element.
- every table then becomes a per-interval cubic: values ``f_m``; slopes (per grid step)
  by one-sided differences at the ends, central 3-point differences next to them and the
  4th-order 5-point formula ``((f_{m-2} - f_{m+2}) + 8 (f_{m+1} - f_{m-1})) / 12``
  inside; on each interval the Hermite cubic through the two values and slopes.
- lookup: ``p = x / dx + 1``, interval ``m = min(int(p), n - 1)`` (and ``>= 1`` for the
  density), ``t = min(p - m, 1)``. Beyond the tables LAMMPS holds the value and uses the
  slope at the last knot as the derivative (the force), and adds
  ``F'(rhomax) (rho - rhomax)`` to the embedding energy when ``rho > rhomax``. jcsp
  reproduces values and derivatives there too (a straight-through clamp), so forces
  match LAMMPS even where they are not the derivative of its energy.
"""

from __future__ import annotations

import os
from typing import Iterable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..graph import Graph, safe_norm
from .base import Potential, to_numbers

#: DYNAMO's Hartree (eV) x Bohr (Å), as LAMMPS converts funcfl charges: z2 = C Z_a Z_b.
HARTREE_BOHR = 27.2 * 0.529

Format = Literal["funcfl", "setfl", "fs"]


# --------------------------------------------------------------------------------------
# Reading files (host side)
# --------------------------------------------------------------------------------------

class _Lines:
    """Line reader with LAMMPS's rules: a block of n numbers reads whole lines until it
    has n values (extra values on its last line are ignored)."""

    def __init__(self, path):
        self.path = str(path)
        with open(path) as fh:
            self.lines = fh.read().splitlines()
        self.pos = 0

    def line(self) -> list[str]:
        while self.pos < len(self.lines):
            words = self.lines[self.pos].split()
            self.pos += 1
            if words:
                return words
        raise ValueError(f"{self.path}: file ended early (line {self.pos})")

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.lines):
            raise ValueError(f"{self.path}: file ended early (line {self.pos})")
        self.pos += n

    def numbers(self, n: int) -> np.ndarray:
        out: list[float] = []
        while len(out) < n:
            words = self.line()
            out += [self._float(w) for w in words[:n - len(out)]]
        return np.array(out)

    def _float(self, word: str) -> float:
        try:
            return float(word)
        except ValueError:
            raise ValueError(f"{self.path}, line {self.pos}: {word!r} is not a number") from None

    def grid(self) -> tuple[int, float, int, float, float]:
        w = self.line()
        if len(w) < 5:
            raise ValueError(f"{self.path}, line {self.pos}: expected 'Nrho drho Nr dr cutoff'")
        nrho, nr = int(w[0]), int(w[2])
        drho, dr, cut = (self._float(x) for x in (w[1], w[3], w[4]))
        if nrho < 5 or nr < 5 or not (drho > 0 and dr > 0 and cut > 0):
            raise ValueError(f"{self.path}, line {self.pos}: invalid grid {' '.join(w[:5])}")
        return nrho, drho, nr, dr, cut


def _read_funcfl(path):
    f = _Lines(path)
    f.skip(1)
    z = int(float(f.line()[0]))
    nrho, drho, nr, dr, cut = f.grid()
    frho = f.numbers(nrho)
    zr = f.numbers(nr)
    rhor = f.numbers(nr)
    if not 0 < z < len(chemical_symbols):
        raise ValueError(f"{path}: atomic number {z} on line 2 is not an element")
    return dict(z=z, nrho=nrho, drho=drho, nr=nr, dr=dr, cut=cut, frho=frho, zr=zr, rhor=rhor)


def _read_setfl(path, fs: bool):
    f = _Lines(path)
    f.skip(3)
    w = f.line()
    n = int(w[0])
    names = w[1:1 + n]
    if len(names) != n:
        raise ValueError(f"{path}, line 4: says {n} elements but names {len(names)}")
    nrho, drho, nr, dr, cut = f.grid()
    frho, rhor = [], []
    for _ in range(n):
        f.line()  # atomic number, mass, lattice constant, lattice type
        frho.append(f.numbers(nrho))
        rhor.append([f.numbers(nr) for _ in range(n if fs else 1)])
    z2r = np.zeros((n, n, nr))
    for a in range(n):
        for b in range(a + 1):
            z2r[a, b] = z2r[b, a] = f.numbers(nr)
    return dict(names=names, nrho=nrho, drho=drho, nr=nr, dr=dr, cut=cut,
                frho=np.array(frho), rhor=np.array(rhor), z2r=z2r)


def _resample(values: np.ndarray, step: float, n: int, new_step: float) -> np.ndarray:
    """LAMMPS's funcfl resampling onto ``n`` points spaced ``new_step`` (4-point Lagrange;
    exactly the file's values when the grids agree)."""
    x = np.arange(n) * new_step
    p = x / step + 1.0
    k = np.maximum(np.minimum(p.astype(int), len(values) - 2), 2)
    p = np.minimum(p - k, 2.0)
    f = np.concatenate([[0.0], values])                 # 1-based as in the file
    c1 = -(1.0 / 6.0) * p * (p - 1.0) * (p - 2.0)
    c2 = 0.5 * (p * p - 1.0) * (p - 2.0)
    c3 = -0.5 * p * (p + 1.0) * (p - 2.0)
    c4 = (1.0 / 6.0) * p * (p * p - 1.0)
    return c1 * f[k - 1] + c2 * f[k] + c3 * f[k + 1] + c4 * f[k + 2]


def _funcfl_tables(files: list[dict]):
    dr = max(f["dr"] for f in files)
    drho = max(f["drho"] for f in files)
    rmax = max((f["nr"] - 1) * f["dr"] for f in files)
    rhomax = max((f["nrho"] - 1) * f["drho"] for f in files)
    nr = int(rmax / dr + 0.5)
    nrho = int(rhomax / drho + 0.5)
    frho = np.array([_resample(f["frho"], f["drho"], nrho, drho) for f in files])
    rho = np.array([_resample(f["rhor"], f["dr"], nr, dr) for f in files])
    zr = np.array([_resample(f["zr"], f["dr"], nr, dr) for f in files])
    t = len(files)
    z2r = np.empty((t, t, nr))
    for a in range(t):
        for b in range(a + 1):                           # LAMMPS: row >= column
            z2r[a, b] = z2r[b, a] = HARTREE_BOHR * zr[a] * zr[b]
    rhor = np.broadcast_to(rho[:, None, :], (t, t, nr))   # [source, target, r]
    cut = max(f["cut"] for f in files)
    return frho, rhor, z2r, drho, dr, cut, rhomax


def spline_coefficients(values: np.ndarray) -> np.ndarray:
    """Per-interval cubics of a table, as LAMMPS's ``PairEAM::interpolate`` builds them.

    Args:
      values: [..., n] table on a uniform grid (n >= 5).

    Returns:
      [..., n, 4] coefficients ``(c3, c2, c1, c0)`` of ``((c3 t + c2) t + c1) t + c0`` on
      interval ``m`` (0-based; ``t`` in [0, 1] across one grid step); the last row has
      zero slope terms, as in LAMMPS.
    """
    f = np.asarray(values, float)
    n = f.shape[-1]
    s = np.empty_like(f)
    s[..., 0] = f[..., 1] - f[..., 0]
    s[..., 1] = 0.5 * (f[..., 2] - f[..., 0])
    s[..., n - 2] = 0.5 * (f[..., n - 1] - f[..., n - 3])
    s[..., n - 1] = f[..., n - 1] - f[..., n - 2]
    s[..., 2:n - 2] = ((f[..., :n - 4] - f[..., 4:])
                       + 8.0 * (f[..., 3:n - 1] - f[..., 1:n - 3])) / 12.0
    c2 = np.zeros_like(f)
    c3 = np.zeros_like(f)
    df = f[..., 1:] - f[..., :-1]
    c2[..., :-1] = 3.0 * df - 2.0 * s[..., :-1] - s[..., 1:]
    c3[..., :-1] = s[..., :-1] + s[..., 1:] - 2.0 * df
    return np.stack([c3, c2, s, f], axis=-1)


def _cubic(table, index: tuple, x, inv_step: float, n: int):
    """Evaluate LAMMPS cubic tables at ``x`` with LAMMPS's lookup and clamp.

    Args:
      table: [..., n, 4] coefficients from :func:`spline_coefficients`.
      index: integer arrays selecting a table (broadcast against ``x``).
      x: abscissae; inv_step: 1 / grid step; n: points in the table.

    Returns:
      (value, slope): the cubic at the clamped point, whose derivative wrt ``x`` is the
      slope there also beyond the end of the table (a straight-through clamp, as LAMMPS
      uses that slope for forces), and that slope d value / dx.
    """
    p = x * inv_step + 1.0
    m = jnp.clip(jnp.floor(jax.lax.stop_gradient(p)), 1, n - 1)
    t = p - m
    clamped = jnp.minimum(t, 1.0)
    t = t - jax.lax.stop_gradient(t - clamped)          # value min(t, 1), slope 1
    c = table[index + (m.astype(jnp.int32) - 1,)]        # [..., 4]
    value = ((c[..., 0] * t + c[..., 1]) * t + c[..., 2]) * t + c[..., 3]
    slope = ((3.0 * c[..., 0] * clamped + 2.0 * c[..., 1]) * clamped + c[..., 2]) * inv_step
    return value, slope


class EAM(Potential):
    """Embedded-atom potential on LAMMPS-style uniform tables.

    Args:
      species: element symbols (or atomic numbers), in type order (T of them).
      embedding: [T, nrho] F(rho) on ``rho = k * drho``, eV.
      density: [T, T, nr] ``density[b, a]``: density at an atom of element ``a`` due to a
        neighbor of element ``b``, on ``r = k * dr``.
      z2: [T, T, nr] symmetric ``r * phi(r)``, eV Å.
      drho, dr: grid steps; cutoff: Å.
      rhomax: density beyond which the embedding energy is extended linearly (default
        ``(nrho - 1) drho``).

    ``params`` holds the cubic coefficient tables (differentiable); grids are static.
    ``tables`` keeps the tabulated values (numpy) the coefficients were built from.

    Example:
      >>> cu = EAM.from_lammps("/usr/share/lammps/potentials/Cu_u3.eam")
      >>> cuni = EAM.from_lammps("CuNi.eam.alloy")
      >>> alfe = EAM.from_lammps("AlFe_mm.eam.fs", species=["Fe"])
    """

    def __init__(self, species: Sequence, embedding, density, z2, *, drho: float, dr: float,
                 cutoff: float, rhomax: float | None = None):
        self.species = to_numbers(species)
        t = len(self.species)
        embedding = np.asarray(embedding, float)
        density = np.asarray(density, float)
        z2 = np.asarray(z2, float)
        if embedding.ndim != 2 or embedding.shape[0] != t:
            raise ValueError(f"embedding must be [T={t}, nrho], got {embedding.shape}")
        if density.ndim != 3 or density.shape[:2] != (t, t) or z2.shape != density.shape:
            raise ValueError(f"density and z2 must be [T={t}, T, nr], got {density.shape} "
                             f"and {z2.shape}")
        if min(embedding.shape[-1], density.shape[-1]) < 5:
            raise ValueError("EAM tables need at least 5 points")
        if not (drho > 0 and dr > 0 and cutoff > 0):
            raise ValueError("drho, dr and cutoff must be positive")
        self.nrho, self.nr = embedding.shape[-1], density.shape[-1]
        self.drho, self.dr, self.cutoff = float(drho), float(dr), float(cutoff)
        self.rhomax = float((self.nrho - 1) * drho if rhomax is None else rhomax)
        self.tables = {"embedding": embedding, "density": density, "z2": z2}
        self.params = {"embedding": jnp.asarray(spline_coefficients(embedding)),
                       "density": jnp.asarray(spline_coefficients(density)),
                       "z2": jnp.asarray(spline_coefficients(z2))}

    @classmethod
    def from_lammps(cls, path: str | os.PathLike | Sequence[str | os.PathLike],
                    species: Iterable | None = None) -> "EAM":
        """Read LAMMPS EAM tables (host side); the format follows the file name.

        Args:
          path: a ``.eam.alloy`` (setfl, ``pair_style eam/alloy``) or ``.eam.fs``
            (Finnis-Sinclair, ``pair_style eam/fs``) file, or one or several ``.eam``
            funcfl files (``pair_style eam``, one element each).
          species: elements to keep, in type order (default: all, in file order).
        """
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise ValueError("EAM.from_lammps needs a file")
        kinds = {_format(p) for p in paths}
        if len(kinds) > 1 or (len(paths) > 1 and kinds != {"funcfl"}):
            raise ValueError("several EAM files can only be funcfl (.eam) files, one element "
                             "each")
        kind = kinds.pop()
        if kind == "funcfl":
            files = [_read_funcfl(p) for p in paths]
            names = [chemical_symbols[f["z"]] for f in files]
            if len(set(names)) != len(names):
                raise ValueError(f"two funcfl files for one element: {names}")
            frho, rhor, z2r, drho, dr, cut, rhomax = _funcfl_tables(files)
        else:
            d = _read_setfl(paths[0], fs=(kind == "fs"))
            names = d["names"]
            unknown = [n for n in names if n not in atomic_numbers]
            if unknown:
                raise ValueError(f"{paths[0]}: {', '.join(unknown)} are not chemical symbols")
            t = len(names)
            frho, z2r = d["frho"], d["z2r"]
            rhor = np.broadcast_to(d["rhor"], (t, t, d["nr"])) if kind == "setfl" else d["rhor"]
            drho, dr, cut = d["drho"], d["dr"], d["cut"]
            rhomax = (d["nrho"] - 1) * drho
        if species is not None:
            want = [s if isinstance(s, str) else chemical_symbols[int(s)] for s in species]
            missing = [s for s in want if s not in names]
            if missing or len(set(want)) != len(want):
                raise ValueError(f"species {want} must be distinct elements of the file "
                                 f"({', '.join(names)})")
            keep = [names.index(s) for s in want]
            names = want
            frho, rhor, z2r = frho[keep], rhor[np.ix_(keep, keep)], z2r[np.ix_(keep, keep)]
        return cls(names, frho, rhor, z2r, drho=drho, dr=dr, cutoff=cut, rhomax=rhomax)

    def energies(self, params, graph: Graph):
        t = self.type_index(graph.species)
        ti = t[:, None]
        tj = t[graph.nbr_idx]
        r = safe_norm(graph.nbr_vec, graph.nbr_mask)
        inside = graph.nbr_mask & (r < self.cutoff)
        r = jnp.where(inside, r, 0.5 * self.cutoff)
        inv_dr = 1.0 / self.dr

        rho_j, _ = _cubic(params["density"], (tj, ti), r, inv_dr, self.nr)
        rho = jnp.sum(jnp.where(inside, rho_j, 0.0), axis=-1)
        z2, _ = _cubic(params["z2"], (ti, tj), r, inv_dr, self.nr)
        e_pair = 0.5 * jnp.sum(jnp.where(inside, z2 / r, 0.0), axis=-1)
        # Embedding: beyond rhomax LAMMPS adds F'(end) (rho - rhomax) to the energy, with
        # F'(end) as the derivative (the straight-through clamp already supplies it).
        f_rho, slope = _cubic(params["embedding"], (t,), rho, 1.0 / self.drho, self.nrho)
        beyond = slope * jax.lax.stop_gradient(rho - self.rhomax)
        return f_rho + jnp.where(rho > self.rhomax, beyond, 0.0) + e_pair


def _format(path) -> Format:
    name = os.path.basename(str(path)).lower()
    if name.endswith(".eam.fs") or name.endswith(".fs"):
        return "fs"
    if name.endswith(".eam.alloy") or name.endswith(".alloy") or name.endswith(".setfl"):
        return "setfl"
    if name.endswith(".eam") or name.endswith(".funcfl"):
        return "funcfl"
    raise ValueError(f"{path}: cannot tell the EAM format from the name; use .eam (funcfl), "
                     ".eam.alloy (setfl) or .eam.fs (Finnis-Sinclair)")

"""Ewald summation of point charges in a periodic cell, differentiable in positions and cell.

The Coulomb energy of charges ``q_i`` in a periodic cell (Ewald 1921; the notation of
Frenkel & Smit, *Understanding Molecular Simulation*, ch. 12) is split with a Gaussian
screening parameter ``alpha`` (1/Å) into four terms, all multiplied by the Coulomb
constant ``k = 14.399645`` eV·Å (:data:`jcsp.units.COULOMB_EV_A`, LAMMPS ``qqr2e``):

- real space, over neighbor-list edges with ``r < cutoff``:
  ``E_i += (1/2) sum_j q_i q_j erfc(alpha r_ij) / r_ij`` (periodic images included);
- reciprocal space, over reciprocal-lattice vectors ``G`` with ``0 < |G| <= gmax``:
  ``E = (2 pi / V) sum_G exp(-G^2 / 4 alpha^2) / G^2 |S(G)|^2``, ``S(G) = sum_j q_j
  exp(i G.r_j)``, split per atom as ``(q_i / 2) phi(r_i)`` (the same split as LAMMPS's
  per-atom Ewald energy), so the per-atom energies sum to the total;
- self energy ``-alpha / sqrt(pi) q_i^2``;
- neutralising background of a charged cell, ``-pi Q^2 / (2 V alpha^2)`` with
  ``Q = sum_i q_i``, split per atom as ``-pi q_i Q / (2 V alpha^2)``. LAMMPS's
  ``kspace_style ewald`` has the same energy term but leaves its volume derivative out
  of the pressure; here stress is the true strain derivative of the energy, so for a
  charged cell it differs from LAMMPS by ``+k pi Q^2 / (2 alpha^2 V^2)`` on the diagonal.

**Accuracy.** ``alpha`` and ``gmax`` are chosen from a relative ``accuracy`` and the
real-space cutoff ``rc`` independently of the cell and of the number of atoms, so the
energy is one fixed function of the geometry (a supercell has exactly n times the
energy). With ``s`` solving ``2 s^2 exp(-s^2) = accuracy``, ``alpha = s / rc`` and
``gmax = 2 alpha s``: the terms left out at the real-space cutoff (``exp(-alpha^2
rc^2)``) and beyond ``gmax`` (``exp(-gmax^2 / 4 alpha^2)``), times ``2 s^2``, the factor
by which their force and strain derivatives exceed them, are ``accuracy`` relative to
two unit charges 1 Å apart. Measured at the default ``accuracy = 1e-8``: the rock-salt
Madelung energy to 1e-11 and its virial stress to 2e-9. This is the spirit of
LAMMPS's ``kspace_style ewald`` accuracy (relative RMS force); LAMMPS's own choice also
depends on N and the box, so its energy differs between a cell and its supercell at
the accuracy level.

**The k-vector set is static, the cell is not.** ``G = m @ (2 pi inv(cell)^T)`` for
integer ``m``; the integer set must have a fixed shape under ``jit``. It is the box
``|m_a| <= kmax[a]`` halved along its longest axis (``m`` and ``-m`` give the same
term, so one of them counts twice), and ``G`` vectors outside the sphere ``|G| <= gmax``
are masked. Indices refer to a
*reduced* basis of the lattice (pairwise Gauss-Lagrange reduction, shortest vector
first, done inside the compiled function), so the box needed depends on the lattice and
not on how skewed its cell is: the sphere fits when ``kmax[a] >= floor(gmax |a'_a| /
2 pi)`` for the reduced lattice vectors ``a'_a``. The reciprocal sum is then exactly the
sum over the sphere, whatever the box. When a cell needs a larger box than the static
one, the energies are NaN (loud, never a silently truncated sum); size the box on the
host with :func:`kmax_for` (or ``BuckinghamCoulomb.for_cells``) with a margin for the
cell changes a relaxation will make.

**Cost.** ``exp(i G.r)`` factorises over the reduced axes, ``prod_a exp(i m_a t_a)``
with ``t_a = b_a . r`` (the classic trick of Ewald codes that keep ``exp(i k x)`` for
``k = 0..kmax`` per atom, e.g. LAMMPS's ``ewald``), so each atom needs one table of
``2 kmax[a] + 1`` complex exponentials per axis, and the structure factor and per-atom
sums are products of those tables (matrix products): a few flops per (atom, k) pair
instead of a sine and a cosine (timings: ``experiments/bench_ionic.py``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from ..graph import Graph, safe_norm
from ..units import COULOMB_EV_A

#: Reduced lattice-vector lengths (Å, shortest first) the default static k box covers:
#: every random cell of up to 32 atoms at up to 35 Å³/atom, thin ones included.
DEFAULT_CELL_LENGTHS = (15.0, 25.0, 30.0)
#: Sweeps of pairwise basis reduction inside the compiled function.
REDUCTION_SWEEPS = 12


@dataclasses.dataclass(frozen=True)
class EwaldSpec:
    """Static Ewald settings (hashable: they decide compiled shapes).

    Attributes:
      cutoff: real-space cutoff, Å.
      alpha: screening parameter, 1/Å (LAMMPS ``g_ewald``).
      gmax: reciprocal-space cutoff |G|, 1/Å.
      kmax: (k_a, k_b, k_c) integer box of the reduced lattice's reciprocal indices.
    """

    cutoff: float
    alpha: float
    gmax: float
    kmax: tuple[int, int, int]

    @property
    def indices(self) -> np.ndarray:
        """[K, 3] integer vectors of the half space of the box (``m`` and ``-m`` pair)."""
        return half_space(self.kmax)

    @property
    def max_length(self) -> np.ndarray:
        """[3] longest reduced lattice vector (Å) along each axis the box covers."""
        return 2.0 * np.pi * np.asarray(self.kmax, float) / self.gmax

    def sized_for(self, cells, *, margin: float = 1.25) -> "EwaldSpec":
        """This spec with the box :func:`kmax_for` gives for ``cells`` (host side)."""
        return dataclasses.replace(self, kmax=kmax_for(cells, self.gmax, margin=margin))


def ewald_parameters(cutoff: float, accuracy: float = 1e-8,
                     alpha: float | None = None) -> tuple[float, float]:
    """``(alpha, gmax)`` in 1/Å for a real-space ``cutoff`` (Å) and relative ``accuracy``.

    With ``s`` solving ``2 s^2 exp(-s^2) = accuracy`` (s = 4.71 for 1e-8): ``alpha = s /
    cutoff`` unless given, and ``gmax = 2 alpha s``. See the module docstring.
    """
    if not (isinstance(accuracy, (int, float)) and 0.0 < accuracy <= 1e-2):
        raise ValueError(f"accuracy must be a number in (0, 0.01], e.g. 1e-8; got {accuracy!r}")
    if not (cutoff is not None and cutoff > 0):
        raise ValueError(f"Ewald needs a positive real-space cutoff in Å, got {cutoff!r}")
    s2 = -math.log(accuracy)
    for _ in range(50):  # fixed point of s^2 = -ln(accuracy) + ln(2 s^2), a contraction
        s2 = -math.log(accuracy) + math.log(2.0 * s2)
    s = math.sqrt(s2)
    if alpha is None:
        alpha = s / float(cutoff)
    if not alpha > 0:
        raise ValueError(f"alpha (Ewald splitting, 1/Å) must be positive, got {alpha!r}")
    return float(alpha), float(2.0 * alpha * s)


def make_spec(cutoff: float, *, accuracy: float = 1e-8, alpha: float | None = None,
              kmax: int | Sequence[int] | None = None) -> EwaldSpec:
    """An :class:`EwaldSpec` from accuracy; ``kmax`` defaults to a box covering reduced
    lattice vectors up to :data:`DEFAULT_CELL_LENGTHS`."""
    alpha, gmax = ewald_parameters(cutoff, accuracy, alpha)
    if kmax is None:
        kmax = tuple(int(math.ceil(gmax * length / (2.0 * np.pi)))
                     for length in DEFAULT_CELL_LENGTHS)
    elif isinstance(kmax, (int, np.integer)):
        kmax = (int(kmax),) * 3
    kmax = tuple(int(k) for k in kmax)
    if len(kmax) != 3 or min(kmax) < 1:
        raise ValueError(f"kmax must be a positive int or three positive ints, got {kmax!r}")
    return EwaldSpec(cutoff=float(cutoff), alpha=alpha, gmax=gmax, kmax=kmax)


def half_space(kmax: Sequence[int]) -> np.ndarray:
    """[K, 3] integer vectors m != 0 of the box ``|m_a| <= kmax[a]`` with m > 0
    lexicographically (so that m and -m appear once between them), ``K =
    ((2k_a+1)(2k_b+1)(2k_c+1) - 1) / 2``."""
    axes = [np.arange(-k, k + 1) for k in kmax]
    m = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    keep = (m[:, 0] > 0) | ((m[:, 0] == 0) & (m[:, 1] > 0)) | (
        (m[:, 0] == 0) & (m[:, 1] == 0) & (m[:, 2] > 0))
    return m[keep]


def reduce_cell(cell):
    """Integer unimodular ``U`` [3, 3] with ``U @ cell`` a pairwise-reduced basis of the
    same lattice, shortest vector first (Gauss-Lagrange size reduction of every pair, a
    fixed number of sweeps; safe under jit and vmap). Lengths never increase, so a
    partly reduced result is still a valid, no worse basis."""
    basis = jnp.asarray(cell)
    u = jnp.eye(3, dtype=basis.dtype)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]

    def sweep(_, carry):
        b, u = carry
        for i, j in pairs:
            mu = jnp.round(jnp.dot(b[i], b[j]) / jnp.dot(b[j], b[j]))
            b = b.at[i].add(-mu * b[j])
            u = u.at[i].add(-mu * u[j])
        return b, u

    b, u = jax.lax.fori_loop(0, REDUCTION_SWEEPS, sweep, (basis, u))
    order = jnp.argsort(jnp.sum(b * b, axis=-1))  # shortest first: boxes can be anisotropic
    return u[order]


def _reduce_host(cells: np.ndarray) -> np.ndarray:
    """[S, 3, 3] the reduced bases :func:`reduce_cell` gives, computed with numpy (host
    side: sizing a batch must not compile or dispatch device code)."""
    b = np.array(cells, float)
    rows = np.arange(len(b))
    for _ in range(REDUCTION_SWEEPS):
        for i in range(3):
            for j in range(3):
                if i != j:
                    mu = np.round(np.einsum("sk,sk->s", b[:, i], b[:, j])
                                  / np.einsum("sk,sk->s", b[:, j], b[:, j]))
                    b[:, i] -= mu[:, None] * b[:, j]
    order = np.argsort(np.einsum("sak,sak->sa", b, b), axis=-1)
    return b[rows[:, None], order]


def required_kmax(cells, gmax: float) -> np.ndarray:
    """[..., 3] smallest box that holds the sphere ``|G| <= gmax`` of each cell (host side)."""
    cells = np.asarray(cells, float)
    flat = cells.reshape(-1, 3, 3)
    lengths = np.linalg.norm(_reduce_host(flat), axis=-1)
    need = np.floor(gmax * lengths / (2.0 * np.pi) + 1e-9).astype(int)
    return np.maximum(need, 1).reshape(cells.shape[:-2] + (3,))


def kmax_for(cells, gmax: float, *, margin: float = 1.25) -> tuple[int, int, int]:
    """A static box for a batch of cells [..., 3, 3] with room to move (host side).

    The box holds the k sphere of every cell with reduced lattice vectors up to
    ``margin`` times longer than now, so the cell changes of a relaxation rarely need a
    new box; when one does, the energies turn NaN rather than lose terms. Reduced axes
    are sorted shortest first, so the box of a thin cell is thin too.
    """
    if not margin >= 1.0:
        raise ValueError(f"margin must be >= 1, got {margin!r}")
    need = required_kmax(cells, gmax * margin).reshape(-1, 3)
    if need.size == 0:
        return (1, 1, 1)
    return tuple(int(k) for k in need.max(axis=0))


def _reciprocal(positions, reduced, volume, q, spec: EwaldSpec):
    """[N] reciprocal-space energies ``(q_i / 2) phi(r_i)`` over the box of ``spec``.

    ``exp(i G.r)`` with ``G = m @ recip`` factorises over the three reduced axes:
    ``exp(i m_1 t_1) exp(i m_2 t_2) exp(i m_3 t_3)`` with phases ``t_a = b_a . r``. So
    each atom needs ``sum_a (2 k_a + 1)`` complex exponentials (one table per axis)
    instead of one per k vector, and the structure factor and the per-atom sums are
    contractions of those tables (matrix products), a few flops per (atom, k) pair.
    The box is halved along its longest axis ``h`` (``m_h >= 0``; the plane ``m_h = 0``
    holds both ``m`` and ``-m``, the others stand for their mirror images with weight
    2); ``G`` outside the sphere ``|G| <= gmax`` and ``G = 0`` get weight 0.
    """
    dtype = positions.dtype
    kmax = spec.kmax
    h = int(np.argmax(kmax))
    order = [h] + [a for a in range(3) if a != h]
    ranges = [np.arange(0 if a == h else -kmax[a], kmax[a] + 1) for a in order]
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), -1)  # [A, B, C, 3], axes in order
    m = np.zeros(grid.shape, np.float64)
    m[..., order] = grid  # back to the reduced axes' own order
    mirror = np.where(grid[..., 0] > 0, 2.0, 1.0)
    mirror[0, kmax[order[1]], kmax[order[2]]] = 0.0  # G = 0

    recip = 2.0 * jnp.pi * jnp.linalg.inv(reduced).T  # rows b_a with a'_a . b_b = 2 pi d_ab
    g = jnp.asarray(m, dtype) @ recip
    g2 = jnp.sum(g * g, axis=-1)
    inside = (g2 <= spec.gmax**2) & jnp.asarray(mirror > 0)
    g2_safe = jnp.where(inside, g2, 1.0)
    weight = jnp.where(inside, jnp.asarray(mirror, dtype) * (2.0 * jnp.pi / volume)
                       * jnp.exp(-g2_safe / (4 * spec.alpha**2)) / g2_safe, 0.0)

    phase = positions @ recip.T  # [N, 3]: t_a = b_a . r
    tables = [jnp.exp(1j * phase[:, a, None] * jnp.asarray(r, dtype))
              for a, r in zip(order, ranges)]  # [N, 2 k_a + 1] each (the first halved)
    t1, t2, t3 = tables
    n = positions.shape[0]
    pairs = (t1[:, :, None] * t2[:, None, :]).reshape(n, -1)  # [N, A B]
    structure = (q.astype(pairs.dtype)[:, None] * pairs).T @ t3  # [A B, C]: S(G)
    weighted = weight.reshape(structure.shape) * structure
    back = jnp.conj(t3) @ weighted.T  # [N, A B]: sum over c of conj(e_3) W S
    return q * jnp.sum(jnp.real(jnp.conj(pairs) * back), axis=-1)


def screened_coulomb(r, qq, alpha: float):
    """Real-space Ewald pair energies ``k q_i q_j erfc(alpha r) / r`` (eV) of distances
    ``r`` (Å, all positive; mask the unwanted ones afterwards) and charge products ``qq``
    (e^2): the pair term of :func:`ewald_energies`, for potentials that add it to their
    own pair pass."""
    return COULOMB_EV_A * qq * erfc(alpha * r) / r


def ewald_energies(graph: Graph, charges, spec: EwaldSpec):
    """[N] per-atom Ewald Coulomb energies, eV (safe under jit, vmap and autodiff).

    Args:
      graph: the structure; periodic in all three directions; edges must include every
        pair within ``spec.cutoff`` (longer edges are ignored).
      charges: [N] charges in units of e (padded atoms are masked out here).
      spec: static settings.

    Returns:
      [N] energies summing to the Ewald energy; NaN everywhere (and so are their
      derivatives) when the cell needs a larger k box than ``spec.kmax`` (see
      :func:`kmax_for`).
    """
    q = jnp.where(graph.mask, charges, 0.0)
    # Real space: erfc-screened pairs within the cutoff, half to each end.
    r = safe_norm(graph.nbr_vec, graph.nbr_mask)
    edge = graph.nbr_mask & (r < spec.cutoff)
    r_safe = jnp.where(edge, r, 1.0)
    qq = q[:, None] * q[graph.nbr_idx]
    pair = jnp.where(edge, screened_coulomb(r_safe, qq, spec.alpha), 0.0)
    return 0.5 * jnp.sum(pair, axis=-1) + long_range_energies(graph, q, spec)


def long_range_energies(graph: Graph, charges, spec: EwaldSpec):
    """[N] the Ewald energies other than the real-space pairs, eV: reciprocal space,
    self energy and the neutralising background (see the module docstring); NaN
    everywhere when the cell needs a larger k box than ``spec.kmax``.

    Args:
      graph: the structure (its positions, cell and mask; edges are not used).
      charges: [N] charges in units of e, zero on padded atoms.
      spec: static settings.
    """
    if not all(graph.pbc):
        raise ValueError("Ewald summation needs a cell periodic in all three directions")
    q = charges
    alpha = spec.alpha
    dtype = graph.positions.dtype

    # Reciprocal space over the sphere |G| <= gmax, in a reduced basis of the lattice.
    cell = graph.cell
    u = jax.lax.stop_gradient(reduce_cell(jax.lax.stop_gradient(cell)))
    reduced = u @ cell
    volume = jnp.abs(jnp.linalg.det(cell))
    e_recip = _reciprocal(graph.positions, reduced, volume, q, spec)

    # Self energy and the neutralising background of a charged cell.
    total_q = jnp.sum(q)
    e_self = -alpha / jnp.sqrt(jnp.pi) * q * q
    e_background = -jnp.pi * q * total_q / (2.0 * alpha**2 * volume)

    energies = COULOMB_EV_A * (e_recip + e_self + e_background)
    lengths = jnp.linalg.norm(reduced, axis=-1)
    # Every G in the sphere has |m_a| <= floor(gmax |a'_a| / 2 pi); the box must hold it.
    fits = jnp.all(lengths * spec.gmax < 2.0 * jnp.pi * (jnp.asarray(spec.kmax, dtype) + 1.0))
    fits = fits | ~jnp.any(graph.mask)  # an empty padding slot is never an error
    # A product, not a select, so that forces and stress turn NaN as well.
    return energies * jnp.where(fits, 1.0, jnp.nan)

"""Oganov-Valle structure fingerprints and their cosine distance, batched in JAX.

The fingerprint of Oganov & Valle (J. Chem. Phys. 130, 104504 (2009)) is a
radial distribution function per pair of species ``(A, B)``, normalised so that an ideal
gas gives zero:

    F_AB(R) = sum_{i in A, cell} sum_{j in B, R_ij < R_max}
              delta(R - R_ij) / (4 pi R_ij^2 (N_A N_B / V) Delta) - 1

with ``N_A`` atoms of species A in the cell of volume ``V``, and bins of width
``Delta``. Each delta function is smeared into a Gaussian of width ``sigma`` and
integrated over every bin (``erf`` differences), so ``F`` is the bin average of the
smeared function and a continuous function of the coordinates. ``F_AB = F_BA``, so
only pairs ``A <= B`` are kept. A fingerprint is intensive: a supercell, a rotation, a
translation or a permutation of the atoms leaves it unchanged.

Clusters (``pbc`` all false) use all pairs, no volume (``V = 1``) and no ``-1``: their
pair distribution is short-ranged (the convention of ASE's ``OFPComparator``).

Two structures of the same composition are compared with the weighted cosine distance
(Oganov & Valle 2009)

    D = 1/2 (1 - sum_AB w_AB F1_AB . F2_AB / sqrt(sum_AB w_AB |F1_AB|^2 sum_AB w_AB |F2_AB|^2))

with ``w_AB = N_A N_B / sum_{A'<=B'} N_A' N_B'``: 0 for identical fingerprints, 1/2 for
orthogonal ones, at most 1.

The kernel (:func:`fingerprint`) acts on one padded structure of a
:class:`~jcsp.structures.Population`, with the periodic images of
:class:`jcsp.neighbors.NeighborSpec`'s static box, and is jitted and vmapped over the
batch (:func:`fingerprint_population`); :func:`fingerprints` is the host-side entry point
that reduces cells, groups structures by image box and chunks large batches.

Example:
  >>> spec = default_spec([diamond, lonsdaleite])
  >>> fp = fingerprints([diamond, lonsdaleite], spec)          # [2, 1, n_bins]
  >>> w = pair_weights(spec, [diamond.numbers, lonsdaleite.numbers])
  >>> float(cosine_distance(fp[0], fp[1], w[0]))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from .. import neighbors as nl
from ..structures.convert import cluster_box
from ..structures.population import Population, bucket_size

Array = jax.Array

#: Default R_max in units of the typical nearest-neighbour distance.
CUTOFF_FACTOR = 3.0
#: Default number of bins per nearest-neighbour distance.
BINS_PER_NEIGHBOR = 30
#: Default Gaussian width in units of the nearest-neighbour distance.
SIGMA_FACTOR = 0.04
#: Gaussian tails beyond this many sigma are dropped (relative weight < 6e-7).
N_SIGMA = 5.0
#: Nodes of the fine histogram grid per sigma.
FINE_PER_SIGMA = 16
#: Smallest group of structures that gets its own image box (and compilation).
MIN_GROUP = 32
#: Smallest chunk: small batches are padded to a power of two at least this large, so
#: the batches of one or two structures a steady-state search archives share one
#: compiled program without computing 16 padded slots each.
MIN_CHUNK = 4
#: A group may run on an already compiled image box that covers its own when that box
#: holds at most this many times its own number of images (no new compilation).
REUSE_FACTOR = 2.0
#: Image boxes compiled so far, per (spec, n_max, pbc, chunk).
_COMPILED: dict = {}
#: Rough bound on the memory (bytes) one chunk of pair vectors may take.
CHUNK_BYTES = 2**28


@dataclasses.dataclass(frozen=True)
class FingerprintSpec:
    """Static description of a fingerprint (hashable: it decides compiled shapes).

    Attributes:
      species: sorted atomic numbers of the species A, B, ... (0 for labels like 'LJ').
      r_max: Å, end of the radial grid; pairs farther apart are ignored.
      n_bins: number of bins on ``[0, r_max)``.
      sigma: Å, width of the Gaussian that smears each pair distance.
    """

    species: tuple[int, ...]
    r_max: float
    n_bins: int
    sigma: float

    def __post_init__(self):
        if not self.species or list(self.species) != sorted(set(self.species)):
            raise ValueError(f"species must be sorted distinct atomic numbers, got "
                             f"{self.species}")
        if not (self.r_max > 0 and self.sigma > 0 and self.n_bins >= 1):
            raise ValueError("r_max and sigma must be positive and n_bins >= 1, got "
                             f"r_max={self.r_max}, sigma={self.sigma}, n_bins={self.n_bins}")

    @property
    def bin_width(self) -> float:
        """Å."""
        return self.r_max / self.n_bins

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """Species pairs (A, B) with A <= B, in the order of the fingerprint rows."""
        s = self.species
        return tuple((s[a], s[b]) for a in range(len(s)) for b in range(a, len(s)))

    @property
    def window(self) -> int:
        """Bins on each side of a pair's own bin that its Gaussian reaches."""
        return int(math.ceil(N_SIGMA * self.sigma / self.bin_width))

    @property
    def reach(self) -> float:
        """Å, largest pair distance that contributes to some bin."""
        return self.r_max + self.window * self.bin_width

    @property
    def radii(self) -> np.ndarray:
        """[n_bins] bin centres, Å."""
        return (np.arange(self.n_bins) + 0.5) * self.bin_width


def _pair_table(n_types: int) -> np.ndarray:
    """[T, T] row of the fingerprint that holds species pair (a, b), symmetric."""
    table = np.zeros((n_types, n_types), np.int32)
    row = 0
    for a in range(n_types):
        for b in range(a, n_types):
            table[a, b] = table[b, a] = row
            row += 1
    return table


def _type_index(spec: FingerprintSpec, species: Array) -> Array:
    """[N] index of each atom's species in ``spec.species``."""
    known = jnp.asarray(spec.species, species.dtype)
    return jnp.argmax(species[:, None] == known[None, :], axis=1).astype(jnp.int32)


def _fine_step(spec: FingerprintSpec) -> float:
    return spec.sigma / FINE_PER_SIGMA


@functools.lru_cache(maxsize=64)
def _kernel_matrix(spec: FingerprintSpec) -> np.ndarray:
    """[Q, n_bins] bin average over bin k of a unit Gaussian centred on fine node q."""
    step = _fine_step(spec)
    nodes = np.arange(int(math.ceil(spec.reach / step)) + 2) * step
    edges = np.arange(spec.n_bins + 1) * spec.bin_width
    z = (edges[None, :] - nodes[:, None]) / (math.sqrt(2.0) * spec.sigma)
    cdf = 0.5 * np.vectorize(math.erf, otypes=[float])(z)
    return (cdf[:, 1:] - cdf[:, :-1]) / spec.bin_width


def fingerprint(spec: FingerprintSpec, frac: Array, cell: Array, species: Array,
                mask: Array, pbc, *, images: tuple[int, int, int] = (0, 0, 0)) -> Array:
    """Fingerprint of one structure (safe under jit and vmap).

    Every pair ``i <= j`` is taken with every lattice shift of the static box
    ``[-n_a..n_a] x [-n_b..n_b] x [-n_c..n_c]`` (``images``, the same box as
    :class:`jcsp.neighbors.NeighborSpec`); pairs closer than ``spec.reach`` add
    ``1 / (4 pi R_ij^2)`` to their species pair's histogram. The histogram lives on a
    fine grid (``sigma / 16``, linear interpolation between its nodes) and is smeared onto
    the bins by one matrix product with the exact bin-averaged Gaussian, which keeps the
    cost to one scatter per pair instead of one per pair and bin (interpolation error
    below 0.1 % of a peak).

    Args:
      spec: the radial grid and species.
      frac: [N, 3] fractional coordinates.
      cell: [3, 3] rows are lattice vectors, Å.
      species: [N] atomic numbers, each one of ``spec.species`` on real atoms.
      mask: [N] bool, real atoms.
      pbc: static (bool, bool, bool), all true or all false.
      images: static image range; for crystals at least
        ``jcsp.neighbors.required_images(cell, spec.reach, pbc)`` (pairs beyond the box
        are missed), ignored for clusters.

    Returns:
      [P, n_bins] F_AB on the bins, rows in the order of ``spec.pairs``; rows of species
      pairs absent from the structure are zero.
    """
    periodic = all(pbc)
    n = frac.shape[0]
    dtype = cell.dtype
    box = nl.NeighborSpec(None, 1, tuple(images) if periodic else (0, 0, 0)).shifts
    iu, ju = np.triu_indices(n)                                      # pairs i <= j
    wrapped = frac - jnp.floor(frac) if periodic else frac
    pos = wrapped @ cell
    vec = (pos[ju] - pos[iu])[:, None, :] + jnp.asarray(box, dtype)[None] @ cell
    r2 = jnp.sum(vec * vec, axis=-1)                                 # [M, S]
    itself = (iu == ju)[:, None] & np.all(box == 0, axis=-1)[None, :]
    t = _type_index(spec, species)
    valid = (mask[iu] & mask[ju])[:, None] & ~jnp.asarray(itself) & (r2 < spec.reach**2)
    r2 = jnp.where(valid, r2, 1.0)
    # Directed pairs of the paper's double sum: i != j of one species counts twice.
    mult = jnp.where((iu != ju) & (t[iu] == t[ju]), 2.0, 1.0).astype(dtype)
    weight = jnp.where(valid, mult[:, None] / (4.0 * jnp.pi * r2), 0.0)

    step = _fine_step(spec)
    kernel = jnp.asarray(_kernel_matrix(spec), dtype)                # [Q, n_bins]
    q_count = kernel.shape[0]
    x = jnp.sqrt(r2) / step
    q0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, q_count - 2)
    part = x - q0
    row = jnp.asarray(_pair_table(len(spec.species)))[t[iu], t[ju]]  # [M]
    base = row[:, None] * q_count + q0
    n_rows = len(spec.pairs)
    fine = jnp.zeros(n_rows * q_count, dtype)
    fine = fine.at[base.ravel()].add((weight * (1.0 - part)).ravel())
    fine = fine.at[(base + 1).ravel()].add((weight * part).ravel())
    hist = fine.reshape(n_rows, q_count) @ kernel                    # [P, n_bins]

    onehot = (t[:, None] == jnp.arange(len(spec.species))[None, :]) & mask[:, None]
    count = jnp.sum(onehot, axis=0).astype(dtype)
    rows = np.array([(a, b) for a in range(len(spec.species))
                     for b in range(a, len(spec.species))], np.int32)
    prod = count[rows[:, 0]] * count[rows[:, 1]]                     # [P] N_A N_B
    volume = jnp.abs(jnp.linalg.det(cell)) if periodic else jnp.ones((), dtype)
    present = prod > 0
    density = jnp.where(present, prod, 1.0) / volume
    out = hist / density[:, None] - (1.0 if periodic else 0.0)
    return jnp.where(present[:, None], out, 0.0)


@functools.partial(jax.jit, static_argnames=("spec", "images", "pbc"))
def fingerprint_population(pop: Population, spec: FingerprintSpec, *,
                           images: tuple[int, int, int] = (0, 0, 0), pbc: tuple) -> Array:
    """[B, P, n_bins] fingerprints of a padded population (jitted, vmapped).

    ``pbc`` repeats ``pop.pbc`` as a static argument; ``images`` must cover every
    crystal of the batch (see :func:`fingerprint`). Empty slots give zero rows.
    """
    def one(frac, cell, species, mask):
        return fingerprint(spec, frac, cell, species, mask, pbc, images=images)

    return jax.vmap(one)(pop.frac, pop.cell, pop.species, pop.mask)


def pair_weights(spec: FingerprintSpec, numbers: Sequence) -> np.ndarray:
    """[B, P] Oganov-Valle weights w_AB = N_A N_B / sum N_A' N_B' (host side).

    Args:
      spec: fingerprint spec.
      numbers: one sequence of atomic numbers per structure.
    """
    out = []
    for z in numbers:
        z = np.asarray(z)
        n = {s: np.sum(z == s) for s in spec.species}
        w = np.array([n[a] * n[b] for a, b in spec.pairs], float)
        out.append(w / w.sum() if w.sum() > 0 else w)
    return np.array(out).reshape(len(out), len(spec.pairs))


def weighted_vector(fp, weights, *, xp=jnp) -> Array:
    """[..., P * n_bins] unit vector whose dot products are the weighted cosines.

    ``fp`` [..., P, n_bins] rows are scaled by ``sqrt(w_AB)`` and the result normalised,
    so that ``cosine_distance(a, b, w) == (1 - u_a . u_b) / 2``. Zero fingerprints stay
    zero (and are then at distance 1/2 from everything). ``xp``: ``jax.numpy`` (default)
    or ``numpy`` (host side, without a dispatch per operation).
    """
    fp = xp.asarray(fp)
    v = fp * xp.sqrt(xp.asarray(weights, fp.dtype))[..., None]
    v = v.reshape(v.shape[:-2] + (-1,))
    norm = xp.linalg.norm(v, axis=-1, keepdims=True)
    return v / xp.where(norm > 0, norm, 1.0)


def cosine_distance(fp_a, fp_b, weights) -> Array:
    """Oganov-Valle weighted cosine distance, 0 (identical) ... 1.

    Args:
      fp_a, fp_b: [..., P, n_bins] fingerprints of structures of the same composition.
      weights: [..., P] pair weights (:func:`pair_weights`).
    """
    ua = weighted_vector(fp_a, weights)
    ub = weighted_vector(fp_b, weights)
    return 0.5 * (1.0 - jnp.sum(ua * ub, axis=-1))


# --- host side ----------------------------------------------------------------------
def nearest_neighbor_distance(structures: Sequence[Atoms]) -> float:
    """Median over all atoms of the distance to their nearest neighbour, Å (host side).

    The natural length scale of a set of structures; clusters use all pairs.
    """
    from ase.neighborlist import neighbor_list

    nearest = []
    for atoms in structures:
        if len(atoms) < 2 and not atoms.pbc.any():
            continue
        if atoms.pbc.all():
            volume = abs(atoms.cell.volume)
            cutoff = 2.0 * (volume / len(atoms)) ** (1 / 3)
            while True:
                i, d = neighbor_list("id", atoms, cutoff)
                if len(np.unique(i)) == len(atoms):
                    break
                cutoff *= 2.0
            best = np.full(len(atoms), np.inf)
            np.minimum.at(best, i, d)
        else:
            pos = atoms.get_positions()
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            np.fill_diagonal(d, np.inf)
            best = d.min(axis=1)
        nearest.append(best)
    if not nearest:
        raise ValueError("need at least one crystal or one cluster of two atoms to choose "
                         "a fingerprint length scale; pass r_max explicitly")
    return float(np.median(np.concatenate(nearest)))


def default_spec(structures: Sequence[Atoms], *, species: Sequence[int] | None = None,
                 r_max: float | None = None, length: float | None = None,
                 cutoff_factor: float = CUTOFF_FACTOR) -> FingerprintSpec:
    """A fingerprint spec scaled to the structures' nearest-neighbour distance (host side).

    With ``d`` the median nearest-neighbour distance (or ``length``): crystals get
    ``R_max = cutoff_factor * d`` (the first four or five shells), clusters
    ``R_max = max(cutoff_factor * d, 1.1 x their largest diameter)`` so that every pair
    counts; bins are ``d / 30`` wide and Gaussians ``0.04 d`` wide, so that rattles of a
    hundredth of ``d`` barely register while shells 0.1 ``d`` apart stay resolved.

    Args:
      structures: the structures to be fingerprinted (all crystals or all clusters).
      species: atomic numbers to cover (default: those present).
      r_max: Å, overrides the grid end.
      length: Å, overrides the nearest-neighbour distance ``d``.
      cutoff_factor: R_max in units of ``d`` for crystals.
    """
    if length is None:
        length = nearest_neighbor_distance(structures)
    if not length > 0:
        raise ValueError(f"the length scale must be positive, got {length}")
    if species is None:
        species = sorted({int(z) for a in structures for z in a.numbers})
    if r_max is None:
        r_max = cutoff_factor * length
        clusters = [a for a in structures if not a.pbc.any() and len(a) > 1]
        if clusters:
            diameter = max(float(np.max(np.linalg.norm(
                a.positions[:, None] - a.positions[None], axis=-1))) for a in clusters)
            r_max = max(r_max, 1.1 * diameter)
    bin_width = length / BINS_PER_NEIGHBOR
    n_bins = int(math.ceil(r_max / bin_width))
    return FingerprintSpec(species=tuple(sorted(int(s) for s in set(species))),
                           r_max=n_bins * bin_width, n_bins=n_bins,
                           sigma=SIGMA_FACTOR * length)


def _pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def reduce_cells(cell: np.ndarray, frac: np.ndarray, *, sweeps: int = 12):
    """Shorter, more orthogonal cells for the same crystals (host side, batched).

    Repeated pairwise Lagrange-Gauss reduction ``a_i -= round(a_i . a_j / |a_j|^2) a_j``:
    a unimodular change of basis, so every lattice and every pair distance is unchanged,
    while skewed cells (common after variable-cell relaxation) need far fewer periodic
    images for a given cutoff.

    Args:
      cell: [B, 3, 3] rows are lattice vectors.
      frac: [B, N, 3] fractional coordinates in ``cell``.

    Returns:
      (cell [B, 3, 3], frac [B, N, 3] in the new cells, wrapped into [0, 1)).
    """
    cell = np.array(cell, float)
    pos = np.einsum("bni,bij->bnj", frac, cell)
    for _ in range(sweeps):
        changed = False
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                m = np.round(np.einsum("bk,bk->b", cell[:, i], cell[:, j])
                             / np.einsum("bk,bk->b", cell[:, j], cell[:, j]))
                if np.any(m != 0):
                    changed = True
                    cell[:, i] -= m[:, None] * cell[:, j]
        if not changed:
            break
    new_frac = np.einsum("bnj,bji->bni", pos, np.linalg.inv(cell))
    return cell, new_frac - np.floor(new_frac)


def _plan_groups(n_max: int, images: np.ndarray) -> dict:
    """{(n_max, box): [structure indices]} with few distinct boxes (few compilations).

    Boxes needed by fewer than :data:`MIN_GROUP` structures are folded into the
    smallest covering box of a bigger group (or into the union of both boxes).
    """
    groups: dict = {}
    for k, box in enumerate(images):
        groups.setdefault(tuple(int(x) for x in box), []).append(k)
    size = lambda box: int(np.prod([2 * i + 1 for i in box]))  # noqa: E731
    while len(groups) > 1:
        box = min(groups, key=lambda x: (len(groups[x]), size(x)))
        if len(groups[box]) >= MIN_GROUP:
            break
        members = groups.pop(box)
        covering = [o for o in groups if all(a >= c for a, c in zip(o, box))]
        if covering:
            target = min(covering, key=size)
        else:
            biggest = max(groups, key=lambda x: len(groups[x]))
            target = tuple(max(a, c) for a, c in zip(biggest, box))
            members += groups.pop(biggest)
        groups[target] = sorted(groups.pop(target, []) + members)
    return {(n_max, box): members for box, members in groups.items()}


def _pack(structures: Sequence[Atoms]):
    """(frac [B, N, 3], cell [B, 3, 3], species [B, N], mask [B, N], pbc) in numpy, as
    :func:`jcsp.structures.convert.from_atoms` packs them (clusters centred in their
    bookkeeping box), without its device arrays: a search fingerprints one or two
    structures at a time, and building a device population cost it more than the
    fingerprint itself."""
    pbcs = {tuple(bool(p) for p in a.pbc) for a in structures}
    if len(pbcs) != 1:
        raise ValueError("fingerprints need all crystals or all clusters, not a mix")
    pbc = pbcs.pop()
    n_max = max(len(a) for a in structures)
    b = len(structures)
    frac = np.zeros((b, n_max, 3))
    cell = np.zeros((b, 3, 3))
    species = np.zeros((b, n_max), np.int32)
    mask = np.zeros((b, n_max), bool)
    for k, atoms in enumerate(structures):
        n = len(atoms)
        pos = atoms.get_positions()
        if all(pbc):
            c = np.asarray(atoms.cell[:], float)
            frac[k, :n] = np.linalg.solve(c.T, pos.T).T
        else:
            c = cluster_box(pos)
            frac[k, :n] = (pos - pos.mean(axis=0) + np.diag(c) / 2) @ np.linalg.inv(c)
        cell[k] = c
        species[k, :n] = atoms.numbers
        mask[k, :n] = True
    return frac, cell, species, mask, pbc


def _compiled_box(spec, n_max, pbc, size, box) -> tuple:
    """``box``, or an already compiled box covering it with at most
    :data:`REUSE_FACTOR` times its images (a search archiving a few structures at a
    time meets many slightly different boxes; each new one would compile)."""
    seen = _COMPILED.setdefault((spec, n_max, pbc, size), set())
    count = lambda b: int(np.prod([2 * i + 1 for i in b]))  # noqa: E731
    covering = [o for o in seen if all(a >= c for a, c in zip(o, box))
                and count(o) <= REUSE_FACTOR * count(box)]
    if covering:
        return min(covering, key=count)
    seen.add(tuple(box))
    return tuple(box)


def fingerprints(structures: Sequence[Atoms] | Population, spec: FingerprintSpec, *,
                 chunk: int | None = None) -> np.ndarray:
    """[B, P, n_bins] fingerprints of many structures, batched (host side).

    Crystal cells are first reduced (:func:`reduce_cells`) and their axes ordered so that
    each structure needs a small box of periodic images; structures are then grouped by
    that box and padded to a rung of :func:`jcsp.structures.population.bucket_size`
    atoms, and each group runs through :func:`fingerprint_population` in chunks of a
    fixed power-of-two size (at least :data:`MIN_CHUNK`), so repeated calls reuse a few
    compiled programs; a group whose box is covered by one compiled before (with at
    most :data:`REUSE_FACTOR` times its images) runs on that one, so a search that
    fingerprints a few structures at a time compiles a few boxes, not one per shape.

    Args:
      structures: ``ase.Atoms`` (all crystals or all clusters) or a population.
      spec: the fingerprint spec (:func:`default_spec`).
      chunk: structures per compiled call (default: chosen from memory use).

    Raises:
      ValueError: when a structure holds a species outside ``spec.species``, or crystals
        and clusters are mixed.
    """
    if isinstance(structures, Population):
        pbc = tuple(bool(p) for p in structures.pbc)
        frac, cell = np.asarray(structures.frac, float), np.asarray(structures.cell, float)
        species, mask = np.asarray(structures.species), np.asarray(structures.mask)
    else:
        if len(structures) == 0:
            return np.zeros((0, len(spec.pairs), spec.n_bins))
        frac, cell, species, mask, pbc = _pack(list(structures))
    if any(pbc) and not all(pbc):
        raise ValueError(f"fingerprints need crystals or clusters, not pbc={pbc}")
    unknown = sorted({int(s) for s in np.unique(species[mask])} - set(spec.species))
    if unknown:
        raise ValueError(f"structures contain species {unknown} that the fingerprint spec "
                         f"does not cover ({list(spec.species)}); build the spec with them")
    b = len(frac)
    if b == 0:
        return np.zeros((0, len(spec.pairs), spec.n_bins))
    n_atoms = mask.sum(axis=1)
    if all(pbc):
        cell, frac = reduce_cells(cell, frac)
        images = nl.required_images(cell, spec.reach, pbc)           # [B, 3]
        order = np.argsort(-images, axis=1, kind="stable")           # most images first
        cell = np.take_along_axis(cell, order[:, :, None], axis=1)
        frac = np.take_along_axis(frac, order[:, None, :], axis=2)
        images = np.take_along_axis(images, order, axis=1)
    else:
        images = np.zeros((b, 3), int)
    groups = _plan_groups(bucket_size(max(int(n_atoms.max()), 1)), images)

    out = np.zeros((b, len(spec.pairs), spec.n_bins))
    for (n_max, box), members in sorted(groups.items()):
        n_box = int(np.prod([2 * i + 1 for i in box]))
        size = chunk
        if size is None:
            per_structure = 8 * 8 * n_max * (n_max + 1) // 2 * n_box
            limit = 2 ** int(math.log2(max(CHUNK_BYTES // per_structure, 1)))
            size = max(1, min(max(_pow2(len(members)), MIN_CHUNK), limit))
        box = _compiled_box(spec, n_max, pbc, size, box)
        for start in range(0, len(members), size):
            part = members[start:start + size]
            f = np.zeros((size, n_max, 3))
            z = np.zeros((size, n_max), species.dtype)
            m = np.zeros((size, n_max), bool)
            c = np.broadcast_to(np.eye(3) * 10.0, (size, 3, 3)).copy()
            for slot, k in enumerate(part):
                real = np.flatnonzero(mask[k])
                f[slot, :len(real)] = frac[k, real]
                z[slot, :len(real)] = species[k, real]
                m[slot, :len(real)] = True
                c[slot] = cell[k]
            sub = Population(frac=jnp.asarray(f), cell=jnp.asarray(c), species=jnp.asarray(z),
                             mask=jnp.asarray(m), pbc=pbc)
            res = np.asarray(fingerprint_population(sub, spec, images=box, pbc=pbc))
            out[part] = res[:len(part)]
    return out


__all__ = ["FingerprintSpec", "fingerprint", "fingerprint_population", "fingerprints",
           "pair_weights", "weighted_vector", "cosine_distance", "default_spec",
           "nearest_neighbor_distance", "reduce_cells"]

"""An E(3)-equivariant message-passing potential in Flax and e3nn-jax.

The network is split in two so that other heads (the diffusion sampler's score, charges,
uncertainty) can reuse the same features:

- :class:`Backbone` maps the neighbor graph of one structure to per-atom equivariant
  features, one :class:`e3nn_jax.IrrepsArray` per interaction layer;
- :class:`EnergyNet` puts an energy readout on every layer and sums them (MACE's
  many-readout scheme), giving per-atom energies in units of ``scale``.

One interaction (NequIP's convolution, Batzner et al., Nat. Commun. 13, 2453 (2022),
followed by MACE's channel-wise product basis, Batatia et al., NeurIPS 2022):

    A_i   = (1/n_avg) sum_j R(r_ij) * (W h_j  (x)  Y(r_ij / |r_ij|))
    B_i   = A_i + sum of channel-wise tensor powers of A_i up to ``correlation``
    h_i'  = Gate(Linear(B_i)) + Linear_{species(i)}(h_i)

with ``Y`` real spherical harmonics up to ``l_max``, ``R`` an MLP of a Bessel radial
basis (Klicpera et al., ICLR 2020) times the polynomial envelope of NequIP (p = 6,
vanishing with two derivatives at the cutoff), and ``(x)`` the Clebsch-Gordan tensor
product. Edges use the dense ``[N, K]`` neighbor layout of :mod:`jcsp.neighbors`, so
aggregation is a sum over the K axis (no scatter). Padded edges and pairs beyond the
cutoff (Verlet skin) get exactly zero weight and finite gradients.

Everything is a pure function of ``(params, graph)``; the float type follows the
parameters and coordinates (float32 for training, float64 for testing).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..graph import safe_norm
from ..units import COULOMB_EV_A

Array = jax.Array

#: the last layer's readouts (``ModelConfig.readout``).
READOUTS = ("mlp", "linear", "linear+mlp")


#: Atomic numbers that ``ModelConfig.sqrt_density = None`` treats as non-metals: the
#: non-metals, noble gases and the covalent metalloids (B, Si, Ge, As, Sb, Te, Po, At),
#: whose binding is directional rather than a function of coordination.
NONMETALS = frozenset({1, 2, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32, 33, 34, 35, 36,
                       51, 52, 53, 54, 84, 85, 86})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static shape of the network (hashable; saved with every checkpoint).

    Attributes:
      species: atomic numbers covered, in type order (empty: taken from the training
        data).
      cutoff: radial cutoff in Å.
      channels: multiplicity of every irrep in the hidden features.
      l_max: highest rotation order of the spherical harmonics (and of the density A).
        4 by default: on the mlearn sets it gives lower test force errors than 3, at
        about twice the step cost (measurements in experiments/mlearn/README.md).
      hidden_l_max: highest rotation order of the node features passed between layers:
        0 (the default) passes invariant features, which makes messages an outer
        product (cheap); higher values give NequIP-style equivariant features and
        tensor-product messages (richer, slower).
      n_layers: interaction layers (receptive field ``n_layers * cutoff``). One layer
        (the default) is an atomic-cluster-expansion-like local model of body order
        ``correlation + 1``; on the mlearn sets it generalises better to unseen surfaces
        than two, at a lower training-step cost, while a second layer fits forces more
        closely (measurements in experiments/mlearn/README.md).
      correlation: body-order of the product basis per layer (1 = NequIP-like, 2 or 3).
      n_radial: Bessel basis functions.
      radial_hidden: width of the radial MLP.
      readout_hidden: width of the last layer's readout MLP.
      readout: the last layer's map from the product basis to the per-atom energy.
        ``"mlp"`` (the default): a gate then an MLP of width ``readout_hidden``.
        ``"linear"``: the energy is linear in the product basis B (no gate, no MLP), a
        linear atomic cluster expansion of body order ``correlation + 1``.
        ``"linear+mlp"``: that linear term plus an MLP of the same (ungated) features.
      avg_neighbors: normaliser of the neighbor sum (set from data before training).
      inner_cutoff: shortest interatomic distance the network is trusted at, Å (set by
        training to the shortest distance in its data). Below it the network's edges
        fade out over ``CORE_WIDTH`` and the ZBL screened nuclear repulsion fades in, so
        atoms pushed closer than any training example meet a physical wall instead of
        an extrapolation; at and above it nothing changes. 0 disables both.
      zero_isolated: the network gives an atom without neighbours exactly zero energy,
        so the per-species reference energy is the isolated atom's energy (as in MACE,
        whose E0s are the isolated atoms' DFT energies).
      sqrt_density: the network's per-atom output is multiplied by the square root of the
        atom's neighbour density ``rho_i = sum_j f(r_ij) / avg_neighbors`` (``f`` the
        cutoff envelope), the second-moment (Finnis-Sinclair, tight-binding) shape of
        cohesion: an atom's binding grows like the square root of its coordination,
        steeply near the free atom and flatly near the bulk. A free atom gets zero, as
        with ``zero_isolated``, so the reference energies are the free atoms' energies
        (training estimates them from the cohesive energies: ``TrainConfig.free_atoms``).
        ``None`` (the default) decides from ``species`` once they are known: on when
        every species is a metal (not in :data:`NONMETALS`), off otherwise: on the
        mlearn sets it lowers the test energy error of the metal (Mo) and raises that of
        the covalent Si (measurements in experiments/mlearn/README.md).
      product_basis: how the invariant product features are computed where a layer's
        outputs are scalars (always with ``hidden_l_max = 0``). ``"symmetric"`` (the
        default): one feature per distinct invariant of the density, i.e. per sorted
        triple ``l1 <= l2 <= l3`` with a 3j symbol (:func:`symmetric_invariants`).
        ``"tensor"``: e3nn's iterated tensor products, which give the same span of
        features but every ordering of the angular momenta separately (48 features per
        channel for ``l_max = 4``, ``correlation = 3``, against 20); checkpoints whose
        ``model.json`` names no ``product_basis`` use it.
    """

    species: tuple[int, ...] = ()
    cutoff: float = 5.0
    channels: int = 32
    l_max: int = 4
    hidden_l_max: int = 0
    n_layers: int = 1
    correlation: int = 3
    n_radial: int = 8
    radial_hidden: int = 32
    readout_hidden: int = 16
    readout: str = "mlp"
    avg_neighbors: float = 20.0
    inner_cutoff: float = 0.0
    zero_isolated: bool = False
    sqrt_density: bool | None = None
    product_basis: str = "symmetric"

    def __post_init__(self):
        if self.sqrt_density is None and self.species:
            object.__setattr__(self, "sqrt_density",
                               not any(z in NONMETALS for z in self.species))
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")
        if self.l_max < 1 or self.n_layers < 1 or self.channels < 1:
            raise ValueError("l_max, n_layers and channels must be at least 1")
        if not 0 <= self.hidden_l_max <= self.l_max:
            raise ValueError("hidden_l_max must lie between 0 and l_max")
        if self.correlation not in (1, 2, 3):
            raise ValueError(f"correlation must be 1, 2 or 3, got {self.correlation}")
        if self.product_basis not in ("symmetric", "tensor"):
            raise ValueError("product_basis must be 'symmetric' or 'tensor', got "
                             f"{self.product_basis!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")

    def __setstate__(self, state: dict):
        # Unpickled from a training state saved before ``product_basis`` (or
        # ``sqrt_density``) existed.
        self.__dict__.update({"product_basis": "tensor", "sqrt_density": False, **state})

    @property
    def free_atom_zero(self) -> bool:
        """Whether an atom without neighbours gets exactly zero from the network."""
        return bool(self.zero_isolated or self.sqrt_density)

    @property
    def n_features(self) -> int:
        """Width of the per-atom features the energy is linear in (``apply_features``)."""
        return {"mlp": self.readout_hidden, "linear": self.channels,
                "linear+mlp": self.channels + self.readout_hidden}[self.readout]

    @property
    def hidden_irreps(self) -> e3nn.Irreps:
        """``channels`` copies of 0e, 1o, 2e, ... up to ``hidden_l_max`` (polar parity)."""
        return e3nn.Irreps([(self.channels, (l, (-1) ** l))
                            for l in range(self.hidden_l_max + 1)])

    @property
    def sh_irreps(self) -> e3nn.Irreps:
        return e3nn.Irreps.spherical_harmonics(self.l_max)


def envelope(u: Array, p: int = 6) -> Array:
    """NequIP's polynomial cutoff ``f(u)``, u = r / cutoff: f(0) = 1, f = f' = f'' = 0
    at u = 1, and exactly 0 beyond (Gasteiger et al., ICLR 2020, eq. 8)."""
    inside = u < 1.0
    u = jnp.where(inside, u, 0.0)
    f = (1.0 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1)
         - p * (p + 1) / 2 * u ** (p + 2))
    return jnp.where(inside, f, 0.0)


#: Width (Å) of the crossover from ZBL repulsion to the network below ``inner_cutoff``.
CORE_WIDTH = 0.5


def core_switch(r: Array, inner_cutoff: float) -> Array:
    """0 below ``inner_cutoff - CORE_WIDTH``, 1 above ``inner_cutoff``, C2 smoothstep
    between. All ones when ``inner_cutoff`` is 0."""
    if inner_cutoff <= 0:
        return jnp.ones_like(r)
    t = jnp.clip((r - (inner_cutoff - CORE_WIDTH)) / CORE_WIDTH, 0.0, 1.0)
    return t ** 3 * (10.0 - 15.0 * t + 6.0 * t ** 2)


def zbl_pair(r: Array, z_i: Array, z_j: Array) -> Array:
    """Ziegler-Biersack-Littmark universal screened nuclear repulsion (eV), r > 0 in Å.

    ``E = Z_i Z_j e^2 / (4 pi eps0 r) phi(r / a)``, ``a = 0.46850 / (Z_i^0.23 + Z_j^0.23)``
    Å, phi a sum of four exponentials (Ziegler, Biersack & Littmark, The Stopping and
    Range of Ions in Solids, 1985; LAMMPS ``pair_style zbl``).
    """
    z_i = z_i.astype(r.dtype)
    z_j = z_j.astype(r.dtype)
    a = 0.46850 / (z_i ** 0.23 + z_j ** 0.23)
    x = r / a
    phi = (0.18175 * jnp.exp(-3.19980 * x) + 0.50986 * jnp.exp(-0.94229 * x)
           + 0.28022 * jnp.exp(-0.40290 * x) + 0.02817 * jnp.exp(-0.20162 * x))
    return COULOMB_EV_A * z_i * z_j / r * phi


#: Regulariser of ``sqrt_density`` (in units of ``avg_neighbors``): keeps the square root
#: differentiable as an atom's last neighbour leaves the cutoff.
DENSITY_EPS = 1e-3


def edge_weights(config: ModelConfig, nbr_vec: Array, nbr_mask: Array):
    """Distances (safe: a mid-range stand-in on non-edges), the edge mask (real pairs
    inside the cutoff) and each edge's weight (envelope times the ZBL core switch)."""
    r = safe_norm(nbr_vec, nbr_mask)
    edge = nbr_mask & (r < config.cutoff)
    r_safe = jnp.where(edge, r, 0.5 * config.cutoff)
    weight = jnp.where(edge, envelope(r_safe / config.cutoff)
                       * core_switch(r_safe, config.inner_cutoff), 0.0)
    return r_safe, edge, weight


def sqrt_density(config: ModelConfig, nbr_vec: Array, nbr_mask: Array) -> Array:
    """[N] ``sqrt(rho + eps) - sqrt(eps)`` with ``rho`` the summed edge weights over
    ``avg_neighbors``: 0 for an atom without neighbours, smooth as neighbours come and
    go."""
    _, _, weight = edge_weights(config, nbr_vec, nbr_mask)
    rho = weight.sum(axis=1) / config.avg_neighbors
    return jnp.sqrt(rho + DENSITY_EPS) - jnp.sqrt(DENSITY_EPS)


@functools.lru_cache(maxsize=16)
def _invariant_couplings(l_max: int) -> tuple:
    """((l1, l2, (l3, ...), CG [2l1+1, 2l2+1, sum(2l3+1)]), ...) for the cubic invariants."""
    out = []
    for l1 in range(l_max + 1):
        for l2 in range(l1, l_max + 1):
            l3s = tuple(l3 for l3 in range(l2, min(l1 + l2, l_max) + 1) if (l1 + l2 + l3) % 2 == 0)
            if l3s:
                cg = np.concatenate([np.asarray(e3nn.clebsch_gordan(l1, l2, l3)) for l3 in l3s], -1)
                out.append((l1, l2, l3s, cg))
    return tuple(out)


def symmetric_invariants(a: Array, l_max: int, correlation: int) -> Array:
    """The rotation invariants of a polar density up to degree ``correlation``, once each.

    Args:
      a: [..., (l_max + 1)^2] components of ``0e + 1o + ... + l_max`` (e3nn's order).
      l_max, correlation: highest rotation order in ``a``; polynomial degree (1, 2, 3).

    Returns:
      [..., P]: ``a_0`` (degree 1); ``|a_l|^2 / sqrt(2l + 1)`` for every l (degree 2);
      ``sum C(l1 m1, l2 m2, l3 m3) a_l1m1 a_l2m2 a_l3m3`` for every triple
      ``l1 <= l2 <= l3 <= l_max`` obeying the triangle rule with ``l1 + l2 + l3`` even
      (degree 3; C the real Clebsch-Gordan coefficients, unit Frobenius norm).

    Each multiset of angular momenta has exactly one cubic invariant (the 3j symbol is
    unique), and the ordering of ``l1, l2, l3`` only flips its sign, so these span the
    same features as the scalar parts of e3nn's iterated ``tensor_product(a, a)`` and
    ``(a (x) a) (x) a`` (``tests/test_ml_model.py`` checks this) with the repeats left
    out: 20 per channel instead of 48 for ``l_max = 4``, and far cheaper to
    differentiate twice (as training does) than the iterated product.
    """
    blocks = [a[..., l * l:(l + 1) ** 2] for l in range(l_max + 1)]
    out = [blocks[0][..., 0]]
    if correlation >= 2:
        out += [jnp.sum(x * x, axis=-1) / float(np.sqrt(2 * l + 1)) for l, x in enumerate(blocks)]
    if correlation >= 3:
        for l1, l2, l3s, cg in _invariant_couplings(l_max):
            pair = jnp.einsum("...m,...p,mpq->...q", blocks[l1], blocks[l2],
                              jnp.asarray(cg, a.dtype))
            start = 0
            for l3 in l3s:
                out.append(jnp.sum(pair[..., start:start + 2 * l3 + 1] * blocks[l3], axis=-1))
                start += 2 * l3 + 1
    return jnp.stack(out, axis=-1)


def bessel_basis(r: Array, n: int, cutoff: float) -> Array:
    """``sqrt(2/c) sin(k pi r / c) / r`` for k = 1..n; r > 0 assumed. [..., n]"""
    k = jnp.arange(1, n + 1, dtype=r.dtype)
    # times 1/r, not divided by r: see jcsp.relax.kernel on rewrites of divisions
    return (jnp.sqrt(2.0 / cutoff) * jnp.sin(k * jnp.pi * r[..., None] / cutoff)
            * (1.0 / r)[..., None])


class RadialMLP(nn.Module):
    """Edge weights from the radial basis: [..., n_radial] -> [..., n_out].

    One hidden SiLU layer of width ``hidden`` (0: a linear map of the basis). With
    ``split=True`` it returns the input of its last (linear, bias-free) map and that
    map's kernel instead, for callers that contract the edges before applying it.
    """

    hidden: int
    n_out: int

    @nn.compact
    def __call__(self, basis: Array, *, split: bool = False):
        x = basis
        if self.hidden:
            x = jax.nn.silu(nn.Dense(self.hidden, use_bias=False)(x))
        # The parameters of ``nn.Dense(n_out, use_bias=False)`` under its automatic name.
        kernel = _Kernel(x.shape[-1], self.n_out, x.dtype,
                         name=f"Dense_{1 if self.hidden else 0}")()
        return (x, kernel) if split else x @ kernel


class _Kernel(nn.Module):
    """A bare ``[n_in, n_out]`` weight matrix initialised like ``nn.Dense``'s."""

    n_in: int
    n_out: int
    dtype: object

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", nn.initializers.lecun_normal(), (self.n_in, self.n_out),
                          jnp.float32).astype(self.dtype)


class SpeciesLinear(nn.Module):
    """Equivariant linear map with one weight set per species.

    The same parameters (names, shapes, initialisation) as ``e3nn.flax.Linear(...,
    num_indexed_weights=n_species, force_irreps_out=True)``, but applied as one dense
    map of all atoms per species followed by a one-hot pick, instead of copying a weight
    matrix to every atom (slow on a CPU).
    """

    irreps_out: e3nn.Irreps
    n_species: int

    @nn.compact
    def __call__(self, types: Array, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        x = x.remove_zero_chunks().regroup()
        lin = e3nn.FunctionalLinear(x.irreps, e3nn.Irreps(self.irreps_out).simplify())
        weights = [
            self.param(f"w[{ins.i_in},{ins.i_out}] {lin.irreps_in[ins.i_in]},"
                       f"{lin.irreps_out[ins.i_out]}",
                       nn.initializers.normal(stddev=ins.weight_std),
                       (self.n_species,) + ins.path_shape, x.dtype)
            for ins in lin.instructions]
        apply = e3nn.utils.vmap(lin, in_axes=(None, 0))
        if self.n_species == 1:
            return apply([w[0] for w in weights], x)
        onehot = jax.nn.one_hot(types, self.n_species, dtype=x.dtype)
        out = sum(onehot[:, s, None] * apply([w[s] for w in weights], x).array
                  for s in range(self.n_species))
        return e3nn.IrrepsArray(lin.irreps_out, out)


class Interaction(nn.Module):
    """One message-passing layer; see the module docstring."""

    config: ModelConfig
    irreps_out: e3nn.Irreps

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray, types: Array, nbr_idx: Array, sh: e3nn.IrrepsArray,
                 radial: Array, species_h: Array | None = None) -> e3nn.IrrepsArray:
        """
        Args:
          h: [N, irreps] node features.
          types: [N] species type indices.
          nbr_idx: [N, K] neighbor indices.
          sh: [N, K, sh_irreps] spherical harmonics of the edge directions times the
            envelope (0 on padded edges and beyond the cutoff); the messages are linear
            in them, so the envelope is applied once here for every layer.
          radial: [N, K, n_radial] radial basis.
          species_h: [S, C] the features of each species when ``h`` is the species
            embedding (the first layer), else None.

        Returns:
          [N, irreps_out] new node features.
        """
        cfg = self.config
        c = cfg.channels
        if species_h is not None:
            # h_j is the embedding of j's species, and R is linear in its last map W:
            # A_i,clm = sum_{s,q} h_s,c W_q,lc sum_{j of species s} phi_q(r_ij) Y_lm(r_ij),
            # so the edges carry only the hidden radial features phi times Y (the same
            # function as below, several times cheaper to differentiate twice).
            phi, kernel = RadialMLP(cfg.radial_hidden, c * (cfg.l_max + 1),
                                    name="radial")(radial, split=True)
            kernel = kernel.reshape(-1, cfg.l_max + 1, c)  # [Q, L, C]
            h_s = nn.Dense(c, use_bias=False, name="up")(species_h)  # [S, C]
            if len(cfg.species) == 1:
                z = jnp.einsum("nkq,nkm->nqm", phi, sh.array)[:, None]  # [N, 1, Q, lm]
            else:
                nbr_s = jax.nn.one_hot(types[nbr_idx], len(cfg.species), dtype=phi.dtype)
                z = jnp.einsum("nks,nkq,nkm->nsqm", nbr_s, phi, sh.array)
            ls = np.repeat(np.arange(cfg.l_max + 1), 2 * np.arange(cfg.l_max + 1) + 1)
            weights = h_s[:, None, None, :] * kernel[None][:, :, ls, :]  # [S, Q, lm, C]
            a = e3nn.IrrepsArray(cfg.sh_irreps, jnp.einsum("nsqm,sqmc->ncm", z, weights))
        elif h.irreps.lmax == 0:
            # Invariant node features: the message W h_j (x) Y is an outer product, so the
            # neighbor sum is one contraction per l (MACE's density A_i).
            h_up = nn.Dense(c, use_bias=False, name="up")(h.array)[nbr_idx]  # [N, K, C]
            w = RadialMLP(cfg.radial_hidden, c * (cfg.l_max + 1), name="radial")(radial)
            w = w.reshape(w.shape[:-1] + (cfg.l_max + 1, c))
            chunks = []
            for l in range(cfg.l_max + 1):
                y = sh.array[..., l * l:(l + 1) * (l + 1)]  # [N, K, 2l+1]
                chunks.append(jnp.einsum("nkc,nkm->ncm", h_up * w[..., l, :], y))
            a = e3nn.IrrepsArray(cfg.sh_irreps, jnp.concatenate(chunks, -1))  # [N, C, sh]
        else:
            up = e3nn.flax.Linear(h.irreps, name="up")(h)
            msg = e3nn.tensor_product(up[nbr_idx], sh, filter_ir_out=cfg.sh_irreps)
            w = RadialMLP(cfg.radial_hidden, msg.irreps.num_irreps, name="radial")(radial)
            msg = msg * w
            a = e3nn.flax.Linear(c * cfg.sh_irreps, name="a_mix")(e3nn.sum(msg, axis=1))
            a = a.mul_to_axis(c)  # [N, C, sh]
        a = a / cfg.avg_neighbors

        # Channel-wise product basis up to the correlation order (MACE's B features).
        out = e3nn.Irreps(self.irreps_out)
        keep = [ir for _, ir in out]
        if cfg.product_basis == "symmetric" and out.lmax == 0:
            inv = symmetric_invariants(a.array, cfg.l_max, cfg.correlation)  # [N, C, P]
            b = e3nn.IrrepsArray(f"{inv.shape[1] * inv.shape[2]}x0e",
                                 inv.reshape(inv.shape[0], -1))
        else:
            terms = [a.filter(keep=keep)]
            power = a
            for order in range(2, cfg.correlation + 1):
                last = order == cfg.correlation
                power = e3nn.tensor_product(power, a,
                                            filter_ir_out=keep if last else cfg.sh_irreps)
                terms.append(power.filter(keep=keep))
            b = e3nn.concatenate(terms, axis=-1).regroup().axis_to_mul()  # [N, C * paths]

        n_gates = sum(mul for mul, ir in out if ir.l > 0)
        n_scalars = sum(mul for mul, ir in out if ir.l == 0)
        gate_in = e3nn.Irreps(f"{n_scalars + n_gates}x0e") + e3nn.Irreps(
            [(mul, ir) for mul, ir in out if ir.l > 0])
        x = SpeciesLinear(gate_in, len(cfg.species), name="product")(types, b)
        if n_gates or cfg.readout == "mlp":
            x = e3nn.gate(x, even_act=jax.nn.silu, even_gate_act=jax.nn.sigmoid)
        skip = SpeciesLinear(out, len(cfg.species), name="skip")(types, h)
        return x + skip


class Backbone(nn.Module):
    """Graph -> per-layer equivariant node features (reusable by other heads)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, types: Array, nbr_idx: Array, nbr_vec: Array,
                 nbr_mask: Array) -> list[e3nn.IrrepsArray]:
        """
        Args:
          types: [N] species type indices (0..n_species-1).
          nbr_idx: [N, K] neighbor indices; nbr_vec: [N, K, 3] edge vectors, Å;
          nbr_mask: [N, K] real edges.

        Returns:
          One [N, irreps] feature array per layer; the last holds scalars only.
        """
        cfg = self.config
        r_safe, edge, weight = edge_weights(cfg, nbr_vec, nbr_mask)
        radial = bessel_basis(r_safe, cfg.n_radial, cfg.cutoff)
        # unit vectors as vec times 1/r (see jcsp.relax.kernel on rewrites of divisions)
        unit = jnp.where(edge[..., None], nbr_vec * (1.0 / r_safe)[..., None],
                         jnp.full_like(nbr_vec, 1.0 / np.sqrt(3.0)))
        sh = e3nn.spherical_harmonics(cfg.sh_irreps, unit, normalize=False,
                                      normalization="component") * weight[..., None]

        onehot = jax.nn.one_hot(types, len(cfg.species), dtype=nbr_vec.dtype)
        embed = nn.Dense(cfg.channels, use_bias=False, name="embed")
        h = e3nn.IrrepsArray(f"{cfg.channels}x0e", embed(onehot))
        species_h = embed(jnp.eye(len(cfg.species), dtype=onehot.dtype))  # [S, C]
        features = []
        for layer in range(cfg.n_layers):
            last = layer == cfg.n_layers - 1
            irreps_out = e3nn.Irreps(f"{cfg.channels}x0e") if last else cfg.hidden_irreps
            h = Interaction(cfg, irreps_out, name=f"interaction_{layer}")(
                h, types, nbr_idx, sh, radial, species_h if layer == 0 else None)
            features.append(h)
        return features


class EnergyNet(nn.Module):
    """Backbone plus a readout per layer: per-atom energies, in units of ``scale``."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.backbone = Backbone(cfg, name="backbone")
        last = cfg.n_layers - 1
        self.readouts = [nn.Dense(1, use_bias=False, name=f"readout_{layer}")
                         for layer in range(last)]
        if cfg.readout != "mlp":
            self.linear = nn.Dense(1, use_bias=False, name=f"linear_{last}")
        if cfg.readout != "linear":
            self.hidden = nn.Dense(cfg.readout_hidden, use_bias=False,
                                   name=f"readout_{last}_hidden")
            self.head = nn.Dense(1, use_bias=False, name=f"readout_{last}")

    def _energy(self, types, nbr_idx, nbr_vec, nbr_mask) -> tuple[Array, Array]:
        """[N] per-atom outputs and the [N, n_features] features they are linear in."""
        cfg = self.config
        features = self.backbone(types, nbr_idx, nbr_vec, nbr_mask)
        energy = 0.0
        for layer, h in enumerate(features[:-1]):
            energy = energy + self.readouts[layer](h.filter(keep="0e").array)[:, 0]
        scalars = features[-1].filter(keep="0e").array
        if cfg.readout != "mlp":
            # Linear in the product basis: the last layer left its features ungated.
            energy = energy + self.linear(scalars)[:, 0]
        x = scalars
        if cfg.readout != "linear":
            x = jax.nn.silu(self.hidden(scalars))
            energy = energy + self.head(x)[:, 0]
            if cfg.readout == "linear+mlp":
                x = jnp.concatenate([scalars, x], axis=-1)
        return energy, x

    def __call__(self, types: Array, nbr_idx: Array, nbr_vec: Array, nbr_mask: Array) -> Array:
        n = types.shape[0]
        if self.config.zero_isolated:
            # One extra atom per species without any neighbour, in the same call (no extra
            # operations, which is what costs on a CPU): what the network gives it is
            # taken off every atom of that species, so the reference energy is exactly
            # the isolated atom's.
            s, k = len(self.config.species), nbr_idx.shape[1]
            types = jnp.concatenate([types, jnp.arange(s, dtype=types.dtype)])
            nbr_idx = jnp.concatenate([nbr_idx, jnp.zeros((s, k), nbr_idx.dtype)])
            nbr_vec = jnp.concatenate([nbr_vec, jnp.ones((s, k, 3), nbr_vec.dtype)])
            nbr_mask = jnp.concatenate([nbr_mask, jnp.zeros((s, k), bool)])
        energy, features = self._energy(types, nbr_idx, nbr_vec, nbr_mask)
        # The features the energy is linear in (the extrapolation grade's input).
        self.sow("intermediates", "features", features[:n])
        if self.config.zero_isolated:
            energy = energy[:n] - energy[n:][types[:n]]
        if self.config.sqrt_density:
            energy = energy[:n] * sqrt_density(self.config, nbr_vec[:n], nbr_mask[:n])
        return energy


def init_params(config: ModelConfig, key: Array, *, dtype=jnp.float32) -> dict:
    """Random network parameters for ``config`` (a pytree of ``dtype`` arrays)."""
    if not config.species:
        raise ValueError("the model configuration has no species; set ModelConfig.species "
                         "or let training take them from the data")
    n, k = 4, 3
    types = jnp.zeros(n, jnp.int32)
    idx = jnp.tile(jnp.arange(k, dtype=jnp.int32), (n, 1))
    vec = jax.random.normal(key, (n, k, 3), dtype) + 1.0
    mask = jnp.ones((n, k), bool)
    params = EnergyNet(config).init(key, types, idx, vec, mask)["params"]
    return jax.tree.map(lambda x: x.astype(dtype), params)


def cast(tree, dtype) -> object:
    """Every floating array of ``tree`` in ``dtype``."""
    def one(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(one, tree)


def count_parameters(params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def apply_energy(config: ModelConfig, net_params, types, nbr_idx, nbr_vec, nbr_mask) -> Array:
    """[N] network outputs (dimensionless) for one graph."""
    return EnergyNet(config).apply({"params": net_params}, types, nbr_idx, nbr_vec, nbr_mask)


def apply_features(config: ModelConfig, net_params, types, nbr_idx, nbr_vec, nbr_mask) -> Array:
    """[N, readout_hidden] per-atom features on which the energy readout is linear (the
    last layer's hidden readout activations): the descriptor of :mod:`jcsp.ml.domain`."""
    _, state = EnergyNet(config).apply({"params": net_params}, types, nbr_idx, nbr_vec,
                                       nbr_mask, mutable=["intermediates"])
    return state["intermediates"]["features"][0]


__all__: Sequence[str] = ["Backbone", "EnergyNet", "ModelConfig", "apply_energy",
                          "apply_features", "bessel_basis", "cast", "count_parameters",
                          "envelope", "init_params"]

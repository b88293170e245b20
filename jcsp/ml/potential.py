"""The equivariant network as a jcsp :class:`~jcsp.potentials.Potential`.

Per-atom energy ``E_i = e_ref[species_i] + scale * net_i``: per-species reference
energies (least squares on the training energies) and a scale (the RMS force of the
training data) make the network output of order one. Forces and stress come from
:mod:`jcsp.derivatives` like for every other potential, so relaxations, searches and
the ASE calculator work unchanged.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp

from ..graph import Graph, safe_norm
from ..potentials.base import Potential, to_numbers
from .model import (ModelConfig, apply_energy, apply_features, cast, core_switch,
                    count_parameters, init_params, zbl_pair)


class _Network(Potential):
    """What the single network and the committee share: a :class:`ModelConfig`, per-atom
    features, a training domain, a float type."""

    has_features = True

    def __init__(self, config: ModelConfig, params):
        self.config = config
        self.cutoff = float(config.cutoff)
        self.species = tuple(to_numbers(config.species))
        self.params = params
        self.domain = None  # training domain (jcsp.ml.domain.Domain), set by load / train

    def astype(self, dtype) -> "_Network":
        """The same potential with parameters in ``dtype`` (float32 or float64)."""
        out = copy.copy(self)
        out.params = cast(self.params, dtype)
        return out

    @property
    def n_parameters(self) -> int:
        """Trainable parameters (of all members, for a committee)."""
        net = (self.params or {}).get("net")
        return 0 if net is None else count_parameters(net)

    def _describe(self) -> str:
        c = self.config
        return (f"species={self.species}, cutoff={c.cutoff}, channels={c.channels}, "
                f"l_max={c.l_max}, layers={c.n_layers}, correlation={c.correlation}")


class EquivariantPotential(_Network):
    """E(3)-equivariant message-passing potential (see :mod:`jcsp.ml.model`).

    Args:
      config: the network's static configuration.
      params: ``{"net": ..., "e_ref": [S], "scale": []}``; random network weights,
        zero reference energies and unit scale when omitted.
      key: PRNG key for random initialisation.
      dtype: float type of freshly initialised parameters.
    """

    def __init__(self, config: ModelConfig, params=None, *, key=None, dtype=jnp.float64):
        if params is None:
            key = jax.random.PRNGKey(0) if key is None else key
            params = {"net": init_params(config, key, dtype=dtype),
                      "e_ref": jnp.zeros(len(config.species), dtype),
                      "scale": jnp.ones((), dtype)}
        super().__init__(config, params)

    def energies(self, params, graph: Graph):
        types = self.type_index(graph.species)
        out = apply_energy(self.config, params["net"], types, graph.nbr_idx, graph.nbr_vec,
                           graph.nbr_mask)
        return params["e_ref"][types] + params["scale"] * out + self.core_energies(graph)

    def features(self, params, graph: Graph):
        """[N, F] per-atom descriptors on which the energy readout is linear."""
        return apply_features(self.config, params["net"], self.type_index(graph.species),
                              graph.nbr_idx, graph.nbr_vec, graph.nbr_mask)

    def core_energies(self, graph: Graph):
        """[N] ZBL repulsion below ``inner_cutoff`` (half of each pair to each atom)."""
        inner = self.config.inner_cutoff
        if inner <= 0:
            return jnp.zeros(graph.species.shape, graph.nbr_vec.dtype)
        r = safe_norm(graph.nbr_vec, graph.nbr_mask)
        close = graph.nbr_mask & (r < inner)
        r_safe = jnp.where(close, r, inner)
        z_j = graph.species[graph.nbr_idx]
        pair = zbl_pair(r_safe, graph.species[:, None], z_j) * (1.0 - core_switch(r_safe, inner))
        return 0.5 * jnp.sum(jnp.where(close, pair, 0.0), axis=1)

    def __repr__(self) -> str:
        return f"EquivariantPotential({self._describe()}, parameters={self.n_parameters})"


class Committee(_Network):
    """K equivariant potentials of one configuration, evaluated together.

    ``params`` is the members' parameters stacked on a leading axis [K, ...] (reference
    energies and scale shared). :meth:`energies` is the committee mean, so a committee
    drops into relaxations and searches like any potential; it declares
    ``committee_size`` and ``member`` (:class:`~jcsp.potentials.Potential`), and
    :meth:`member_energies` gives every member's per-atom energies in one vmapped call,
    from which :class:`jcsp.JCSPCalculator` derives the spread of energy, forces and
    stress.
    """

    def __init__(self, config: ModelConfig, params):
        super().__init__(config, params)
        self.member = EquivariantPotential(config, params={"net": None, "e_ref": None,
                                                           "scale": None})

    @property
    def committee_size(self) -> int:
        return int(jax.tree.leaves(self.params["net"])[0].shape[0])

    def member_params(self, params):
        """The parameters of each member, stacked: a pytree with a leading K axis."""
        k = jax.tree.leaves(params["net"])[0].shape[0]
        fixed = {name: jnp.broadcast_to(v, (k,) + jnp.shape(v))
                 for name, v in params.items() if name != "net"}
        return {"net": params["net"], **fixed}

    def features(self, params, graph: Graph):
        """[K, N, F] per-atom descriptors of every member."""
        return jax.vmap(lambda p: self.member.features(p, graph))(self.member_params(params))

    def member_energies(self, params, graph: Graph):
        """[K, N] per-atom energies of every member."""
        return jax.vmap(lambda p: self.member.energies(p, graph))(self.member_params(params))

    def energies(self, params, graph: Graph):
        return jnp.mean(self.member_energies(params, graph), axis=0)

    def __repr__(self) -> str:
        k = self.committee_size
        return (f"Committee(size={k}, {self._describe()}, parameters per member="
                f"{self.n_parameters // max(k, 1)})")


class GuardedCommittee(Committee):
    """A committee whose energy turns NaN where its members disagree too much.

    The energy is the committee mean, as for :class:`Committee`, while the spread of the
    members' energies per atom, ``std_k(sum_i e_ki) / N`` (eV/atom), stays at or below
    ``params["max_spread"]``; above it every per-atom energy is NaN. A relaxation
    (:func:`jcsp.relax`, any search) treats a non-finite energy as a failure and
    freezes that structure at the geometry where it happened, so a relaxation that
    walks out of what the committee knows stops there, and the structure comes back
    failed, with that geometry, for labelling by the reference method
    (:mod:`jcsp.search.active`). The threshold is a parameter, not static: changing it
    (or the weights) never recompiles.

    Args:
      config: the network's configuration.
      params: a committee's parameters plus ``"max_spread"`` (eV/atom, a scalar).
    """

    def member_params(self, params):
        return super().member_params({k: v for k, v in params.items() if k != "max_spread"})

    def spread(self, params, graph: Graph):
        """Standard deviation of the members' energies per atom (eV/atom, a scalar)."""
        totals = jnp.sum(jnp.where(graph.mask, self.member_energies(params, graph), 0.0), axis=1)
        return jnp.std(totals) / jnp.maximum(jnp.sum(graph.mask), 1)

    def energies(self, params, graph: Graph):
        mean = super().energies(params, graph)
        trusted = self.spread(params, graph) <= params["max_spread"]
        return jnp.where(trusted, mean, jnp.nan)

    def __repr__(self) -> str:
        return "Guarded" + super().__repr__()

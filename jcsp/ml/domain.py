"""Where a trained potential can be trusted: the extrapolation grade of a structure.

The network's energy is a linear readout of per-atom features ``x``
(:func:`jcsp.ml.model.apply_features`). For a model linear in ``x`` and fitted by least
squares, the leverage ``x^T (X^T X)^-1 x`` is the variance of its prediction in units of
the noise: small inside the data that fixed the weights, large outside it. MTP's active
learning rests on the same quantity (the D-optimality extrapolation grade; Podryabinkin
and Shapeev, Comput. Mater. Sci. 140, 171 (2017)). Here, with the training atoms'
features of mean ``mu`` and covariance ``Sigma``,

    d(x) = sqrt((x - mu)^T Sigma^-1 (x - mu)),   grade(x) = d(x) / max_train d,

so a grade <= 1 lies within the extent of the training atoms and a grade of 3 is three
times as far out as the farthest of them. A structure's grade is the largest of its
atoms' (and, for a committee, of its members'). Relaxations and searches that wander into
a hole of the fitted energy surface, a dense arrangement no training structure resembled,
show up with grades of several; :func:`jcsp.search` sets such structures aside.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import neighbors as nl
from ..capacity import Capacity
from ..graph import make_graph
from ..structures.convert import from_atoms


@dataclasses.dataclass(frozen=True)
class Domain:
    """Feature statistics of the training atoms, one row per committee member.

    Attributes:
      mean: [K, F]; precision: [K, F, F] inverse (regularised) covariance;
      scale: [K] the largest Mahalanobis distance over the training atoms.
    """

    mean: np.ndarray
    precision: np.ndarray
    scale: np.ndarray

    def grade(self, features: np.ndarray) -> np.ndarray:
        """[n] per-atom grades from [K, n, F] features (largest over members)."""
        diff = np.asarray(features, float) - self.mean[:, None, :]
        d2 = np.einsum("kni,kij,knj->kn", diff, self.precision, diff)
        return np.max(np.sqrt(np.maximum(d2, 0.0)) / self.scale[:, None], axis=0)

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "precision": self.precision.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "Domain":
        try:
            mean = np.asarray(data["mean"], float)
            precision = np.asarray(data["precision"], float)
            scale = np.asarray(data["scale"], float)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed training-domain record ({exc})") from exc
        k, f = mean.shape
        if precision.shape != (k, f, f) or scale.shape != (k,) or not np.all(scale > 0):
            raise ValueError("malformed training-domain record (inconsistent shapes)")
        return cls(mean, precision, scale)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _features(potential, params, pop_arrays, spec, pbc):
    frac, cell, species, mask = pop_arrays

    def one(frac, cell, species, mask):
        nbrs = nl.build(spec, frac, cell, mask, pbc)
        graph = make_graph(frac @ cell, cell, species, mask, nbrs, pbc)
        feats = potential.features(params, graph)
        return feats[None] if potential.committee_size is None else feats  # [K, N, F]

    return jax.vmap(one)(frac, cell, species, mask)


def _features_with(potential, structures, chunk: int, capacity: Capacity | None):
    """(features as in :func:`atom_features`, the capacity that sized the lists)."""
    if not potential.has_features:
        raise TypeError(f"{type(potential).__name__} provides no per-atom features to grade; "
                        "use a learned potential (jcsp.ml.EquivariantPotential or Committee)")
    structures = list(structures)
    if not structures:
        return [], capacity
    potential.check_species({int(z) for a in structures for z in a.numbers})
    pop = from_atoms(structures, n_max=max(len(a) for a in structures))
    if capacity is None:
        capacity = Capacity(potential, pop.pbc)
    capacity.fit(pop)
    out = []
    for start in range(0, len(structures), chunk):
        idx = np.arange(start, start + chunk) % len(structures)  # full chunks: one shape
        arrays = tuple(jnp.asarray(np.asarray(a)[idx])
                       for a in (pop.frac, pop.cell, pop.species, pop.mask))
        feats = np.asarray(_features(potential, potential.params, arrays, capacity.spec,
                                     pop.pbc))
        for j, m in enumerate(range(start, min(start + chunk, len(structures)))):
            out.append(feats[j][:, : len(structures[m])])
    return out, capacity


def atom_features(potential, structures, *, chunk: int = 32) -> list[np.ndarray]:
    """Per-atom readout features of each structure: a list of [K, n_atoms, F] arrays.

    The structures are padded to one size and evaluated ``chunk`` at a time (one
    compilation for the whole list).
    """
    return _features_with(potential, structures, chunk, None)[0]


def fit_domain(potential, structures, *, ridge: float = 1e-6) -> Domain:
    """The training domain of ``potential`` from its training structures."""
    feats = np.concatenate(atom_features(potential, structures), axis=1)  # [K, A, F]
    mean = feats.mean(axis=1)
    diff = feats - mean[:, None, :]
    cov = np.einsum("kai,kaj->kij", diff, diff) / max(feats.shape[1] - 1, 1)
    f = cov.shape[-1]
    reg = ridge * np.trace(cov, axis1=1, axis2=2)[:, None, None] / f + 1e-12
    precision = np.linalg.inv(cov + reg * np.eye(f))
    d2 = np.einsum("kai,kij,kaj->ka", diff, precision, diff)
    scale = np.sqrt(np.maximum(d2.max(axis=1), 1e-12))
    return Domain(mean, precision, scale)


def _require_domain(potential) -> Domain:
    domain = potential.domain
    if domain is None:
        raise ValueError("this potential has no training domain on record; models trained "
                         "by `jcsp train` from this version on carry one")
    return domain


def _grades(domain: Domain, features: list) -> np.ndarray:
    return np.array([float(domain.grade(f).max()) if f.shape[1] else 0.0 for f in features])


def extrapolation_grades(potential, structures) -> np.ndarray:
    """[M] extrapolation grade of each structure (largest atom grade; see module doc).

    Raises:
      ValueError: the potential carries no training domain (a model saved before jcsp
        recorded one, or a classical potential).
    """
    return _grades(_require_domain(potential), atom_features(potential, structures))


class Grader:
    """:func:`extrapolation_grades` for batch after batch (a search's generations): keeps
    one :class:`~jcsp.capacity.Capacity` that covers every batch so far, so batches of
    one size compile once."""

    def __init__(self, potential):
        self.domain = _require_domain(potential)
        self.potential = potential
        self.capacity = None

    def __call__(self, structures) -> np.ndarray:
        features, self.capacity = _features_with(self.potential, structures, 32,
                                                 self.capacity)
        return _grades(self.domain, features)


__all__ = ["Domain", "Grader", "atom_features", "extrapolation_grades", "fit_domain"]

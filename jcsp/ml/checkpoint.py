"""Saving and loading trained potentials, and the state that lets training resume.

A model directory holds

- ``model.json``: format name and version, the jcsp version that wrote it, the network
  configuration, the training settings, the reference energies and scale, the committee
  size and the SHA-256 of the weights file;
  and the training domain (feature statistics of the training atoms, from which
  :mod:`jcsp.ml.domain` grades how far a structure lies outside the training data);
- ``params.msgpack``: the network weights (flax msgpack; members stacked on a leading
  axis);
- ``history.csv``: one row per epoch (learning rate, losses, validation MAEs);
- ``state.pkl``: the full training state for resuming (optimizer moments, EMA, data
  order); only needed to continue training.

Every file is written to a temporary name and renamed, so a run killed while saving
leaves the previous complete checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ..version import __version__
from .domain import Domain
from .model import ModelConfig, init_params
from .potential import Committee, EquivariantPotential

FORMAT = "jcsp-equivariant-potential"
VERSION = 1


class CheckpointError(ValueError):
    """A model directory that is missing, corrupt or does not match its configuration."""


@dataclasses.dataclass
class RunState:
    """Everything a training run needs to continue (pickled; same jcsp version)."""

    model: ModelConfig
    train_config: Any
    state: Any
    fixed: Any
    best_net: Any
    best_loss: float
    history: list
    epoch: int
    elapsed: float
    rngs: list


@dataclasses.dataclass
class Trained:
    """A loaded model: the potential (or committee) and its training record."""

    potential: Any
    model: ModelConfig
    train_config: dict
    history: list


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_state(out: str, run: RunState) -> None:
    os.makedirs(out, exist_ok=True)
    _atomic_write(os.path.join(out, "state.pkl"), pickle.dumps(run))


def read_state(path: str, kind: type, what: str):
    """The pickled training state at ``path`` (None if there is none), checked to be a
    ``kind``; ``what`` names it in errors."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as fh:
            run = pickle.load(fh)
    except Exception as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); delete it to start training "
                              "afresh") from exc
    if not isinstance(run, kind):
        raise CheckpointError(f"{path} is not a jcsp {what}")
    return run


def load_state(out: str) -> RunState | None:
    return read_state(os.path.join(out, "state.pkl"), RunState, "training state")


def save_model(out: str, model: ModelConfig, train_config, net, fixed: dict, history: list,
               *, species_counts: dict | None = None) -> Trained:
    """Write ``model.json``, ``params.msgpack`` and ``history.csv``; return the model."""
    os.makedirs(out, exist_ok=True)
    net = jax.tree.map(np.asarray, net)
    blob = serialization.msgpack_serialize({"net": net})
    _atomic_write(os.path.join(out, "params.msgpack"), blob)
    members = int(jax.tree.leaves(net)[0].shape[0])
    meta = {"format": FORMAT, "version": VERSION, "jcsp_version": __version__,
            "model": dataclasses.asdict(model),
            "train": dataclasses.asdict(train_config) if dataclasses.is_dataclass(train_config)
            else dict(train_config),
            "committee": members,
            "e_ref": np.asarray(fixed["e_ref"], float).tolist(),
            "scale": float(fixed["scale"]),
            "species_counts": {str(k): v for k, v in (species_counts or {}).items()},
            "params_sha256": hashlib.sha256(blob).hexdigest()}
    _atomic_write(os.path.join(out, "model.json"), json.dumps(meta, indent=1).encode())
    if history:
        lines = [",".join(history[0])] + [",".join(f"{v:.6g}" if isinstance(v, float) else str(v)
                                                    for v in h.values()) for h in history]
        _atomic_write(os.path.join(out, "history.csv"), ("\n".join(lines) + "\n").encode())
    return load(out)


def save_domain(out: str, domain) -> None:
    """Add the training domain (a :class:`jcsp.ml.domain.Domain`) to ``model.json``."""
    path = os.path.join(out, "model.json")
    with open(path) as fh:
        meta = json.load(fh)
    meta["domain"] = domain.to_json()
    _atomic_write(path, json.dumps(meta, indent=1).encode())


def load(path: str, *, dtype=jnp.float64) -> Trained:
    """Read a model directory; committees come back as :class:`Committee`.

    Raises:
      CheckpointError: missing files, another format or version, weights that do not
        match their checksum or their configuration.
    """
    meta_path = os.path.join(path, "model.json")
    params_path = os.path.join(path, "params.msgpack")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a directory; give the output directory of "
                              "`jcsp train`")
    for p in (meta_path, params_path):
        if not os.path.exists(p):
            raise CheckpointError(f"{path}: {os.path.basename(p)} is missing; is this the "
                                  "output directory of a finished `jcsp train`?")
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except ValueError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path}: format version {meta.get('version')}, this jcsp "
                              f"reads version {VERSION}")
    with open(params_path, "rb") as fh:
        blob = fh.read()
    if hashlib.sha256(blob).hexdigest() != meta.get("params_sha256"):
        raise CheckpointError(f"{params_path} does not match the checksum in model.json "
                              "(corrupt or from another model)")
    try:
        # Models saved before ``product_basis`` existed used e3nn's tensor products, and
        # those saved before ``sqrt_density`` existed had none.
        model = ModelConfig(**{"product_basis": "tensor", "sqrt_density": False,
                               **{k: tuple(v) if k == "species" else v
                                  for k, v in meta["model"].items()}})
        net = serialization.msgpack_restore(blob)["net"]
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from exc
    template = init_params(model, jax.random.PRNGKey(0), dtype=jnp.float32)
    members = int(meta.get("committee", 1))
    expect = jax.tree.map(lambda x: (members,) + x.shape, template)
    got = jax.tree.map(lambda x: np.shape(x), net)
    if jax.tree.structure(template) != jax.tree.structure(net) or \
            jax.tree.leaves(expect) != jax.tree.leaves(got):
        raise CheckpointError(f"{params_path}: weights do not match the configuration in "
                              "model.json (mismatched checkpoint)")
    params = {"net": jax.tree.map(lambda x: jnp.asarray(x, dtype), net),
              "e_ref": jnp.asarray(meta["e_ref"], dtype), "scale": jnp.asarray(meta["scale"], dtype)}
    if members == 1:
        params["net"] = jax.tree.map(lambda x: x[0], params["net"])
        potential = EquivariantPotential(model, params)
    else:
        potential = Committee(model, params)
    if "domain" in meta:
        try:
            potential.domain = Domain.from_json(meta["domain"])
        except ValueError as exc:
            raise CheckpointError(f"{meta_path}: {exc}") from exc
        if potential.domain.mean.shape != (members, model.n_features):
            raise CheckpointError(f"{meta_path}: the training domain does not match the "
                                  "model (mismatched checkpoint)")
    history = []
    hist_path = os.path.join(path, "history.csv")
    if os.path.exists(hist_path):
        with open(hist_path) as fh:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return Trained(potential, model, meta.get("train", {}), history)

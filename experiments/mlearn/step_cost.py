"""Cost of one training step on the mlearn Mo data, by model width and batch size.

Times the jitted training step (one member, float32) on packed batches of the Mo
training set after its compilation, and prints milliseconds per step, microseconds per
atom and the resulting epoch time. A cost proportional to atoms and channels means the
step is compute-bound rather than dominated by per-operation overhead.

    python experiments/mlearn/step_cost.py
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jcsp.ml.batch_eval import to_host
from jcsp.ml.data import Packer, labels_of, read_structures
from jcsp.ml.model import ModelConfig, init_params
from jcsp.ml.training import State, TrainConfig, _optimizer, _stack, make_step

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "..", "shared", "data", "mlearn", "Mo", "training.json")
CASES = ((32, 128), (32, 256), (16, 128))  # (channels, atoms per batch)


def time_step(labels, channels: int, atoms_per_batch: int, repeats: int = 5) -> dict:
    model = ModelConfig(species=(42,), channels=channels, radial_hidden=channels,
                        avg_neighbors=28.5)
    cfg = TrainConfig(atoms_per_batch=atoms_per_batch)
    packer = Packer.for_data([labels], model.cutoff, atoms_per_batch=atoms_per_batch)
    groups = packer.plan(labels, np.random.default_rng(0))
    net = jax.tree.map(lambda x: x[None], init_params(model, jax.random.PRNGKey(0)))
    state = State(net, jax.vmap(_optimizer(cfg).init)(net), net, jnp.zeros((), jnp.int32))
    fixed = {"e_ref": jnp.asarray([-10.4], jnp.float32), "scale": jnp.asarray(1.5, jnp.float32)}
    batches = [jax.device_put(_stack([to_host(packer.batch(labels, g), jnp.float32)]))
               for g in groups[:repeats + 1]]
    weights = jnp.asarray([10.0, 1.0, 0.01], jnp.float32)
    lr = jnp.asarray(1e-3, jnp.float32)
    step = make_step(model, cfg)
    t0 = time.perf_counter()
    state, metrics = step(state, fixed, batches[0], lr, weights)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch in batches[1:]:
        state, metrics = step(state, fixed, batch, lr, weights)
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - t0) / (len(batches) - 1)
    return {"ms_per_step": 1e3 * per_step, "us_per_atom": 1e6 * per_step / atoms_per_batch,
            "compile_s": compile_s, "steps_per_epoch": len(groups),
            "epoch_s": per_step * len(groups)}


def main() -> int:
    labels = labels_of(read_structures(DATA))
    for channels, atoms in CASES:
        r = time_step(labels, channels, atoms)
        print(f"channels {channels}, {atoms} atoms per batch: {r['ms_per_step']:.0f} ms per step "
              f"({r['us_per_atom']:.0f} us per atom), compilation {r['compile_s']:.0f} s, "
              f"{r['steps_per_epoch']} steps per epoch, epoch about {r['epoch_s']:.1f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Force error of a model on every AIMD frame of its training, validation and test splits.

Rebuilds the model's training split (seed and validation fraction from its
``model.json``), predicts every frame of the ``AIMD-NVT`` group, and prints the force
MAE per frame in bands of DFT energy per atom (the hotter the frame, the higher its
energy), side by side for fitted and unseen frames. A band where unseen frames are much
worse than fitted ones is memorised, not learned.

    python experiments/mlearn/frame_errors.py RUN_DIR ../shared/data/mlearn/Mo
    python experiments/mlearn/frame_errors.py RUN_DIR ../shared/data/mlearn/Mo --bands -10.5 -9.85
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from ase.neighborlist import neighbor_list

from jcsp.ml import checkpoint, read_structures
from jcsp.ml.evaluate import predict_structures
from jcsp.ml.training import split


def frame_table(potential, frames: list) -> np.ndarray:
    """Rows (energy per atom, force MAE, closest contact) of each frame."""
    if not frames:
        return np.zeros((0, 3))
    pred = predict_structures(potential, frames)
    rows = []
    for m, atoms in enumerate(frames):
        ref = pred.labels.forces[m]
        err = np.abs(np.asarray(pred.forces[m]) - ref).mean()
        closest = neighbor_list("d", atoms, 3.5).min(initial=3.5)
        rows.append((pred.labels.energy[m] / len(atoms), err, closest))
    return np.array(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a directory written by jcsp train")
    parser.add_argument("data", help="an mlearn element directory (training.json, test.json)")
    parser.add_argument("--group", default="AIMD-NVT")
    parser.add_argument("--bands", type=float, nargs="+", default=[-10.5, -9.85],
                        help="energy-per-atom band edges, eV/atom (default: Mo)")
    args = parser.parse_args(argv)
    trained = checkpoint.load(args.model)
    cfg = trained.train_config
    train_all = read_structures(os.path.join(args.data, "training.json"))
    fitted, valid = split(train_all, cfg["valid_fraction"], cfg["seed"])
    test = read_structures(os.path.join(args.data, "test.json"))
    edges = [-np.inf, *sorted(args.bands), np.inf]
    print(f"{args.model}: force MAE per {args.group} frame (eV/Å), by DFT energy band")
    print(f"{'band (eV/atom)':>22s} {'split':>6s} {'frames':>6s} {'min':>6s} {'mean':>6s} "
          f"{'max':>6s} {'closest contact (Å)':>20s}")
    for name, structures in (("fitted", fitted), ("valid", valid), ("test", test)):
        frames = [a for a in structures if a.info.get("group") == args.group]
        table = frame_table(trained.potential, frames)
        for lo, hi in zip(edges[:-1], edges[1:]):
            rows = table[(table[:, 0] >= lo) & (table[:, 0] < hi)]
            if len(rows):
                print(f"{f'[{lo:.2f}, {hi:.2f})':>22s} {name:>6s} {len(rows):6d} "
                      f"{rows[:, 1].min():6.3f} {rows[:, 1].mean():6.3f} {rows[:, 1].max():6.3f} "
                      f"{rows[:, 2].min():20.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

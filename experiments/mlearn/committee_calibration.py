"""Does the committee spread track the true error? mlearn Si, held-out test set.

Trains a committee of K members (different seeds and data orders, one vmapped training
step) on mlearn ``training.json`` and reports, on ``test.json``: errors of the committee
mean, the mean spread, the Spearman rank correlation between spread and absolute error
(per structure for energy per atom, per atom for force vectors), RMSE / RMS spread, and
the force error in bins of increasing spread.

    python experiments/mlearn/committee_calibration.py --members 4 --epochs 20
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "..", "shared", "data", "mlearn")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element", default="Si")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/committee")
    args = parser.parse_args(argv)

    import jcsp  # noqa: F401
    from jcsp.ml import ModelConfig, TrainConfig, read_structures, train
    from jcsp.ml.evaluate import format_metrics, metrics, predict_structures

    train_set = read_structures(os.path.join(DATA, args.element, "training.json"))
    test_set = read_structures(os.path.join(DATA, args.element, "test.json"))
    cfg = dataclasses.replace(TrainConfig(), epochs=args.epochs, committee=args.members,
                              max_time=1e9)
    trained = train(train_set, None, ModelConfig(), cfg, args.out)
    pred = predict_structures(trained.potential, test_set)
    m = metrics(pred)
    print(format_metrics(m))
    err = np.concatenate([np.linalg.norm(p - r, axis=1)
                          for p, r in zip(pred.forces, pred.labels.forces)])
    std = np.concatenate([np.linalg.norm(s, axis=1) for s in pred.forces_std])
    edges = np.quantile(std, np.linspace(0, 1, 6))
    print("\nforce spread bin (eV/Å) | atoms | mean |dF| (eV/Å) | mean spread")
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (std >= lo) & (std <= hi)
        print(f"{lo:.3f}-{hi:.3f} | {sel.sum()} | {err[sel].mean():.4f} | {std[sel].mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train the default equivariant potential on mlearn elements and report test errors.

For each element: train on ``training.json`` (10 % of it held out for validation and
early stopping; no tuning on the test split), evaluate on ``test.json``, and print the
errors next to the published GAP and MTP numbers (Zuo et al., J. Phys. Chem. A 124, 731
(2020), as given in ../shared/data/README.md), with the training time on this machine
and the model size. Also checks the trained Si model's diamond lattice constant against
the DFT ground state of the data.

    python experiments/mlearn/run_mlearn.py                      # Si and Mo, defaults
    python experiments/mlearn/run_mlearn.py --elements Si --epochs 130 --out runs/mlearn

The default recipe is exactly ``jcsp train --train training.json --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "..", "shared", "data", "mlearn")

#: Published test-set errors: (energy meV/atom, force eV/Å).
PUBLISHED = {"Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06)},
             "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)}}


def lattice_ratio(potential, structures) -> float:
    """(V_model / V_DFT)^(1/3) for the data's zero-stress crystal (the unstrained member
    of the elastic series), after a full cell relaxation with the model: 1 + the
    relative error of the lattice constant."""
    import jcsp
    elastic = [a for a in structures if a.info.get("group") == "Elastic"] or structures
    ref = min(elastic, key=lambda a: np.abs(a.calc.results["stress"]).max())
    start = ref.copy()
    start.calc = None
    out = jcsp.relax([start], potential, fmax=1e-3, smax=1e-3, max_steps=3000)
    return float((out[0].get_volume() / ref.get_volume()) ** (1 / 3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", nargs="+", default=["Si", "Mo"])
    parser.add_argument("--epochs", type=int, default=None, help="override the default")
    parser.add_argument("--max-time", type=float, default=None, help="minutes; override")
    parser.add_argument("--out", default="runs/mlearn")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import jcsp  # noqa: F401  (float64 for evaluation)
    from jcsp.ml import ModelConfig, TrainConfig, read_structures, train
    from jcsp.ml.evaluate import metrics, predict_structures

    rows = {}
    for element in args.elements:
        train_set = read_structures(os.path.join(DATA, element, "training.json"))
        test_set = read_structures(os.path.join(DATA, element, "test.json"))
        cfg = TrainConfig()
        if args.epochs:
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
        if args.max_time:
            cfg = dataclasses.replace(cfg, max_time=60 * args.max_time)
        out = os.path.join(args.out, element)
        t0 = time.perf_counter()
        trained = train(train_set, None, ModelConfig(), cfg, out)
        wall = time.perf_counter() - t0
        m = metrics(predict_structures(trained.potential, test_set))
        row = {"energy_mae_meV": 1e3 * m["energy_mae"], "forces_mae": m["forces_mae"],
               "stress_mae_GPa": m.get("stress_mae"), "epochs": len(trained.history),
               "train_time_s": trained.history[-1]["time"] if trained.history else wall,
               "parameters": trained.potential.n_parameters,
               "lattice_error_percent": 100 * (lattice_ratio(trained.potential, train_set) - 1)}
        rows[element] = row
        print(f"{element}: test E MAE {row['energy_mae_meV']:.2f} meV/atom, F MAE "
              f"{row['forces_mae']:.4f} eV/Å ({row['epochs']} epochs, "
              f"{row['train_time_s'] / 60:.1f} min); lattice constant of the zero-stress "
              f"crystal {row['lattice_error_percent']:+.2f} % from DFT", flush=True)

    print("\n| element | model | E MAE (meV/atom) | F MAE (eV/Å) | train time | parameters |")
    print("|---|---|---|---|---|---|")
    for element, row in rows.items():
        for name, (e, f) in PUBLISHED.get(element, {}).items():
            print(f"| {element} | {name} (published) | {e:.2f} | {f:.2f} | | |")
        print(f"| {element} | jcsp equivariant | {row['energy_mae_meV']:.2f} | "
              f"{row['forces_mae']:.3f} | {row['train_time_s'] / 60:.1f} min | "
              f"{row['parameters']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

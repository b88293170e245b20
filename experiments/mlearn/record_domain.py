"""Record the training domain of a model trained before ``jcsp train`` recorded one.

Rebuilds the model's training split (the seed and validation fraction saved in its
``model.json``) from the data files it was trained on, fits the feature statistics of
:mod:`jcsp.ml.domain` and adds them to ``model.json`` (the weights are not touched).

    python experiments/mlearn/record_domain.py runs/old-si-model \\
        ../shared/data/mlearn/Si/training.json
"""

from __future__ import annotations

import argparse

import jcsp
from jcsp.ml import checkpoint, read_structures
from jcsp.ml.domain import extrapolation_grades, fit_domain
from jcsp.ml.training import split


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("train", nargs="+", help="the training files the model was fitted to")
    args = parser.parse_args(argv)
    trained = checkpoint.load(args.model)
    cfg = trained.train_config
    structures = [a for path in args.train for a in read_structures(path)]
    train_set, valid_set = split(structures, cfg["valid_fraction"], cfg["seed"])
    pot = trained.potential
    pot.domain = fit_domain(pot, train_set)
    checkpoint.save_domain(args.model, pot.domain)
    grades = extrapolation_grades(jcsp.io.load_potential(args.model), valid_set)
    print(f"{args.model}: domain of {len(train_set)} training structures recorded; "
          f"validation grades: median {sorted(grades)[len(grades) // 2]:.2f}, "
          f"max {grades.max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

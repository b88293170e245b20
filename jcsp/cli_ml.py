"""``jcsp train`` and ``jcsp evaluate``: the machine-learned potential on the command line.

``jcsp train --train TRAIN --valid VALID --out DIR`` trains the default equivariant
model (or a committee, ``--committee K``) and saves it in DIR; run again with the same
DIR it resumes. ``jcsp evaluate DIR DATA`` prints MAE and RMSE of energy per atom,
forces and stress, writes parity plots and, with ``--json``, the numbers. Settings can
also come from a TOML file (``--config``) with ``[model]`` and ``[train]`` tables whose
keys are the fields of :class:`jcsp.ml.ModelConfig` and :class:`jcsp.ml.TrainConfig`;
flags override the file. See ``docs/ml.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tomllib

from .ml import ModelConfig, TrainConfig, load, read_structures, train
from .ml.evaluate import format_metrics, metrics, parity_plots, predict_structures
from .potentials.base import to_numbers


def add_commands(sub, *, positive_int, positive_float) -> None:
    """Register ``train`` and ``evaluate`` on the main parser's subparsers."""
    train = sub.add_parser(
        "train", help="train an equivariant ML potential (or a committee) on labelled data",
        description="Train the E(3)-equivariant potential on structures with energies and "
                    "forces (extxyz in ASE's convention, or mlearn JSON). The defaults are a "
                    "recipe that finishes within an hour on a 2-core CPU for ~200 "
                    "structures of 30-100 atoms. Rerun with the same --out to resume.")
    train.add_argument("--train", nargs="+", required=True, metavar="FILE",
                       help="training data files (.xyz/.extxyz or mlearn .json)")
    train.add_argument("--valid", nargs="+", default=None, metavar="FILE",
                       help="validation files (default: hold out 10%% of the training set)")
    train.add_argument("--out", required=True, metavar="DIR", help="model directory")
    train.add_argument("--config", default=None, metavar="TOML",
                       help="settings file with [model] and [train] tables")
    train.add_argument("--committee", type=positive_int, default=None, metavar="K",
                       help="train K models from different seeds and data orders (default 1)")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--epochs", type=positive_int, default=None)
    train.add_argument("--max-time", type=positive_float, default=None, metavar="MINUTES",
                       help="wall-clock budget; the learning-rate schedule completes within "
                            "it (default 55)")
    train.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    train.add_argument("--channels", type=positive_int, default=None)
    train.add_argument("--l-max", type=positive_int, default=None)
    train.add_argument("--layers", type=positive_int, default=None)
    train.add_argument("--correlation", type=positive_int, default=None)
    train.add_argument("--cutoff", type=positive_float, default=None, metavar="ANGSTROM")
    train.add_argument("--dtype", choices=("float32", "float64"), default=None)
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser(
        "evaluate", help="errors of a trained potential on labelled data, with parity plots",
        description="Print MAE and RMSE of energy per atom, forces and stress of MODEL on "
                    "the DATA files; committees also report their spread and how it tracks "
                    "the error.")
    evaluate.add_argument("model", metavar="MODEL", help="model directory from `jcsp train`")
    evaluate.add_argument("data", nargs="+", metavar="DATA", help="labelled data files")
    evaluate.add_argument("--json", default=None, metavar="FILE", help="write the numbers here")
    evaluate.add_argument("--plot", default=None, metavar="PNG",
                          help="parity plot file (default MODEL/parity_<data>.png)")
    evaluate.add_argument("--no-plot", action="store_true")
    evaluate.set_defaults(func=run_evaluate)


_MODEL_FLAGS = {"channels": "channels", "l_max": "l_max", "layers": "n_layers",
                "correlation": "correlation", "cutoff": "cutoff"}
_TRAIN_FLAGS = {"committee": "committee", "seed": "seed", "epochs": "epochs", "lr": "lr",
                "dtype": "dtype"}


def toml_and_flags(args, model_flags: dict, train_flags: dict) -> tuple[dict, dict]:
    """The ``[model]`` and ``[train]`` keyword dictionaries of a training command: the
    ``--config`` TOML file's tables, then the flags given (``model_flags`` and
    ``train_flags`` map flag names to fields), ``--max-time`` converted from minutes."""
    model_kw, train_kw = {}, {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                table = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{args.config}: invalid TOML ({err})") from None
        unknown = set(table) - {"model", "train"}
        if unknown:
            raise ValueError(f"{args.config}: unknown table(s) {sorted(unknown)}; use [model] "
                             "and [train]")
        model_kw.update(table.get("model", {}))
        train_kw.update(table.get("train", {}))
    for flag, field in model_flags.items():
        if getattr(args, flag) is not None:
            model_kw[field] = getattr(args, flag)
    for flag, field in train_flags.items():
        if getattr(args, flag) is not None:
            train_kw[field] = getattr(args, flag)
    if args.max_time is not None:
        train_kw["max_time"] = 60.0 * args.max_time
    return model_kw, train_kw


def settings(args) -> tuple:
    """(ModelConfig, TrainConfig) from the defaults, the TOML file and the flags."""

    model_kw, train_kw = toml_and_flags(args, _MODEL_FLAGS, _TRAIN_FLAGS)
    for cls, kw in ((ModelConfig, model_kw), (TrainConfig, train_kw)):
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(kw) - names)
        if bad:
            raise ValueError(f"unknown {cls.__name__} setting(s) {bad}; valid: {sorted(names)}")
    if "species" in model_kw:
        model_kw["species"] = to_numbers(model_kw["species"])
    return ModelConfig(**model_kw), TrainConfig(**train_kw)


def _read_all(paths: list[str]) -> list:
    out = []
    for p in paths:
        out.extend(read_structures(p))
    return out


def run_train(args) -> int:

    model, cfg = settings(args)
    train_set = _read_all(args.train)
    valid_set = _read_all(args.valid) if args.valid else None
    print(f"jcsp train: {len(train_set)} training structures"
          + (f", {len(valid_set)} validation" if valid_set else
             f" ({cfg.valid_fraction:.0%} held out for validation)")
          + f"; committee {cfg.committee}; budget {cfg.max_time / 60:.0f} min", flush=True)
    trained = train(train_set, valid_set, model, cfg, args.out, progress=not args.quiet)
    print(f"saved {args.out} ({trained.potential!r})")
    return 0


def run_evaluate(args) -> int:
    trained = load(args.model)
    report = {}
    for path in args.data:
        structures = _read_all([path])
        pred = predict_structures(trained.potential, structures)
        m = metrics(pred)
        report[path] = m
        print(f"{path}:")
        print(format_metrics(m))
        if not args.no_plot:
            name = os.path.splitext(os.path.basename(path))[0]
            png = args.plot if (args.plot and len(args.data) == 1) else os.path.join(
                args.model, f"parity_{name}.png")
            try:
                parity_plots(pred, png, title=f"{os.path.basename(args.model)} on {name}")
                print(f"parity plot: {png}")
            except ImportError:
                print("parity plot skipped: matplotlib is not installed "
                      "(pip install 'jcsp[plot]')", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report if len(report) > 1 else next(iter(report.values())), fh, indent=1)
    return 0

"""Train the shipped Perov-5 generator (jcsp/data/generative/perov-5) in one command.

    python experiments/generative/train_perov5.py                # the shipped recipe
    python experiments/generative/train_perov5.py --max-time 600 --out runs/quick

Trains on the Perov-5 train split, selects on the validation split (never the test
split), writes the model directory (``generator.json``, ``params.msgpack``,
``history.csv``), copies it into ``jcsp/data/generative/perov-5`` when ``--ship`` is
given, and records the run (time, epochs, validation metrics per epoch) in
``experiments/results/generative_perov5_training.json``. Run it again with the same
``--out`` to resume an interrupted run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from records import ROOT, write_record  # noqa: E402

from jcsp.generative import GeneratorTrainConfig, data, train  # noqa: E402
from jcsp.generative.denoiser import DenoiserConfig  # noqa: E402
from jcsp.generative.model import SHIPPED_ROOT  # noqa: E402

#: The shipped recipe's network (all other settings: GeneratorTrainConfig's defaults
#: unless given on the command line).
NETWORK = dict(channels=64, l_max=2, n_layers=4, correlation=3, radial_hidden=32, n_freq=5,
               hidden=128)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "perov-5"))
    parser.add_argument("--max-time", type=float, default=4500.0,
                        help="wall-clock budget in seconds (default 4500)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--val-structures", type=int, default=256)
    parser.add_argument("--val-steps", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true",
                        help="copy the trained model into jcsp/data/generative/perov-5")
    parser.add_argument("--record", default=os.path.join(
        ROOT, "experiments", "results", "generative_perov5_training.json"))
    args = parser.parse_args(argv)

    t0 = time.time()
    train_set = data.pack(data.perov5("train"))
    val_set = data.pack(data.perov5("val"))
    config = GeneratorTrainConfig(epochs=args.epochs, max_time=args.max_time,
                                  batch_size=args.batch_size, lr=args.lr,
                                  val_every=args.val_every,
                                  val_structures=args.val_structures,
                                  val_steps=args.val_steps, seed=args.seed)
    model = train(train_set, val_set, args.out,
                  model=DenoiserConfig(elements=(1,), **NETWORK), config=config,
                  name="perov-5")
    history = model.meta.get("history", [])
    if args.ship:
        dest = SHIPPED_ROOT / "perov-5"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("generator.json", "params.msgpack", "history.csv"):
            shutil.copy2(os.path.join(args.out, name), dest / name)
    best = max((h for h in history if h.get("val_match_rate")),
               key=lambda h: (float(h["val_match_rate"]), -float(h["val_loss"])), default={})
    write_record(args.record, settings={
        "network": NETWORK, "train": {k: v for k, v in vars(args).items()
                                       if k not in ("record", "out")},
        "data": "Perov-5 train (11356) / val (3787), ../shared/data/perov_5",
        "selection": "validation match rate, one sample per composition, the first "
                     f"{args.val_structures} validation crystals, {args.val_steps} steps"},
        results={"wall_seconds": round(time.time() - t0, 1),
                 "training_seconds": float(history[-1]["elapsed"]) if history else None,
                 "epochs": len(history), "kept_epoch": int(best.get("epoch", 0)) or None,
                 "kept_val_match_rate": float(best["val_match_rate"]) if best else None,
                 "parameters": int(sum(x.size for x in jax.tree.leaves(model.params))),
                 "history": [{k: (float(v) if v not in ("", None) else None)
                              for k, v in h.items()} for h in history]})


if __name__ == "__main__":
    main()

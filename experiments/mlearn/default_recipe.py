"""The default training recipe on an mlearn element, tested once and recorded; with
``--ship``, the one command behind the shipped ``ml-si`` model.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/mlearn/default_recipe.py Si --ship
    OMP_NUM_THREADS=1 taskset -c 1 python experiments/mlearn/default_recipe.py Mo

1. ``jcsp train --train ELEMENT/training.json --out WORK --max-time 600 -q``: the
   default recipe (``ModelConfig()``, ``TrainConfig()``; model selection on the 10 %
   validation hold-out of training.json, never on test.json) with the wall-clock budget
   raised from 55 minutes to 10 hours, so that the 250-epoch cap ends the run and the
   schedule does not depend on how loaded the machine is. The record says how far the
   default budget would have driven the schedule on this machine (``default_budget``:
   the epochs where the wall clock would have been ahead of the epoch count, and by how
   much progress). WORK keeps a checkpoint: a run started again resumes, and a finished
   run only saves its model again.
2. ``jcsp evaluate WORK ELEMENT/test.json --json WORK/test_errors.json --no-plot``: the
   test split, once, at the end.
3. writes the record (command, commit, date, machine, training time and epochs,
   validation and test MAE/RMSE of energy, forces and stress) to
   ``experiments/results/mlearn_<element>_default.json``; with ``--ship`` (Si only)
   copies ``model.json``, ``params.msgpack``, ``history.csv`` and ``test_errors.json``
   into ``jcsp/data/models/si-mlearn/`` and writes the record to
   ``experiments/results/ml_si_shipped.json``.

Data: mlearn (Zuo et al., J. Phys. Chem. A 124, 731 (2020)) in
``../shared/data/mlearn/ELEMENT`` beside the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from records import RESULTS, ROOT, write_record  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data", "mlearn")
SHIPPED = os.path.join(ROOT, "jcsp", "data", "models", "si-mlearn")
FILES = ("model.json", "params.msgpack", "history.csv", "test_errors.json")
#: TrainConfig's defaults: the budget and epoch cap of a run given no options.
DEFAULT_MAX_TIME_S, DEFAULT_EPOCHS = 3300.0, 250


def read_history(path: str) -> list[dict]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def default_budget_lead(history: list[dict]) -> dict:
    """How far ``jcsp train`` with no options would have let the wall clock drive the
    learning-rate schedule on this machine: its progress is the larger of the epoch
    fraction and the fraction of the 55-minute budget used, so at the end of each epoch
    compare ``time / 3300 s`` with ``(epoch - 1) / 250``, the epoch fraction at the
    epoch's start. Returns the epochs where the time fraction was ahead and the largest
    lead (0 when the epoch cap alone would have set the schedule)."""
    leads = [(row["time"] / DEFAULT_MAX_TIME_S - (row["epoch"] - 1) / DEFAULT_EPOCHS,
              int(row["epoch"])) for row in history]
    ahead = [epoch for lead, epoch in leads if lead > 0]
    return {"epochs_where_time_led": ahead, "max_progress_lead": max([0.0] + [
        lead for lead, _ in leads])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("element", choices=("Si", "Mo"))
    parser.add_argument("--work", default=None,
                        help="training directory, resumed when it exists (default "
                             "runs/mlearn-<element>)")
    parser.add_argument("--max-time", type=float, default=600.0,
                        help="minutes of wall clock for training (default 600: the "
                             "epoch cap ends the run)")
    parser.add_argument("--ship", action="store_true",
                        help="copy the model into jcsp/data/models/si-mlearn (Si only)")
    parser.add_argument("--record", default=None, help="record file (default "
                        "experiments/results/mlearn_<element>_default.json, with --ship "
                        "ml_si_shipped.json)")
    parser.add_argument("--notes", default=None, help="text stored in the record")
    args = parser.parse_args(argv)
    if args.ship and args.element != "Si":
        parser.error("--ship: the shipped model is the Si one")
    work = args.work or os.path.join("runs", f"mlearn-{args.element}")
    record = args.record or os.path.join(
        RESULTS, "ml_si_shipped.json" if args.ship else f"mlearn_{args.element}_default.json")

    data = os.path.relpath(os.path.join(DATA, args.element), ROOT)
    errors = os.path.join(work, "test_errors.json")
    train_cmd = ["jcsp", "train", "--train", os.path.join(data, "training.json"),
                 "--out", work, "--max-time", f"{args.max_time:g}", "-q"]
    eval_cmd = ["jcsp", "evaluate", work, os.path.join(data, "test.json"),
                "--json", errors, "--no-plot"]
    for cmd in (train_cmd, eval_cmd):
        print("$ " + " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)

    work = os.path.join(ROOT, work)
    history = read_history(os.path.join(work, "history.csv"))
    with open(os.path.join(work, "test_errors.json")) as fh:
        test = json.load(fh)
    with open(os.path.join(work, "model.json")) as fh:
        meta = json.load(fh)
    if args.ship:
        os.makedirs(SHIPPED, exist_ok=True)
        for name in FILES:
            shutil.copy2(os.path.join(work, name), os.path.join(SHIPPED, name))
        print(f"shipped: {os.path.relpath(SHIPPED, ROOT)}")

    import jcsp  # noqa: F401  (float64)
    from jcsp.ml import load

    last = history[-1]
    results = {
        "epochs": int(last["epoch"]),
        "training_time_s": last["time"],
        "default_budget": default_budget_lead(history),
        "parameters": load(work).potential.n_parameters,
        "params_sha256": meta["params_sha256"],
        "validation_last_epoch": {"energy_mae": last["valid_energy_mae"],
                                  "forces_mae": last["valid_forces_mae"],
                                  "stress_mae": last["valid_stress_mae"]},
        "test": {k: test[k] for k in ("structures", "atoms", "energy_mae", "energy_rmse",
                                      "forces_mae", "forces_rmse", "stress_mae",
                                      "stress_rmse")},
        "units": "energy eV/atom, forces eV/Å (per component), stress GPa; training in "
                 "float32, evaluation in float64",
    }
    settings = {"element": args.element, "train_command": " ".join(train_cmd),
                "evaluate_command": " ".join(eval_cmd), "model": meta["model"],
                "train": meta["train"]}
    if args.ship:
        settings["shipped_files"] = [os.path.relpath(os.path.join(SHIPPED, n), ROOT)
                                     for n in FILES]
    write_record(record, settings=settings, results=results, notes=args.notes)
    t = results["test"]
    print(f"{args.element} test: E MAE {1e3 * t['energy_mae']:.2f} meV/atom, F MAE "
          f"{t['forces_mae']:.4f} eV/Å, stress MAE {t['stress_mae']:.3f} GPa "
          f"({results['epochs']} epochs, {results['training_time_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Leave the lowest-coordinated training surfaces out: a test of surface extrapolation
that uses the training split only.

Every Mo model up to session 10 missed the one test slab whose surface atoms are less
coordinated than any training slab's ((2 1 1), 6 neighbours within 3.35 Å against 7 or
more). This script rebuilds that situation inside ``training.json``: ``split`` removes
every training slab with an atom at or below ``--max-cn`` neighbours and writes the rest
as the training set and the removed slabs as the held-out set; ``score`` gives each
trained model's signed energy error on the held-out slabs, with its last validation
metrics from ``history.csv``, so model choices can be compared on extrapolation to lower
coordination without touching ``test.json``.

    python experiments/mlearn/facet_holdout.py split ../shared/data/mlearn/Mo runs/holdout
    jcsp train --train runs/holdout/training.xyz --out runs/holdout/default
    python experiments/mlearn/facet_holdout.py score runs/holdout/facets.xyz runs/holdout/default
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np
from ase.io import write

from jcsp.ml import checkpoint, read_structures
from jcsp.ml.evaluate import predict_structures
from surface_energies import facet, lowest_coordination


def split(data: str, out: str, max_cn: int, shell: float) -> None:
    training = read_structures(os.path.join(data, "training.json"))
    held = [m for m, a in enumerate(training) if a.info.get("group") == "Surface"
            and lowest_coordination(a, shell) <= max_cn]
    if not held:
        raise SystemExit(f"no training slab has an atom with {max_cn} or fewer neighbours")
    os.makedirs(out, exist_ok=True)
    keep = [a for m, a in enumerate(training) if m not in held]
    write(os.path.join(out, "training.xyz"), keep, format="extxyz")
    write(os.path.join(out, "facets.xyz"), [training[m] for m in held], format="extxyz")
    kept_slabs = [a for a in keep if a.info.get("group") == "Surface"]
    floor = min((lowest_coordination(a, shell) for a in kept_slabs), default=None)
    print(f"held out {len(held)} slabs ({', '.join(facet(training[m]) for m in held)}); "
          f"kept {len(keep)} structures, whose slabs reach down to {floor} neighbours")

def score(facets_path: str, runs: list[str]) -> None:
    facets = read_structures(facets_path)
    names = " ".join(f"{facet(a):>9s}" for a in facets)
    print(f"{'run':>24s} {'epochs':>6s} {names} {'MAE':>6s}  (meV/atom)  "
          f"valid E (meV/atom), F (eV/Å)")
    for run in runs:
        pred = predict_structures(checkpoint.load(run).potential, facets)
        err = [1e3 * (float(pred.energy[m]) - pred.labels.energy[m]) / len(a)
               for m, a in enumerate(facets)]
        with open(os.path.join(run, "history.csv")) as handle:
            history = list(csv.DictReader(handle))
        last = history[-1]
        print(f"{os.path.basename(os.path.normpath(run)):>24s} {len(history):6d} "
              + " ".join(f"{e:+9.1f}" for e in err) + f" {np.mean(np.abs(err)):6.1f}"
              f"  {1e3 * float(last['valid_energy_mae']):.2f}, "
              f"{float(last['valid_forces_mae']):.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("split", help="write training.xyz and facets.xyz")
    make.add_argument("data", help="an mlearn element directory (training.json)")
    make.add_argument("out", help="output directory")
    make.add_argument("--max-cn", type=int, default=7,
                      help="hold out slabs with an atom this poorly coordinated (default 7)")
    make.add_argument("--shell", type=float, default=3.35,
                      help="coordination radius, Å (default: first two bcc Mo shells)")
    rate = sub.add_parser("score", help="held-out slab errors of trained models")
    rate.add_argument("facets", help="facets.xyz written by split")
    rate.add_argument("runs", nargs="+", help="directories written by jcsp train")
    args = parser.parse_args(argv)
    if args.command == "split":
        split(args.data, args.out, args.max_cn, args.shell)
    else:
        score(args.facets, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

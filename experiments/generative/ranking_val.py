"""Which of k samples to keep: the energy head's ranking, with and without the plausibility
filter, on the Perov-5 validation split (model selection data, never the test split).

    # the samples (k = 20 per composition, the sampler's defaults), resumable:
    python experiments/generative/evaluate_perov5.py --split val --limit 250 --k 20 \
        --grid 250:pc --processes 1 --batch-size 1000 --pieces \
        --record generative_perov5_val_k20.json
    # then the picks:
    python experiments/generative/ranking_val.py --limit 250

For every reference composition it takes one of its 20 samples by each rule and matches
that one against the reference (DiffCSP's matcher, as in ``evaluate_perov5.py``):

- ``first``: sample 0 (what k = 1 means);
- ``energy``: the lowest predicted energy (the ranking before plausibility came first);
- ``plausible_then_energy``: :meth:`GenerativeModel.rank` now: plausible samples
  (:func:`jcsp.generative.model.plausible`) first, then the lowest predicted energy.

Writes experiments/results/generative_perov5_val_ranking.json.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from records import ROOT, write_record  # noqa: E402

import ase.io  # noqa: E402

from jcsp.generative import data, evaluate  # noqa: E402
from jcsp.generative.model import plausible  # noqa: E402

RULES = {
    "first": lambda group: group[0],
    "energy": lambda group: min(group, key=lambda a: a.info["predicted_energy"]),
    "plausible_then_energy": lambda group: min(
        group, key=lambda a: (not plausible(a), a.info["predicted_energy"])),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=250)
    parser.add_argument("--samples", default=os.path.join(
        ROOT, "runs", "perov5_pieces_val_250pc_k20_seed0_b1000"))
    parser.add_argument("--record", default="generative_perov5_val_ranking.json")
    args = parser.parse_args(argv)

    refs = data.pack(data.perov5("val")).to_atoms_list()[:args.limit]
    groups: list[list] = [[] for _ in refs]
    for path in sorted(glob.glob(os.path.join(args.samples, "piece_*.extxyz"))):
        for atoms in ase.io.read(path, index=":"):
            i = int(atoms.info["reference_index"])
            if i < len(refs):
                groups[i].append(atoms)
    sizes = {len(g) for g in groups}
    if len(sizes) != 1 or 0 in sizes:
        raise SystemExit(f"{args.samples}: expected the same number of samples for each of "
                         f"the first {len(refs)} references, found sizes {sorted(sizes)}; "
                         "run the sampling command in this script's docstring first")
    groups = [sorted(g, key=lambda a: int(a.info["sample_index"])) for g in groups]
    k = sizes.pop()
    rows = {}
    for rule, pick in RULES.items():
        chosen = [pick(g) for g in groups]
        result = evaluate.match([[c] for c in chosen], refs, processes=1, progress=False)
        rows[rule] = {key: result[key] for key in ("match_rate", "rmse", "n_matched",
                                                   "valid_rate")}
        print(rule, {key: round(v, 3) if isinstance(v, float) else v
                     for key, v in rows[rule].items()}, flush=True)
    implausible = np.array([[not plausible(a) for a in g] for g in groups])
    write_record(os.path.join(ROOT, "experiments", "results", args.record),
                 settings={"split": "val", "references": len(refs), "k": k,
                           "samples": os.path.relpath(args.samples, ROOT),
                           "matcher": {"stol": 0.5, "angle_tol": 10, "ltol": 0.3}},
                 results={"picks": rows,
                          "implausible_share": float(implausible.mean()),
                          "compositions_with_no_plausible_sample":
                              int(implausible.all(axis=1).sum())})


if __name__ == "__main__":
    main()

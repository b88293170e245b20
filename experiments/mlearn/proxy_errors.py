"""Test errors of a model on a stand-in set of proxy_data.py, by kind of structure.

Groups the test structures by their description (strained cells, bulk snapshots per
temperature, vacancy snapshots, each slab) and prints energy and force MAE per group and
overall, so a miss can be traced to the kind of configuration that causes it.

    python experiments/mlearn/proxy_errors.py RUN_DIR runs/proxy/Cu/test.xyz
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import numpy as np

from jcsp.ml import checkpoint, read_structures
from jcsp.ml.evaluate import predict_structures


def kind(description: str) -> str:
    """'strained', 'bulk 1222 K', 'vacancy 300 K', or the slab's own description."""
    if "strain" in description:
        return "strained"
    found = re.search(r"(bulk|vacancy) NVT at (\d+) K", description)
    if found:
        return f"{found.group(1)} {found.group(2)} K"
    return description


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a directory written by jcsp train")
    parser.add_argument("data", help="a test.xyz written by proxy_data.py")
    args = parser.parse_args(argv)
    trained = checkpoint.load(args.model)
    structures = read_structures(args.data)
    pred = predict_structures(trained.potential, structures)
    groups = defaultdict(list)
    for m, atoms in enumerate(structures):
        n = len(atoms)
        de = abs(pred.energy[m] - pred.labels.energy[m]) / n * 1e3
        df = np.abs(np.asarray(pred.forces[m]) - pred.labels.forces[m])
        groups[kind(atoms.info.get("description", "?"))].append((de, df.ravel()))
    print(f"{'group':>28s} {'n':>3s} {'E MAE (meV/atom)':>17s} {'F MAE (eV/Å)':>13s}")
    for name in sorted(groups, key=str):
        rows = groups[name]
        print(f"{name[:28]:>28s} {len(rows):3d} {np.mean([r[0] for r in rows]):17.2f} "
              f"{np.concatenate([r[1] for r in rows]).mean():13.4f}")
    every = [r for rows in groups.values() for r in rows]
    print(f"{'all':>28s} {len(every):3d} {np.mean([r[0] for r in every]):17.2f} "
          f"{np.concatenate([r[1] for r in every]).mean():13.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

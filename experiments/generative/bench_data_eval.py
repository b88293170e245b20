"""Timings of the generative data layer and of the benchmark's matcher (host side, CPU).

Measures, on this machine:

- reading the Perov-5 train split: parsing its 11356 CIFs (empty cache) and loading the
  cached arrays (second call);
- packing the train split with Niggli reduction (``jcsp.generative.data.pack``);
- the validity of every reference of the test split (DiffCSP's ``structure_validity``);
- the round trip of the whole test split through ``pack`` (Niggli reduction, standard
  orientation) and ``Crystals.to_atoms``, matched against the CIFs as read: every crystal
  must match with an RMS displacement at rounding level (k = 1, 2 processes);
- matching (``jcsp.generative.evaluate.match``) of ``--refs`` test crystals against 20
  stand-in predictions each, serial (CPU seconds per pair) and with a 2-process pool
  (wall time), extrapolated to the full benchmark (3785 x 20 pairs).

The stand-in predictions are the reference itself, rotated, translated, reordered and
rattled (Gaussian, sigma 0.02 to 0.3 Å; 16 of 20), with its A and B cations swapped (2 of
20: same composition, no match) and with its lattice sheared by 25 % (2 of 20), so the
matcher meets matches and misses as in a real evaluation. Their match rate is printed as
a sanity check, not as a result about any model.

Example:
  python experiments/generative/bench_data_eval.py --refs 60 \\
      --record experiments/results/generative_data_eval_timing.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from records import write_record  # noqa: E402

from jcsp.generative import evaluate  # noqa: E402
from jcsp.generative.data import pack, perov5  # noqa: E402

K = 20
FULL_TEST = 3785


def stand_ins(ref, rng):
    """20 predictions for one reference: 16 moved and rattled, 2 swapped, 2 sheared."""
    preds = []
    for j, sigma in enumerate(np.linspace(0.02, 0.3, 16)):
        p = ref.copy()
        p.positions += rng.normal(scale=sigma, size=p.positions.shape)
        p.rotate(rng.uniform(0, 360), rng.normal(size=3), rotate_cell=True)
        p.translate(rng.normal(size=3))
        p.wrap()
        preds.append(p[rng.permutation(len(p))])
    for _ in range(2):
        p = ref.copy()
        z = p.numbers.copy()
        z[[0, 1]] = z[[1, 0]]
        p.numbers = z
        preds.append(p)
    for _ in range(2):
        p = ref.copy()
        shear = np.eye(3)
        shear[0, 1] = 0.25
        p.set_cell(p.cell.array @ shear, scale_atoms=True)
        preds.append(p)
    return preds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=60, help="test crystals to match")
    parser.add_argument("--record", help="write the record here")
    args = parser.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["JCSP_CACHE_DIR"] = cache
        t = time.perf_counter()
        train = perov5("train")
        results["train_parse_s"] = time.perf_counter() - t
        t = time.perf_counter()
        train = perov5("train")
        results["train_cached_s"] = time.perf_counter() - t
        test = perov5("test")
    results["n_train"] = len(train)
    t = time.perf_counter()
    packed = pack(train)
    results["pack_train_s"] = time.perf_counter() - t
    results["pack_train_shape"] = list(packed.z.shape)
    print({k: v for k, v in results.items()}, flush=True)

    t = time.perf_counter()
    results["test_refs_invalid"] = int(sum(not evaluate.valid(a) for a in test))
    results["valid_test_refs_s"] = time.perf_counter() - t

    t = time.perf_counter()
    back = pack(test).to_atoms_list()
    trip = evaluate.match([[a] for a in back], test, processes=2, progress=False)
    results["roundtrip_test_s"] = time.perf_counter() - t
    results["roundtrip_test_match_rate"] = trip["match_rate"]
    results["roundtrip_test_max_rms"] = max(r for r in trip["rms"] if r is not None)
    print({k: v for k, v in results.items() if k.startswith("roundtrip")}, flush=True)

    rng = np.random.default_rng(0)
    refs = test[: args.refs]
    preds = [stand_ins(r, rng) for r in refs]
    pairs = len(refs) * K
    cpu, wall = time.process_time(), time.perf_counter()
    serial = evaluate.match(preds, refs, processes=1, progress=False)
    results["serial_cpu_s_per_pair"] = (time.process_time() - cpu) / pairs
    results["serial_wall_s_per_pair"] = (time.perf_counter() - wall) / pairs
    wall = time.perf_counter()
    pooled = evaluate.match(preds, refs, processes=2, progress=False)
    results["pool2_wall_s"] = time.perf_counter() - wall
    results["pool2_wall_s_per_pair"] = results["pool2_wall_s"] / pairs
    assert pooled == serial, "the pool and the serial run disagree"
    results["pairs"] = pairs
    results["stand_in_match_rate"] = {str(k): v["match_rate"] for k, v in serial["by_k"].items()}
    results["stand_in_valid_rate"] = serial["valid_rate"]
    results["estimate_full_k20_serial_cpu_min"] = (
        results["serial_cpu_s_per_pair"] * FULL_TEST * K / 60)
    results["estimate_full_k20_pool2_wall_min"] = (
        results["pool2_wall_s_per_pair"] * FULL_TEST * K / 60)
    results["estimate_full_k1_pool2_wall_min"] = (
        results["pool2_wall_s_per_pair"] * FULL_TEST / 60)
    for key, value in results.items():
        print(f"{key}: {value}")
    if args.record:
        write_record(args.record, settings={"refs": args.refs, "k": K, "processes": [1, 2],
                                            "stand_ins": "16 rattled 0.02-0.3 A, 2 swapped "
                                                         "A/B, 2 sheared 25 %"},
                     results=results,
                     notes="2-core machine shared with 2-3 other agents (one training a "
                           "model): wall times are upper bounds; CPU seconds per pair are "
                           "the steadier figure.")


if __name__ == "__main__":
    main()

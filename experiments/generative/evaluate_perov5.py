"""Perov-5 crystal structure prediction with a generator, by DiffCSP's protocol.

    # choose the sampler on the validation split (first 256 crystals, k = 1):
    python experiments/generative/evaluate_perov5.py --split val --limit 256 \
        --grid 1000:pc 1000:p 250:pc 250:p 100:p --record generative_perov5_val_sampler.json
    # the final number, once, on the whole test split:
    python experiments/generative/evaluate_perov5.py --split test --k 20 --grid 100:p \
        --record generative_perov5_test.json
    # the same, in pieces that survive an interrupted session (run it again to go on):
    python experiments/generative/evaluate_perov5.py --split test --k 20 --grid 250:pc \
        --processes 1 --batch-size 1000 --pieces --record generative_perov5_test_k20.json

For every sampler setting ``STEPS:pc`` (predictor-corrector) or ``STEPS:p`` (predictor
only) it samples k crystals per reference composition (one batched population, timed),
matches them with pymatgen's StructureMatcher (stol=0.5, angle_tol=10, ltol=0.3; RMSE
normalised by (V/N)^(1/3)) for every k' in 1..k that matters (1, 5, 10, 20), and also
scores "ranked k=1": the sample ``GenerativeModel.rank`` puts first among the k
(plausible samples first, then by the energy head's prediction). Samples are
kept in ``runs/perov5_samples_<split>_<setting>.extxyz`` so the numbers can be recomputed
with an independent matcher. Writes experiments/results/<record>.

With ``--pieces`` (one sampler setting) the references are taken ``batch_size // k`` at a
time: each piece's samples (``runs/perov5_pieces_<split>_<setting>_k<k>/piece_NNNN.extxyz``)
and match counts (``piece_NNNN.json``) are written when it is done, a rerun skips the pieces
on disk, and the record is written once every piece is (``--reverse`` takes them last
first, for a second process on another core). A piece scored with an earlier ranking
(its JSON has no or another ``ranker``) is re-ranked from its stored samples. The pieces
draw exactly the crystals of one whole call (``GenerativeModel.sample(first_batch=)``), so the numbers are
those of the one-call protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from records import ROOT, write_record  # noqa: E402

import ase.io  # noqa: E402

from jcsp.generative import data, evaluate, load  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="perov-5")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--grid", nargs="+", default=["1000:pc"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--record", default="generative_perov5_val_sampler.json")
    parser.add_argument("--pieces", action="store_true",
                        help="sample and match batch_size // k references at a time, "
                             "resumable (one --grid setting)")
    parser.add_argument("--reverse", action="store_true",
                        help="with --pieces: take the pieces last first (a second "
                             "process on another core meets the first in the middle)")
    args = parser.parse_args(argv)
    if args.pieces:
        return by_pieces(args)

    model = load(args.model)
    refs = data.pack(data.perov5(args.split)).to_atoms_list()
    if args.limit:
        refs = refs[:args.limit]
    ks = sorted({k for k in (1, 5, 10, 20) if k <= args.k} | {args.k})
    runs = []
    for setting in args.grid:
        steps, mode = setting.split(":")
        samples, frames, seconds = _sample(model, refs, args, steps, mode, progress=True)
        os.makedirs(os.path.join(ROOT, "runs"), exist_ok=True)
        path = os.path.join(ROOT, "runs", f"perov5_samples_{args.split}_{steps}{mode}.extxyz")
        ase.io.write(path, frames, format="extxyz")
        result = evaluate.match(samples, refs, ks=ks, processes=args.processes)
        ranked = evaluate.match([[model.rank(g)[0]] for g in samples], refs,
                                processes=args.processes, progress=False)
        row = {"setting": setting, "steps": int(steps), "corrector": mode == "pc",
               "sampling_seconds": round(seconds, 1),
               "crystals_per_second": round(len(refs) * args.k / seconds, 2),
               "by_k": {str(k): v for k, v in result["by_k"].items()},
               "ranked_k1_of_k": {kk: ranked[kk] for kk in ("match_rate", "rmse",
                                                             "n_matched", "valid_rate")},
               "n_errors": result["n_errors"], "samples": os.path.relpath(path, ROOT)}
        print(setting, row["sampling_seconds"], "s",
              {k: round(v["match_rate"], 2) for k, v in row["by_k"].items()},
              "ranked", round(ranked["match_rate"], 2), flush=True)
        runs.append(row)
    write_record(os.path.join(ROOT, "experiments", "results", args.record),
                 settings={"model": str(args.model), "model_path": model.meta.get("path"),
                           "split": args.split, "references": len(refs), "k": args.k,
                           "seed": args.seed, "batch_size": args.batch_size,
                           "matcher": {"stol": 0.5, "angle_tol": 10, "ltol": 0.3},
                           "smact": result["smact"]},
                 results={"runs": runs})


def _sample(model, refs, args, steps: str, mode: str, *, first: int = 0,
            first_batch: int = 0, progress: bool = False):
    """k samples per reference (seeded, timed) and the frames to write: (samples, frames
    tagged with reference_index (from ``first``) and sample_index, seconds)."""
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        samples = model.sample([a.numbers for a in refs], args.k, seed=args.seed,
                               n_steps=int(steps), corrector=(mode == "pc"),
                               batch_size=args.batch_size, progress=progress,
                               first_batch=first_batch)
    seconds = time.time() - t0
    frames = []
    for i, group in enumerate(samples):
        for j, atoms in enumerate(group):
            atoms.info.update(reference_index=first + i, sample_index=j)
            frames.append(atoms)
    return samples, frames, seconds


#: What ``GenerativeModel.rank`` orders by; stored with each piece's ranked score.
RANKER = "plausible first, then predicted energy"


def _rerank(model, row: dict, refs, stem: str, args) -> dict:
    """Score a stored piece's ranked pick again with the current ``model.rank``, from the
    samples in ``stem.extxyz`` (grouped by their reference_index and sample_index), and
    rewrite its JSON."""
    groups: dict[int, dict[int, object]] = {}
    for atoms in ase.io.read(stem + ".extxyz", index=":"):
        groups.setdefault(int(atoms.info["reference_index"]), {})[
            int(atoms.info["sample_index"])] = atoms
    samples = [[g[j] for j in sorted(g)] for _, g in sorted(groups.items())]
    if len(samples) != len(refs) or any(len(g) != args.k for g in samples):
        raise SystemExit(f"{stem}.extxyz does not hold {args.k} samples for each of "
                         f"{len(refs)} references; delete the piece to sample it again")
    row = {**row, "ranked": _ranked(model, samples, refs, args), "ranker": RANKER}
    evaluate.write_atomic(stem + ".json", lambda tmp: json.dump(row, open(tmp, "w")))
    print(f"piece {row['piece'] + 1}: re-ranked, {row['ranked']['n_matched']}/{len(refs)}",
          flush=True)
    return row


def _ranked(model, samples, refs, args) -> dict:
    """The match of each reference's first sample by ``model.rank`` (a piece's score)."""
    ranked = evaluate.match([[model.rank(g)[0]] for g in samples], refs,
                            processes=args.processes, progress=False)
    return {kk: ranked[kk] for kk in ("rmse", "n_matched", "valid_rate")}


def by_pieces(args) -> None:
    """The --pieces mode: see the module docstring."""
    if len(args.grid) != 1:
        raise SystemExit("--pieces takes one --grid setting")
    if args.batch_size % args.k:
        raise SystemExit(f"--pieces needs a batch size that is a multiple of k={args.k}")
    setting = args.grid[0]
    steps, mode = setting.split(":")
    model = load(args.model)
    refs = data.pack(data.perov5(args.split)).to_atoms_list()
    if args.limit:
        refs = refs[:args.limit]
    ks = sorted({k for k in (1, 5, 10, 20) if k <= args.k} | {args.k})
    per_piece = args.batch_size // args.k
    folder = os.path.join(ROOT, "runs", f"perov5_pieces_{args.split}_{steps}{mode}_"
                                        f"k{args.k}_seed{args.seed}_b{args.batch_size}")
    os.makedirs(folder, exist_ok=True)
    n_pieces = -(-len(refs) // per_piece)
    pieces = []
    for p in (reversed(range(n_pieces)) if args.reverse else range(n_pieces)):
        first = p * per_piece
        part = refs[first:first + per_piece]
        stem = os.path.join(folder, f"piece_{p:04d}")
        if os.path.exists(stem + ".json"):
            with open(stem + ".json") as fh:
                row = json.load(fh)
            if row.get("ranker") != RANKER:
                row = _rerank(model, row, part, stem, args)
            pieces.append(row)
            continue
        samples, frames, seconds = _sample(model, part, args, steps, mode, first=first,
                                           first_batch=p)
        evaluate.write_atomic(stem + ".extxyz",
                              lambda tmp: ase.io.write(tmp, frames, format="extxyz"))
        result = evaluate.match(samples, part, ks=ks, processes=args.processes,
                                progress=False)
        row = {"piece": p, "first": first, "n": len(part), "sampling_seconds": seconds,
               "by_k": {str(k): v for k, v in result["by_k"].items()},
               "ranked": _ranked(model, samples, part, args), "ranker": RANKER,
               "n_errors": result["n_errors"], "smact": result["smact"],
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "load_average": os.getloadavg()[0]}
        evaluate.write_atomic(stem + ".json", lambda tmp: json.dump(row, open(tmp, "w")))
        pieces.append(row)
        done = sum(r["n"] for r in pieces)
        print(f"piece {p + 1}/{n_pieces}: {seconds:.0f} s, k=1 "
              f"{row['by_k']['1']['match_rate']:.1f} %, k={args.k} "
              f"{row['by_k'][str(args.k)]['match_rate']:.1f} % ({done}/{len(refs)} refs)",
              flush=True)

    pieces.sort(key=lambda r: r["piece"])

    def merged(blocks: list[dict], kp: int) -> dict:
        n = sum(b["n"] for b in blocks)
        matched = sum(b["n_matched"] for b in blocks)
        rms = sum(b["rmse"] * b["n_matched"] for b in blocks if b["n_matched"])
        return {"match_rate": 100.0 * matched / n, "rmse": rms / matched if matched else None,
                "n_matched": matched,
                "valid_rate": sum(b["valid_rate"] * b["n"] for b in blocks) / n}

    def with_n(row: dict, block: dict) -> dict:
        return {**block, "n": row["n"]}

    seconds = sum(r["sampling_seconds"] for r in pieces)
    by_k = {str(k): merged([with_n(r, r["by_k"][str(k)]) for r in pieces], k) for k in ks}
    ranked = merged([with_n(r, r["ranked"]) for r in pieces], 1)
    row = {"setting": setting, "steps": int(steps), "corrector": mode == "pc",
           "sampling_seconds": round(seconds, 1),
           "crystals_per_second": round(len(refs) * args.k / seconds, 2),
           "by_k": by_k, "ranked_k1_of_k": ranked,
           "n_errors": sum(r["n_errors"] for r in pieces),
           "samples": os.path.relpath(folder, ROOT),
           "pieces": [{kk: r[kk] for kk in ("piece", "n", "sampling_seconds", "date",
                                             "load_average")} for r in pieces]}
    print(setting, row["sampling_seconds"], "s",
          {k: round(v["match_rate"], 2) for k, v in by_k.items()},
          "ranked", round(ranked["match_rate"], 2), flush=True)
    write_record(os.path.join(ROOT, "experiments", "results", args.record),
                 settings={"model": str(args.model), "model_path": model.meta.get("path"),
                           "split": args.split, "references": len(refs), "k": args.k,
                           "seed": args.seed, "batch_size": args.batch_size,
                           "pieces": n_pieces, "processes": args.processes,
                           "matcher": {"stol": 0.5, "angle_tol": 10, "ltol": 0.3},
                           "smact": pieces[0]["smact"]},
                 results={"runs": [row]})


if __name__ == "__main__":
    main()

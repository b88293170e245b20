"""jcsp.generative.evaluate: the CDVAE/DiffCSP match-rate protocol on real Perov-5 cells.

Expected values come from outside the module: hand-computed RMS displacements of known
perturbations, pymatgen's StructureMatcher called directly pair by pair, and ASE's
minimum-image distances for validity."""

from __future__ import annotations

import csv
import gzip
import json
import os
import pathlib
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from jcsp.generative import evaluate
from jcsp.generative.evaluate import match, valid, write_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEROV5 = next(p for p in (ROOT.parent / "shared" / "data" / "perov_5",
                          pathlib.Path("/work/shared/data/perov_5")) if p.is_dir())


@pytest.fixture(scope="module")
def refs():
    """The first four crystals of the Perov-5 test split, parsed by pymatgen."""
    with gzip.open(PEROV5 / "test.csv.gz", "rt", newline="") as fh:
        rows = [row for _, row in zip(range(4), csv.DictReader(fh))]
    out = []
    for row in rows:
        s = Structure.from_str(row["cif"], fmt="cif")
        out.append(Atoms([x.symbol for x in s.species], cell=s.lattice.matrix,
                         scaled_positions=s.frac_coords, pbc=True))
    return out


def _moved(atoms: Atoms, sigma: float, seed: int) -> tuple[Atoms, float]:
    """atoms rattled by sigma (Å), rotated, translated and reordered; and the RMS of the
    rattle after removing its mean, normalised by (V/N)^(1/3) (pymatgen's definition)."""
    out = atoms.copy()
    rng = np.random.default_rng(seed)
    d = rng.normal(scale=sigma, size=out.positions.shape)
    out.positions += d
    out.rotate(37.0 + seed, (1.0, 2.0, -0.5), rotate_cell=True)
    out.rotate(-71.0, "z", rotate_cell=True)
    out.translate([0.31, -1.7, 2.2])
    out.wrap()
    out = out[rng.permutation(len(out))]
    rms = np.sqrt(np.mean(np.sum((d - d.mean(0)) ** 2, axis=1)))
    return out, rms / (atoms.cell.volume / len(atoms)) ** (1 / 3)


def _swapped(atoms: Atoms) -> Atoms:
    """A and B cations exchanged (the first two sites of a Perov-5 ABX3 cell)."""
    out = atoms.copy()
    z = out.numbers.copy()
    z[[0, 1]] = z[[1, 0]]
    out.numbers = z
    return out


def _clashing(atoms: Atoms) -> Atoms:
    """Site 1 moved to 0.3 Å from site 0: structurally invalid."""
    out = atoms.copy()
    out.positions[1] = out.positions[0] + [0.3, 0.0, 0.0]
    return out


def _pmg(atoms):
    return Structure(atoms.cell.array, atoms.numbers, atoms.positions,
                     coords_are_cartesian=True)


def test_moved_copy_matches_with_the_hand_computed_rms(refs):
    for i, ref in enumerate(refs):
        pred, expected = _moved(ref, 0.01, seed=i)
        assert valid(pred)
        res = match([[pred]], [ref], progress=False)
        assert res["match_rate"] == 100.0 and res["n_matched"] == 1
        assert 1e-4 < expected < 0.02
        # the best mapping is the true one: pymatgen's RMS is the rattle's own
        assert res["rms"][0] == pytest.approx(expected, rel=1e-9)
        assert res["rmse"] == res["rms"][0]


def test_swapped_cations_do_not_match(refs):
    for ref in refs:
        pred = _swapped(ref)
        assert pred.get_chemical_formula() == ref.get_chemical_formula()
        assert valid(pred)
        res = match([[pred]], [ref], progress=False)
        assert res["match_rate"] == 0.0 and res["rms"] == [None] and res["rmse"] is None
        assert res["valid_rate"] == 100.0


def test_invalid_prediction_is_no_match_and_counted(refs):
    ref = refs[0]
    bad = _clashing(ref)
    assert not valid(bad)
    # pymatgen alone would call it a match (stol is loose): validity is what rejects it
    assert StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).get_rms_dist(
        _pmg(bad), _pmg(ref)) is not None
    good, _ = _moved(ref, 0.01, seed=7)
    res = match([[bad, good]], [ref], progress=False)
    assert res["valid_rate"] == 50.0 and res["by_k"][1]["valid_rate"] == 0.0
    assert res["by_k"][1]["match_rate"] == 0.0 and res["match_rate"] == 100.0


def test_k_predictions_against_direct_pymatgen(refs):
    """Match rate and RMSE over k = 3, and the k' = 1 prefix, against a direct count."""
    rng_seeds = iter(range(100))
    preds = []
    for i, ref in enumerate(refs):
        if i == 3:   # nothing right for the last crystal
            preds.append([_swapped(ref), _clashing(ref), _swapped(ref)])
            continue
        first = _moved(ref, 0.01, next(rng_seeds))[0] if i == 0 else _swapped(ref)
        preds.append([first, _moved(ref, 0.03, next(rng_seeds))[0],
                      _moved(ref, 0.02, next(rng_seeds))[0]])
    res = match(preds, refs, ks=(1, 2, 3), progress=False)

    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    direct = [[None if not valid(p) else matcher.get_rms_dist(_pmg(p), _pmg(r))
               for p in ps] for ps, r in zip(preds, refs)]
    for kp in (1, 2, 3):
        best = [min((x[0] for x in row[:kp] if x is not None), default=None)
                for row in direct]
        hits = [b for b in best if b is not None]
        assert res["by_k"][kp]["n_matched"] == len(hits)
        assert res["by_k"][kp]["match_rate"] == pytest.approx(100.0 * len(hits) / len(refs))
        assert res["by_k"][kp]["rmse"] == pytest.approx(np.mean(hits), rel=1e-12)
        n_valid = sum(valid(p) for ps in preds for p in ps[:kp])
        assert res["by_k"][kp]["valid_rate"] == pytest.approx(100 * n_valid / (4 * kp))
    assert res["by_k"][1]["n_matched"] == 1 and res["n_matched"] == 3
    assert res["match_rate"] == 75.0 and res["k"] == 3 and res["n"] == 4
    assert res["rms"][3] is None and all(r > 0 for r in res["rms"][:3])
    assert res["n_invalid_refs"] == 0 and res["n_errors"] == 0
    assert "smact" in res and "filtered" not in res

    # a composition filter (DiffCSP's SMACT test has this shape) makes the predictions of
    # the rejected composition invalid in "filtered", from the same matching run
    seen = []
    rejected = evaluate.composition(refs[1])

    def no_ref1(symbols, counts):
        seen.append((symbols, counts))
        return (symbols, counts) != rejected

    filt = match(preds, refs, ks=(1, 2, 3), progress=False, composition_filter=no_ref1)
    skip = ("filtered", "smact")
    assert {k: v for k, v in filt.items() if k not in skip} == {
        k: v for k, v in res.items() if k not in skip}
    assert set(seen) == {evaluate.composition(r) for r in refs} and len(seen) == 4
    assert all(list(c) == sorted(c, key=lambda s: Atoms(s).numbers[0]) for c, _ in seen)
    assert filt["filtered"]["n_rejected_compositions"] == 1
    assert filt["filtered"]["match_rate"] == 50.0
    hits = [min(x[0] for x in direct[i] if x is not None) for i in (0, 2)]
    assert filt["filtered"]["rmse"] == pytest.approx(np.mean(hits), rel=1e-12)
    assert filt["filtered"]["valid_rate"] == pytest.approx(100 * (n_valid - 3) / 12)
    assert filt["filtered"]["by_k"][1]["match_rate"] == 25.0

    # the worker pool gives the same numbers (threshold lowered to use it here)
    old = evaluate._SERIAL_BELOW
    evaluate._SERIAL_BELOW = 0
    try:
        pooled = match(preds, refs, ks=(1, 2, 3), processes=2, progress=False)
    finally:
        evaluate._SERIAL_BELOW = old
    assert pooled == res


def test_valid_against_ase_minimum_image():
    assert valid(bulk("Cu", "fcc", a=3.6))
    rng = np.random.default_rng(3)
    seen = set()
    for trial in range(40):
        a = rng.uniform(2.0, 3.5)
        cell = np.diag([a, a * rng.uniform(0.9, 1.1), a * rng.uniform(0.9, 1.1)])
        atoms = Atoms("Na3Cl", cell=cell, scaled_positions=rng.random((4, 3)), pbc=True)
        d = atoms.get_all_distances(mic=True)
        expected = d[~np.eye(4, dtype=bool)].min() >= 0.5
        seen.add(bool(expected))
        assert valid(atoms) == expected
    assert seen == {True, False}
    tiny = Atoms("H", cell=np.eye(3) * 0.4, pbc=True)     # 0.064 Å^3 < 0.1
    assert not valid(tiny)
    assert valid(Atoms("H", cell=np.eye(3) * 0.5, pbc=True))  # 0.125 Å^3
    nan = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    nan.positions[0, 0] = np.nan
    assert not valid(nan)


def test_plausible_is_the_benchmark_validity_and_ranks_first():
    """jcsp.generative.model.plausible (ASE, no pymatgen) against ``valid`` (pymatgen's
    distance matrix) on random skewed perovskite cells, then GenerativeModel.rank puts
    every implausible sample after the plausible ones, whatever its predicted energy."""
    from jcsp.generative.model import GenerativeModel, plausible
    rng = np.random.default_rng(11)
    seen = set()
    for trial in range(120):
        cell = np.eye(3) * rng.uniform(3.0, 4.2) + rng.normal(0, 0.6, (3, 3))
        atoms = Atoms("SrTiO3", cell=cell, scaled_positions=rng.random((5, 3)), pbc=True)
        seen.add(valid(atoms))
        assert plausible(atoms) == valid(atoms), trial
    assert seen == {True, False}
    assert not plausible(Atoms("H", cell=np.eye(3) * 0.4, pbc=True))
    good = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    bad = good.copy()
    bad.positions[1] = bad.positions[0] + [0.2, 0.0, 0.0]
    samples = []
    for k, (atoms, energy) in enumerate([(bad, -9.0), (good, -1.0), (bad, -8.0), (good, -2.0)]):
        atoms = atoms.copy()
        atoms.info.update(predicted_energy=energy, k=k)
        samples.append(atoms)
    ranked = GenerativeModel.rank(None, samples)
    assert [a.info["k"] for a in ranked] == [3, 1, 0, 2]


def test_bad_input(refs):
    with pytest.raises(ValueError, match="no reference"):
        match([], [], progress=False)
    with pytest.raises(ValueError, match="2 lists of predictions for 1"):
        match([[refs[0]], [refs[1]]], [refs[0]], progress=False)
    with pytest.raises(ValueError, match="same number k"):
        match([[refs[0]], [refs[1], refs[1]]], refs[:2], progress=False)
    with pytest.raises(ValueError, match="same number k"):
        match([[]], refs[:1], progress=False)
    with pytest.raises(ValueError, match=r"1\.\.1"):
        match([[refs[0]]], refs[:1], ks=(1, 5), progress=False)


def test_missing_pymatgen_says_what_to_install(refs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymatgen.analysis.structure_matcher", None)
    with pytest.raises(ImportError, match=r'pip install "jcsp\[generative\]"'):
        match([[refs[0]]], refs[:1], progress=False)


def test_write_metrics_is_json_and_atomic(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    metrics = {"match_rate": 50.0, "rmse": float("nan"), "by_k": {1: {"n": np.int64(3)}},
               "rms": np.array([0.1, np.inf])}
    write_metrics(path, metrics, model="perov-5", k=20)
    data = json.loads(path.read_text())
    assert data == {"metrics": {"match_rate": 50.0, "rmse": None, "by_k": {"1": {"n": 3}},
                                "rms": [0.1, None]},
                    "settings": {"model": "perov-5", "k": 20}}
    # a failure while serialising leaves the previous file whole and no temporary files
    with pytest.raises(TypeError):
        write_metrics(path, {"bad": object()})
    assert json.loads(path.read_text()) == data
    assert os.listdir(path.parent) == ["metrics.json"]

"""The crystal structure prediction benchmark protocol of CDVAE and DiffCSP (host side).

For each reference crystal of a test split a model proposes ``k`` structures of the same
composition. A proposal counts when it is structurally valid and pymatgen's
``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)`` finds it the same crystal as the
reference; a reference is *matched* when any of its ``k`` proposals counts, with the
smallest of their RMS displacements, which pymatgen already normalises by ``(V/N)^(1/3)``.
The match rate is the percentage of matched references and the RMSE the mean of their
RMS displacements (Xie et al., CDVAE, ICLR 2022; Jiao et al., DiffCSP, NeurIPS 2023,
``scripts/compute_metrics.py``: ``RecEval`` for k = 1, ``RecEvalBatch`` for k > 1).

Validity (:func:`valid`) follows DiffCSP's ``structure_validity``: finite numbers, a cell of
volume >= 0.1 Å^3, and every distance between two different sites (pymatgen's
``distance_matrix``, minimum image) >= 0.5 Å. Differences from DiffCSP's script, stated so
the numbers are read right:

- DiffCSP also marks a composition invalid when SMACT finds it charge-imbalanced
  (``smact_validity``). SMACT is not a jcsp dependency: the headline numbers here are
  without that filter (the result says so in ``"smact"``), so they can only be higher
  than or equal to DiffCSP's for the same samples. Pass DiffCSP's test as
  ``composition_filter`` (``experiments/generative/smact_share.py`` has it, written
  against SMACT) to get the filtered numbers too, in ``"filtered"``, from the same
  matching run. On the Perov-5 test split that filter (SMACT's ``smact14`` oxidation
  states) rejects 53 of 3785 compositions, 1.40 %: DiffCSP's k = 20 score of 98.60 % is
  exactly 100 % of the rest.
- DiffCSP's k = 1 evaluation also requires the reference to be valid; here an invalid
  reference is still evaluated and counted in ``"n_invalid_refs"`` (0 on Perov-5).
- A StructureMatcher exception counts as no match (as in DiffCSP) and is counted in
  ``"n_errors"``.

pymatgen is an optional extra (``pip install "jcsp[generative]"``), imported when a
function here runs. Matching runs in a pool of ``spawn`` worker processes (scripts that
call :func:`match` with ``processes > 1`` need the usual ``if __name__ == "__main__":``
guard).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import tempfile
from typing import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from tqdm.auto import tqdm

__all__ = ["valid", "match", "composition", "write_atomic", "write_metrics"]

#: Below these, DiffCSP's ``structure_validity`` calls a structure invalid.
MIN_DISTANCE = 0.5  # Å
MIN_VOLUME = 0.1    # Å^3

#: Fewer pairs than this are matched in this process: a spawned worker takes seconds to
#: import jcsp, longer than matching a few hundred small cells.
_SERIAL_BELOW = 400

_SMACT_NOTE = ("not applied: DiffCSP also counts SMACT charge-imbalanced compositions as "
               "invalid (53 of the 3785 Perov-5 test crystals); pass composition_filter= "
               "(experiments/generative/smact_share.py) for those numbers")

_PIP = 'pip install "jcsp[generative]"'
_matchers: dict = {}


def _pymatgen():
    """(Lattice, Structure, StructureMatcher), or an ImportError saying what to install."""
    try:
        from pymatgen.analysis.structure_matcher import StructureMatcher
        from pymatgen.core import Lattice, Structure
    except ImportError as exc:
        raise ImportError("jcsp.generative.evaluate needs pymatgen (its StructureMatcher "
                          f"defines the benchmark): {_PIP}") from exc
    return Lattice, Structure, StructureMatcher


def _arrays(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numbers [n], cell [3, 3] rows, fractional coordinates [n, 3]); NaN frac if singular."""
    cell = np.array(atoms.cell.array, float)
    positions = np.array(atoms.positions, float)
    try:
        frac = np.linalg.solve(cell.T, positions.T).T
    except np.linalg.LinAlgError:
        frac = np.full_like(positions, np.nan)
    return np.array(atoms.numbers, np.int64), cell, frac


def _structure(arrays):
    """A pymatgen Structure, or None when the numbers cannot make one (not finite, no atoms)."""
    _, Structure, _ = _pymatgen()
    numbers, cell, frac = arrays
    if len(numbers) == 0 or not (np.all(np.isfinite(cell)) and np.all(np.isfinite(frac))):
        return None
    try:
        return Structure(cell, [int(z) for z in numbers], frac, coords_are_cartesian=False)
    except Exception:  # pymatgen rejects bad lattices and species with various types
        return None


def _structure_valid(structure) -> bool:
    if structure is None or not structure.volume >= MIN_VOLUME:
        return False
    if len(structure) < 2:
        return True
    dist = np.array(structure.distance_matrix)
    if not np.all(np.isfinite(dist)):
        return False
    np.fill_diagonal(dist, np.inf)
    return bool(dist.min() >= MIN_DISTANCE)


def valid(atoms: Atoms) -> bool:
    """DiffCSP's structural validity: finite, volume >= 0.1 Å^3, all distances >= 0.5 Å.

    Distances are pymatgen's ``Structure.distance_matrix`` off the diagonal (minimum image
    between two different sites; a site's distance to its own images is not checked,
    as in DiffCSP's ``structure_validity``).

    >>> from ase.build import bulk
    >>> valid(bulk("Cu", "fcc", a=3.6))
    True
    """
    return _structure_valid(_structure(_arrays(atoms)))


def _matcher(stol: float, angle_tol: float, ltol: float):
    key = (stol, angle_tol, ltol)
    if key not in _matchers:
        _, _, StructureMatcher = _pymatgen()
        _matchers[key] = StructureMatcher(stol=stol, angle_tol=angle_tol, ltol=ltol)
    return _matchers[key]


def _match_task(task) -> tuple[list, list, int]:
    """One reference against its k predictions: ([rms or None] * k, [valid] * k, errors)."""
    ref_arrays, pred_arrays, tols = task
    matcher = _matcher(*tols)
    ref = _structure(ref_arrays)
    rms, ok, errors = [], [], 0
    for arrays in pred_arrays:
        pred = _structure(arrays)
        is_valid = _structure_valid(pred)
        ok.append(is_valid)
        if not is_valid or ref is None:
            rms.append(None)
            continue
        try:
            found = matcher.get_rms_dist(pred, ref)
        except Exception:  # DiffCSP counts a matcher failure as no match; counted here
            errors += 1
            found = None
        rms.append(None if found is None else float(found[0]))
    return rms, ok, errors


def _summary(rms: np.ndarray, ok: np.ndarray) -> dict:
    matched = np.isfinite(rms).any(axis=1)
    best = np.where(matched, np.nanmin(np.where(np.isfinite(rms), rms, np.inf), axis=1),
                    np.nan)
    return {"match_rate": 100.0 * float(matched.mean()),
            "rmse": float(best[matched].mean()) if matched.any() else None,
            "n_matched": int(matched.sum()),
            "valid_rate": 100.0 * float(ok.mean())}


def composition(atoms: Atoms) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(element symbols sorted by atomic number, counts divided by their gcd), as DiffCSP.

    >>> composition(Atoms("Sr2Ti2O6"))
    (('O', 'Ti', 'Sr'), (3, 1, 1))
    """
    zs, counts = np.unique(np.asarray(atoms.numbers), return_counts=True)
    if len(zs) == 0:
        return (), ()
    counts = counts // np.gcd.reduce(counts)
    return tuple(chemical_symbols[z] for z in zs), tuple(int(c) for c in counts)


def _passes(atoms: Atoms, composition_filter, verdicts: dict) -> bool:
    key = composition(atoms)
    if key not in verdicts:
        verdicts[key] = bool(composition_filter(*key))
    return verdicts[key]


def match(preds: Sequence[Sequence[Atoms]], refs: Sequence[Atoms], *, stol: float = 0.5,
          angle_tol: float = 10.0, ltol: float = 0.3, ks: Sequence[int] | None = None,
          processes: int | None = None, progress: bool = True,
          composition_filter: Callable[[tuple[str, ...], tuple[int, ...]], bool] | None = None
          ) -> dict:
    """Match rate and RMSE of k predictions per reference (the CDVAE/DiffCSP CSP protocol).

    Args:
      preds: one list of ``k`` predicted crystals per reference (the same ``k`` for all).
      refs: the reference crystals (e.g. ``perov5("test")``).
      stol, angle_tol, ltol: StructureMatcher tolerances (the benchmark's defaults).
      ks: prefix sizes to report in ``"by_k"`` (k' = 1 uses each reference's first
        prediction); default ``(1, k)``.
      processes: worker processes; default ``os.cpu_count()``; 1 (or fewer than 400
        pairs in all) runs in this process.
      progress: show a tqdm progress bar.
      composition_filter: optional ``f(symbols, counts) -> bool`` on each prediction's
        composition, elements sorted by atomic number and counts divided by their gcd
        (DiffCSP's convention for ``smact_validity``); a prediction whose composition
        fails it is invalid in ``"filtered"``. The headline numbers ignore it.

    Returns:
      ``{"n": len(refs), "k": k, "match_rate": %, "rmse": mean RMS over matched references
      (None if none), "n_matched", "valid_rate": % of valid predictions, "rms": per
      reference the smallest RMS over its matching predictions or None, "by_k": {k':
      {"match_rate", "rmse", "n_matched", "valid_rate"}}, "n_invalid_refs", "n_errors",
      "stol", "angle_tol", "ltol", "smact": why no SMACT filter was applied}``, and with
      ``composition_filter`` also ``"filtered": {"match_rate", "rmse", "n_matched",
      "valid_rate", "by_k", "n_rejected_compositions"}``.

    Raises:
      ValueError: lengths that differ, no references, an empty or ragged list of
        predictions, or a k' outside 1..k.
      ImportError: pymatgen is missing (with the pip command that installs it).
    """
    _pymatgen()
    n = len(refs)
    if n == 0:
        raise ValueError("match: no reference crystals")
    if len(preds) != n:
        raise ValueError(f"match: {len(preds)} lists of predictions for {n} references; "
                         "give one list of k predictions per reference")
    sizes = {len(p) for p in preds}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"match: every reference needs the same number k >= 1 of "
                         f"predictions, got sizes {sorted(sizes)}")
    k = sizes.pop()
    ks = sorted({1, k} if ks is None else {int(x) for x in ks})
    if ks[0] < 1 or ks[-1] > k:
        raise ValueError(f"match: every k' in ks must be in 1..{k}, got {ks}")
    processes = (os.cpu_count() or 1) if processes is None else int(processes)
    if processes < 1:
        raise ValueError(f"match: processes must be >= 1, got {processes}")

    tols = (float(stol), float(angle_tol), float(ltol))
    tasks = [(_arrays(r), [_arrays(p) for p in ps], tols) for r, ps in zip(refs, preds)]
    bar = tqdm(total=n, desc="matching", unit="crystal", disable=not progress)
    if processes == 1 or n * k < _SERIAL_BELOW:
        results = []
        for task in tasks:
            results.append(_match_task(task))
            bar.update()
    else:
        chunk = max(1, min(32, n // (8 * processes)))
        with multiprocessing.get_context("spawn").Pool(min(processes, n)) as pool:
            results = []
            for result in pool.imap(_match_task, tasks, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()

    rms = np.array([[np.nan if r is None else r for r in res[0]] for res in results], float)
    ok = np.array([res[1] for res in results], bool)
    by_k = {kp: _summary(rms[:, :kp], ok[:, :kp]) for kp in ks}
    full = _summary(rms, ok)
    best = [None if not np.isfinite(row).any() else float(np.nanmin(row)) for row in rms]
    extra = {}
    if composition_filter is not None:
        verdicts: dict = {}
        passes = np.array([[_passes(p, composition_filter, verdicts) for p in ps]
                           for ps in preds], bool)
        rms_f, ok_f = np.where(passes, rms, np.nan), ok & passes
        extra["filtered"] = {**_summary(rms_f, ok_f),
                             "by_k": {kp: _summary(rms_f[:, :kp], ok_f[:, :kp]) for kp in ks},
                             "n_rejected_compositions": sum(not v for v in verdicts.values())}
    return {"n": n, "k": k, **full, "rms": best, "by_k": by_k, **extra,
            "n_invalid_refs": int(sum(not _structure_valid(_structure(t[0])) for t in tasks)),
            "n_errors": int(sum(res[2] for res in results)),
            "stol": tols[0], "angle_tol": tols[1], "ltol": tols[2],
            "smact": _SMACT_NOTE if composition_filter is None else
            "the headline numbers are without it; 'filtered' applies the composition_filter "
            "given"}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_metrics(path: str | os.PathLike, metrics: dict, **settings) -> None:
    """Write ``{"metrics": metrics, "settings": settings}`` as JSON, atomically.

    The file appears complete or not at all (a temporary file in the same folder, then a
    rename); NaN and infinities become ``null``; dictionary keys become strings.
    """
    text = json.dumps(_jsonable({"metrics": metrics, "settings": settings}), indent=1,
                      allow_nan=False)

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")

    write_atomic(os.fspath(path), write)


def write_atomic(path: str, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over
    ``path``: the file appears complete or not at all, and a failure leaves no
    temporary file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

"""Every relaxed structure of a search in an ASE SQLite database, as it is produced
(host side).

A search writes its relaxed structures in batches (:func:`write_structures`), each batch
in one committed SQLite transaction (at most every ``jcsp.search.run.FLUSH_SECONDS``),
each structure under a ``uid`` that names where it came from (:func:`make_uid`: run
seed, driver, generation, index). A search killed at any moment, even by SIGKILL, leaves a database that holds every structure committed before
the kill, each exactly once; the restarted search reads them back (:func:`read_all`),
skips the work whose uids are already there (:func:`has`, :func:`written_uids`) and
never writes a row twice.

The database is opened with ``use_lock_file=False``: ASE's default lock file survives a
killed process and makes the next ``connect`` wait forever, whereas SQLite's own locks
vanish with the process and a half-written transaction is rolled back from its journal
on the next open.

The run's configuration (composition, potential, seed, algorithm, budget, ...) is stored
once in the database metadata (:func:`open_run`); resuming with a different
configuration is a :class:`ResumeError`.

Rows carry the key-value pairs ``uid``, ``failed`` (true for an invalid structure or a
relaxation that failed; its ``info`` says why), ``enthalpy``, ``volume`` (crystals),
``spacegroup``, ``pressure``, ``driver``, ``generation`` and ``parents`` (uids joined by
commas), so ``ase db run.db 'enthalpy<-30'`` and ``ase db run.db failed=1`` work; the
energy (and forces and stress when known and finite) is the row's calculator result,
the whole ``info`` dictionary and the fingerprint are in ``data``.

Example:
  >>> db = open_run("runs/si8/structures.db", {"composition": "Si8", "seed": 0})
  >>> uid = make_uid(0, "ga", 3, 17)
  >>> if not has(db, uid):
  ...     write_structure(db, relaxed, uid=uid, driver="ga", generation=3,
  ...                     parents=[make_uid(0, "ga", 2, 4)], fingerprint=fp)
  >>> structures = read_all(db)
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import ase.db
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

#: Key of the run configuration in the database metadata.
RUN_KEY = "jcsp_run"
#: Calculator results copied into the database when the structure has them.
RESULTS = ("energy", "forces", "stress", "free_energy")


class ResumeError(ValueError):
    """The database belongs to a different run than the one being resumed."""


def make_uid(seed: int, driver: str, generation: int, index: int) -> str:
    """Stable unique id of a structure: ``"s{seed}-{driver}-g{generation}-i{index}"``.

    Args:
      seed: the run's seed.
      driver: the search driver that produced it (letters, digits, ``_``).
      generation: its generation (or step, or round) in that driver, >= 0.
      index: its index within the generation, >= 0.
    """
    if not (isinstance(driver, str) and driver and driver.replace("_", "").isalnum()):
        raise ValueError(f"driver must be a name of letters, digits and '_', got {driver!r}")
    for name, value in (("seed", seed), ("generation", generation), ("index", index)):
        if not isinstance(value, numbers.Integral) or (name != "seed" and value < 0):
            raise ValueError(f"{name} must be an integer{'' if name == 'seed' else ' >= 0'},"
                             f" got {value!r}")
    return f"s{int(seed)}-{driver}-g{int(generation)}-i{int(index)}"


# --- JSON with numpy values, tuples and non-string keys (lossless round trip) ---------
def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return {"__array__": [_encode(v, where) for v in value.tolist()],
                "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and not {"__array__", "__tuple__",
                                                           "__items__"} & set(value):
            return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
        return {"__items__": [[_encode(k, where), _encode(v, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
    raise ValueError(f"{where} holds a {type(value).__name__}, which the database cannot "
                     "store; keep info values to numbers, strings, lists, dicts and arrays")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return np.array(_decode(value["__array__"]), dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {_hashable(_decode(k)): _decode(v) for k, v in value["__items__"]}
        return {k: _decode(v) for k, v in value.items()}
    return value


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _normalize(config: Mapping) -> dict:
    """The JSON form of a run configuration, as it is stored and compared."""
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except TypeError as err:
        raise ValueError(f"the run configuration must be JSON data (numbers, strings, lists, "
                         f"dicts): {err}") from None


# --- opening and the run record -----------------------------------------------------
def open_run(path: str | os.PathLike, config: Mapping | None = None, *,
             allow_changes: Iterable[str] = ()):
    """Open (or create) a run's database, checking it belongs to this run.

    Args:
      path: the ``.db`` file; missing parent folders are created.
      config: the run configuration (JSON data). A new database stores it; an existing
        one must hold the same (else :class:`ResumeError`). ``None`` skips the check.
      allow_changes: keys of ``config`` that may differ from the stored ones (such as
        ``"budget"`` when a finished run is extended); the stored record is updated.

    Returns:
      The ASE database (``ase.db.core.Database``), opened without ASE's lock file.

    Raises:
      ResumeError: the stored configuration differs (the message names the keys), or the
        database has rows but no jcsp run record.
    """
    path = Path(path)
    if path.suffix != ".db":
        raise ValueError(f"the run database must be a .db file, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create(path)
    db = ase.db.connect(str(path), type="db", use_lock_file=False, append=True)
    _index_uids(db)
    if config is None:
        return db
    config = _normalize(config)
    metadata = db.metadata
    stored = metadata.get(RUN_KEY)
    if stored is None:
        if db.count() > 0:
            raise ResumeError(f"{path} already holds {db.count()} structures but no jcsp run "
                              "record; choose a new output path")
    else:
        allowed = set(allow_changes)
        keys = sorted(set(stored) | set(config))
        differ = [k for k in keys if stored.get(k) != config.get(k) and k not in allowed]
        if differ:
            lines = [f"  {k}: stored {stored.get(k)!r}, now {config.get(k)!r}" for k in differ]
            raise ResumeError(f"{path} belongs to a different run; to resume it repeat the "
                              "original settings, or choose a new output path:\n"
                              + "\n".join(lines))
        if stored == config:
            return db
    metadata[RUN_KEY] = config
    db.metadata = metadata
    return db


def _index_uids(db) -> None:
    """An index on ASE's text key-value table, so that finding a uid (:func:`has`, the
    check before each write) is a lookup instead of a scan of every row: without it a
    search writing its n-th structure paid O(n), 5 ms a row at 2500 rows. ASE ignores
    indices it did not make; ``IF NOT EXISTS`` makes reopening free."""
    with db:
        db.connection.execute("CREATE INDEX IF NOT EXISTS jcsp_uid_index "
                              "ON text_key_values(key, value)")


def _create(path: Path) -> None:
    """Create an empty, fully initialised ASE database at ``path`` atomically.

    ASE creates its tables outside a transaction and inserts the format version after
    them, so a process killed (or a reader looking) between the two sees a database that
    ASE can no longer open. The tables are therefore built in a private file next to
    ``path`` and renamed onto it: ``path`` exists only once it is complete.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
    tmp.unlink(missing_ok=True)
    try:
        ase.db.connect(str(tmp), type="db", use_lock_file=False, append=True).metadata = {}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_config(db) -> dict | None:
    """The stored run configuration, or None."""
    return db.metadata.get(RUN_KEY)


# --- rows ---------------------------------------------------------------------------
def has(db, uid: str) -> bool:
    """Is a structure with this uid already in the database?"""
    return db.count(uid=uid) > 0


def written_uids(db) -> set[str]:
    """Uids of every structure in the database (one query; use it to skip work)."""
    return {row.get("uid") for row in db.select(include_data=False)}


def _row(atoms: Atoms, *, uid: str, driver: str, generation: int, parents, pressure,
         fingerprint):
    """(row Atoms, key-value pairs, data) of one structure, as :func:`write_structure`
    stores it."""
    if not isinstance(uid, str) or not uid:
        raise ValueError(f"uid must be a non-empty string, got {uid!r}")
    if isinstance(parents, str):
        parents = [p for p in parents.split(",") if p]
    parents = [str(p) for p in parents]
    info = dict(atoms.info)
    info.update(uid=uid, driver=driver, generation=int(generation), parents=parents)
    if pressure is not None:
        info["pressure"] = float(pressure)
    data = {"info": json.dumps(_encode(info, "info"))}
    if fingerprint is not None:
        data["fingerprint"] = np.asarray(fingerprint, float)

    kvp = {"uid": uid, "driver": str(driver), "generation": int(generation),
           "parents": ",".join(parents), "failed": bool(info.get("failed", False))}
    for key in ("enthalpy", "volume", "pressure"):
        value = info.get(key)
        if isinstance(value, numbers.Real) and math.isfinite(value):
            kvp[key] = float(value)
    if isinstance(info.get("spacegroup"), str):
        kvp["spacegroup"] = info["spacegroup"]

    row = atoms.copy()
    results = {}
    if atoms.calc is not None:
        results = {k: v for k, v in getattr(atoms.calc, "results", {}).items()
                   if k in RESULTS and np.all(np.isfinite(v))}
    energy = info.get("energy")
    if "energy" not in results and isinstance(energy, numbers.Real) and math.isfinite(energy):
        results["energy"] = float(energy)
    if results:
        row.calc = _Results(row, **results)
    return row, kvp, data


class _Results(SinglePointCalculator):
    """The results of a row about to be written. ASE's writer asks for each of its ~15
    properties and each ask compares the atoms with the calculator's copy (``isclose``
    on positions, cell, ...), about 2 ms a row; this row is written right after it is
    built, unchanged, so the comparison is skipped. Rows read back carry ASE's own
    ``SinglePointCalculator``."""

    name = SinglePointCalculator.name

    def check_state(self, atoms, tol=1e-15):
        return []


def write_structure(db, atoms: Atoms, *, uid: str, driver: str = "", generation: int = 0,
                    parents: Sequence[str] | str = (), pressure: float | None = None,
                    fingerprint=None) -> int:
    """Write one relaxed structure in its own committed transaction (host side).

    Does nothing when ``uid`` is already there, so a resumed search can call it again.

    Args:
      db: from :func:`open_run`.
      atoms: the relaxed structure; ``info`` should hold ``energy``, ``enthalpy`` (eV),
        ``volume`` (Å³) and ``spacegroup`` (see :class:`jcsp.search.archive.Archive`);
        its calculator's energy, forces and stress are kept when present.
      uid: its unique id (:func:`make_uid`).
      driver, generation, parents: its origin (the uids of its parents).
      pressure: GPa (default: ``info["pressure"]`` when there).
      fingerprint: [P, n_bins] its fingerprint, stored in ``data``.

    Returns:
      The row id (of the existing row when ``uid`` was already written).
    """
    return write_structures(db, [(atoms, dict(uid=uid, driver=driver, generation=generation,
                                              parents=parents, pressure=pressure,
                                              fingerprint=fingerprint))])[0]


def write_structures(db, items: Sequence[tuple[Atoms, Mapping]]) -> list[int]:
    """Write many structures in ONE committed transaction (host side): all or none of
    them are in the database after a kill, and a batch costs one commit (one fsync)
    instead of one per structure.

    Args:
      db: from :func:`open_run`.
      items: ``(atoms, keywords)`` pairs, the keywords those of :func:`write_structure`
        (``uid`` required; ``driver``, ``generation``, ``parents``, ``pressure``,
        ``fingerprint`` optional). A uid already in the database is not written again.

    Returns:
      The row id of each (the existing row's when its uid was already written).
    """
    rows = []
    for atoms, kw in items:
        unknown = set(kw) - {"uid", "driver", "generation", "parents", "pressure",
                             "fingerprint"}
        if unknown:
            raise ValueError(f"unknown write_structure keyword(s) {sorted(unknown)}")
        rows.append((kw["uid"], _row(atoms, uid=kw["uid"], driver=kw.get("driver", ""),
                                     generation=kw.get("generation", 0),
                                     parents=kw.get("parents", ()),
                                     pressure=kw.get("pressure"),
                                     fingerprint=kw.get("fingerprint"))))
    ids = []
    with db:  # one transaction: the checks and the writes commit together
        for uid, (row, kvp, data) in rows:
            if db.count(uid=uid) > 0:
                ids.append(int(db.get(uid=uid).id))
            else:
                ids.append(int(db.write(row, key_value_pairs=kvp, data=data)))
    return ids


def read_all(db, *, with_fingerprints: bool = False) -> list[Atoms]:
    """Every structure in the order written, with ``info`` as it was written.

    Args:
      db: from :func:`open_run`.
      with_fingerprints: also put the stored fingerprint in ``info["fingerprint"]``.

    Returns:
      ``ase.Atoms`` with a ``SinglePointCalculator`` (energy, and forces and stress when
      they were stored) and the original ``info`` (plus ``uid``, ``driver``,
      ``generation``, ``parents`` and ``pressure``).
    """
    out = []
    for row in db.select(sort="id"):
        atoms = row.toatoms()
        info = _decode(json.loads(row.data["info"])) if "info" in row.data else {}
        if with_fingerprints and "fingerprint" in row.data:
            info["fingerprint"] = np.asarray(row.data["fingerprint"])
        atoms.info = info
        out.append(atoms)
    return out


__all__ = ["open_run", "run_config", "write_structure", "write_structures", "has", "written_uids",
           "read_all", "make_uid", "ResumeError", "RUN_KEY"]

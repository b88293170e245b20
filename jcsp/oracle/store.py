"""The :class:`LabelStore`: oracle single points keyed by geometry (host side).

See :mod:`jcsp.oracle`. An ASE SQLite database (or memory); each label is committed the
moment it returns, so no oracle call is ever repeated, across a kill and a resume too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Mapping, Sequence

import ase.db
import ase.db.core
import numpy as np
from ase import Atoms

from .calculators import Label, failed_label
from .pool import Oracle

#: Geometry keys are positions and cells rounded to this many Å.
KEY_RESOLUTION = 1e-8
#: Keys a :class:`LabelStore` row uses itself (not available as metadata).
_STORE_KEYS = ("oracle_key", "ok", "seconds", "error")


def geometry_key(atoms: Atoms) -> str:
    """A hash of the geometry: atomic numbers, periodicity, and cell and positions rounded
    to :data:`KEY_RESOLUTION` Å (the same geometry always gets the same key)."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, np.int64).tobytes())
    h.update(np.asarray(atoms.pbc, bool).tobytes())
    for values in (atoms.cell[:], atoms.positions):
        rounded = np.rint(np.asarray(values, np.float64) / KEY_RESOLUTION).astype(np.int64)
        h.update(rounded.tobytes())
    return h.hexdigest()[:32]


def _check_meta(meta: Mapping) -> None:
    """Metadata must be valid ASE database key-value pairs, and not the store's own keys
    (checked before the oracle is called, so that no call is wasted on a bad key)."""
    clash = sorted(set(meta) & set(_STORE_KEYS))
    if clash:
        raise ValueError(f"metadata keys {clash} are the store's own; rename them")
    try:
        ase.db.core.check(dict(meta))
    except ValueError as err:
        raise ValueError(f"metadata {dict(meta)!r} cannot go into the database: {err}"
                         ) from None


@dataclasses.dataclass
class _Entry:
    atoms: Atoms
    label: Label
    meta: dict


class LabelStore:
    """Oracle single points keyed by geometry, in an ASE SQLite database or in memory.

    Every :meth:`put` is written and committed at once (one transaction per label, no
    lock file, so a killed run leaves a database the next run opens at once); reopening
    the same path reads every label back. Failed calls are stored too, with their error,
    and never retried. One process writes a store: rows another process adds later are
    seen by reopening it.

    Args:
      path: database file (``.db``, created with its folder), or None for a store in
        memory.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self._db = None
        self._entries: dict[str, _Entry] = {}
        if self.path is not None:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            self._db = ase.db.connect(self.path, type="db", use_lock_file=False)
            for row in self._db.select("oracle_key"):
                self._entries[row.oracle_key] = self._entry_of(row)

    @staticmethod
    def _entry_of(row) -> _Entry:
        atoms = row.toatoms()
        atoms.calc = None
        kv = dict(row.key_value_pairs)
        if kv["ok"]:
            stress = row.get("stress")
            label = Label(energy=float(row.energy), forces=np.array(row.forces, np.float64),
                          stress=None if stress is None else np.array(stress, np.float64),
                          seconds=float(kv["seconds"]))
        else:
            label = failed_label(kv["seconds"], kv["error"])
        meta = {k: v for k, v in kv.items() if k not in _STORE_KEYS}
        return _Entry(atoms, label, meta)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def n_calls(self) -> int:
        """Oracle single points recorded in the store (failed ones and those read back from
        an earlier run included)."""
        return len(self._entries)

    @property
    def n_failed(self) -> int:
        """Recorded calls that failed."""
        return sum(not e.label.ok for e in self._entries.values())

    @staticmethod
    def key(atoms: Atoms) -> str:
        """The geometry key of ``atoms`` (see :func:`geometry_key`)."""
        return geometry_key(atoms)

    def get(self, atoms: Atoms) -> Label | None:
        """The stored label of this geometry, or None."""
        entry = self._entries.get(geometry_key(atoms))
        return None if entry is None else entry.label

    def put(self, atoms: Atoms, label: Label, **meta) -> Label:
        """Record ``label`` for ``atoms`` and commit it. ``meta``: values for the database's
        key-value pairs (numbers, strings, booleans; e.g. ``round=3, kind="seed"``). A
        geometry already stored keeps its first label, which is returned."""
        key = geometry_key(atoms)
        if key in self._entries:
            return self._entries[key].label
        _check_meta(meta)
        atoms = atoms.copy()
        atoms.calc = None
        if self._db is not None:
            row = atoms.copy()
            row.calc = label.calculator(row) if label.ok else None
            pairs = {"oracle_key": key, "ok": label.ok, "seconds": float(label.seconds), **meta}
            if not label.ok:
                pairs["error"] = label.error
            self._db.write(row, key_value_pairs=pairs)
        self._entries[key] = _Entry(atoms, label, dict(meta))
        return label

    def label(self, oracle: Oracle, structures: Sequence[Atoms], **meta) -> list[Label]:
        """Labels of ``structures`` in order, calling ``oracle`` only for geometries not yet
        stored (each distinct geometry once, even if repeated in ``structures``); each new
        result is stored the moment it returns, failed ones included. ``meta`` is stored
        with the new ones (see :meth:`put`)."""
        _check_meta(meta)
        structures = list(structures)
        keys = [geometry_key(a) for a in structures]
        todo: dict[str, Atoms] = {}
        for key, atoms in zip(keys, structures):
            if key not in self._entries and key not in todo:
                todo[key] = atoms
        missing = list(todo.values())
        if missing:
            oracle.compute(missing, on_result=lambda i, lab: self.put(missing[i], lab, **meta))
        return [self._entries[k].label for k in keys]

    def labelled(self, ok_only: bool = True) -> list[Atoms]:
        """The stored structures in the order they were labelled, each with a
        ``SinglePointCalculator`` holding the oracle's energy, forces and stress, and
        ``info`` holding its metadata plus ``key`` and ``seconds`` (failed ones, with
        ``ok_only=False``, have no calculator and ``info["error"]``). This is the input
        :func:`jcsp.ml.training.train` takes."""
        out = []
        for key, entry in self._entries.items():
            if ok_only and not entry.label.ok:
                continue
            atoms = entry.atoms.copy()
            atoms.info.update(entry.meta, key=key, seconds=entry.label.seconds)
            if entry.label.ok:
                atoms.calc = entry.label.calculator(atoms)
            else:
                atoms.info["error"] = entry.label.error
            out.append(atoms)
        return out

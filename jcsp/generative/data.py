"""Crystal collections for the generative model: reading, caching and padded packing (host side).

A *collection* is a list of crystals without forces, the input of generative training and
of its evaluation. :func:`read_collection` reads

- the CSV format of the CDVAE/DiffCSP benchmarks (Perov-5, MP-20, Carbon-24; gzip is
  detected from the ``.gz`` suffix): one crystal per row, its structure as CIF text in the
  ``cif`` column, every other column copied into ``atoms.info`` (numbers as ``int`` or
  ``float``, text as ``str``; see :func:`read_collection` for the columns left out);
- extended XYZ / XYZ files, and CIF files with one or many data blocks (read by ASE);
- a directory of such files.

:func:`perov5` reads a split of the Perov-5 benchmark (Castelli et al., Energy Environ.
Sci. 5, 9034 (2012); split of Xie et al., CDVAE, ICLR 2022) and keeps the parsed arrays in
an ``.npz`` file of jcsp's cache directory, so only the first call parses the CIFs.

:func:`pack` turns a collection into :class:`Crystals`: numpy arrays with one row per
crystal padded to ``n_max`` atoms. As in DiffCSP (Jiao et al., NeurIPS 2023; their
``perov_5.yaml`` has ``niggli: true``) every cell is Niggli-reduced by default
(Krivy & Gruber, Acta Cryst. A32, 297 (1976), as implemented by ASE) and put in ASE's
standard orientation (a along x, b in the xy plane), the same orientation DiffCSP gets
from ``Lattice.from_parameters``. Interatomic distances are unchanged; a left-handed input
cell comes back right-handed, i.e. as its mirror image (same distances and energy).

Conventions: lattice ROWS are the lattice vectors, Cartesian = ``frac @ lattice`` (Å),
as everywhere in jcsp.

Example:
  >>> train = pack(perov5("train"))            # doctest: +SKIP
  >>> train.z.shape, train.lattice.shape        # doctest: +SKIP
  ((11356, 5), (11356, 3, 3))
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import math
import os
import pathlib
import re
import tempfile
import warnings

import ase.io
import numpy as np
from ase import Atoms
from ase.build.tools import niggli_reduce_cell

from .. import compile_cache
from ..ml.data import DataError

__all__ = ["DataError", "Crystals", "read_collection", "perov5", "pack", "PEROV5_SPLITS"]

PEROV5_SPLITS = ("train", "val", "test")

#: Suffixes read in a directory (anything else there is listed in a warning and skipped).
_CSV = (".csv", ".csv.gz")
_XYZ = (".xyz", ".extxyz", ".xyz.gz", ".extxyz.gz")
_CIF = (".cif",)

#: Columns of a CSV that are not copied into ``atoms.info``: pandas' saved index
#: (an empty or ``Unnamed: N`` header) and other CIF text (e.g. Perov-5's ``cif.conv``).
_INDEX_COLUMN = re.compile(r"^(|Unnamed: \d+)$")

#: Bump when the cache layout changes.
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------- reading

def read_collection(path: str | os.PathLike) -> list[Atoms]:
    """Crystals of a CSV (``cif`` column), extxyz/xyz or CIF file, or of a directory of them.

    CSV: one crystal per row, parsed with ``ase.io.read(StringIO(cif), format="cif")``.
    Every other column goes into ``atoms.info[column]`` except pandas' saved index (a
    column with an empty or ``Unnamed: N`` header) and other CIF-text columns (names
    starting with ``cif``, such as Perov-5's ``cif.conv``). A column whose every value is
    an integer is stored as ``int``, one whose values are numbers (empty = NaN) as
    ``float``, anything else as ``str``.

    Directory: its files ending in .csv, .csv.gz, .xyz, .extxyz(.gz) or .cif, in sorted
    order; other files are skipped with one warning that names them.

    Raises:
      DataError: a missing path, an unreadable file, a CSV without a ``cif`` column, a
        row with the wrong number of fields or a CIF that does not parse (naming the
        file, the row and its line), a structure that is not periodic in 3D, or no
        crystals at all. Nothing is skipped silently.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        files = [n for n in names if n.endswith(_CSV + _XYZ + _CIF)
                 and os.path.isfile(os.path.join(path, n))]
        skipped = [n for n in names if n not in files]
        if skipped:
            warnings.warn(f"{path}: skipped {len(skipped)} entries that are not .csv(.gz), "
                          f".xyz/.extxyz or .cif files: {', '.join(skipped[:10])}"
                          + (" ..." if len(skipped) > 10 else ""), stacklevel=2)
        out = []
        for name in files:
            out.extend(read_collection(os.path.join(path, name)))
        if not out:
            raise DataError(f"{path}: no crystals (no .csv, .xyz, .extxyz or .cif files)")
        return out
    if path.endswith(_CSV):
        out = _read_csv(path)
    else:
        out = _read_ase(path)
    if not out:
        raise DataError(f"{path}: no crystals")
    return out


def _read_ase(path: str) -> list[Atoms]:
    fmt = "cif" if path.endswith(_CIF) else None
    try:
        structures = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:  # ASE raises many exception types for malformed files
        raise DataError(f"{path}: cannot read crystals ({type(exc).__name__}: {exc})") from exc
    for i, atoms in enumerate(structures):
        _check_periodic(atoms, f"{path}: structure {i}")
    return structures


def _check_periodic(atoms: Atoms, where: str) -> None:
    if len(atoms) == 0:
        raise DataError(f"{where} has no atoms")
    if not np.all(atoms.pbc) or abs(atoms.cell.volume) < 1e-6:
        raise DataError(f"{where} ({atoms.get_chemical_formula()}) is not a 3D periodic "
                        f"crystal (pbc={atoms.pbc.tolist()}, volume {atoms.cell.volume:.3g} Å^3)")


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _column_values(raw: list[str]) -> list:
    """Typed values of one CSV column: all int, else all float (empty = NaN), else str."""
    try:
        return [int(v) for v in raw]
    except ValueError:
        pass
    try:
        return [float(v) if v.strip() else math.nan for v in raw]
    except ValueError:
        return list(raw)


def _read_csv_rows(path: str) -> tuple[list[str], list[dict], list[int]]:
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (expected a CSV header with a 'cif' "
                                "column)")
            if "cif" not in header:
                raise DataError(f"{path}: no 'cif' column (columns: {', '.join(header)}); "
                                "a crystal collection CSV holds one CIF text per row in a "
                                "column named 'cif' (the CDVAE/DiffCSP format)")
            rows, lines = [], []
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{path}: row {len(rows) + 1} (ending at line "
                                    f"{reader.line_num}) has {len(fields)} fields, the "
                                    f"header has {len(header)}")
                rows.append(dict(zip(header, fields)))
                lines.append(reader.line_num)
    except (OSError, csv.Error, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the CSV ({type(exc).__name__}: {exc})") from exc
    return header, rows, lines


def _parse_cif(text: str, where: str) -> Atoms:
    if not text.strip():
        raise DataError(f"{where}: empty 'cif' field")
    try:
        atoms = ase.io.read(io.StringIO(text), format="cif")
    except Exception as exc:  # ASE raises many exception types for malformed CIF text
        raise DataError(f"{where}: the CIF does not parse ({type(exc).__name__}: {exc})"
                        ) from exc
    _check_periodic(atoms, where)
    return atoms


def _read_csv(path: str) -> list[Atoms]:
    header, rows, lines = _read_csv_rows(path)
    keep = [c for c in header if c != "cif" and not _INDEX_COLUMN.match(c)
            and not c.startswith("cif")]
    columns = {c: _column_values([r[c] for r in rows]) for c in keep}
    out = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        atoms = _parse_cif(row["cif"], f"{path}: row {i + 1} (ending at line {line})")
        atoms.info = {c: columns[c][i] for c in keep}
        out.append(atoms)
    return out


# ----------------------------------------------------------------------------- Perov-5

def _perov5_root(root: str | os.PathLike | None) -> pathlib.Path:
    if root is not None:
        return pathlib.Path(root)
    if os.environ.get("JCSP_PEROV5"):
        return pathlib.Path(os.environ["JCSP_PEROV5"]).expanduser()
    repo = pathlib.Path(__file__).resolve().parents[2]  # jcsp/generative/data.py
    tried = [repo.parent / "shared" / "data" / "perov_5",
             pathlib.Path("/work/shared/data/perov_5")]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise DataError("Perov-5 not found; looked in " + ", ".join(map(str, tried))
                    + ". Download the split of CDVAE/DiffCSP (data/perov_5/{train,val,test}"
                    ".csv in github.com/txie-93/cdvae) and set JCSP_PEROV5=/path/to/perov_5, "
                    "or pass root=")


def _data_cache_dir() -> pathlib.Path | None:
    """``$JCSP_CACHE_DIR/datasets`` or ``~/.cache/jcsp/datasets``; None with JCSP_NO_CACHE."""
    jax_dir = compile_cache.cache_dir()
    if jax_dir is None:
        return None
    base = jax_dir if os.environ.get("JCSP_CACHE_DIR") else jax_dir.parent
    return base / "datasets"


def _cache_path(path: pathlib.Path) -> pathlib.Path | None:
    folder = _data_cache_dir()
    if folder is None:
        return None
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{_CACHE_VERSION}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    name = path.name.split(".")[0]
    return folder / f"{name}-{digest}.npz"


def _to_arrays(structures: list[Atoms]) -> dict[str, np.ndarray]:
    keys = list(structures[0].info)
    arrays = {
        "numbers": np.concatenate([a.numbers for a in structures]).astype(np.int32),
        "positions": np.concatenate([a.positions for a in structures]),
        "cells": np.stack([a.cell.array for a in structures]),
        "counts": np.array([len(a) for a in structures], np.int64),
        "info_keys": np.array(keys, dtype=str),
    }
    for j, key in enumerate(keys):
        arrays[f"info_{j}"] = np.array([a.info[key] for a in structures])
    return arrays


def _from_arrays(arrays) -> list[Atoms]:
    counts = arrays["counts"]
    starts = np.concatenate([[0], np.cumsum(counts)])
    keys = [str(k) for k in arrays["info_keys"]]
    values = [arrays[f"info_{j}"].tolist() for j in range(len(keys))]
    numbers, positions, cells = arrays["numbers"], arrays["positions"], arrays["cells"]
    out = []
    for i in range(len(counts)):
        lo, hi = starts[i], starts[i + 1]
        atoms = Atoms(numbers=numbers[lo:hi], positions=positions[lo:hi], cell=cells[i],
                      pbc=True)
        atoms.info = {k: v[i] for k, v in zip(keys, values)}
        out.append(atoms)
    return out


def perov5(split: str, root: str | os.PathLike | None = None) -> list[Atoms]:
    """One split of Perov-5 (11356 / 3787 / 3785 crystals of 5 atoms), cached after the first read.

    Args:
      split: ``"train"``, ``"val"`` or ``"test"``.
      root: the folder holding ``{split}.csv.gz``; default ``$JCSP_PEROV5``, else the first
        existing of ``../shared/data/perov_5`` (relative to the repository root) and
        ``/work/shared/data/perov_5``.

    Returns:
      The crystals as :func:`read_collection` reads them (``info`` holds ``material_id``,
      ``formula``, ``heat_all`` (formation energy, eV/atom), ``heat_ref``, ``dir_gap``,
      ``ind_gap``, ``spacegroup.number``, ``spacegroup.number.conv``).

    The parsed arrays are kept in ``<cache>/datasets/<split>-<hash>.npz`` (cache: see
    :mod:`jcsp.compile_cache`; ``JCSP_NO_CACHE=1`` turns it off), keyed on the file's path,
    size and modification time.

    Raises:
      DataError: an unknown split, a missing folder or file (saying where it looked and
        how to set ``JCSP_PEROV5``), or malformed rows.
    """
    if split not in PEROV5_SPLITS:
        raise DataError(f"Perov-5 split must be one of {', '.join(PEROV5_SPLITS)}, got "
                        f"{split!r}")
    folder = _perov5_root(root)
    path = folder / f"{split}.csv.gz"
    if not path.is_file():
        plain = folder / f"{split}.csv"
        if not plain.is_file():
            raise DataError(f"Perov-5 {split} split not found: no {path} or {plain}; set "
                            "JCSP_PEROV5 to the folder holding train/val/test.csv(.gz)")
        path = plain
    cache = _cache_path(path)
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as arrays:
                return _from_arrays(arrays)
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"jcsp: ignoring the unreadable cache {cache} ({exc}); reparsing "
                          f"{path}", RuntimeWarning, stacklevel=2)
    structures = read_collection(path)
    if cache is not None:
        _write_cache(cache, _to_arrays(structures))
    return structures


def _write_cache(cache: pathlib.Path, arrays: dict) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, cache)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        warnings.warn(f"jcsp: cannot write the dataset cache {cache} ({exc}); the next call "
                      "parses the CIFs again (set JCSP_CACHE_DIR to a writable folder)",
                      RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------- packing

@dataclasses.dataclass
class Crystals:
    """A batch of crystals as padded host arrays, one row per crystal (padding appends).

    Attributes:
      z: [B, N] int32 atomic numbers, 0 for padding.
      frac: [B, N, 3] float64 fractional coordinates in [0, 1) (0 for padding).
      lattice: [B, 3, 3] float64 lattice vectors as ROWS (Å); Cartesian = frac @ lattice.
      mask: [B, N] bool, True for real atoms (the first ``n_atoms[b]`` slots).
      energy: [B] float64 the value of ``energy_key`` per crystal, NaN where absent.
      energy_key: the ``atoms.info`` key the energies came from (per structure).
    """

    z: np.ndarray
    frac: np.ndarray
    lattice: np.ndarray
    mask: np.ndarray
    energy: np.ndarray
    energy_key: str = "heat_all"

    def __post_init__(self):
        b, n = np.shape(self.z)
        shapes = {"frac": (b, n, 3), "lattice": (b, 3, 3), "mask": (b, n), "energy": (b,)}
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"Crystals.{name} has shape {np.shape(getattr(self, name))}, "
                                 f"expected {shape} for z of shape {(b, n)}")

    @property
    def n_atoms(self) -> np.ndarray:
        """[B] int32 number of real atoms per crystal."""
        return self.mask.sum(axis=1).astype(np.int32)

    @property
    def n_max(self) -> int:
        return self.z.shape[1]

    def __len__(self) -> int:
        return self.z.shape[0]

    def subset(self, idx) -> Crystals:
        """The crystals at ``idx`` (indices, a slice or a boolean mask), same ``n_max``."""
        if isinstance(idx, slice):
            pick = idx
        else:
            pick = np.asarray(idx)
            if pick.dtype != bool:
                pick = pick.astype(np.int64)
        return Crystals(self.z[pick], self.frac[pick], self.lattice[pick], self.mask[pick],
                        self.energy[pick], self.energy_key)

    def to_atoms(self, i: int) -> Atoms:
        """Crystal ``i`` as periodic :class:`ase.Atoms` (energy in ``info[energy_key]``)."""
        m = self.mask[i]
        atoms = Atoms(numbers=self.z[i][m], scaled_positions=self.frac[i][m],
                      cell=self.lattice[i], pbc=True)
        if np.isfinite(self.energy[i]):
            atoms.info[self.energy_key] = float(self.energy[i])
        return atoms

    def to_atoms_list(self) -> list[Atoms]:
        return [self.to_atoms(i) for i in range(len(self))]


def _energy(atoms: Atoms, key: str, where: str) -> float:
    value = atoms.info.get(key)
    if value is None and atoms.calc is not None:
        value = getattr(atoms.calc, "results", {}).get(key)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: info[{key!r}] = {value!r} is not a number") from None


def _wrap(frac: np.ndarray) -> np.ndarray:
    frac = frac % 1.0
    frac = frac % 1.0  # twice: -1e-20 % 1.0 == 1.0
    return np.where(frac >= 1.0, 0.0, frac)


def pack(atoms_list: list[Atoms], *, n_max: int | None = None, energy_key: str = "heat_all",
         niggli: bool = True) -> Crystals:
    """Pack crystals into padded arrays, Niggli-reduced by default (as DiffCSP trains).

    Args:
      atoms_list: periodic crystals (3D periodic, at least one atom each).
      n_max: atoms per row; default the largest crystal.
      energy_key: the per-structure energy taken from ``atoms.info`` (or, failing that, the
        attached calculator's results), NaN where absent.
      niggli: reduce each cell to its Niggli cell (a <= b <= c, ASE's Krivy-Gruber) in
        ASE's standard orientation; the atoms are the same crystal (same distances).
        False keeps each cell as given.

    Returns:
      :class:`Crystals` with ``B = len(atoms_list)`` rows in the given order.

    Raises:
      DataError: an empty list, a crystal with more than ``n_max`` atoms, a structure that
        is not a 3D periodic crystal, or a non-numeric energy.
    """
    if len(atoms_list) == 0:
        raise DataError("pack: no crystals given (an empty list)")
    counts = np.array([len(a) for a in atoms_list])
    largest = int(counts.max())
    if n_max is None:
        n_max = largest
    if largest > n_max:
        i = int(np.argmax(counts))
        raise DataError(f"pack: crystal {i} ({atoms_list[i].get_chemical_formula()}) has "
                        f"{largest} atoms, more than n_max={n_max}; raise n_max or leave it "
                        "out")
    b = len(atoms_list)
    z = np.zeros((b, n_max), np.int32)
    frac = np.zeros((b, n_max, 3))
    lattice = np.zeros((b, 3, 3))
    energy = np.empty(b)
    for i, atoms in enumerate(atoms_list):
        _check_periodic(atoms, f"pack: crystal {i}")
        cell = atoms.cell.array
        scaled = np.linalg.solve(cell.T, atoms.positions.T).T
        if niggli:
            reduced, op = niggli_reduce_cell(cell)
            # Cartesian = scaled @ cell = (scaled @ inv(op).T) @ (op.T @ cell), and the
            # returned cell is op.T @ cell rotated into the standard orientation.
            scaled = np.linalg.solve(op, scaled.T).T
            cell = np.asarray(reduced)
        n = len(atoms)
        z[i, :n] = atoms.numbers
        frac[i, :n] = _wrap(scaled)
        lattice[i] = cell
        energy[i] = _energy(atoms, energy_key, f"pack: crystal {i}")
    mask = np.arange(n_max)[None, :] < counts[:, None]
    return Crystals(z, frac, lattice, mask, energy, energy_key)

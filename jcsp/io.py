"""Files in and out (host side): structures, and potentials by name, file or table.

Structures are read and written through ASE (CIF, POSCAR/CONTCAR/VASP, extxyz/xyz, ASE
``.traj``) and validated on the way in, so that bad input fails here, with the file
named, instead of deep inside a compiled function. Potentials are loaded from a short
name, a LAMMPS potential file, a trained model directory or a TOML potential table
(:func:`load_potential`, :func:`potential_from_table`, defined in
:mod:`jcsp.potential_spec` and re-exported here). Every problem with user input
raises :class:`InputError`, a ``ValueError``. Space groups are
:func:`jcsp.structures.spacegroup`.

Example:
  >>> from jcsp.io import read_structures, load_potential
  >>> structures = read_structures(["Si.cif", "POSCAR"])
  >>> potential = load_potential("sw-si")
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

# The potential half of the file-facing API lives in potential_spec; re-exported here.
from .potential_spec import (DATA_DIR, POTENTIAL_CHOICES, POTENTIAL_HELP,  # noqa: F401
                             SHIPPED_MODELS, SI_SW, TABLE_TYPES, InputError,
                             describe_potential, load_potential, potential_from_table)
from .structures.convert import StructureError, check_structure

#: Eight rattled and strained silicon cells, the default input of ``jcsp relax``.
EXAMPLE_POPULATION = DATA_DIR / "examples_si.extxyz"

OutputFormat = Literal["extxyz", "cif", "poscar"]

_READ_FORMATS = {".cif": "cif", ".vasp": "vasp", ".poscar": "vasp", ".extxyz": "extxyz",
                 ".xyz": "extxyz", ".traj": "traj"}
_WRITE_SUFFIX = {"extxyz": ".extxyz", "cif": ".cif", "poscar": ".vasp"}


# --- reading ----------------------------------------------------------------------
def read_format(path: str | os.PathLike) -> str | None:
    """ASE format name for a structure file, from its name (None: let ASE guess).

    ``*.cif`` -> cif; ``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar`` -> vasp;
    ``*.extxyz``, ``*.xyz`` -> extxyz; ``*.traj`` -> traj.
    """
    name = Path(path).name
    if name.upper().startswith(("POSCAR", "CONTCAR")):
        return "vasp"
    return _READ_FORMATS.get(Path(name).suffix.lower())


def read_structures(paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                    validate: bool = True) -> list[Atoms]:
    """Read every structure (every frame) of the given files, validated.

    Args:
      paths: one path or several. Formats follow the file names (see
        :func:`read_format`); other names are left to ASE's format detection.
      validate: check each structure with
        :func:`jcsp.structures.convert.check_structure` (zero-volume cell, overlapping
        atoms, NaN coordinates, partial periodicity).

    Returns:
      ``ase.Atoms`` in file order, frames in order; ``info["source"]`` is ``"name"``
      for a single-frame file and ``"name:k"`` for frame ``k`` of a multi-frame file.

    Raises:
      InputError: naming the file (and frame) and what is wrong with it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Atoms] = []
    for path in paths:
        out.extend(_read_one(Path(path), validate=validate))
    return out


def _read_one(path: Path, *, validate: bool) -> list[Atoms]:
    import ase.io

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give structure files")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    fmt = read_format(path)
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except KeyError as err:  # ASE looks element symbols up in a dict
        key = err.args[0] if err.args else ""
        if isinstance(key, str) and key not in atomic_numbers:
            raise InputError(f"{path}: unknown element symbol {key!r}") from None
        raise InputError(f"{path}: cannot read as {fmt or 'a structure file'}: "
                         f"missing entry {key!r}") from None
    except Exception as err:  # ASE's readers raise assorted exceptions on bad files
        if fmt is None:
            raise InputError(f"{path}: cannot read this file ({_reason(err)}); name it "
                             "*.cif, POSCAR, *.vasp, *.extxyz, *.xyz or *.traj") from None
        hint = _poscar_problem(path) if fmt == "vasp" else None
        raise InputError(f"{path}: malformed {_FORMAT_NAMES[fmt]} file: "
                         f"{hint or _reason(err)}") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if len(frames) == 0 and fmt == "cif":
        raise InputError(f"{path}: malformed CIF file: no complete structure found (need "
                         "_cell_length_a/b/c, _cell_angle_alpha/beta/gamma and an "
                         "_atom_site loop with fractional coordinates)")
    if len(frames) == 0:
        raise InputError(f"{path}: contains no structures")
    for k, atoms in enumerate(frames):
        label = str(path) if len(frames) == 1 else f"{path} (frame {k})"
        _check_species(atoms, label)
        _check_occupancy(atoms, label)
        if validate:
            try:
                check_structure(atoms)
            except StructureError as err:
                raise InputError(f"{label}: {err}") from None
        atoms.info["source"] = path.name if len(frames) == 1 else f"{path.name}:{k}"
    return list(frames)


_FORMAT_NAMES = {"cif": "CIF", "vasp": "POSCAR", "extxyz": "extended XYZ",
                 "traj": "ASE trajectory"}


def _reason(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if text else f"the reader stopped with {type(err).__name__}"


def _poscar_problem(path: Path) -> str | None:
    """A precise description of what is wrong in a POSCAR header, if anything."""
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) < 7:
        return f"only {len(lines)} lines; a POSCAR needs a comment, a scale factor, " \
               "3 lattice vectors, element symbols, counts and coordinates"
    try:
        float(lines[1].split()[0])
    except (ValueError, IndexError):
        return f"line 2 must hold the scale factor (a number), not {lines[1].strip()!r}"
    for k, axis in enumerate("abc"):
        fields = lines[2 + k].split()
        try:
            [float(x) for x in fields[:3]]
            ok = len(fields) >= 3
        except ValueError:
            ok = False
        if not ok:
            return f"line {3 + k} must hold lattice vector {axis} as 3 numbers, not " \
                   f"{lines[2 + k].strip()!r}"
    row = 5
    if not lines[row].split() or not lines[row].split()[0].isdigit():
        row += 1  # VASP 5: element symbols, then counts
    elif not any(word in atomic_numbers for word in lines[0].split()):
        return "no element symbols: add a line with them (e.g. 'Si O') above the atom " \
               "counts on line 6 (VASP 5 format)"
    try:
        counts = [int(x) for x in lines[row].split()]
    except (ValueError, IndexError):
        return f"line {row + 1} must hold the number of atoms of each element, not " \
               f"{lines[row].strip() if row < len(lines) else ''!r}"
    row += 1
    if row < len(lines) and lines[row].strip()[:1] in ("S", "s"):
        row += 1  # selective dynamics
    row += 1  # Direct / Cartesian
    coords = lines[row:row + sum(counts)]
    for k, line in enumerate(coords):
        try:
            [float(x) for x in line.split()[:3]]
            ok = len(line.split()) >= 3
        except ValueError:
            ok = False
        if not ok:
            return f"line {row + k + 1} must hold 3 coordinates, not {line.strip()!r}"
    if len(coords) < sum(counts):
        return f"the counts give {sum(counts)} atoms but only {len(coords)} coordinate " \
               "lines follow"
    return None


def _check_species(atoms: Atoms, label: str) -> None:
    if len(atoms) and (atoms.numbers <= 0).any():
        raise InputError(f"{label}: unknown element symbol 'X' (atomic number 0); give "
                         "real chemical symbols")


def _check_occupancy(atoms: Atoms, label: str) -> None:
    occupancy = atoms.info.get("occupancy")
    if not isinstance(occupancy, dict):
        return
    for site, kinds in occupancy.items():
        if any(float(v) < 1.0 - 1e-6 for v in kinds.values()):
            mix = ", ".join(f"{el} {float(v):g}" for el, v in kinds.items())
            raise InputError(f"{label}: site {site} is partially occupied ({mix}); order "
                             "the structure into a supercell first")


# --- writing ----------------------------------------------------------------------
def write_structures(structures: Sequence[Atoms], path: str | os.PathLike,
                     fmt: OutputFormat = "extxyz", *,
                     names: Sequence[str] | None = None) -> list[Path]:
    """Write structures as extxyz (one file) or CIF / POSCAR (one file each).

    Args:
      structures: ``ase.Atoms``; for extxyz their scalar ``info`` entries and
        single-point results (energy, forces, stress) are written too.
      path: extxyz: the file (a directory gets ``structures.extxyz`` inside it);
        cif / poscar: the directory, created if needed.
      fmt: "extxyz", "cif" or "poscar" (``"vasp"`` is accepted for "poscar").
      names: file stems for cif / poscar (default ``"{index:04d}_{formula}"``).

    Returns:
      The paths written.

    Raises:
      InputError: unknown format, or a cluster (no cell) written as CIF / POSCAR.
    """
    import ase.io

    fmt = "poscar" if fmt == "vasp" else fmt
    if fmt not in _WRITE_SUFFIX:
        raise InputError(f"unknown output format {fmt!r}: use one of "
                         f"{', '.join(_WRITE_SUFFIX)}")
    path = Path(path)
    if fmt == "extxyz":
        if path.is_dir():
            path = path / "structures.extxyz"
        path.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, [_clean_for_extxyz(a) for a in structures], format="extxyz")
        return [path]
    if names is not None and len(names) != len(structures):
        raise InputError(f"got {len(names)} names for {len(structures)} structures")
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for i, atoms in enumerate(structures):
        if not atoms.pbc.all():
            raise InputError(f"structure {i} is a cluster (no periodic cell); write it as "
                             f"extxyz instead of {fmt}")
        stem = names[i] if names is not None else f"{i:04d}_{atoms.get_chemical_formula()}"
        target = path / f"{stem}{_WRITE_SUFFIX[fmt]}"
        plain = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                      pbc=True)
        if fmt == "cif":
            ase.io.write(target, plain, format="cif")
        else:
            ase.io.write(target, plain, format="vasp", direct=True)
        written.append(target)
    return written


def _clean_for_extxyz(atoms: Atoms) -> Atoms:
    """A copy whose ``info`` holds only what extxyz can write and read back."""
    out = atoms.copy()
    out.calc = atoms.calc
    results = getattr(atoms.calc, "results", {}) or {}
    info = {}
    for key, value in atoms.info.items():
        if key in results:  # written from the calculator, under the same name
            continue
        if isinstance(value, (bool, np.bool_)):
            info[key] = bool(value)
        elif isinstance(value, numbers.Integral):
            info[key] = int(value)
        elif isinstance(value, numbers.Real):
            info[key] = float(value)
        elif isinstance(value, str) and value.strip():
            info[key] = value
    out.info = info
    return out

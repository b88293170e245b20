"""Potentials by name, file or table (host side): the ``--potential`` specs.

A potential is loaded from a short name (``sw-si``, ``ml-si``, ``lj``, ``gulp:...``), a
LAMMPS potential file, a trained model directory or a TOML potential table
(:func:`load_potential`, :func:`potential_from_table`). Every problem with the input
raises :class:`InputError`, a ``ValueError`` (also what :mod:`jcsp.io` raises for
structure files). :mod:`jcsp.io` re-exports everything here.

Example:
  >>> from jcsp.potential_spec import load_potential
  >>> potential = load_potential("sw-si")
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from ase.data import atomic_numbers

from .ml.checkpoint import load as load_trained
from .potentials import EAM, BuckinghamCoulomb, LennardJones, StillingerWeber
from .potentials.gulp import SHIPPED_LIBRARIES, GulpFormatError, read_gulp_library

#: Folder of the data shipped with jcsp.
DATA_DIR = Path(__file__).resolve().parent / "data"
#: Stillinger-Weber silicon (Stillinger & Weber 1985) in LAMMPS ``.sw`` format.
SI_SW = DATA_DIR / "Si.sw"
#: Trained ML potentials that ship with the package (name -> model directory).
SHIPPED_MODELS = {"ml-si": str(DATA_DIR / "models" / "si-mlearn")}


class InputError(ValueError):
    """Input that jcsp cannot use: a missing or malformed file, an unknown element, ..."""


# --- potentials by name, file or table -------------------------------------------------
POTENTIAL_CHOICES = (
    "sw-si (the shipped Stillinger-Weber silicon)",
    "FILE.sw (LAMMPS Stillinger-Weber file)",
    "FILE.eam, FILE.eam.alloy, FILE.eam.fs (LAMMPS EAM files)",
    "lj or lj:epsilon=E,sigma=S,cutoff=RC,truncation=shift|plain|smooth (Lennard-Jones)",
    "ml-si (the shipped equivariant ML potential for silicon, trained on mlearn Si)",
    "DIR (a model directory written by `jcsp train`)",
    "FILE.toml (a potential table, e.g. Buckingham + Coulomb with GULP-style parameters; "
    "see docs/potentials.md)",
    "gulp:LIBRARY[,cutoff=RC][,accuracy=X] (a GULP library file with species, buck and "
    "lennard 12 6, or a shipped one: " + ", ".join(SHIPPED_LIBRARIES) + ")",
)
#: Help text of the ``--potential`` options of the command line.
POTENTIAL_HELP = ("sw-si (default), ml-si (shipped ML model), MODEL_DIR (from jcsp train), "
                  "FILE.sw, FILE.eam[.alloy|.fs], FILE.toml (a potential table, e.g. "
                  "Buckingham + Coulomb), gulp:FILE or gulp:mgal2o4-magus (GULP rigid-ion "
                  "library), lj or lj:epsilon=E,sigma=S,cutoff=RC|none")
#: Values of ``type`` in a potential table (see :func:`potential_from_table`).
TABLE_TYPES = ("buckingham", "lennard-jones", "stillinger-weber", "eam", "ml", "gulp")


def load_potential(spec, *, base: str | os.PathLike | None = None):
    """A potential from a short name, a potential file or a potential table (host side).

    Args:
      spec: ``"sw-si"``; a path ending in ``.sw``, ``.eam``, ``.eam.alloy`` or
        ``.eam.fs``; ``"lj"`` / ``"lj:epsilon=0.0104,sigma=3.4,cutoff=8.5"``
        (epsilon eV, default 1; sigma Å, default 1; cutoff Å, default 3 sigma, ``none``
        for all pairs in clusters; truncation ``shift`` (default), ``plain`` or
        ``smooth``); ``"ml-si"`` (the shipped ML model) or a directory written by
        ``jcsp train``; a path ending in ``.toml`` holding a potential table;
        ``"gulp:LIBRARY"``, a GULP rigid-ion library (a file, or a shipped name such as
        ``mgal2o4-magus``; see :mod:`jcsp.potentials.gulp`), optionally followed by
        ``,cutoff=RC`` (Ewald real-space cutoff, Å; default the longest term cutoff)
        and ``,accuracy=X``; or the table itself, a mapping such as the
        ``[potential]`` table of a ``jcsp search`` config (see
        :func:`potential_from_table`).
      base: folder that relative paths (of files, model directories, and files named in
        a table) are relative to; default: the current directory, and for the files
        named in a ``.toml`` file, that file's folder.

    Returns:
      A :class:`jcsp.potentials.Potential`.

    Raises:
      InputError: unknown name, missing file, malformed file or table, or bad LJ
        options, with the accepted choices.

    Example:
      >>> sw = load_potential("sw-si")
      >>> mgo = load_potential("docs/examples/mgo.toml")   # Buckingham + Coulomb
      >>> spinel = load_potential("gulp:mgal2o4-magus,cutoff=10")
      >>> ar = load_potential({"type": "lennard-jones", "epsilon": 0.0104, "sigma": 3.4})
    """
    if isinstance(spec, Mapping):
        return potential_from_table(spec, base=base)
    if not isinstance(spec, (str, os.PathLike)):
        raise InputError(f"a potential is a name, a file or a table, not "
                         f"{type(spec).__name__} {spec!r}")
    spec = str(spec).strip()
    low = spec.lower()
    if low == "sw-si":
        return _from_file(SI_SW, "sw")
    if low in SHIPPED_MODELS:
        return _trained_model(SHIPPED_MODELS[low])
    if _resolve(spec, base).is_dir():
        return _trained_model(_resolve(spec, base))
    if low == "lj" or low.startswith("lj:"):
        return _lennard_jones(spec[3:] if ":" in spec else "")
    if low.startswith("gulp:"):
        return _gulp_spec(spec[5:], base)
    if low.endswith(".sw"):
        return _from_file(_resolve(spec, base), "sw")
    if low.endswith((".eam", ".eam.alloy", ".eam.fs")):
        return _from_file(_resolve(spec, base), "eam")
    if low.endswith(".toml"):
        return _from_toml(_resolve(spec, base))
    raise InputError(f"unknown potential {spec!r}; choose one of: "
                     + "; ".join(POTENTIAL_CHOICES))


def describe_potential(spec) -> str:
    """A one-line label of a potential spec for logs: the name, or the table's type."""
    if isinstance(spec, Mapping):
        return f"a {spec.get('type', '?')} potential table"
    return str(spec)


def potential_from_table(table: Mapping, *, base: str | os.PathLike | None = None,
                         where: str = "potential table"):
    """A potential from a table: a ``.toml`` potential file or a config's ``[potential]``.

    The table's ``type`` says which potential; the other keys are its parameters, in
    eV, Å and e. Unknown keys, missing species and non-physical values are refused.

    - ``type = "buckingham"``: Buckingham + Coulomb (Ewald), the rigid-ion model of
      GULP's ``buck`` and LAMMPS's ``buck/coul/long``
      (:class:`jcsp.potentials.BuckinghamCoulomb`). ``cutoff`` (Å, real-space Ewald
      cutoff and the default cutoff of every pair term), ``charges`` (a table
      ``{element = charge in e}``, every element of the model), ``[[buckingham]]``
      entries with ``pair = ["Mg", "O"]``, ``A`` (eV, > 0), ``rho`` (Å, > 0), ``C``
      (eV·Å⁶, >= 0, default 0) and optionally that term's ``cutoff`` (Å, at most the
      model's); optional ``[[lennard]]`` entries (GULP's ``lennard 12 6``,
      ``A / r^12 - B / r^6``) with ``pair``, ``A`` (eV·Å¹²), ``B`` (eV·Å⁶, default 0)
      and optionally ``cutoff``; optionally ``accuracy`` (relative Ewald accuracy,
      default 1e-8) or ``alpha`` (Ewald splitting parameter, 1/Å).
    - ``type = "gulp"``: the same model from a GULP library, ``library`` (a file,
      relative to ``base``, or a shipped name such as ``"mgal2o4-magus"``), optionally
      ``cutoff`` (Å, at least the longest term cutoff, which is the default),
      ``accuracy`` or ``alpha``.
    - ``type = "lennard-jones"``: ``epsilon`` (eV), ``sigma`` (Å), ``cutoff`` (Å or
      ``"none"``, default 3 sigma), ``truncation`` (``"shift"``, ``"plain"``,
      ``"smooth"``), or ``[[pairs]]`` entries with ``pair``, ``epsilon`` and ``sigma``
      for several elements (then ``cutoff`` is required).
    - ``type = "stillinger-weber"`` or ``"eam"``: ``file`` (a LAMMPS ``.sw`` or EAM
      file; for EAM also a list of ``.eam`` funcfl files) and optionally ``species``,
      the elements to keep.
    - ``type = "ml"``: ``model``, ``"ml-si"`` or a directory written by ``jcsp train``.

    Args:
      table: the table, e.g. from ``tomllib.load``.
      base: folder that relative file names are relative to (default: current).
      where: how error messages name the table (e.g. ``"run.toml [potential]"``).

    Returns:
      A :class:`jcsp.potentials.Potential`.

    Raises:
      InputError: naming ``where``, the key and what to write instead.

    Example (rigid-ion MgO, the worked example of docs/potentials.md):
      >>> import tomllib
      >>> table = tomllib.loads('''
      ... type = "buckingham"
      ... cutoff = 10.0
      ... charges = {Mg = 2.0, O = -2.0}
      ... [[buckingham]]
      ... pair = ["Mg", "O"]
      ... A = 1428.5
      ... rho = 0.2945
      ... [[buckingham]]
      ... pair = ["O", "O"]
      ... A = 22764.0
      ... rho = 0.149
      ... C = 27.88
      ... ''')
      >>> mgo = potential_from_table(table)
    """
    if not isinstance(table, Mapping):
        raise InputError(f"{where}: must be a table of settings, not "
                         f"{type(table).__name__}")
    kind = table.get("type")
    builders = {"buckingham": _buckingham_table, "gulp": _gulp_table,
                "lennard-jones": _lennard_jones_table,
                "stillinger-weber": _lammps_file_table, "eam": _lammps_file_table,
                "ml": _model_table}
    if kind not in builders:
        got = "no 'type'" if kind is None else f"type {kind!r}"
        raise InputError(f"{where}: {got}; set type to one of "
                         + ", ".join(f'"{t}"' for t in TABLE_TYPES))
    return builders[kind](_Table(table, where), base)


class _Table:
    """Typed access to a potential table, with errors naming the table and the key."""

    def __init__(self, table: Mapping, where: str):
        self.table, self.where = table, where

    def error(self, message: str) -> InputError:
        return InputError(f"{self.where}: {message}")

    def check_keys(self, allowed: Sequence[str], table: Mapping | None = None,
                   label: str = "") -> None:
        table = self.table if table is None else table
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.error(f"unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}{label}; "
                             f"known: {', '.join(allowed)}")

    def number(self, key: str, value, *, low: float | None = None, strict: bool = True,
               label: str = "") -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise self.error(f"{key}{label} must be a finite number, not {value!r}")
        if low is not None and (value <= low if strict else value < low):
            bound = f"{'>' if strict else '>='} {low:g}"
            raise self.error(f"{key}{label} must be {bound}, not {value!r}")
        return float(value)

    def element(self, value, label: str) -> str:
        if not isinstance(value, str) or value not in atomic_numbers or value == "X":
            raise self.error(f"{label}: {value!r} is not a chemical symbol such as 'Mg'")
        return value

    def pair(self, entry: Mapping, label: str) -> tuple[str, str]:
        pair = entry.get("pair")
        if not isinstance(pair, list) or len(pair) != 2:
            raise self.error(f"{label} needs pair = two elements such as [\"Mg\", \"O\"], "
                             f"not {pair!r}")
        return tuple(self.element(x, label) for x in pair)

    def entries(self, key: str, *, required: bool) -> list[Mapping]:
        entries = self.table.get(key)
        if entries is None and not required:
            return []
        if not isinstance(entries, list) or not entries \
                or not all(isinstance(e, Mapping) for e in entries):
            raise self.error(f"needs one or more [[{key}]] entries (each a table with "
                             "pair = [\"A\", \"B\"] and its parameters)")
        return entries


_BUCKINGHAM_KEYS = ("type", "cutoff", "charges", "buckingham", "lennard", "accuracy",
                    "alpha")
_BUCKINGHAM_PAIR_KEYS = ("pair", "A", "rho", "C", "cutoff")
_LENNARD_PAIR_KEYS = ("pair", "A", "B", "cutoff")


def _buckingham_table(t: _Table, base):

    t.check_keys(_BUCKINGHAM_KEYS)
    if "cutoff" not in t.table:
        raise t.error("needs cutoff, the real-space cutoff of the Buckingham and Ewald "
                      "terms in Å (e.g. cutoff = 10.0)")
    cutoff = t.number("cutoff", t.table["cutoff"], low=0.0)
    charges = t.table.get("charges")
    if not isinstance(charges, Mapping) or not charges:
        raise t.error("needs charges, the charge of every element in e (e.g. "
                      "charges = {Mg = 2.0, O = -2.0})")
    charge_of = {t.element(el, "charges"): t.number(f"charges.{el}", q)
                 for el, q in charges.items()}
    pairs = {}
    for k, entry in enumerate(t.entries("buckingham", required=True)):
        label = f"[[buckingham]] entry {k + 1}"
        key, at = _pair_entry(t, entry, label, _BUCKINGHAM_PAIR_KEYS, ("A", "rho"),
                              charge_of, pairs, cutoff)
        pairs[key] = (t.number("A", entry["A"], low=0.0, label=at),
                      t.number("rho", entry["rho"], low=0.0, label=at),
                      t.number("C", entry.get("C", 0.0), low=0.0, strict=False, label=at))
        pairs[key] += _term_cutoff(t, entry, at, cutoff)
    lennard = {}
    for k, entry in enumerate(t.entries("lennard", required=False)):
        label = f"[[lennard]] entry {k + 1}"
        key, at = _pair_entry(t, entry, label, _LENNARD_PAIR_KEYS, ("A",), charge_of,
                              lennard, cutoff)
        lennard[key] = (t.number("A", entry["A"], label=at),
                        t.number("B", entry.get("B", 0.0), label=at))
        lennard[key] += _term_cutoff(t, entry, at, cutoff)
    accuracy, alpha = _ewald_keys(t)
    try:
        return BuckinghamCoulomb(pairs, charge_of, cutoff, lennard=lennard or None,
                                 accuracy=accuracy, alpha=alpha)
    except ValueError as err:
        raise t.error(str(err)) from None


def _pair_entry(t: _Table, entry, label, keys, required, charge_of, seen, cutoff):
    """Check one ``[[buckingham]]`` / ``[[lennard]]`` entry; its sorted pair and label."""
    t.check_keys(keys, entry, f" in {label}")
    pair = t.pair(entry, label)
    missing = [el for el in pair if el not in charge_of]
    if missing:
        raise t.error(f"{label} ({'-'.join(pair)}): {', '.join(missing)} has no "
                      "charge; add it to charges")
    key = tuple(sorted(pair))
    if key in seen:
        raise t.error(f"{label}: pair {'-'.join(pair)} is given twice")
    for name in required:
        if name not in entry:
            raise t.error(f"{label} ({'-'.join(pair)}) needs {name}")
    return key, f" of {'-'.join(pair)}"


def _term_cutoff(t: _Table, entry, at, cutoff) -> tuple:
    """``(rcut,)`` of an entry with its own ``cutoff`` (at most the model's), else ``()``."""
    if "cutoff" not in entry:
        return ()
    rcut = t.number("cutoff", entry["cutoff"], low=0.0, label=at)
    if rcut > cutoff:
        raise t.error(f"cutoff{at} ({rcut:g} Å) exceeds the model's cutoff ({cutoff:g} "
                      "Å, the Ewald real-space cutoff); raise the model's cutoff")
    return (rcut,)


def _ewald_keys(t: _Table) -> tuple[float, float | None]:
    """``accuracy`` and ``alpha`` of a table (at most one of them given)."""
    if "accuracy" in t.table and "alpha" in t.table:
        raise t.error("give accuracy or alpha, not both (alpha fixes the Ewald "
                      "splitting that accuracy would choose)")
    accuracy = 1e-8
    if "accuracy" in t.table:
        accuracy = t.number("accuracy", t.table["accuracy"], low=0.0)
        if accuracy >= 1.0:
            raise t.error(f"accuracy is a relative error below 1 (e.g. 1e-8), not "
                          f"{accuracy!r}")
    alpha = t.number("alpha", t.table["alpha"], low=0.0) if "alpha" in t.table else None
    return accuracy, alpha


_GULP_KEYS = ("type", "library", "cutoff", "accuracy", "alpha")


def _gulp_table(t: _Table, base):
    t.check_keys(_GULP_KEYS)
    library = t.table.get("library")
    if not isinstance(library, str) or not library.strip():
        raise t.error("needs library = a GULP library file or one of "
                      + ", ".join(f'"{n}"' for n in SHIPPED_LIBRARIES))
    cutoff = t.number("cutoff", t.table["cutoff"], low=0.0) if "cutoff" in t.table else None
    accuracy, alpha = _ewald_keys(t)
    try:
        return _gulp(library.strip(), base, cutoff=cutoff, accuracy=accuracy, alpha=alpha)
    except InputError as err:
        raise t.error(str(err)) from None


def _gulp(library: str, base, *, cutoff=None, accuracy=1e-8, alpha=None):
    """A GULP library (shipped name or file) -> BuckinghamCoulomb, errors as InputError."""
    name = library if library.lower() in SHIPPED_LIBRARIES else str(_resolve(library, base))
    try:
        lib = read_gulp_library(name)
    except (FileNotFoundError, GulpFormatError) as err:
        raise InputError(str(err)) from None
    try:
        return lib.potential(cutoff, accuracy=accuracy, alpha=alpha)
    except ValueError as err:
        message = str(err)
        raise InputError(message if message.startswith(lib.source)
                         else f"{lib.source}: {message}") from None


def _gulp_spec(options: str, base):
    """``gulp:LIBRARY[,cutoff=RC][,accuracy=X]`` -> BuckinghamCoulomb."""
    library, *items = (s.strip() for s in options.split(","))
    if not library:
        raise InputError("gulp: needs a library, e.g. gulp:my_model.lib or one of "
                         + ", ".join(f"gulp:{n}" for n in SHIPPED_LIBRARIES))
    settings = {}
    for item in items:
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key.lower() not in ("cutoff", "accuracy"):
            raise InputError(f"bad GULP option {item!r}: write "
                             "gulp:LIBRARY,cutoff=RC,accuracy=X")
        try:
            settings[key.lower()] = float(value)
        except ValueError:
            raise InputError(f"GULP {key} must be a number, not {value!r}") from None
    if not settings.get("cutoff", 1.0) > 0:
        raise InputError(f"GULP cutoff must be a positive distance (Å), not "
                         f"{settings['cutoff']!r}")
    if not 0 < settings.get("accuracy", 1e-8) < 1:
        raise InputError(f"GULP accuracy is a relative error in (0, 1), not "
                         f"{settings['accuracy']!r}")
    return _gulp(library, base, **settings)


_LJ_KEYS = ("type", "epsilon", "sigma", "cutoff", "truncation", "pairs")


def _lennard_jones_table(t: _Table, base):

    t.check_keys(_LJ_KEYS)
    truncation = t.table.get("truncation", "shift")
    if truncation not in ("shift", "plain", "smooth"):
        raise t.error(f"truncation must be \"shift\", \"plain\" or \"smooth\", not "
                      f"{truncation!r}")
    cutoff = t.table.get("cutoff")
    if isinstance(cutoff, str) and cutoff.lower() == "none":
        cutoff = None
    elif cutoff is not None:
        cutoff = t.number("cutoff", cutoff, low=0.0)
    entries = t.entries("pairs", required=False)
    if entries:
        if "epsilon" in t.table or "sigma" in t.table:
            raise t.error("give epsilon and sigma per pair in [[pairs]] or once at the "
                          "top, not both")
        if "cutoff" not in t.table:
            raise t.error("with [[pairs]], give the cutoff (Å, or \"none\" for clusters)")
        pairs = {}
        for k, entry in enumerate(entries):
            label = f"[[pairs]] entry {k + 1}"
            t.check_keys(("pair", "epsilon", "sigma"), entry, f" in {label}")
            pair = t.pair(entry, label)
            for name in ("epsilon", "sigma"):
                if name not in entry:
                    raise t.error(f"{label} ({'-'.join(pair)}) needs {name}")
            at = f" of {'-'.join(pair)}"
            pairs[pair] = (t.number("epsilon", entry["epsilon"], low=0.0, label=at),
                           t.number("sigma", entry["sigma"], low=0.0, label=at))
        try:
            return LennardJones(cutoff=cutoff, pairs=pairs, truncation=truncation)
        except ValueError as err:
            raise t.error(str(err)) from None
    epsilon = t.number("epsilon", t.table.get("epsilon", 1.0), low=0.0)
    sigma = t.number("sigma", t.table.get("sigma", 1.0), low=0.0)
    if "cutoff" not in t.table:
        cutoff = 3.0 * sigma
    return LennardJones(epsilon, sigma, cutoff, truncation=truncation)


def _lammps_file_table(t: _Table, base):
    t.check_keys(("type", "file", "species"))
    kind = "sw" if t.table["type"] == "stillinger-weber" else "eam"
    files = t.table.get("file")
    several = isinstance(files, list) and kind == "eam"
    names = files if several else [files]
    if not names or not all(isinstance(f, str) and f.strip() for f in names):
        what = "a LAMMPS .sw file" if kind == "sw" else \
            "a LAMMPS EAM file, or a list of .eam files"
        raise t.error(f"needs file = {what}, not {files!r}")
    species = t.table.get("species")
    if species is not None:
        if not isinstance(species, list) or not species:
            raise t.error(f"species must be a list of elements such as [\"Si\"], not "
                          f"{species!r}")
        species = [t.element(el, "species") for el in species]
    paths = [_resolve(f, base) for f in names]
    return _from_file(paths if several else paths[0], kind, species=species)


def _model_table(t: _Table, base):
    t.check_keys(("type", "model"))
    model = t.table.get("model")
    if not isinstance(model, str) or not model.strip():
        raise t.error("needs model = \"ml-si\" or a directory written by `jcsp train`")
    if model.strip().lower() not in SHIPPED_MODELS and not _resolve(model, base).is_dir():
        raise t.error(f"model {model!r}: no such directory; give \"ml-si\" or a "
                      "directory written by `jcsp train`")
    return load_potential(model.strip(), base=base)


def _resolve(name: str | os.PathLike, base) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or base is None else Path(base) / path


def _from_toml(path: Path):
    import tomllib

    if not path.is_file():
        raise InputError(f"{path}: potential file not found")
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{path}: not valid TOML: {err}") from None
    where = str(path)
    if set(table) == {"potential"} and isinstance(table["potential"], Mapping):
        table, where = table["potential"], f"{path} [potential]"
    return potential_from_table(table, base=path.parent, where=where)


def _trained_model(path):

    return load_trained(str(path)).potential


def _from_file(path, kind: str, *, species=None):
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: potential file not found")
    cls = StillingerWeber if kind == "sw" else EAM
    label = ", ".join(map(str, paths))
    try:
        return cls.from_lammps(path, species=species)
    except Exception as err:  # parsers raise assorted errors on malformed files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{label}: cannot read {cls.__name__} potential: {reason}") from None


def _lennard_jones(options: str):
    """``lj:epsilon=E,sigma=S,cutoff=RC,truncation=T`` -> the same as a table."""
    table: dict = {"type": "lennard-jones"}
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        key = key.lower()
        if not sep or key not in ("epsilon", "sigma", "cutoff", "truncation"):
            raise InputError(f"bad Lennard-Jones option {item!r}: write "
                             "lj:epsilon=E,sigma=S,cutoff=RC,truncation=shift|plain|smooth")
        if key == "truncation" or (key == "cutoff" and value.lower() == "none"):
            table[key] = value.lower()
            continue
        try:
            table[key] = float(value)
        except ValueError:
            raise InputError(f"Lennard-Jones {key} must be a number, not {value!r}") from None
    return potential_from_table(table, where="Lennard-Jones")

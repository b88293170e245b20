"""The ``jcsp`` command line (host side).

``jcsp search [COMPOSITION]`` searches for the lowest-enthalpy structures of a
composition (default: Si8 with the shipped Stillinger-Weber potential); see
``docs/search.md``. ``jcsp relax [INPUT ...]`` relaxes every structure of the given files at once and prints
them ranked by enthalpy per atom; with no INPUT it relaxes the shipped silicon examples
with the shipped Stillinger-Weber potential. ``jcsp info FILE ...`` describes structures.
See ``docs/cli.md``.

Every problem with the input ends the program with one line on stderr, starting
``jcsp: error:``, and exit status 2; never with a traceback.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
import tomllib
from pathlib import Path
from typing import Sequence

from .cli_generative import add_commands as add_generative_commands
from .cli_ml import add_commands
from .io import EXAMPLE_POPULATION, InputError, load_potential, read_structures
from .io import POTENTIAL_HELP, describe_potential, potential_from_table, write_structures
from . import sharding
from .relax import relax
from .search.config import MAX_GENERAL_POSITIONS, SearchConfig
from .search.api import ACTIVE_BUDGET, search
from .search.run import ranking_table
from .settings import rule_of
from .structures.symmetry import spacegroup
from .units import EV_PER_A3_IN_GPA
from .version import __version__

EXIT_INPUT = 2
#: Some input structures were invalid (skipped and listed); the others were relaxed.
EXIT_INVALID = 3
#: Default spglib tolerance (Å) of the tables: loose enough to recognise a crystal
#: relaxed to fmax = 0.01 eV/Å, whose atoms sit ~1e-3 Å off their ideal sites.
SYMPREC = 0.1

SUMMARY_FIELDS = ("rank", "structure", "formula", "n_atoms", "energy_eV", "enthalpy_eV",
                  "energy_per_atom_eV", "enthalpy_per_atom_eV", "volume_per_atom_A3",
                  "spacegroup", "converged", "failed", "steps", "failure_reason", "cif")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit status 2)."""

    def error(self, message):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jcsp", description="Batched crystal structure relaxation on JAX.")
    parser.add_argument("--version", action="version", version=f"jcsp {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    relax = sub.add_parser(
        "relax", help="relax structures (positions and cell) and rank them by enthalpy",
        description="Relax every structure of the INPUT files at once and print them "
                    "ranked by enthalpy per atom. With no INPUT, relax the shipped silicon "
                    "examples with the shipped Stillinger-Weber potential.")
    relax.add_argument("input", nargs="*", metavar="INPUT",
                       help="structure files: CIF, POSCAR/CONTCAR/*.vasp, extxyz/xyz (all "
                            "frames), ASE .traj (default: the shipped examples)")
    relax.add_argument("-p", "--potential", default="sw-si", metavar="SPEC",
                       help=POTENTIAL_HELP)
    relax.add_argument("--pressure", type=_finite_float, default=0.0, metavar="GPA",
                       help="external hydrostatic pressure in GPa (default 0)")
    relax.add_argument("--fmax", type=_positive_float, default=0.01, metavar="EV_PER_A",
                       help="converged when every force is below this, eV/Å (default 0.01)")
    relax.add_argument("--smax", type=_positive_float, default=None, metavar="GPA",
                       help="and every stress component (less the pressure) below this, "
                            "GPa (default: ASE's criterion on the cell forces)")
    relax.add_argument("--optimizer", choices=("fire", "lbfgs"), default="fire")
    relax.add_argument("--max-steps", type=_positive_int, default=3000, metavar="N")
    relax.add_argument("--fixed-cell", action="store_true",
                       help="relax positions only, keep each cell")
    relax.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                       help="structures relaxed at once per size bucket (default: auto)")
    relax.add_argument("--symprec", type=_positive_float, default=SYMPREC, metavar="A",
                       help=f"spglib tolerance for the space-group column, Å (default "
                            f"{SYMPREC})")
    relax.add_argument("--dtype", choices=("float64", "float32"), default=None,
                       help="float precision of the relaxation (default float64; float32 "
                            "is the fast choice on GPUs)")
    relax.add_argument("-o", "--output", default=None, metavar="DIR",
                       help="write relaxed.extxyz, summary.csv and cif/ into DIR")
    relax.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    relax.set_defaults(func=run_relax)

    info = sub.add_parser("info", help="describe structures: formula, atoms, volume, "
                                       "space group",
                          description="Print formula, number of atoms, volume and space "
                                      "group of every structure in the files.")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.add_argument("--symprec", type=_positive_float, default=SYMPREC, metavar="A",
                      help=f"spglib tolerance, Å (default {SYMPREC})")
    info.set_defaults(func=run_info)
    _add_search(sub)
    add_commands(sub, positive_int=_positive_int, positive_float=_positive_float)
    add_generative_commands(sub, positive_int=_positive_int, positive_float=_positive_float)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 other)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_INPUT
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # jcsp's input errors are ValueErrors
        print(f"jcsp: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("jcsp: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"jcsp: internal error ({type(err).__name__}): {_one_line(err)}; rerun with "
              "'jcsp --debug ...' for the traceback", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text or type(err).__name__


# --- jcsp relax ---------------------------------------------------------------------
def run_relax(args) -> int:
    inputs = args.input or [EXAMPLE_POPULATION]
    # Geometry is checked by relax itself, per structure: one bad structure is reported
    # and skipped instead of stopping the run.
    structures = read_structures(inputs, validate=False)
    labels = [a.info.get("name") or a.info.get("source") or f"#{i}"
              for i, a in enumerate(structures)]
    potential = load_potential(args.potential)
    sizes = sorted({len(a) for a in structures})
    count = f"{len(structures)} structure" + ("s" if len(structures) > 1 else "")
    atoms_range = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    print(f"jcsp {__version__}: relaxing {count} ({atoms_range} atoms) with "
          f"{args.potential} at {args.pressure:g} GPa, "
          f"{args.optimizer}, fmax {args.fmax:g} eV/Å"
          + (", fixed cell" if args.fixed_cell else ""), file=sys.stderr)
    relaxed = relax(structures, potential, fmax=args.fmax, pressure=args.pressure,
                    relax_cell=not args.fixed_cell, optimizer=args.optimizer,
                    max_steps=args.max_steps, smax=args.smax, batch_size=args.batch_size,
                    progress=not args.quiet, dtype=args.dtype)
    invalid = [i for i, atoms in enumerate(relaxed) if atoms.info.get("invalid")]
    for i in invalid:
        print(f"jcsp: skipped {labels[i]} (input structure {i}): "
              f"{relaxed[i].info['error']}", file=sys.stderr)
    rows = summarise(relaxed, labels, pressure=args.pressure, symprec=args.symprec)
    print(format_table(rows, pressure=args.pressure))
    if args.output:
        written = write_outputs(Path(args.output), relaxed, rows)
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    failed = sum(r["failed"] for r in rows) - len(invalid)
    unconverged = sum(not r["converged"] and not r["failed"] for r in rows)
    if failed or unconverged:
        print(f"jcsp: {failed} failed, {unconverged} not converged within "
              f"{args.max_steps} steps", file=sys.stderr)
    if invalid:
        print(f"jcsp: {len(invalid)} of {len(relaxed)} input structures were invalid and "
              "not relaxed (listed above); the others were relaxed and written",
              file=sys.stderr)
        return EXIT_INVALID
    return 0


def summarise(relaxed, labels, *, pressure: float, symprec: float) -> list[dict]:
    """One dict per structure (fields of :data:`SUMMARY_FIELDS`), ranked by H/atom.

    Failed structures rank last; ``rank`` starts at 1.
    """
    rows = []
    for index, (atoms, label) in enumerate(zip(relaxed, labels)):
        info = atoms.info
        n = len(atoms)
        failed = bool(info.get("failed", False))
        energy = float(info.get("energy", math.nan))
        periodic = bool(atoms.pbc.all())
        if "volume" in info:
            volume = float(info["volume"])
        else:
            volume = atoms.get_volume() if periodic else math.nan
        default_h = energy + pressure / EV_PER_A3_IN_GPA * volume if periodic else energy
        enthalpy = float(info.get("enthalpy", default_h))
        rows.append({
            "index": index, "structure": label, "formula": atoms.get_chemical_formula(),
            "n_atoms": n, "energy_eV": energy, "enthalpy_eV": enthalpy,
            "energy_per_atom_eV": energy / n, "enthalpy_per_atom_eV": enthalpy / n,
            "volume_per_atom_A3": volume / n if periodic else math.nan,
            "spacegroup": "-" if failed else spacegroup(atoms, symprec),
            "converged": bool(info.get("converged", False)), "failed": failed,
            "steps": int(info.get("steps", 0)),
            "failure_reason": str(info.get("error") or info.get("failure_reason") or "")
                              if failed else "",
        })

    def key(row):
        h = row["enthalpy_per_atom_eV"]
        return (row["failed"] or not math.isfinite(h), h if math.isfinite(h) else 0.0,
                row["index"])

    rows.sort(key=key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def format_table(rows: list[dict], *, pressure: float) -> str:
    """The ranked table printed by ``jcsp relax``."""
    width = max([len("structure")] + [len(str(r["structure"])) for r in rows])
    fwidth = max([len("formula")] + [len(r["formula"]) for r in rows])
    swidth = max([len("space group")] + [len(r["spacegroup"]) for r in rows])
    head = (f"{'rank':>4}  {'structure':<{width}}  {'formula':<{fwidth}}  {'N':>4}  "
            f"{'E/atom eV':>11}  {'H/atom eV':>11}  {'V/atom Å³':>9}  {'space group':<{swidth}}"
            f"  {'steps':>5}  status")
    lines = [f"ranked by enthalpy per atom at {pressure:g} GPa", head, "-" * len(head)]
    for r in rows:
        if r["failed"]:
            status = "FAILED" + (f": {r['failure_reason']}" if r["failure_reason"] else "")
        else:
            status = "converged" if r["converged"] else "not converged"
        lines.append(
            f"{r['rank']:>4}  {r['structure']:<{width}}  {r['formula']:<{fwidth}}  "
            f"{r['n_atoms']:>4}  {r['energy_per_atom_eV']:>11.6f}  "
            f"{r['enthalpy_per_atom_eV']:>11.6f}  {r['volume_per_atom_A3']:>9.3f}  "
            f"{r['spacegroup']:<{swidth}}  {r['steps']:>5}  {status}")
    return "\n".join(lines)


def write_outputs(outdir: Path, relaxed, rows: list[dict]) -> list[Path]:
    """relaxed.extxyz (input order, with info), cif/ (ranked) and summary.csv.

    Invalid inputs (not relaxed) appear only in summary.csv, with their error.
    Returns the paths written (``cif/`` once, if any CIF was written).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    by_index = {r["index"]: r for r in rows}
    annotated = []
    for i, atoms in enumerate(relaxed):
        if atoms.info.get("invalid"):
            continue
        row = by_index[i]
        copy = atoms.copy()
        copy.calc = atoms.calc
        copy.info.update(rank=row["rank"], structure=str(row["structure"]),
                         spacegroup=row["spacegroup"])
        annotated.append(copy)
    write_structures(annotated, outdir / "relaxed.extxyz", "extxyz")
    for row in rows:
        atoms = relaxed[row["index"]]
        row["cif"] = ""
        if row["failed"] or not atoms.pbc.all():
            continue
        stem = f"{row['rank']:03d}_{row['formula']}"
        (path,) = write_structures([atoms], outdir / "cif", "cif", names=[stem])
        row["cif"] = str(path.relative_to(outdir))
    with open(outdir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    written = [outdir / "relaxed.extxyz", outdir / "summary.csv"]
    return written + ([outdir / "cif"] if any(r["cif"] for r in rows) else [])


# --- jcsp info ----------------------------------------------------------------------
def run_info(args) -> int:
    structures = read_structures(args.files)
    labels = [a.info.get("name") or a.info.get("source") for a in structures]
    width = max(len("structure"), *(len(str(s)) for s in labels))
    head = (f"{'structure':<{width}}  {'formula':<12}  {'N':>5}  {'volume Å³':>11}  "
            f"{'V/atom Å³':>9}  space group")
    print(head)
    print("-" * len(head))
    for label, atoms in zip(labels, structures):
        if atoms.pbc.all():
            volume = atoms.get_volume()
            vol, per = f"{volume:>11.3f}", f"{volume / len(atoms):>9.3f}"
        else:
            vol, per = f"{'cluster':>11}", f"{'-':>9}"
        print(f"{label:<{width}}  {atoms.get_chemical_formula():<12}  {len(atoms):>5}  "
              f"{vol}  {per}  {spacegroup(atoms, args.symprec)}")
    return 0



# --- jcsp search --------------------------------------------------------------------
#: What ``jcsp search`` runs without arguments (the README's main job).
SEARCH_DEMO = {"composition": "Si8", "potential": "sw-si"}
#: How the settings of :class:`~jcsp.search.config.SearchConfig` appear as flags:
#: (short flag, metavar, help). The keys, defaults and checks are the config's; a field
#: missing here still gets a ``--long-name`` flag. ``composition`` is the positional
#: argument and ``options`` the ``[options]`` table of the TOML file.
SEARCH_FLAGS = {
    "formula_units": ("-n", "Z", "multiplies the composition"),
    "algorithm": ("-a", None, "search algorithm"),
    "budget": ("-b", "N", "number of relaxations"),
    "pressure": (None, "GPA", "external pressure, GPa"),
    "seed": ("-s", "SEED", "random seed: the same seed gives the same search"),
    "cluster": (None, None, "search clusters (no cell)"),
    "groups": (None, "LIST", "space groups of random crystals, e.g. 227,194,166"),
    "cluster_symmetry": (None, "LIST", "point groups of random clusters: all, none, or "
                                       "Schoenflies symbols like Oh,Td,Ih"),
    "volume": (None, "A3", "target cell volume of random crystals, Å³"),
    "population": (None, "B", "structures per generation = relaxation batch"),
    "fmax": (None, "EV_PER_A", "relaxation force criterion, eV/Å"),
    "max_steps": (None, "N", "relaxation steps per structure"),
    "optimizer": (None, None, "relaxation optimizer (lbfgs: fewer steps on oxides)"),
    "target": (None, "EV_PER_ATOM", "stop once the best enthalpy per atom reaches this"),
    "moves": (None, "NAME=P,...", "extra moves for any driver with their probabilities, "
                                  "e.g. surface=0.2,strain=0.1 (see docs/search.md)"),
    "max_grade": (None, "G", "with an ML potential: set aside relaxed structures whose "
                             "extrapolation grade (distance from the training data, in "
                             "units of the farthest training atom) exceeds G"),
    "generator": (None, "MODEL", "generative model proposing the fresh candidates: a name "
                                 "(perov-5) or a model directory (see docs/search.md)"),
    "generator_share": (None, "F", "fraction of fresh candidates the generator proposes; "
                                   "the rest stay random symmetric crystals"),
}
#: Settings of the command line and TOML file beyond the config's fields.
SEARCH_RUN_KEYS = ("potential", "output", "oracle", "oracle_budget", "active")
#: Older names of settings, still accepted.
SEARCH_ALIASES = {"point_groups": "cluster_symmetry"}


def _search_fields() -> dict:
    """SearchConfig's fields set on the command line, by name."""
    return {f.name: f for f in dataclasses.fields(SearchConfig)
            if f.name not in ("composition", "options")}


def _search_default(field) -> str:
    """A field's default as the help text shows it (the settings left None say what
    the search does instead)."""
    instead = {"population": "min(budget, 16)", "cluster_symmetry": "all",
               "groups": f"every feasible one with at most {MAX_GENERAL_POSITIONS} "
                         "general positions",
               "volume": "from covalent radii", "moves": "none"}
    if field.name in instead:
        return instead[field.name]
    return "none" if field.default is None else f"{field.default:g}" \
        if isinstance(field.default, float) else str(field.default)


def _add_search(sub) -> None:
    cmd = sub.add_parser(
        "search", help="search for the lowest-enthalpy structures of a composition",
        description="Generate, relax (in batches), compare and recombine structures of a "
                    "composition and print the unique ones ranked by enthalpy per atom. "
                    "Settings come from --config (TOML, keys as the long flags with "
                    "underscores, plus an [options] table for the algorithm and "
                    "potential as a spec or a [potential] table), overridden by flags. "
                    f"With no arguments: {SEARCH_DEMO['composition']} with the shipped "
                    "Stillinger-Weber potential, random search, "
                    f"{SearchConfig.__dataclass_fields__['budget'].default} relaxations. "
                    "Rerunning with the same --output resumes an interrupted search.")
    cmd.add_argument("composition", nargs="?", default=None, metavar="COMPOSITION",
                        help="e.g. Si8, Na4Cl4, LJ38 (a label like LJ: identical particles)")
    cmd.add_argument("-c", "--config", default=None, metavar="TOML",
                        help="TOML file with the settings")
    cmd.add_argument("-p", "--potential", default=None, metavar="SPEC",
                        help=POTENTIAL_HELP)
    cmd.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="run folder: structures.db (resume record), ranking, best "
                             "CIF/POSCAR, plots")
    for name, field in _search_fields().items():
        short, metavar, text = SEARCH_FLAGS.get(name, (None, None, name.replace("_", " ")))
        flags = [f"--{name.replace('_', '-')}"] + [
            f"--{old.replace('_', '-')}" for old, new in SEARCH_ALIASES.items() if new == name]
        flags = ([short] if short else []) + flags
        help_text = f"{text} (default {_search_default(field)})"
        rule = rule_of(field)
        if rule is not None and rule.kind is bool:
            cmd.add_argument(*flags, dest=name, action="store_true", default=None,
                                help=help_text)
        elif rule is not None and rule.choices is not None:
            cmd.add_argument(*flags, dest=name, choices=rule.choices, default=None,
                                help=help_text)
        else:
            kind = {int: _whole_number, float: _finite_float}.get(
                rule.kind if rule is not None else str, str)
            cmd.add_argument(*flags, dest=name, type=kind, default=None, metavar=metavar,
                                help=help_text)
    cmd.add_argument("--oracle", default=None, metavar="SPEC",
                     help="active learning: the reference method whose ground state is "
                          "wanted (tblite:GFN1-xTB, tblite:GFN2-xTB, gpaw:KEY=VALUE,..., a "
                          "jcsp potential spec such as sw-si, or python:module:factory); a "
                          "committee of ML models learns it during the search "
                          "(docs/active-learning.md); -p then names a trained model to "
                          "start from")
    cmd.add_argument("--oracle-budget", type=_positive_int, default=None, metavar="N",
                     help="with --oracle: the most oracle single points (required)")
    cmd.add_argument("--active", default=None, metavar="KEY=VALUE,...",
                     help="with --oracle: settings of the active-learning loop, e.g. "
                          "mode=iterative,workers=4,train_time=60 (or an [active] table "
                          "in the TOML file)")
    cmd.add_argument("--show", type=_positive_int, default=10, metavar="N",
                        help="rows of the printed ranking (default 10)")
    cmd.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(func=run_search)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _point_groups(text: str):
    """``all`` -> True, ``none`` -> False, ``Oh,Td`` -> ["Oh", "Td"]."""
    text = text.replace(" ", "")
    if text.lower() in ("all", "none"):
        return text.lower() == "all"
    return [g for g in text.split(",") if g]


def _space_groups(text: str) -> list[int]:
    try:
        return [int(g) for g in text.replace(" ", "").split(",") if g]
    except ValueError:
        raise InputError(f"groups must be space-group numbers like 227,194, not "
                         f"{text!r}") from None


def search_settings(args) -> tuple:
    """The search's config, potential (a spec or a table) and output folder: the
    defaults, then the TOML config, then the flags given (host side); with ``--oracle``
    (or ``oracle`` in the TOML file) a fourth item, the active-learning settings
    ``{"oracle", "oracle_budget", "active"}``."""
    settings, loaded = dict(SEARCH_DEMO), {}
    if args.config:
        with open(args.config, "rb") as handle:
            try:
                loaded = tomllib.load(handle)
            except tomllib.TOMLDecodeError as err:
                raise InputError(f"{args.config}: not valid TOML: {err}") from None
        loaded = {SEARCH_ALIASES.get(k, k): v for k, v in loaded.items()}
        known = [f.name for f in dataclasses.fields(SearchConfig)] + list(SEARCH_RUN_KEYS)
        unknown = sorted(set(loaded) - set(known))
        if unknown:
            raise InputError(f"{args.config}: unknown setting(s) {unknown}; known: "
                             f"{sorted(known)}")
        settings.update(loaded)
    for name in ["composition", *_search_fields(), *SEARCH_RUN_KEYS]:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if isinstance(settings.get("groups"), str):
        settings["groups"] = _space_groups(settings["groups"])
    if isinstance(settings.get("cluster_symmetry"), str):
        settings["cluster_symmetry"] = _point_groups(settings["cluster_symmetry"])
    oracle = {k: settings.pop(k, None) for k in ("oracle", "oracle_budget", "active")}
    if oracle["oracle"] is not None:
        # An active search learns its own potential: the demo's default is not one.
        if args.potential is None and "potential" not in loaded:
            settings["potential"] = None
        if args.budget is None and "budget" not in loaded:
            settings["budget"] = ACTIVE_BUDGET
    potential, output = settings.pop("potential"), settings.pop("output", None)
    config = SearchConfig.from_keywords(**settings)
    if oracle["oracle"] is None:
        if oracle["oracle_budget"] is not None or oracle["active"] is not None:
            raise InputError("--oracle-budget and --active belong to active-learning "
                             "searches: give --oracle SPEC as well")
        return config, potential, output
    if oracle["oracle_budget"] is None:
        raise InputError("--oracle needs --oracle-budget N (the most oracle single points)")
    oracle["active"] = _active_settings(oracle["active"])
    return config, potential, output, oracle


def _active_settings(value) -> dict:
    """``--active`` text (``key=value,...``) or an ``[active]`` table, as a dict."""
    if value is None or isinstance(value, dict):
        return dict(value or {})
    out = {}
    for item in (v for v in str(value).split(",") if v.strip()):
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError(f"--active takes key=value pairs, got {item!r}")
        text = text.strip()
        try:
            out[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text  # a bare word: a string (mode=iterative)
    return out


def _load(spec, args):
    """A potential from a spec, or from the TOML file's [potential] table."""
    if isinstance(spec, dict):
        where = f"{args.config} [potential]"
        return potential_from_table(spec, base=Path(args.config).parent, where=where)
    base = Path(args.config).parent if args.config and args.potential is None else None
    return load_potential(spec, base=base)


def run_active_search(args, config, spec, output, oracle) -> int:
    """``jcsp search COMP --oracle SPEC --oracle-budget N``: an active-learning search."""
    potential = None if spec is None else _load(spec, args)
    print(f"jcsp {__version__}: active-learning {config.algorithm} search for "
          f"{config.composition} x {config.formula_units} with oracle {oracle['oracle']} "
          f"at {config.pressure:g} GPa, at most {oracle['oracle_budget']} oracle calls and "
          f"{config.budget} committee relaxations, seed {config.seed}", file=sys.stderr)
    result = search(config, potential, out=output, progress=not args.quiet,
                    oracle=oracle["oracle"], oracle_budget=oracle["oracle_budget"],
                    active=oracle["active"])
    print(ranking_table(result.structures, limit=args.show))
    best = result.best
    if best is None:
        print("jcsp: no structure could be relaxed by the oracle; see oracle.db for the "
              "failed calls and their errors", file=sys.stderr)
        return 1
    print(f"best: {best.get_chemical_formula()} {best.info.get('spacegroup', '-')}, oracle "
          f"enthalpy {best.info['enthalpy'] / len(best):.5f} eV/atom, max force "
          f"{best.info.get('max_force', math.nan):.4f} eV/Å"
          f"{'' if best.info.get('converged') else ' (not converged)'}", file=sys.stderr)
    print(f"{result.n_oracle_calls} oracle calls ({result.n_oracle_failures} failed), "
          f"{len(result.rounds)} rounds, {result.n_relaxations} committee relaxations, "
          f"{result.train_seconds:.0f} s training, {result.wall_seconds:.0f} s in all"
          + (f"; wrote {result.out}" if result.out else "")
          + (f" (the committee: -p {result.model_dir})" if result.model_dir else ""),
          file=sys.stderr)
    return 0


def run_search(args) -> int:
    # Under srun / mpirun with several processes, join JAX's distributed runtime first
    # (docs/scaling.md); on one machine this does nothing.
    sharding.initialize()
    config, spec, output, *oracle = search_settings(args)
    if oracle:
        return run_active_search(args, config, spec, output, oracle[0])
    if isinstance(spec, dict):
        where = f"{args.config} [potential]"
        potential = potential_from_table(spec, base=Path(args.config).parent, where=where)
    else:
        base = Path(args.config).parent if args.config and args.potential is None else None
        potential = load_potential(spec, base=base)
    print(f"jcsp {__version__}: {config.algorithm} search for "
          f"{config.composition} x {config.formula_units} with "
          f"{describe_potential(spec)} at {config.pressure:g} GPa, budget "
          f"{config.budget} relaxations, seed {config.seed}", file=sys.stderr)
    result = search(config, potential, out=output, progress=not args.quiet)
    print(ranking_table(result.structures, limit=args.show))
    print(f"{result.n_relaxations} relaxations in {result.n_batches} batches "
          f"(batch occupancy {result.occupancy:.0%}), {len(result.structures)} unique "
          "structures" + (f"; wrote {result.out}" if result.out else ""), file=sys.stderr)
    failed = result.n_failed - result.n_extrapolated
    if failed:
        print(f"jcsp: {failed} relaxation(s) failed; they count against the budget, are "
              "never ranked and stay in structures.db with their reason", file=sys.stderr)
    if result.n_extrapolated:
        print(f"jcsp: {result.n_extrapolated} relaxed structure(s) set aside as outside the "
              f"potential's training data (extrapolation grade above "
              f"{config.max_grade:g}; they stay in structures.db with their grade; "
              "--max-grade changes the limit)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

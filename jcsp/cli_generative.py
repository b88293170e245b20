"""``jcsp train-generator``, ``jcsp generate`` and ``jcsp evaluate-generator``: the
diffusion sampler of :mod:`jcsp.generative` on the command line (host side).

``jcsp train-generator --train FILE... --out DIR`` trains a generator on crystal
collections (CDVAE/DiffCSP CSV with a ``cif`` column, extxyz, CIF, folders of them, or
``perov-5`` for the Perov-5 benchmark splits); run again with the same DIR it resumes.
``jcsp generate MODEL COMPOSITION... -n K -o OUT`` writes K samples per composition
(extxyz, or a folder of CIF files). ``jcsp evaluate-generator MODEL --data DATA -k 1 20``
samples every reference composition of DATA and prints and writes DiffCSP's match rate
and RMSE for each k. See ``docs/generative.md``.

Bad input (unknown elements, an empty composition, k <= 0, a corrupt or mismatched
model) ends the program with one line on stderr and exit status 2 (``ValueError``s,
:class:`jcsp.ml.checkpoint.CheckpointError` included); output files appear complete or
not at all (written under a temporary name, then renamed). Compositions the model never
saw in training are sampled, with one warning line that counts them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import sys
import tempfile
import warnings

import ase.io
import numpy as np
from ase.data import chemical_symbols

from .cli_ml import toml_and_flags
from .generative import GeneratorTrainConfig, composition_numbers, data, evaluate, load, train
from .generative.denoiser import DenoiserConfig
from .generative.model import DEFAULT_STEPS

#: The name that stands for the Perov-5 benchmark splits in --train/--valid/--data
#: (``perov-5`` or ``perov-5:SPLIT``).
PEROV5 = "perov-5"
#: Share of the training collection held out for validation when --valid is not given.
VALID_FRACTION = 0.1
#: Cells below this volume (Å^3) are degenerate: a CIF cannot describe them.
MIN_CIF_VOLUME = 1e-6

_STEPS_HELP = ("reverse-diffusion steps, at most the model's schedule (default: the "
               "model's own setting, sampling.n_steps in its generator.json, else "
               f"{DEFAULT_STEPS})")

_MODEL_FLAGS = {"channels": "channels", "layers": "n_layers", "l_max": "l_max"}
_TRAIN_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
                "val_every": "val_every", "val_structures": "val_structures",
                "val_steps": "val_steps"}


def add_commands(sub, *, positive_int, positive_float) -> None:
    """Register ``train-generator``, ``generate`` and ``evaluate-generator`` on the main
    parser's subparsers."""
    tr = sub.add_parser(
        "train-generator", help="train a diffusion generator of crystals on a collection",
        description="Train the DiffCSP-style diffusion generator (jcsp.generative) on "
                    "crystal collections: CSV files with a 'cif' column (CDVAE/DiffCSP), "
                    "extxyz, CIF, folders of them, or 'perov-5' (the Perov-5 train split; "
                    "'perov-5:SPLIT' for another). Without --valid, 10 % of the training "
                    "crystals are held out (seeded). Settings come from the defaults of "
                    "DenoiserConfig and GeneratorTrainConfig, then --config, then the flags. "
                    "Rerun with the same --out and settings to resume.")
    tr.add_argument("--train", nargs="+", required=True, metavar="FILE",
                    help="training collections (.csv/.csv.gz with a cif column, "
                         ".xyz/.extxyz, .cif, folders, or perov-5[:SPLIT])")
    tr.add_argument("--valid", nargs="+", default=None, metavar="FILE",
                    help="validation collections (default: perov-5:val when training on "
                         "perov-5, else 10%% of the training crystals held out)")
    tr.add_argument("--out", required=True, metavar="DIR", help="model directory")
    tr.add_argument("--config", default=None, metavar="TOML",
                    help="settings file with [model] (DenoiserConfig fields) and [train] "
                         "(GeneratorTrainConfig fields) tables")
    tr.add_argument("--max-time", type=positive_float, default=None, metavar="MINUTES",
                    help="wall-clock budget; the number of epochs is fixed after the first "
                         "so that the learning-rate schedule completes within it (default: "
                         "no budget, --epochs epochs)")
    tr.add_argument("--epochs", type=positive_int, default=None,
                    help=f"passes over the training set (default "
                         f"{GeneratorTrainConfig.epochs}; an upper bound with --max-time)")
    tr.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                    help=f"crystals per step (default {GeneratorTrainConfig.batch_size})")
    tr.add_argument("--lr", type=positive_float, default=None,
                    help=f"peak learning rate (default {GeneratorTrainConfig.lr:g})")
    tr.add_argument("--channels", type=positive_int, default=None,
                    help=f"feature channels (default {DenoiserConfig.channels})")
    tr.add_argument("--layers", type=positive_int, default=None,
                    help=f"interaction layers (default {DenoiserConfig.n_layers})")
    tr.add_argument("--l-max", type=positive_int, default=None,
                    help=f"highest angular order (default {DenoiserConfig.l_max})")
    tr.add_argument("--seed", type=int, default=None,
                    help="initial weights, data order, noise and the held-out split "
                         "(default 0)")
    tr.add_argument("--val-every", type=positive_int, default=None, metavar="EPOCHS",
                    help=f"epochs between validation match rates (default "
                         f"{GeneratorTrainConfig.val_every})")
    tr.add_argument("--val-structures", type=positive_int, default=None, metavar="N",
                    help=f"validation crystals sampled for the match rate (default "
                         f"{GeneratorTrainConfig.val_structures})")
    tr.add_argument("--val-steps", type=positive_int, default=None, metavar="N",
                    help="reverse-diffusion steps of the validation samples (default: all)")
    tr.add_argument("--energy-key", default="heat_all", metavar="KEY",
                    help="per-structure energy in atoms.info (or the CSV column) that the "
                         "energy head learns, for ranking samples (default heat_all, "
                         "Perov-5's formation energy in eV/atom); structures without it "
                         "train the diffusion only")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=run_train_generator)

    gen = sub.add_parser(
        "generate", help="sample crystals of given compositions from a trained generator",
        description="Sample K crystals per composition by reverse diffusion and write them "
                    "all to one extxyz file (info: composition, composition_index, "
                    "sample_index, predicted_energy) or, with --format cif, to a folder of "
                    "CIF files with an index.csv. Each COMPOSITION is one cell: SrTiO3 has "
                    "5 atoms, Sr2Ti2O6 10.")
    gen.add_argument("model", metavar="MODEL",
                     help="model directory (from jcsp train-generator) or a shipped name "
                          "(perov-5)")
    gen.add_argument("compositions", nargs="+", metavar="COMPOSITION",
                     help="formulas of one cell each, e.g. SrTiO3 KNbO3")
    gen.add_argument("-n", "--samples", type=positive_int, default=1, metavar="K",
                     help="samples per composition (default 1)")
    gen.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="extxyz file, or a folder with --format cif")
    gen.add_argument("--format", choices=("extxyz", "cif"), default="extxyz",
                     help="output format (default extxyz)")
    gen.add_argument("--seed", type=int, default=0,
                     help="the same seed and settings give the same crystals (default 0)")
    gen.add_argument("--steps", type=positive_int, default=None, metavar="N",
                     help=_STEPS_HELP)
    gen.add_argument("--rank", action="store_true",
                     help="order each composition's samples: plausible ones (no two "
                          "atoms under 0.5 A) first, each group by the energy head's "
                          "prediction, lowest first")
    gen.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                     help="crystals per jitted call (bounds memory; default 512)")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=run_generate)

    ev = sub.add_parser(
        "evaluate-generator",
        help="match rate and RMSE of a generator on reference crystals (DiffCSP's protocol)",
        description="Sample max(k) crystals for the composition of every reference "
                    "crystal, match them with pymatgen's StructureMatcher(stol=0.5, "
                    "angle_tol=10, ltol=0.3) and print the match rate and RMSE (normalised "
                    "by (V/N)^(1/3)) with the first k' samples, for every k' given. Needs "
                    "pymatgen (pip install 'jcsp[generative]').")
    ev.add_argument("model", metavar="MODEL", help="model directory or shipped name")
    ev.add_argument("--data", required=True, metavar="DATA",
                    help="reference collection: a file or folder, or perov-5:SPLIT "
                         "(perov-5:test is the benchmark)")
    ev.add_argument("-k", nargs="+", type=positive_int, default=[1, 20], metavar="K",
                    help="numbers of samples per reference to report (default 1 20)")
    ev.add_argument("--json", default=None, metavar="FILE",
                    help="write the metrics and settings here (JSON)")
    ev.add_argument("--samples-out", default=None, metavar="FILE",
                    help="write every sample here (extxyz; info: reference_index, "
                         "sample_index, predicted_energy), so the numbers can be recomputed")
    ev.add_argument("--limit", type=positive_int, default=None, metavar="N",
                    help="only the first N reference crystals")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ev.add_argument("--steps", type=positive_int, default=None, metavar="N",
                    help=_STEPS_HELP)
    ev.add_argument("--processes", type=positive_int, default=None, metavar="P",
                    help="matching worker processes (default: one per CPU)")
    ev.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                    help="crystals per jitted sampling call (default 512)")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=run_evaluate_generator)


# --- reading collections ------------------------------------------------------------
def read_collection(spec: str, default_split: str) -> list:
    """Crystals of a file or folder, or of a Perov-5 split (``perov-5`` is
    ``default_split``, ``perov-5:SPLIT`` names one)."""
    if _is_perov5(spec):
        split = spec.partition(":")[2] or default_split
        return data.perov5(split)
    return data.read_collection(spec)


def _read_all(specs: list[str], default_split: str) -> list:
    out = []
    for spec in specs:
        out.extend(read_collection(spec, default_split))
    return out


def _is_perov5(spec: str) -> bool:
    return spec == PEROV5 or spec.startswith(PEROV5 + ":")


# --- jcsp train-generator -----------------------------------------------------------
def train_settings(args) -> tuple[dict, GeneratorTrainConfig]:
    """(DenoiserConfig keywords without elements, GeneratorTrainConfig) from the defaults,
    the TOML file and the flags."""
    model_kw, train_kw = toml_and_flags(args, _MODEL_FLAGS, _TRAIN_FLAGS)
    for cls, kw, fixed in ((DenoiserConfig, model_kw, {"elements", "length_scale"}),
                           (GeneratorTrainConfig, train_kw, set())):
        names = {f.name for f in dataclasses.fields(cls)} - fixed
        bad = sorted(set(kw) - names)
        if bad:
            why = (" (elements and length_scale come from the training data)"
                   if set(bad) & fixed else "")
            raise ValueError(f"unknown {cls.__name__} setting(s) {bad}{why}; valid: "
                             f"{sorted(names)}")
        for name, value in kw.items():
            _check_setting(cls.__name__, name, value,
                           _NONE_DEFAULTS.get(name, type(cls.__dataclass_fields__[name].default)))
    return model_kw, GeneratorTrainConfig(**train_kw)


#: Types of the settings whose default is None.
_NONE_DEFAULTS = {"max_time": float, "val_steps": int}
#: Settings that may be zero; every other number must be positive.
_MAY_BE_ZERO = {"warmup_steps", "lr_final", "w_energy", "seed", "ema", "clip"}


def _check_setting(owner: str, name: str, value, kind: type) -> None:
    """A TOML value of the right type (and sign), or a ValueError naming it."""
    if value is None and name in _NONE_DEFAULTS:
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float)}.get(kind)
    if kinds is None:
        return
    if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{owner} setting {name} = {value!r}: expected {kind.__name__}")
    if kind is not bool and name != "seed" and (
            value < 0 or (value == 0 and name not in _MAY_BE_ZERO)):
        raise ValueError(f"{owner} setting {name} = {value!r}: must be "
                         f"{'non-negative' if name in _MAY_BE_ZERO else 'positive'}")


def hold_out(crystals: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, valid): a seeded random ``fraction`` of the crystals (at least one) set
    aside for validation; the same seed gives the same split."""
    n = len(crystals)
    n_valid = max(1, int(round(fraction * n)))
    if n - n_valid < 1:
        raise ValueError(f"{n} training crystal(s) are too few to hold out a validation "
                         "set; give --valid")
    order = np.random.default_rng([seed, 2022]).permutation(n)
    valid = set(order[:n_valid].tolist())
    return ([a for i, a in enumerate(crystals) if i not in valid],
            [a for i, a in enumerate(crystals) if i in valid])


def run_train_generator(args) -> int:
    model_kw, cfg = train_settings(args)
    train_list = _read_all(args.train, "train")
    if args.valid:
        valid_list = _read_all(args.valid, "val")
        how = f"{len(valid_list)} validation crystals"
    elif all(_is_perov5(s) for s in args.train):
        valid_list = data.perov5("val")
        how = f"{len(valid_list)} validation crystals (Perov-5 val)"
    else:
        train_list, valid_list = hold_out(train_list, VALID_FRACTION, cfg.seed)
        how = f"{len(valid_list)} held out for validation ({VALID_FRACTION:.0%}, seed {cfg.seed})"
    if len(train_list) < cfg.batch_size:
        raise ValueError(f"{len(train_list)} training crystals are fewer than one batch "
                         f"({cfg.batch_size}); lower --batch-size")
    train_set = data.pack(train_list, energy_key=args.energy_key)
    valid_set = data.pack(valid_list, energy_key=args.energy_key)
    elements = tuple(sorted(int(z) for z in np.unique(train_set.z[train_set.mask])))
    model = DenoiserConfig(elements=elements, **model_kw)
    known = int(np.isfinite(train_set.energy).sum())
    budget = f"budget {cfg.max_time / 60:g} min" if cfg.max_time else f"{cfg.epochs} epochs"
    names = " ".join(chemical_symbols[z] for z in elements[:12]) + (
        f" and {len(elements) - 12} more" if len(elements) > 12 else "")
    print(f"jcsp train-generator: {len(train_set)} training crystals "
          f"({len(elements)} elements: {names}; up to {train_set.n_max} "
          f"atoms; {known} with {args.energy_key}), {how}; {budget}", file=sys.stderr,
          flush=True)
    name = os.path.basename(os.path.normpath(args.out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = train(train_set, valid_set, args.out, model=model, config=cfg, name=name,
                        progress=not args.quiet,
                        log=lambda text: print(text, file=sys.stderr, flush=True))
    _report_warnings(caught)
    history = trained.meta.get("history") or []
    last = history[-1] if history else {}
    print(f"saved {args.out}: {len(history)} epochs"
          + (f", validation loss {float(last['val_loss']):.4g}" if last.get("val_loss") else "")
          + _best_rate(history))
    return 0


def _best_rate(history: list[dict]) -> str:
    rates = [float(h["val_match_rate"]) for h in history
             if h.get("val_match_rate") not in (None, "", "nan")]
    rates = [r for r in rates if np.isfinite(r)]
    return f", best validation match rate {max(rates):.1f} %" if rates else ""


# --- sampling ------------------------------------------------------------------------
def _report_warnings(caught, shown: set | None = None) -> set:
    """Print caught warnings as ``jcsp: warning:`` lines: three at most, then a count."""
    shown = set() if shown is None else shown
    fresh = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in shown:
            shown.add(text)
            fresh.append(text)
    for text in fresh[:3]:
        print(f"jcsp: warning: {text}", file=sys.stderr)
    if len(fresh) > 3:
        print(f"jcsp: warning: ... and {len(fresh) - 3} more such warnings", file=sys.stderr)
    return shown


def _cells(model, compositions) -> tuple[list[list[int]], list, int]:
    """Atomic numbers of every composition, checked against the model: a ValueError for
    an unknown element or an empty composition. Returns them, the warnings for
    compositions (or cell sizes) the model never saw, and how many requests warned."""
    cells, caught, n_unseen = [], [], 0
    for comp in compositions:
        numbers = composition_numbers(comp)
        with warnings.catch_warnings(record=True) as these:
            warnings.simplefilter("always")
            model.check(numbers)
        cells.append(numbers)
        caught += these
        n_unseen += bool(these)
    return cells, caught, n_unseen


def _report_unseen(caught, n_unseen: int, n_requests: int) -> set:
    """Print the check's warnings (one summary line when there are many); returns the
    messages shown, so that sampling does not repeat them."""
    texts = {" ".join(str(w.message).split()) for w in caught}
    if len(caught) > 3:
        print(f"jcsp: warning: {n_unseen} of {n_requests} compositions are outside what "
              f"the model saw in training (e.g. {' '.join(str(caught[0].message).split())})",
              file=sys.stderr)
        return texts
    return _report_warnings(caught)


def _sample(model, cells, k, args, shown: set) -> list[list]:
    options = {"seed": args.seed, "n_steps": args.steps, "progress": not args.quiet}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = model.sample(cells, k, **options)
    _report_warnings([w for w in caught if not issubclass(w.category, UserWarning)
                      or " ".join(str(w.message).split()) not in shown], shown)
    return samples


def _check_steps(model, steps) -> None:
    if steps is not None and steps > model.schedule.steps:
        raise ValueError(f"--steps {steps}: the model was trained with "
                         f"{model.schedule.steps} diffusion steps; give at most that")


def _steps_used(model, steps) -> int:
    """The reverse-diffusion steps ``model.sample`` runs for ``--steps`` (None: the
    model's own setting, else DEFAULT_STEPS, at most its schedule's length)."""
    if steps is not None:
        return int(steps)
    return int(min(model.meta.get("sampling", {}).get("n_steps", DEFAULT_STEPS),
                   model.schedule.steps))


def _extxyz(frames):
    return lambda tmp: ase.io.write(tmp, frames, format="extxyz")


def _check_output(path: str, fmt: str) -> None:
    """Refuse outputs that would clobber something else, before any sampling."""
    if fmt == "extxyz" and os.path.isdir(path):
        raise ValueError(f"{path} is a folder; give a file name for the extxyz output (or "
                         "--format cif for a folder of CIF files)")
    if fmt == "cif" and os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"{path} exists and is not a folder; --format cif writes a "
                             "folder of CIF files")
        if os.listdir(path):
            raise ValueError(f"{path} exists and is not empty; remove it or give another "
                             "folder")


def _label(comp) -> str:
    return comp if isinstance(comp, str) else "".join(chemical_symbols[z] for z in comp)


def run_generate(args) -> int:
    _check_output(args.output, args.format)
    model = load(args.model)
    _check_steps(model, args.steps)
    if args.rank and not model.config.energy_head:
        raise ValueError(f"{args.model} has no energy head, so it cannot rank its samples; "
                         "drop --rank")
    cells, caught, n_unseen = _cells(model, args.compositions)
    print(f"jcsp generate: {args.samples} sample(s) of each of {len(cells)} composition(s) "
          f"from {model.meta.get('name')}, seed {args.seed}", file=sys.stderr, flush=True)
    shown = _report_unseen(caught, n_unseen, len(cells))
    samples = _sample(model, cells, args.samples, args, shown)
    frames = []
    for ci, (comp, group) in enumerate(zip(args.compositions, samples)):
        ordered = model.rank(group) if args.rank else group
        for position, atoms in enumerate(ordered):
            atoms.info.update(composition=_label(comp).strip(), composition_index=ci)
            if args.rank:
                atoms.info["rank"] = position + 1
        for j, atoms in enumerate(group):
            atoms.info["sample_index"] = j
        frames.extend(ordered)
        samples[ci] = ordered
    if args.format == "extxyz":
        evaluate.write_atomic(args.output, _extxyz(frames))
    else:
        degenerate = _write_cif_folder(args.output, samples, args.compositions)
        if degenerate:
            print(f"jcsp: warning: {degenerate} sample(s) have a degenerate cell and no CIF "
                  "file (listed in index.csv)", file=sys.stderr)
    _print_table(args.compositions, samples)
    print(f"wrote {len(frames)} structures to {args.output}", file=sys.stderr)
    return 0


def _write_cif_folder(path: str, samples, compositions) -> int:
    """One CIF per sample and index.csv (file, composition, indices, predicted energy) in
    a temporary folder beside ``path``, renamed to ``path`` at the end. A sample whose
    cell is degenerate (CIF cannot hold it) gets a row with no file and the reason.
    Returns the number of such samples."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.")
    degenerate = 0
    try:
        rows = io.StringIO()
        writer = csv.writer(rows)
        writer.writerow(["file", "composition", "composition_index", "sample_index", "rank",
                         "predicted_energy", "note"])
        for ci, group in enumerate(samples):
            label = "".join(c for c in _label(compositions[ci]) if c.isalnum())
            for position, atoms in enumerate(group):
                name = f"{ci:03d}_{label}_{position:03d}.cif"
                note = ""
                if not abs(np.linalg.det(atoms.cell.array)) > MIN_CIF_VOLUME:
                    name, note = "", "degenerate cell (volume ~ 0): not written"
                    degenerate += 1
                else:
                    ase.io.write(os.path.join(tmp, name), atoms, format="cif")
                writer.writerow([name, atoms.info["composition"], ci,
                                 atoms.info["sample_index"], atoms.info.get("rank", ""),
                                 f"{atoms.info.get('predicted_energy', float('nan')):.6g}",
                                 note])
        with open(os.path.join(tmp, "index.csv"), "w", newline="") as fh:
            fh.write(rows.getvalue())
        os.chmod(tmp, 0o755)
        if os.path.isdir(path):
            os.rmdir(path)  # empty: checked before sampling
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return degenerate


def _print_table(compositions, samples) -> None:
    width = max([len("composition")] + [len(_label(c).strip()) for c in compositions])
    head = f"{'composition':<{width}}  {'atoms':>5}  {'k':>4}  {'best E_pred':>11}"
    print(head)
    print("-" * len(head))
    for comp, group in zip(compositions, samples):
        energies = [a.info.get("predicted_energy", np.nan) for a in group]
        best = np.nanmin(energies) if np.isfinite(energies).any() else np.nan
        print(f"{_label(comp).strip():<{width}}  {len(group[0]):>5}  {len(group):>4}  "
              f"{best:>11.4f}")
    print("(E_pred: the energy head's prediction per atom, in the units of the training "
          "energy key; eV/atom formation energy for Perov-5)")


# --- jcsp evaluate-generator --------------------------------------------------------
def run_evaluate_generator(args) -> int:
    try:
        evaluate._pymatgen()
    except ImportError as err:
        raise ValueError(str(err)) from None
    for path in (args.json, args.samples_out):
        if path is not None and os.path.isdir(path):
            raise ValueError(f"{path} is a folder; give a file name")
    model = load(args.model)
    _check_steps(model, args.steps)
    refs = read_collection(args.data, "test")
    if args.limit is not None:
        refs = refs[:args.limit]
    ks = sorted(set(args.k))
    k = ks[-1]
    cells, caught, n_unseen = _cells(model, [list(a.numbers) for a in refs])
    print(f"jcsp evaluate-generator: {k} sample(s) for each of {len(refs)} reference "
          f"crystals of {args.data} from {model.meta.get('name')}, seed {args.seed}",
          file=sys.stderr, flush=True)
    shown = _report_unseen(caught, n_unseen, len(cells))
    samples = _sample(model, cells, k, args, shown)
    if args.samples_out:
        frames = []
        for i, group in enumerate(samples):
            for j, atoms in enumerate(group):
                atoms.info.update(reference_index=i, sample_index=j)
                ref_id = refs[i].info.get("material_id")
                if ref_id is not None:
                    atoms.info["reference_id"] = ref_id
                frames.append(atoms)
        evaluate.write_atomic(args.samples_out, _extxyz(frames))
        print(f"wrote {len(frames)} samples to {args.samples_out}", file=sys.stderr)
    result = evaluate.match(samples, refs, ks=ks, processes=args.processes,
                            progress=not args.quiet)
    print(format_metrics(result))
    if args.json:
        evaluate.write_metrics(args.json, result, model=str(args.model),
                               model_name=model.meta.get("name"), data=args.data,
                               n_references=len(refs), limit=args.limit, ks=ks,
                               seed=args.seed, steps=_steps_used(model, args.steps),
                               samples_out=args.samples_out)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def format_metrics(result: dict) -> str:
    """The table printed by ``jcsp evaluate-generator``."""
    head = f"{'k':>4}  {'match rate %':>12}  {'RMSE':>8}  {'matched':>9}  {'valid %':>8}"
    lines = [f"{result['n']} references, StructureMatcher(stol={result['stol']:g}, "
             f"angle_tol={result['angle_tol']:g}, ltol={result['ltol']:g}); RMSE normalised "
             "by (V/N)^(1/3), over matched references", head, "-" * len(head)]
    for kp, m in sorted(result["by_k"].items()):
        rmse = "-" if m["rmse"] is None else f"{m['rmse']:.4f}"
        lines.append(f"{kp:>4}  {m['match_rate']:>12.2f}  {rmse:>8}  "
                     f"{m['n_matched']:>9}  {m['valid_rate']:>8.2f}")
    lines.append(f"SMACT filter: {result['smact']}")
    return "\n".join(lines)


__all__ = ["add_commands", "format_metrics", "hold_out", "read_collection",
           "run_evaluate_generator", "run_generate", "run_train_generator", "train_settings"]

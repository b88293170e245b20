"""``jcsp train-generator``, ``jcsp generate`` and ``jcsp evaluate-generator`` end to end
on a tiny model trained here (300 real Perov-5 crystals, a few seconds of training), and
every bad input of issue 22's bar: exit status 2, one line on stderr, nothing written.

The numbers ``evaluate-generator`` reports are recomputed from the samples file it writes
with pymatgen's StructureMatcher called directly and with ASE's minimum-image distances
(DiffCSP's validity), not with jcsp's evaluation code. One sampling shape (6 crystals of 5
atoms, all the schedule's steps) is used throughout, so the sampler compiles once.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import pathlib
import shutil

import ase.io
import jax
import numpy as np
import pytest
from ase.formula import Formula
from ase.geometry import get_distances
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.io.ase import AseAtomsAdaptor

import jcsp.generative
from jcsp.cli import main
from jcsp.cli_generative import hold_out
from jcsp.generative.model import plausible

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEROV5 = next(p for p in (ROOT.parent / "shared" / "data" / "perov_5",
                          pathlib.Path("/work/shared/data/perov_5")) if p.is_dir())

#: A denoiser and schedule small enough to train in seconds; 40 short epochs give cells
#: that are not degenerate, which the CIF output needs.
TINY_TOML = """
[model]
channels = 8
l_max = 1
n_layers = 1
correlation = 2
radial_hidden = 8
n_freq = 2
hidden = 16
time_dim = 8

[train]
epochs = 40
lr = 0.005
warmup_steps = 10
batch_size = 64
val_every = 100
val_structures = 6
steps = 20
"""
N_TRAIN = 300


def _rows(split: str, n: int) -> tuple[list[str], list[list[str]]]:
    with gzip.open(PEROV5 / f"{split}.csv.gz", "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [next(reader) for _ in range(n)]


def _write_csv(path, header, rows) -> str:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The first rows of the Perov-5 splits as CSV files (a small Perov-5 folder) and the
    training rows again as extxyz."""
    folder = tmp_path_factory.mktemp("perov5")
    out = {}
    for split, n in (("train", N_TRAIN), ("val", 20), ("test", 3)):
        header, rows = _rows(split, n)
        out[split] = _write_csv(folder / f"{split}.csv", header, rows)
    frames = jcsp.generative.data.read_collection(out["train"])
    out["train_xyz"] = str(folder / "train.extxyz")
    ase.io.write(out["train_xyz"], frames, format="extxyz")
    out["folder"] = str(folder)
    toml = folder.parent / "tiny.toml"
    toml.write_text(TINY_TOML)
    out["toml"] = str(toml)
    return out


@pytest.fixture(scope="module")
def model_dir(files, tmp_path_factory):
    """A tiny generator trained by the command line from the CSV, 10 % held out."""
    out = str(tmp_path_factory.mktemp("models") / "tiny")
    code = main(["train-generator", "--train", files["train"], "--out", out,
                 "--config", files["toml"], "-q"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def model(model_dir):
    return jcsp.generative.load(model_dir)


@pytest.fixture(scope="module")
def all_compositions(model, files):
    """Formulas the model never saw (validation crystals with its elements) and one it
    was trained on."""
    unseen = []
    for atoms in jcsp.generative.data.read_collection(files["val"]):
        if set(atoms.numbers) <= set(model.elements):
            formula = atoms.get_chemical_formula("metal")
            if jcsp.generative.model.reduced_formula(atoms.numbers) not in model.formulas:
                unseen.append(formula)
    seen = str(Formula(sorted(model.formulas)[0]).format("metal"))
    assert len(unseen) >= 6
    return unseen, seen


@pytest.fixture(scope="module")
def compositions(all_compositions):
    """Two unseen formulas and a seen one."""
    unseen, seen = all_compositions
    return unseen[:2], seen


def _generate(tmp_path, model_dir, comps, *extra):
    out = str(tmp_path / "samples.extxyz")
    code = main(["generate", model_dir, *comps, "-n", "3", "-o", out, "-q", *extra])
    assert code == 0
    return ase.io.read(out, index=":")


# --- train-generator ---------------------------------------------------------------
def test_train_holds_out_ten_percent_and_reads_extxyz_like_csv(model_dir, model, files,
                                                               tmp_path, capsys):
    history = list(csv.DictReader(open(os.path.join(model_dir, "history.csv"))))
    assert [int(h["epoch"]) for h in history] == list(range(1, 41))
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    crystals = jcsp.generative.data.read_collection(files["train"])
    train, valid = hold_out(crystals, 0.1, 0)
    assert (len(train), len(valid)) == (270, 30)
    formula = jcsp.generative.model.reduced_formula
    assert model.formulas == {formula(a.numbers) for a in train}
    assert not {formula(a.numbers) for a in valid} <= model.formulas
    # The same crystals as extxyz, the same settings: the same held-out split and
    # bit-identical weights.
    out = str(tmp_path / "from_xyz")
    assert main(["train-generator", "--train", files["train_xyz"], "--out", out,
                 "--config", files["toml"], "-q"]) == 0
    assert "30 held out for validation" in capsys.readouterr().err
    xyz = jcsp.generative.load(out)
    assert xyz.formulas == model.formulas
    for a, b in zip(jax.tree.leaves(xyz.params), jax.tree.leaves(model.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _bytes(folder, name) -> bytes:
    return pathlib.Path(folder, name).read_bytes()


def test_train_resume_does_nothing_more(model_dir, files, tmp_path, capsys):
    copy = str(tmp_path / "again")
    shutil.copytree(model_dir, copy)
    before = {n: _bytes(copy, n) for n in ("params.msgpack", "history.csv")}
    meta = json.loads(_bytes(copy, "generator.json"))
    capsys.readouterr()
    assert main(["train-generator", "--train", files["train"], "--out", copy,
                 "--config", files["toml"], "-q"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert {n: _bytes(copy, n) for n in before} == before
    assert json.loads(_bytes(copy, "generator.json")) == meta
    # Other settings on the same folder are refused, and nothing changes.
    code = main(["train-generator", "--train", files["train"], "--out", copy,
                 "--config", files["toml"], "--lr", "0.001", "-q"])
    assert code == 2 and "other settings" in capsys.readouterr().err
    assert {n: _bytes(copy, n) for n in before} == before


def test_hold_out_is_seeded_and_disjoint():
    items = list(range(50))
    a_train, a_valid = hold_out(items, 0.1, 3)
    assert hold_out(items, 0.1, 3) == (a_train, a_valid)
    assert len(a_valid) == 5 and sorted(a_train + a_valid) == items
    assert hold_out(items, 0.1, 4)[1] != a_valid
    with pytest.raises(ValueError, match="give --valid"):
        hold_out([1], 0.1, 0)


# --- generate ------------------------------------------------------------------------
def test_generate_writes_k_samples_per_composition_reproducibly(model_dir, compositions,
                                                                tmp_path, capsys):
    unseen, _ = compositions
    frames = _generate(tmp_path, model_dir, unseen)
    captured = capsys.readouterr()
    assert len(frames) == 6
    for i, atoms in enumerate(frames):
        assert atoms.info["composition_index"] == i // 3
        assert atoms.info["sample_index"] == i % 3
        assert atoms.pbc.all() and abs(atoms.get_volume()) > 0
        assert Formula(atoms.get_chemical_formula()) == Formula(unseen[i // 3])
        assert np.isfinite(atoms.info["predicted_energy"])
    # The table: one row per composition with the lowest predicted energy of its samples.
    for i, comp in enumerate(unseen):
        best = min(a.info["predicted_energy"] for a in frames[3 * i:3 * i + 3])
        row = next(line for line in captured.out.splitlines() if line.startswith(comp))
        assert row.split()[1:] == ["5", "3", f"{best:.4f}"]
    assert "never saw the composition" in captured.err
    again = _generate(tmp_path, model_dir, unseen)
    other = _generate(tmp_path, model_dir, unseen, "--seed", "1")
    for a, b, c in zip(frames, again, other):
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert not np.allclose(a.cell.array, c.cell.array)


def test_generate_rank_sorts_each_composition(model_dir, compositions, tmp_path):
    unseen, _ = compositions
    plain = _generate(tmp_path, model_dir, unseen)
    ranked = _generate(tmp_path, model_dir, unseen, "--rank")
    for i in range(2):
        group = ranked[3 * i:3 * i + 3]
        # plausible samples first, then by predicted energy (GenerativeModel.rank)
        keys = [(not plausible(a), a.info["predicted_energy"]) for a in group]
        assert keys == sorted(keys)
        assert [a.info["rank"] for a in group] == [1, 2, 3]
        for atoms in group:  # the same crystal as the unranked sample of that index
            same = plain[3 * i + atoms.info["sample_index"]]
            np.testing.assert_array_equal(atoms.positions, same.positions)


def test_generate_seen_composition_gives_no_warning(model_dir, compositions, tmp_path,
                                                    capsys):
    unseen, seen = compositions
    _generate(tmp_path, model_dir, [seen, unseen[0]])
    err = capsys.readouterr().err
    assert err.count("never saw") == 1


def test_generate_cif_folder_holds_the_same_crystals(model_dir, compositions, tmp_path,
                                                     capsys):
    unseen, _ = compositions
    frames = _generate(tmp_path, model_dir, unseen)
    folder = tmp_path / "cifs"
    code = main(["generate", model_dir, *unseen, "-n", "3", "-o", str(folder), "--format",
                 "cif"])
    assert code == 0
    assert "sampling" in capsys.readouterr().err  # the progress bar
    rows = list(csv.DictReader(open(folder / "index.csv")))
    assert len(rows) == 6
    written = 0
    for row, atoms in zip(rows, frames):
        assert int(row["sample_index"]) == atoms.info["sample_index"]
        assert float(row["predicted_energy"]) == pytest.approx(
            atoms.info["predicted_energy"], rel=1e-5)
        if not row["file"]:
            assert abs(atoms.get_volume()) < 1e-6 and "degenerate" in row["note"]
            continue
        back = ase.io.read(folder / row["file"])
        written += 1
        assert Formula(back.get_chemical_formula()) == Formula(atoms.get_chemical_formula())
        np.testing.assert_allclose(back.cell.cellpar(), atoms.cell.cellpar(), atol=1e-3)
        # Same crystal: CIF keeps the cell parameters and the fractional coordinates
        # (the cell may come back rotated).
        for z, f in zip(back.numbers, back.get_scaled_positions()):
            d = f - atoms.get_scaled_positions()[atoms.numbers == z]
            assert np.abs(d - np.round(d)).max(axis=1).min() < 1e-4
    assert written >= 3
    assert sorted(os.listdir(tmp_path)) == ["cifs", "samples.extxyz"]


# --- evaluate-generator ------------------------------------------------------------
def _min_distance(atoms) -> float:
    d = get_distances(atoms.positions, cell=atoms.cell, pbc=True)[1]
    return float(d[~np.eye(len(atoms), dtype=bool)].min())


def test_evaluate_generator_numbers_recomputed_from_its_samples(model_dir, files, tmp_path,
                                                                capsys, monkeypatch):
    monkeypatch.setenv("JCSP_PEROV5", files["folder"])
    report, samples = tmp_path / "metrics.json", tmp_path / "samples.extxyz"
    code = main(["evaluate-generator", model_dir, "--data", "perov-5:test", "-k", "1", "2",
                 "--json", str(report), "--samples-out", str(samples), "-q"])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(report.read_text())
    metrics, settings = result["metrics"], result["settings"]
    assert metrics["n"] == 3 and metrics["k"] == 2 and sorted(metrics["by_k"]) == ["1", "2"]
    assert settings["data"] == "perov-5:test" and settings["seed"] == 0
    assert settings["steps"] == 20      # the tiny schedule's length, below the default
    refs = jcsp.generative.data.read_collection(files["test"])
    frames = ase.io.read(samples, index=":")
    assert [(a.info["reference_index"], a.info["sample_index"]) for a in frames] == \
        [(i, j) for i in range(3) for j in range(2)]
    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    adaptor = AseAtomsAdaptor()
    for kp in (1, 2):
        ok = [[abs(a.get_volume()) >= 0.1 and _min_distance(a) >= 0.5
               for a in frames[2 * i:2 * i + kp]] for i in range(3)]
        matched = 0
        for i, ref in enumerate(refs):
            target = adaptor.get_structure(ref)
            matched += any(v and matcher.fit(target, adaptor.get_structure(a))
                           for v, a in zip(ok[i], frames[2 * i:2 * i + kp]))
        got = metrics["by_k"][str(kp)]
        assert got["valid_rate"] == pytest.approx(100 * np.mean(ok))
        assert got["n_matched"] == matched
        assert f"{got['match_rate']:.2f}" in out
    assert 0 < metrics["by_k"]["2"]["valid_rate"]


# --- bad input -----------------------------------------------------------------------
def _fails(argv, message, folder, capsys, *, one_line=True) -> None:
    """Exit status 2, the message on the last line of stderr (its only line, for input
    refused before any work) and no file added or changed under ``folder``."""
    before = _listing(folder)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("jcsp") and "error:" in lines[-1], err
    assert message in lines[-1], err
    assert len(lines) == 1 or not one_line, err
    assert _listing(folder) == before


@pytest.mark.parametrize("compositions,samples,message", [
    (["XxTiO3"], "2", "XxTiO3"),
    (["UO2"], "2", "no embedding for U"),
    ([""], "2", "empty composition"),
    (["SrTiO3"], "0", "must be positive"),
    (["SrTiO3"], "-3", "must be positive"),
])
def test_generate_bad_requests(model_dir, tmp_path, capsys, compositions, samples, message):
    _fails(["generate", model_dir, *compositions, "-n", samples, "-o",
            str(tmp_path / "x.extxyz")], message, tmp_path, capsys)


def test_generate_refuses_outputs_it_would_clobber(model_dir, compositions, tmp_path,
                                                   capsys):
    unseen, _ = compositions
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.cif").write_text("data_x\n")
    _fails(["generate", model_dir, unseen[0], "-o", str(tmp_path / "full"), "--format",
            "cif"], "not empty", tmp_path, capsys)
    _fails(["generate", model_dir, unseen[0], "-o", str(tmp_path / "full")],
           "is a folder", tmp_path, capsys)
    _fails(["generate", model_dir, unseen[0], "-o", str(tmp_path / "s.xyz"), "--steps",
            "21"], "20 diffusion steps", tmp_path, capsys)


def test_evaluate_bad_k(model_dir, files, tmp_path, capsys):
    _fails(["evaluate-generator", model_dir, "--data", files["test"], "-k", "0", "--json",
            str(tmp_path / "m.json")], "must be positive", tmp_path, capsys)


def test_corrupt_and_mismatched_checkpoints(model_dir, compositions, tmp_path, capsys):
    unseen, _ = compositions
    out = tmp_path / "out"
    out.mkdir()
    argv = lambda m: ["generate", str(m), unseen[0], "-o", str(out / "s.extxyz")]  # noqa: E731

    flipped = tmp_path / "flipped"
    shutil.copytree(model_dir, flipped)
    blob = bytearray((flipped / "params.msgpack").read_bytes())
    blob[len(blob) // 2:len(blob) // 2 + 8] = bytes(b ^ 0xFF for b in blob[len(blob) // 2:
                                                                         len(blob) // 2 + 8])
    (flipped / "params.msgpack").write_bytes(bytes(blob))
    _fails(argv(flipped), f"{flipped}/params.msgpack", out, capsys)

    wider = tmp_path / "wider"
    shutil.copytree(model_dir, wider)
    meta = json.loads((wider / "generator.json").read_text())
    meta["denoiser"]["channels"] = 16
    (wider / "generator.json").write_text(json.dumps(meta))
    _fails(argv(wider), "params.msgpack", out, capsys)

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "generator.json").write_text('{"format": "jcsp-diffusion-gen')
    _fails(argv(broken), f"{broken}/generator.json is corrupt", out, capsys)

    _fails(argv(tmp_path / "nowhere"), "no generator.json", out, capsys)
    _fails(["evaluate-generator", str(wider), "--data", "x.csv"], "params.msgpack", out,
           capsys)


def test_train_bad_requests(files, tmp_path, capsys):
    out = str(tmp_path / "m")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[model]\nwidth = 3\n")
    _fails(["train-generator", "--train", str(tmp_path / "missing.csv"), "--out", out],
           "no such file", tmp_path, capsys)
    _fails(["train-generator", "--train", files["train"], "--out", out, "--config",
            str(bad_toml)], "unknown DenoiserConfig setting(s) ['width']", tmp_path, capsys)
    _fails(["train-generator", "--train", files["val"], "--out", out, "--batch-size", "64"],
           "fewer than one batch", tmp_path, capsys)
    _fails(["train-generator", "--train", files["train"], "--out", out, "--epochs", "0"],
           "must be positive", tmp_path, capsys)


def test_train_settings_flags_override_the_toml(files):
    from jcsp.cli import build_parser
    from jcsp.cli_generative import train_settings

    args = build_parser().parse_args([
        "train-generator", "--train", "x.csv", "--out", "m", "--config", files["toml"],
        "--max-time", "2.5", "--lr", "0.002", "--channels", "12", "--val-steps", "7"])
    model_kw, cfg = train_settings(args)
    assert model_kw["channels"] == 12 and model_kw["hidden"] == 16   # flag, then TOML
    assert cfg.max_time == 150.0 and cfg.lr == 0.002 and cfg.val_steps == 7
    assert cfg.epochs == 40 and cfg.steps == 20                      # TOML
    assert cfg.ema == jcsp.generative.GeneratorTrainConfig().ema      # default


@pytest.mark.parametrize("fmt,target", [("extxyz", "s.extxyz"), ("cif", "cifs")])
def test_a_failing_write_leaves_nothing(model_dir, compositions, tmp_path, capsys,
                                        monkeypatch, fmt, target):
    """A write that fails part-way (disk full, here a stand-in raising OSError after the
    first file was started) leaves neither the output nor a temporary file."""
    unseen, _ = compositions
    real_write = ase.io.write
    calls = []

    def failing(path, images, *args, **kwargs):
        calls.append(path)
        real_write(path, images, *args, **kwargs)
        if len(calls) == 2 or fmt == "extxyz":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ase.io, "write", failing)
    _fails(["generate", model_dir, *unseen, "-n", "3", "-o", str(tmp_path / target),
            "--format", fmt, "-q"], "No space left on device", tmp_path, capsys,
           one_line=False)
    assert calls


def test_many_unseen_compositions_give_one_summary_line(model_dir, all_compositions,
                                                         tmp_path, capsys):
    unseen, _ = all_compositions
    out = tmp_path / "s.extxyz"
    assert main(["generate", model_dir, *unseen[:6], "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if line.startswith("jcsp: warning:")]
    assert len(warned) == 1 and "6 of 6 compositions are outside" in warned[0]
    assert len(ase.io.read(out, index=":")) == 6


@pytest.mark.parametrize("table,message", [
    ("[model]\nchannels = 'eight'\n", "channels = 'eight': expected int"),
    ("[model]\nn_layers = 0\n", "n_layers = 0: must be positive"),
    ("[train]\nlr = -1.0\n", "lr = -1.0: must be positive"),
    ("[train]\nval_steps = 2.5\n", "val_steps = 2.5: expected int"),
    ("[model]\nelements = [8]\n", "come from the training data"),
    ("[optimizer]\nlr = 1\n", "unknown table(s) ['optimizer']"),
    ("[model\n", "invalid TOML"),
])
def test_train_bad_settings_file(files, tmp_path, capsys, table, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(table)
    _fails(["train-generator", "--train", files["train"], "--out", str(tmp_path / "m"),
            "--config", str(bad)], message, tmp_path, capsys)

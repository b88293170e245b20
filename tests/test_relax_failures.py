"""One bad structure never stops a batch: invalid inputs come back flagged, the others
are relaxed exactly as without them, and the command line reports each bad input.

Small argon crystals (4 atoms, Lennard-Jones) keep every relaxation to one compiled
shape. Bit-for-bit identity is checked against a run of the valid structures alone.
"""

from __future__ import annotations

import csv

import ase.io
import numpy as np
import pytest
from ase.build import bulk

import jcsp
from jcsp.cli import EXIT_INVALID, main
from jcsp.potentials import LennardJones
from jcsp.structures.convert import StructureError

POT = LennardJones(pairs={("Ar", "Ar"): (0.0104, 3.4)}, cutoff=8.5, truncation="smooth")
LJ_SPEC = "lj:epsilon=0.0104,sigma=3.4,cutoff=8.5,truncation=smooth"


def _argon(seed):
    rng = np.random.default_rng(seed)
    atoms = bulk("Ar", "fcc", a=5.3, cubic=True)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))),
                   scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    return atoms


GOOD = [_argon(s) for s in range(6)]


def _overlapping():
    atoms = _argon(50)
    atoms.positions[2] = atoms.positions[1] + [0.02, 0.0, 0.0]
    return atoms


def _nan():
    atoms = _argon(51)
    atoms.positions[3, 1] = np.nan
    return atoms


def _same(a, b):
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell[:], b.cell[:])
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    np.testing.assert_array_equal(a.get_stress(), b.get_stress())
    assert a.info["energy"] == b.info["energy"] and a.info["steps"] == b.info["steps"]


@pytest.fixture(scope="module")
def alone():
    return jcsp.relax(GOOD, POT, fmax=1e-3)


def test_bad_structures_come_back_flagged_and_the_rest_bit_identical(alone):
    batch = [GOOD[0], _overlapping(), GOOD[1], GOOD[2], _nan(), GOOD[3], GOOD[4], GOOD[5]]
    out = jcsp.relax(batch, POT, fmax=1e-3)
    assert len(out) == len(batch)
    good = [out[i] for i in (0, 2, 3, 5, 6, 7)]
    for relaxed, ref in zip(good, alone):
        _same(relaxed, ref)
        assert relaxed.info["converged"] and not relaxed.info["failed"]
        assert relaxed.info["steps"] > 5  # it really was relaxed
        assert "error" not in relaxed.info
    for k, words in [(1, "atoms overlap"), (4, "NaN")]:
        info = out[k].info
        assert info["failed"] and info["invalid"] and not info["converged"]
        assert words in info["error"] and info["steps"] == 0
        assert np.isnan(info["energy"]) and out[k].calc is None
        # untouched: the input's own coordinates and cell
        np.testing.assert_array_equal(out[k].positions, batch[k].positions)
        np.testing.assert_array_equal(out[k].cell[:], batch[k].cell[:])
    assert "remove duplicate atoms" in out[1].info["error"]  # says what to do


@pytest.mark.parametrize("make, words", [
    (lambda: _argon(60)[[0, 1, 2]] + bulk("Si", "diamond", a=5.43)[[0]], "contains Si"),
    (lambda: _flat(), "zero volume"),
])
def test_other_invalid_inputs_are_flagged(make, words, first_alone):
    bad = make()
    out = jcsp.relax([GOOD[0], bad], POT, fmax=1e-3)
    assert out[1].info["failed"] and out[1].info["invalid"]
    assert words in out[1].info["error"]
    _same(out[0], first_alone)


@pytest.fixture(scope="module")
def first_alone():
    return jcsp.relax([GOOD[0]], POT, fmax=1e-3)[0]


def _flat():
    atoms = _argon(61)
    atoms.cell[2] = atoms.cell[0]
    return atoms


def test_a_crystal_needs_a_potential_with_a_cutoff():
    out = jcsp.relax([GOOD[0]], LennardJones(cutoff=None))
    assert out[0].info["invalid"] and "no cutoff" in out[0].info["error"]


def test_strict_raises_on_the_first_invalid_structure():
    with pytest.raises(StructureError, match="structure 1: atoms overlap"):
        jcsp.relax([GOOD[0], _overlapping(), _nan()], POT, strict=True)
    with pytest.raises(StructureError, match="structure 0: positions contain NaN"):
        jcsp.relax([_nan()], POT, strict=True)


def test_failure_during_the_run_says_what_to_do():
    """A crystal under tension expands without bound: failed, with reason and advice."""
    out = jcsp.relax([GOOD[1], GOOD[2]], POT, fmax=1e-3, pressure=[0.0, -1.0])
    info = out[1].info
    assert info["failed"] and not info.get("invalid")
    assert "exploded" in info["failure_reason"]
    assert info["error"].startswith(info["failure_reason"]) and "pressure" in info["error"]
    assert out[0].info["converged"]


def test_cli_skips_invalid_inputs_writes_the_rest_and_exits_3(tmp_path, capsys):
    files = []
    for name, atoms in [("a.vasp", GOOD[0]), ("bad.vasp", _overlapping()),
                        ("b.vasp", GOOD[1])]:
        ase.io.write(tmp_path / name, atoms, format="vasp")
        files.append(str(tmp_path / name))
    frames = tmp_path / "frames.extxyz"
    ase.io.write(frames, [GOOD[2], _overlapping()], format="extxyz")
    files.append(str(frames))
    out = tmp_path / "out"
    code = main(["relax", *files, "-p", LJ_SPEC, "--fmax", "1e-3", "-q", "-o", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == EXIT_INVALID == 3
    skipped = [line for line in stderr.splitlines() if line.startswith("jcsp: skipped")]
    assert len(skipped) == 2
    assert "bad.vasp (input structure 1)" in skipped[0] and "atoms overlap" in skipped[0]
    assert "frames.extxyz:1 (input structure 4)" in skipped[1]
    assert "Traceback" not in stderr
    relaxed = ase.io.read(out / "relaxed.extxyz", index=":")
    assert len(relaxed) == 3  # the valid ones, in input order
    for atoms, ref in zip(relaxed, jcsp.relax(GOOD[:3], POT, fmax=1e-3)):
        np.testing.assert_allclose(atoms.positions, ref.positions, atol=1e-7)  # file digits
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5
    failed = [r for r in rows if r["failed"] == "True"]
    assert len(failed) == 2 and all("atoms overlap" in r["failure_reason"] for r in failed)
    assert all(r["rank"] in ("4", "5") for r in failed)  # ranked last
    assert len(list((out / "cif").glob("*.cif"))) == 3

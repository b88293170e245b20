"""The ``jcsp`` command line: bad input exits 2 with one clear line; relax writes outputs.

Most cases call :func:`jcsp.cli.main` in-process (one JAX import for all); two run the
real ``python -m jcsp.cli`` process to check exit codes and stderr end to end. The relax
runs check the written results against ASE's own Lennard-Jones calculator.
"""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLJ

import jcsp
from jcsp.cli import main

POSCAR = """Si2
1.0
 5.43 0 0
 0 5.43 0
 0 0 5.43
Si
2
Direct
0 0 0
0.25 0.25 0.25
"""

# Argon-like LJ, energy shifted to zero at the cutoff: ASE's LennardJones(smooth=False)
LJ_SPEC = "lj:epsilon=0.0104,sigma=3.4,cutoff=8.5"
ASE_LJ = dict(epsilon=0.0104, sigma=3.4, rc=8.5, smooth=False)


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    import re
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert lines[0].startswith(("jcsp: error:", "jcsp relax: error:", "jcsp info: error:"))


@pytest.fixture
def bad_files(tmp_path):
    files = {
        "bad.cif": "data_x\n_cell_length_a 5.43\nloop_\n_atom_site_label\nSi1 0 0\n",
        "POSCAR": POSCAR.replace(" 0 0 5.43", " 0 0"),
        "element.vasp": POSCAR.replace("\nSi\n", "\nQq\n"),
        "overlap.vasp": POSCAR.replace("0.25 0.25 0.25", "0.002 0 0"),
        "flat.vasp": POSCAR.replace(" 0 0 5.43", " 0 0 0"),
        "ok.vasp": POSCAR,
        "nacl.vasp": "NaCl\n1.0\n5.64 0 0\n0 5.64 0\n0 0 5.64\nNa Cl\n1 1\nDirect\n"
                     "0 0 0\n0.5 0.5 0.5\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("args,pattern", [
    (["relax", "{d}/bad.cif"], r"bad\.cif: malformed CIF"),
    (["relax", "{d}/POSCAR"], r"POSCAR: malformed POSCAR file: line 5"),
    (["relax", "{d}/element.vasp"], r"unknown element symbol 'Qq'"),
    (["relax", "{d}/missing.cif"], r"missing\.cif: no such file"),
    (["info", "{d}/element.vasp"], r"unknown element symbol 'Qq'"),
    (["relax", "{d}/ok.vasp", "--pressure", "abc"], r"--pressure: not a number: 'abc'"),
    (["relax", "{d}/ok.vasp", "--pressure", "nan"], r"--pressure: must be finite"),
    (["relax", "{d}/ok.vasp", "--pressure=-inf"], r"--pressure: must be finite"),
    (["relax", "{d}/ok.vasp", "--fmax", "0"], r"--fmax: must be positive"),
    (["relax", "{d}/ok.vasp", "--max-steps", "2.5"], r"--max-steps: not a whole number"),
    (["relax", "{d}/ok.vasp", "--optimizer", "bfgs"], r"--optimizer: invalid choice"),
    (["relax", "{d}/ok.vasp", "--potential", "morse"], r"unknown potential 'morse'"),
    (["relax", "{d}/ok.vasp", "--potential", "{d}/none.eam"], r"none\.eam: potential file "
     "not found"),
    (["relax", "{d}/ok.vasp", "--potential", "lj:sigma=x"], r"sigma must be a number"),
    (["frobnicate"], r"invalid choice: 'frobnicate'"),
])
def test_bad_input_exits_2_with_one_line(capsys, bad_files, args, pattern):
    args = [a.replace("{d}", str(bad_files)) for a in args]
    code, out, err = run_main(capsys, *args)
    assert_one_line_error(code, err, pattern)
    assert out == ""


def test_negative_pressure_parses():
    from jcsp.cli import build_parser
    args = build_parser().parse_args(["relax", "x.cif", "--pressure", "-1.5"])
    assert args.pressure == -1.5 and args.potential == "sw-si" and args.fmax == 0.01


def test_invalid_structures_are_listed_and_the_others_written(capsys, bad_files):
    """Overlapping atoms, a zero-volume cell and species the potential lacks: each is
    listed on stderr (file, index, reason), ranked last and not relaxed; the valid input
    is relaxed and written; the exit status is 3."""
    out_dir = bad_files / "out"
    files = ["overlap.vasp", "flat.vasp", "nacl.vasp", "ok.vasp"]
    code, out, err = run_main(capsys, "relax", *[str(bad_files / f) for f in files],
                              "-q", "-o", str(out_dir))
    assert code == 3, err
    assert "Traceback" not in err
    skipped = [line for line in err.splitlines() if line.startswith("jcsp: skipped")]
    assert len(skipped) == 3
    for k, (name, words) in enumerate([
            ("overlap.vasp", "atoms overlap"), ("flat.vasp", "zero volume"),
            ("nacl.vasp", "StillingerWeber covers Si but the structure contains Na, Cl")]):
        assert skipped[k].startswith(f"jcsp: skipped {name} (input structure {k}): "), \
            skipped[k]
        assert words in skipped[k]
    rows = out.strip().splitlines()[3:]
    assert len(rows) == 4 and rows[0].split()[1] == "ok.vasp"
    assert rows[0].endswith(" converged") and float(rows[0].split()[5]) < -1.0
    with open(out_dir / "summary.csv") as fh:
        summary = {r["structure"]: r for r in csv.DictReader(fh)}
    assert set(summary) == set(files)
    assert summary["ok.vasp"]["rank"] == "1" and summary["ok.vasp"]["failed"] == "False"
    for name in files[:3]:
        assert summary[name]["failed"] == "True" and summary[name]["failure_reason"]
        assert summary[name]["cif"] == ""
    written = ase.io.read(out_dir / "relaxed.extxyz", index=":")
    assert [a.info["structure"] for a in written] == ["ok.vasp"]
    assert written[0].info["converged"] is True
    assert np.abs(written[0].get_forces()).max() < 0.01
    assert written[0].get_potential_energy() / 2 == pytest.approx(
        float(summary["ok.vasp"]["energy_per_atom_eV"]), abs=1e-8)


def test_real_process_bad_input_and_version(bad_files):
    """The real entry point: exit status 2 and no traceback, and --version."""
    proc = subprocess.run([sys.executable, "-m", "jcsp.cli", "relax",
                           str(bad_files / "bad.cif"), str(bad_files / "ok.vasp")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("jcsp: error:") and "bad.cif" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "jcsp.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"jcsp {jcsp.__version__}"


def test_info(capsys, tmp_path):
    diamond = bulk("Si", "diamond", a=5.431, cubic=True)
    ase.io.write(tmp_path / "d.cif", diamond)
    ase.io.write(tmp_path / "two.extxyz", [diamond, bulk("Si", "diamond", a=5.431)],
                 format="extxyz")
    code, out, err = run_main(capsys, "info", str(tmp_path / "d.cif"),
                              str(tmp_path / "two.extxyz"))
    assert code == 0, err
    lines = out.strip().splitlines()[2:]
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["d.cif", "Si8", "8"]
    assert lines[2].split()[:3] == ["two.extxyz:1", "Si2", "2"]
    assert all(line.endswith("Fd-3m (227)") for line in lines)
    assert float(lines[0].split()[3]) == pytest.approx(5.431 ** 3, abs=1e-3)


def lj_inputs(tmp_path):
    """Argon-like LJ crystals in one file: rattled fcc (4 atoms) and hcp (2), and a cell
    with two atoms 1 Å apart (forces ~1e6 eV/Å: the relaxation must flag it failed)."""
    rng = np.random.default_rng(0)
    fcc = bulk("Ar", "fcc", a=5.45, cubic=True)
    hcp = bulk("Ar", "hcp", a=3.9, c=6.3)
    for atoms in (fcc, hcp):
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))),
                       scale_atoms=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    squeezed = Atoms("Ar2", positions=[[0, 0, 0], [1.0, 0, 0]], cell=[6, 6, 6], pbc=True)
    ase.io.write(tmp_path / "in.extxyz", [fcc, hcp, squeezed], format="extxyz")
    return tmp_path / "in.extxyz"


def test_relax_writes_ranked_outputs(capsys, tmp_path):
    """One LJ relaxation at 1 GPa, every output checked with ASE's own Lennard-Jones."""
    inp = lj_inputs(tmp_path)
    p_gpa = 1.0
    p_ev = p_gpa / 160.21766208  # eV/Å³
    start = {}
    for k, atoms in enumerate(ase.io.read(inp, index=":")[:2]):
        atoms.calc = AseLJ(**ASE_LJ)
        assert np.abs(atoms.get_forces()).max() > 0.003  # there is something to relax
        start[f"in.extxyz:{k}"] = (atoms.get_potential_energy() + p_ev * atoms.get_volume()) \
            / len(atoms)
    out_dir = tmp_path / "out"
    code, out, err = run_main(capsys, "relax", str(inp), "--potential", LJ_SPEC,
                              "--pressure", "1", "--fmax", "1e-3", "-q", "-o", str(out_dir))
    assert code == 0, err
    table = out.strip().splitlines()
    assert table[0] == "ranked by enthalpy per atom at 1 GPa"
    assert len(table) == 3 + 3 and [line.split()[0] for line in table[3:]] == ["1", "2", "3"]
    # the failed structure ranks last, says why, and gets no CIF
    assert table[-1].split()[1] == "in.extxyz:2" and "FAILED" in table[-1]
    relaxed = {a.info["structure"]: a
               for a in ase.io.read(out_dir / "relaxed.extxyz", index=":")}
    assert set(relaxed) == set(start) | {"in.extxyz:2"}
    assert relaxed["in.extxyz:2"].info["failed"] is True
    with open(out_dir / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert [r["rank"] for r in summary] == ["1", "2", "3"]
    assert summary[2]["failed"] == "True" and summary[2]["cif"] == ""
    assert summary[2]["failure_reason"]
    assert "1 failed, 0 not converged" in err
    assert float(summary[0]["enthalpy_per_atom_eV"]) <= \
        float(summary[1]["enthalpy_per_atom_eV"])
    for row in summary[:2]:
        atoms = relaxed[row["structure"]]
        n = len(atoms)
        assert atoms.info["rank"] == int(row["rank"])
        assert row["converged"] == "True" and row["failed"] == "False"
        # the written structure, recomputed with ASE's Lennard-Jones calculator
        ref = atoms.copy()
        ref.calc = AseLJ(**ASE_LJ)
        e_ref = ref.get_potential_energy()
        assert np.abs(ref.get_forces()).max() < 2e-3
        # relaxed under 1 GPa: the stress is -1 GPa on the diagonal (ASE sign), 0 off it
        stress_gpa = ref.get_stress() * 160.21766208
        np.testing.assert_allclose(stress_gpa, [-p_gpa] * 3 + [0] * 3, atol=0.02)
        h_ref = (e_ref + p_ev * atoms.get_volume()) / n
        assert float(row["energy_per_atom_eV"]) == pytest.approx(e_ref / n, abs=1e-9)
        assert float(row["enthalpy_per_atom_eV"]) == pytest.approx(h_ref, abs=1e-9)
        assert float(row["volume_per_atom_A3"]) == pytest.approx(atoms.get_volume() / n)
        assert h_ref < start[row["structure"]] - 1e-4  # the enthalpy went down
        cif = ase.io.read(out_dir / row["cif"])
        np.testing.assert_allclose(cif.cell.cellpar(), atoms.cell.cellpar(), atol=1e-6)
        np.testing.assert_allclose(cif.get_scaled_positions(),
                                   atoms.get_scaled_positions(), atol=1e-6)


@pytest.fixture(scope="module")
def default_job(tmp_path_factory):
    """``jcsp relax -q -o DIR``: the shipped examples with the shipped SW potential."""
    out_dir = tmp_path_factory.mktemp("default-relax")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["relax", "-q", "-o", str(out_dir)])
    return code, out.getvalue(), err.getvalue(), out_dir


def test_default_job_relaxes_shipped_examples(default_job):
    """``jcsp relax`` with no arguments: the README's main job."""
    code, out, err, _ = default_job
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 + 8
    rows = {line.split()[1]: line for line in lines[3:]}
    # Stillinger-Weber silicon: diamond and lonsdaleite (identical first neighbours, and
    # SW reaches no further) share the ground state -2 epsilon = -4.3366 eV/atom
    top3 = {line.split()[1] for line in lines[3:6]}
    assert top3 == {"diamond-primitive", "diamond-conventional", "lonsdaleite"}
    for name in top3:
        assert float(rows[name].split()[5]) == pytest.approx(-4.3366, abs=2e-5)
        assert float(rows[name].split()[6]) == pytest.approx(20.0, abs=0.1)  # Å³/atom
    assert "Fd-3m (227)" in rows["diamond-conventional"]
    assert "P6_3/mmc (194)" in rows["lonsdaleite"]
    assert "I4_1/amd (141)" in rows["beta-tin"]
    assert float(rows["beta-tin"].split()[5]) > -4.3366 + 0.1
    assert all(line.endswith(" converged") for line in lines[3:])


@pytest.mark.lammps
def test_default_job_outputs_recomputed_with_lammps(default_job):
    """Every structure the default job wrote, recomputed by LAMMPS ``pair_style sw``
    with its own Si.sw: the same energy, forces below --fmax (0.01 eV/Å) and a stress
    that is small (relaxed cell)."""
    import lammps_ref

    code, _, err, out_dir = default_job
    assert code == 0, err
    relaxed = {a.info["structure"]: a
               for a in ase.io.read(out_dir / "relaxed.extxyz", index=":")}
    with open(out_dir / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert len(summary) == len(relaxed) == 8
    sw = ["pair_style sw", f"pair_coeff * * {lammps_ref.POTENTIALS}/Si.sw Si"]
    for row in summary:
        atoms = relaxed[row["structure"]]
        e, f, s = lammps_ref.run(atoms.cell[:], atoms.positions, atoms.get_chemical_symbols(),
                                 sw)
        n = len(atoms)
        assert int(row["n_atoms"]) == n and row["converged"] == "True"
        assert float(row["energy_eV"]) == pytest.approx(e, abs=1e-7 * n)
        assert np.abs(f).max() < 0.01
        assert np.abs(s).max() * 160.21766208 < 0.1  # GPa
        assert e / n < -3.9  # bound silicon, not an empty evaluation


def test_readme_starts_with_the_two_commands_ci_runs():
    """README's first lines are the install-and-run and test commands; .ci/run runs the
    very same test command."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    lines = [line for line in (root / "README.md").read_text().splitlines() if line.strip()]
    test = 'pip install -e ".[test]" && python -m pytest -q -n 2 --dist loadfile'
    assert lines[1:5] == ["```bash", "pip install -e . && jcsp search", test, "```"]
    ci = (root / ".ci" / "run").read_text()
    assert f"python -m {test} || status=$?" in ci
    assert "set -euo pipefail" in ci and "apt-get install -y" in ci
    assert (root / ".ci" / "run").stat().st_mode & 0o111

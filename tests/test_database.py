"""The run database: lossless round trip, uids, run records, and survival of SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from jcsp.search.database import (ResumeError, has, make_uid, open_run, read_all,
                                  run_config, write_structure, written_uids)

CONFIG = {"composition": "Si8", "potential": "sw-si", "seed": 3, "algorithm": "ga",
          "budget": 40, "pressure": 0.0}


def relaxed(k: int):
    atoms = bulk("Si", "diamond", 5.43 + 0.01 * k, cubic=True)
    atoms.rattle(0.01, seed=k)
    forces = np.random.default_rng(k).normal(size=(len(atoms), 3)) * 1e-3
    atoms.calc = SinglePointCalculator(atoms, energy=-34.6 - k, forces=forces,
                                       stress=np.arange(6) * 1e-4)
    atoms.info.update(energy=-34.6 - k, enthalpy=-34.5 - k, volume=atoms.get_volume(),
                      spacegroup="P1 (1)", spacegroups={0.1: "Fd-3m (227)", 0.001: "P1 (1)"},
                      converged=np.bool_(True), steps=np.int64(40 + k), hits=2,
                      labels=["Si"] * 8, generator_spacegroup=227)
    return atoms


def test_write_close_reopen_read_back_equal(tmp_path):
    path = tmp_path / "run" / "structures.db"
    db = open_run(path, CONFIG)
    written = []
    for k in range(3):
        atoms = relaxed(k)
        uid = make_uid(3, "ga", 1, k)
        fp = np.random.default_rng(k).normal(size=(1, 20))
        parents = [make_uid(3, "ga", 0, k), make_uid(3, "ga", 0, k + 1)]
        write_structure(db, atoms, uid=uid, driver="ga", generation=1, parents=parents,
                        pressure=0.0, fingerprint=fp)
        written.append((atoms, uid, fp, parents))
    del db

    db = open_run(path, CONFIG)
    assert run_config(db) == CONFIG
    back = read_all(db, with_fingerprints=True)
    assert len(back) == 3
    for (atoms, uid, fp, parents), got in zip(written, back):
        np.testing.assert_array_equal(got.positions, atoms.positions)
        np.testing.assert_array_equal(got.cell[:], atoms.cell[:])
        np.testing.assert_array_equal(got.numbers, atoms.numbers)
        assert got.get_potential_energy() == atoms.get_potential_energy()
        np.testing.assert_array_equal(got.get_forces(), atoms.get_forces())
        np.testing.assert_array_equal(got.get_stress(), atoms.get_stress())
        np.testing.assert_array_equal(got.info.pop("fingerprint"), fp)
        assert got.info == dict(atoms.info, uid=uid, driver="ga", generation=1,
                                pressure=0.0, parents=parents)
        assert isinstance(got.info["steps"], int) and got.info["spacegroups"][0.1] == "Fd-3m (227)"
    # Queryable key-value pairs, with ASE's own tools.
    row = db.get(uid=written[1][1])
    assert row.enthalpy == pytest.approx(-35.5) and row.spacegroup == "P1 (1)"
    assert row.generation == 1 and row.driver == "ga"
    assert row.parents == "s3-ga-g0-i1,s3-ga-g0-i2"
    assert db.count("enthalpy<-35") == 2


def test_uids_are_stable_and_never_written_twice(tmp_path):
    assert make_uid(0, "basin", 12, 3) == "s0-basin-g12-i3"
    assert make_uid(0, "basin", 12, 3) != make_uid(1, "basin", 12, 3)
    with pytest.raises(ValueError, match="driver"):
        make_uid(0, "ga-x", 0, 0)
    with pytest.raises(ValueError, match="generation"):
        make_uid(0, "ga", -1, 0)
    db = open_run(tmp_path / "a.db", CONFIG)
    uid = make_uid(3, "ga", 0, 0)
    assert not has(db, uid)
    first = write_structure(db, relaxed(0), uid=uid)
    again = write_structure(db, relaxed(1), uid=uid)
    assert first == again and db.count() == 1 and has(db, uid)
    assert written_uids(db) == {uid}


def test_a_different_run_is_refused(tmp_path):
    path = tmp_path / "a.db"
    open_run(path, CONFIG)
    with pytest.raises(ResumeError, match="seed: stored 3, now 4"):
        open_run(path, dict(CONFIG, seed=4))
    with pytest.raises(ResumeError, match="budget"):
        open_run(path, dict(CONFIG, budget=80))
    db = open_run(path, dict(CONFIG, budget=80), allow_changes=["budget"])
    assert run_config(db)["budget"] == 80
    assert run_config(open_run(path, dict(CONFIG, budget=80))) == dict(CONFIG, budget=80)
    with pytest.raises(ValueError, match=".db"):
        open_run(tmp_path / "a.sqlite", CONFIG)
    foreign = open_run(tmp_path / "b.db")
    write_structure(foreign, relaxed(0), uid="x")
    with pytest.raises(ResumeError, match="no jcsp run record"):
        open_run(tmp_path / "b.db", CONFIG)
    with pytest.raises(ValueError, match="cannot store"):
        atoms = relaxed(0)
        atoms.info["bad"] = object()
        write_structure(open_run(path), atoms, uid="y")



def test_a_creation_cut_short_leaves_no_database(tmp_path, monkeypatch):
    """ASE creates its tables before it records the format version; a run killed in
    between must not leave a file that no later run can open (CI saw a reader land in
    that window)."""
    import ase.db.sqlite
    statements = list(ase.db.sqlite.init_statements)
    monkeypatch.setattr(ase.db.sqlite, "init_statements",
                        statements[:2] + ["this is not SQL"] + statements[2:])
    path = tmp_path / "run.db"
    with pytest.raises(sqlite3.OperationalError):
        open_run(path, CONFIG)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(ase.db.sqlite, "init_statements", statements)
    db = open_run(path, CONFIG)
    write_structure(db, relaxed(0), uid="a")
    assert run_config(open_run(path, CONFIG)) == CONFIG and written_uids(db) == {"a"}


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from ase.build import bulk
    from jcsp.search.database import open_run, write_structure, has, make_uid
    path, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = open_run(path, {"seed": 0, "algorithm": "random"})
    for k in range(start, stop):
        uid = make_uid(0, "random", k // 10, k % 10)
        if has(db, uid):
            continue
        atoms = bulk("Si", "diamond", 5.43, cubic=True)
        atoms.info.update(energy=-34.0 - k, enthalpy=-34.0 - k)
        write_structure(db, atoms, uid=uid, driver="random", generation=k // 10,
                        fingerprint=np.full((1, 50), float(k)))
        print(uid, flush=True)
""")


def _writer(path, start, stop):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc, lines: int) -> list[str]:
    printed = []
    while len(printed) < lines:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        printed.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return printed


def test_sigkill_mid_run_loses_and_duplicates_nothing(tmp_path):
    path = tmp_path / "killed.db"
    printed = _kill_after(_writer(path, 0, 100000), 12)
    assert not (tmp_path / "killed.db.lock").exists()

    start = time.perf_counter()
    db = open_run(path, {"seed": 0, "algorithm": "random"})  # no stale lock to wait for
    rows = read_all(db)
    assert time.perf_counter() - start < 10
    uids = [a.info["uid"] for a in rows]
    assert len(uids) == len(set(uids))                  # nothing twice
    assert set(printed) <= set(uids)                    # nothing committed is lost
    expected = [make_uid(0, "random", k // 10, k % 10) for k in range(len(uids))]
    assert uids == expected                             # a clean prefix of the run
    for k, atoms in enumerate(rows):                    # each row complete
        assert atoms.get_potential_energy() == -34.0 - k
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # Resume, kill again, then finish: every structure exactly once.
    _kill_after(_writer(path, 0, 100000), 5)
    finish = _writer(path, 0, len(uids) + 30)
    out, err = finish.communicate(timeout=120)
    assert finish.returncode == 0, err
    rows = read_all(open_run(path, {"seed": 0, "algorithm": "random"}),
                    with_fingerprints=True)
    uids = [a.info["uid"] for a in rows]
    assert len(uids) == len(set(uids)) >= len(expected) + 30
    assert sorted(uids) == sorted(make_uid(0, "random", k // 10, k % 10)
                                  for k in range(len(uids)))
    assert all(a.info["fingerprint"][0, 0] == -34.0 - a.get_potential_energy() for a in rows)

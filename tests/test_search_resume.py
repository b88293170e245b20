"""Resume after SIGKILL: nothing lost, nothing duplicated, the same result as an
uninterrupted run with the same seed."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import ase.db
import numpy as np
import pytest

import jcsp
from jcsp.potentials import LennardJones

LJ = LennardJones(1.0, 1.0, None)

SCRIPT = textwrap.dedent("""
    import sys, time
    import jcsp
    from jcsp.potentials import LennardJones
    from jcsp.search import database

    write = database.write_structure

    def slow_write(*args, **kwargs):  # stretch the run so the kill lands mid-generation
        row = write(*args, **kwargs)
        time.sleep(0.15)
        return row

    database.write_structure = slow_write
    jcsp.search("LJ7", LennardJones(1.0, 1.0, None), algorithm=sys.argv[2], budget=24,
                cluster=True, seed=3, out=sys.argv[1], population=6)
""")


def _rows(path):
    with ase.db.connect(str(path), use_lock_file=False) as db:
        return [row.get("uid") for row in db.select()]


def _kill_mid_run(tmp_path, algorithm, n_before):
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(out), algorithm])
    db = out / "structures.db"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            try:
                if db.exists() and len(_rows(db)) >= n_before:
                    break
            except sqlite3.OperationalError:  # the writer holds the lock; look again
                pass
            assert proc.poll() is None, "the search ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = _rows(db)
    assert n_before <= len(written) < 24  # killed mid-search
    return out, written


@pytest.mark.parametrize("algorithm", ["random", "basin"])
def test_sigkill_resume_equals_uninterrupted(tmp_path, algorithm):
    out, before = _kill_mid_run(tmp_path, algorithm, 8)  # 8: inside the second generation
    resumed = jcsp.search("LJ7", LJ, algorithm=algorithm, budget=24, cluster=True, seed=3,
                          out=out, population=6)
    uids = _rows(out / "structures.db")
    assert len(uids) == len(set(uids)) == 24  # nothing lost, nothing duplicated
    assert set(before) <= set(uids)
    fresh = jcsp.search("LJ7", LJ, algorithm=algorithm, budget=24, cluster=True, seed=3,
                        out=tmp_path / "fresh", population=6)
    assert resumed.n_relaxations == fresh.n_relaxations == 24
    np.testing.assert_array_equal(resumed.history, fresh.history)
    assert [a.info["uid"] for a in resumed.structures] == \
        [a.info["uid"] for a in fresh.structures]
    assert resumed.best.info["energy"] == fresh.best.info["energy"]
    assert resumed.best.info["energy"] < -15.5  # LJ7 minimum -16.505384: not vacuous
    np.testing.assert_array_equal(resumed.best.positions, fresh.best.positions)


def test_resume_with_other_settings_is_refused(tmp_path):
    jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=0,
                out=tmp_path, population=4)
    with pytest.raises(jcsp.search.ResumeError, match="seed"):
        jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=1,
                    out=tmp_path, population=4)


def test_larger_budget_extends_a_finished_run(tmp_path):
    short = jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=0,
                        out=tmp_path, population=4)
    longer = jcsp.search("LJ5", LJ, algorithm="random", budget=8, cluster=True, seed=0,
                         out=tmp_path, population=4)
    assert len(_rows(tmp_path / "structures.db")) == 8
    np.testing.assert_array_equal(longer.history[:4], short.history)


@pytest.mark.parametrize("algorithm", jcsp.search.ALGORITHMS)
def test_every_driver_replays_exactly(tmp_path, algorithm):
    """A run extended from 8 to 16 relaxations equals a fresh 16-relaxation run: every
    driver rebuilds its state from the database alone."""
    kwargs = dict(algorithm=algorithm, cluster=True, seed=5, population=4)
    jcsp.search("LJ7", LJ, budget=8, out=tmp_path / "a", **kwargs)
    extended = jcsp.search("LJ7", LJ, budget=16, out=tmp_path / "a", **kwargs)
    fresh = jcsp.search("LJ7", LJ, budget=16, **kwargs)
    assert len(_rows(tmp_path / "a" / "structures.db")) == 16
    np.testing.assert_array_equal(extended.history, fresh.history)
    assert [a.info["uid"] for a in extended.structures] == \
        [a.info["uid"] for a in fresh.structures]


def test_run_record_keeps_its_format(tmp_path):
    """The run record is the SearchConfig as the database has always stored it, so run
    folders written before the config object existed still resume: a record written
    in the old form by hand is accepted, and a changed setting is still refused."""
    from jcsp.search import database, generate

    old = {"composition": "LJ5", "formula_units": 1, "algorithm": "random", "seed": 0,
           "pressure": 0.0, "cluster": True, "groups": None, "volume": None,
           "population": 4, "fmax": 0.01, "max_steps": 2000, "potential": repr(LJ),
           "options": {}, "budget": 4, "target": None,
           "cluster_symmetry": generate.cluster_groups({"LJ": 5}, True)}
    database.open_run(tmp_path / "structures.db", old)
    res = jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=0,
                      out=tmp_path, population=4)
    assert res.n_relaxations == 4 and len(_rows(tmp_path / "structures.db")) == 4
    stored = database.run_config(database.open_run(tmp_path / "structures.db"))
    assert stored == database.open_run(tmp_path / "x.db", old).metadata[database.RUN_KEY]
    with pytest.raises(jcsp.search.ResumeError, match="fmax"):
        jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=0,
                    out=tmp_path, population=4, fmax=0.02)

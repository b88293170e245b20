"""Resume after SIGKILL: nothing lost, nothing duplicated, the same result as an
uninterrupted run with the same seed.

Generational drivers (``Session.evaluate``) replay exactly: the same history, archive
and best. Drivers made of walkers (``Session.walk``) read every stored structure back
instead of relaxing it and each walker's trajectory is the same sequence of candidates
and results as in an uninterrupted run; but the read-back structures come back first,
so the global completion order (history, found_at) differs, and with it which walker
gets the next slot: each walker gets as far along its own sequence as the completion
order lets it. The tests check exactly that for them.
"""

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
    from jcsp.search import database, run

    write = database.write_structures

    def slow_write(db, items):  # stretch the run so the kill lands mid-generation
        rows = []
        for item in items:
            rows += write(db, [item])
            time.sleep(0.15)
        return rows

    database.write_structures = slow_write
    run.FLUSH_SECONDS = 0.0  # commit every batch, so the kill lands between commits
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


@pytest.fixture
def walkers(monkeypatch):
    """The algorithms whose driver ran through ``Session.walk`` in this test."""
    from jcsp.search.run import Session

    seen = set()
    walk = Session.walk

    def spy(self, *args, **kwargs):
        seen.add(self.driver)
        return walk(self, *args, **kwargs)

    monkeypatch.setattr(Session, "walk", spy)
    return seen


def _by_uid(path):
    from jcsp.search import database
    return {a.info["uid"]: a for a in database.read_all(database.open_run(path))}


def _same_walks(resumed_db, fresh_db, n):
    """Walk drivers: ``n`` rows each, no duplicates, and every structure that both runs
    made (same uid: same walker, same step) is the same structure, bit for bit; the
    runs share most of their structures (not vacuous)."""
    a, b = _by_uid(resumed_db), _by_uid(fresh_db)
    assert len(a) == len(b) == n
    common = set(a) & set(b)
    assert len(common) >= n // 2
    for uid in common:
        assert a[uid].info["failed"] == b[uid].info["failed"]
        if not a[uid].info["failed"]:
            assert a[uid].info["energy"] == b[uid].info["energy"]
            np.testing.assert_array_equal(a[uid].positions, b[uid].positions)
        assert a[uid].info["parents"] == b[uid].info["parents"]


@pytest.mark.parametrize("algorithm", ["random", "basin"])
def test_sigkill_resume_equals_uninterrupted(tmp_path, algorithm, walkers):
    out, before = _kill_mid_run(tmp_path, algorithm, 8)  # 8: inside the second generation
    resumed = jcsp.search("LJ7", LJ, algorithm=algorithm, budget=24, cluster=True, seed=3,
                          out=out, population=6)
    uids = _rows(out / "structures.db")
    assert len(uids) == len(set(uids)) == 24  # nothing lost, nothing duplicated
    assert set(before) <= set(uids)
    fresh = jcsp.search("LJ7", LJ, algorithm=algorithm, budget=24, cluster=True, seed=3,
                        out=tmp_path / "fresh", population=6)
    assert resumed.n_relaxations == fresh.n_relaxations == 24
    assert resumed.best.info["energy"] < -15.5  # LJ7 minimum -16.505384: not vacuous
    if algorithm in walkers:
        _same_walks(out / "structures.db", tmp_path / "fresh" / "structures.db", 24)
        return
    np.testing.assert_array_equal(resumed.history, fresh.history)
    assert [a.info["uid"] for a in resumed.structures] == \
        [a.info["uid"] for a in fresh.structures]
    assert resumed.best.info["energy"] == fresh.best.info["energy"]
    np.testing.assert_array_equal(resumed.best.positions, fresh.best.positions)


def test_walk_resume_relaxes_nothing_twice(tmp_path, monkeypatch):
    """Rerunning a finished walk search reads all of it back: no structure is relaxed
    again, and the result holds the same structures."""
    from jcsp.search import run

    kwargs = dict(algorithm="random", cluster=True, seed=2, population=4, budget=10,
                  out=tmp_path)
    first = jcsp.search("LJ7", LJ, **kwargs)
    fed = []
    stream = run.relax_stream

    def counting(feed, *args, **kw):
        return stream(lambda n: _note(fed, feed(n)), *args, **kw)

    monkeypatch.setattr(run, "relax_stream", counting)
    again = jcsp.search("LJ7", LJ, **kwargs)
    assert sum(len(x) for x in fed if x) == 0  # nothing relaxed
    assert again.n_relaxations == first.n_relaxations == 10
    assert sorted(a.info["uid"] for a in again.structures) == \
        sorted(a.info["uid"] for a in first.structures)
    assert again.best.info["energy"] == first.best.info["energy"]


def _note(log, value):
    log.append(value)
    return value


def test_resume_with_other_settings_is_refused(tmp_path):
    jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=0,
                out=tmp_path, population=4)
    with pytest.raises(jcsp.search.ResumeError, match="seed"):
        jcsp.search("LJ5", LJ, algorithm="random", budget=4, cluster=True, seed=1,
                    out=tmp_path, population=4)


def test_larger_budget_extends_a_finished_run(tmp_path):
    kwargs = dict(algorithm="random", cluster=True, seed=0, out=tmp_path, population=4)
    short = jcsp.search("LJ5", LJ, budget=4, **kwargs)
    longer = jcsp.search("LJ5", LJ, budget=8, **kwargs)
    rows = _by_uid(tmp_path / "structures.db")
    assert len(rows) == 8 and longer.n_relaxations == 8
    # the first four are read back (the same structures), four more are relaxed
    assert {a.info["uid"] for a in short.structures} <= set(rows)
    assert longer.history[3] == short.history[-1]  # the four read back come first
    assert longer.history[-1] <= short.history[-1]


@pytest.mark.parametrize("algorithm", jcsp.search.ALGORITHMS)
def test_every_driver_replays_exactly(tmp_path, algorithm, walkers):
    """A run extended from 8 to 16 relaxations equals a fresh 16-relaxation run: every
    driver rebuilds its state from the database alone (walk drivers: the walkers'
    trajectories, see the module docstring)."""
    kwargs = dict(algorithm=algorithm, cluster=True, seed=5, population=4)
    jcsp.search("LJ7", LJ, budget=8, out=tmp_path / "a", **kwargs)
    extended = jcsp.search("LJ7", LJ, budget=16, out=tmp_path / "a", **kwargs)
    fresh = jcsp.search("LJ7", LJ, budget=16, out=tmp_path / "b", **kwargs)
    assert len(_rows(tmp_path / "a" / "structures.db")) == 16
    if algorithm in walkers:
        _same_walks(tmp_path / "a" / "structures.db", tmp_path / "b" / "structures.db", 16)
        assert extended.n_relaxations == fresh.n_relaxations == 16
        return
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

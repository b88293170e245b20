"""Active learning inside the search (jcsp.search(..., oracle=...)).

The oracle is ASE's own EMT calculator (independent of jcsp) behind a wrapper that logs
every call's geometry, so "no oracle call is ever repeated" is checked on what the oracle
really computed, across a resume and a SIGKILL. Budgets are tiny (CI); the ground-state
figures live in experiments/active_learning/ and their records.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

import jcsp
from jcsp.ml import Committee, GuardedCommittee, ModelConfig, TrainConfig
from jcsp.ml.model import init_params
from jcsp.ml.training import train
from jcsp.oracle import LabelStore
from jcsp.search.active import ActiveConfig, ActiveResult

#: Tiny loop settings: a couple of rounds of a small committee.
TINY = dict(n_seed=4, seed_copies=1, committee=2, train_time=2.0, epochs=30, relaxations=8,
            n_uncertain=2, n_exploit=2, n_final=1, final_steps=25, max_rounds=1, min_rounds=1,
            model=dict(cutoff=4.5, channels=8, l_max=1, n_layers=1, correlation=2,
                       n_radial=4, radial_hidden=8, readout_hidden=8))


def _key(atoms) -> str:
    data = np.concatenate([atoms.numbers.astype(float), atoms.cell[:].ravel(),
                           atoms.positions.ravel()])
    return hashlib.sha1(np.round(data, 8).tobytes()).hexdigest()


class LoggingEMT(EMT):
    """EMT that appends the geometry of every call it completes to a log file; it can
    fail (raise, or return NaN) on a schedule and take its time."""

    def __init__(self, log, fail_every: int = 0, delay: float = 0.0):
        super().__init__()
        self.log, self.fail_every, self.delay, self.calls = log, fail_every, delay, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        time.sleep(self.delay)
        self.calls += 1
        try:
            if self.fail_every and self.calls % self.fail_every == 0:
                raise RuntimeError("SCF did not converge (simulated)")
            super().calculate(atoms, properties, system_changes or ["positions"])
            if self.fail_every and self.calls % self.fail_every == 1 and self.calls > 1:
                self.results["energy"] = float("nan")
        finally:  # a call is logged once it is done (a killed call in flight is not)
            with open(self.log, "a") as handle:
                handle.write(_key(atoms) + "\n")


def _calls(log) -> collections.Counter:
    with open(log) as handle:
        return collections.Counter(line.strip() for line in handle if line.strip())


def _stored(path) -> int:
    """Rows committed to an oracle database so far (0 before it exists)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as db:
            return db.execute("SELECT COUNT(*) FROM systems").fetchone()[0]
    except sqlite3.Error:  # created but not yet initialised
        return 0


@pytest.fixture(scope="module")
def cu_run(tmp_path_factory):
    """A run SIGKILLed while it labels its seed structures, then resumed in this process
    with the same call: the run every test below looks at."""
    folder = tmp_path_factory.mktemp("al")
    log, out = folder / "calls.log", folder / "run"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import jcsp
        from test_active import LoggingEMT, TINY
        jcsp.search("Cu2", oracle=LoggingEMT({str(log)!r}, delay=0.5), oracle_budget=40,
                    budget=16, seed=1, out={str(out)!r}, active=TINY)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        # Kill once three results are committed, while the fourth call is in flight (a
        # call killed after it returned but before its commit would be computed again).
        if _stored(out / "oracle.db") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = sum(_calls(log).values())
    oracle = LoggingEMT(log)
    res = jcsp.search("Cu2", oracle=oracle, oracle_budget=40, budget=16, seed=1, out=out,
                      active=TINY)
    return folder, log, oracle, res, killed_after


def test_killed_run_resumed_without_repeating_calls(cu_run):
    _, log, oracle, res, killed_after = cu_run
    assert 3 <= killed_after < 8  # killed in the middle of the seed labels
    calls = _calls(log)
    assert max(calls.values()) == 1  # every geometry reached the oracle once
    assert res.n_oracle_calls == sum(calls.values()) == killed_after + oracle.calls <= 40


def test_contract_best_is_relaxed_by_the_oracle(cu_run):
    folder, log, oracle, res, _ = cu_run
    assert isinstance(res, ActiveResult)
    best = res.best
    assert best is not None and len(best) == 2
    # Recomputed here with a fresh EMT: the reported oracle energy and enthalpy are the
    # oracle's, and the structure is the oracle's minimum (forces below fmax when it
    # converged within the final steps).
    probe = best.copy()
    probe.calc = EMT()
    assert probe.get_potential_energy() == pytest.approx(best.info["oracle_energy"], abs=1e-9)
    assert best.info["enthalpy"] == pytest.approx(best.info["oracle_energy"], abs=1e-9)  # 0 GPa
    assert isinstance(best.info["spacegroup"], str)
    if best.info["converged"]:
        assert np.linalg.norm(probe.get_forces(), axis=1).max() < res.config.fmax
    # The committee is a jcsp potential: it relaxes structures like any other.
    relaxed = jcsp.relax([bulk("Cu", "fcc", a=3.7)], res.potential, max_steps=50)
    assert math.isfinite(relaxed[0].info["energy"])
    assert (res.model_dir / "model.json").exists()
    assert [row["round"] for row in res.rounds] == list(range(1, len(res.rounds) + 1))
    record = json.loads((folder / "run" / "active.json").read_text())
    assert record == json.loads(json.dumps(res.rounds, default=float))


def test_rerun_repeats_no_oracle_call(cu_run):
    folder, log, _, res, _ = cu_run
    again = LoggingEMT(log)
    res2 = jcsp.search("Cu2", oracle=again, oracle_budget=40, budget=16, seed=1,
                       out=folder / "run", active=TINY)
    assert again.calls == 0
    assert res2.n_oracle_calls == res.n_oracle_calls
    assert res2.best.info["oracle_energy"] == res.best.info["oracle_energy"]
    assert max(_calls(log).values()) == 1


#: A cheap searching potential for the direct mode (one compilation for the module).
LJ = jcsp.potentials.LennardJones(epsilon=0.4, sigma=2.3, cutoff=6.0)


def test_direct_mode_confirms_with_the_oracle(tmp_path):
    oracle = LoggingEMT(tmp_path / "calls.log")
    res = jcsp.search("Cu2", LJ, oracle=oracle, oracle_budget=60, budget=16, seed=0,
                      active={"mode": "direct", "n_final": 2, "final_steps": 20})
    assert res.potential is LJ and res.rounds == []
    assert res.n_oracle_calls == oracle.calls <= 60
    probe = res.best.copy()
    probe.calc = EMT()
    assert probe.get_potential_energy() == pytest.approx(res.best.info["oracle_energy"], abs=1e-9)


def test_failing_oracle_marks_structures_and_goes_on(tmp_path):
    log = tmp_path / "calls.log"
    oracle = LoggingEMT(log, fail_every=4)  # every 4th call raises, every 4th+1 is NaN
    res = jcsp.search("Cu2", LJ, oracle=oracle, oracle_budget=80, budget=16, seed=1,
                      out=tmp_path / "run",
                      active={"mode": "direct", "n_final": 3, "final_steps": 20})
    failed = [a for a in LabelStore(tmp_path / "run" / "oracle.db").labelled(ok_only=False)
              if a.info.get("error")]
    assert res.n_oracle_failures == len(failed) >= 2
    assert any("SCF" in a.info["error"] for a in failed)
    assert max(_calls(log).values()) == 1  # a failed structure is never retried
    assert res.n_oracle_calls == oracle.calls


@pytest.mark.parametrize("kwargs, message", [
    (dict(oracle=EMT()), "oracle_budget"),
    (dict(oracle_budget=10), "oracle="),
    (dict(oracle=EMT(), oracle_budget=5), "seed labels"),
    (dict(oracle=EMT(), oracle_budget=50, active={"n_sed": 3}), "n_sed"),
    (dict(oracle=EMT(), oracle_budget=50, active={"mode": "direct"}), "potential="),
    (dict(oracle=EMT(), oracle_budget=50, cluster=True), "crystals"),
])
def test_bad_settings_fail_before_any_call(kwargs, message):
    with pytest.raises(ValueError, match=message):
        jcsp.search("Cu2", **kwargs)


def test_guarded_committee_is_nan_above_the_spread_only():
    config = ModelConfig(species=(29,), cutoff=4.0, channels=4, l_max=1, n_radial=4,
                         radial_hidden=4, readout_hidden=4, avg_neighbors=12.0)
    nets = [init_params(config, jax.random.PRNGKey(k)) for k in range(3)]
    params = {"net": jax.tree.map(lambda *x: jnp.stack(x), *nets),
              "e_ref": jnp.zeros(1), "scale": jnp.ones(())}
    plain = Committee(config, params)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    guarded = GuardedCommittee(config, {**params, "max_spread": jnp.asarray(1e6)})
    loose = jcsp.relax([atoms], guarded, max_steps=3)[0]
    assert loose.info["energy"] == pytest.approx(
        jcsp.relax([atoms], plain, max_steps=3)[0].info["energy"], rel=1e-12)
    # The threshold is a parameter: the same object, tightened, stops a relaxation at
    # once (failed, keeping its geometry) without a new compilation.
    guarded.params = {**params, "max_spread": jnp.asarray(1e-12)}
    out = jcsp.relax([atoms], guarded, max_steps=20)[0]
    assert out.info["failed"] and "non-finite" in out.info["failure_reason"]
    assert np.allclose(out.positions, atoms.positions)


def test_train_warm_start_starts_from_the_given_weights(tmp_path):
    data = []
    rng = np.random.default_rng(0)
    for k in range(6):
        atoms = bulk("Cu", "fcc", a=3.55 + 0.03 * k, cubic=True)
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        atoms.get_stress()
        data.append(atoms)
    config = ModelConfig(cutoff=4.0, channels=4, l_max=1, n_radial=4, radial_hidden=4,
                         readout_hidden=4)
    cfg = TrainConfig(epochs=2, committee=2, dtype="float64", free_atoms="fit")
    first = train(data, None, config, cfg, str(tmp_path / "a"), progress=False,
                  log=lambda _: None)
    still = TrainConfig(epochs=1, committee=2, dtype="float64", free_atoms="fit", lr=1e-14)
    second = train(data, None, first.potential.config, still, str(tmp_path / "b"),
                   progress=False, log=lambda _: None,
                   warm_start=first.potential.params["net"])
    assert second.potential.config == first.potential.config
    for a, b in zip(jax.tree.leaves(first.potential.params["net"]),
                    jax.tree.leaves(second.potential.params["net"])):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_active_config_reads_model_tables():
    cfg = ActiveConfig.of({"model": {"cutoff": 4.0, "channels": 8}, "mode": "iterative"})
    assert cfg.model.cutoff == 4.0 and cfg.mode == "iterative"
    with pytest.raises(ValueError, match="mode"):
        ActiveConfig(mode="greedy")


def test_command_line_active_search(tmp_path, capsys):
    from jcsp.cli import main
    out = tmp_path / "cli"
    status = main(["search", "Cu2", "-p", "lj:epsilon=0.4,sigma=2.3,cutoff=6.0", "-b", "8",
                   "--oracle", "python:ase.calculators.emt:EMT", "--oracle-budget", "30",
                   "--active", "mode=direct,n_final=1,final_steps=15", "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "oracle calls" in captured.err and "best: Cu2" in captured.err
    assert (out / "oracle.db").exists() and (out / "ranking.txt").exists()
    assert main(["search", "Cu2", "--oracle-budget", "30"]) == 2  # needs --oracle
    assert "give --oracle" in capsys.readouterr().err
    assert main(["search", "Cu2", "--oracle", "sw-si"]) == 2  # needs --oracle-budget
    assert main(["search", "Cu2", "--oracle", "sw-si", "--oracle-budget", "30",
                 "--active", "n_seed"]) == 2

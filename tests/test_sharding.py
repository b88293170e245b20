"""Populations sharded over devices and processes (jcsp.sharding, issue #24 items 4-5).

The reference is always a plain single-device, single-process run of the same calls.
Each device count needs its own process (XLA reads
``--xla_force_host_platform_device_count`` when it starts), so the runs happen in
subprocesses of one worker script:

- 4 forced CPU devices against 1: ``jcsp.relax`` of Lennard-Jones, Stillinger-Weber,
  EAM, Buckingham + Ewald and ML crystals bit for bit (CPU serial schedule; the vmapped
  accelerator schedule to 1e-12 Å, its batch width per device being another), a run
  whose neighbor lists overflow and grow under pressure equal to the last bits, and
  genetic-algorithm and random searches (LJ7, Si8 with SW) bit for bit; the slots
  really were split four ways.
- 2 processes of ``jax.distributed`` on localhost (one CPU device each) against one
  process: each process relaxed only its own share (of a ``jcsp.relax`` call, of a
  genetic algorithm's generations, of a random search's stream), and both return the
  single-process relaxations and searches bit for bit.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jcsp import sharding

WORKER = textwrap.dedent('''
    import importlib, pickle, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jcsp.sharding as sharding
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "process":
        sharding.initialize(sys.argv[3], 2, int(sys.argv[4]))
    import numpy as np
    import jcsp
    from ase import Atoms
    from ase.build import bulk
    from jcsp.potentials import LennardJones, StillingerWeber
    driver = importlib.import_module("jcsp.relax.driver")
    kernel = importlib.import_module("jcsp.relax.kernel")

    placed, harvested = [], [0]
    shard = sharding.shard_population
    def spy(tree, mesh):
        out = shard(tree, mesh)
        placed.append(min(len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(out)
                          if x.ndim))
        return out
    sharding.shard_population = spy
    grown = [0]
    grow = driver.Capacity.grow
    def counted_growth(self, *args):
        grown[0] += 1
        return grow(self, *args)
    driver.Capacity.grow = counted_growth
    harvest = driver._Bucket.harvest
    def counted(self, finished):
        harvested[0] += len(finished)
        return harvest(self, finished)
    driver._Bucket.harvest = counted

    rng = np.random.default_rng(0)
    argon = []
    for k in range(10):
        a = bulk("Ar", "fcc", a=5.3, cubic=True).repeat((2, 1, 1))
        a.rattle(0.15, seed=k)
        a.set_cell(a.cell * (1 + 0.03 * rng.standard_normal((3, 3))), scale_atoms=True)
        argon.append(a)
    silicon = [Atoms("Si8", scaled_positions=rng.random((8, 3)), pbc=True,
                     cell=np.eye(3) * 5.4 + rng.normal(0, 0.4, (3, 3))) for _ in range(4)]
    lj = LennardJones(0.0104, 3.4, 8.5)
    sw = StillingerWeber.from_lammps(sys.argv[-1])
    cluster = LennardJones(1.0, 1.0, None)

    def numbers(structures):
        return [(a.positions.copy(), a.cell[:].copy(), a.info["energy"], a.info["steps"],
                 a.info["converged"]) for a in structures]

    out = {"devices": jax.local_device_count(), "process": jax.process_index()}
    out["lj"] = numbers(jcsp.relax(argon, lj, fmax=1e-4, batch_size=8))
    out["lj_relaxed_here"] = harvested[0]
    if mode != "process":
        out["sw"] = numbers(jcsp.relax(silicon, sw, fmax=1e-3, batch_size=4))
        # the other potential families, two crystals each (FIRE, cell relaxed)
        from jcsp.io import load_potential
        for name, spec, formula, a in (
                ("eam", sys.argv[-2], "Cu4", 3.7),
                ("ionic", "gulp:tio2-matsui-akaogi", "Ti2O4", 4.4),
                ("ml", "ml-si", "Si4", 4.3)):
            cells = [Atoms(formula, scaled_positions=rng.random((len(Atoms(formula)), 3)),
                           pbc=True, cell=np.eye(3) * a + rng.normal(0, 0.2, (3, 3)))
                     for _ in range(2)]
            out[name] = numbers(jcsp.relax(cells, load_potential(spec), fmax=1e-2,
                                           max_steps=150, optimizer="fire"))
        res = jcsp.search("Si8", sw, algorithm="random", budget=12, population=4, seed=5)
        out["sw_search"] = (numbers(res.structures), np.asarray(res.history),
                            res.n_relaxations)
        # compressed by 3 GPa from a dilute start: the neighbor lists overflow and grow
        dilute = [a.copy() for a in argon[:4]]
        for a in dilute:
            a.set_cell(a.cell * 1.17, scale_atoms=True)
        out["lj_grown"] = numbers(jcsp.relax(dilute, lj, fmax=1e-4, batch_size=4,
                                             pressure=3.0))
        out["grown"] = grown[0]
        kernel.serial_schedule = lambda: False  # the vmapped schedule of accelerators
        out["lj_vmap"] = numbers(jcsp.relax(argon[:4], lj, fmax=1e-4, batch_size=4,
                                            max_steps=60))
        kernel.serial_schedule = lambda: True
    for algorithm in ("ga", "random"):
        before = harvested[0]
        res = jcsp.search("LJ7", cluster, algorithm=algorithm, budget=16, population=8,
                          cluster=True, seed=3, cluster_symmetry=False)
        out[algorithm] = (numbers(res.structures), np.asarray(res.history), res.n_relaxations)
        out[algorithm + "_relaxed_here"] = harvested[0] - before
    out["placed"] = placed
    if mode == "process":  # each rank compiles into its own cache folder
        from jcsp import compile_cache
        out["cache"] = str(compile_cache.enabled())
    if mode == "process":  # the writer's error reaches every process, and its value
        try:
            sharding.run_on_writer(lambda: 1 / 0)
        except ZeroDivisionError:
            out["raised"] = True
        out["shared"] = sharding.run_on_writer(lambda: {"rank": jax.process_index()},
                                               share=True)
        out["kept"] = sharding.run_on_writer(lambda: jax.process_index())
        try:  # each process a different list: refused everywhere
            jcsp.relax(argon[jax.process_index():][:2], lj, fmax=1e-4, batch_size=8)
        except ValueError as err:
            out["refused"] = str(err)
    pickle.dump(out, open(path, "wb"))
''')

SW_FILE = "/usr/share/lammps/potentials/Si.sw"


def _sw_file() -> str:
    import jcsp
    return SW_FILE if os.path.exists(SW_FILE) else os.path.join(
        os.path.dirname(jcsp.__file__), "data", "Si.sw")


def _eam_file() -> str:
    return "/usr/share/lammps/potentials/Cu_u3.eam"  # the LAMMPS package (CI installs it)


def _env(devices: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _start(tmp_path, name, devices, *args):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = tmp_path / f"{name}.pkl"
    log = open(tmp_path / f"{name}.log", "w")
    env = _env(devices)
    # Each worker compiles into its own persistent cache: a process of 4 forced devices
    # or of a jax.distributed job must not leave executables for the test workers (and
    # the other worker of the pair) to load. Two full runs of the suite lost a worker
    # to a segfault inside JAX while it loaded or stored a cache entry.
    env["JCSP_CACHE_DIR"] = str(tmp_path / f"jax-cache-{name}")
    proc = subprocess.Popen([sys.executable, str(script), args[0], str(result), *args[1:],
                             _eam_file(), _sw_file()], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, result, tmp_path / f"{name}.log"


def _finish(job, timeout=300):
    proc, result, log = job
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, log.read_text()[-4000:]
    with open(result, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One device (the reference) and four devices, run side by side."""
    folder = tmp_path_factory.mktemp("devices")
    jobs = {n: _start(folder, f"devices{n}", n, "single") for n in (1, 4)}
    return {n: _finish(job) for n, job in jobs.items()}


def _same(a, b, *, atol=0.0):
    assert len(a) == len(b)
    for (pa, ca, ea, sa, ka), (pb, cb, eb, sb, kb) in zip(a, b):
        if atol == 0.0:
            assert np.array_equal(pa, pb) and np.array_equal(ca, cb) and ea == eb
        else:
            np.testing.assert_allclose(pa, pb, rtol=0, atol=atol)
            np.testing.assert_allclose(ca, cb, rtol=0, atol=atol)
            assert ea == pytest.approx(eb, rel=1e-12)
        assert (sa, ka) == (sb, kb)


def test_four_devices_relax_and_search_like_one(runs):
    single, four = runs[1], runs[4]
    assert (single["devices"], four["devices"]) == (1, 4)
    assert single["placed"] == []  # one device: no mesh
    assert four["placed"] and set(four["placed"]) == {4}  # every slot array split 4 ways
    # it relaxed: many steps, converged, forces not trivially zero at the start
    assert all(k for *_, k in single["lj"]) and min(s for _, _, _, s, _ in single["lj"]) > 20
    _same(single["lj"], four["lj"])  # serial schedule (CPU): bit for bit
    # Stillinger-Weber, EAM, Buckingham + Ewald and the ML potential: bit for bit too
    # (their kernels multiply by reciprocals where XLA would rewrite a division in one
    # program and not in the other; see jcsp.relax.kernel)
    for name in ("sw", "eam", "ionic", "ml"):
        _same(single[name], four[name])
        assert sum(s for _, _, _, s, _ in single[name]) > 20, name
    (one, h1, n1), (other, h4, n4) = single["sw_search"], four["sw_search"]
    assert n1 == n4 == 12 and np.array_equal(h1, h4)
    _same(one, other)
    assert single["grown"] >= 1 and four["grown"] == single["grown"]  # lists regrown
    _same(single["lj_grown"], four["lj_grown"], atol=1e-12)  # energies: last bit
    assert sum(s for _, _, _, s, _ in single["sw"]) > 100
    # vmapped schedule (accelerators): one slot per device against four on one; XLA
    # vectorises the two batch widths differently, so equal to the last bits
    _same(single["lj_vmap"], four["lj_vmap"], atol=1e-12)
    for algorithm in ("ga", "random"):
        (one, h1, n1), (other, h4, n4) = single[algorithm], four[algorithm]
        assert n1 == n4 == 16 and np.array_equal(h1, h4)
        _same(one, other)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_work_and_return_the_single_process_results(runs, tmp_path):
    single = runs[1]
    address = f"127.0.0.1:{_free_port()}"
    jobs = [_start(tmp_path, f"rank{k}", 1, "process", address, str(k)) for k in range(2)]
    ranks = [_finish(job) for job in jobs]
    assert [r["process"] for r in ranks] == [0, 1]
    assert [r["cache"].rsplit("/", 2)[-2:] for r in ranks] == [
        ["jax-cache-rank0", "process-0"], ["jax-cache-rank1", "process-1"]]
    assert all(r["raised"] for r in ranks)
    assert [r["shared"] for r in ranks] == [{"rank": 0}] * 2
    assert [r["kept"] for r in ranks] == [0, None]
    assert all("different structures" in r["refused"] for r in ranks)
    # each relaxed its own contiguous block of the 10 crystals, and got them all back
    assert [r["lj_relaxed_here"] for r in ranks] == [5, 5]
    assert single["lj_relaxed_here"] == 10
    # generations (ga: jcsp.relax) and walkers (random: relax_stream) split too
    for algorithm in ("ga", "random"):
        here = [r[algorithm + "_relaxed_here"] for r in ranks]
        assert sum(here) == single[algorithm + "_relaxed_here"] == 16 and max(here) < 16
    for r in ranks:
        _same(single["lj"], r["lj"])
        for algorithm in ("ga", "random"):
            assert r[algorithm][2] == single[algorithm][2]
            assert np.array_equal(r[algorithm][1], single[algorithm][1])
            _same(single[algorithm][0], r[algorithm][0])


def test_batches_round_to_the_device_count_and_blocks_cover_the_population():
    assert [sharding.round_batch(b, 4) for b in (1, 4, 5, 16, 17)] == [4, 4, 8, 16, 20]
    blocks = [sharding.process_block(10, k, 3) for k in range(3)]
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sharding.process_block(2, 2, 3).size == 0
    assert sharding.allgather_objects({"a": 1}) == [{"a": 1}]  # one process: as is
    mesh = sharding.population_mesh()
    assert mesh.axis_names == (sharding.AXIS,) and sharding.population_mesh() is mesh
    with pytest.raises(ValueError, match="n_devices"):
        sharding.population_mesh(0)


def test_launchers_are_detected_from_the_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_")) or name in (
                "JAX_COORDINATOR_ADDRESS", sharding.ENV_NUM_PROCESSES, sharding.ENV_PROCESS_ID):
            monkeypatch.delenv(name)
    assert sharding.detected_launcher() is None
    assert sharding.initialize() is False  # nothing to start on a laptop
    slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node[01-02]", SLURM_NTASKS="8",
                 SLURM_PROCID="3", SLURM_LOCALID="1")
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    assert sharding.detected_launcher() == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: a single process
    assert sharding.detected_launcher() is None
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.0.0.1:34911")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert sharding.detected_launcher() == "ompi"
    monkeypatch.delenv("OMPI_MCA_orte_hnp_uri")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv(sharding.ENV_NUM_PROCESSES, "2")
    assert sharding.detected_launcher() == "manual"
    monkeypatch.setenv(sharding.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match=sharding.ENV_NUM_PROCESSES):
        sharding.detected_launcher()
    with pytest.raises(ValueError, match="together"):
        sharding.initialize("127.0.0.1:1234")

"""JAX's persistent compilation cache as jcsp sets it up: two processes fill
JCSP_CACHE_DIR at once, a third reads their kernels back instead of compiling them,
JCSP_NO_CACHE leaves the directory untouched, and an unusable directory costs one warning,
not the run. Each case is a fresh Python process (the cache is set up at import)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

import jcsp
from jcsp import compile_cache

# A small jitted jcsp call (energy of fcc argon through the ASE calculator) that reports
# JAX's compilation-cache events: hits (read back) and writes (JAX records a write as a
# "cache miss").
SCRIPT = """
import json
import jax
from jax import monitoring
events = {}
def count(name, **kwargs):
    events[name] = events.get(name, 0) + 1
monitoring.register_event_listener(count)
import jcsp
from ase.build import bulk
atoms = bulk("Ar", "fcc", a=5.26)
lj = jcsp.potentials.LennardJones(epsilon=0.0104, sigma=3.4, cutoff=6.0)
atoms.calc = jcsp.JCSPCalculator(lj)
energy = atoms.get_potential_energy()
print("RESULT", json.dumps({
    "dir": None if jcsp.compile_cache.enabled() is None else str(jcsp.compile_cache.enabled()),
    "energy": float(energy),
    "hits": events.get("/jax/compilation_cache/cache_hits", 0),
    "writes": events.get("/jax/compilation_cache/cache_misses", 0),
    "requests": events.get("/jax/compilation_cache/compile_requests_use_cache", 0),
    "min_compile_time": jax.config.jax_persistent_cache_min_compile_time_secs,
    "min_entry_size": jax.config.jax_persistent_cache_min_entry_size_bytes}))
"""


def _run(tmp_path, processes=1, **env_vars):
    """Run SCRIPT in ``processes`` concurrent Python processes; their results and stderr."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JCSP_NO_CACHE", "JCSP_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")  # never the user's own cache
    env.update(env_vars)
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(processes)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
        out.append((json.loads(line[len("RESULT "):]), stderr))
    return out[0] if processes == 1 else out


def _entries(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*-cache") if p.is_file()) if path.exists() else []


def test_processes_share_the_cache(tmp_path):
    # Two processes fill an empty cache at the same time; a third reads every kernel back.
    cache = tmp_path / "cache"
    (a, _), (b, _) = _run(tmp_path, 2, JCSP_CACHE_DIR=str(cache))
    assert a["dir"] == b["dir"] == str(cache)
    # JAX's defaults skip kernels that compile in under 1 s: most of jcsp's CPU kernels
    assert a["min_compile_time"] == 0.0 and a["min_entry_size"] == -1
    written = _entries(cache)
    assert a["requests"] == b["requests"] >= 1
    for r in (a, b):  # each kernel either read back or compiled and written
        assert r["hits"] + r["writes"] == r["requests"]
    assert 1 <= len(written) <= a["writes"] + b["writes"]
    assert a["energy"] == b["energy"] != 0.0
    third, stderr = _run(tmp_path, JCSP_CACHE_DIR=str(cache))
    assert third["writes"] == 0  # nothing compiled anew
    assert third["hits"] == third["requests"] == a["requests"]
    assert "persistent compilation cache" not in stderr  # no unreadable entry
    assert _entries(cache) == written
    assert third["energy"] == a["energy"]


def test_no_cache_leaves_the_directory_alone(tmp_path):
    cache = tmp_path / "cache"
    result, _ = _run(tmp_path, JCSP_CACHE_DIR=str(cache), JCSP_NO_CACHE="1")
    assert result["dir"] is None
    assert result["hits"] == result["writes"] == 0
    assert not cache.exists()


def test_unusable_directory_warns_once_and_runs_uncached(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result, stderr = _run(tmp_path, JCSP_CACHE_DIR=str(blocker / "cache"))
    assert result["dir"] is None and result["writes"] == 0
    assert stderr.count("cannot use the compilation cache") == 1
    assert result["energy"] != 0.0


def test_cache_directory_from_the_environment():
    home = os.path.expanduser("~")
    assert compile_cache.cache_dir({}) == Path(home) / ".cache" / "jcsp" / "jax"
    assert compile_cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/jcsp/jax")
    assert compile_cache.cache_dir({"XDG_CACHE_HOME": "/x", "JCSP_CACHE_DIR": "/c"}) == Path("/c")
    for off in ("1", "true", "YES"):
        assert compile_cache.cache_dir({"JCSP_CACHE_DIR": "/c", "JCSP_NO_CACHE": off}) is None
    assert compile_cache.cache_dir({"JCSP_NO_CACHE": "0"}) == Path(home) / ".cache/jcsp/jax"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory maps from /proc")
def test_a_crowded_process_drops_its_executables_and_keeps_working():
    functions = [jax.jit(lambda x, k=k: jnp.sin(x) * k + jnp.cumsum(x)) for k in range(20)]
    x = jnp.arange(8.0)
    first = [np.asarray(f(x)) for f in functions]
    count, limit = compile_cache.memory_maps()
    assert 0 < count < limit
    assert not compile_cache.release_if_crowded(fraction=1.0, every=0.0)
    assert all(f._cache_size() == 1 for f in functions)
    assert compile_cache.release_if_crowded(fraction=0.0, every=0.0)
    assert all(f._cache_size() == 0 for f in functions)
    assert compile_cache.memory_maps()[0] < count
    assert not compile_cache.release_if_crowded(fraction=0.0, every=3600.0)  # throttled
    for f, y in zip(functions, first):
        np.testing.assert_array_equal(np.asarray(f(x)), y)


def test_the_relaxer_makes_room_before_it_runs_a_kernel(monkeypatch):
    square = jax.jit(lambda x: x * x)
    square(jnp.ones(3))
    assert square._cache_size() == 1
    monkeypatch.setattr(compile_cache, "memory_maps", lambda: (60000, 65530))
    monkeypatch.setitem(compile_cache._state, "checked", -float("inf"))
    lj = jcsp.potentials.LennardJones(epsilon=0.0104, sigma=3.4, cutoff=6.0)
    out = jcsp.relax([bulk("Ar", "fcc", a=5.3)], lj, fmax=1e-3)
    assert square._cache_size() == 0
    assert abs(out[0].cell.volume ** (1 / 3) * 4 ** (1 / 3) - 5.3) < 0.3

"""Benchmark: a search's relaxations per second against bare ``jcsp.relax`` on the same
structures (issue 21, "keep the device full").

For each population P (= relaxation slots), a random search (``algorithm="random"``,
steady state through ``Session.walk`` and ``relax_stream``, writing its database) runs
``budget`` relaxations; every candidate it hands to the relaxer is captured. The same
candidates are then relaxed by one bare ``jcsp.relax(..., batch_size=P)`` call with the
same potential, fmax, step limit and list headroom. Both run warm (a first search of the
same shapes compiles everything), so the ratio

    search throughput / relax throughput = t_relax / t_search

is the cost of everything a search adds: making candidates (random structures), repair,
recording (database, fingerprints, spglib, archive) and the steady-state bookkeeping,
the slots the walk leaves idle, and the fixed cost of a ``jcsp.search`` call (settings,
database, output files and plots). ``ratio_loop`` counts only the search loop
(``Session.walk``), which is what a long search approaches. The search's host time is
broken down by wrapping those functions with timers. Search and relax alternate
``--repeats`` times; each keeps its best time (the machine is shared).

Systems: ``lj13`` (13-atom Lennard-Jones clusters, all pairs), ``si8`` (8-atom
Stillinger-Weber silicon crystals, cell relaxed) and ``tio2x4`` (Ti4O8 crystals with
the Matsui-Akaogi rigid-ion model, Buckingham + Ewald cut at 10 Å, cell relaxed).

Run:   taskset -c 0 python experiments/bench_search_throughput.py --systems lj13
         (one core: Session.walk does not overlap; record search_throughput.json)
       python experiments/bench_search_throughput.py --systems lj13 \
         --record experiments/results/search_throughput_2cores.json   (two cores: overlap)
       taskset -c 0 python experiments/bench_search_throughput.py --systems si8 \
         --populations 16 --repeats 2 --record experiments/results/search_throughput_si8.json
       taskset -c 0 python experiments/bench_search_throughput.py --systems tio2x4 \
         --populations 16 --repeats 2 --record experiments/results/search_throughput_tio2.json
       (--quick: populations 16 and 64, small budgets, a minute, no record)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import collections
import functools
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jcsp  # noqa: E402
from jcsp.potentials import LennardJones, StillingerWeber  # noqa: E402
from jcsp.relax import driver  # noqa: E402
from jcsp.search import archive as archive_mod  # noqa: E402
from jcsp.search import database, run  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from records import write_record  # noqa: E402

SW_FILE = Path("/usr/share/lammps/potentials/Si.sw")
SYSTEMS = {
    "lj13": dict(composition="LJ13", cluster=True, cluster_symmetry=False),
    "si8": dict(composition="Si8", groups=None),
    # rutile-sized rigid-ion oxide cells: Matsui-Akaogi Buckingham + Ewald, 10 A cutoff
    "tio2x4": dict(composition="TiO2", formula_units=4),
}


def potential(system):
    if system == "lj13":
        return LennardJones(1.0, 1.0, None)
    if system == "tio2x4":
        from hard_crystals import TIO2_CUTOFF, matsui_akaogi
        return matsui_akaogi(TIO2_CUTOFF)
    return StillingerWeber.from_lammps(SW_FILE if SW_FILE.exists()
                                       else Path(jcsp.__file__).parent / "data" / "Si.sw")


class Timers:
    """Wall time spent inside wrapped functions (nested ones are counted in both)."""

    def __init__(self):
        self.total = collections.Counter()
        self.calls = collections.Counter()
        self._undo = []

    def wrap(self, owner, name, label):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.total[label] += time.perf_counter() - start
                self.calls[label] += 1

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def run_search(system, pot, population, budget, seed, out, timers=None, capture=None):
    """One random search; returns (seconds, result, captured candidates)."""
    fed = []
    stream = run.relax_stream

    def capturing(feed, *args, **kwargs):
        def logged(n):
            new = feed(n)
            if new:
                fed.extend(a.copy() for a in new)
            return new
        return stream(logged, *args, **kwargs)

    if capture:
        run.relax_stream = capturing
    if timers is not None:
        timers.wrap(run.Session, "walk", "walk (the whole search loop)")
        timers.wrap(run, "write_outputs", "outputs (ranking, CIF, plots)")
        timers.wrap(run.Session, "random_structures", "candidates (random structures)")
        timers.wrap(run.Session, "_prepare", "repair")
        timers.wrap(archive_mod.Archive, "add", "archive (fingerprints, spglib)")
        timers.wrap(database, "write_structures", "database writes")
        timers.wrap(driver._Bucket, "advance", "relaxation segments")
        timers.wrap(driver._Bucket, "load", "slot refills")
        timers.wrap(driver._Bucket, "harvest", "harvest (device to host)")
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        res = jcsp.search(SYSTEMS[system]["composition"], pot, algorithm="random",
                          budget=budget, population=population, seed=seed, out=out,
                          **{k: v for k, v in SYSTEMS[system].items()
                             if k != "composition" and v is not None})
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        run.relax_stream = stream
        if timers is not None:
            timers.restore()
    return seconds, cpu, res, fed


def run_relax(pot, structures, population, config, timers=None):
    if timers is not None:
        timers.wrap(driver._Bucket, "advance", "relaxation segments")
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        out = jcsp.relax(structures, pot, fmax=config.fmax, max_steps=config.max_steps,
                         pressure=config.pressure, batch_size=population,
                         headroom=run.HEADROOM)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        if timers is not None:
            timers.restore()
    return seconds, cpu, out


def measure(system, population, budget, repeats, seed, tmp):
    """Alternating timed searches and bare relaxations of the same candidates; each
    time is the best of ``repeats`` (the machine is shared: the least disturbed run is
    the closest to the cost of the work itself). Ratios from wall and from CPU time."""
    pot = potential(system)
    # warm-up: the same shapes (batch, tail batches, fingerprint chunks) compiled once
    _, _, _, fed = run_search(system, pot, population, 2 * population, seed + 1000,
                              tmp / f"warm{population}", capture=True)
    best = {}
    for rep in range(repeats):
        timers = Timers()
        out = tmp / f"s{population}-{rep}"
        t_search, c_search, res, fed = run_search(system, pot, population, budget, seed, out,
                                                  timers, capture=True)
        if rep == 0:  # compile what relax needs and the search did not (its tail shapes)
            run_relax(pot, fed, population, res.config)
        relax_timers = Timers()
        t_relax, c_relax, relaxed = run_relax(pot, fed, population, res.config, relax_timers)
        t_walk = timers.total["walk (the whole search loop)"]
        print(f"  {system} P={population} rep {rep}: search {res.n_relaxations / t_search:.1f}/s "
              f"(cpu {res.n_relaxations / c_search:.1f}/s), relax {len(fed) / t_relax:.1f}/s "
              f"(cpu {len(fed) / c_relax:.1f}/s), occupancy {res.occupancy:.2f}", flush=True)
        for k, v in sorted(timers.total.items(), key=lambda kv: -kv[1]):
            print(f"      {k:34s} {v:8.3f} s  ({1e3 * v / res.n_relaxations:.3f} ms/relaxation)")
        if not best or t_search < best["search_seconds"]:
            steps = sum(a.info["steps"] for a in database.read_all(
                database.open_run(out / "structures.db")) if not a.info.get("discarded"))
            best.update(
                search_seconds=t_search, walk_seconds=t_walk,
                search_host_seconds={k: round(v, 4) for k, v in timers.total.items()},
                search_host_ms_per_relaxation={
                    k: round(1e3 * v / res.n_relaxations, 4) for k, v in timers.total.items()},
                search_occupancy=res.occupancy, steps_search=steps,
                n_relaxations=res.n_relaxations, n_fed=len(fed),
                search_setup_seconds=round(
                    t_search - t_walk - timers.total["outputs (ranking, CIF, plots)"], 4))
        best["search_cpu_seconds"] = min(best.get("search_cpu_seconds", 1e30), c_search)
        if t_relax < best.get("relax_seconds", 1e30):
            best.update(relax_seconds=t_relax, steps_relax=sum(a.info["steps"] for a in relaxed),
                        relax_segment_seconds=round(relax_timers.total["relaxation segments"],
                                                    4))
        best["relax_cpu_seconds"] = min(best.get("relax_cpu_seconds", 1e30), c_relax)
    n = best["n_relaxations"]
    best.update(population=population, budget=budget,
                search_per_second=n / best["search_seconds"],
                relax_per_second=best["n_fed"] / best["relax_seconds"])
    best["ratio"] = best["search_per_second"] / best["relax_per_second"]
    best["ratio_loop"] = (n / best["walk_seconds"]) / best["relax_per_second"]
    best["ratio_cpu"] = ((n / best["search_cpu_seconds"])
                         / (best["n_fed"] / best["relax_cpu_seconds"]))
    print(f"  -> ratio {best['ratio']:.3f} (loop {best['ratio_loop']:.3f}, cpu "
          f"{best['ratio_cpu']:.3f})", flush=True)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["lj13", "si8"], choices=SYSTEMS)
    parser.add_argument("--populations", nargs="+", type=int, default=[16, 1024])
    parser.add_argument("--waves", type=int, default=None,
                        help="budget = waves x population (default: 16 for P <= 64, else 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                        help="Session.walk's overlap of host work and relaxation")
    parser.add_argument("--record", default=str(Path(__file__).parent / "results"
                                                / "search_throughput.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.populations, args.repeats = [16, 64], 1
    run.OVERLAP = {"auto": None, "on": True, "off": False}[args.overlap]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for system in args.systems:
            for population in args.populations:
                waves = args.waves or (16 if population <= 64 else 4)
                if args.quick:
                    waves = 4
                rows.append(dict(system=system, **measure(
                    system, population, waves * population, args.repeats, args.seed,
                    Path(tmp))))
    print(f"\n{'system':6s} {'P':>5s} {'budget':>6s} {'search/s':>9s} {'relax/s':>9s} "
          f"{'ratio':>6s} {'loop':>6s} {'cpu':>6s}")
    for r in rows:
        print(f"{r['system']:6s} {r['population']:5d} {r['budget']:6d} "
              f"{r['search_per_second']:9.1f} {r['relax_per_second']:9.1f} {r['ratio']:6.3f} "
              f"{r['ratio_loop']:6.3f} {r['ratio_cpu']:6.3f}")
    if not args.quick:
        write_record(args.record, settings=dict(
            systems=args.systems, populations=args.populations, repeats=args.repeats,
            seed=args.seed, waves=args.waves, algorithm="random", fmax=0.01,
            overlap=args.overlap, backend=jax.default_backend(),
            max_steps=2000, dtype="float64",
            affinity=sorted(os.sched_getaffinity(0))), results=dict(rows=rows),
            notes="CPU timings on a 2-core machine shared with other jobs, pinned to one "
                  "core; each time is the best of the repeats (alternating search and "
                  "relax). ratio = (search relaxations/s) / (bare jcsp.relax relaxations/s) "
                  "on the same candidates, same batch size, wall time of the whole "
                  "jcsp.search call; ratio_loop: the search loop (Session.walk) only; "
                  "ratio_cpu: from process CPU time (less sensitive to the other jobs).")


if __name__ == "__main__":
    main()

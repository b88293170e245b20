"""Basin and minima hopping: the acceptance rule, the step feedback, restarts from the
best minima, and small Lennard-Jones searches from plain (non-symmetric) starts.

Energies of LJ_N are checked against the Cambridge Cluster Database (Wales & Doye,
J. Phys. Chem. A 101, 5111 (1997)): LJ13 -44.326801 epsilon (the icosahedron).
"""

import math

import jax
import numpy as np
import pytest

import jcsp
from jcsp.potentials import LennardJones
from jcsp.search.config import SearchConfig
from jcsp.search.drivers import basin
from jcsp.search.run import Session

jax.config.update("jax_enable_x64", True)

LJ = LennardJones(1.0, 1.0, None)
LJ13 = -44.326801


def test_metropolis_accepts_with_boltzmann_probability():
    rng = np.random.default_rng(0)
    u = rng.uniform(size=20000)
    kt = 0.8
    for dh, expected in ((kt * math.log(2.0), 0.5), (kt, math.exp(-1.0)), (3 * kt, 0.0498)):
        rate = np.mean([basin.metropolis(-10.0, -10.0 + dh, kt, x) for x in u])
        assert rate == pytest.approx(expected, abs=0.01)
    assert all(basin.metropolis(-10.0, -10.5, kt, x) for x in u[:100])  # downhill: always
    assert basin.metropolis(-10.0, -10.0, kt, 0.999)  # equal: always
    assert not basin.metropolis(-10.0, math.inf, kt, 0.0)  # failed relaxation: never
    assert not basin.metropolis(-10.0, math.nan, kt, 0.0)


def _session(n=13, budget=64, seed=0, **options):
    config = SearchConfig.from_keywords(f"LJ{n}", algorithm="basin", budget=budget,
                                        cluster=True, seed=seed, cluster_symmetry=None,
                                        population=8, options=options)
    return Session(config, LJ), config.driver_config


def _relaxed(h, uid=None):
    from ase import Atoms
    atoms = Atoms("X2", positions=[[0, 0, 0], [1.12, 0, 0]])
    atoms.info.update(enthalpy=float(h), energy=float(h), failed=False, uid=uid or f"h{h}")
    return atoms


def test_step_feedback_settles_at_the_target_acceptance():
    """A synthetic landscape where bigger steps are accepted less often (acceptance
    exp(-step / 0.5 Å)): the per-walker feedback must drive the acceptance to the target
    whatever the starting step, and keep each walker's step its own."""
    session, config = _session()
    for target in (0.3, 0.5, 0.7):
        cfg = config.replace(acceptance=target, step=3.0)  # start far too large
        walkers = basin.Walkers(session, cfg, 3)
        for w in range(3):
            assert walkers.update(w, _relaxed(-40.0), 0.5)  # the start is taken as it is
        assert walkers.kt == pytest.approx(basin.TEMPERATURE * 40.0 / 2)  # x |H| per atom
        rng = np.random.default_rng(1)
        accepted = []
        for it in range(6000):
            for w in range(3):
                p = math.exp(-walkers.step[w] / 0.5)
                # an uphill candidate that Metropolis accepts with probability p
                dh = -walkers.kt[w] * math.log(p)
                walkers.displaced[w] = True  # as after a displacement move
                took = walkers.update(w, _relaxed(walkers.h[w] + dh), float(rng.uniform()))
                walkers.h[w] = -40.0  # stay on the same level: only the step matters
                if it >= 3000:
                    accepted.append(took)
        assert np.mean(accepted) == pytest.approx(target, abs=0.03)
        # the steady step is where exp(-step / 0.5) = target
        assert np.median(walkers.step) == pytest.approx(-0.5 * math.log(target), rel=0.25)
    # outcomes of other moves (surface moves, restarts) leave the step alone
    walkers.displaced[0] = False
    before = walkers.step[0]
    walkers.update(0, _relaxed(walkers.h[0] + 100.0), 0.5)  # rejected
    assert walkers.step[0] == before


def _minima(session, n, count=6, seed=0):
    """``count`` relaxed random LJ_n clusters, archived in ``session``."""
    from jcsp.search import generate
    found = jcsp.relax(generate.random_clusters({"LJ": n}, count, seed=seed), LJ)
    for k, atoms in enumerate(found):
        atoms.info["uid"] = f"start{k}"
    session.archive.add(found)
    return found


def test_stale_walkers_restart_from_the_best_minima():
    session, config = _session(reset_after=5, elite=2)
    starts = _minima(session, 13)
    best = sorted(a.info["enthalpy"] for a in starts)[:2]
    walkers = basin.Walkers(session, config, len(starts))
    for w, atoms in enumerate(starts):
        walkers.update(w, atoms, 0.5)
    worst = int(np.argmax(walkers.h))
    assert walkers.h[worst] > best[1]
    walkers.stale[worst] = 5
    rng = np.random.default_rng(0)
    candidate, parents = walkers.advance(worst, None, rng)
    assert walkers.restarts == 1
    assert walkers.h[worst] == pytest.approx(best[0]) or \
        walkers.h[worst] == pytest.approx(best[1])  # now in one of the two lowest minima
    assert parents == [walkers.atoms[worst].info["uid"]]
    assert walkers.stale[worst] == 0 and len(candidate) == 13
    for w in range(len(starts)):  # the others keep their own structures
        if w != worst:
            assert walkers.h[w] == starts[w].info["enthalpy"]
            assert walkers.advance(w, None, rng)[1] == [f"start{w}"]
    assert walkers.restarts == 1


def test_random_restarts_take_a_fresh_structure():
    session, config = _session(reset_after=5, restart="random")
    starts = _minima(session, 13, count=2)
    walkers = basin.Walkers(session, config, 2)
    for w, atoms in enumerate(starts):
        walkers.update(w, atoms, 0.5)
    walkers.stale[0] = 5
    fresh, parents = walkers.advance(0, None, np.random.default_rng(0))
    assert walkers.atoms[0] is None and walkers.h[0] == math.inf and parents == []
    assert len(fresh) == 13 and "uid" not in fresh.info  # a new random cluster


def test_basin_finds_lj13_from_plain_starts():
    hits = []
    for seed in (0, 1):
        res = jcsp.search("LJ13", LJ, algorithm="basin", budget=160, cluster=True,
                          cluster_symmetry=None, seed=seed, population=8,
                          target=LJ13 / 13)
        assert res.n_failed <= 0.05 * res.n_relaxations
        hits.append(res.first_hit(LJ13 / 13))
        assert res.best.info["energy"] == pytest.approx(LJ13, abs=2e-3)
    assert all(h is not None and h <= 160 for h in hits), hits


def test_minima_hopping_feedback_follows_goedecker():
    from jcsp.search.drivers import minima

    session, _ = _session()
    cfg = minima.Config()
    hop = minima.Hoppers(session, cfg, 1)

    def found(h, entry):
        atoms = _relaxed(h, uid=f"e{entry}")
        atoms.info["entry"] = entry
        return atoms

    hop.update(0, found(-40.0, 1))  # the start: per-atom scale 20 eV
    assert hop.kt[0] == pytest.approx(cfg.temperature * 20.0)
    assert hop.e_diff[0] == pytest.approx(cfg.e_diff * 20.0)
    kt, ed = hop.kt[0], hop.e_diff[0]
    hop.update(0, found(-40.0, 1))  # the same minimum again: hotter
    assert hop.kt[0] == pytest.approx(kt * cfg.beta1) and hop.e_diff[0] == ed
    kt = hop.kt[0]
    hop.update(0, found(-39.0, 2))  # new, within e_diff above: accepted, cooler
    assert hop.h[0] == -39.0 and hop.kt[0] == pytest.approx(kt * cfg.beta3)
    assert hop.e_diff[0] == pytest.approx(ed * cfg.alpha1)
    kt, ed = hop.kt[0], hop.e_diff[0]
    hop.update(0, found(-39.0 + 2 * ed, 3))  # new but too high: refused
    assert hop.h[0] == -39.0 and hop.e_diff[0] == pytest.approx(ed * cfg.alpha2)
    assert hop.kt[0] == pytest.approx(kt * cfg.beta3)
    kt = hop.kt[0]
    hop.update(0, found(-40.0, 1))  # a minimum visited before: hotter, and taken
    assert hop.kt[0] == pytest.approx(kt * cfg.beta2) and hop.h[0] == -40.0


def test_minima_hopping_finds_lj13_from_plain_starts():
    res = jcsp.search("LJ13", LJ, algorithm="minima", budget=120, cluster=True,
                      cluster_symmetry=None, seed=0, population=8, target=LJ13 / 13)
    hit = res.first_hit(LJ13 / 13)
    assert hit is not None and hit > 1  # found, by hopping
    assert res.best.info["energy"] == pytest.approx(LJ13, abs=2e-3)
    assert res.best.info["parents"]  # an escape from a walker's minimum


def test_fresh_proposals_only_by_default_with_symmetric_cluster_starts():
    session, config = _session()  # plain starts: no fresh proposals unless asked
    assert basin.Walkers(session, config, 1).fresh == 0.0
    sym = SearchConfig.from_keywords("LJ13", algorithm="basin", budget=8, cluster=True,
                                     population=8)
    assert basin.Walkers(Session(sym, LJ), sym.driver_config, 1).fresh == basin.FRESH
    starts = _minima(session, 13, count=1)
    walkers = basin.Walkers(session, config.replace(fresh=1.0), 1)
    walkers.update(0, starts[0], 0.5)
    candidate, parents = walkers.advance(0, None, np.random.default_rng(0))
    assert parents == [] and not walkers.displaced[0]  # unrelated to the walker's minimum
    assert ops_min_distance(candidate) > 0.5 and \
        np.abs(candidate.positions - starts[0].positions).max() > 0.5


def ops_min_distance(atoms):
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    return d[np.triu_indices(len(atoms), 1)].min()


def test_minima_hopping_fresh_share_follows_the_starts():
    from jcsp.search.drivers import minima

    session, _ = _session()
    assert minima.Hoppers(session, minima.Config(), 1).fresh == 0.0
    sym = SearchConfig.from_keywords("LJ13", algorithm="minima", budget=8, cluster=True,
                                     population=8)
    assert minima.Hoppers(Session(sym, LJ), sym.driver_config, 1).fresh == basin.FRESH


@pytest.mark.parametrize("algorithm", ["basin", "minima", "anneal"])
def test_hopping_drivers_take_the_searchs_named_moves(algorithm, monkeypatch):
    """moves={"rattle": 1.0}: every proposal made from a parent is the named move."""
    from jcsp.search import moves

    calls = []
    rattle = moves.MOVES["rattle"]

    def counting(session, atoms, rng):
        calls.append(atoms.info["uid"])
        return rattle(session, atoms, rng)

    monkeypatch.setitem(moves.MOVES, "rattle", counting)
    res = jcsp.search("LJ7", LJ, algorithm=algorithm, budget=24, cluster=True, seed=0,
                      population=4, cluster_symmetry=None, moves={"rattle": 1.0})
    assert res.n_relaxations == 24
    made = [a for a in res.structures if a.info.get("parents")]
    assert made and all(p in calls for a in made for p in a.info["parents"])
    if algorithm != "anneal":  # walkers: every candidate after the 4 starts
        assert len(calls) >= 20

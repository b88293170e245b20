"""The search pipeline: streaming relaxation, steady-state walkers, candidate repair.

- :func:`jcsp.relax.stream.relax_stream` gives every structure the numbers
  :func:`jcsp.relax` gives it with the same batch size, bit for bit, whatever the
  order and timing in which structures arrive (a slot's numbers never depend on the
  other slots), with no extra compilation, and flags invalid inputs as relax does.
- ``Session.walk`` refills freed slots at once, records every structure as
  ``evaluate`` does, and each walker's trajectory depends only on the seed and the
  walker (not on completion order).
- :mod:`jcsp.search.repair` pushes overlapping atoms apart, rejects flat cells, and
  no search dies on a pathological candidate.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import jcsp
from jcsp.potentials import LennardJones
from jcsp.relax import driver
from jcsp.relax.stream import relax_stream
from jcsp.search.generate import random_clusters

LJ = LennardJones(1.0, 1.0, None)
# periodic LJ argon with a cutoff: exercises neighbor lists and cell relaxation
AR = LennardJones(0.0104, 3.4, 6.0, truncation="smooth")


def _same(a, b):
    """Bit-for-bit equal relaxations."""
    assert a.info["steps"] == b.info["steps"] and a.info["converged"] == b.info["converged"]
    assert a.info["enthalpy"] == b.info["enthalpy"] and a.info["energy"] == b.info["energy"]
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell[:], b.cell[:])
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())


def _drip(structures, sizes):
    """A feed that hands out ``sizes[k]`` structures on its k-th call (at most what is
    free), then None."""
    todo = list(structures)
    calls = iter(sizes)

    def feed(n_free):
        if not todo:
            return None
        take = min(n_free, next(calls, n_free), len(todo))
        out = todo[:take]
        del todo[:take]
        return out

    return feed


def _argon(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = bulk("Ar", "fcc", a=5.3, cubic=True)  # 4 atoms
        a.set_cell(a.cell[:] @ (np.eye(3) + 0.06 * rng.normal(size=(3, 3))), scale_atoms=True)
        a.rattle(0.1, seed=int(rng.integers(1 << 30)))
        out.append(a)
    return out


@pytest.mark.parametrize("kind", ["cluster", "crystal"])
def test_stream_equals_relax_bit_for_bit(kind):
    """Structures fed one, two or three at a time (with and without overlapping the
    caller's work with the relaxation), in slots other than the ones relax
    gives them, relax exactly as in one ``jcsp.relax`` call with the same batch size;
    the stream compiles nothing new."""
    if kind == "cluster":
        structures, pot = random_clusters({"LJ": 9}, 11, seed=4, symmetry=None), LJ
    else:
        structures, pot = _argon(11, 0), AR
    reference = jcsp.relax(structures, pot, fmax=1e-3, batch_size=4)
    compiled = driver.TRACE_COUNTS["segment"]
    for overlap in (False, True):
        stats = {}
        got = {}
        for k, atoms in relax_stream(_drip(structures, [1, 3, 2, 1, 3]), pot, fmax=1e-3,
                                     batch_size=4, stats=stats, overlap=overlap):
            assert k not in got
            got[k] = atoms
        assert sorted(got) == list(range(len(structures)))
        assert driver.TRACE_COUNTS["segment"] == compiled  # relax's kernel, reused
        for k, ref in enumerate(reference):
            _same(got[k], ref)
    steps = [a.info["steps"] for a in reference]
    assert min(steps) > 5 and len(set(steps)) > 3  # real, unequal relaxations
    assert all(a.info["converged"] for a in reference)
    assert 0 < stats["occupancy"] <= 1 and stats["segments"] > 1


def test_stream_refills_freed_slots_without_waiting():
    """A freed slot is refilled at once: with three slow structures and a stream of
    already relaxed (fast) ones behind a fourth slot, the fast ones come back (and the
    feed is asked again) while the slow ones of the first batch are still relaxing."""
    slow = random_clusters({"LJ": 9}, 3, seed=1, symmetry=None)
    fast = jcsp.relax(random_clusters({"LJ": 9}, 4, seed=2, symmetry=None), LJ, fmax=1e-4)
    structures = slow + fast
    asked = []

    def feed(n_free):
        asked.append(n_free)
        if not structures:
            return None
        out = structures[:n_free]
        del structures[:n_free]
        return out

    order = [k for k, _ in relax_stream(feed, LJ, fmax=1e-3, batch_size=4,
                                        steps_per_segment=20)]
    assert sorted(order) == list(range(7))
    assert asked[:3] == [4, 1, 1]  # one slot freed, refilled, freed again
    assert set(order[:4]) == {3, 4, 5, 6}  # every fast one before any slow one


def test_stream_flags_invalid_inputs_and_refuses_other_buckets():
    good = random_clusters({"LJ": 6}, 3, seed=0, symmetry=None)
    bad = good[0].copy()
    bad.positions[1] = bad.positions[0] + [0.01, 0, 0]
    out = dict(relax_stream(_drip([good[0], bad, good[1], good[2]], [4]), LJ, batch_size=4))
    assert out[1].info["invalid"] and out[1].info["failed"] and "overlap" in out[1].info["error"]
    assert not any(out[k].info["failed"] for k in (0, 2, 3))
    reference = jcsp.relax([good[0], bad, good[1], good[2]], LJ, batch_size=4)
    for k in (0, 2, 3):
        _same(out[k], reference[k])
    big = random_clusters({"LJ": 13}, 1, seed=0, symmetry=None)
    with pytest.raises(ValueError, match="one bucket"):
        list(relax_stream(_drip([good[0], big[0]], [1, 1]), LJ, batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        list(relax_stream(_drip(good, [1]), LJ, batch_size=0))
    with pytest.raises(ValueError, match="free slots"):
        list(relax_stream(lambda n: good * 2, LJ, batch_size=2))


# --- candidate repair -----------------------------------------------------------------
def _closest_ratio(atoms):
    """Smallest distance / (sum of covalent radii) over pairs and periodic images, by
    ASE's neighbor list (an independent search of the images)."""
    from ase.neighborlist import neighbor_list

    from jcsp.search.generate import radius

    r = np.array([radius(s) if s != "X" else radius("LJ")
                  for s in atoms.get_chemical_symbols()])
    i, j, d = neighbor_list("ijd", atoms, 4.0 * r.max(), self_interaction=False)
    return float((d / (r[i] + r[j])).min())


def test_repair_pushes_atoms_apart_in_clusters_and_crystals():
    from jcsp.search.repair import TARGET, THRESHOLD, repair
    from jcsp.search.generate import random_crystals

    cluster = random_clusters({"LJ": 13}, 1, seed=0, symmetry=None)[0]
    cluster.positions[1] = cluster.positions[0]                 # coincident
    cluster.positions[2] = cluster.positions[0] + [0.09, 0, 0]  # the 0.09 Å
    cluster.center(vacuum=5.0)
    assert _closest_ratio(cluster) < 0.1
    fixed, note = repair(cluster)
    assert fixed is not None and fixed.info["repaired"] >= 1 and "pushed" in note
    assert _closest_ratio(fixed) >= THRESHOLD
    # untouched atoms stay where they were
    far = np.linalg.norm(cluster.positions - cluster.positions[0], axis=1) > 1.5
    assert far.any()
    np.testing.assert_array_equal(fixed.positions[far], cluster.positions[far])

    crystal = random_crystals({"Mg": 4, "O": 4}, 1, seed=3, groups=[225, 221, 216, 186])[0]
    ok, note = repair(crystal)
    assert ok is crystal and note == ""  # nothing too close: returned as is
    bad = crystal.copy()
    # atom 1 onto atom 0's image one cell over, 0.1 Å off (only the images overlap)
    bad.positions[1] = bad.positions[0] + bad.cell[0] + [0.1, 0.0, 0.0]
    assert _closest_ratio(bad) < 0.1
    fixed, _ = repair(bad)
    assert fixed is not None
    np.testing.assert_array_equal(fixed.cell[:], bad.cell[:])  # the cell is kept
    assert THRESHOLD <= _closest_ratio(fixed) <= TARGET + 1e-9  # the pair, at TARGET
    np.testing.assert_array_equal(fixed.positions[2:], bad.positions[2:])


def test_repair_rejects_what_cannot_be_fixed():
    from jcsp.search.repair import repair

    flat = bulk("Si", "diamond", a=5.43)
    flat.set_cell(flat.cell[:] * [1.0, 1.0, 0.05], scale_atoms=True)
    fixed, note = repair(flat)
    assert fixed is None and "flat cell" in note
    nan = random_clusters({"LJ": 5}, 1, seed=0, symmetry=None)[0]
    nan.positions[0] = np.nan
    assert repair(nan) == (None, "non-finite coordinates")
    # 16 silicon atoms in a 2.5 Å cube: every plane spacing is fine, but they cannot be
    # 0.6 x 2.22 Å apart (the cube holds about 5)
    crowded = Atoms("Si16", cell=np.eye(3) * 2.5, pbc=True,
                    scaled_positions=np.random.default_rng(0).uniform(size=(16, 3)))
    fixed, note = repair(crowded)
    assert fixed is None and "after 50 passes" in note


# --- Session.walk -----------------------------------------------------------------------
def _session(**kwargs):
    from jcsp.search import SearchConfig
    from jcsp.search.run import Session

    settings = dict(cluster=True, budget=12, population=4, seed=1, cluster_symmetry=False)
    settings.update(kwargs)
    return Session(SearchConfig("LJ9", **settings), LJ)


@pytest.mark.parametrize("overlap", [False, True])
def test_walk_refills_freed_slots_and_records_like_evaluate(overlap, monkeypatch):
    """Walker 0 proposes already relaxed structures (fast), the others random clusters
    (slow): walker 0 gets its next candidates while the others are still relaxing. Every
    structure is recorded as evaluate records it, under the uid of its walker and step,
    with the numbers jcsp.relax gives its candidate, and each walker's candidates come
    from its own (seed, walker, step) stream."""
    from jcsp.search import run
    from jcsp.search.database import make_uid

    monkeypatch.setattr(run, "OVERLAP", overlap)
    session = _session()
    relaxed_start = jcsp.relax(random_clusters({"LJ": 9}, 1, seed=7, symmetry=None), LJ)[0]
    issued = {}   # uid -> candidate
    calls = []

    def advance(done):
        calls.append([(w, None if a is None else a.info["uid"]) for w, a in done])
        out = []
        for w, atoms in done:
            k = sum(u.endswith(f"-i{w}") for u in issued)
            if w == 0:
                candidate = relaxed_start.copy()
                session.walker_rng(w)  # drawn, unused: the stream is still per step
            else:
                candidate = session.random_structures(1, session.walker_rng(w))[0]
                again = session.random_structures(
                    1, np.random.default_rng([session.config.seed, w, k]))[0]
                np.testing.assert_array_equal(candidate.positions, again.positions)
            issued[make_uid(1, "random", k, w)] = candidate
            parents = [] if atoms is None else [atoms.info["uid"]]
            out.append((candidate, parents))
        return out

    session.walk(4, advance)
    assert calls[0] == [(w, None) for w in range(4)]  # first: one start per walker
    assert session.n_relaxations == 12 == len(session.history)
    assert len(issued) >= 12  # proposals past the budget are dropped
    finished = [uid for call in calls[1:] for _, uid in call]
    assert set(finished) <= set(issued) and len(finished) == len(set(finished))
    steps = {w: sum(u.endswith(f"-i{w}") for u in finished) for w in range(4)}
    assert steps[0] > max(steps[w] for w in (1, 2, 3))  # refilled without waiting
    # recorded as evaluate records: archive entries, info, and relax's numbers
    entries = session.archive.structures
    assert entries and all(a.info["driver"] == "random" for a in entries)
    walker1 = [a for a in entries if a.info["uid"].endswith("-i1")]
    assert walker1
    for atoms in walker1:  # the numbers jcsp.relax gives the same candidate
        centred = issued[atoms.info["uid"]].copy()
        centred.positions -= centred.positions.mean(0)
        reference = jcsp.relax([centred], LJ, fmax=session.config.fmax, batch_size=4,
                               max_steps=session.config.max_steps)[0]
        assert atoms.info["energy"] == reference.info["energy"]
        np.testing.assert_array_equal(atoms.positions, reference.positions)
    assert min(a.info["enthalpy"] for a in entries) / 9 == session.history[-1]


def test_walk_budget_counts_issued_candidates_and_target_stops_at_once():
    session = _session(budget=10)
    n_advanced = []

    def advance(done):
        n_advanced.append(len(done))
        return [(session.random_structures(1, session.walker_rng(w))[0], []) for w, _ in done]

    session.walk(4, advance)
    assert session.n_relaxations == 10 and session.remaining == 0
    hit = -20.0 / 9  # reached by nearly every relaxed LJ9 cluster (minimum -24.113)
    session = _session(budget=40, target=hit)
    session.walk(4, advance)
    assert session.n_relaxations < 8 and session.history[-1] <= hit + 1e-6


def test_walk_atom_energies_are_computed_once_per_batch():
    """atom_energies=True: per-atom energies of a batch of finished structures are
    computed in one call before advance; inside advance they are cache hits."""
    session = _session(budget=8)
    calls = []
    compute = session._atom_energies

    def counting(structures):
        calls.append(len(structures))
        return compute(structures)

    session._atom_energies = counting

    def advance(done):
        before = len(calls)
        ok = [a for _, a in done if a is not None and not a.info["failed"]]
        if ok:
            energies = session.atom_energies(ok)
            for atoms, e in zip(ok, energies):
                assert e.sum() == pytest.approx(atoms.info["energy"], rel=1e-9)
        assert len(calls) == before  # cache hits only
        return [(session.random_structures(1, session.walker_rng(w))[0], []) for w, _ in done]

    session.walk(4, advance, atom_energies=True)
    # the 4 starts finish first and are advanced (4 more candidates spend the budget);
    # the last 4 are recorded but nobody asks for their successors
    assert sum(calls) == 4 and session.n_relaxations == 8


def test_walk_and_evaluate_do_not_mix():
    session = _session()
    session.evaluate(0, random_clusters({"LJ": 9}, 2, seed=0, symmetry=None))
    with pytest.raises(RuntimeError, match="both"):
        session.walk(2, lambda done: [None for _ in done])

"""The search pipeline: streaming relaxation, steady-state walkers, candidate repair.

- :func:`jcsp.relax.driver.relax_stream` gives every structure the numbers
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
from jcsp.relax.driver import relax_stream
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
    """Structures fed one, two or three at a time, in slots other than the ones relax
    gives them, relax exactly as in one ``jcsp.relax`` call with the same batch size;
    the stream compiles nothing new."""
    if kind == "cluster":
        structures, pot = random_clusters({"LJ": 9}, 11, seed=4, symmetry=None), LJ
    else:
        structures, pot = _argon(11, 0), AR
    reference = jcsp.relax(structures, pot, fmax=1e-3, batch_size=4)
    compiled = driver.TRACE_COUNTS["segment"]
    stats = {}
    got = {}
    for k, atoms in relax_stream(_drip(structures, [1, 3, 0, 2, 1]), pot, fmax=1e-3,
                                 batch_size=4, stats=stats):
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

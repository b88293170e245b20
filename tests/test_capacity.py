"""Capacity: list shapes that hold every neighbor (checked against ASE's neighbor list),
grow and never shrink, and a one-shot evaluation repeated until it fits."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLJ
from ase.neighborlist import neighbor_list

from jcsp import neighbors as nl
from jcsp.capacity import Capacity, rung
from jcsp.derivatives import evaluate
from jcsp.potentials import LennardJones
from jcsp.structures import population
from jcsp.structures.convert import from_atoms

POT = LennardJones(0.0104, 3.4, 6.0, truncation="smooth")


def _ase_max_count(atoms, cutoff):
    i = neighbor_list("i", atoms, cutoff)
    return int(np.bincount(i, minlength=len(atoms)).max())


def test_the_ladder_is_coarse_and_monotone():
    values = [rung(c) for c in range(1, 300)]
    assert all(v >= c for v, c in zip(values, range(1, 300)))
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert sorted(set(values))[:10] == [4, 8, 12, 16, 24, 32, 48, 64, 96, 128]


def test_fit_holds_every_neighbor_and_never_shrinks():
    dense = bulk("Ar", "fcc", a=4.0, cubic=True)
    loose = bulk("Ar", "fcc", a=5.6, cubic=True)
    cap = Capacity(POT, (True, True, True), skin=1.0)
    assert cap.fit(from_atoms([loose]))
    first = cap.lists
    assert first.skin.capacity >= _ase_max_count(loose, 7.0)
    assert first.capacity >= _ase_max_count(loose, 6.0)
    assert cap.fit(from_atoms([dense]))  # denser: more room
    assert cap.lists.skin.capacity >= _ase_max_count(dense, 7.0) > first.skin.capacity
    grown = cap.lists
    assert not cap.fit(from_atoms([loose]))  # never shrinks, nothing new to compile
    assert cap.lists == grown


def test_run_repeats_until_the_lists_fit():
    """Start from a spec far too small: the evaluation overflows, the capacity grows,
    and the final energy and forces are ASE's Lennard-Jones (shifted to zero at the
    cutoff, as ``truncation="shift"``)."""
    lj = LennardJones(0.0104, 3.4, 6.0, truncation="shift")
    atoms = bulk("Ar", "fcc", a=5.0, cubic=True)
    atoms.rattle(0.05, seed=3)
    pop = from_atoms([atoms])
    cap = Capacity(lj, (True, True, True))
    cap.fit(pop)
    cap.lists = cap.lists._replace(skin=nl.NeighborSpec(lj.cutoff, 2, (1, 1, 1)))
    calls = []

    def energy(spec, sized):
        calls.append(spec)
        return evaluate(sized, sized.params, pop.frac[0], pop.cell[0], pop.species[0],
                        pop.mask[0], spec, pop.pbc)

    res = cap.run(energy, pop.cell)
    assert len(calls) >= 2 and not bool(res.overflow)
    assert cap.spec.capacity >= _ase_max_count(atoms, 6.0)
    ref = atoms.copy()
    ref.calc = AseLJ(epsilon=0.0104, sigma=3.4, rc=6.0, smooth=False)
    assert float(res.energy) == pytest.approx(ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(np.asarray(res.forces)[:4], ref.get_forces(), atol=1e-10)
    assert abs(float(res.energy)) > 0.01 and np.abs(ref.get_forces()).max() > 1e-3


def test_place_puts_structures_into_chosen_slots():
    pop = from_atoms([bulk("Ar", "fcc", a=5.3), bulk("Ar", "fcc", a=5.6)])
    out = population.place(pop, [3, 1], 5)
    assert out.batch_size == 5
    np.testing.assert_array_equal(np.asarray(out.cell[3]), np.asarray(pop.cell[0]))
    np.testing.assert_array_equal(np.asarray(out.cell[1]), np.asarray(pop.cell[1]))
    assert not np.asarray(out.mask)[[0, 2, 4]].any()
    np.testing.assert_array_equal(np.asarray(out.cell[0]), np.eye(3) * 10.0)
    with pytest.raises(ValueError, match="2 structures need 2 slots"):
        population.place(pop, [0], 5)

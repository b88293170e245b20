"""Neighbor lists against ASE's (an independent implementation) on hard cells."""

import dataclasses

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

import jcsp  # noqa: F401  (enables float64)
from jcsp import neighbors as nl
from jcsp.capacity import Capacity, ListSpec
from jcsp.potentials import LennardJones
from lammps_ref import random_structure


def _triples(nbrs, n):
    idx, shift, mask = (np.asarray(x) for x in (nbrs.idx, nbrs.shift, nbrs.mask))
    out = set()
    for i in range(n):
        for k in np.nonzero(mask[i])[0]:
            out.add((i, int(idx[i, k]), *np.rint(shift[i, k]).astype(int)))
    return out


def _ase_triples(atoms, cutoff):
    i, j, s = neighbor_list("ijS", atoms, cutoff)
    return {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s)}


@pytest.mark.parametrize("seed,thin", [(0, False), (1, True), (2, True), (3, True)])
def test_matches_ase_on_triclinic_and_thin_cells(seed, thin):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    cell, pos = random_structure(rng, n, 12.0, 1.5, thin=thin)
    frac = pos @ np.linalg.inv(cell) + rng.integers(-2, 3, size=(n, 3))  # unwrapped on purpose
    atoms = Atoms("H" * n, scaled_positions=frac, cell=cell, pbc=True)
    cutoff = 5.0
    spec = nl.spec_for(cutoff, frac[None], cell[None], np.ones((1, n), bool), (True,) * 3)
    nbrs = nl.build(spec, jax.numpy.asarray(frac), jax.numpy.asarray(cell),
                    jax.numpy.ones(n, bool), (True,) * 3)
    assert not bool(nbrs.overflow)
    ours = _triples(nbrs, n)
    ref = {(i, j, *s) for i, j, *s in _ase_triples(atoms, cutoff)}
    # ASE's shifts refer to its own positions, which are our unwrapped ones.
    assert ours == ref
    assert len(ref) > n  # not vacuous: many neighbors, including images


def test_single_atom_neighbors_its_own_images():
    cell = np.array([[2.0, 0, 0], [0.7, 2.2, 0], [0.3, 0.4, 2.5]])
    spec = nl.spec_for(4.0, np.zeros((1, 1, 3)), cell[None], np.ones((1, 1), bool), (True,) * 3)
    nbrs = nl.build(spec, jax.numpy.zeros((1, 3)), jax.numpy.asarray(cell),
                    jax.numpy.ones(1, bool), (True,) * 3)
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=cell, pbc=True)
    assert _triples(nbrs, 1) == _ase_triples(atoms, 4.0)
    assert int(np.asarray(nbrs.mask).sum()) > 20


def test_overflow_is_flagged_and_growth_recovers_everything():
    rng = np.random.default_rng(5)
    cell, pos = random_structure(rng, 8, 10.0, 1.6)
    frac = pos @ np.linalg.inv(cell)
    args = (jax.numpy.asarray(frac), jax.numpy.asarray(cell), jax.numpy.ones(8, bool), (True,) * 3)
    full = nl.spec_for(5.0, frac[None], cell[None], np.ones((1, 8), bool), (True,) * 3)
    tiny = dataclasses.replace(full, capacity=4)
    small = nl.build(tiny, *args)
    assert bool(small.overflow) and int(small.count) > 4
    capacity = Capacity(LennardJones(cutoff=5.0), (True,) * 3)
    capacity.lists = ListSpec(tiny, None)
    capacity.grow(int(small.count), None, cell[None])
    again = nl.build(capacity.spec, *args)
    assert not bool(again.overflow)
    assert _triples(again, 8) == _triples(nl.build(full, *args), 8)


def test_cell_thinner_than_spec_images_is_flagged():
    cell = np.eye(3) * 6.0
    spec = nl.spec_for(5.0, np.zeros((1, 1, 3)), cell[None], np.ones((1, 1), bool), (True,) * 3)
    squashed = cell.copy()
    squashed[2, 2] = 1.0  # now needs 5 images along c
    out = nl.build(dataclasses.replace(spec, capacity=400), jax.numpy.zeros((1, 3)),
                   jax.numpy.asarray(squashed), jax.numpy.ones(1, bool), (True,) * 3)
    assert bool(out.overflow)


def test_cluster_all_pairs_and_padding():
    pos = np.random.default_rng(0).normal(size=(5, 3)) * 2
    box = np.eye(3) * 30
    frac = np.zeros((7, 3))
    frac[:5] = pos @ np.linalg.inv(box) + 0.5
    mask = np.arange(7) < 5
    spec = nl.spec_for(None, frac[None], box[None], mask[None], (False,) * 3)
    nbrs = nl.build(spec, jax.numpy.asarray(frac), jax.numpy.asarray(box),
                    jax.numpy.asarray(mask), (False,) * 3)
    got = _triples(nbrs, 7)
    assert got == {(i, j, 0, 0, 0) for i in range(5) for j in range(5) if i != j}


def test_batched_equals_single_under_jit():
    rng = np.random.default_rng(7)
    cells, fracs = [], []
    for _ in range(3):
        cell, pos = random_structure(rng, 6, 12.0, 1.5, thin=True)
        cells.append(cell)
        fracs.append(pos @ np.linalg.inv(cell))
    cells, fracs = np.array(cells), np.array(fracs)
    mask = np.ones((3, 6), bool)
    spec = nl.spec_for(4.5, fracs, cells, mask, (True,) * 3)
    batched = jax.jit(jax.vmap(lambda f, c, m: nl.build(spec, f, c, m, (True,) * 3)))(
        fracs, cells, mask)
    for b in range(3):
        single = nl.build(spec, jax.numpy.asarray(fracs[b]), jax.numpy.asarray(cells[b]),
                          jax.numpy.asarray(mask[b]), (True,) * 3)
        assert _triples(single, 6) == _triples(jax.tree_util.tree_map(lambda x: x[b], batched), 6)

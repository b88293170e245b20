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


@pytest.mark.parametrize("seed,thin", [(4, False), (5, True)])
def test_half_lists_hold_each_ase_pair_once_and_balance_the_rows(seed, thin):
    """A half list holds exactly one of (i, j, S) and (j, i, -S) for every pair of ASE's
    full list, counted alike on the host, in shorter rows."""
    rng = np.random.default_rng(seed)
    n = 5
    cell, pos = random_structure(rng, n, 12.0, 1.5, thin=thin)
    frac = pos @ np.linalg.inv(cell) + rng.integers(-2, 3, size=(n, 3))
    atoms = Atoms("H" * n, scaled_positions=frac, cell=cell, pbc=True)
    cutoff = 6.0
    full = nl.spec_for(cutoff, frac[None], cell[None], np.ones((1, n), bool), (True,) * 3)
    half = dataclasses.replace(full, half=True)
    nbrs = nl.build(half, jax.numpy.asarray(frac), jax.numpy.asarray(cell),
                    jax.numpy.ones(n, bool), (True,) * 3)
    assert nbrs.half and not bool(nbrs.overflow)
    ours = _triples(nbrs, n)
    reverse = {(j, i, -a, -b, -c) for i, j, a, b, c in ours}
    ref = _ase_triples(atoms, cutoff)
    assert not ours & reverse  # never both ends
    assert ours | reverse == ref  # every pair
    rows = np.asarray(nbrs.mask).sum(1)
    full_rows = np.bincount([t[0] for t in ref], minlength=n)
    assert 2 * rows.sum() == full_rows.sum() and rows.max() < full_rows.max()
    assert int(nbrs.count) == rows.max() == nl.count_neighbors(
        cutoff, half.images, frac[None], cell[None], np.ones((1, n), bool), (True,) * 3,
        half=True)


def test_buckingham_on_half_lists_matches_full_lists_others_refuse_them():
    """Energy, forces and stress of Buckingham + Ewald on a half list are those on the
    full list; a potential that needs full lists refuses a half one."""
    from jcsp.derivatives import evaluate_with
    from jcsp.potentials import BuckinghamCoulomb, StillingerWeber

    rng = np.random.default_rng(7)
    cell, pos = random_structure(rng, 6, 14.0, 1.6, thin=True)
    frac = pos @ np.linalg.inv(cell)
    species = jax.numpy.asarray([8, 22] * 3)
    mask = jax.numpy.ones(6, bool)
    pots = [BuckinghamCoulomb({("Ti", "O"): (16957.5, 0.194, 12.59),
                               ("O", "O"): (11782.7, 0.234, 30.22),
                               ("Ti", "Ti"): (31120.1, 0.154, 5.25)},
                              {"Ti": 2.196, "O": -1.098}, cutoff=6.5).for_cells(cell[None])]
    for pot in pots:
        full = nl.spec_for(pot.cutoff, frac[None], cell[None], np.ones((1, 6), bool),
                           (True,) * 3)
        got = {}
        for half in (False, True):
            spec = dataclasses.replace(full, half=half)
            nbrs = nl.build(spec, jax.numpy.asarray(frac), jax.numpy.asarray(cell), mask,
                            (True,) * 3)
            got[half] = evaluate_with(pot, pot.params, jax.numpy.asarray(frac),
                                      jax.numpy.asarray(cell), species, mask, nbrs, (True,) * 3)
        assert abs(float(got[True].energy)) > 1e-3
        np.testing.assert_allclose(float(got[True].energy), float(got[False].energy),
                                   rtol=1e-12)
        for field in ("forces", "stress"):
            a, b = np.asarray(getattr(got[True], field)), np.asarray(getattr(got[False], field))
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.abs(b).max())
        # per-atom energies still add up to the total, though not split evenly
        np.testing.assert_allclose(float(np.sum(got[True].energies)),
                                   float(got[True].energy), rtol=1e-12)
    sw = StillingerWeber.from_lammps("/usr/share/lammps/potentials/Si.sw")
    spec = dataclasses.replace(nl.spec_for(sw.cutoff, frac[None], cell[None],
                                           np.ones((1, 6), bool), (True,) * 3), half=True)
    nbrs = nl.build(spec, jax.numpy.asarray(frac), jax.numpy.asarray(cell), mask, (True,) * 3)
    with pytest.raises(ValueError, match="needs full neighbor lists"):
        evaluate_with(sw, sw.params, jax.numpy.asarray(frac), jax.numpy.asarray(cell),
                      jax.numpy.full(6, 14), mask, nbrs, (True,) * 3)

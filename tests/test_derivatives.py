"""The derivative engine's contracts: padding, batching, skin lists, NaN isolation."""

import jax
import jax.numpy as jnp
import numpy as np

import jcsp
from jcsp import neighbors as nl
from jcsp.derivatives import evaluate, evaluate_with
from jcsp.potentials import LennardJones
from jcsp.structures.population import pad_atoms, pad_structures, stack
from lammps_ref import random_structure

POT = LennardJones(0.0104, 3.4, 7.0, truncation="smooth")


def _population(seed=0, sizes=(3, 5, 8), n_max=None):
    rng = np.random.default_rng(seed)
    cells, fracs = [], []
    for n in sizes:
        cell, pos = random_structure(rng, n, 30.0, 2.6)
        cells.append(cell)
        fracs.append(pos @ np.linalg.inv(cell))
    return stack(fracs, cells, [[18] * n for n in sizes], n_max=n_max)


def test_padding_and_batching_change_nothing():
    pop = _population()
    spec = nl.spec_for(7.0, pop.frac, pop.cell, pop.mask, pop.pbc)
    ref = jcsp.evaluate_population(POT, POT.params, pop, spec)
    # More empty slots: bit-identical (structures never mix).
    slots = jcsp.evaluate_population(POT, POT.params, pad_structures(pop, 5), spec)
    np.testing.assert_array_equal(slots.energy[:3], ref.energy)
    np.testing.assert_array_equal(slots.forces[:3], ref.forces)
    np.testing.assert_array_equal(slots.stress[:3], ref.stress)
    assert np.all(np.asarray(slots.energy[3:]) == 0.0)  # empty slots are inert
    # More padded atoms: equal to round-off (the sum over atoms is longer).
    out = jcsp.evaluate_population(POT, POT.params, pad_atoms(pop, 12), spec)
    np.testing.assert_allclose(out.energy, ref.energy, rtol=1e-14)
    np.testing.assert_allclose(out.forces[:, :8], ref.forces, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.stress, ref.stress, rtol=1e-12, atol=1e-17)
    assert np.all(np.asarray(out.forces[:, 8:]) == 0.0)
    for b, n in enumerate((3, 5, 8)):
        single = evaluate(POT, POT.params, pop.frac[b, :n], pop.cell[b], pop.species[b, :n],
                          pop.mask[b, :n], spec, pop.pbc)
        np.testing.assert_allclose(single.energy, ref.energy[b], rtol=1e-13)
        np.testing.assert_allclose(single.forces, ref.forces[b, :n], rtol=1e-11, atol=1e-14)
    assert np.abs(np.asarray(ref.forces)).max() > 1e-3


def test_skin_list_gives_the_same_numbers_until_rebuild_is_due():
    pop = _population(1, sizes=(6,))
    frac, cell, z, m = pop.frac[0], pop.cell[0], pop.species[0], pop.mask[0]
    skin_spec = nl.spec_for(8.0, pop.frac, pop.cell, pop.mask, pop.pbc)
    nbrs = nl.build(skin_spec, frac, cell, m, pop.pbc)
    rng = np.random.default_rng(2)
    moved = frac + jnp.asarray(rng.normal(scale=0.004, size=frac.shape))
    strained = cell @ (jnp.eye(3) + 0.003 * jnp.asarray(rng.normal(size=(3, 3))))
    assert not bool(nl.needs_rebuild(nbrs, moved, strained, m, 7.0, 8.0))
    fresh_spec = nl.spec_for(7.0, moved[None], strained[None], m[None], pop.pbc)
    fresh = evaluate(POT, POT.params, moved, strained, z, m, fresh_spec, pop.pbc)
    reused = evaluate_with(POT, POT.params, moved, strained, z, m, nbrs, pop.pbc)
    np.testing.assert_allclose(reused.energy, fresh.energy, rtol=1e-13)
    np.testing.assert_allclose(reused.forces, fresh.forces, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(reused.stress, fresh.stress, rtol=1e-10, atol=1e-16)
    far = frac + 0.2
    assert bool(nl.needs_rebuild(nbrs, far @ jnp.eye(3) * 1.0, cell * 1.2, m, 7.0, 8.0))


def test_nan_structure_leaves_the_others_bit_identical():
    pop = _population(3)
    spec = nl.spec_for(7.0, pop.frac, pop.cell, pop.mask, pop.pbc)
    clean = jcsp.evaluate_population(POT, POT.params, pop, spec)
    bad = pop.replace(frac=pop.frac.at[1, 0, 0].set(jnp.nan))
    dirty = jcsp.evaluate_population(POT, POT.params, bad, spec)
    assert not np.isfinite(np.asarray(dirty.energy[1]))
    for b in (0, 2):
        np.testing.assert_array_equal(dirty.energy[b], clean.energy[b])
        np.testing.assert_array_equal(dirty.forces[b], clean.forces[b])
        np.testing.assert_array_equal(dirty.stress[b], clean.stress[b])


def test_jitted_evaluation_compiles_once_for_new_values():
    pop = _population(4)
    spec = nl.spec_for(7.0, pop.frac, pop.cell, pop.mask, pop.pbc)
    traces = []

    @jax.jit
    def run(params, pop):
        traces.append(1)
        return jcsp.evaluate_population(POT, params, pop, spec).energy

    run(POT.params, pop)
    run(jax.tree_util.tree_map(lambda x: x * 1.01, POT.params), pop.replace(cell=pop.cell * 1.01))
    assert len(traces) == 1

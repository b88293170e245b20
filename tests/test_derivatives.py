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


def _packed(structures, atoms_per_batch=32):
    """Structures packed on one atom axis (a training batch) and their slot order."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from jcsp.ml.batch_eval import to_device
    from jcsp.ml.data import Packer, labels_of
    labelled = []
    for a in structures:
        a = a.copy()
        a.calc = SinglePointCalculator(a, energy=0.0, forces=np.zeros((len(a), 3)))
        labelled.append(a)
    labels = labels_of(labelled)
    packer = Packer.for_data([labels], 7.0, atoms_per_batch=atoms_per_batch)
    order = [1, 0]
    return to_device(packer.batch(labels, order), jnp.float64), order


def test_packed_batches_match_finite_differences_and_single_structures():
    """Two structures on one atom axis, one strain each: forces and stresses equal
    central differences of each structure's energy, and the per-structure path."""
    from ase import Atoms

    from jcsp.ml.batch_eval import predict
    rng = np.random.default_rng(5)
    structures = []
    for n in (4, 6):
        cell, pos = random_structure(rng, n, 30.0, 2.6)
        structures.append(Atoms(f"Ar{n}", positions=pos, cell=cell, pbc=True))
    b, order = _packed(structures)
    got = jax.device_get(predict(POT, POT.params, b))
    energy = jax.jit(lambda b: predict(POT, POT.params, b)["energy"])
    start = {m: int(np.sum([len(structures[k]) for k in order[:order.index(m)]]))
             for m in range(2)}
    h = 1e-5
    for m, atoms in enumerate(structures):
        slot, first = order.index(m), start[m]
        forces = got["forces"][first:first + len(atoms)]
        stress = got["stress"][slot]
        assert np.abs(forces).max() > 1e-3 and np.abs(stress).max() > 1e-6  # not vacuous
        # Central differences of this structure's energy, moving one packed atom...
        for i, k in ((0, 0), (len(atoms) - 1, 2)):
            e = []
            for sign in (1, -1):
                pos = b["positions"].at[first + i, k].add(sign * h)
                e.append(energy({**b, "positions": pos}))
            fd = -(e[0] - e[1]) / (2 * h)
            assert abs(fd[slot] - forces[i, k]) < 1e-7 * max(1.0, abs(forces[i, k]))
            other = 1 - slot
            assert abs(e[0][other] - got["energy"][other]) < 1e-12 * abs(got["energy"][other])
        # ... and straining only its cell and its atoms.
        volume = abs(np.linalg.det(np.asarray(b["cell"][slot])))
        mine = np.asarray(b["structure"]) == slot
        for a_, c_ in ((0, 0), (1, 2)):
            e = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a_, c_] += sign * h / (1 if a_ == c_ else 2)
                eps[c_, a_] = eps[a_, c_]
                deform = np.eye(3) + eps
                pos = np.where(mine[:, None], np.asarray(b["positions"]) @ deform,
                               b["positions"])
                cells = b["cell"].at[slot].set(b["cell"][slot] @ deform)
                e.append(energy({**b, "positions": jnp.asarray(pos), "cell": cells}))
            fd = (e[0] - e[1])[slot] / (2 * h) / volume
            assert abs(fd - stress[a_, c_]) < 1e-6 * np.abs(stress).max()
        # The per-structure path gives the same numbers.
        pop = jcsp.structures.convert.from_atoms([atoms])
        spec = nl.spec_for(7.0, pop.frac, pop.cell, pop.mask, pop.pbc)
        single = evaluate(POT, POT.params, pop.frac[0], pop.cell[0], pop.species[0],
                          pop.mask[0], spec, pop.pbc)
        np.testing.assert_allclose(got["energy"][slot], single.energy, rtol=1e-13)
        np.testing.assert_allclose(forces, single.forces, rtol=0, atol=1e-12)
        np.testing.assert_allclose(stress, single.stress, rtol=0, atol=1e-14)

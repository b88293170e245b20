"""Physics contracts of the equivariant potential (float64, random weights).

Symmetry: rotating and reflecting a crystal rotates forces and stress, translating or
permuting changes nothing; a supercell has n times the energy; forces and stress equal
finite differences of the energy; energy is smooth as an atom crosses the cutoff;
padding and batching change nothing. Checked for invariant (default) and equivariant
hidden features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import jcsp
from jcsp import neighbors as nl
from jcsp.derivatives import evaluate_population
from jcsp.ml.batch_eval import predict, to_device
from jcsp.ml.data import Packer, labels_of
from jcsp.ml.model import ModelConfig, init_params
from jcsp.ml.potential import Committee, EquivariantPotential
from jcsp.structures.convert import from_atoms
from jcsp.units import voigt_to_full


def _potential(hidden_l_max=0, species=(14, 8), **kw):
    cfg = ModelConfig(species=species, cutoff=3.2, channels=6, l_max=2,
                      hidden_l_max=hidden_l_max, n_layers=2, correlation=3, radial_hidden=8,
                      avg_neighbors=8.0, **kw)
    key = jax.random.PRNGKey(7)
    params = {"net": init_params(cfg, key, dtype=jnp.float64),
              "e_ref": jnp.array([-3.0, -1.5]), "scale": jnp.asarray(0.7)}
    # Random (not near-zero) final readouts so every path contributes.
    return EquivariantPotential(cfg, params)


@pytest.fixture(scope="module", params=[0, 1], ids=["invariant", "equivariant"])
def any_pot(request):
    """Both kinds of hidden features (symmetry tests)."""
    return _potential(request.param)


@pytest.fixture(scope="module")
def pot():
    """The default kind (invariant hidden features), for the other contracts."""
    return _potential(0)


def _crystal(seed=0):
    rng = np.random.default_rng(seed)
    cell = np.array([[3.9, 0.2, -0.3], [0.4, 4.2, 0.1], [-0.2, 0.5, 4.4]])
    frac = rng.random((6, 3))
    atoms = Atoms("Si4O2", scaled_positions=frac, cell=cell, pbc=True)
    # Spread atoms so none overlap.
    atoms.positions = np.array([[0, 0, 0], [1.9, 0.1, 0.2], [0.2, 2.0, 0.3], [2.1, 2.2, 1.9],
                                [1.0, 1.1, 3.0], [3.1, 0.4, 2.8]]) + 0.05 * rng.normal(size=(6, 3))
    return atoms


#: One generous neighbor spec for every structure here, so that a batch shape compiles once.
def _spec(pot):
    return nl.NeighborSpec(pot.cutoff, 40, (2, 2, 2))


def _batch(pot, structures, params=None, n_max=None):
    """Energies [B], forces [B, N, 3] and stresses [B, 3, 3] in one compiled call."""
    pop = from_atoms(structures, n_max=n_max)
    res = evaluate_population(pot, pot.params if params is None else params, pop, _spec(pot))
    assert not bool(np.any(res.overflow))
    return np.asarray(res.energy), np.asarray(res.forces), np.asarray(res.stress)


def _strained(atoms, strain):
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    return out


def test_symmetries_and_finite_differences(any_pot):
    """One batch: the crystal, rotated/reflected + translated copies, a permutation,
    displaced and strained copies (finite differences)."""
    pot = any_pot
    atoms = _crystal()
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rots = (q, -q)  # one proper rotation and one improper (with a reflection)
    batch = [atoms]
    for rot in rots:
        moved = atoms.copy()
        moved.set_cell(atoms.cell[:] @ rot.T)
        moved.positions = atoms.positions @ rot.T + np.array([0.3, -1.1, 2.0])
        batch.append(moved)
    perm = rng.permutation(len(atoms))
    batch.append(atoms[perm])
    h = 1e-5
    moves = [(0, 0), (3, 2), (5, 1)]
    for i, k in moves:
        for sign in (1, -1):
            d = atoms.copy()
            d.positions[i, k] += sign * h
            batch.append(d)
    strains = [(0, 0), (1, 2)]
    for a, b in strains:
        for sign in (1, -1):
            e = np.zeros((3, 3))
            e[a, b] += sign * h / (1 if a == b else 2)
            e[b, a] = e[a, b]
            batch.append(_strained(atoms, e))
    energy, forces, stress = _batch(pot, batch)
    e, f, s = energy[0], forces[0, :6], stress[0]
    assert np.abs(f).max() > 1e-3 and np.abs(s).max() > 1e-5  # not vacuous
    for j, rot in enumerate(rots, start=1):
        assert abs(energy[j] - e) <= 1e-10 * abs(e)
        assert np.abs(forces[j, :6] - f @ rot.T).max() <= 1e-8 * np.abs(f).max()
        assert np.abs(stress[j] - rot @ s @ rot.T).max() <= 1e-8 * np.abs(s).max()
    assert abs(energy[3] - e) <= 1e-12 * abs(e)
    np.testing.assert_allclose(forces[3, :6], f[perm], rtol=0, atol=1e-12)
    at = 4
    for i, k in moves:
        fd = -(energy[at] - energy[at + 1]) / (2 * h)
        assert abs(fd - f[i, k]) < 1e-7 * max(1.0, abs(f[i, k]))
        at += 2
    vol = atoms.get_volume()
    for a, b in strains:
        fd = (energy[at] - energy[at + 1]) / (2 * h) / vol
        assert abs(fd - s[a, b]) < 1e-6 * np.abs(s).max()
        at += 2


def test_supercell_energy_is_extensive(pot):
    atoms = _crystal(1)
    big = atoms.repeat((2, 1, 2))
    energy, _, stress = _batch(pot, [atoms, big])
    assert abs(energy[1] - 4 * energy[0]) <= 1e-11 * abs(energy[1])
    np.testing.assert_allclose(stress[1], stress[0], rtol=0, atol=1e-11)


def test_energy_is_smooth_across_the_cutoff(pot):
    """A dimer pulled through the cutoff: energy and force go continuously to their
    isolated-atom values."""
    rc = pot.cutoff
    ds = np.linspace(rc - 0.02, rc + 0.02, 9)
    dimers = [Atoms("SiO", positions=[[0, 0, 0], [d, 0, 0]], cell=[9, 9, 9], pbc=True)
              for d in ds]
    energies, forces, _ = _batch(pot, dimers)
    forces = forces[:, 1, 0]
    inside = ds < rc
    assert np.ptp(energies[inside]) > 0  # interacts inside the cutoff
    assert np.ptp(energies[~inside]) < 1e-14  # constant (isolated atoms) beyond
    gap = np.abs(energies[inside] - energies[-1])
    assert gap.max() < 1e-7 and np.all(np.diff(gap) < 0)  # continuous, flat approach
    assert np.abs(forces[inside]).max() < 1e-6 and np.all(forces[~inside] == 0)


def test_padding_batching_and_packing_change_nothing(pot):
    structures = [_crystal(4), _crystal(5)[:5]]
    # Unpadded singles through the ASE calculator (tight neighbor spec per structure).
    singles = []
    for a in structures:
        a = a.copy()
        a.calc = jcsp.JCSPCalculator(pot)
        singles.append((a.get_potential_energy(), a.get_forces(), voigt_to_full(a.get_stress())))
    # Batched and padded (extra atoms, extra neighbor slots) through the derivative engine.
    energy, forces, stress = _batch(pot, structures, n_max=9)
    # Packed training batches (several structures on one atom axis).
    labels = labels_of([_labelled(a) for a in structures])
    packer = Packer.for_data([labels], pot.cutoff, atoms_per_batch=16)
    packed = predict(pot, pot.params, to_device(packer.batch(labels, [1, 0]), jnp.float64))
    starts = {1: 0, 0: len(structures[1])}
    for m, (e, f, s) in enumerate(singles):
        n = len(structures[m])
        assert abs(energy[m] - e) <= 1e-12 * abs(e)
        np.testing.assert_allclose(forces[m, :n], f, rtol=0, atol=1e-12)
        np.testing.assert_allclose(stress[m], s, rtol=0, atol=1e-12)
        slot = [1, 0].index(m)
        assert abs(float(packed["energy"][slot]) - e) <= 1e-12 * abs(e)
        np.testing.assert_allclose(np.asarray(packed["forces"][starts[m]:starts[m] + n]), f,
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(packed["stress"][slot]), s, rtol=0, atol=1e-12)


def _labelled(atoms):
    from ase.calculators.singlepoint import SinglePointCalculator
    atoms = atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    return atoms


def test_float32_parameters_follow_float64_closely(pot):
    atoms = _crystal(6)
    e64, f64, _ = _batch(pot, [atoms])
    e64, f64 = e64[0], f64[0]
    pot32 = pot.astype(jnp.float32)
    assert jax.tree.leaves(pot32.params)[0].dtype == jnp.float32
    pop = from_atoms([atoms], dtype=jnp.float32)
    res = evaluate_population(pot32, pot32.params, pop, _spec(pot))
    assert res.forces.dtype == jnp.float32
    assert abs(float(res.energy[0]) - e64) < 1e-4 * abs(e64)
    np.testing.assert_allclose(np.asarray(res.forces[0, : len(atoms)]), f64, atol=1e-4)


def test_committee_mean_and_spread_match_members():
    members = [_potential(0) for _ in range(3)]
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    nets = [init_params(members[0].config, k, dtype=jnp.float64) for k in keys]
    for m, net in zip(members, nets):
        m.params = {**m.params, "net": net}
    stacked = {"net": jax.tree.map(lambda *x: jnp.stack(x), *nets),
               "e_ref": members[0].params["e_ref"], "scale": members[0].params["scale"]}
    committee = Committee(members[0].config, stacked)
    atoms = _crystal(7)
    atoms.calc = jcsp.JCSPCalculator(committee)
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    singles = [_batch(members[0], [atoms], params=m.params) for m in members]
    energies = np.array([x[0][0] for x in singles])
    forces = np.array([x[1][0] for x in singles])
    assert np.std(energies) > 1e-4  # members really differ
    assert abs(e - energies.mean()) < 1e-10 * abs(e)
    assert abs(atoms.calc.results["energy_std"] - energies.std()) < 1e-10
    np.testing.assert_allclose(f, forces.mean(0), atol=1e-10)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], forces.std(0), atol=1e-10)


def test_capabilities_are_declared_on_the_contract(pot):
    """Classical potentials declare no committee, domain or features, and asking for
    them fails with a clear error; learned ones declare what they have."""
    from jcsp.ml.domain import Domain, atom_features, extrapolation_grades
    from jcsp.potentials import LennardJones
    lj = LennardJones(0.0104, 3.4, 7.0)
    atoms = bulk("Ar", "fcc", 5.26)
    assert (lj.committee_size, lj.member, lj.domain, lj.has_features) == (None, None, None,
                                                                          False)
    with pytest.raises(TypeError, match="provides no per-atom features"):
        lj.features(lj.params, None)
    with pytest.raises(TypeError, match="single model"):
        lj.member_params(lj.params)
    with pytest.raises(TypeError, match="single model"):
        lj.member_energies(lj.params, None)
    with pytest.raises(TypeError, match="provides no per-atom features"):
        atom_features(lj, [atoms])
    with pytest.raises(ValueError, match="no training domain"):
        extrapolation_grades(lj, [atoms])
    assert pot.has_features and pot.committee_size is None and pot.member is None
    nets = [init_params(pot.config, k, dtype=jnp.float64)
            for k in jax.random.split(jax.random.PRNGKey(2), 3)]
    committee = Committee(pot.config, {**pot.params,
                                       "net": jax.tree.map(lambda *x: jnp.stack(x), *nets)})
    assert committee.committee_size == 3 and committee.has_features
    assert isinstance(committee.member, EquivariantPotential)
    f = pot.config.n_features
    committee.domain = Domain(np.zeros((3, f)), np.tile(np.eye(f), (3, 1, 1)), np.ones(3))
    single = committee.astype(jnp.float32)
    assert single.domain is committee.domain and single.committee_size == 3
    assert jax.tree.leaves(single.params)[0].dtype == jnp.float32


def test_species_outside_the_model_are_refused(pot):
    atoms = bulk("Cu", "fcc", 3.6)
    atoms.calc = jcsp.JCSPCalculator(pot)
    with pytest.raises(ValueError, match="covers Si, O but the structure contains Cu"):
        atoms.get_potential_energy()


@pytest.mark.lammps
def test_zbl_core_matches_lammps_pair_zbl():
    """Below the crossover the core term is LAMMPS's ``pair_style zbl`` (whose own
    switching only adds a constant there): compare energy differences and forces of
    Si-O dimers."""
    from tests.lammps_ref import run as lammps
    import jax.numpy as jnp_
    from jcsp.ml.model import zbl_pair
    cell = np.eye(3) * 30.0
    lines = ["pair_style zbl 2.0 2.5", "pair_coeff 1 1 8.0 8.0", "pair_coeff 1 2 8.0 14.0",
             "pair_coeff 2 2 14.0 14.0"]
    results = []
    for d in (0.6, 0.9, 1.3):
        pos = np.array([[5.0, 5.0, 5.0], [5.0 + d, 5.0, 5.0]])
        e, f, _ = lammps(cell, pos, ["Si", "O"], lines, pbc=False, types=["O", "Si"])
        results.append((d, e, f[1, 0]))
    ours = lambda d: float(zbl_pair(jnp_.asarray(d), jnp_.asarray(14), jnp_.asarray(8)))
    for (d1, e1, _), (d2, e2, _) in zip(results, results[1:]):
        assert abs((e1 - e2) - (ours(d1) - ours(d2))) < 1e-6 * abs(e1 - e2)
    for d, _, f in results:
        h = 1e-6
        assert abs(-(ours(d + h) - ours(d - h)) / (2 * h) - f) < 1e-5 * abs(f)


def test_core_repulsion_takes_over_below_the_data(pot):
    """With an inner cutoff, a dimer pushed below it meets the ZBL wall; at and above
    it energies are those of the network alone."""
    import dataclasses
    inner = 1.8
    cored = EquivariantPotential(dataclasses.replace(pot.config, inner_cutoff=inner), pot.params)
    ds = [0.8, 1.0, 1.2, 1.8, 2.2, 2.8]
    dimers = [Atoms("SiO", positions=[[0, 0, 0], [d, 0, 0]], cell=[9, 9, 9], pbc=True)
              for d in ds]
    plain, _, _ = _batch(pot, dimers)
    core, _, _ = _batch(cored, dimers)
    np.testing.assert_allclose(core[3:], plain[3:], rtol=0, atol=1e-12)
    assert core[0] > core[1] > core[2] > core[3]  # repulsive wall
    assert core[0] - core[3] > 50.0


@pytest.mark.parametrize("n_species", [1, 3])
def test_species_linear_matches_e3nn_indexed_linear(n_species):
    """SpeciesLinear gives e3nn's species-indexed Linear, parameter for parameter."""
    import e3nn_jax as e3nn
    from jcsp.ml.model import SpeciesLinear
    irreps_in, irreps_out = e3nn.Irreps("4x0e + 3x1o + 2x2e"), e3nn.Irreps("5x0e + 2x1o + 2e")
    key = jax.random.PRNGKey(0)
    x = e3nn.normal(irreps_in, key, (7,), dtype=jnp.float64)
    types = jnp.arange(7) % n_species
    reference = e3nn.flax.Linear(irreps_out, num_indexed_weights=n_species,
                                 force_irreps_out=True)
    params = reference.init(key, types, x)
    mine = SpeciesLinear(irreps_out, n_species)
    assert jax.tree.structure(mine.init(key, types, x)) == jax.tree.structure(params)
    want = reference.apply(params, types, x)
    got = mine.apply(params, types, x)
    assert got.irreps == want.irreps
    np.testing.assert_allclose(np.asarray(got.array), np.asarray(want.array), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("readout", ["mlp", "linear", "linear+mlp"])
def test_readouts_are_linear_in_their_features_and_invariant(readout):
    """Each readout's energy is exactly linear in the features it reports to the
    extrapolation grade (their width is ``n_features``), and invariant under rotation."""
    from jcsp.ml.model import apply_energy, apply_features
    cfg = ModelConfig(species=(14, 8), cutoff=3.2, channels=6, l_max=2, correlation=2,
                      radial_hidden=8, readout_hidden=5, readout=readout, avg_neighbors=4.0)
    key = jax.random.PRNGKey(3)
    params = init_params(cfg, key, dtype=jnp.float64)
    n, k = 5, 4
    types = jnp.array([0, 1, 0, 1, 1])
    idx = jnp.array([[(i + j + 1) % n for j in range(k)] for i in range(n)])
    vec = 1.2 * jax.random.normal(jax.random.PRNGKey(4), (n, k, 3), jnp.float64)
    mask = jnp.ones((n, k), bool).at[0, 3].set(False)
    energy = apply_energy(cfg, params, types, idx, vec, mask)
    feats = apply_features(cfg, params, types, idx, vec, mask)
    assert feats.shape == (n, cfg.n_features)
    # The final dense kernels, in the order the features are concatenated.
    kernels = {"mlp": ["readout_0"], "linear": ["linear_0"],
               "linear+mlp": ["linear_0", "readout_0"]}[readout]
    w = jnp.concatenate([params[name]["kernel"][:, 0] for name in kernels])
    np.testing.assert_allclose(np.asarray(feats @ w), np.asarray(energy), rtol=1e-12, atol=1e-12)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotated = apply_energy(cfg, params, types, idx, vec @ jnp.asarray(q.T), mask)
    np.testing.assert_allclose(np.asarray(rotated), np.asarray(energy), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="readout"):
        ModelConfig(readout="quadratic")


def test_zero_isolated_makes_the_reference_the_free_atom_energy():
    """With ``zero_isolated`` an atom without neighbours has exactly its reference
    energy, whatever the weights; without it the network adds a learned constant."""
    far = Atoms("SiOSi", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])  # beyond 3.2 Å
    pair = Atoms("SiO", positions=[[0, 0, 0], [1.6, 0, 0]])
    anchored = _potential(zero_isolated=True)
    calc = jcsp.JCSPCalculator(anchored)
    assert calc.get_potential_energy(far) == pytest.approx(-3.0 - 1.5 - 3.0, abs=1e-12)
    assert abs(calc.get_potential_energy(pair) - (-4.5)) > 1e-4  # the network does act
    free = jcsp.JCSPCalculator(_potential())
    assert abs(free.get_potential_energy(far) - (-7.5)) > 1e-3
    # The constant taken off changes no force.
    np.testing.assert_allclose(calc.get_forces(pair),
                               jcsp.JCSPCalculator(_potential()).get_forces(pair), atol=1e-12)


def test_sqrt_density_shape():
    """``sqrt_density``: a free atom has exactly its reference energy; the energy and the
    force stay continuous and finite as the last neighbour leaves the cutoff; forces
    are the energy's derivative; and the per-atom output is the plain network's times
    ``sqrt(rho + eps) - sqrt(eps)``, the summed envelope of the neighbours."""
    from jcsp.ml.model import DENSITY_EPS, apply_energy, envelope
    shaped, plain = _potential(sqrt_density=True), _potential()
    far = Atoms("SiOSi", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    assert jcsp.JCSPCalculator(shaped).get_potential_energy(far) == pytest.approx(
        -7.5, abs=1e-12)
    # The dimer through the cutoff.
    rc = shaped.cutoff
    ds = np.linspace(rc - 0.02, rc + 0.02, 9)
    dimers = [Atoms("SiO", positions=[[0, 0, 0], [d, 0, 0]], cell=[9, 9, 9], pbc=True)
              for d in ds]
    energies, forces, _ = _batch(shaped, dimers)
    assert np.all(np.isfinite(forces))
    inside = ds < rc
    gap = np.abs(energies[inside] - (-4.5))
    assert 0 < gap.max() < 1e-4 and np.all(np.diff(gap) < 0)  # continuous, flat approach
    assert np.all(energies[~inside] == pytest.approx(-4.5, abs=1e-14))
    pull = np.abs(forces[:, 1, 0])
    assert pull.max() < 1e-2 and np.all(np.diff(pull[inside]) < 0) and np.all(pull[~inside] == 0)
    # A dimer at 2 Å: the output factorises, and the force is -dE/dx.
    d, h = 2.0, 1e-5
    e = [jcsp.JCSPCalculator(shaped).get_potential_energy(
        Atoms("SiO", positions=[[0, 0, 0], [x, 0, 0]])) for x in (d - h, d + h)]
    pair = Atoms("SiO", positions=[[0, 0, 0], [d, 0, 0]])
    force = jcsp.JCSPCalculator(shaped).get_forces(pair)[1, 0]
    assert force == pytest.approx(-(e[1] - e[0]) / (2 * h), rel=1e-6)
    cfg = plain.config
    idx = jnp.array([[1], [0]])
    vec = jnp.array([[[d, 0.0, 0.0]], [[-d, 0.0, 0.0]]])
    mask = jnp.ones((2, 1), bool)
    types = jnp.array([0, 1])
    raw = apply_energy(cfg, plain.params["net"], types, idx, vec, mask)
    out = apply_energy(shaped.config, shaped.params["net"], types, idx, vec, mask)
    rho = float(envelope(jnp.asarray(d / rc))) / cfg.avg_neighbors
    factor = np.sqrt(rho + DENSITY_EPS) - np.sqrt(DENSITY_EPS)
    np.testing.assert_allclose(out, raw * factor, rtol=1e-12)


def _tensor_product_scalars(a, l_max):
    """The invariant features of e3nn's iterated tensor products (the legacy basis)."""
    import e3nn_jax as e3nn
    sh = e3nn.Irreps.spherical_harmonics(l_max)
    x = e3nn.IrrepsArray(sh, a)
    square = e3nn.tensor_product(x, x, filter_ir_out=sh)
    cube = e3nn.tensor_product(square, x, filter_ir_out=["0e"])
    return e3nn.concatenate([x.filter(keep=["0e"]), square.filter(keep=["0e"]), cube],
                            axis=-1).array


@pytest.mark.parametrize("l_max", [2, 4])
def test_symmetric_invariants_span_the_tensor_product_scalars(l_max):
    """The cubic invariants, once per multiset of l, span exactly what e3nn's tensor
    products give (each set is a linear map of the other), are linearly independent,
    and are rotation and reflection invariant."""
    import e3nn_jax as e3nn
    from jcsp.ml.model import symmetric_invariants
    dim = (l_max + 1) ** 2
    a = jax.random.normal(jax.random.PRNGKey(0), (400, dim), jnp.float64)
    mine = np.asarray(symmetric_invariants(a, l_max, 3))
    legacy = np.asarray(_tensor_product_scalars(a, l_max))
    assert mine.shape[1] == {2: 9, 4: 20}[l_max] < legacy.shape[1]
    for x, y in ((mine, legacy), (legacy, mine)):
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        np.testing.assert_allclose(x @ coef, y, atol=1e-9 * np.abs(y).max())
    assert np.linalg.matrix_rank(mine, tol=1e-8 * np.abs(mine).max()) == mine.shape[1]
    sh = e3nn.Irreps.spherical_harmonics(l_max)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    for rot in (q, -q):
        d = np.asarray(sh.D_from_matrix(jnp.asarray(rot)))
        turned = np.asarray(symmetric_invariants(a @ d.T, l_max, 3))
        np.testing.assert_allclose(turned, mine, atol=1e-10 * np.abs(mine).max())
    # Lower degrees are the leading columns.
    np.testing.assert_array_equal(np.asarray(symmetric_invariants(a, l_max, 2)),
                                  mine[:, :l_max + 2])


@pytest.mark.parametrize("n_species", [1, 3])
def test_first_layer_contracts_edges_before_the_radial_map(n_species):
    """The first interaction, given the species' features, sums phi(r) Y(r) over edges
    before the last radial map; that is the same function, parameter for parameter, as
    building every edge's message (the path of the later layers)."""
    import e3nn_jax as e3nn
    from jcsp.ml.model import Interaction, bessel_basis
    cfg = ModelConfig(species=tuple(range(1, n_species + 1)), cutoff=3.0, channels=5,
                      l_max=3, radial_hidden=6, avg_neighbors=4.0)
    rng = np.random.default_rng(2)
    n, k = 9, 6
    types = jnp.asarray(rng.integers(0, n_species, n))
    nbr_idx = jnp.asarray(rng.integers(0, n, (n, k)))
    vec = jnp.asarray(rng.normal(size=(n, k, 3)))
    mask = jnp.asarray(rng.random((n, k)) < 0.8)
    sh = e3nn.spherical_harmonics(cfg.sh_irreps, vec, normalize=True,
                                  normalization="component") * mask[..., None]
    radial = bessel_basis(jnp.linalg.norm(vec, axis=-1), cfg.n_radial, cfg.cutoff)
    species_h = jnp.asarray(rng.normal(size=(n_species, cfg.channels)))
    h = e3nn.IrrepsArray(f"{cfg.channels}x0e", species_h[types])
    layer = Interaction(cfg, e3nn.Irreps(f"{cfg.channels}x0e"))
    params = layer.init(jax.random.PRNGKey(0), h, types, nbr_idx, sh, radial, species_h)
    assert jax.tree.structure(params) == jax.tree.structure(
        layer.init(jax.random.PRNGKey(0), h, types, nbr_idx, sh, radial))
    fast = layer.apply(params, h, types, nbr_idx, sh, radial, species_h).array
    edges = layer.apply(params, h, types, nbr_idx, sh, radial).array
    np.testing.assert_allclose(np.asarray(fast), np.asarray(edges), rtol=1e-11, atol=1e-12)


def test_models_saved_before_product_basis_keep_the_tensor_basis(tmp_path):
    """A model.json without ``product_basis`` (older jcsp) loads with e3nn's tensor
    products, the basis its weights were trained in; new models get the symmetric one."""
    import json
    from jcsp.ml import checkpoint
    from jcsp.ml.training import TrainConfig
    cfg = ModelConfig(species=(14,), cutoff=3.0, channels=4, l_max=2, radial_hidden=4,
                      product_basis="tensor")
    net = jax.tree.map(lambda x: x[None], init_params(cfg, jax.random.PRNGKey(0)))
    fixed = {"e_ref": np.array([-4.0]), "scale": 1.0}
    checkpoint.save_model(str(tmp_path), cfg, TrainConfig(), net, fixed, [])
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["model"]["product_basis"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert checkpoint.load(str(tmp_path)).model.product_basis == "tensor"
    assert ModelConfig().product_basis == "symmetric"


def test_sqrt_density_defaults_to_metals_only(tmp_path):
    """Left unset, ``sqrt_density`` turns on once the species are all metals (Mo, Mg-Al)
    and stays off with a non-metal among them (Si, TiO2); an explicit choice wins, and a
    Mo model.json saved before the option existed loads without it."""
    import dataclasses
    import json
    from jcsp.ml import checkpoint
    from jcsp.ml.training import TrainConfig
    assert ModelConfig().sqrt_density is None
    for species, on in (((42,), True), ((12, 13), True), ((14,), False), ((22, 8), False)):
        assert dataclasses.replace(ModelConfig(), species=species).sqrt_density is on
    assert ModelConfig(species=(42,), sqrt_density=False).sqrt_density is False
    cfg = ModelConfig(species=(42,), cutoff=3.0, channels=4, l_max=2, radial_hidden=4,
                      sqrt_density=False)
    net = jax.tree.map(lambda x: x[None], init_params(cfg, jax.random.PRNGKey(0)))
    checkpoint.save_model(str(tmp_path), cfg, TrainConfig(), net,
                          {"e_ref": np.array([-10.0]), "scale": 1.0}, [])
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["model"]["sqrt_density"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert checkpoint.load(str(tmp_path)).model.sqrt_density is False

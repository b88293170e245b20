"""Oganov-Valle fingerprints: the paper's formula evaluated directly, crystallographic shell
counts, invariances, batching, compilation reuse, and the cosine distance."""

from __future__ import annotations

import math
import time

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.cluster import Icosahedron
from ase.neighborlist import neighbor_list

import jcsp  # noqa: F401  (float64)
from jcsp.neighbors import required_images
from jcsp.search import fingerprint as fpm
from jcsp.structures.convert import from_atoms

from lammps_ref import random_structure

A_SI = 5.431
BOND = A_SI * math.sqrt(3) / 4


def lonsdaleite(bond=BOND, symbol="Si"):
    """Ideal hexagonal diamond (P6_3/mmc, 4f with z = 1/16) with the given bond length."""
    a = bond * math.sqrt(8 / 3)
    c = a * math.sqrt(8 / 3)
    z = 1 / 16
    return Atoms(symbol * 4, cell=[[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]],
                 scaled_positions=[(1 / 3, 2 / 3, z), (2 / 3, 1 / 3, z + 0.5),
                                   (1 / 3, 2 / 3, 0.5 - z), (2 / 3, 1 / 3, 1 - z)], pbc=True)


def reference(atoms: Atoms, spec: fpm.FingerprintSpec) -> np.ndarray:
    """The paper's double sum, term by term: ASE neighbor list, exact erf bin integrals."""
    z = atoms.numbers
    if atoms.pbc.all():
        i, j, d = neighbor_list("ijd", atoms, spec.reach)
        volume = atoms.cell.volume
    else:
        dist = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
        i, j = np.nonzero(~np.eye(len(atoms), dtype=bool) & (dist < spec.reach))
        d, volume = dist[i, j], 1.0
    edges = np.arange(spec.n_bins + 1) * spec.bin_width
    erf = np.vectorize(math.erf)
    out = []
    for a, b in spec.pairs:
        sel = (z[i] == a) & (z[j] == b)
        cdf = 0.5 * erf((edges[None, :] - d[sel, None]) / (math.sqrt(2) * spec.sigma))
        smeared = (cdf[:, 1:] - cdf[:, :-1]) / spec.bin_width
        total = np.sum(smeared / (4 * np.pi * d[sel, None] ** 2), axis=0)
        density = np.sum(z == a) * np.sum(z == b) / volume
        out.append(total / density - (1.0 if atoms.pbc.all() else 0.0))
    return np.array(out)


def test_matches_the_formula_on_thin_triclinic_two_species_cells():
    rng = np.random.default_rng(3)
    structures = []
    for k in range(3):
        cell, pos = random_structure(rng, 7, 14.0, 1.9, thin=k > 0)[:2]
        structures.append(Atoms(numbers=[14, 6, 14, 6, 6, 14, 14], positions=pos, cell=cell,
                                pbc=True))
    spec = fpm.default_spec(structures, length=2.0)
    ours = fpm.fingerprints(structures, spec)
    assert ours.shape == (3, 3, spec.n_bins)
    for atoms, fp in zip(structures, ours):
        ref = reference(atoms, spec)
        assert np.max(np.abs(ref)) > 1.0  # peaks exist: not vacuous
        np.testing.assert_allclose(fp, ref, atol=1e-3 * np.max(np.abs(ref)))


def test_matches_the_formula_on_a_cluster():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(9, 3)) * 1.5
    atoms = Atoms(numbers=[18] * 5 + [36] * 4, positions=pos, pbc=False)
    spec = fpm.default_spec([atoms])
    assert spec.r_max > 1.05 * np.ptp(pos, axis=0).max()  # all pairs on the grid
    fp = fpm.fingerprints([atoms], spec)[0]
    ref = reference(atoms, spec)
    assert np.max(ref) > 0.01  # peaks exist
    np.testing.assert_allclose(fp, ref, atol=1e-3 * np.max(np.abs(ref)))


def shell_count(fp_row, spec, r_lo, r_hi, shell, density_per_a):
    """Neighbours per A atom in [r_lo, r_hi): integrate (F + 1) rho 4 pi R_shell^2 dR."""
    sel = (spec.radii >= r_lo) & (spec.radii < r_hi)
    return np.sum(fp_row[sel] + 1.0) * spec.bin_width * density_per_a * 4 * np.pi * shell**2


def test_shell_counts_of_diamond_lonsdaleite_and_rock_salt():
    spec = fpm.FingerprintSpec((14,), r_max=6.0, n_bins=300, sigma=0.03)
    dia, lon = bulk("Si", "diamond", A_SI), lonsdaleite()
    fp = fpm.fingerprints([dia, lon], spec)
    rho_d, rho_l = len(dia) / dia.get_volume(), len(lon) / lon.get_volume()
    # Diamond: 4 at d, 12 at a/sqrt2, 12 at a sqrt(11)/4. Lonsdaleite: 4 at d, 12 at
    # d sqrt(8/3), and one eclipsed neighbour at 5d/3 (3.92 Å) where diamond has none.
    for r, count in ((BOND, 4), (A_SI / math.sqrt(2), 12), (A_SI * math.sqrt(11) / 4, 12)):
        assert shell_count(fp[0, 0], spec, r - 0.2, r + 0.2, r, rho_d) == pytest.approx(
            count, rel=2e-3)
    sharp = fpm.FingerprintSpec((14,), r_max=4.5, n_bins=900, sigma=0.01)
    fl = fpm.fingerprints([lon], sharp)[0, 0]
    for r, count in ((BOND, 4), (BOND * math.sqrt(8 / 3), 12), (5 * BOND / 3, 1)):
        assert shell_count(fl, sharp, r - 0.035, r + 0.035, r, rho_l) == pytest.approx(
            count, rel=2e-3)
    # Rock salt: every Na has 6 Cl at a/2 and 12 Na at a/sqrt2 (rows: Na-Na, Na-Cl, Cl-Cl).
    nacl = bulk("NaCl", "rocksalt", 5.64)
    spec2 = fpm.FingerprintSpec((11, 17), r_max=5.0, n_bins=250, sigma=0.03)
    f = fpm.fingerprints([nacl], spec2)[0]
    assert spec2.pairs == ((11, 11), (11, 17), (17, 17))
    rho = 1 / nacl.get_volume()  # one Cl (or Na) per Na ... per cell volume
    assert shell_count(f[1], spec2, 2.6, 3.0, 2.82, rho) == pytest.approx(6, rel=2e-3)
    assert shell_count(f[0], spec2, 3.8, 4.2, 5.64 / math.sqrt(2), rho) == pytest.approx(
        12, rel=2e-3)
    assert np.all(np.abs(f[0][spec2.radii < 3.5] + 1) < 1e-6)  # no Na-Na below a/sqrt2


def test_invariant_under_rotation_translation_permutation_supercell_and_cell_choice():
    rng = np.random.default_rng(1)
    cell, pos = random_structure(rng, 6, 15.0, 2.0)[:2]
    base = Atoms(numbers=[8, 8, 22, 8, 22, 8], positions=pos, cell=cell, pbc=True)
    rotated = base.copy()
    rotated.rotate(37, (1, 2, 3), rotate_cell=True)
    rotated.translate([0.3, -1.1, 2.0])
    permuted = base[rng.permutation(len(base))]
    supercell = base.repeat((2, 1, 3))
    skewed = base.copy()
    skewed.set_cell(np.array([[1, 0, 0], [3, 1, 0], [-2, 5, 1]]) @ base.cell[:],
                    scale_atoms=False)  # the same lattice in a very skewed basis
    variants = [base, rotated, permuted, supercell, skewed]
    spec = fpm.default_spec([base])
    fp = fpm.fingerprints(variants, spec)
    w = fpm.pair_weights(spec, [a.numbers for a in variants])
    assert np.allclose(w, w[0]) and np.max(np.abs(fp[0])) > 1.0
    for k in range(1, len(variants)):
        np.testing.assert_allclose(fp[k], fp[0], atol=1e-9)
        assert float(fpm.cosine_distance(fp[0], fp[k], w[0])) < 1e-12
    np.testing.assert_allclose(fp[0], reference(base, spec), atol=1e-3 * np.abs(fp[0]).max())


def test_diamond_and_lonsdaleite_are_apart_rattled_copies_are_close():
    dia, lon = bulk("Si", "diamond", A_SI), lonsdaleite()
    spec = fpm.default_spec([dia])
    assert spec.r_max == pytest.approx(3 * BOND)
    copies = []
    for k, atoms in enumerate((dia, lon)):
        c = atoms.repeat((2, 2, 2))
        c.rattle(0.01 * BOND, seed=k)
        copies.append(c)
    fp = fpm.fingerprints([dia, lon] + copies, spec)
    w = fpm.pair_weights(spec, [dia.numbers])[0]
    d = lambda a, b: float(fpm.cosine_distance(fp[a], fp[b], w))  # noqa: E731
    assert d(0, 1) > 0.015
    assert d(0, 2) < 2e-3 and d(1, 3) < 2e-3
    assert d(0, 3) > 0.015 and d(1, 2) > 0.015


def test_cosine_distance_weighted_formula():
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(2, 3, 10))
    spec = fpm.FingerprintSpec((5, 7), r_max=5.0, n_bins=10, sigma=0.1)
    w = fpm.pair_weights(spec, [[5, 5, 7, 7, 7]])[0]  # N_B = 2, N_N = 3
    np.testing.assert_allclose(w, np.array([2 * 2, 2 * 3, 3 * 3]) / 19)
    num = sum(w[p] * f1[p] @ f2[p] for p in range(3))
    den = math.sqrt(sum(w[p] * f1[p] @ f1[p] for p in range(3))
                    * sum(w[p] * f2[p] @ f2[p] for p in range(3)))
    assert float(fpm.cosine_distance(f1, f2, w)) == pytest.approx(0.5 * (1 - num / den))
    assert float(fpm.cosine_distance(f1, f1, w)) == pytest.approx(0.0, abs=1e-15)
    assert float(fpm.cosine_distance(f1, -f1, w)) == pytest.approx(1.0)
    batch = fpm.cosine_distance(np.stack([f1, f1]), np.stack([f2, -f1]), np.stack([w, w]))
    np.testing.assert_allclose(batch, [0.5 * (1 - num / den), 1.0])


def test_batched_equals_single_and_padding_is_inert():
    structures = [bulk("Si", "diamond", A_SI), lonsdaleite(), bulk("Si", "fcc", 3.9),
                  bulk("Si", "diamond", A_SI, cubic=True)]
    spec = fpm.default_spec(structures[:1])
    batched = fpm.fingerprints(structures, spec)  # reduced cells, grouped, chunked
    box = tuple(int(n) for n in np.max([required_images(a.cell[:], spec.reach, (True,) * 3)
                                         for a in structures], axis=0))
    for k, atoms in enumerate(structures):
        pop = from_atoms([atoms], n_max=12)  # one structure, unreduced cell, padded atoms
        single = fpm.fingerprint_population(pop, spec, images=box, pbc=pop.pbc)[0]
        np.testing.assert_allclose(np.asarray(single), batched[k], atol=1e-10)


def test_repeated_calls_reuse_the_compiled_program():
    rng = np.random.default_rng(5)
    make = lambda: [bulk("Si", "diamond", A_SI * s).repeat((1, 1, 2))  # noqa: E731
                    for s in rng.uniform(0.98, 1.02, 3)]
    spec = fpm.default_spec(make()[:1])
    fpm.fingerprints(make(), spec)
    before = fpm.fingerprint_population._cache_size()
    fpm.fingerprints(make(), spec)
    fpm.fingerprints(make()[:2], spec)
    assert fpm.fingerprint_population._cache_size() == before


def test_clusters_distinguish_isomers():
    ico = Icosahedron("Ar", 2)  # 13 atoms
    other = Atoms("Ar13", positions=bulk("Ar", "fcc", 5.26, cubic=True).repeat(2).positions[:13])
    ico_copy = ico[np.random.default_rng(0).permutation(13)]
    ico_copy.rotate(50, "z")
    spec = fpm.default_spec([ico])
    fp = fpm.fingerprints([ico, ico_copy, other], spec)
    w = fpm.pair_weights(spec, [ico.numbers])[0]
    assert float(fpm.cosine_distance(fp[0], fp[1], w)) < 1e-12
    assert float(fpm.cosine_distance(fp[0], fp[2], w)) > 0.05


def test_bad_input_is_refused():
    spec = fpm.FingerprintSpec((14,), r_max=6.0, n_bins=60, sigma=0.05)
    with pytest.raises(ValueError, match="species"):
        fpm.fingerprints([bulk("NaCl", "rocksalt", 5.64)], spec)
    with pytest.raises(ValueError, match="sorted"):
        fpm.FingerprintSpec((14, 8), r_max=6.0, n_bins=60, sigma=0.05)
    with pytest.raises(ValueError, match="positive"):
        fpm.FingerprintSpec((14,), r_max=-1.0, n_bins=60, sigma=0.05)


def test_many_structures_grouped_and_chunked_match_the_formula():
    """The batching a thousand-structure call goes through, at CI size: 36 strained
    two-atom cells and 36 eight-atom ones need different image boxes (groups of at least
    MIN_GROUP per box, so both stay apart: two compiled programs), run in chunks of 16
    with a padded last chunk; each structure against the paper's formula."""
    rng = np.random.default_rng(4)
    structures = []
    for k in range(72):
        atoms = bulk("Si", "diamond", A_SI, cubic=k % 2 == 1)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.02 * rng.normal(size=(3, 3))),
                       scale_atoms=True)
        atoms.rattle(0.05, seed=k)
        structures.append(atoms)
    spec = fpm.FingerprintSpec((14,), r_max=7.0, n_bins=70, sigma=0.1)  # boxes 3 and 2
    assert fpm.MIN_GROUP <= 36
    before = fpm.fingerprint_population._cache_size()
    fp = fpm.fingerprints(structures, spec, chunk=16)
    assert fpm.fingerprint_population._cache_size() - before == 2  # two groups compiled
    assert fp.shape == (72, 1, spec.n_bins)
    for atoms, row in zip(structures, fp):
        ref = reference(atoms, spec)
        assert np.max(np.abs(ref)) > 1.0  # peaks exist
        np.testing.assert_allclose(row, ref, atol=1e-3 * np.max(np.abs(ref)))
    # rattled and strained differently: every row is its own structure's
    assert np.abs(fp[0] - fp[2]).max() > 1e-2


@pytest.mark.slow
def test_thousand_structures_take_seconds():
    rng = np.random.default_rng(0)
    structures = []
    for _ in range(1000):
        n = int(rng.integers(8, 33))
        cell, pos = random_structure(rng, n, 20.0, 2.0)[:2]
        structures.append(Atoms(numbers=[14] * n, positions=pos, cell=cell, pbc=True))
    spec = fpm.default_spec(structures[:10])
    start = time.perf_counter()
    fp = fpm.fingerprints(structures, spec)
    first = time.perf_counter() - start
    start = time.perf_counter()
    fpm.fingerprints(structures, spec)
    again = time.perf_counter() - start
    print(f"1000 fingerprints: {first:.2f} s with compilation, {again:.2f} s after "
          f"({jax.devices()[0].platform})")
    assert fp.shape == (1000, 1, spec.n_bins) and again < 30

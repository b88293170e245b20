"""The fast paths of ionic relaxations against independent references.

- The factorised reciprocal sum of :mod:`jcsp.potentials.ewald` (one exponential table
  per reduced axis, contractions instead of a cos/sin per (atom, k)) equals a direct
  numpy Ewald sum written here from the textbook formulas (ASE's neighbor list for real
  space, an explicit loop over k vectors for reciprocal space), per atom, for any box
  that holds the k sphere.
- The serial schedule of the relaxation kernel (slots one after another, the CPU
  default) gives the same relaxations as the vmapped one (accelerators).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list
from scipy.special import erfc

import jcsp
from jcsp import neighbors as nl
from jcsp.potentials import LennardJones
from jcsp.potentials.buckingham import BuckinghamCoulomb
from jcsp.potentials.ewald import half_space, make_spec
from jcsp.relax import driver, kernel
from jcsp.structures.convert import from_atoms
from jcsp.units import COULOMB_EV_A
import lammps_ref

RC = 6.0
CHARGES = {"Mg": 2.0, "O": -2.0, "Na": 1.0}


def _direct_ewald(atoms, alpha, gmax):
    """Per-atom Ewald energies (eV) by plain summation (Frenkel & Smit ch. 12)."""
    q = np.array([CHARGES[s] for s in atoms.get_chemical_symbols()])
    i, j, d = neighbor_list("ijd", atoms, RC)
    real = np.zeros(len(atoms))
    np.add.at(real, i, 0.5 * q[i] * q[j] * erfc(alpha * d) / d)
    cell = atoms.cell[:]
    volume = abs(np.linalg.det(cell))
    recip = 2 * np.pi * np.linalg.inv(cell).T
    need = np.ceil(gmax * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(int) + 1
    phi = np.zeros(len(atoms))
    for m in half_space(need):  # each m stands for m and -m: phi is half the full sum
        g = m @ recip
        g2 = g @ g
        if g2 > gmax**2:
            continue
        phase = atoms.positions @ g
        s_re, s_im = q @ np.cos(phase), q @ np.sin(phase)
        w = 4 * np.pi / volume * np.exp(-g2 / (4 * alpha**2)) / g2
        phi += w * (np.cos(phase) * s_re + np.sin(phase) * s_im)
    total_q = q.sum()
    self_e = -alpha / np.sqrt(np.pi) * q * q
    background = -np.pi * q * total_q / (2 * alpha**2 * volume)
    return COULOMB_EV_A * (real + q * phi + self_e + background)


@pytest.mark.parametrize("kmax", [None, (9, 11, 13)])
def test_factorised_reciprocal_sum_equals_a_direct_sum(kmax):
    rng = np.random.default_rng(3)
    structures = []
    for formula, n_units, thin in [(["Mg", "O"], 2, False), (["Mg", "O"], 3, True),
                                   (["Na", "O", "O"], 1, True), (["Mg"], 1, False)]:
        symbols = [s for _ in range(n_units) for s in formula]
        cell, pos = lammps_ref.random_structure(rng, len(symbols), 14.0, 1.7, thin=thin)
        structures.append(Atoms(symbols, positions=pos, cell=cell, pbc=True))
    spec = make_spec(RC, accuracy=1e-10)
    pot = BuckinghamCoulomb({}, CHARGES, cutoff=RC, accuracy=1e-10)  # Coulomb only
    pop = from_atoms(structures)
    pot = pot.for_cells(np.asarray(pop.cell), margin=1.0) if kmax is None else \
        BuckinghamCoulomb({}, CHARGES, cutoff=RC, accuracy=1e-10, kmax=kmax)
    lists = nl.spec_for(RC, pop.frac, pop.cell, pop.mask, pop.pbc)
    res = jcsp.evaluate_population(pot, pot.params, pop, lists)
    assert not np.asarray(res.overflow).any()
    for b, atoms in enumerate(structures):
        want = _direct_ewald(atoms, spec.alpha, spec.gmax)
        got = np.asarray(res.energies[b, :len(atoms)])
        assert np.abs(want).max() > 1.0  # not trivially zero
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


def _lj_crystals():
    rng = np.random.default_rng(11)
    out = []
    for k in range(5):
        cell, pos = lammps_ref.random_structure(rng, 4, 30.0, 3.0, thin=k == 4)
        out.append(Atoms("Ar4", positions=pos, cell=cell, pbc=True))
    return out


def test_serial_schedule_relaxes_like_the_vmapped_one(monkeypatch):
    structures = _lj_crystals()
    runs = []
    for serial in (True, False):
        monkeypatch.setattr(kernel, "serial_schedule", lambda serial=serial: serial)
        pot = LennardJones(pairs={("Ar", "Ar"): (0.0104, 3.4)}, cutoff=7.0)  # fresh caches
        before = driver.TRACE_COUNTS["segment"]
        runs.append(jcsp.relax(structures, pot, fmax=1e-3, batch_size=4,
                               steps_per_segment=25))
        assert driver.TRACE_COUNTS["segment"] - before >= 1
    serial, vmapped = runs
    assert all(a.info["converged"] for a in serial)
    assert sum(a.info["steps"] for a in serial) > 5 * len(structures)  # it did relax
    for a, b in zip(serial, vmapped):
        assert a.info["steps"] == b.info["steps"]
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-9)
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-9)
        assert a.info["energy"] == pytest.approx(b.info["energy"], abs=1e-10)

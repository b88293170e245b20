"""Lennard-Jones against LAMMPS (lj/cut, shifted, lj/smooth/linear) and known cluster minima."""

import numpy as np
import pytest

import jcsp
from jcsp import neighbors as nl
from jcsp.potentials import LennardJones
from jcsp.structures.population import stack
import lammps_ref

CASES = [  # (truncation, LAMMPS lines)
    ("plain", ["pair_style lj/cut {rc}", "pair_coeff 1 1 {e11} {s11}", "pair_coeff 1 2 {e12} {s12}",
               "pair_coeff 2 2 {e22} {s22}"]),
    ("shift", ["pair_style lj/cut {rc}", "pair_coeff 1 1 {e11} {s11}", "pair_coeff 1 2 {e12} {s12}",
               "pair_coeff 2 2 {e22} {s22}", "pair_modify shift yes"]),
    ("smooth", ["pair_style lj/smooth/linear {rc}", "pair_coeff 1 1 {e11} {s11}",
                "pair_coeff 1 2 {e12} {s12}", "pair_coeff 2 2 {e22} {s22}"]),
]
PAIRS = {("Ar", "Ar"): (0.0104, 3.40), ("Ar", "Kr"): (0.0123, 3.50), ("Kr", "Kr"): (0.0140, 3.65)}


def _relerr(a, b, floor):
    """Largest deviation relative to the largest reference component (or ``floor``,
    for arrays that vanish by symmetry, e.g. forces in a one-atom cell)."""
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), floor)


@pytest.mark.lammps
@pytest.mark.parametrize("truncation,lines", CASES)
def test_two_species_matches_lammps(truncation, lines):
    rc = 8.0
    pot = LennardJones(cutoff=rc, pairs=PAIRS, truncation=truncation)
    fmt = dict(rc=rc, e11=0.0104, s11=3.40, e12=0.0123, s12=3.50, e22=0.0140, s22=3.65)
    rng = np.random.default_rng(11)
    # All cells are thinner than 2 x cutoff (16 Å); the "thin" ones are skewed slabs.
    structures = [lammps_ref.random_structure(rng, n, 35.0, 2.5, thin=thin)
                  for n, thin in ((1, False), (5, False), (9, False), (16, True), (32, True))]
    symbols = [["Ar" if rng.random() < 0.5 else "Kr" for _ in range(len(p))] for _, p in structures]
    numbers = [[18 if s == "Ar" else 36 for s in sym] for sym in symbols]
    cells = [c for c, _ in structures]
    fracs = [p @ np.linalg.inv(c) for c, p in structures]
    pop = stack(fracs, cells, numbers, n_max=32)
    spec = nl.spec_for(rc, pop.frac, pop.cell, pop.mask, pop.pbc)
    res = jcsp.evaluate_population(pot, pot.params, pop, spec)
    for b, ((cell, pos), sym) in enumerate(zip(structures, symbols)):
        e, f, s = lammps_ref.run(cell, pos, sym, [line.format(**fmt) for line in lines],
                                types=["Ar", "Kr"])
        n = len(sym)
        assert abs(float(res.energy[b]) - e) <= 1e-8 * abs(e)
        assert _relerr(res.forces[b, :n], f, 1e-6) <= 1e-8
        assert _relerr(res.stress[b], s, 1e-8) <= 1e-8
        if n > 1:
            assert np.abs(f).max() > 1e-4  # forces are there to compare


def test_lj13_icosahedron_is_the_known_minimum():
    from ase.cluster import Icosahedron
    from ase.optimize import BFGS
    atoms = Icosahedron("Ar", 2)
    atoms.positions *= 2 ** (1 / 6) / atoms.get_distance(0, 1)
    atoms.calc = jcsp.JCSPCalculator(LennardJones(1.0, 1.0, cutoff=None))
    BFGS(atoms, logfile=None).run(fmax=1e-6)
    assert atoms.get_potential_energy() == pytest.approx(-44.326801, abs=2e-6)  # Wales & Doye 1997


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="truncation"):
        LennardJones(1, 1, 3.0, truncation="soft")
    with pytest.raises(ValueError, match="every pair"):
        LennardJones(cutoff=5.0, pairs={("Ar", "Ar"): (1, 1), ("Kr", "Kr"): (1, 1)})
    with pytest.raises(ValueError, match="unknown element"):
        LennardJones(cutoff=5.0, pairs={("Ar", "Xx"): (1, 1)})

"""EAM (funcfl, setfl, Finnis-Sinclair) against LAMMPS ``pair_style eam``, ``eam/alloy``
and ``eam/fs``, plus file reading and a published number."""

import os

import jax
import numpy as np
import pytest
from ase.build import bulk
from ase.data import atomic_numbers

import jcsp
import lammps_ref
from jcsp import neighbors as nl
from jcsp.potentials.eam import EAM, spline_coefficients
from jcsp.structures.population import stack

POT = lammps_ref.POTENTIALS


#: The derivative engine, compiled once per potential and neighbor spec.
evaluate = jax.jit(jcsp.evaluate_population, static_argnums=(0, 3))


random_crystal = lammps_ref.random_crystal


def relerr(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def density_probe(pot: EAM) -> EAM:
    """Same densities, F(rho) = rho and no pair term: per-atom energy = host density."""
    t = len(pot.species)
    line = np.broadcast_to(np.arange(pot.nrho) * pot.drho, (t, pot.nrho))
    return EAM(pot.species, line, pot.tables["density"], 0.0 * pot.tables["z2"],
               drho=pot.drho, dr=pot.dr, cutoff=pot.cutoff)


def compressed_fcc(rng, symbols):
    atoms = bulk("Cu", "fcc", a=2.40, cubic=True)     # nearest neighbours at 1.70 Å
    atoms.rattle(0.04, rng=rng)
    atoms.set_chemical_symbols(symbols)
    return atoms.cell[:], atoms.positions


def structures(rng, elements, volume_per_atom, min_dist, *, every_element=False):
    """A 1-atom cell, thin skewed cells and bulk-like cells up to 32 atoms."""
    out = []
    for n, thin in ((1, False), (3, True), (8, False), (14, True), (32, False)):
        if every_element and n < len(elements):
            continue
        cell, pos = random_crystal(rng, n, volume_per_atom, min_dist, thin=thin)
        sym = list(rng.choice(elements, n))
        if every_element:
            sym[:len(elements)] = elements
        out.append((cell, pos, sym))
    return out


CASES = {  # id: (files, pair_style, elements, volume per atom, min distance)
    "funcfl-Cu_u3": (["Cu_u3.eam"], "eam", ["Cu"], 11.8, 1.9),
    "setfl-CuNi": (["CuNi.eam.alloy"], "eam/alloy", ["Cu", "Ni"], 11.5, 1.9),
    "fs-AlFe": (["AlFe_mm.eam.fs"], "eam/fs", ["Al", "Fe"], 13.5, 2.1),
    "funcfl-Cu_u3+Ni_u3": (["Cu_u3.eam", "Ni_u3.eam"], "eam", ["Cu", "Ni"], 11.5, 1.9),
}


def lammps_lines(files, style, types):
    if style != "eam":
        return [f"pair_style {style}", f"pair_coeff * * {POT}/{files[0]} " + " ".join(types)]
    by_element = {EAM.from_lammps(os.path.join(POT, f)).species[0]: f for f in files}
    return ["pair_style eam"] + [f"pair_coeff {k + 1} {k + 1} {POT}/{by_element[atomic_numbers[e]]}"
                                 for k, e in enumerate(types)]


@pytest.mark.lammps
@pytest.mark.parametrize("case", list(CASES))
def test_matches_lammps(case):
    files, style, elements, vpa, min_dist = CASES[case]
    pot = EAM.from_lammps([os.path.join(POT, f) for f in files])
    rng = np.random.default_rng(list(CASES).index(case))
    # LAMMPS resamples several funcfl files onto the grid of those in use: every
    # structure must then hold every element for the grids to be the same.
    several = len(files) > 1
    cases = structures(rng, elements, vpa, min_dist, every_element=several)
    if case == "funcfl-Cu_u3":
        cases.append((*compressed_fcc(rng, ["Cu"] * 4), ["Cu"] * 4))
    pop = stack([p @ np.linalg.inv(c) for c, p, _ in cases], [c for c, _, _ in cases],
                [[atomic_numbers[s] for s in sym] for _, _, sym in cases], n_max=32)
    spec = nl.spec_for(pot.cutoff, pop.frac, pop.cell, pop.mask, pop.pbc)
    res = evaluate(pot, pot.params, pop, spec)
    assert not bool(np.any(res.overflow))
    if case == "funcfl-Cu_u3":   # the compressed cell reaches past the embedding table
        probe = density_probe(pot)
        rho = np.asarray(evaluate(probe, probe.params, pop, spec).energies[-1, :4])
        assert rho.max() > pot.rhomax and rho.min() > 0.2
    for b, (cell, pos, sym) in enumerate(cases):
        n = len(sym)
        thickness = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0).max()
        assert thickness < 2 * pot.cutoff          # all of these need several images
        e, f, s = lammps_ref.run(cell, pos, sym, lammps_lines(files, style, sorted(set(sym))))
        assert abs(float(res.energy[b]) - e) <= 1e-8 * abs(e), (case, n)
        assert relerr(res.stress[b], s) <= 1e-8, (case, n)
        if n > 1:
            assert np.abs(f).max() > 1e-3            # forces are there to compare
            assert relerr(res.forces[b, :n], f) <= 1e-8, (case, n)
        else:
            assert np.abs(np.asarray(res.forces[b, 0])).max() < 1e-12


@pytest.mark.lammps
def test_cu_u3_cohesive_energy_and_lattice():
    """Foiles, Baskes & Daw, PRB 33, 7983 (1986): fcc Cu, a = 3.615 Å, E_c = 3.54 eV."""
    pot = EAM.from_lammps(os.path.join(POT, "Cu_u3.eam"))
    a = np.array([3.60, 3.615, 3.63])
    cells = [bulk("Cu", "fcc", a=x).cell[:] for x in a]
    pop = stack([np.zeros((1, 3))] * 3, cells, [[29]] * 3, n_max=1)
    spec = nl.spec_for(pot.cutoff, pop.frac, pop.cell, pop.mask, pop.pbc)
    res = evaluate(pot, pot.params, pop, spec)
    e = np.asarray(res.energy)
    assert e[1] == pytest.approx(-3.54, abs=2e-3)
    assert e[1] < e[0] and e[1] < e[2]
    p = -np.trace(np.asarray(res.stress[1])) / 3 * jcsp.units.EV_PER_A3_IN_GPA
    assert abs(p) < 0.5                               # GPa: equilibrium lattice constant


@pytest.mark.lammps
def test_reading_files():
    cu = EAM.from_lammps(os.path.join(POT, "Cu_u3.eam"))
    assert cu.species == (29,) and cu.cutoff == pytest.approx(4.95)
    # LAMMPS's funcfl grid drops the file's last point but keeps its rhomax.
    assert cu.nr == 499 and cu.nrho == 499 and cu.rhomax == pytest.approx(499 * cu.drho)
    cuni = EAM.from_lammps(os.path.join(POT, "CuNi.eam.alloy"))
    assert cuni.species == (28, 29) and cuni.nr == 500
    # setfl: a neighbor's density does not depend on the host element.
    np.testing.assert_array_equal(cuni.tables["density"][:, 0], cuni.tables["density"][:, 1])
    fs = EAM.from_lammps(os.path.join(POT, "AlFe_mm.eam.fs"))
    assert fs.species == (13, 26)
    assert np.abs(fs.tables["density"][1, 0] - fs.tables["density"][1, 1]).max() > 1e-3
    fe = EAM.from_lammps(os.path.join(POT, "AlFe_mm.eam.fs"), species=["Fe"])
    np.testing.assert_array_equal(fe.tables["z2"][0, 0], fs.tables["z2"][1, 1])
    np.testing.assert_array_equal(fe.tables["density"][0, 0], fs.tables["density"][1, 1])
    swapped = EAM.from_lammps(os.path.join(POT, "CuNi.eam.alloy"), species=["Cu", "Ni"])
    np.testing.assert_array_equal(swapped.tables["z2"][0, 1], cuni.tables["z2"][1, 0])
    np.testing.assert_array_equal(swapped.tables["embedding"][0], cuni.tables["embedding"][1])


def test_spline_is_exact_for_cubics_at_knots_and_smooth():
    x = np.arange(12.0)
    f = 0.3 * x**3 - x**2 + 2 * x - 1
    c = spline_coefficients(f)
    # Values at both ends of every interval.
    np.testing.assert_allclose(c[:-1, 3], f[:-1])
    np.testing.assert_allclose(c[:-1].sum(-1), f[1:], rtol=1e-12)
    # Slopes are continuous across knots (the 5-point formula is exact for cubics inside).
    slope_end = 3 * c[:-1, 0] + 2 * c[:-1, 1] + c[:-1, 2]
    np.testing.assert_allclose(slope_end[:-1], c[1:-1, 2], rtol=1e-12)
    np.testing.assert_allclose(c[2:-3, 2], 0.9 * x[2:-3] ** 2 - 2 * x[2:-3] + 2, rtol=1e-12)


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="format"):
        EAM.from_lammps(tmp_path / "Cu.table")
    bad = tmp_path / "bad.eam.alloy"
    bad.write_text("c\nc\nc\n1 Cu\n10 0.1 10 0.1 0.9\n29 63.5 3.6 fcc\n1 2 3\n")
    with pytest.raises(ValueError, match="ended early"):
        EAM.from_lammps(bad)
    bad.write_text("c\nc\nc\n1 Cu\n10 0.1 10 0.1 0.9\n29 63.5 3.6 fcc\n" + "1 x\n" * 40)
    with pytest.raises(ValueError, match="not a number"):
        EAM.from_lammps(bad)
    bad.write_text("c\nc\nc\n1 Xq\n10 0.1 10 0.1 0.9\n29 63.5 3.6 fcc\n" + "1.0\n" * 40)
    with pytest.raises(ValueError, match="chemical symbols"):
        EAM.from_lammps(bad)


@pytest.mark.lammps
def test_bad_selections_of_lammps_files_are_refused():
    with pytest.raises(ValueError, match="species"):
        EAM.from_lammps(os.path.join(POT, "CuNi.eam.alloy"), species=["Fe"])
    with pytest.raises(ValueError, match="funcfl"):
        EAM.from_lammps([os.path.join(POT, "CuNi.eam.alloy"), os.path.join(POT, "Cu_u3.eam")])

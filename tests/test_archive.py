"""The archive of unique structures (degenerate polymorphs stay apart, copies merge,
space groups, ranking) and the convex hull (hand-computed and against ASE's
PhaseDiagram)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.cluster import Icosahedron
from ase.phasediagram import PhaseDiagram

import jcsp  # noqa: F401  (float64)
from jcsp.search import fingerprint as fpm
from jcsp.search.archive import Archive, reduced_composition
from jcsp.search.hull import convex_hull, lower_hull, annotate

import lammps_ref
from test_fingerprint import A_SI, lonsdaleite

SW = ["pair_style sw", f"pair_coeff * * {lammps_ref.POTENTIALS}/Si.sw Si"]


def sw_energy(atoms: Atoms) -> Atoms:
    """Attach the LAMMPS Stillinger-Weber energy (zero pressure: enthalpy = energy)."""
    energy = lammps_ref.run(atoms.cell[:], atoms.positions, atoms.get_chemical_symbols(),
                            SW)[0]
    atoms.info.update(energy=energy, enthalpy=energy, volume=atoms.get_volume())
    return atoms


def copy_of(atoms: Atoms, seed: int, *, rattle: float) -> Atoms:
    """A rattled, rotated, translated, permuted supercell of ``atoms``."""
    rng = np.random.default_rng(seed)
    out = atoms.repeat((2, 1, 2))
    out.rattle(rattle, seed=seed)
    out.rotate(rng.uniform(0, 180), rng.normal(size=3), rotate_cell=True)
    out.translate(rng.normal(size=3))
    return out[rng.permutation(len(out))]


@pytest.mark.lammps  # skipped by conftest without the lmp binary
def test_degenerate_diamond_and_lonsdaleite_stay_apart_copies_merge():
    dia = sw_energy(bulk("Si", "diamond", A_SI))
    lon = sw_energy(lonsdaleite())
    # Exactly degenerate with Stillinger-Weber: same energy and density (LAMMPS).
    assert dia.info["energy"] / 2 == pytest.approx(lon.info["energy"] / 4, abs=1e-9)
    assert dia.info["energy"] / 2 == pytest.approx(-4.3366, abs=1e-4)
    assert dia.get_volume() / 2 == pytest.approx(lon.get_volume() / 4, rel=1e-12)
    # Copies as a relaxation to fmax ~ 0.05 eV/Å leaves them: displacements ~ 0.005 Å.
    copies = [sw_energy(copy_of(a, k, rattle=0.005)) for k, a in enumerate((dia, lon) * 2)]
    assert all(c.info["energy"] / len(c) > dia.info["energy"] / 2 + 1e-6 for c in copies)

    archive = Archive()
    results = archive.add([copies[0], dia, lon] + copies[1:])
    assert [r.status for r in results] == ["new", "replaced", "new", "duplicate",
                                           "duplicate", "duplicate"]
    assert [r.entry for r in results] == [0, 0, 1, 1, 0, 1]
    assert len(archive) == 2 and archive.n_duplicates == 4
    weights = fpm.pair_weights(archive.spec_for(dia), [dia.numbers])[0]
    d_polymorphs = float(fpm.cosine_distance(results[1].fingerprint, results[2].fingerprint,
                                             weights))
    assert d_polymorphs > 3 * archive.fp_tol           # well apart ...
    assert max(r.distance for r in results[3:]) < archive.fp_tol / 3  # ... copies close

    by_group = {s.info["spacegroup"]: s for s in archive.structures}
    assert set(by_group) == {"Fd-3m (227)", "P6_3/mmc (194)"}
    assert by_group["Fd-3m (227)"].info["spacegroups"] == {
        0.1: "Fd-3m (227)", 0.01: "Fd-3m (227)", 0.001: "Fd-3m (227)"}
    assert by_group["Fd-3m (227)"].info["hits"] == 3    # the copy, diamond, a copy
    assert by_group["Fd-3m (227)"].info["found_at"] == 1
    assert len(by_group["Fd-3m (227)"]) == 2             # the perfect cell replaced the copy
    assert by_group["P6_3/mmc (194)"].info["hits"] == 3


def labelled(atoms: Atoms, energy: float, **info) -> Atoms:
    atoms = atoms.copy()
    atoms.info.update(energy=energy, enthalpy=energy, **info)
    return atoms


def test_each_criterion_alone_separates():
    dia = bulk("Si", "diamond", A_SI)
    e = -4.3366 * 2
    # Same structure, enthalpy 5 meV/atom apart: different (energy criterion).
    archive = Archive(v_tol=1.0, fp_tol=1.0)
    archive.add([labelled(dia, e), labelled(dia, e + 0.01)])
    assert len(archive) == 2
    # Same energy, 3 % volume apart, fingerprint ignored: different (volume criterion).
    squeezed = dia.copy()
    squeezed.set_cell(dia.cell[:] * 0.99, scale_atoms=True)
    archive = Archive(fp_tol=1.0)
    archive.add([labelled(dia, e), labelled(squeezed, e)])
    assert len(archive) == 2
    # Within every tolerance but the fingerprint: different (diamond vs lonsdaleite
    # scaled to the same energy and density in this synthetic test).
    archive = Archive(e_tol=1.0, v_tol=1.0)
    archive.add([labelled(dia, e), labelled(lonsdaleite(), 2 * e)])
    assert len(archive) == 2
    # All loose: one entry, the lower one kept.
    archive = Archive(e_tol=1.0, v_tol=1.0, fp_tol=1.0)
    res = archive.add([labelled(dia, e + 0.01), labelled(squeezed, e)])
    assert len(archive) == 1 and res[1].status == "replaced"
    assert archive.best.info["energy"] == e


def test_ranking_batches_compositions_clusters_and_invalid_input():
    dia = bulk("Si", "diamond", A_SI)
    fcc = bulk("Si", "fcc", 3.85)
    nacl = bulk("NaCl", "rocksalt", 5.64)
    structures = [labelled(fcc, -4.0, driver="random"), labelled(dia, -8.6, driver="ga"),
                  labelled(nacl, -6.0), labelled(nacl.repeat((1, 1, 2)), -12.0),
                  labelled(dia, math.nan)]
    one_batch = Archive()
    results = one_batch.add(structures)
    assert [r.status for r in results] == ["new", "new", "new", "duplicate", "invalid"]
    assert one_batch.n_invalid == 1 and one_batch.n_added == 5
    one_by_one = Archive()
    for atoms in structures:
        one_by_one.add(atoms)
    for a, b in zip(one_batch.structures, one_by_one.structures):
        assert a.info == b.info and np.array_equal(a.positions, b.positions)
    per_atom = [s.info["enthalpy"] / len(s) for s in one_batch.structures]
    assert per_atom == sorted(per_atom) and per_atom[0] == -4.3
    assert one_batch.best.info["driver"] == "ga"
    assert one_batch.best.info["spacegroup"] == "Fd-3m (227)"
    assert reduced_composition(nacl.repeat(2).numbers) == ((11, 1), (17, 1))

    ico = Icosahedron("Ar", 2)
    turned = ico[np.random.default_rng(1).permutation(len(ico))]
    turned.rotate(70, "x")
    clusters = Archive()
    res = clusters.add([labelled(ico, -44.3268), labelled(turned, -44.3268),
                        labelled(Atoms("Ar13", positions=ico.positions * [1, 1, 1.3]), -40.0)])
    assert [r.status for r in res] == ["new", "duplicate", "new"]
    assert clusters.best.info["spacegroup"] == "-" and math.isnan(clusters.best.info["volume"])

    with pytest.raises(ValueError, match="energy"):
        Archive().add(dia)
    with pytest.raises(ValueError, match="fp_tol"):
        Archive(fp_tol=-1)


# --- convex hull --------------------------------------------------------------------
def made(formula: str, energy_per_atom: float) -> Atoms:
    atoms = Atoms(formula, positions=np.arange(3 * len(Atoms(formula))).reshape(-1, 3),
                  cell=np.eye(3) * 10, pbc=True)
    atoms.info["enthalpy"] = energy_per_atom * len(atoms)
    return atoms


def test_hull_by_hand():
    # Cu at -3.5, Au at -3.0 eV/atom; formation enthalpies CuAu -0.30, Cu3Au -0.20 (below
    # the Cu-CuAu tie line, -0.15 at x = 1/4: a corner), CuAu3 -0.10 (the CuAu-Au line is
    # -0.15 at x = 3/4: 0.05 above), a second Cu 0.10 above.
    entries = [made("Cu", -3.5), made("Cu", -3.4), made("Au", -3.0),
               made("CuAu", -3.25 - 0.30), made("Cu3Au", -3.375 - 0.20),
               made("CuAu3", -3.125 - 0.10)]
    hull = convex_hull(entries)
    assert hull.elements == (29, 79)
    assert hull.references == {29: -3.5, 79: -3.0}
    np.testing.assert_allclose(hull.fraction, [0, 0, 1, 0.5, 0.25, 0.75])
    np.testing.assert_allclose(hull.formation, [0, 0.1, 0, -0.3, -0.2, -0.1], atol=1e-12)
    np.testing.assert_allclose(hull.above_hull, [0, 0.1, 0, 0, 0, 0.05], atol=1e-12)
    assert hull.vertices == (0, 4, 3, 2)
    assert float(hull.hull_energy(0.125)) == pytest.approx(-0.1)
    annotated = annotate(entries, hull)
    assert annotated[5].info["e_above_hull"] == pytest.approx(0.05)
    assert lower_hull([0, 0.5, 1, 0.5], [0, -1, 0, -2]) == [0, 3, 2]
    assert lower_hull([0, 0.5, 1], [0, 0, 0]) == [0, 2]          # collinear: no corner


def test_hull_against_ase_phase_diagram():
    rng = np.random.default_rng(7)
    formulas = ["Mg", "O", "MgO", "Mg2O", "MgO2", "Mg3O", "MgO3", "Mg3O2", "Mg2O3", "MgO",
                "Mg4O", "Mg"]
    entries = [made(f, e) for f, e in zip(formulas, rng.uniform(-1.5, 0.2, len(formulas)))]
    entries[0].info["enthalpy"] = -1.0
    entries[1].info["enthalpy"] = -0.5 * 2
    entries[-1].info["enthalpy"] = -0.9     # a higher Mg polymorph
    hull = convex_hull(entries)
    refs = [(a.get_chemical_formula(), a.info["enthalpy"]) for a in entries]
    pd = PhaseDiagram(refs, verbose=False)
    for k, atoms in enumerate(entries):
        e_hull = pd.decompose(atoms.get_chemical_formula())[0]
        assert hull.above_hull[k] == pytest.approx(
            (atoms.info["enthalpy"] - e_hull) / len(atoms), abs=1e-12)
    assert any(hull.above_hull > 0.01) and len(hull.vertices) > 2  # not vacuous
    on_hull = {refs[k][0] for k in np.flatnonzero(pd.hull)}
    assert {refs[k][0] for k in hull.vertices} == on_hull


def test_hull_errors_and_unary():
    si = [made("Si", -4.0), made("Si2", -4.3)]
    hull = convex_hull(si)
    assert hull.vertices == (1,) and hull.above_hull[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="one or two"):
        convex_hull([made("Si", -1), made("O", -1), made("C", -1)])
    with pytest.raises(ValueError, match="no pure O"):
        convex_hull([made("Si", -1), made("SiO2", -2)])
    hull = convex_hull([made("Si", -1), made("SiO2", -2)], references={"O": -0.5})
    assert hull.formation[1] == pytest.approx(-2 + 1 / 3 + 0.5 * 2 / 3)
    assert hull.elements == (8, 14)  # fraction counts Si
    assert hull.vertices == (1, 0)   # SiO2, Si; the O corner is only a reference
    np.testing.assert_allclose(hull.corners, [[0, 0], [1 / 3, hull.formation[1]], [1, 0]])

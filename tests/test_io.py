"""jcsp.io: structure files in and out, potentials by name, data; space-group labels
(jcsp.structures.symmetry).

Round trips compare with the structure written; space groups with the textbook groups of
diamond, rock salt, bcc and hcp; the shipped Si.sw with LAMMPS's own Si.sw through LAMMPS.
"""

from __future__ import annotations


import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from jcsp.io import (EXAMPLE_POPULATION, SI_SW, InputError, load_potential, read_format,
                     read_structures, write_structures)
from jcsp.potentials import EAM, LennardJones, StillingerWeber
from jcsp.structures.population import bucket_size
from jcsp.structures.symmetry import spacegroup

POT_DIR = "/usr/share/lammps/potentials"


def triclinic_nacl(seed=0):
    """A rattled, sheared 8-atom NaCl cell (two species, no symmetry)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.uniform(-0.08, 0.08, (3, 3))),
                   scale_atoms=True)
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    atoms.wrap()
    return atoms


def assert_same_structure(a, b, *, tol=1e-6, cellpar_only=False):
    assert list(a.get_chemical_symbols()) == list(b.get_chemical_symbols())
    if cellpar_only:  # CIF stores lengths and angles: compare those and fractional coords
        np.testing.assert_allclose(a.cell.cellpar(), b.cell.cellpar(), atol=tol)
        d = a.get_scaled_positions(wrap=True) - b.get_scaled_positions(wrap=True)
        np.testing.assert_allclose(d - np.round(d), 0.0, atol=tol)
    else:
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=tol)
        np.testing.assert_allclose(a.positions, b.positions, atol=tol)


# --- round trips ------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["extxyz", "poscar", "cif"])
def test_round_trip(tmp_path, fmt):
    structures = [triclinic_nacl(0), triclinic_nacl(1)[:5]]
    target = tmp_path / ("s.extxyz" if fmt == "extxyz" else "out")
    written = write_structures(structures, target, fmt)
    assert len(written) == (1 if fmt == "extxyz" else 2)
    back = read_structures(written)
    assert len(back) == 2
    for a, b in zip(structures, back):
        assert_same_structure(a, b, cellpar_only=fmt == "cif")


def test_extxyz_keeps_info_and_results(tmp_path):
    atoms = triclinic_nacl()
    forces = np.random.default_rng(3).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-12.5, forces=forces,
                                       stress=np.arange(6.0) * 1e-3)
    atoms.info.update(energy=-12.5, enthalpy=-12.0, converged=True, failed=False,
                      steps=np.int64(17), failure_reason="", note=None, table={"a": 1})
    (path,) = write_structures([atoms], tmp_path, "extxyz")
    assert path.name == "structures.extxyz"
    (back,) = read_structures(path)
    assert back.get_potential_energy() == -12.5
    np.testing.assert_allclose(back.get_forces(), forces, atol=1e-7)
    np.testing.assert_allclose(back.get_stress(), np.arange(6.0) * 1e-3, atol=1e-12)
    assert back.info["enthalpy"] == -12.0 and back.info["steps"] == 17
    assert back.info["converged"] is True and back.info["failed"] is False
    assert "failure_reason" not in back.info and "table" not in back.info


def test_multi_frame_and_traj(tmp_path):
    frames = [triclinic_nacl(s) for s in range(3)]
    ase.io.write(tmp_path / "many.xyz", frames, format="extxyz")
    ase.io.write(tmp_path / "many.traj", frames)
    for name in ("many.xyz", "many.traj"):
        back = read_structures(tmp_path / name)
        assert [a.info["source"] for a in back] == [f"{name}:{k}" for k in range(3)]
        for a, b in zip(frames, back):
            assert_same_structure(a, b)


def test_formats_from_names(tmp_path):
    assert read_format("x/POSCAR") == read_format("CONTCAR_7") == "vasp"
    assert read_format("a.VASP") == read_format("b.poscar") == "vasp"
    assert read_format("c.cif") == "cif" and read_format("d.xyz") == "extxyz"
    atoms = triclinic_nacl()
    ase.io.write(tmp_path / "CONTCAR", atoms, format="vasp", direct=True)
    (back,) = read_structures(tmp_path / "CONTCAR")
    assert back.info["source"] == "CONTCAR"
    assert_same_structure(atoms, back)


def test_cluster_reads_and_refuses_cif(tmp_path):
    cluster = Atoms("Ar3", positions=[[0, 0, 0], [3.8, 0, 0], [0, 3.8, 0]])
    ase.io.write(tmp_path / "c.xyz", cluster, format="extxyz")
    (back,) = read_structures(tmp_path / "c.xyz")
    assert not back.pbc.any()
    assert spacegroup(back) == "-"
    with pytest.raises(InputError, match="cluster"):
        write_structures([back], tmp_path / "cif", "cif")
    with pytest.raises(InputError, match="unknown output format"):
        write_structures([back], tmp_path / "x", "pdb")


# --- bad input --------------------------------------------------------------------
POSCAR_OK = """Si2
1.0
 5.43 0 0
 0 5.43 0
 0 0 5.43
Si
2
Direct
0 0 0
0.25 0.25 0.25
"""

CIF_HEAD = """data_x
_cell_length_a 5.43
_cell_length_b 5.43
_cell_length_c 5.43
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
"""

BAD_FILES = {
    # name: (content, regex the message must match)
    "truncated.cif": (CIF_HEAD.replace("_cell_length_c 5.43", "_cell_length_c")
                      + "Si1 Si 0 0\n", r"truncated\.cif: malformed CIF"),
    "garbage.cif": ("this is not a CIF\n", r"garbage\.cif: malformed CIF"),
    "POSCAR": (POSCAR_OK.replace(" 0 0 5.43", " 0 0"),
               r"POSCAR: malformed POSCAR file: line 5 must hold lattice vector c"),
    "scale.vasp": (POSCAR_OK.replace("1.0", "one", 1), r"scale\.vasp: .*line 2.*scale"),
    "nosymbols.vasp": (POSCAR_OK.replace("Si2\n", "my structure\n").replace("\nSi\n", "\n"),
                       r"nosymbols\.vasp: malformed POSCAR file: no element symbols"),
    "counts.vasp": (POSCAR_OK.replace("\n2\n", "\n3\n"),
                    r"counts\.vasp: .*counts give 3 atoms but only 2 coordinate lines"),
    "coords.vasp": (POSCAR_OK.replace("0.25 0.25 0.25", "0.25 0.25 x"),
                    r"coords\.vasp: .*line 10 must hold 3 coordinates, not '0.25 0.25 x'"),
    "element.cif": (CIF_HEAD + "Xq1 Xq 0 0 0\nSi1 Si 0.5 0.5 0.5\n",
                    r"element\.cif: unknown element symbol 'Xq'"),
    "element.vasp": (POSCAR_OK.replace("\nSi\n", "\nQq\n"),
                     r"element\.vasp: unknown element symbol 'Qq'"),
    "element.xyz": ('2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 '
                    'pbc="T T T"\nQq 0 0 0\nSi 2 2 2\n', r"unknown element symbol 'Qq'"),
    "dummy.xyz": ('2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 '
                  'pbc="T T T"\nX 0 0 0\nSi 2 2 2\n', r"unknown element symbol 'X'"),
    "flat.vasp": (POSCAR_OK.replace(" 0 0 5.43", " 0 0 0"), r"flat\.vasp: cell has zero "
                  "volume"),
    "overlap.vasp": (POSCAR_OK.replace("0.25 0.25 0.25", "0.001 0 0"),
                     r"overlap\.vasp: atoms overlap"),
    # overlapping only through the periodic boundary
    "image.vasp": (POSCAR_OK.replace("0.25 0.25 0.25", "0.999 0 0"),
                   r"image\.vasp: atoms overlap"),
    "partial.cif": (CIF_HEAD.replace("_atom_site_fract_z\n", "_atom_site_fract_z\n"
                                     "_atom_site_occupancy\n")
                    + "Si1 Si 0 0 0 0.5\nGe1 Ge 0 0 0 0.5\n",
                    r"partial\.cif: site 0 is partially occupied"),
    "empty.cif": ("", r"empty\.cif: file is empty"),
    "nan.xyz": ('1\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 '
                'pbc="T T T"\nSi nan 0 0\n', r"nan\.xyz: positions contain NaN"),
    "unknown.dat": ("1 2 3\n", r"unknown\.dat: cannot read this file.*name it"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_clear_errors(tmp_path, name):
    content, pattern = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=pattern) as info:
        read_structures(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.cif: no such file"):
        read_structures(tmp_path / "nothing.cif")
    with pytest.raises(InputError, match="is a directory"):
        read_structures(tmp_path)


def test_good_poscar_reads(tmp_path):
    (tmp_path / "ok.vasp").write_text(POSCAR_OK)
    (atoms,) = read_structures(tmp_path / "ok.vasp")
    assert atoms.get_chemical_formula() == "Si2"
    np.testing.assert_allclose(atoms.positions[1], [1.3575] * 3, atol=1e-12)


# --- space groups -----------------------------------------------------------------
@pytest.mark.parametrize("atoms,label", [
    (bulk("Si", "diamond", a=5.431, cubic=True), "Fd-3m (227)"),
    (bulk("Si", "diamond", a=5.431), "Fd-3m (227)"),
    (bulk("NaCl", "rocksalt", a=5.64), "Fm-3m (225)"),
    (bulk("Fe", "bcc", a=2.87, cubic=True), "Im-3m (229)"),
    (bulk("Mg", "hcp", a=3.21, c=5.21), "P6_3/mmc (194)"),
])
def test_spacegroup_of_textbook_crystals(atoms, label):
    assert spacegroup(atoms) == label


def test_spacegroup_tolerance():
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms.rattle(0.01, seed=2)
    assert spacegroup(atoms) == "P1 (1)"
    assert spacegroup(atoms, symprec=0.1) == "Fd-3m (227)"


# --- potentials by name -----------------------------------------------------------
def test_load_lennard_jones():
    lj = load_potential("lj")
    assert isinstance(lj, LennardJones) and lj.cutoff == 3.0 and lj.truncation == "shift"
    lj = load_potential("LJ: epsilon=0.0104, sigma=3.4, cutoff=8.5, truncation=smooth")
    assert lj.cutoff == 8.5 and lj.truncation == "smooth"
    assert float(lj.params["epsilon"][0, 0]) == 0.0104
    assert float(lj.params["sigma"][0, 0]) == 3.4
    assert load_potential("lj:sigma=2").cutoff == 6.0
    assert load_potential("lj:cutoff=none").cutoff is None


@pytest.mark.parametrize("spec,pattern", [
    ("morse", r"unknown potential 'morse'; choose one of: sw-si.*\.sw.*\.eam.*lj.*\.toml"),
    ("lj:eps=1", r"bad Lennard-Jones option 'eps=1'"),
    ("lj:sigma=abc", r"sigma must be a number"),
    ("lj:cutoff=-2", r"Lennard-Jones: cutoff must be > 0, not -2.0"),
    ("lj:epsilon=inf", r"Lennard-Jones: epsilon must be a finite number, not inf"),
    ("lj:sigma=0", r"Lennard-Jones: sigma must be > 0"),
    ("lj:truncation=cubic", r"Lennard-Jones: truncation must be"),
    ("nowhere/Si.sw", r"nowhere/Si\.sw: potential file not found"),
    ("nowhere/Cu.eam.alloy", r"potential file not found"),
])
def test_load_potential_errors(spec, pattern):
    with pytest.raises(InputError, match=pattern):
        load_potential(spec)


def test_shipped_sw_gives_published_diamond_energy():
    from jcsp import JCSPCalculator

    sw = load_potential("sw-si")
    assert sw.species == (14,)
    assert abs(sw.cutoff - 1.8 * 2.0951) < 1e-12
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms.calc = JCSPCalculator(sw)
    # Stillinger & Weber (1985): perfect diamond has E = -2 epsilon per atom (each atom
    # has four bonds at 2.35 Å; the three-body term vanishes at the tetrahedral angle).
    r = 5.431 * np.sqrt(3) / 4
    e2 = 2.1683 * 7.049556277 * (0.6022245584 * (2.0951 / r) ** 4 - 1) \
        * np.exp(1 / (r / 2.0951 - 1.8))
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(2 * e2, rel=1e-10)
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-4.3366, abs=2e-3)
    atoms.rattle(0.05, seed=1)
    assert np.abs(atoms.get_forces()).max() > 0.1


@pytest.mark.lammps  # Debian's potential files
def test_load_other_sw_and_eam_files():
    assert isinstance(load_potential(f"{POT_DIR}/Si.sw"), StillingerWeber)
    assert isinstance(load_potential(f"{POT_DIR}/Cu_u3.eam"), EAM)
    assert isinstance(load_potential(f"{POT_DIR}/CuNi.eam.alloy"), EAM)


def test_malformed_potential_file(tmp_path):
    bad = tmp_path / "bad.sw"
    bad.write_text("Si Si Si 2.1683 2.0951 1.80\n")
    with pytest.raises(InputError, match=r"bad\.sw: cannot read"):
        load_potential(str(bad))


# --- shipped data -----------------------------------------------------------------
def test_example_population():
    structures = read_structures(EXAMPLE_POPULATION)
    assert len(structures) == 8
    assert {a.get_chemical_formula(empirical=True) for a in structures} == {"Si"}
    assert len({a.info["name"] for a in structures}) == 8
    assert {bucket_size(len(a)) for a in structures} == {4, 8, 16}
    for atoms in structures:
        volume = atoms.get_volume() / len(atoms)
        assert 13.0 < volume < 24.0  # beta-tin is dense, diamond ~20 Å³/atom
        assert spacegroup(atoms) in ("P1 (1)", "P-1 (2)")  # rattled: little symmetry


@pytest.mark.lammps
def test_shipped_sw_file_matches_lammps_si_sw():
    """LAMMPS with our Si.sw and with its own gives the same energy, forces, stress."""
    import lammps_ref

    rng = np.random.default_rng(7)
    cell, pos = lammps_ref.random_structure(rng, 8, 20.0, 2.1)
    ours = lammps_ref.run(cell, pos, ["Si"] * 8, ["pair_style sw", f"pair_coeff * * {SI_SW} Si"])
    ref = lammps_ref.run(cell, pos, ["Si"] * 8,
                         ["pair_style sw", f"pair_coeff * * {POT_DIR}/Si.sw Si"])
    assert abs(ref[1]).max() > 0.1  # not vacuous
    # the two files differ only in the digits of cos(theta0) = -1/3 (1e-12 relative)
    assert ours[0] == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-9 * abs(ref[1]).max())
    np.testing.assert_allclose(ours[2], ref[2], atol=1e-9 * abs(ref[2]).max())

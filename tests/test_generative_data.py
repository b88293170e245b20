"""jcsp.generative.data: crystal collections (Perov-5 CSV, extxyz, CIF), the Perov-5 cache
and padded Niggli-reduced packing, checked against pymatgen as an independent CIF parser
and Niggli reducer."""

from __future__ import annotations

import csv
import gzip
import math
import os
import pathlib

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from jcsp.generative.data import Crystals, DataError, pack, perov5, read_collection
from jcsp.ml.data import DataError as MLDataError

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEROV5 = next(p for p in (ROOT.parent / "shared" / "data" / "perov_5",
                          pathlib.Path("/work/shared/data/perov_5")) if p.is_dir())
N_ROWS = 12


def _head_rows(n=N_ROWS):
    """The header and first n rows of the real Perov-5 test split."""
    with gzip.open(PEROV5 / "test.csv.gz", "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [next(reader) for _ in range(n)]
    return header, rows


def _write_csv(path, header, rows, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def head():
    return _head_rows()


@pytest.fixture(scope="module")
def crystals(head, tmp_path_factory):
    path = _write_csv(tmp_path_factory.mktemp("perov") / "head.csv", *head)
    return read_collection(path)


def _sorted_distances(atoms: Atoms, cutoff=7.0) -> np.ndarray:
    """Every periodic interatomic distance below cutoff (Å), sorted: the same list for any
    choice of unit cell of the same crystal."""
    d = neighbor_list("d", atoms, cutoff)
    assert len(d) > 10 * len(atoms)
    return np.sort(d)


def _assert_same_sites(symbols, frac, ref: Structure):
    """Each atom is one site of ref with the same species and fractional coordinates mod 1
    (pymatgen orders the sites of a CIF its own way)."""
    assert sorted(symbols) == sorted(s.symbol for s in ref.species)
    used = set()
    for sym, f in zip(symbols, frac):
        d = ref.frac_coords - f
        d = np.abs(d - np.round(d)).max(axis=1)
        hits = [j for j in np.flatnonzero(d < 1e-8) if ref.species[j].symbol == sym]
        assert len(hits) == 1 and hits[0] not in used, (sym, f)
        used.add(hits[0])


def test_one_error_type():
    assert DataError is MLDataError


def test_csv_rows_match_pymatgen(head, crystals):
    header, rows = head
    assert len(crystals) == N_ROWS
    icif, iheat, iform, iid = (header.index(c) for c in ("cif", "heat_all", "formula",
                                                          "material_id"))
    for atoms, row in zip(crystals, rows):
        ref = Structure.from_str(row[icif], fmt="cif")
        # same cell, same sites (species and fractional coordinates)
        np.testing.assert_allclose(atoms.cell.cellpar(), list(ref.lattice.abc)
                                   + list(ref.lattice.angles), atol=1e-8)
        _assert_same_sites(atoms.get_chemical_symbols(), atoms.get_scaled_positions(), ref)
        # the columns, typed
        assert atoms.info["heat_all"] == float(row[iheat])
        assert atoms.info["formula"] == row[iform]
        assert atoms.info["material_id"] == int(row[iid])
        assert isinstance(atoms.info["spacegroup.number"], int)
        assert "cif" not in atoms.info and "cif.conv" not in atoms.info
        assert "" not in atoms.info and "Unnamed: 0" not in atoms.info


def test_pack_round_trip_against_pymatgen(head, crystals):
    header, rows = head
    for niggli in (False, True):
        packed = pack(crystals, niggli=niggli)
        assert packed.z.shape == (N_ROWS, 5) and packed.z.dtype == np.int32
        assert packed.frac.shape == (N_ROWS, 5, 3) and packed.lattice.shape == (N_ROWS, 3, 3)
        assert packed.mask.all() and list(packed.n_atoms) == [5] * N_ROWS
        assert np.all((packed.frac >= 0) & (packed.frac < 1))
        np.testing.assert_array_equal(packed.energy,
                                      [float(r[header.index("heat_all")]) for r in rows])
        for i, row in enumerate(rows):
            ref = Structure.from_str(row[header.index("cif")], fmt="cif")
            atoms = packed.to_atoms(i)
            assert atoms.info["heat_all"] == packed.energy[i]
            assert abs(atoms.cell.volume - ref.volume) < 1e-6
            # Cartesian = frac @ lattice (rows are lattice vectors)
            np.testing.assert_allclose(atoms.positions, packed.frac[i] @ packed.lattice[i],
                                       atol=1e-12)
            # the same crystal as pymatgen's independent reading of the CIF
            ref_atoms = Atoms([s.symbol for s in ref.species], cell=ref.lattice.matrix,
                              scaled_positions=ref.frac_coords, pbc=True)
            np.testing.assert_allclose(_sorted_distances(atoms), _sorted_distances(ref_atoms),
                                       atol=1e-7)
            if not niggli:
                _assert_same_sites(atoms.get_chemical_symbols(), packed.frac[i], ref)


def _skewed(atoms: Atoms, transform) -> Atoms:
    """The same crystal described by the basis transform @ cell (unimodular transform)."""
    out = atoms.copy()
    out.set_cell(np.array(transform) @ atoms.cell.array, scale_atoms=False)
    out.wrap()
    return out


def test_niggli_reduction_keeps_the_crystal(crystals):
    transforms = [[[1, 1, 0], [0, 1, 0], [1, 0, 1]], [[1, 0, 0], [2, 1, 0], [-1, 1, 1]],
                  [[0, 1, 0], [1, 0, 0], [0, 3, 1]]]  # the last one is left-handed
    originals = [crystals[i] for i in range(len(transforms))]
    skewed = [_skewed(a, t) for a, t in zip(originals, transforms)]
    for a, b in zip(originals, skewed):   # the skewed cells really are longer
        assert b.cell.lengths().max() > a.cell.lengths().max() + 1.0
    packed = pack(skewed)
    matcher = StructureMatcher(stol=0.05, angle_tol=1, ltol=0.02, primitive_cell=False,
                               scale=False)
    for i, (orig, sk) in enumerate(zip(originals, skewed)):
        red = packed.to_atoms(i)
        # same interatomic distances, same crystal by pymatgen's matcher
        np.testing.assert_allclose(_sorted_distances(red), _sorted_distances(orig), atol=1e-7)
        s_red = Structure(red.cell.array, red.numbers, red.get_scaled_positions())
        s_orig = Structure(orig.cell.array, orig.numbers, orig.get_scaled_positions())
        rms = matcher.get_rms_dist(s_red, s_orig)
        assert rms is not None and rms[0] < 1e-6
        # Niggli form: a <= b <= c and the reduced cell of pymatgen's own Niggli reduction
        lat = packed.lattice[i]
        a, b, c = np.linalg.norm(lat, axis=1)
        assert a <= b + 1e-9 <= c + 2e-9
        ref = Lattice(sk.cell.array).get_niggli_reduced_lattice()
        np.testing.assert_allclose([a, b, c], ref.abc, atol=1e-7)
        np.testing.assert_allclose(Lattice(lat).angles, ref.angles, atol=1e-5)
        # ASE's standard orientation: a along x, b in the xy plane
        assert abs(lat[0, 1]) < 1e-12 and abs(lat[0, 2]) < 1e-12 and abs(lat[1, 2]) < 1e-12
        assert np.linalg.det(lat) > 0


def test_padding_masks_and_subset(crystals):
    si = bulk("Si", "diamond", a=5.43)                   # 2 atoms
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)  # 8 atoms
    cu.info["heat_all"] = -0.5
    mixed = [crystals[0], si, cu]
    packed = pack(mixed, niggli=False)
    assert packed.n_max == 8 and len(packed) == 3
    np.testing.assert_array_equal(packed.n_atoms, [5, 2, 8])
    np.testing.assert_array_equal(packed.mask.sum(1), [5, 2, 8])
    for i, atoms in enumerate(mixed):
        n = len(atoms)
        assert packed.mask[i, :n].all() and not packed.mask[i, n:].any()
        assert (packed.z[i, n:] == 0).all() and (packed.z[i, :n] > 0).all()
        assert (packed.frac[i, n:] == 0).all()
        back = packed.to_atoms(i)
        np.testing.assert_array_equal(back.numbers, atoms.numbers)
        np.testing.assert_allclose(back.cell.array, atoms.cell.array)
        d = back.get_scaled_positions(wrap=False) - atoms.get_scaled_positions(wrap=False)
        np.testing.assert_allclose(d - np.round(d), 0, atol=1e-12)
    assert math.isnan(packed.energy[1]) and packed.energy[2] == -0.5
    assert "heat_all" not in packed.to_atoms(1).info
    sub = packed.subset([2, 0])
    np.testing.assert_array_equal(sub.n_atoms, [8, 5])
    np.testing.assert_array_equal(sub.z[1], packed.z[0])
    assert len(packed.subset(np.array([True, False, True]))) == 2
    assert len(packed.to_atoms_list()) == 3
    wide = pack(mixed, n_max=10, energy_key="nothing")
    assert wide.z.shape == (3, 10) and np.isnan(wide.energy).all()
    with pytest.raises(ValueError, match="shape"):
        Crystals(packed.z, packed.frac[:, :4], packed.lattice, packed.mask, packed.energy)


def test_pack_bad_input(crystals):
    with pytest.raises(DataError, match="empty"):
        pack([])
    with pytest.raises(DataError, match="n_max=4"):
        pack(crystals[:2], n_max=4)
    molecule = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    with pytest.raises(DataError, match="crystal 1 .*not a 3D periodic"):
        pack([crystals[0], molecule])
    bad = crystals[0].copy()
    bad.info["heat_all"] = "high"
    with pytest.raises(DataError, match="not a number"):
        pack([bad])


def test_extxyz_cif_and_directory(crystals, tmp_path):
    structs = [crystals[0], bulk("Si", "diamond", a=5.43), bulk("Cu", "fcc", a=3.6)]
    for i, s in enumerate(structs):
        s.info = {"heat_all": float(i), "label": f"s{i}"}
    ase.io.write(tmp_path / "set.extxyz", structs)
    ase.io.write(tmp_path / "set.cif", structs)
    (tmp_path / "README.txt").write_text("not a structure")
    from_xyz = read_collection(tmp_path / "set.extxyz")
    from_cif = read_collection(str(tmp_path / "set.cif"))
    assert len(from_xyz) == len(from_cif) == 3
    for a, b, c in zip(structs, from_xyz, from_cif):
        assert a.get_chemical_formula() == b.get_chemical_formula() == c.get_chemical_formula()
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(_sorted_distances(c), _sorted_distances(a), atol=1e-5)
        assert b.info["heat_all"] == a.info["heat_all"] and b.info["label"] == a.info["label"]
    with pytest.warns(UserWarning, match="skipped 1 entries.*README.txt"):
        both = read_collection(tmp_path)
    assert len(both) == 6
    packed = pack(from_xyz)
    np.testing.assert_array_equal(packed.energy, [0.0, 1.0, 2.0])


def test_malformed_csv_rows(head, tmp_path):
    header, rows = head
    icif = header.index("cif")
    broken = [list(r) for r in rows[:4]]
    broken[2][icif] = "data_broken\n_cell_length_a 4.0\nthis is not a CIF loop"
    path = _write_csv(tmp_path / "broken.csv.gz", header, broken, gz=True)
    with pytest.raises(DataError, match=r"broken\.csv\.gz: row 3 .*line"):
        read_collection(path)
    short = [list(r) for r in rows[:3]]
    short[1] = short[1][:4]
    path = _write_csv(tmp_path / "short.csv", header, short)
    with pytest.raises(DataError, match=r"short\.csv: row 2 .*4 fields, the header has"):
        read_collection(path)
    empty_cif = [list(r) for r in rows[:2]]
    empty_cif[0][icif] = " "
    with pytest.raises(DataError, match="row 1 .*empty 'cif'"):
        read_collection(_write_csv(tmp_path / "empty.csv", header, empty_cif))
    no_cif = [h if h != "cif" else "structure" for h in header]
    with pytest.raises(DataError, match="no 'cif' column"):
        read_collection(_write_csv(tmp_path / "nocif.csv", no_cif, rows[:2]))
    with pytest.raises(DataError, match="no such file"):
        read_collection(tmp_path / "missing.csv")
    (tmp_path / "garbage.extxyz").write_text("3\nnot extxyz\nH 0 0\n")
    with pytest.raises(DataError, match="garbage.extxyz: cannot read"):
        read_collection(tmp_path / "garbage.extxyz")


def test_perov5_cache(head, tmp_path, monkeypatch):
    folder = tmp_path / "perov"
    folder.mkdir()
    _write_csv(folder / "val.csv.gz", *head, gz=True)
    monkeypatch.setenv("JCSP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("JCSP_NO_CACHE", raising=False)
    first = perov5("val", root=folder)
    cached = list((tmp_path / "cache" / "datasets").glob("val-*.npz"))
    assert len(cached) == 1
    monkeypatch.setenv("JCSP_PEROV5", str(folder))
    second = perov5("val")           # from the cache, found through JCSP_PEROV5
    assert len(first) == len(second) == N_ROWS
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        assert a.info == b.info
        assert all(type(a.info[k]) is type(b.info[k]) for k in a.info)
    # the cache is what was read: a corrupted cache file is noticed and replaced
    cached[0].write_bytes(b"not an npz")
    with pytest.warns(RuntimeWarning, match="unreadable cache"):
        third = perov5("val")
    np.testing.assert_array_equal(third[5].positions, first[5].positions)
    # a changed file gets a new cache entry
    _write_csv(folder / "val.csv.gz", head[0], head[1][:3], gz=True)
    os.utime(folder / "val.csv.gz", ns=(1, 10**18))
    assert len(perov5("val")) == 3
    assert len(list((tmp_path / "cache" / "datasets").glob("val-*.npz"))) == 2


def test_perov5_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="train, val, test"):
        perov5("validation")
    monkeypatch.setenv("JCSP_PEROV5", str(tmp_path))
    with pytest.raises(DataError, match="JCSP_PEROV5"):
        perov5("test")


def test_perov5_default_location_is_the_shared_data(tmp_path, monkeypatch):
    """With no root and no JCSP_PEROV5, perov5 reads ../shared/data/perov_5: the whole
    published test split (3785 ABX3 cells of 5 atoms, each with its heat_all)."""
    monkeypatch.delenv("JCSP_PEROV5", raising=False)
    monkeypatch.setenv("JCSP_CACHE_DIR", str(tmp_path))
    test = perov5("test")
    assert len(test) == 3785
    assert {len(a) for a in test} == {5}
    assert all(math.isfinite(a.info["heat_all"]) for a in test)

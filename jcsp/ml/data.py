"""Training data: reading labelled structures and packing them into fixed-shape batches.

Two formats are read into :class:`ase.Atoms` with a single-point calculator holding
``energy`` (eV), ``forces`` (eV/Å) and, when known, ``stress`` (eV/Å³, ASE sign):

- extended XYZ (or anything :func:`ase.io.read` understands) in ASE's convention;
- the mlearn JSON format (Zuo et al., J. Phys. Chem. A 124, 731 (2020)): a list of
  records with a pymatgen ``structure`` and ``outputs`` (``energy``, ``forces``,
  ``virial_stress`` in kbar, VASP sign). The order of the last two shear components is
  not the same in every element's file; :func:`read_mlearn` detects it from the sheared
  cells of the set (see :func:`detect_shear_order`).

:func:`pack` turns a list of structures into batches of one static shape (``max_atoms``
atoms of up to ``max_structures`` structures, ``K`` neighbors per atom), so a training
step compiles once whatever the structure sizes. Neighbor lists of training structures
never change and are computed once, on the host, with ASE.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

from ..units import voigt_to_full

#: kbar -> eV/Å³
KBAR = 1.0 / 1602.1766208


class DataError(ValueError):
    """A data file that cannot be used for training or evaluation."""


def read_structures(path: str, *, require_forces: bool = True) -> list[Atoms]:
    """Labelled structures from an extxyz/ASE-readable file or an mlearn JSON file.

    Raises:
      DataError: unreadable file, or a structure without energy (or forces, when
        ``require_forces``), naming the file and the structure's index.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if path.endswith(".json"):
        structures = read_mlearn(path)
    else:
        import ase.io
        try:
            structures = ase.io.read(path, index=":")
        except Exception as exc:  # ASE raises many types for malformed files
            raise DataError(f"{path}: cannot read structures ({exc})") from exc
    if not structures:
        raise DataError(f"{path}: no structures")
    for i, atoms in enumerate(structures):
        calc = atoms.calc
        results = getattr(calc, "results", {}) if calc is not None else {}
        if "energy" not in results:
            raise DataError(f"{path}: structure {i} ({atoms.get_chemical_formula()}) has no "
                            "energy; training and evaluation need energies (and forces)")
        if require_forces and "forces" not in results:
            raise DataError(f"{path}: structure {i} ({atoms.get_chemical_formula()}) has no "
                            "forces; add them or drop the structure")
        if "forces" in results and np.shape(results["forces"]) != (len(atoms), 3):
            raise DataError(f"{path}: structure {i} has forces of shape "
                            f"{np.shape(results['forces'])} for {len(atoms)} atoms")
    return structures


def detect_shear_order(cells: np.ndarray, virials: np.ndarray) -> str:
    """Which of ``"yz,xz"`` / ``"xz,yz"`` the last two virial slots hold.

    A cell sheared in the ij plane has a large off-diagonal metric ``(L L^T)_ij`` and, to
    first order, a shear stress in the same ij slot (opposite sign in VASP's convention).
    The order that correlates better over the whole set wins; with no sheared cell the
    documented mlearn order ``xy, yz, xz`` is kept.

    Args:
      cells: [M, 3, 3] lattice rows; virials: [M, 6] in the file's order.
    """
    metric = np.einsum("mij,mkj->mik", cells, cells)
    scale = np.trace(metric, axis1=1, axis2=2)[:, None] / 3.0
    g = np.stack([metric[:, 1, 2], metric[:, 0, 2]], 1) / scale  # yz, xz
    documented = -np.sum(g[:, 0] * virials[:, 4] + g[:, 1] * virials[:, 5])
    swapped = -np.sum(g[:, 0] * virials[:, 5] + g[:, 1] * virials[:, 4])
    return "xz,yz" if swapped > documented and swapped > 0 else "yz,xz"


def read_mlearn(path: str) -> list[Atoms]:
    """Structures of an mlearn JSON file, in ASE units and sign conventions."""
    try:
        with open(path) as fh:
            records = json.load(fh)
        cells = np.array([r["structure"]["lattice"]["matrix"] for r in records], float)
        virials = np.array([r["outputs"].get("virial_stress") or [np.nan] * 6 for r in records],
                           float)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not an mlearn JSON list of records ({exc})") from exc
    order = detect_shear_order(cells, np.nan_to_num(virials))
    out = []
    for rec, cell, vir in zip(records, cells, virials):
        sites = rec["structure"]["sites"]
        symbols = [s["species"][0]["element"] for s in sites]
        frac = np.array([s["abc"] for s in sites], float)
        atoms = Atoms(symbols, scaled_positions=frac, cell=cell, pbc=True)
        xx, yy, zz, xy, a, b = vir
        yz, xz = (a, b) if order == "yz,xz" else (b, a)
        results = {"energy": float(rec["outputs"]["energy"]),
                   "forces": np.array(rec["outputs"]["forces"], float)}
        if np.all(np.isfinite(vir)):
            # ASE Voigt order xx yy zz yz xz xy; VASP sign is compressive-positive.
            results["stress"] = -KBAR * np.array([xx, yy, zz, yz, xz, xy])
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["group"] = rec.get("group", "")
        atoms.info["description"] = rec.get("description", "")
        out.append(atoms)
    return out


@dataclasses.dataclass
class Labels:
    """Structures and their labels as host arrays (one entry per structure)."""

    atoms: list[Atoms]
    energy: np.ndarray        # [M] eV
    forces: list[np.ndarray]  # [n_m, 3] eV/Å
    stress: np.ndarray        # [M, 3, 3] eV/Å³ (zeros where unknown)
    has_stress: np.ndarray    # [M] bool

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([len(a) for a in self.atoms])

    def __len__(self) -> int:
        return len(self.atoms)


def labels_of(structures: list[Atoms]) -> Labels:
    """Collect energies, forces and stresses (ASE's Voigt -> full 3x3)."""
    energy, forces, stress, has = [], [], [], []
    for atoms in structures:
        r = atoms.calc.results
        energy.append(float(r["energy"]))
        forces.append(np.asarray(r["forces"], float) if "forces" in r
                      else np.full((len(atoms), 3), np.nan))
        s = r.get("stress")
        ok = s is not None and all(atoms.pbc) and np.all(np.isfinite(s))
        stress.append(voigt_to_full(np.asarray(s, float)) if ok else np.zeros((3, 3)))
        has.append(ok)
    return Labels(list(structures), np.array(energy), forces, np.array(stress), np.array(has))


def fit_reference_energies(labels: Labels, species: tuple[int, ...]) -> np.ndarray:
    """Per-species energies ``e_s`` minimising ``sum_m (E_m - sum_s n_ms e_s)^2`` [S].

    With one species this is the mean energy per atom; rank-deficient sets (fixed
    stoichiometry) get the minimum-norm solution, which is fine for the fit because only
    the sum over a structure's atoms enters.
    """
    counts = np.array([[np.sum(a.numbers == z) for z in species] for a in labels.atoms], float)
    sol, *_ = np.linalg.lstsq(counts, labels.energy, rcond=None)
    return sol


def neighbor_arrays(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ASE neighbor list as per-atom rows: idx [n, k], shift [n, k, 3], count [n]."""
    if all(atoms.pbc):
        i, j, shift = neighbor_list("ijS", atoms, cutoff)
    else:
        n = len(atoms)
        d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
        i, j = np.nonzero((d < cutoff) & ~np.eye(n, dtype=bool))
        shift = np.zeros((len(i), 3), int)
    n = len(atoms)
    count = np.bincount(i, minlength=n)
    k = max(int(count.max()) if n else 0, 1)
    order = np.argsort(i, kind="stable")
    i, j, shift = i[order], j[order], shift[order]
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    slot = np.arange(len(i)) - start[i]
    idx = np.tile(np.arange(n)[:, None], (1, k))
    sh = np.zeros((n, k, 3))
    idx[i, slot] = j
    sh[i, slot] = shift
    return idx, sh, count


@dataclasses.dataclass
class Batch:
    """Structures packed into one fixed-shape batch (numpy; ``jnp.asarray`` per field).

    Atoms of structure ``m`` occupy a contiguous run; padding atoms belong to a dummy
    structure slot that is masked out.

    Attributes:
      positions: [A, 3] Å; species: [A] atomic numbers; mask: [A] real atoms;
      structure: [A] slot of each atom (0..S-1);
      nbr_idx: [A, K] (batch-level indices); nbr_shift: [A, K, 3]; nbr_mask: [A, K];
      cell: [S, 3, 3]; n_atoms: [S] (0 on empty slots); energy: [S] eV;
      forces: [A, 3]; stress: [S, 3, 3]; has_stress: [S]; slot_mask: [S] real slots.
      index: [S] position of each slot's structure in the data set (-1 when empty).
    """

    positions: np.ndarray
    species: np.ndarray
    mask: np.ndarray
    structure: np.ndarray
    nbr_idx: np.ndarray
    nbr_shift: np.ndarray
    nbr_mask: np.ndarray
    cell: np.ndarray
    n_atoms: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    has_stress: np.ndarray
    slot_mask: np.ndarray
    index: np.ndarray


@dataclasses.dataclass
class Packer:
    """Packs structures into :class:`Batch` es of one static shape.

    Attributes:
      cutoff: neighbor cutoff, Å.
      max_atoms: atoms per batch (A); at least the largest structure.
      max_structures: structure slots per batch (S).
      capacity: neighbors per atom (K); the data set's largest count.
    """

    cutoff: float
    max_atoms: int
    max_structures: int
    capacity: int

    @classmethod
    def for_data(cls, labels_list: list[Labels], cutoff: float, *, atoms_per_batch: int = 256,
                 max_structures: int | None = None) -> "Packer":
        """Shapes that fit every structure of every set given."""
        largest = max(int(lab.n_atoms.max()) for lab in labels_list)
        counts = [neighbor_arrays(a, cutoff)[2].max(initial=0)
                  for lab in labels_list for a in lab.atoms]
        max_atoms = max(atoms_per_batch, largest)
        if max_structures is None:
            smallest = min(int(lab.n_atoms.min()) for lab in labels_list)
            max_structures = max(1, min(64, max_atoms // max(smallest, 1)))
        return cls(cutoff, max_atoms, max_structures, max(int(max(counts)), 1))

    def plan(self, labels: Labels, rng: np.random.Generator | None = None) -> list[list[int]]:
        """Groups of structure indices, each fitting one batch (greedy, optional shuffle)."""
        order = np.arange(len(labels)) if rng is None else rng.permutation(len(labels))
        sizes = labels.n_atoms
        groups, current, used = [], [], 0
        for m in order:
            if current and (used + sizes[m] > self.max_atoms
                            or len(current) == self.max_structures):
                groups.append(current)
                current, used = [], 0
            current.append(int(m))
            used += int(sizes[m])
        if current:
            groups.append(current)
        return groups

    def batch(self, labels: Labels, group: list[int], cache: dict | None = None) -> Batch:
        """One padded batch of the structures ``group`` of ``labels``."""
        a_max, s_max, k = self.max_atoms, self.max_structures, self.capacity
        pad_slot = s_max - 1  # padding atoms are masked; any slot will do
        b = Batch(positions=np.zeros((a_max, 3)), species=np.zeros(a_max, np.int32),
                  mask=np.zeros(a_max, bool), structure=np.full(a_max, pad_slot, np.int32),
                  nbr_idx=np.tile(np.arange(a_max, dtype=np.int32)[:, None], (1, k)),
                  nbr_shift=np.zeros((a_max, k, 3)), nbr_mask=np.zeros((a_max, k), bool),
                  cell=np.tile(np.eye(3), (s_max, 1, 1)), n_atoms=np.zeros(s_max, np.int32),
                  energy=np.zeros(s_max), forces=np.zeros((a_max, 3)),
                  stress=np.zeros((s_max, 3, 3)), has_stress=np.zeros(s_max, bool),
                  slot_mask=np.zeros(s_max, bool), index=np.full(s_max, -1, np.int32))
        start = 0
        for slot, m in enumerate(group):
            atoms = labels.atoms[m]
            n = len(atoms)
            key = (id(labels), m)
            if cache is not None and key in cache:
                idx, shift, count = cache[key]
            else:
                idx, shift, count = neighbor_arrays(atoms, self.cutoff)
                if cache is not None:
                    cache[key] = (idx, shift, count)
            if start + n > a_max or count.max(initial=0) > k:
                raise DataError(f"structure {m} does not fit the batch shape {self}")
            sl = slice(start, start + n)
            kk = idx.shape[1]
            b.positions[sl] = atoms.positions
            b.species[sl] = atoms.numbers
            b.mask[sl] = True
            b.structure[sl] = slot
            b.nbr_idx[sl, :kk] = idx + start
            b.nbr_shift[sl, :kk] = shift
            b.nbr_mask[sl, :kk] = np.arange(kk)[None, :] < count[:, None]
            b.cell[slot] = atoms.cell[:] if all(atoms.pbc) else np.eye(3)
            b.n_atoms[slot] = n
            b.energy[slot] = labels.energy[m]
            b.forces[sl] = labels.forces[m]
            b.stress[slot] = labels.stress[m]
            b.has_stress[slot] = labels.has_stress[m]
            b.slot_mask[slot] = True
            b.index[slot] = m
            start += n
        return b

"""Per-atom surface energies by coordination: a trained model against Zuo et al.'s qSNAP.

For every slab of an mlearn element (training and test), the energy of each surface atom
above the bulk per-atom energy, from the model and from the paper's quadratic SNAP
(LAMMPS ``compute pe/atom``), averaged over the atoms with the same number of neighbours.
A per-atom split of the energy is not unique, but both models split it the same local
way; the table shows how each prices the loss of neighbours, in and beyond the data.
Needs an ``lmp`` with ML-SNAP (``JCSP_LMP``, see ``snap_reference.py``).

    JCSP_LMP=/path/to/lmp python experiments/mlearn/atom_energies.py RUN ../shared/data/mlearn/Mo
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict

import numpy as np
from ase.neighborlist import neighbor_list

from jcsp import neighbors as nl
from jcsp.graph import make_graph
from jcsp.ml import checkpoint, read_structures
from jcsp.structures.convert import from_atoms
from snap_reference import lammps_ref, snap_lines
from surface_energies import ground_state, slab_parser


def model_energies(potential, atoms) -> np.ndarray:
    """[N] per-atom energies of ``atoms`` (eV)."""
    pop = from_atoms([atoms], n_max=len(atoms))
    spec = nl.spec_for(potential.cutoff, pop.frac, pop.cell, pop.mask, pop.pbc)
    frac, cell, species, mask = pop.frac[0], pop.cell[0], pop.species[0], pop.mask[0]
    graph = make_graph(frac @ cell, cell, species, mask,
                       nl.build(spec, frac, cell, mask, pop.pbc), pop.pbc)
    return np.asarray(potential.energies(potential.params, graph))


def snap_energies(atoms, lines, mass) -> np.ndarray:
    """[N] per-atom qSNAP energies of ``atoms`` (eV)."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "pe.dump")
        lammps_ref.run(atoms.cell[:], atoms.positions, atoms.get_chemical_symbols(), lines,
                       extra=[*mass, "compute pe all pe/atom",
                              f"dump pe all custom 1 {dump} id c_pe", "dump_modify pe sort id"])
        rows = open(dump).read().splitlines()
    start = max(i for i, row in enumerate(rows) if row.startswith("ITEM: ATOMS")) + 1
    return np.array([float(row.split()[1]) for row in rows[start:start + len(atoms)]])


def main(argv=None) -> int:
    args = slab_parser(__doc__.splitlines()[0]).parse_args(argv)
    if lammps_ref.LMP is None:
        raise SystemExit("no LAMMPS found; set JCSP_LMP to an lmp built with ML-SNAP")
    potential = checkpoint.load(args.model).potential
    splits = {name: read_structures(os.path.join(args.data, f"{name}.json"))
              for name in ("training", "test")}
    element = splits["training"][0].get_chemical_symbols()[0]
    lines, mass = snap_lines(element)
    bulk = ground_state(splits["training"])
    bulk_model = model_energies(potential, bulk).mean()
    bulk_snap = snap_energies(bulk, lines, mass).mean()
    bulk_cn = int(np.bincount(neighbor_list("i", bulk, args.shell)).max())
    table = defaultdict(lambda: ([], []))
    for name, structures in splits.items():
        for atoms in structures:
            if atoms.info.get("group") != "Surface":
                continue
            ours = model_energies(potential, atoms) - bulk_model
            theirs = snap_energies(atoms, lines, mass) - bulk_snap
            cn = np.bincount(neighbor_list("i", atoms, args.shell), minlength=len(atoms))
            for i in np.flatnonzero(cn < bulk_cn):
                table[name, int(cn[i])][0].append(1e3 * ours[i])
                table[name, int(cn[i])][1].append(1e3 * theirs[i])
    print(f"per-atom energy above the bulk (meV), surface atoms by neighbours within "
          f"{args.shell} Å (bulk {bulk_cn})")
    print(f"{'split':>8s} {'neighbours':>10s} {'atoms':>5s} {'model':>7s} {'qSNAP':>7s}")
    for (name, cn) in sorted(table, key=lambda k: (k[0] != "training", -k[1])):
        ours, theirs = table[name, cn]
        print(f"{name:>8s} {cn:10d} {len(ours):5d} {np.mean(ours):7.0f} {np.mean(theirs):7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

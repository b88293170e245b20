"""Surface energies of the mlearn slabs: DFT labels against a trained model.

Every structure of the ``Surface`` group is a periodic slab with two equivalent faces
normal to its third cell vector. Its surface energy is

    gamma = (E_slab - N e_bulk) / (2 A),     A = |a x b|,

with ``e_bulk`` the lowest energy per atom among the training set's ``Elastic`` cells
(bulk at or near equilibrium), taken from the same source as ``E_slab``: the DFT labels
for the DFT column, the model's predictions for the model column. The table also gives
the lowest coordination of a surface atom (neighbours within ``--shell`` Å; 3.35 Å
counts the first two bcc shells, 14 in the bulk), the quantity a local model extrapolates
in when a test facet exposes atoms less coordinated than any training facet.

    python experiments/mlearn/surface_energies.py RUN_DIR ../shared/data/mlearn/Mo
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from ase.neighborlist import neighbor_list

from jcsp.ml import checkpoint, read_structures
from jcsp.ml.evaluate import predict_structures
from jcsp.units import EV_PER_A3_IN_GPA

#: 1 eV/Å^2 in J/m^2 (1 GPa Å = 0.1 J/m^2).
EV_PER_A2 = EV_PER_A3_IN_GPA / 10.0


def facet(atoms) -> str:
    """The Miller index in an mlearn description such as ``..._(2_1_1)``."""
    text = atoms.info.get("description", "")
    return text[text.rfind("("):].replace("_", " ") if "(" in text else "?"


def lowest_coordination(atoms, shell: float) -> int:
    """Fewest neighbours within ``shell`` Å of any atom of ``atoms``."""
    return int(np.bincount(neighbor_list("i", atoms, shell), minlength=len(atoms)).min())


def slab_parser(description: str) -> argparse.ArgumentParser:
    """Arguments shared by the per-slab scripts: a model, an mlearn element, ``--shell``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", help="a directory written by jcsp train")
    parser.add_argument("data", help="an mlearn element directory (training.json, test.json)")
    parser.add_argument("--shell", type=float, default=3.35,
                        help="coordination radius, Å (default: first two bcc Mo shells)")
    return parser


def ground_state(training):
    """The Elastic structure of ``training`` with the lowest DFT energy per atom."""
    elastic = [a for a in training if a.info.get("group") == "Elastic"]
    if not elastic:
        raise SystemExit("no Elastic structures in training.json: no bulk reference")
    return min(elastic, key=lambda a: a.get_potential_energy() / len(a))


def main(argv=None) -> int:
    args = slab_parser(__doc__.splitlines()[0]).parse_args(argv)
    potential = checkpoint.load(args.model).potential
    training = read_structures(os.path.join(args.data, "training.json"))
    test = read_structures(os.path.join(args.data, "test.json"))

    bulk = ground_state(training)
    bulk_pred = predict_structures(potential, [bulk])
    e_dft = bulk_pred.labels.energy[0] / len(bulk)
    e_model = float(bulk_pred.energy[0]) / len(bulk)
    print(f"bulk reference: {bulk.info.get('description', '')}: DFT {e_dft:.4f}, "
          f"model {e_model:.4f} eV/atom")
    print(f"{'split':>8s} {'facet':>9s} {'atoms':>5s} {'lowest CN':>9s} {'DFT gamma':>9s} "
          f"{'model':>7s} {'diff':>6s} (J/m^2)   {'E error (meV/atom)':>18s}")
    for name, structures in (("training", training), ("test", test)):
        slabs = [a for a in structures if a.info.get("group") == "Surface"]
        if not slabs:
            continue
        pred = predict_structures(potential, slabs)
        for m, atoms in enumerate(slabs):
            n = len(atoms)
            area = np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1]))
            g_dft = (pred.labels.energy[m] - n * e_dft) / (2 * area) * EV_PER_A2
            g_model = (float(pred.energy[m]) - n * e_model) / (2 * area) * EV_PER_A2
            cn = lowest_coordination(atoms, args.shell)
            err = 1e3 * (float(pred.energy[m]) - pred.labels.energy[m]) / n
            print(f"{name:>8s} {facet(atoms):>9s} {n:5d} {cn:9d} {g_dft:9.2f} {g_model:7.2f} "
                  f"{g_model - g_dft:+6.2f}             {err:+8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Published numbers of the three shipped GULP rigid-ion models, recomputed with jcsp.

- MgAl2O4 (MAGUS example ``03--4-MgAlO-fix-GULP``): the Pnma structure printed in
  MAGUS's README, as printed (E, V, H at 100 GPa, stress) and relaxed at 100 GPa.
- SrTiO3 (AIRSS + GULP example of ``disp``): cubic perovskite at a = 3.93660 Å, and
  relaxed at 0 GPa.
- TiO2 (Matsui & Akaogi 1991, XtalOpt's parameters): rutile relaxed at 0 GPa with the
  whole model and with buck + Coulomb alone (the walls left out).

Published values (MAGUS -23.395043 eV/atom; disp -149.364 eV per SrTiO3; rutile
-39.800 eV per TiO2, a = 4.4930, c = 3.0086 Å) are stored beside the computed ones.
About a minute on one core. Example:
  python experiments/rigid_ion_references.py --record experiments/results/rigid_ion_references.json
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from records import write_record  # noqa: E402

import ase.io  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

import jcsp  # noqa: E402
from jcsp.potentials import BuckinghamCoulomb  # noqa: E402
from jcsp.potentials.gulp import MGAL2O4_PNMA, gulp_potential, read_gulp_library  # noqa: E402

jax.config.update("jax_enable_x64", True)
GPA = 1 / 160.21766208  # eV/Å³ per GPa


def _single_point(potential, atoms):
    atoms = atoms.copy()
    atoms.calc = jcsp.JCSPCalculator(potential)
    stress = atoms.get_stress(voigt=False) / GPA
    return atoms.get_potential_energy(), stress


def mgal2o4() -> dict:
    potential = gulp_potential("mgal2o4-magus")
    printed = ase.io.read(MGAL2O4_PNMA)
    n = len(printed)
    energy, stress = _single_point(potential, printed)
    volume = printed.get_volume()
    (relaxed,) = jcsp.relax([printed], potential, fmax=1e-4, pressure=100.0,
                            optimizer="lbfgs", max_steps=5000)
    return {
        "printed": {"energy_eV_per_atom": energy / n, "volume_A3": volume,
                    "enthalpy_100GPa_eV_per_atom": (energy + 100 * GPA * volume) / n,
                    "stress_diagonal_GPa": np.diag(stress).tolist()},
        "relaxed_100GPa": {"enthalpy_eV_per_atom": relaxed.info["enthalpy"] / n,
                           "volume_A3": relaxed.get_volume(),
                           "cell_lengths_A": relaxed.cell.lengths().tolist(),
                           "spacegroup": jcsp.structures.spacegroup(relaxed, symprec=1e-2),
                           "converged": bool(relaxed.info["converged"])},
        "published_magus_enthalpy_eV_per_atom": -23.395043,
    }


def srtio3() -> dict:
    potential = gulp_potential("srtio3-disp")
    a = 3.93660
    cubic = Atoms("SrTiO3", cell=[a, a, a], pbc=True, scaled_positions=[
        (0, 0, 0), (.5, .5, .5), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)])
    energy, stress = _single_point(potential, cubic)
    start = cubic.copy()
    start.set_cell(cubic.cell[:] * 1.02, scale_atoms=True)
    (relaxed,) = jcsp.relax([start], potential, fmax=1e-5, optimizer="lbfgs")
    return {"a_3.93660": {"energy_eV_per_fu": energy,
                          "max_abs_stress_GPa": float(np.abs(stress).max())},
            "relaxed_0GPa": {"energy_eV_per_fu": relaxed.info["energy"],
                             "a_A": float(relaxed.cell.lengths()[0]),
                             "volume_A3_per_fu": relaxed.get_volume()},
            "published_disp": {"energy_eV_per_fu": -149.364, "volume_A3_per_fu": 61.004}}


def rutile() -> dict:
    library = read_gulp_library("tio2-matsui-akaogi")
    models = {"full_model": library.potential(),
              "buck_coulomb_only": BuckinghamCoulomb(dict(library.buck),
                                                     dict(library.charges), 15.0)}
    start = crystal(["Ti", "O"], [(0, 0, 0), (0.3, 0.3, 0)], spacegroup=136,
                    cellpar=[4.55, 4.55, 2.95, 90, 90, 90])
    out = {}
    for name, potential in models.items():
        (relaxed,) = jcsp.relax([start], potential, fmax=1e-5, optimizer="lbfgs")
        a, _, c = relaxed.cell.lengths()
        frac = relaxed.get_scaled_positions()[relaxed.numbers == 8]
        u = frac[np.isclose(frac[:, 0], frac[:, 1]), 0].min()  # O at (u, u, 0)
        out[name] = {"energy_eV_per_TiO2": relaxed.info["energy"] / 2, "a_A": float(a),
                     "c_A": float(c), "u_O": float(u),
                     "spacegroup": jcsp.structures.spacegroup(relaxed)}
    out["published"] = {"energy_eV_per_TiO2": -39.800, "a_A": 4.4930, "c_A": 3.0086}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", default=None, metavar="PATH")
    args = parser.parse_args()
    results = {"MgAl2O4": mgal2o4(), "SrTiO3": srtio3(), "TiO2_rutile": rutile()}
    for name, values in results.items():
        print(name, values)
    if args.record:
        write_record(args.record, settings={
            "models": ["mgal2o4-magus", "srtio3-disp", "tio2-matsui-akaogi"],
            "cutoff": "longest term cutoff of each model (7, 8, 15 Å)",
            "ewald_accuracy": 1e-8, "relax": "L-BFGS, fmax 1e-4 (MgAl2O4) or 1e-5 eV/Å",
            "dtype": "float64"}, results=results)


if __name__ == "__main__":
    main()

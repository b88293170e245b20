"""Hessian-based properties (jcsp.relax.properties) against independent references.

- Elastic constants against LAMMPS's own finite-strain computation, the method of its
  ``examples/ELASTIC``: strain the cell and the atoms by +-``up`` in each Voigt
  direction, relax the ions with LAMMPS's ``minimize`` at fixed cell, and take
  ``C_ab = (sigma_a(+up) - sigma_a(-up)) / (2 up)`` from LAMMPS's pressure tensor
  (``C = -dP/de``). The strains are symmetric (rotation-free), applied here; every
  strained crystal goes to one LAMMPS process (:func:`lammps_stresses`, LAMMPS's
  lower-triangular frame and back as in ``lammps_ref.run``). For
  SW diamond silicon (relaxed at zero pressure, and compressed: a hydrostatic stress),
  a low-symmetry Si8 crystal whose ions LAMMPS relaxed in a fixed random cell (a
  non-hydrostatic stress: every term of the stress correction), EAM fcc copper and a
  low-symmetry Cu4 crystal and bcc Cu (mechanically unstable). The bar of issue 24 is
  1 %; the tests ask for 1e-5 of the largest constant (measured: 2e-6 or better).
- Gamma phonons against ASE's finite-difference ``Vibrations`` on the jcsp calculator
  (Hessian and frequencies, ASE's masses), the acoustic sum rule, and a dynamically
  unstable structure (simple-cubic SW silicon) that both call unstable.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.units import invcm
from ase.vibrations import Vibrations

import lammps_ref
from jcsp.calculator import JCSPCalculator
from jcsp.potentials.eam import EAM
from jcsp.potentials.lennard_jones import LennardJones
from jcsp.potentials.stillinger_weber import StillingerWeber
from jcsp.relax.properties import (THZ_PER_SQRT_EV_A2_AMU, dynamically_stable, elastic_constants,
                                   evaluate_second_derivatives, mechanically_stable,
                                   phonons_gamma, second_derivatives)
from jcsp.units import EV_PER_A3_IN_GPA, voigt_to_full

POT = lammps_ref.POTENTIALS
SW_LINES = ["pair_style sw", f"pair_coeff * * {POT}/Si.sw Si"]
EAM_LINES = ["pair_style eam", f"pair_coeff * * {POT}/Cu_u3.eam"]
#: Zero-pressure lattice constants of diamond Si under Si.sw and fcc Cu under Cu_u3.eam
#: (roots of the jcsp pressure, brentq to 1e-14 Å; LAMMPS's stress there is below 1e-6
#: GPa, checked in the tests).
A_SI = 5.430949778405214
A_CU = 3.614999975765


def voigt(stress):
    return np.array([stress[i, j] for i, j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))])


def lammps_stresses(configs, pair_lines, *, relax: bool) -> list[np.ndarray]:
    """ASE stresses [3, 3] (eV/Å³) that LAMMPS gives for ``configs`` (a list of
    ``(cell, positions, symbols)``), after relaxing the ions at fixed cell with
    ``minimize`` when ``relax``; one LAMMPS process (``clear`` and ``read_data`` per
    configuration, as examples/ELASTIC does with its restart file)."""
    if lammps_ref.LMP is None:
        raise RuntimeError("LAMMPS binary 'lmp' not found: apt-get install lammps")
    script, rotations = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (cell, pos, sym) in enumerate(configs):
            lower, q = lammps_ref.lower_triangular(cell)
            rotations.append(q)
            lower = lower.tolist()
            types = sorted(set(sym))
            lines = ["jcsp elastic reference", "", f"{len(sym)} atoms",
                     f"{len(types)} atom types", "",
                     f"0 {lower[0][0]!r} xlo xhi", f"0 {lower[1][1]!r} ylo yhi",
                     f"0 {lower[2][2]!r} zlo zhi",
                     f"{lower[1][0]!r} {lower[2][0]!r} {lower[2][1]!r} xy xz yz", "",
                     "Masses", ""] + [f"{t + 1} 1.0" for t in range(len(types))]
            lines += ["", "Atoms # atomic", ""]
            for i, (s, p) in enumerate(zip(sym, (np.asarray(pos) @ q).tolist())):
                lines.append(f"{i + 1} {types.index(s) + 1} {p[0]!r} {p[1]!r} {p[2]!r}")
            with open(os.path.join(tmp, f"data.{k}"), "w") as fh:
                fh.write("\n".join(lines) + "\n")
            script += ["clear", "units metal", "atom_style atomic", "boundary p p p",
                       "box tilt large", f"read_data data.{k}",
                       *[line.replace("{types}", " ".join(types)) for line in pair_lines],
                       "thermo_style custom step pe pxx pyy pzz pyz pxz pxy",
                       "thermo_modify format float %.17g"]
            if relax:
                script += ["min_style cg", "min_modify line quadratic",
                           "minimize 0.0 1e-13 100000 1000000"]
            script += ["run 0"]
        with open(os.path.join(tmp, "in.lmp"), "w") as fh:
            fh.write("\n".join(script) + "\n")
        proc = subprocess.run([lammps_ref.LMP, "-in", "in.lmp", "-log", "none", "-nocite"],
                              cwd=tmp, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    out = proc.stdout.splitlines()
    heads = [i for i, line in enumerate(out) if line.split()[:2] == ["Step", "PotEng"]]
    # each configuration ends with "run 0": its thermo block is the last of its blocks
    per_config = len(heads) // len(configs)
    stresses = []
    for k, q in enumerate(rotations):
        head = heads[(k + 1) * per_config - 1]
        pxx, pyy, pzz, pyz, pxz, pxy = (float(x) for x in out[head + 1].split()[2:8])
        press = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
        stresses.append(q @ (-press / lammps_ref.BAR_PER_EV_A3) @ q.T)
    return stresses


def lammps_elastic(atoms: Atoms, pair_lines, *, up: float = 1e-5, relax: bool = True):
    """[6, 6] GPa: ``dsigma_a/de_b`` by central finite strains +-``up`` (symmetric,
    applied to cell and atoms) in LAMMPS, its ions relaxed by ``minimize`` at each
    strain (clamped with ``relax=False``)."""
    cell, pos, sym = atoms.cell[:], atoms.positions, atoms.get_chemical_symbols()
    configs = []
    for b in range(6):
        for sign in (1.0, -1.0):
            e = np.zeros(6)
            e[b] = sign * up
            deform = np.eye(3) + voigt_to_full(e) * np.where(np.eye(3, dtype=bool), 1.0, 0.5)
            configs.append((cell @ deform, pos @ deform, sym))
    s = [voigt(x) for x in lammps_stresses(configs, pair_lines, relax=relax)]
    out = np.stack([(s[2 * b] - s[2 * b + 1]) / (2 * up) for b in range(6)], axis=1)
    return out * EV_PER_A3_IN_GPA


def lammps_relaxed_ions(cell, positions, symbols, pair_lines) -> Atoms:
    """The crystal with its ions relaxed by LAMMPS at fixed cell (forces < 1e-10 eV/Å)."""
    _, _, _, pos = lammps_ref.run(cell, positions, symbols, pair_lines, return_positions=True,
                                  extra=["min_style cg", "minimize 0.0 1e-12 100000 1000000"])
    return Atoms(symbols, positions=pos, cell=cell, pbc=True)



@pytest.fixture(scope="module")
def sw():
    return StillingerWeber.from_lammps(os.path.join(POT, "Si.sw"))


@pytest.fixture(scope="module")
def copper():
    return EAM.from_lammps(os.path.join(POT, "Cu_u3.eam"))


@pytest.fixture(scope="module")
def silicon():
    """Four Si8 crystals: diamond at zero pressure, diamond compressed 3 % (hydrostatic
    stress), a random cell whose ions LAMMPS relaxed (non-hydrostatic stress) and
    simple cubic (a Gamma saddle point of SW, its forces zero by symmetry)."""
    rng = np.random.default_rng(0)
    cell, pos = lammps_ref.random_crystal(rng, 8, 20.0, 2.1)
    return [bulk("Si", "diamond", a=A_SI, cubic=True),
            bulk("Si", "diamond", a=0.97 * A_SI, cubic=True),
            lammps_relaxed_ions(cell, pos, ["Si"] * 8, SW_LINES),
            bulk("Si", "sc", a=2.5).repeat(2)]


@pytest.fixture(scope="module")
def coppers():
    """fcc Cu at zero pressure (4 atoms), a random Cu4 crystal whose ions LAMMPS relaxed,
    and bcc Cu (2 atoms, padded to 4 in the population), mechanically unstable."""
    rng = np.random.default_rng(1)
    cell, pos = lammps_ref.random_crystal(rng, 4, 14.0, 2.2)
    return [bulk("Cu", "fcc", a=A_CU, cubic=True),
            lammps_relaxed_ions(cell, pos, ["Cu"] * 4, EAM_LINES),
            bulk("Cu", "bcc", a=2.87, cubic=True)]


@pytest.mark.lammps
def test_sw_silicon_elastic_constants_match_lammps(sw, silicon):
    with pytest.warns(RuntimeWarning, match=r"structures \[3\] are saddle points"):
        relaxed = elastic_constants(silicon, sw, pressure=None)
    # checked against zero pressure (the default), the stressed cells are named
    with pytest.warns(RuntimeWarning, match=r"structures \[1, 2, 3\] are not relaxed at the"):
        elastic_constants(silicon, sw, relaxed_ions=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clamped ions and no stress check: nothing to say
        clamped = elastic_constants(silicon, sw, relaxed_ions=False, pressure=None)
    assert np.all(np.isnan(relaxed[3])) and np.all(np.isfinite(clamped[3]))
    for b in range(3):
        ref = lammps_elastic(silicon[b], SW_LINES)
        assert np.abs(ref).max() > 50.0
        assert np.abs(relaxed[b] - ref).max() <= 1e-5 * np.abs(ref).max(), b
    # the clamped-ion constants against LAMMPS without minimisation; the internal
    # relaxation softens C44 of diamond by half, so the correction is not vacuous
    ref = lammps_elastic(silicon[0], SW_LINES, relax=False)
    assert np.abs(clamped[0] - ref).max() <= 1e-5 * np.abs(ref).max()
    assert clamped[0][3, 3] - relaxed[0][3, 3] > 40.0
    # the published SW values (E. R. Cowley, Phys. Rev. Lett. 60, 2379 (1988), as
    # quoted in LAMMPS's examples/ELASTIC/in.elastic)
    c = relaxed[0]
    assert abs(c[0, 0] - 151.4) < 0.1 and abs(c[0, 1] - 76.4) < 0.1 and abs(c[3, 3] - 56.4) < 0.1
    # the stress terms are exercised: LAMMPS's stress of the compressed diamond is
    # hydrostatic and large, that of the random cell is not hydrostatic
    s1 = lammps_ref.run(silicon[1].cell[:], silicon[1].positions, ["Si"] * 8, SW_LINES)[2]
    s2 = lammps_ref.run(silicon[2].cell[:], silicon[2].positions, ["Si"] * 8, SW_LINES)[2]
    s0 = lammps_ref.run(silicon[0].cell[:], silicon[0].positions, ["Si"] * 8, SW_LINES)[2]
    assert np.abs(s0).max() * EV_PER_A3_IN_GPA < 1e-6
    assert -s1[0, 0] * EV_PER_A3_IN_GPA > 5.0 and np.abs(s1 - s1[0, 0] * np.eye(3)).max() < 1e-12
    assert np.abs(voigt(s2)[3:]).max() * EV_PER_A3_IN_GPA > 1.0
    assert mechanically_stable(relaxed).tolist()[:2] == [True, True]
    assert not mechanically_stable(relaxed)[3]          # NaN: not a crystal


@pytest.mark.lammps
def test_eam_copper_elastic_constants_match_lammps(copper, coppers):
    c = elastic_constants(coppers, copper, pressure=None)
    for b in range(3):
        ref = lammps_elastic(coppers[b], EAM_LINES)
        assert np.abs(ref).max() > 50.0
        assert np.abs(c[b] - ref).max() <= 1e-5 * np.abs(ref).max(), b
        assert mechanically_stable(c[b]) == mechanically_stable(ref)
    s0 = lammps_ref.run(coppers[0].cell[:], coppers[0].positions, ["Cu"] * 4, EAM_LINES)[2]
    assert np.abs(s0).max() * EV_PER_A3_IN_GPA < 1e-6
    # fcc: every atom an inversion centre, no internal relaxation; the random cell has one
    clamped = elastic_constants(coppers, copper, relaxed_ions=False, pressure=None)
    assert np.abs(clamped[0] - c[0]).max() < 1e-8
    assert np.abs(clamped[1] - c[1]).max() > 1.0
    # elastic constants (both kinds) and phonons of one population: one compilation
    compiled = second_derivatives._cache_size()
    phonons_gamma(coppers, copper)
    assert second_derivatives._cache_size() == compiled
    # Born stability: fcc stable, bcc copper unstable (C11 < C12, the Bain path)
    assert mechanically_stable(c).tolist() == [True, mechanically_stable(c[1]), False]
    assert c[2][0, 0] < c[2][0, 1]


def ase_vibrations(atoms, potential, tmp_path, name):
    """ASE's finite-difference Hessian [3N, 3N] and frequencies [3N] (THz, imaginary
    as negative) of ``atoms`` under the jcsp calculator."""
    atoms = atoms.copy()
    atoms.calc = JCSPCalculator(potential)
    vib = Vibrations(atoms, name=str(tmp_path / name), delta=1e-3, nfree=4)
    vib.run()
    data = vib.get_vibrations()
    freq = data.get_frequencies() * invcm  # eV, complex for imaginary modes
    # eV -> THz: h = 4.135667696e-3 eV/THz (CODATA 2018)
    hz = np.where(np.abs(freq.imag) > 0, -np.abs(freq.imag), freq.real) / 4.135667696e-3
    vib.clean()
    return data.get_hessian_2d(), np.sort(hz)


@pytest.mark.lammps
def test_gamma_phonons_match_ase_finite_differences(sw, copper, silicon, coppers, tmp_path):
    """The low-symmetry Si8 crystal, simple-cubic Si (imaginary modes) and bcc Cu (2
    atoms in a population padded to 4)."""
    for potential, structures, check in ((sw, silicon, (2, 3)), (copper, coppers, (2,))):
        freq = phonons_gamma(structures, potential)
        hess = evaluate_second_derivatives(structures, potential)[1].hessian
        for b in check:
            n = len(structures[b])
            h_ref, f_ref = ase_vibrations(structures[b], potential, tmp_path, f"v{b}")
            h = hess[b, :n, :, :n, :].reshape(3 * n, 3 * n)
            assert np.abs(h_ref).max() > 1.0
            assert np.abs(h - h_ref).max() <= 1e-6 * np.abs(h_ref).max()
            mine = freq[b, :3 * n]
            assert np.all(np.isnan(freq[b, 3 * n:]))
            # acoustic sum rule: three modes at zero, to round-off (no projection)
            assert np.sort(np.abs(mine))[2] < 1e-3 and np.sort(np.abs(mine))[3] > 0.1, b
            big = np.abs(f_ref) > 0.1
            assert np.abs(mine[big] - f_ref[big]).max() <= 1e-5 * np.abs(f_ref).max()
    si_freq = phonons_gamma(silicon, sw)
    assert dynamically_stable(si_freq).tolist() == [True, True, True, False]
    assert si_freq[3].min() < -1.0                       # simple cubic: imaginary modes
    # diamond at Gamma of its cubic cell: 3 acoustic modes, the rest optical and X-point
    # modes, all real
    assert np.sort(np.abs(si_freq[0]))[2] < 1e-3 and si_freq[0][3:].min() > 1.0


def test_lennard_jones_dimer_frequency_is_analytic():
    """An argon dimer at the LJ minimum: omega = sqrt(V''(r0) / mu). A stretched dimer in
    the same population warns (not relaxed) and leaves the first one alone."""
    eps, sigma = 0.0104, 3.4
    lj = LennardJones(epsilon=eps, sigma=sigma, cutoff=None)
    r0 = 2 ** (1 / 6) * sigma
    dimer = Atoms("Ar2", positions=[[0, 0, 0], [r0, 0, 0]], pbc=False)
    stretched = Atoms("Ar2", positions=[[0, 0, 0], [1.2 * r0, 0, 0]], pbc=False)
    with pytest.warns(RuntimeWarning, match=r"structures \[1\] are not relaxed"):
        freq = phonons_gamma([dimer, stretched], lj)
    k = 72 * eps / (2 ** (1 / 3) * sigma ** 2)           # V''(r0) of 4 eps ((s/r)^12 - (s/r)^6)
    mu = dimer.get_masses()[0] / 2
    assert np.abs(freq[0, :5]).max() < 1e-4              # 3 translations, 2 rotations
    assert abs(freq[0, 5] - np.sqrt(k / mu) * THZ_PER_SQRT_EV_A2_AMU) < 1e-9 * freq[0, 5]
    # the stretched dimer is past the inflection point of V: V" < 0, an imaginary mode
    assert dynamically_stable(freq[0]) and not dynamically_stable(freq[1])
    assert dynamically_stable(np.array([0.0, -0.01, 3.0]))
    with pytest.raises(ValueError, match="periodic"):
        elastic_constants([dimer], lj)

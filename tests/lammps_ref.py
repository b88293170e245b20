"""Reference energies, forces and stress from the LAMMPS binary (Debian's ``lmp``).

Host-side test helper. The structure is rotated to LAMMPS's lower-triangular cell, run
with ``run 0``, and forces and stress are rotated back. Stress is returned in ASE's
convention (eV/Å³, positive = tensile): ``-pressure / 1.6021765e6`` bar (LAMMPS metal
units' own conversion factor). Tests that call it, or read LAMMPS's potential files,
carry ``@pytest.mark.lammps`` (see conftest.py: skipped without LAMMPS, except in CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np

LMP = os.environ.get("JCSP_LMP") or shutil.which("lmp") or shutil.which("lmp_serial")
#: Debian's LAMMPS potential files (EAM, SW, ...), installed with the binary.
POTENTIALS = "/usr/share/lammps/potentials"
BAR_PER_EV_A3 = 1.6021765e6
#: In CI (``.ci/run`` installs LAMMPS) a missing LAMMPS is an error, never a skip.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing() -> str | None:
    """Why the LAMMPS reference is unusable here (binary or potential files), or None."""
    if LMP is None:
        return "LAMMPS binary 'lmp' not found (apt-get install lammps)"
    if not os.path.isdir(POTENTIALS):
        return f"LAMMPS potential files not found in {POTENTIALS} (apt-get install lammps)"
    return None


def lower_triangular(cell):
    """Rotation Q with cell @ Q lower-triangular (a along x, b in xy). Returns (L, Q)."""
    cell = np.asarray(cell, float)
    if np.linalg.det(cell) <= 0:
        raise ValueError("LAMMPS needs a right-handed cell")
    q, r = np.linalg.qr(cell.T)
    signs = np.sign(np.diag(r))
    q = q * signs
    lower = cell @ q
    lower[np.abs(lower) < 1e-300] = 0.0
    return np.tril(lower), q


def run(cell, positions, symbols, pair_lines, *, charges=None, pbc=True, extra=(), types=None,
        return_positions=False):
    """Energy (eV), forces [N, 3] (eV/Å) and ASE stress [3, 3] (eV/Å³) from LAMMPS.

    Args:
      cell: [3, 3] rows are lattice vectors (right-handed).
      positions: [N, 3] Cartesian, Å.
      symbols: element of each atom; LAMMPS types follow ``types`` (default
        ``sorted(set(symbols))``), so type k+1 is ``types[k]``.
      pair_lines: LAMMPS commands defining the interaction (pair_style, pair_coeff, ...);
        the string ``{types}`` is replaced by the element names in type order.
      charges: per-atom charges (uses atom_style charge).
      pbc: periodic in all directions, or a non-periodic cluster in a big box.
      extra: commands run before the final ``run 0`` (a minimisation or MD moves the
        atoms; the results are those of the final positions).
      return_positions: also return the final Cartesian positions [N, 3] (wrapped into
        the cell), as a fourth value.
    """
    if LMP is None:
        raise RuntimeError("LAMMPS binary 'lmp' not found: apt-get install lammps")
    positions = np.asarray(positions, float)
    charges = None if charges is None else [float(c) for c in charges]
    types = list(types) if types is not None else sorted(set(symbols))
    lower, q = lower_triangular(cell)
    lower = lower.tolist()
    pos = (positions @ q).tolist()
    n = len(symbols)
    style = "charge" if charges is not None else "atomic"
    with tempfile.TemporaryDirectory() as tmp:
        lines = ["lammps data (jcsp test)", "", f"{n} atoms", f"{len(types)} atom types", ""]
        if pbc:
            lines += [f"0 {lower[0][0]!r} xlo xhi", f"0 {lower[1][1]!r} ylo yhi",
                      f"0 {lower[2][2]!r} zlo zhi",
                      f"{lower[1][0]!r} {lower[2][0]!r} {lower[2][1]!r} xy xz yz"]
        else:
            lo = (np.min(pos, 0) - 50.0).tolist()
            hi = (np.max(pos, 0) + 50.0).tolist()
            lines += [f"{lo[k]!r} {hi[k]!r} {a}lo {a}hi" for k, a in enumerate("xyz")]
        lines += ["", "Masses", ""] + [f"{t + 1} 1.0" for t in range(len(types))]
        lines += ["", "Atoms # " + style, ""]
        for i, (s, p) in enumerate(zip(symbols, pos)):
            t = types.index(s) + 1
            qpart = f" {charges[i]!r}" if charges is not None else ""
            lines.append(f"{i + 1} {t}{qpart} {p[0]!r} {p[1]!r} {p[2]!r}")
        with open(os.path.join(tmp, "data"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        script = [
            "units metal", f"atom_style {style}",
            "boundary " + ("p p p" if pbc else "f f f"),
            "box tilt large", "read_data data",
            *[line.replace("{types}", " ".join(types)) for line in pair_lines],
            *extra,
            "thermo_style custom step pe pxx pyy pzz pyz pxz pxy",
            "thermo_modify format float %.17g",
            "dump d all custom 1 forces.dump id fx fy fz x y z",
            "dump_modify d sort id format float %.17g",
            "run 0",
        ]
        with open(os.path.join(tmp, "in.lmp"), "w") as fh:
            fh.write("\n".join(script) + "\n")
        proc = subprocess.run([LMP, "-in", "in.lmp", "-log", "log.lammps", "-nocite"],
                              cwd=tmp, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"LAMMPS failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        out = proc.stdout.splitlines()
        head = next(i for i, line in enumerate(out) if line.split()[:2] == ["Step", "PotEng"])
        values = [float(x) for x in out[head + 1].split()]
        energy = values[1]
        pxx, pyy, pzz, pyz, pxz, pxy = values[2:8]
        with open(os.path.join(tmp, "forces.dump")) as fh:
            dump = fh.read().splitlines()
    start = next(i for i, line in enumerate(dump) if line.startswith("ITEM: ATOMS")) + 1
    rows = np.array([[float(x) for x in line.split()[1:7]] for line in dump[start:start + n]])
    press = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
    stress = -press / BAR_PER_EV_A3
    result = (energy, rows[:, :3] @ q.T, q @ stress @ q.T)
    return result + (rows[:, 3:] @ q.T,) if return_positions else result


def random_cell(rng, n_atoms, volume_per_atom, *, thin=False):
    """A random right-handed triclinic cell; ``thin`` makes one axis short and skewed."""
    for _ in range(1000):
        lengths = rng.uniform(0.7, 1.4, 3)
        if thin:
            lengths[rng.integers(3)] *= 0.35
        angles = np.radians(rng.uniform(55, 125, 3))
        from ase.geometry import cellpar_to_cell
        try:
            cell = cellpar_to_cell(np.concatenate([lengths, np.degrees(angles)]))
        except AssertionError:  # angles that close no cell
            continue
        if not np.isfinite(cell).all() or np.linalg.det(cell) < 0.3 * np.prod(lengths):
            continue
        scale = (n_atoms * volume_per_atom / np.linalg.det(cell)) ** (1 / 3)
        cell = cell * scale
        rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        if np.linalg.det(rot) < 0:
            rot[:, 0] *= -1
        return cell @ rot
    raise RuntimeError("no random cell found")


def random_structure(rng, n_atoms, volume_per_atom, min_dist, *, thin=False):
    """Random cell and Cartesian positions with all periodic distances >= min_dist."""
    from ase import Atoms
    for _ in range(200):
        cell = random_cell(rng, n_atoms, volume_per_atom, thin=thin)
        frac = []
        for _ in range(2000):
            if len(frac) == n_atoms:
                break
            trial = rng.uniform(0, 1, 3)
            atoms = Atoms("H" * (len(frac) + 1), scaled_positions=frac + [trial], cell=cell,
                          pbc=True)
            if len(frac) == 0:
                d = _self_image_distance(cell)
            else:
                d = min(atoms.get_distances(len(frac), range(len(frac)), mic=True).min(),
                        _self_image_distance(cell))
            if d >= min_dist:
                frac.append(trial)
        if len(frac) == n_atoms:
            return cell, np.array(frac) @ cell
    raise RuntimeError("could not place atoms")


def _self_image_distance(cell):
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                       if (i, j, k) != (0, 0, 0)])
    return np.linalg.norm(shifts @ cell, axis=1).min()


def random_crystal(rng, n, volume_per_atom, min_dist, *, thin=False):
    """Random triclinic cell (lammps_ref.random_cell) with atoms at least ``min_dist``
    apart over all periodic images, placed by vectorised rejection sampling."""
    for _ in range(100):
        cell = random_cell(rng, n, volume_per_atom, thin=thin)
        reach = np.ceil(min_dist * np.linalg.norm(np.linalg.inv(cell), axis=0)).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1)
        images = grid.reshape(-1, 3) @ cell
        lengths = np.linalg.norm(images, axis=1)
        if np.min(lengths[lengths > 0]) < min_dist:
            continue
        pos = np.zeros((0, 3))
        for _ in range(20000):
            trial = rng.uniform(size=3) @ cell
            d = trial - pos[:, None, :] - images[None, :, :]
            if pos.shape[0] == 0 or np.sqrt(np.min(np.sum(d * d, -1))) >= min_dist:
                pos = np.vstack([pos, trial])
                if len(pos) == n:
                    return cell, pos
    raise RuntimeError("could not place atoms")

"""Oracle calculators from specs, and one single point as a :class:`Label` (host side).

See :mod:`jcsp.oracle` for the whole picture. :func:`single_point` asks any ASE
calculator for energy, forces and (periodic) stress and never raises for a failing
structure; :func:`build` turns a spec string (``tblite:GFN1-xTB``, ``gpaw:...``,
``python:module:factory``, a jcsp potential spec) into an ASE calculator.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import re
import time

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from ..calculator import JCSPCalculator
from ..potential_spec import InputError, load_potential

#: The oracle specs :func:`make_oracle` understands (shown in its errors).
ORACLE_FORMS = (
    "tblite:GFN1-xTB or tblite:GFN2-xTB[,key=value...] (tblite's ASE calculator, "
    "pip install tblite; options such as accuracy=1.0, electronic_temperature=300, and "
    "min_length=7 (Å): crystals are computed in a supercell at least this wide, since "
    "tblite samples the Gamma point only; 0 turns it off)",
    "gpaw:key=value,... (GPAW(**options), e.g. gpaw:mode=pw,kpts=[2,2,2],xc=PBE)",
    "python:module:factory (factory() returns an ASE calculator; the module must be "
    "importable)",
    "any jcsp potential spec: sw-si, FILE.sw, FILE.eam[.alloy|.fs], lj[:...], gulp:..., "
    "FILE.toml, MODEL_DIR (wrapped in jcsp.JCSPCalculator)",
    "an ASE calculator object (called in this process, one structure at a time)",
)
#: Oldest tblite whose periodic stress is the strain derivative of its energy (0.4.0 is off
#: by 0.15 eV/Å³ for diamond Si2 with GFN1-xTB; 0.8.0 agrees with finite differences).
TBLITE_MIN_VERSION = "0.8.0"
#: Methods of tblite's ASE calculator.
TBLITE_METHODS = ("GFN1-xTB", "GFN2-xTB", "IPEA1-xTB")
#: Geometry keys are positions and cells rounded to this many Å.
KEY_RESOLUTION = 1e-8


class OracleError(InputError):
    """An oracle that cannot be used at all: an unknown spec, a package that is not
    installed, a calculator that cannot be built. (One structure that fails is not an
    error: its :class:`Label` says so.)"""


@dataclasses.dataclass(frozen=True, eq=False)
class Label:
    """One oracle single point.

    Attributes:
      energy: eV (None when the call failed); the force-consistent (free) energy when the
        calculator gives one (``free_energy``, e.g. DFT with smearing), else ``energy``.
      forces: [N, 3] eV/Å (None when the call failed).
      stress: [6] eV/Å³, ASE's sign and Voigt order (xx, yy, zz, yz, xz, xy); None for
        structures that are not periodic in all three directions, calculators without
        stress, and failed calls.
      seconds: wall time of the call.
      error: None, or why the call failed (the exception, or which numbers were not
        finite).
    """

    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def calculator(self, atoms: Atoms) -> SinglePointCalculator:
        """The results as ASE's ``SinglePointCalculator`` for ``atoms`` (successful labels)."""
        if not self.ok:
            raise ValueError(f"a failed label has no results ({self.error})")
        results = {"energy": self.energy, "free_energy": self.energy, "forces": self.forces}
        if self.stress is not None:
            results["stress"] = self.stress
        return SinglePointCalculator(atoms, **results)


def failed_label(seconds: float, error: str) -> Label:
    """The :class:`Label` of a call that failed after ``seconds`` with ``error``."""
    return Label(energy=None, forces=None, stress=None, seconds=float(seconds), error=error)


def single_point(calc, atoms: Atoms) -> Label:
    """Energy, forces and (periodic) stress of ``atoms`` from ASE calculator ``calc``.

    Never raises for a failing structure: an exception of the calculator, results of the
    wrong shape, or non-finite numbers give a :class:`Label` with ``error`` set (and the
    calculator is reset, so a broken state does not leak into the next call).
    """
    atoms = atoms.copy()
    atoms.calc = calc
    start = time.perf_counter()
    try:
        properties = getattr(calc, "implemented_properties", ())
        # The energy the forces are derivatives of: DFT codes with smearing give it as
        # free_energy (VASP's TOTEN); "energy" may be extrapolated to zero smearing.
        energy = None
        if "free_energy" in properties:
            try:
                energy = float(atoms.get_potential_energy(force_consistent=True))
            except PropertyNotImplementedError:
                energy = None
        plain = float(atoms.get_potential_energy())  # also checked for being finite
        energy = plain if energy is None else energy
        forces = np.array(atoms.get_forces(), dtype=np.float64)
        stress = None
        if all(atoms.pbc) and (not properties or "stress" in properties):
            try:
                stress = np.array(atoms.get_stress(voigt=True), dtype=np.float64)
            except (PropertyNotImplementedError, NotImplementedError):
                stress = None
    except Exception as err:  # noqa: BLE001 (any failure of the oracle marks the structure)
        if hasattr(calc, "reset"):
            calc.reset()
        return failed_label(time.perf_counter() - start, f"{type(err).__name__}: {err}")
    seconds = time.perf_counter() - start
    problem = None
    if forces.shape != (len(atoms), 3):
        problem = f"forces of shape {forces.shape}, expected ({len(atoms)}, 3)"
    elif stress is not None and stress.shape != (6,):
        problem = f"stress of shape {stress.shape}, expected (6,) in Voigt order"
    elif not (np.isfinite(energy) and np.isfinite(plain)):
        problem = f"non-finite energy ({plain}, free energy {energy})"
    elif not np.all(np.isfinite(forces)):
        problem = "non-finite forces"
    elif stress is not None and not np.all(np.isfinite(stress)):
        problem = "non-finite stress"
    if problem is not None:
        if hasattr(calc, "reset"):
            calc.reset()
        return failed_label(seconds, problem)
    return Label(energy=energy, forces=forces, stress=stress, seconds=seconds)


# --- building calculators from specs ------------------------------------------------------
def _split_options(text: str) -> list[str]:
    """``a=1,b=[1,2],c='x,y'`` -> ``["a=1", "b=[1,2]", "c='x,y'"]`` (top-level commas)."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _options(text: str, spec: str) -> dict:
    """``key=value`` pairs; values are Python literals (numbers, True, None, lists, dicts,
    quoted strings) or else plain strings."""
    out = {}
    for item in _split_options(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise OracleError(f"oracle {spec!r}: option {item!r} is not key=value")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


#: Default ``min_length`` (Å) of tblite oracles: tblite samples the Brillouin zone at the
#: Gamma point only, so a crystal is computed in a supercell at least this wide in every
#: direction (GFN1-xTB diamond C: -56.94 eV/atom in the 8-atom cell, -57.88 eV/atom in
#: its 2x2x2 supercell; in 8-atom cells a search found spurious minima with a 1.2 Å cell
#: edge 8 eV/atom below diamond).
TBLITE_MIN_LENGTH = 7.0


class Replicated(Calculator):
    """An ASE calculator computed on a supercell of the structure, for methods that sample
    the Brillouin zone at the Gamma point only (tblite): Gamma in a supercell is a k-point
    grid of the cell. Each direction is repeated until the supercell's width (the distance
    between opposite faces) is at least ``min_length`` Å; energy per cell, forces
    (averaged over the images, which are equivalent) and stress are returned for the
    original cell. Clusters and cells already wide enough are computed as they are.

    Args:
      calc: the calculator that computes the supercell.
      min_length: Å.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calc, min_length: float):
        super().__init__()
        if not min_length >= 0:
            raise OracleError(f"min_length must be >= 0 Å, got {min_length!r}")
        self.calc, self.min_length = calc, float(min_length)

    def repeats(self, atoms: Atoms) -> tuple[int, int, int]:
        if not atoms.pbc.all() or self.min_length == 0:
            return (1, 1, 1)
        cell = np.asarray(atoms.cell[:], float)
        volume = abs(np.linalg.det(cell))
        widths = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                  for i in range(3)]
        return tuple(max(1, int(np.ceil(self.min_length / w - 1e-9))) for w in widths)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        reps = self.repeats(self.atoms)
        n_images = int(np.prod(reps))
        big = self.atoms.repeat(reps) if n_images > 1 else self.atoms.copy()
        big.calc = self.calc
        energy = big.get_potential_energy() / n_images
        try:
            free = big.get_potential_energy(force_consistent=True) / n_images
        except PropertyNotImplementedError:
            free = energy
        forces = big.get_forces().reshape(n_images, len(self.atoms), 3).mean(axis=0)
        self.results = {"energy": energy, "free_energy": free, "forces": forces}
        if self.atoms.pbc.all():
            self.results["stress"] = big.get_stress()


def _tblite(options: str, spec: str):
    method, _, rest = options.partition(",")
    method = method.strip()
    if method not in TBLITE_METHODS:
        raise OracleError(f"oracle {spec!r}: unknown tblite method {method!r}; use one of "
                          f"{', '.join(TBLITE_METHODS)}")
    kwargs = {"verbosity": 0, **_options(rest, spec)}
    min_length = kwargs.pop("min_length", TBLITE_MIN_LENGTH)
    try:
        from tblite.ase import TBLite
    except ImportError as err:
        raise OracleError(f"oracle {spec!r} needs tblite, which is not installed ({err}): "
                          f"pip install 'tblite>={TBLITE_MIN_VERSION}'") from None
    version = importlib.metadata.version("tblite")
    if _release(version) < _release(TBLITE_MIN_VERSION):
        raise OracleError(
            f"oracle {spec!r}: tblite {version} is installed, but its periodic stress "
            "disagrees with the derivative of its own energy in small cells (fixed in "
            f"tblite PR #339): pip install 'tblite>={TBLITE_MIN_VERSION}'")
    try:
        min_length = float(min_length)
    except (TypeError, ValueError):
        raise OracleError(f"oracle {spec!r}: min_length must be a length in Å") from None
    return Replicated(TBLite(method=method, **kwargs), min_length)


def _release(version: str) -> tuple:
    """``"0.8.0"`` -> ``(0, 8, 0)``; ``"0.9.0rc1"`` -> ``(0, 9, 0)``."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def _gpaw(options: str, spec: str):
    kwargs = {"txt": None, **_options(options, spec)}
    try:
        from gpaw import GPAW
    except ImportError as err:
        raise OracleError(f"oracle {spec!r} needs GPAW, which is not installed ({err}): "
                          "see https://gpaw.readthedocs.io/install.html") from None
    return GPAW(**kwargs)


def python_factory(target: str, spec: str):
    module, sep, name = target.rpartition(":")
    if not sep or not module or not name:
        raise OracleError(f"oracle {spec!r}: write python:MODULE:FACTORY, e.g. "
                          "python:mypkg.oracles:make_calculator")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise OracleError(f"oracle {spec!r}: cannot import {name} from {module} ({err}); "
                          "the module must be on PYTHONPATH") from None
    if not callable(factory):
        raise OracleError(f"oracle {spec!r}: {module}.{name} is not callable")
    return factory


def build(spec, base: str | None = None):
    """The ASE calculator of a spec string (or a potential table mapping)."""
    if isinstance(spec, str):
        kind, _, rest = spec.partition(":")
        if kind == "tblite":
            return _tblite(rest, spec)
        if kind == "gpaw":
            return _gpaw(rest, spec)
        if kind == "python":
            calc = python_factory(rest, spec)()
            if not (hasattr(calc, "get_potential_energy") or hasattr(calc, "calculate")):
                raise OracleError(f"oracle {spec!r}: the factory returned "
                                  f"{type(calc).__name__}, not an ASE calculator")
            return calc
    try:
        return JCSPCalculator(load_potential(spec, base=base))
    except InputError as err:
        forms = "\n  ".join(ORACLE_FORMS)
        raise OracleError(f"unknown oracle {spec!r} ({err}). An oracle is one of:\n  {forms}"
                          ) from None

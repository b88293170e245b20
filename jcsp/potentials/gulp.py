"""GULP potential libraries -> :class:`.BuckinghamCoulomb` (host side).

GULP (Gale & Rohl, Mol. Simul. 29, 291 (2003)) writes rigid-ion models as sections of
a library or input file; the part that structure-search codes (AIRSS, MAGUS, XtalOpt)
use for oxides is read here::

    species             # one line per element: symbol [core] charge (e)
    Mg  2.0
    O  -2.0
    buck                # symbol [core] symbol [core] A rho C [rmin] rmax
    Mg O 1428.5 0.2945 0.0 0.0 7.0
    lennard 12 6        # symbol [core] symbol [core] A B [rmin] rmax: A/r^12 - B/r^6
    Mg O 1.5 0.0 0.0 6.0

Units are GULP's defaults: e; A in eV, rho and the cutoffs in Å, C and B in eV·Å⁶, the
12-6 A in eV·Å¹². Each term is cut at its own ``rmax`` without shift (GULP without
``taper``); the inner cutoff ``rmin`` must be 0. Anything else (shells, other sections
or potential forms, fitting flags, unit words) is refused with the line named, rather
than read wrongly. Comments start with ``#`` or ``!``.

Three published models ship with jcsp (:data:`SHIPPED_LIBRARIES`), each with its source
in the file's header: ``tio2-matsui-akaogi`` (Matsui & Akaogi 1991, from XtalOpt),
``mgal2o4-magus`` (MAGUS's MgAl2O4 example at 100 GPa) and ``srtio3-disp`` (the AIRSS +
GULP SrTiO3 example of the ``disp`` package).

Example:
  >>> from jcsp.potentials.gulp import gulp_potential, read_gulp_library
  >>> spinel = gulp_potential("mgal2o4-magus")          # cutoff 7 Å, its longest term
  >>> lib = read_gulp_library("my_model.lib")
  >>> model = lib.potential(cutoff=10.0, accuracy=1e-8)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ase.data import atomic_numbers

from .buckingham import BuckinghamCoulomb

#: Folder of the shipped GULP libraries (and reference structures).
LIBRARY_DIR = Path(__file__).resolve().parent.parent / "data" / "rigid_ion"
#: Shipped libraries: name -> file in :data:`LIBRARY_DIR`.
SHIPPED_LIBRARIES = {
    "tio2-matsui-akaogi": LIBRARY_DIR / "tio2_matsui_akaogi.lib",
    "mgal2o4-magus": LIBRARY_DIR / "mgal2o4_magus.lib",
    "srtio3-disp": LIBRARY_DIR / "srtio3_disp.lib",
}
#: MAGUS's best MgAl2O4 (Pnma, 28 atoms) at 100 GPa, as printed in its example README.
MGAL2O4_PNMA = LIBRARY_DIR / "mgal2o4_pnma_magus.vasp"

_SECTIONS = ("species", "buck", "lennard")


class GulpFormatError(ValueError):
    """A GULP library line that jcsp cannot read; the message names the line."""


@dataclass(frozen=True)
class GulpLibrary:
    """A rigid-ion model as read from a GULP library.

    Attributes:
      charges: element -> charge (e).
      buck: (element, element) -> (A eV, rho Å, C eV·Å⁶, cutoff Å).
      lennard: (element, element) -> (A eV·Å¹², B eV·Å⁶, cutoff Å) of ``A/r^12 - B/r^6``.
      source: where it came from (file name or ``"text"``), for messages.
    """

    charges: Mapping[str, float]
    buck: Mapping[tuple[str, str], tuple[float, float, float, float]]
    lennard: Mapping[tuple[str, str], tuple[float, float, float]]
    source: str = "text"

    @property
    def max_cutoff(self) -> float:
        """The longest cutoff of any term, Å (the default real-space cutoff)."""
        cuts = [v[-1] for v in self.buck.values()] + [v[-1] for v in self.lennard.values()]
        return max(cuts)

    def potential(self, cutoff: float | None = None, *, accuracy: float = 1e-8,
                  alpha: float | None = None,
                  kmax: int | Sequence[int] | None = None) -> BuckinghamCoulomb:
        """The model as a :class:`.BuckinghamCoulomb`.

        Args:
          cutoff: Ewald real-space cutoff and neighbor range, Å; at least the longest
            term cutoff (the default). The energy does not depend on it beyond the
            Ewald ``accuracy``.
          accuracy, alpha, kmax: as for :class:`.BuckinghamCoulomb`.
        """
        cutoff = self.max_cutoff if cutoff is None else float(cutoff)
        if cutoff < self.max_cutoff:
            raise ValueError(f"{self.source}: cutoff {cutoff:g} Å is shorter than the "
                             f"longest term cutoff {self.max_cutoff:g} Å; give at least "
                             "that (or leave cutoff out)")
        return BuckinghamCoulomb(dict(self.buck), dict(self.charges), cutoff,
                                 lennard=dict(self.lennard) or None, accuracy=accuracy,
                                 alpha=alpha, kmax=kmax)


def gulp_potential(source: str | os.PathLike, cutoff: float | None = None, *,
                   accuracy: float = 1e-8, alpha: float | None = None,
                   kmax: int | Sequence[int] | None = None) -> BuckinghamCoulomb:
    """Read a GULP library (see :func:`read_gulp_library`) and build its potential.

    Example:
      >>> strontium_titanate = gulp_potential("srtio3-disp", cutoff=10.0)
    """
    return read_gulp_library(source).potential(cutoff, accuracy=accuracy, alpha=alpha,
                                               kmax=kmax)


def read_gulp_library(source: str | os.PathLike) -> GulpLibrary:
    """Parse a GULP library: a shipped name, a file path, or the text itself.

    Args:
      source: a name of :data:`SHIPPED_LIBRARIES` (``"mgal2o4-magus"``), a path to a
        file, or library text (anything with a line break).

    Raises:
      GulpFormatError: an unsupported section or a malformed line, naming the line.
      FileNotFoundError: a path that does not exist (with the shipped names listed).
    """
    if isinstance(source, str) and "\n" in source:
        return parse_gulp_library(source, "text")
    name = str(source).strip()
    path = SHIPPED_LIBRARIES.get(name.lower(), Path(name).expanduser())
    if not path.is_file():
        raise FileNotFoundError(f"GULP library {name!r} not found: give a file or one of "
                                + ", ".join(SHIPPED_LIBRARIES))
    return parse_gulp_library(path.read_text(), str(path))


def parse_gulp_library(text: str, source: str = "text") -> GulpLibrary:
    """Parse the text of a GULP library (sections ``species``, ``buck``, ``lennard``)."""
    charges: dict[str, float] = {}
    terms: dict[str, dict] = {"buck": {}, "lennard": {}}
    section = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split("!", 1)[0].strip()
        if not line:
            continue
        where = f"{source}, line {number} ({line!r})"
        words = line.split()
        head = words[0].lower()
        if _element(words[0]) is None:
            section = _section(head, words, where)
            continue
        if section is None:
            raise GulpFormatError(f"{where}: a data line before any section; start with "
                                  "species, buck or lennard 12 6")
        if section == "species":
            element, charge = _species_line(words, where)
            if element in charges and charges[element] != charge:
                raise GulpFormatError(f"{where}: {element} already has charge "
                                      f"{charges[element]:g}")
            charges[element] = charge
        else:
            pair, values = _pair_line(words, section, where)
            if pair in terms[section] or pair[::-1] in terms[section]:
                raise GulpFormatError(f"{where}: {section} {'-'.join(pair)} is given twice")
            terms[section][pair] = values
    if not charges:
        raise GulpFormatError(f"{source}: no species section; give every element's charge "
                              "(species, then lines such as 'Mg 2.0')")
    if not terms["buck"] and not terms["lennard"]:
        raise GulpFormatError(f"{source}: no buck or lennard 12 6 terms")
    for kind, table in terms.items():
        for pair in table:
            missing = [el for el in pair if el not in charges]
            if missing:
                raise GulpFormatError(f"{source}: {kind} {'-'.join(pair)} names "
                                      f"{', '.join(missing)}, which has no species charge")
    return GulpLibrary(charges, terms["buck"], terms["lennard"], source)


def _element(word: str) -> str | None:
    """A GULP atom label (case-insensitive chemical symbol) -> symbol, or None."""
    symbol = word[:1].upper() + word[1:].lower()
    return symbol if symbol in atomic_numbers and symbol != "X" else None


def _section(head: str, words: list[str], where: str) -> str:
    if head == "species":
        if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
            raise GulpFormatError(f"{where}: write 'species' alone (or with a count)")
        return "species"
    if head == "buck":
        if len(words) > 1 and words[1:] != ["inter"]:
            raise GulpFormatError(f"{where}: buck options {' '.join(words[1:])!r} are not "
                                  "supported; write 'buck' (intermolecular, eV and Å)")
        return "buck"
    if head == "lennard":
        if words[1:] not in ([], ["12", "6"], ["12", "6", "inter"]):
            raise GulpFormatError(f"{where}: only 'lennard 12 6' (A/r^12 - B/r^6 in eV "
                                  "and Å) is supported, not other powers, combination "
                                  "rules (epsilon/sigma) or units")
        return "lennard"
    raise GulpFormatError(f"{where}: unsupported GULP section or keyword {words[0]!r}; "
                          f"jcsp reads {', '.join(_SECTIONS)} (lennard 12 6) only")


def _species_line(words: list[str], where: str) -> tuple[str, float]:
    element = _element(words[0])
    rest = words[1:]
    if rest and rest[0].lower() in ("shel", "shell"):
        raise GulpFormatError(f"{where}: shells are not supported (rigid ions only)")
    if rest and rest[0].lower() == "core":
        rest = rest[1:]
    if len(rest) != 1:
        raise GulpFormatError(f"{where}: a species line is 'symbol [core] charge'")
    return element, _number(rest[0], where)


def _pair_line(words: list[str], section: str, where: str):
    labels, numbers = [], []
    for word in words:
        low = word.lower()
        if low in ("shel", "shell"):
            raise GulpFormatError(f"{where}: shells are not supported (rigid ions only)")
        if low == "core":
            continue
        if len(labels) < 2:
            element = _element(word)
            if element is None:
                raise GulpFormatError(f"{where}: {word!r} is not an element symbol")
            labels.append(element)
        else:
            numbers.append(_number(word, where))
    n_values = 3 if section == "buck" else 2
    form = "A rho C" if section == "buck" else "A B"
    if len(labels) != 2 or len(numbers) not in (n_values + 1, n_values + 2):
        raise GulpFormatError(f"{where}: a {section} line is 'symbol symbol {form} "
                              "[rmin] rmax' (fitting flags are not supported)")
    values, cuts = numbers[:n_values], numbers[n_values:]
    rmin, rmax = (0.0, cuts[0]) if len(cuts) == 1 else cuts
    if rmin != 0.0:
        raise GulpFormatError(f"{where}: inner cutoff rmin = {rmin:g} is not supported "
                              "(only 0)")
    if not rmax > 0:
        raise GulpFormatError(f"{where}: the cutoff rmax must be positive, got {rmax:g}")
    if section == "buck" and not values[1] > 0:
        raise GulpFormatError(f"{where}: rho must be positive, got {values[1]:g}")
    return tuple(labels), tuple(values) + (rmax,)


def _number(word: str, where: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise GulpFormatError(f"{where}: {word!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise GulpFormatError(f"{where}: {word!r} is not a finite number")
    return value

"""What a finished search returns and writes: :class:`SearchResult`, the ranking table, CSV,
best structures and plots (host side).

:func:`write_outputs` fills a search's ``out`` folder from its :class:`SearchResult`;
:func:`ranking_table` is the plain-text ranking the command line prints.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from ..io import write_structures
from .archive import Archive
from .config import SearchConfig


@dataclasses.dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
      best: the lowest-enthalpy-per-atom structure, ``info`` with ``energy``,
        ``enthalpy`` (eV), ``spacegroup``, ``volume``, ``found_at`` (relaxations done when
        first found), ``hits`` and its origin (``driver``, ``generation``, ``parents``,
        ``uid``, and ``origin`` = ``"generator"`` for a generator's proposal); None
        when every relaxation failed.
      structures: unique structures, ascending enthalpy per atom, same ``info`` keys.
      n_relaxations: relaxations counted against the budget (read back and failed ones
        included).
      history: [n_relaxations] best enthalpy per atom (eV/atom) after each relaxation.
      archive: the :class:`~jcsp.search.archive.Archive`.
      config: the :class:`~jcsp.search.config.SearchConfig` the search ran with.
      out: output folder, or None.
      n_batches: relaxation calls made by this process (read-back generations excluded;
        a steady-state :meth:`Session.walk` is one call).
      occupancy: how full the relaxation batches were: for generations, the mean
        fraction of the batch's slots given a structure; for :meth:`Session.walk`, the
        mean fraction of slots relaxing a structure over the optimizer steps run.
      n_failed: relaxations that failed (an invalid structure, a relaxation that broke
        down, or one set aside by ``max_grade``), read-back ones included; never ranked.
      failed: those failed relaxations (``info`` ``failure_reason`` and ``error``, the
        geometry where the relaxation stopped), in the order they finished.
      n_extrapolated: relaxed structures set aside as outside an ML potential's
        training domain (``max_grade``), read-back ones included.
      n_discarded: candidates that :func:`jcsp.search.repair.repair` could not make
        fit to relax (flat cells, atoms that cannot be pushed apart, non-finite
        coordinates); stored in the database as failed with ``discarded`` set, never
        relaxed and not counted in ``n_relaxations``.
      n_generated: relaxations of candidates a generative model proposed (the
        search's ``generator``; their structures carry ``info["origin"]`` =
        ``"generator"``), read-back ones included.
      n_generator_failures: calls of the generator's ``propose`` that raised in this
        process; their candidates were random symmetric crystals instead
        (:mod:`jcsp.search.seeding`).
    """

    best: Atoms | None
    structures: list[Atoms]
    n_relaxations: int
    history: np.ndarray
    archive: Archive
    config: SearchConfig
    out: Path | None = None
    n_batches: int = 0
    occupancy: float = math.nan
    n_failed: int = 0
    failed: list = dataclasses.field(default_factory=list)
    n_extrapolated: int = 0
    n_discarded: int = 0
    n_generated: int = 0
    n_generator_failures: int = 0

    def first_hit(self, target: float, tol: float = 1e-4) -> int | None:
        """Relaxations (1-based) until the best enthalpy per atom first came within
        ``tol`` of ``target`` (eV/atom), or None if it never did."""
        hit = np.flatnonzero(self.history <= target + tol)
        return int(hit[0]) + 1 if hit.size else None


def ranking_table(structures: Sequence[Atoms], *, limit: int | None = None) -> str:
    """A plain-text table of ranked structures (enthalpy per atom, volume, space group)."""
    rows = [f"{'rank':>4}  {'H/atom (eV)':>13}  {'E/atom (eV)':>13}  {'V/atom (A^3)':>12}  "
            f"{'hits':>4}  {'found at':>8}  spacegroup"]
    for k, atoms in enumerate(structures[:limit]):
        n = len(atoms)
        info = atoms.info
        v = info.get("volume", math.nan)
        rows.append(f"{k + 1:>4}  {info['enthalpy'] / n:>13.6f}  {info['energy'] / n:>13.6f}  "
                    f"{v / n:>12.4f}  {info.get('hits', 1):>4}  {info.get('found_at', 0):>8}  "
                    f"{info.get('spacegroup', '-')}")
    return "\n".join(rows)


def write_outputs(result: SearchResult, *, n_best: int = 10) -> list[Path]:
    """Write the ranking (txt, csv), the best structures and plots into ``result.out``."""
    out = Path(result.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    table = out / "ranking.txt"
    table.write_text(ranking_table(result.structures) + "\n")
    written.append(table)
    with open(out / "ranking.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "uid", "enthalpy_per_atom_eV", "energy_per_atom_eV",
                         "volume_per_atom_A3", "spacegroup", "hits", "found_at",
                         "origin"])
        for k, atoms in enumerate(result.structures):
            n, info = len(atoms), atoms.info
            writer.writerow([k + 1, info.get("uid", ""), info["enthalpy"] / n,
                             info["energy"] / n, info.get("volume", math.nan) / n,
                             info.get("spacegroup", "-"), info.get("hits", 1),
                             info.get("found_at", 0), info.get("origin", "")])
    written.append(out / "ranking.csv")
    best = result.structures[:n_best]
    if best:
        names = [f"{k + 1:03d}_{a.get_chemical_formula()}" for k, a in enumerate(best)]
        if best[0].pbc.all():
            written += write_structures(best, out / "best", "cif", names=names)
            written += write_structures(best, out / "best", "poscar", names=names)
        else:
            written += write_structures(best, out / "best" / "best.extxyz", "extxyz")
    written += _plots(result, out)
    return written


def _plots(result: SearchResult, out: Path) -> list[Path]:
    """Best enthalpy vs relaxations and enthalpy vs volume (PNG; skipped without
    matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    def save(name, draw, xlabel, ylabel):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        return out / name

    paths = [save("best_vs_relaxations.png",
                  lambda ax: ax.plot(np.arange(1, len(result.history) + 1), result.history),
                  "relaxations", "best enthalpy per atom (eV)")]
    crystals = [a for a in result.structures if a.pbc.all()]
    if crystals:
        paths.append(save(
            "enthalpy_vs_volume.png",
            lambda ax: ax.scatter([a.info["volume"] / len(a) for a in crystals],
                                  [a.info["enthalpy"] / len(a) for a in crystals], s=10),
            "volume per atom (Å³)", "enthalpy per atom (eV)"))
    return paths


__all__ = ["SearchResult", "ranking_table", "write_outputs"]

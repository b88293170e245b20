"""Variable-composition searches of binaries: one search per composition, pooled into a
convex hull, a table and a hull plot (host side).

Each composition is searched by :func:`jcsp.search.run.search` with the same settings
and its own folder ``out/<composition>/`` (so each one resumes on its own). The unique
structures of all of them form the formation-enthalpy convex hull
(:func:`jcsp.search.hull.convex_hull`): the pure compositions give the elemental
references, and every structure gets ``info["formation_enthalpy"]``,
``info["e_above_hull"]`` and ``info["fraction"]``. Outputs: ``out/hull.png``
(formation enthalpy per atom vs composition, the hull, the points above it) and
``out/hull.txt``.

Example:
  >>> res = jcsp.search.variable_composition(["Na4", "Na2Cl2", "NaCl3", "Cl4"], pot,
  ...                                        algorithm="random", budget=50, out="runs/nacl")
  >>> [a.get_chemical_formula() for a in res.stable]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from . import generate
from .hull import Hull, annotate, convex_hull
from .config import SearchConfig
from .run import SearchResult, search


@dataclass
class VariableResult:
    """What :func:`variable_composition` returns.

    Attributes:
      results: composition -> its :class:`~jcsp.search.run.SearchResult`.
      hull: the convex hull of all unique structures.
      structures: all unique structures, annotated (formation enthalpy, energy above
        hull, fraction), ascending energy above hull.
      stable: the structures on the hull, by increasing fraction of the second element.
      n_relaxations: relaxations of all searches together.
      out: output folder, or None.
    """

    results: dict[str, SearchResult]
    hull: Hull
    structures: list[Atoms]
    stable: list[Atoms]
    n_relaxations: int
    out: Path | None = None


def _elements(compositions: Sequence[str]) -> tuple[list[dict], list[str]]:
    counts = [generate.parse_composition(c) for c in compositions]
    elements = sorted({s for c in counts for s in c},
                      key=lambda s: generate.species_number(s))
    if len(elements) != 2:
        raise ValueError(f"a variable-composition search needs exactly two elements; "
                         f"{list(compositions)} have {elements}")
    for e in elements:
        if not any(set(c) == {e} for c in counts):
            raise ValueError(f"add a pure {e} composition (e.g. '{e}4'): the hull needs "
                             "both elemental references")
    return counts, elements


def variable_composition(compositions: Sequence[str], potential, *,
                         out: str | Path | None = None, n_best: int = 10,
                         progress: bool = False, **settings) -> VariableResult:
    """Search several compositions of a binary and build their convex hull.

    Args:
      compositions: e.g. ``["Cu4", "Cu3Au", "Cu2Au2", "CuAu3", "Au4"]``; exactly two
        elements, both pure ones included.
      potential: as for :func:`jcsp.search.run.search`.
      out: folder; each composition is searched in ``out/<composition>/``, and
        ``hull.png`` and ``hull.txt`` are written here.
      n_best, progress: as for :func:`jcsp.search.run.search`, for each composition.
      **settings: the fields of :class:`~jcsp.search.config.SearchConfig` but
        ``composition`` (``algorithm``, ``budget`` per composition, ``cluster``,
        ``population``, ``options``...), the same for every composition.

    Raises:
      ValueError: not exactly two elements, a pure element missing, a repeated
        composition, or any error :func:`~jcsp.search.run.search` raises before its
        first relaxation; all checked for every composition before any relaxation.
    """
    compositions = [str(c) for c in compositions]
    if len(set(compositions)) != len(compositions):
        raise ValueError(f"repeated composition in {compositions}")
    _elements(compositions)
    configs = {c: SearchConfig.from_keywords(c, **settings) for c in compositions}
    for config in configs.values():
        config.check_potential(potential)
    out = None if out is None else Path(out)
    results = {c: search(config, potential, out=None if out is None else out / c,
                         n_best=n_best, progress=progress)
               for c, config in configs.items()}
    pool = [a for r in results.values() for a in r.structures]
    hull = convex_hull(pool)
    structures = annotate(pool, hull)
    order = np.lexsort((hull.fraction, hull.above_hull))
    stable = [structures[k] for k in hull.vertices]
    result = VariableResult(results=results, hull=hull,
                            structures=[structures[k] for k in order], stable=stable,
                            n_relaxations=sum(r.n_relaxations for r in results.values()),
                            out=out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "hull.txt").write_text(hull_table(result.structures) + "\n")
        plot_hull(hull, out / "hull.png", structures=pool)
    return result


def hull_table(structures: Sequence[Atoms]) -> str:
    """Plain-text table: formula, fraction, enthalpy, formation enthalpy and energy
    above the hull per atom (eV/atom) of annotated structures."""
    rows = [f"{'formula':>12}  {'x':>6}  {'H/atom (eV)':>12}  {'H_f/atom (eV)':>13}  "
            f"{'above hull':>10}  spacegroup"]
    for a in structures:
        rows.append(f"{a.get_chemical_formula():>12}  {a.info['fraction']:>6.3f}  "
                    f"{a.info['enthalpy'] / len(a):>12.6f}  "
                    f"{a.info['formation_enthalpy']:>13.6f}  {a.info['e_above_hull']:>10.6f}"
                    f"  {a.info.get('spacegroup', '-')}")
    return "\n".join(rows)


def plot_hull(hull: Hull, path: str | Path, *, structures: Sequence[Atoms] | None = None,
              title: str | None = None) -> Path | None:
    """Formation enthalpy per atom vs composition: every structure (coloured by its
    energy above the hull), the hull line through its corners, the stable structures
    labelled. Writes a PNG; returns its path (None without matplotlib).

    Args:
      hull: from :func:`jcsp.search.hull.convex_hull`.
      path: the PNG to write.
      structures: the structures ``hull`` was built from (for the labels).
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    names = [chemical_symbols[z] for z in hull.elements]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    above = hull.above_hull
    on = np.zeros(len(above), bool)
    on[list(hull.vertices)] = True
    if (~on).any():
        points = ax.scatter(hull.fraction[~on], hull.formation[~on], c=above[~on], s=14,
                            cmap="viridis", label="above hull", zorder=2)
        fig.colorbar(points, ax=ax, label="energy above hull (eV/atom)")
    ax.plot(hull.corners[:, 0], hull.corners[:, 1], "k-", lw=1.2, zorder=1, label="hull")
    ax.scatter(hull.fraction[on], hull.formation[on], s=40, c="tab:red", edgecolors="k",
               zorder=3, label="on hull")
    if structures is not None:
        for k in hull.vertices:
            ax.annotate(structures[k].get_chemical_formula(),
                        (hull.fraction[k], hull.formation[k]), textcoords="offset points",
                        xytext=(4, -10), fontsize=8)
    ax.axhline(0.0, color="0.6", lw=0.6, ls=":")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"fraction of {names[-1]} in {names[0]}$_{{1-x}}${names[-1]}$_x$"
                  if len(names) == 2 else "composition")
    ax.set_ylabel("formation enthalpy (eV/atom)")
    ax.set_title(title or f"{'-'.join(names)} convex hull")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["VariableResult", "variable_composition", "plot_hull", "hull_table"]

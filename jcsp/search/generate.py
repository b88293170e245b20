"""Random symmetric crystals and random clusters (AIRSS-style starting points, host side).

A crystal is built for a composition and a space group: each species' count is split
into Wyckoff sets of the group (:mod:`.wyckoff`, derived from spglib's operations), every
set gets random free parameters, the conventional cell gets random parameters allowed
by the lattice system and is scaled to the target volume, and the structure is kept
only if no two atoms (or periodic images) are closer than ``min_separation`` times the
sum of their covalent radii (Pickard & Needs, J. Phys.: Condens. Matter 23, 053201
(2011), "MINSEP"). Randomness is explicit: a ``seed`` or ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.geometry import cellpar_to_cell

from . import pointgroup, wyckoff

#: Default volume per atom = VOLUME_FACTOR x (4/3) pi r_cov^3, averaged over atoms.
VOLUME_FACTOR = 2.6
#: Default minimum separation, as a fraction of the sum of covalent radii.
MIN_SEPARATION = 0.7
#: Covalent radius (Å) given to label species (e.g. "LJ") that are not elements.
LABEL_RADIUS = 0.56


def parse_composition(text: str, formula_units: int = 1) -> dict[str, int]:
    """'TiO2' x 4 -> {'Ti': 4, 'O': 8}; 'LJ38' -> {'LJ': 38}. Order of first appearance.

    Element symbols must be valid; other capitalised labels (like 'LJ') are kept as
    labels for potentials that treat every particle alike.
    """
    if not isinstance(text, str) or not re.fullmatch(r"([A-Z][a-zA-Z]?\d*)+", text.strip()):
        raise ValueError(f"cannot read composition {text!r}: write it like 'Si8', 'TiO2' "
                         "or 'Mg2Al4'")
    if int(formula_units) < 1:
        raise ValueError(f"formula_units must be >= 1, got {formula_units}")
    counts: dict[str, int] = {}
    tokens = re.findall(r"([A-Z][a-z]?)(\d*)", text.strip())
    if any(sym not in atomic_numbers for sym, _ in tokens):
        label = re.fullmatch(r"([A-Z]{2,3})(\d*)", text.strip())
        if label is None or label.group(1) in atomic_numbers or len(label.group(1)) > 3:
            bad = next(sym for sym, _ in tokens if sym not in atomic_numbers)
            raise ValueError(f"unknown element {bad!r} in composition {text!r}")
        tokens = [label.groups()]  # a particle label such as 'LJ38'
    for sym, num in tokens:
        counts[sym] = counts.get(sym, 0) + (int(num) if num else 1) * int(formula_units)
    if any(c <= 0 for c in counts.values()):
        raise ValueError(f"composition {text!r} has a zero count")
    return counts


def species_number(symbol: str) -> int:
    """Atomic number of an element; 0 ('X') for labels such as 'LJ'."""
    return atomic_numbers.get(symbol, 0)


def radius(symbol: str) -> float:
    z = species_number(symbol)
    return LABEL_RADIUS if z == 0 else float(covalent_radii[z])


def default_volume(counts: Mapping[str, int]) -> float:
    """Target cell volume (Å³) from covalent radii."""
    return VOLUME_FACTOR * sum(4 / 3 * np.pi * radius(s) ** 3 * c for s, c in counts.items())


def lattice_system(number: int) -> str:
    if number <= 2:
        return "triclinic"
    if number <= 15:
        return "monoclinic"
    if number <= 74:
        return "orthorhombic"
    if number <= 142:
        return "tetragonal"
    if number <= 194:
        return "hexagonal"  # trigonal groups in spglib's standard (hexagonal) setting
    return "cubic"


def random_cell(number: int, volume: float, rng: np.random.Generator) -> np.ndarray:
    """[3, 3] conventional cell allowed by the group's lattice system, with ``volume``."""
    system = lattice_system(number)
    for _ in range(1000):
        abc = rng.uniform(0.6, 1.6, 3)
        ang = [90.0, 90.0, 90.0]
        if system == "triclinic":
            ang = list(rng.uniform(60, 120, 3))
        elif system == "monoclinic":
            ang[1] = rng.uniform(60, 120)
        elif system == "tetragonal":
            abc[1] = abc[0]
        elif system == "hexagonal":
            abc[1] = abc[0]
            ang[2] = 120.0
        elif system == "cubic":
            abc[:] = abc[0]
        if abc.max() / abc.min() > 3.0:
            continue
        try:
            cell = cellpar_to_cell(np.concatenate([abc, ang]))
        except AssertionError:
            continue
        v = np.linalg.det(cell)
        if v <= 0.35 * np.prod(abc):  # too flat a triclinic cell
            continue
        return cell * (volume / v) ** (1 / 3)
    raise RuntimeError("no valid random cell")


def _separation_ok(frac, cell, radii, factor: float) -> bool:
    """Whether every two atoms, and every atom and the periodic images of all atoms, are
    at least ``factor`` x the sum of their radii apart (exact: every image that could be
    closer is checked)."""
    cutoff = factor * 2.0 * float(np.max(radii))
    volume = abs(np.linalg.det(cell))
    heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reach = np.ceil(cutoff / heights + 0.5).astype(int)  # |d_k + n_k| h_k < cutoff
    shifts = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"),
                      -1).reshape(-1, 3)
    d = frac[None, :, :] - frac[:, None, :]
    d -= np.round(d)
    cart = (d @ cell)[:, :, None, :] + shifts @ cell  # [n, n, images, 3]
    dist2 = np.einsum("ijsk,ijsk->ijs", cart, cart)
    n = len(frac)
    dist2[np.arange(n), np.arange(n), np.flatnonzero(~shifts.any(1))[0]] = np.inf
    bound = factor * (radii[:, None] + radii[None, :])
    return bool(np.all(dist2.min(-1) >= bound**2))


_IMAGES = np.array(list(np.ndindex(3, 3, 3)), float) - 1.0


#: Site tries of one Wyckoff set are made in blocks: the first of this many tries, each
#: next one twice as many, up to this many (try, site, site, image) distances.
FIRST_BLOCK = 4
BLOCK_ELEMENTS = 1 << 18


def _min_image_distances(new, old, cell):
    """[..., len(new), len(old)] shortest distances over the 27 nearest images (Å);
    ``new`` may carry leading batch axes."""
    d = new[..., :, None, :] - old[..., None, :, :]
    d = d - np.round(d)
    c = d @ cell
    images = _IMAGES @ cell  # |c + t|^2 = |c|^2 + 2 c.t + |t|^2, one matrix product
    dist2 = (c @ (2.0 * images.T) + np.einsum("ij,ij->i", images, images)).min(-1)
    return np.sqrt(np.maximum(dist2 + np.einsum("...k,...k->...", c, c), 0.0))


def _try_sites(w, rng: np.random.Generator, rot, trans, cell, inner_min: float, frac,
               pair_min, tries: int) -> np.ndarray | None:
    """The sites of the first of up to ``tries`` random members of the free Wyckoff set
    ``w`` whose atoms are at least ``inner_min`` apart and ``pair_min`` [len(frac)] from
    the sites ``frac`` placed before; None when every try fails.

    The same result, and the same draws from ``rng``, as calling :func:`wyckoff.place`
    one try at a time, but the tries are drawn and checked in vectorised blocks: the
    generator's state is saved before a block and advanced afterwards by exactly the
    draws of the tries used. A try is the run of draws up to the first one whose orbit
    is generic (a draw on a more special point is redrawn, as :func:`wyckoff.place`
    does)."""
    m, dof = w.multiplicity, w.dof
    n_old = len(frac)
    done, block = 0, FIRST_BLOCK
    cap = max(BLOCK_ELEMENTS // (m * max(m, n_old) * len(_IMAGES)), FIRST_BLOCK)
    while done < tries:
        block = int(min(block, cap, tries - done))
        state = rng.bit_generator.state
        x = (w.origin + rng.uniform(-1.0, 1.0, (block, dof)) @ w.basis.T) % 1.0
        images, dup = wyckoff.orbits(x, rot, trans)  # [block, M, 3], [block, M]
        generic = (~dup).sum(1) == m
        ends = np.flatnonzero(generic)  # draw index at which each complete try ends
        starts = np.concatenate([[0], ends[:-1] + 1])
        if np.any(ends - starts >= 50) or (not len(ends) and block >= 50):
            raise RuntimeError("could not place a generic member of a Wyckoff set")
        if not len(ends):  # every draw of a short block landed on special points
            rng.bit_generator.state = state
            return _try_sites_one_by_one(w, rng, rot, trans, cell, inner_min, frac,
                                         pair_min, tries - done)
        ends = ends[: tries - done]
        pts = images[ends][~dup[ends]].reshape(len(ends), m, 3)
        inner = _min_image_distances(pts, pts, cell)
        inner[:, np.arange(m), np.arange(m)] = np.inf
        ok = inner.min(axis=(1, 2)) >= inner_min
        if n_old:
            ok &= np.all(_min_image_distances(pts, frac, cell) >= pair_min, axis=(1, 2))
        first = int(np.argmax(ok)) if ok.any() else None
        used = ends[-1 if first is None else first] + 1
        rng.bit_generator.state = state
        rng.uniform(-1.0, 1.0, (used, dof))  # advance by exactly the draws used
        if first is not None:
            return pts[first]
        done += len(ends)
        block *= 2
    return None


def _try_sites_one_by_one(w, rng, rot, trans, cell, inner_min, frac, pair_min, tries):
    """:func:`_try_sites` without blocks."""
    for _ in range(tries):
        pts = wyckoff.place(w, rng, rot, trans)
        inner = _min_image_distances(pts, pts, cell)
        np.fill_diagonal(inner, np.inf)
        if inner.min(initial=np.inf) < inner_min:
            continue
        if len(frac) and np.any(_min_image_distances(pts, frac, cell) < pair_min):
            continue
        return pts
    return None


def random_crystal(counts: Mapping[str, int], number: int, rng: np.random.Generator, *,
                   volume: float | None = None, min_separation: float = MIN_SEPARATION,
                   tries: int = 20, site_tries: int = 200) -> Atoms | None:
    """One random crystal of space group ``number`` (conventional cell), or None.

    Orbits are placed one at a time (each up to ``site_tries`` random members) so dense
    low-symmetry cells still fill; a whole new attempt (new Wyckoff choice and cell) is
    made up to ``tries`` times. None when no Wyckoff combination holds the counts or
    every attempt fails the minimum separation.
    """
    rot, trans = wyckoff.operations(number)
    volume = default_volume(counts) if volume is None else float(volume)
    options = {s: wyckoff.combinations(number, c, rng=rng) for s, c in counts.items()}
    if any(not o for o in options.values()):
        return None
    for _ in range(tries):
        cell = random_cell(number, volume, rng)
        plan = []
        for s in counts:
            plan += [(s, w) for w in options[s][rng.integers(len(options[s]))]]
        points = [w for _, w in plan if w.dof == 0]
        if len(points) != len({id(w) for w in points}):
            continue  # two species on one fixed point
        plan.sort(key=lambda sw: sw[1].dof)  # fixed points first, free sets fill around
        frac = np.zeros((0, 3))
        symbols: list[str] = []
        self_img = _self_image(cell)
        for s, w in plan:
            r_new = radius(s)
            r_old = np.array([radius(x) for x in symbols])
            if self_img < min_separation * 2 * r_new:
                break  # an atom would touch its own image whatever the site
            try_sites = _try_sites if w.dof else _try_sites_one_by_one
            pts = try_sites(w, rng, rot, trans, cell, min_separation * 2 * r_new, frac,
                            min_separation * (r_new + r_old), site_tries if w.dof else 1)
            if pts is None:
                break
            frac = np.vstack([frac, pts])
            symbols += [s] * len(pts)
        if len(symbols) != sum(counts.values()):
            continue
        radii = np.array([radius(x) for x in symbols])
        if _separation_ok(frac, cell, radii, min_separation):
            numbers = [species_number(x) for x in symbols]
            atoms = Atoms(numbers=numbers, scaled_positions=frac, cell=cell, pbc=True)
            atoms.info["generator_spacegroup"] = number
            atoms.info["labels"] = list(symbols)
            return atoms
    return None


def _self_image(cell) -> float:
    shifts = _IMAGES[np.any(_IMAGES != 0, axis=1)]
    return float(np.linalg.norm(shifts @ cell, axis=1).min())


def feasible_groups(counts: Mapping[str, int], groups: Iterable[int] | None = None) -> list[int]:
    """Space groups whose Wyckoff sets can hold the species counts."""
    groups = range(1, 231) if groups is None else groups
    return list(_feasible_groups(tuple(int(c) for c in counts.values()),
                                 tuple(int(g) for g in groups)))


@functools.lru_cache(maxsize=1024)
def _feasible_groups(counts: tuple, groups: tuple) -> tuple:
    for g in groups:
        if not 1 <= g <= 230:
            raise ValueError(f"space group numbers are 1..230, got {g}")
    return tuple(g for g in groups if wyckoff.feasible(g, counts))


@functools.lru_cache(maxsize=64)
def _groups_up_to(order: int) -> tuple:
    """Space groups whose general position has at most ``order`` sites."""
    return tuple(g for g in range(1, 231) if len(wyckoff.operations(g)[0]) <= order)


def random_crystals(counts: Mapping[str, int], n: int, *, seed=0, groups=None,
                    volume: float | None = None, min_separation: float = MIN_SEPARATION,
                    max_group_order: int = 48) -> list[Atoms]:
    """``n`` random symmetric crystals with the given species counts.

    Args:
      counts: {'Si': 8} style counts per conventional cell.
      n: number of structures.
      seed: int seed or numpy Generator (explicit randomness).
      groups: space-group numbers to draw from (default: every feasible group whose
        general position has at most ``max_group_order`` sites, which keeps small cells
        from being forced onto a few high-symmetry points).
      volume: target cell volume in Å³ (default from covalent radii).
      min_separation: minimum distance as a fraction of summed covalent radii.

    Raises:
      ValueError: when no group in ``groups`` can hold the composition.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if groups is None:
        pool = list(_groups_up_to(int(max_group_order)))
    else:
        pool = list(groups)
    usable = feasible_groups(counts, pool)
    if not usable:
        raise ValueError(f"no space group among {_describe(pool)} has Wyckoff positions that "
                         f"add up to {dict(counts)}; allow more groups or change the counts")
    out: list[Atoms] = []
    failures = 0
    while len(out) < n:
        g = usable[rng.integers(len(usable))]
        atoms = random_crystal(counts, g, rng, volume=volume, min_separation=min_separation)
        if atoms is None:
            failures += 1
            if failures > 50 * n + 200:
                raise RuntimeError("could not place atoms at the requested minimum separation;"
                                   " lower min_separation or raise the volume")
            continue
        out.append(atoms)
    return out


def cluster_groups(counts: Mapping[str, int], symmetry) -> list[str]:
    """Point groups random clusters are drawn from, for ``symmetry`` = True (every group
    of :data:`.pointgroup.GROUPS` that can hold the counts) or a list of Schoenflies
    symbols (the feasible ones among them).

    Raises:
      ValueError: an unknown symbol, or no group that can hold the counts.
    """

    if symmetry is True:
        names = list(pointgroup.GROUPS)
    elif isinstance(symmetry, str):
        names = [symmetry]
    else:
        names = list(symmetry)
    for name in names:
        pointgroup.operations(name)  # ValueError for unknown symbols
    usable = [g for g in names if pointgroup.feasible(g, list(counts.values()))]
    if not usable:
        raise ValueError(f"no point group among {names} has orbits adding up to "
                         f"{dict(counts)}; allow more groups or change the counts")
    return usable


def random_clusters(counts: Mapping[str, int], n: int, *, seed=0, density: float = 0.6,
                    min_separation: float = MIN_SEPARATION, symmetry=None,
                    jitter: float = 0.0) -> list[Atoms]:
    """``n`` random clusters: points uniform in a sphere, rejected when too close.

    The sphere radius packs the atoms' covalent spheres at packing fraction
    ``density`` / 2 (loose, so relaxation has room to find compact shapes).

    Args:
      counts: species -> count.
      n: number of clusters.
      seed: int seed or numpy Generator.
      density: twice the packing fraction of the sphere the atoms are drawn in.
      min_separation: minimum distance as a fraction of summed covalent radii.
      symmetry: None or False: no symmetry. True: each cluster gets a random point group
        among all those of :mod:`.pointgroup` (the 32 crystallographic ones, I and Ih)
        that can hold the counts; a list of Schoenflies symbols (``["Td", "Oh"]``):
        a random one of those. Atoms are placed on orbits of the group (general
        positions, axes, mirror planes, the centre) like Wyckoff sets of a crystal, and
        ``info["generator_pointgroup"]`` names the group.
      jitter: Gaussian displacement of every atom of a symmetric cluster, in units of
        its covalent diameter. A small one (searches use 0.03) lets relaxations leave
        symmetric saddle points (a square of four atoms stays square under symmetric
        forces); 0 keeps the symmetry exact.

    Raises:
      ValueError: unknown point groups or none that can hold the counts.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    symbols = [s for s, c in counts.items() for _ in range(c)]
    radii = np.array([radius(s) for s in symbols])
    r_sphere = (np.sum(radii**3) / (density / 2)) ** (1 / 3)
    groups = cluster_groups(counts, symmetry) if symmetry not in (None, False) else None
    out = []
    while len(out) < n:
        if groups is not None:
            atoms = _symmetric_cluster(counts, groups, rng, r_sphere, min_separation)
            if atoms is not None:
                if jitter > 0:
                    diam = 2 * np.array([radius(s) for s in atoms.info["labels"]])
                    atoms.positions += rng.normal(0.0, 1.0, (len(atoms), 3)) * (
                        jitter * diam[:, None])
                out.append(atoms)
                continue
            r_sphere *= 1.05  # too tight for the orbits drawn: loosen and try again
            continue
        pos = np.zeros((0, 3))
        for k in range(len(symbols)):
            for _ in range(10000):
                p = rng.normal(size=3)
                p *= r_sphere * rng.uniform() ** (1 / 3) / np.linalg.norm(p)
                if len(pos) == 0 or np.all(np.linalg.norm(pos - p, axis=1)
                                           >= min_separation * (radii[:k] + radii[k])):
                    pos = np.vstack([pos, p])
                    break
            else:
                r_sphere *= 1.05
                break
        if len(pos) == len(symbols):
            atoms = Atoms(numbers=[species_number(s) for s in symbols], positions=pos,
                          pbc=False)
            atoms.info["labels"] = list(symbols)
            out.append(atoms)
    return out


def _symmetric_cluster(counts, groups, rng, r_sphere, min_separation) -> Atoms | None:

    group = groups[rng.integers(len(groups))]
    placed = pointgroup.random_symmetric_cluster(
        counts, group, rng, radius=r_sphere, radii={s: radius(s) for s in counts},
        min_separation=min_separation, tries=5)
    if placed is None:
        return None
    pos, symbols = placed
    atoms = Atoms(numbers=[species_number(s) for s in symbols], positions=pos, pbc=False)
    atoms.info["labels"] = list(symbols)
    atoms.info["generator_pointgroup"] = group
    return atoms


def _describe(groups) -> str:
    groups = list(groups)
    return f"{len(groups)} groups" if len(groups) > 6 else str(groups)

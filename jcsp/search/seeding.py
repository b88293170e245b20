"""Candidates from a generative model: the generator seam of a search (host side).

A search's fresh candidates (the first generation of every driver, random search's
structures, the immigrants of GA and PSO, the fresh starts and restarts of basin and
minima hopping, annealing's fresh starts) all come from
:meth:`jcsp.search.run.Session.random_structures`. With a ``generator`` set
(:class:`~jcsp.search.config.SearchConfig`), a fraction ``generator_share`` of them is
taken from a trained generative model instead of random symmetric crystals, then
repaired, relaxed, stored and ranked like every other candidate. Anything with the
method of :class:`Generator` will do; :func:`jcsp.generative.load` returns one for a
model name (``"perov-5"``) or a checkpoint path.

Proposals are asked for in blocks (one call of ``propose`` per block, which a diffusion
sampler runs as one batched program) and kept in a small cache. A block is named by a
key that depends only on where its candidates go, never on the order in which the
search asks: ``("gen", g, b)`` for the ``b``-th block of generation ``g`` of a
generational driver, ``("walk", k, c, b)`` for step ``k`` of the walkers ``b x size``
to ``(b + 1) x size - 1`` of a steady-state driver, and its seed is drawn from the
search's seed and the key (:meth:`Proposals.block_seed`). So a search with a
deterministic generator is reproducible, and a resumed search that needs a candidate
again gets the same one; a candidate whose relaxed structure is already in the run
database is never asked for.

Failures: a ``propose`` that returns something other than a list of ``n`` periodic
``ase.Atoms`` with exactly the requested atomic numbers (in any order) breaks the
protocol and stops the search with a ValueError saying what came back, and so does a
``propose`` that raises ValueError (the model refuses the request, e.g. an element it
has no embedding for; its message is passed on). Any other exception (an
out-of-memory sampler, a numerical failure) does not stop it: the candidates of that
block are random symmetric crystals instead, a RuntimeWarning says so once, and
:attr:`Proposals.n_failures` (reported as ``SearchResult.n_generator_failures``)
counts the failed calls.

Example:
  >>> model = jcsp.generative.load("perov-5")
  >>> res = jcsp.search("SrTiO3", pot, algorithm="random", budget=100, generator=model)
  >>> res.n_generated, res.best.info["origin"]
"""

from __future__ import annotations

import collections
import warnings
from typing import Callable, Hashable, Protocol, Sequence, runtime_checkable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .. import generative
from . import database as dbm
from . import generate

#: ``info["origin"]`` of candidates (and of their relaxed structures) that a generator
#: proposed.
ORIGIN = "generator"
#: Blocks of proposals kept; one evicted and needed again is asked for again (with the
#: same seed, so it is the same for a deterministic generator).
CACHE_BLOCKS = 64


@runtime_checkable
class Generator(Protocol):
    """What a search needs of a generative model."""

    def propose(self, numbers: Sequence[int], n: int, *, seed: int) -> list[Atoms]:
        """``n`` periodic structures with exactly these atomic numbers (one cell, in any
        order), deterministic in ``seed``."""


def resolve(generator) -> Generator:
    """The generator object of a ``generator`` setting: a model name or checkpoint path
    is loaded with :func:`jcsp.generative.load`; an object with a ``propose`` method is
    returned as it is.

    Raises:
      ValueError: neither a non-empty string nor an object with ``propose``.
    """
    if isinstance(generator, str):
        if not generator.strip():
            raise ValueError("generator must be a model name (e.g. 'perov-5'), a checkpoint "
                             "path or a generator object, got an empty string")
        return generative.load(generator)
    check(generator)
    return generator


def check(generator) -> None:
    """Raise ValueError unless ``generator`` is a string or has a callable ``propose``."""
    if isinstance(generator, str):
        return
    if not callable(getattr(generator, "propose", None)):
        raise ValueError(f"generator must be a model name, a checkpoint path or an object "
                         f"with propose(numbers, n, *, seed) -> list[ase.Atoms] (as "
                         f"jcsp.generative.load returns), got {type(generator).__name__}")


def describe(generator) -> str:
    """The name a run record stores for a ``generator`` setting: the string as given,
    else the object's ``name`` (or ``meta["name"]``), else its class name (never an address, so a
    resumed run with the same model matches its record)."""
    if isinstance(generator, str):
        return generator
    name = getattr(generator, "name", None)
    if not isinstance(name, str):
        meta = getattr(generator, "meta", None)  # jcsp.generative's models
        name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(name, str) and name:
        return name
    return type(generator).__qualname__


class Proposals:
    """The blocks of proposals of one search (host side).

    Args:
      generator: the model (:class:`Generator`).
      numbers: [N] atomic numbers of the search's cell (composition x formula units).
      seed: the search's seed.
      size: proposals per block (the search's population).
      fallback: ``fallback(rng) -> Atoms``, one random symmetric crystal, used for the
        candidates of a block whose ``propose`` raised.
      label: how errors name the generator.
    """

    def __init__(self, generator: Generator, numbers: Sequence[int], *, seed: int,
                 size: int, fallback: Callable[[np.random.Generator], Atoms],
                 label: str = "generator"):
        self.generator = generator
        self.numbers = [int(z) for z in numbers]
        self.seed, self.size, self.fallback, self.label = int(seed), int(size), fallback, label
        self._cache: collections.OrderedDict = collections.OrderedDict()
        #: calls of ``propose`` made, and those that raised.
        self.n_calls = 0
        self.n_failures = 0

    def block_seed(self, key: tuple[Hashable, ...]) -> int:
        """The seed given to ``propose`` for block ``key``: drawn from the search's seed
        and the key (a tuple of a kind name and integers), never from call order;
        below 2**31."""
        kind, *ints = key
        code = {"gen": 0, "walk": 1, "other": 2}[kind]
        entropy = [self.seed, code, *(int(i) for i in ints)]
        state = np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0]
        return int(state >> 1)  # < 2**31: a seed any sampler takes

    def take(self, key: tuple[Hashable, ...], index: int) -> Atoms:
        """Proposal ``index`` (< ``size``) of block ``key``: a copy with ``info``
        ``labels`` and ``origin`` = :data:`ORIGIN`, or a random crystal when the block's
        ``propose`` raised."""
        if not 0 <= index < self.size:
            raise ValueError(f"proposal index {index} outside a block of {self.size}")
        block = self._block(key)
        if block is None:
            rng = np.random.default_rng([self.block_seed(key), int(index)])
            return self.fallback(rng)
        atoms = block[index]
        out = Atoms(numbers=atoms.numbers, cell=atoms.cell[:], pbc=True,
                    scaled_positions=atoms.get_scaled_positions(wrap=True))
        out.info["labels"] = [chemical_symbols[z] for z in out.numbers]
        out.info["origin"] = ORIGIN
        return out

    def _block(self, key) -> list[Atoms] | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        seed = self.block_seed(key)
        self.n_calls += 1
        try:
            block = self.generator.propose(list(self.numbers), self.size, seed=seed)
        except ValueError as err:  # the model refuses the request: the user must act
            raise ValueError(f"{self.label} cannot propose {_formula(self.numbers)}: "
                             f"{err}") from err
        except Exception as err:  # noqa: BLE001  (any other failure: fall back, counted)
            if not self.n_failures:
                warnings.warn(f"{self.label} failed ({type(err).__name__}: {err}); its "
                              "candidates are random symmetric crystals instead (counted "
                              "in SearchResult.n_generator_failures)", RuntimeWarning,
                              stacklevel=2)
            self.n_failures += 1
            block = None
        else:
            block = self._checked(block)
        self._cache[key] = block
        if len(self._cache) > CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return block

    def _checked(self, block) -> list[Atoms]:
        """The block if it keeps the protocol, else a ValueError saying what came back."""
        if not isinstance(block, Sequence) or isinstance(block, (str, Atoms)) \
                or len(block) != self.size:
            got = len(block) if isinstance(block, Sequence) else type(block).__name__
            raise ValueError(f"{self.label}.propose(numbers, {self.size}, seed=...) must "
                             f"return a list of {self.size} ase.Atoms, got {got!r:.60}")
        want = sorted(self.numbers)
        for k, atoms in enumerate(block):
            if not isinstance(atoms, Atoms):
                raise ValueError(f"{self.label}.propose returned a {type(atoms).__name__} "
                                 f"(item {k}), not an ase.Atoms")
            if sorted(int(z) for z in atoms.numbers) != want:
                raise ValueError(
                    f"{self.label}.propose returned {atoms.get_chemical_formula()} "
                    f"({len(atoms)} atoms, item {k}) for the requested "
                    f"{_formula(self.numbers)} ({len(want)} atoms); a generator must "
                    "propose exactly the atomic numbers it is given")
            if not atoms.pbc.all() or atoms.cell.rank < 3:
                raise ValueError(f"{self.label}.propose returned a structure that is not "
                                 f"periodic in 3 dimensions (item {k}: pbc "
                                 f"{atoms.pbc.tolist()}); a generator proposes crystals")
        return list(block)


class FreshCandidates:
    """The fresh candidates of a :class:`jcsp.search.run.Session` (a mixin of it):
    random symmetric crystals or clusters, or a generator's proposals keyed by the
    generation or walker step they are for, so resume never asks for one again."""

    def random_structures(self, n: int, rng: np.random.Generator) -> list[Atoms]:
        """``n`` fresh candidates of the composition: random symmetric crystals (or
        random clusters), or, with the search's ``generator``, each with probability
        ``generator_share`` a structure the generator proposed
        (:mod:`jcsp.search.seeding`; ``info["origin"]`` = ``"generator"``). ``rng`` is
        the stream of the generation (:meth:`rng`) or walker (:meth:`walker_rng`) the
        candidates are for; it names the block of proposals they come from."""
        if n <= 0:
            return []
        if self._proposals is None:
            return self._random(n, rng)
        share = self.config.generator_share
        chosen = np.ones(n, bool) if share >= 1 else rng.random(n) < share
        randoms = iter(self._random(int(n - chosen.sum()), rng))
        return [self._proposal(rng) if c else next(randoms) for c in chosen]

    def _proposal(self, rng: np.random.Generator) -> Atoms:
        """The next generator proposal for the generation or walker step whose stream
        is ``rng``. One whose relaxed structure is already stored (a resumed run) is not
        asked of the generator: a copy of the stored candidate stands in for it (the
        session reads the stored result back), and should it have to be relaxed after
        all, :meth:`_materialized` asks for the proposal then."""
        size = self.population
        walker = next((w for w, (_, r) in self._walker_rngs.items() if r is rng), None)
        generation = next((g for g, r in self._generation_rngs.items() if r is rng), None)
        if walker is not None:
            step = self._walker_steps[walker]
            c = self._requests["walk", walker, step]
            key, index = ("walk", step, c, walker // size), walker % size
            self._requests["walk", walker, step] += 1
            stored = self.stored.get(dbm.make_uid(self.config.seed, self.driver, step,
                                                  walker))
        elif generation is not None:
            j = self._requests["gen", generation]
            key, index = ("gen", generation, j // size), j % size
            self._requests["gen", generation] += 1
            uids = [dbm.make_uid(self.config.seed, self.driver, generation, i)
                    for i in range(min(size, max(self.remaining, 1)))]
            stored = self.stored.get(uids[0]) if all(u in self.stored for u in uids) \
                else None
        else:  # a stream the session did not hand out: order of requests
            j = self._requests["other"]
            key, index = ("other", j // size), j % size
            self._requests["other"] += 1
            stored = None
        if stored is None:
            return self._proposals.take(key, index)
        stand_in = Atoms(numbers=stored.numbers, positions=stored.positions,
                         cell=stored.cell, pbc=stored.pbc)
        stand_in.info.update(labels=list(stored.info.get("labels", self.symbols)),
                             proposal=(key, index))
        return stand_in

    def _materialized(self, candidate: Atoms) -> Atoms:
        """A candidate to relax: a stand-in of :meth:`_proposal` replaced by its
        proposal, anything else as it is."""
        if "proposal" in candidate.info and self._proposals is not None:
            return self._proposals.take(*candidate.info["proposal"])
        return candidate

    def _random(self, n: int, rng: np.random.Generator) -> list[Atoms]:
        """``n`` random symmetric crystals (or random clusters) of the composition."""
        if n <= 0:
            return []
        if self.cluster:
            return generate.random_clusters(self.counts, n, seed=rng,
                                            symmetry=self.point_groups, jitter=0.03)
        return generate.random_crystals(self.counts, n, seed=rng, groups=self.space_groups,
                                        volume=self.config.volume)

def _formula(numbers: Sequence[int]) -> str:
    return Atoms(numbers=list(numbers)).get_chemical_formula()


__all__ = ["CACHE_BLOCKS", "Generator", "ORIGIN", "Proposals", "check", "describe",
           "resolve"]

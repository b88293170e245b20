"""The generator seam of jcsp.search (jcsp.search.seeding): fresh candidates of every
driver proposed by a generative model, then relaxed, stored and ranked as usual.

The model here is a test double that proposes rattled copies of a known crystal. The
reference for the seeded search is the diamond-structure Stillinger-Weber silicon energy
-4.33660 eV/atom (Stillinger & Weber, PRB 31, 5262 (1985)); the other tests use argon
(fcc, Lennard-Jones) only as a cheap crystal to count candidates with.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

import jcsp
from jcsp.cli import build_parser, search_settings
from jcsp.potentials import LennardJones, StillingerWeber
from jcsp.search import database, seeding
from jcsp.search.config import SearchConfig

SI_DIAMOND = -4.33660
SW_FILE = Path("/usr/share/lammps/potentials/Si.sw")
SW = StillingerWeber.from_lammps(SW_FILE if SW_FILE.exists()
                                 else Path(jcsp.__file__).parent / "data" / "Si.sw")
AR = LennardJones(0.0104, 3.4, 6.0, truncation="smooth")
#: random argon crystals: few space groups (cheap Wyckoff tables) at about the fcc
#: volume (the neighbour lists of the rattled fcc fit them: no further compilation)
RANDOM_AR = {"groups": [221, 225, 229], "volume": 150.0}


class Rattled:
    """Proposes rattled copies of ``crystal`` (atoms shuffled, so the search cannot rely
    on their order) and records every call."""

    name = "rattled"

    def __init__(self, crystal, amplitude=0.08):
        self.crystal, self.amplitude = crystal, amplitude
        self.calls: list[tuple[list[int], int, int]] = []

    def propose(self, numbers, n, *, seed):
        self.calls.append((list(numbers), n, seed))
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            atoms = self.crystal[rng.permutation(len(self.crystal))]
            atoms.positions += rng.normal(0.0, self.amplitude, atoms.positions.shape)
            out.append(atoms)
        return out


def _argon():
    return Rattled(bulk("Ar", "fcc", a=5.3, cubic=True))


def test_seeded_search_finds_the_proposed_ground_state_first(tmp_path):
    model = Rattled(bulk("Si", "diamond", a=5.431, cubic=True))
    res = jcsp.search("Si4", SW, algorithm="random", budget=8, population=4, seed=0,
                      formula_units=2, generator=model, out=tmp_path)
    # the generator got the search's cell: composition x formula units, a whole batch
    assert model.calls and all(c[:2] == ([14] * 8, 4) for c in model.calls)
    assert res.first_hit(SI_DIAMOND, tol=1e-4) == 1
    assert res.best.info["energy"] / 8 == pytest.approx(SI_DIAMOND, abs=2e-5)
    assert res.best.info["origin"] == "generator"
    assert res.n_generated == res.n_relaxations == 8 and res.n_generator_failures == 0
    with database.open_run(tmp_path / "structures.db") as db:
        stored = database.read_all(db)
        assert database.run_config(db)["generator"] == "rattled"
    assert len(stored) == 8 and all(a.info["origin"] == "generator" for a in stored)
    with open(tmp_path / "ranking.csv") as handle:
        assert next(csv.DictReader(handle))["origin"] == "generator"


# each driver set so that every candidate is a fresh one
FRESH_EVERYWHERE = {
    "random": {},
    "basin": {"fresh": 1.0},
    "minima": {"fresh": 1.0},
    "anneal": {"from_best": 0.0, "steps": 20},
    "ga": {"heredity": 0.0, "strain": 0.0, "permutation": 0.0, "rattle": 0.0,
           "surface": 0.0, "random": 1.0},
    "pso": {"reseed": 0.9},
}


@pytest.mark.parametrize("algorithm", sorted(FRESH_EVERYWHERE))
def test_every_driver_takes_its_fresh_candidates_from_the_generator(algorithm):
    model = _argon()
    res = jcsp.search("Ar4", AR, algorithm=algorithm, budget=8, population=4, seed=1,
                      generator=model, options=FRESH_EVERYWHERE[algorithm])
    assert res.n_relaxations == 8
    assert res.n_generated == 8  # the first population and every later fresh one
    assert model.calls and all(c[:2] == ([18] * 4, 4) for c in model.calls)
    assert len({c[2] for c in model.calls}) == len(model.calls)  # one seed per block
    assert res.best.info["origin"] == "generator"


def test_generator_share_mixes_generated_and_random_candidates(tmp_path):
    model = _argon()
    res = jcsp.search("Ar4", AR, algorithm="random", budget=8, population=4, seed=0,
                      generator=model, generator_share=0.5, out=tmp_path, **RANDOM_AR)
    assert res.n_relaxations == 8 and 0 < res.n_generated < 8
    with database.open_run(tmp_path / "structures.db") as db:
        origins = [a.info.get("origin") for a in database.read_all(db)]
    assert origins.count("generator") == res.n_generated
    assert origins.count(None) == 8 - res.n_generated  # random symmetric crystals
    none = _argon()
    res = jcsp.search("Ar4", AR, algorithm="random", budget=4, population=4, seed=0,
                      generator=none, generator_share=0.0, **RANDOM_AR)
    assert res.n_generated == 0 and not none.calls
    assert not any("origin" in a.info for a in res.structures)


def test_generator_of_the_wrong_composition_is_a_clear_error():
    wrong = Rattled(bulk("Ar", "fcc", a=5.3, cubic=True)[:3])
    with pytest.raises(ValueError, match="exactly the atomic numbers it is given"):
        jcsp.search("Ar4", AR, algorithm="random", budget=4, population=4,
                    generator=wrong)

    class Molecules(Rattled):
        def propose(self, numbers, n, *, seed):
            out = super().propose(numbers, n, seed=seed)
            for atoms in out:
                atoms.pbc = False
            return out

    with pytest.raises(ValueError, match="not periodic"):
        jcsp.search("Ar4", AR, algorithm="random", budget=4, population=4,
                    generator=Molecules(bulk("Ar", "fcc", a=5.3, cubic=True)))


def test_a_generator_refusing_the_composition_stops_the_search():
    class Refuses:
        def propose(self, numbers, n, *, seed):
            raise ValueError("the model has no embedding for Ar")

    with pytest.raises(ValueError, match="cannot propose Ar4: the model has no embedding"):
        jcsp.search("Ar4", AR, algorithm="random", budget=4, population=4,
                    generator=Refuses())


def test_a_failing_generator_leaves_random_candidates_and_is_counted():
    class Broken:
        def propose(self, numbers, n, *, seed):
            raise RuntimeError("sampler out of memory")

    with pytest.warns(RuntimeWarning, match="sampler out of memory"):
        res = jcsp.search("Ar4", AR, algorithm="ga", budget=8, population=4, seed=0,
                          generator=Broken(), **RANDOM_AR)
    assert res.n_relaxations == 8 and res.n_generated == 0
    assert res.n_generator_failures >= 1 and res.best is not None


def test_bad_generator_settings_fail_before_any_work(monkeypatch):
    with pytest.raises(ValueError, match="cluster search cannot take one"):
        jcsp.search("Ar4", AR, cluster=True, generator=_argon())
    with pytest.raises(ValueError, match="not one"):
        SearchConfig("LJ8", generator=_argon())
    with pytest.raises(ValueError, match="propose"):
        SearchConfig("Ar4", generator=object())
    with pytest.raises(ValueError, match="generator_share"):
        SearchConfig("Ar4", generator=_argon(), generator_share=1.5)
    # a name is loaded with jcsp.generative.load when the search starts
    loaded = []

    def load(name):
        loaded.append(name)
        return _argon()

    monkeypatch.setattr(seeding.generative, "load", load, raising=False)
    res = jcsp.search("Ar4", AR, budget=4, population=4, generator="some-model")
    assert loaded == ["some-model"] and res.n_generated == 4


def test_command_line_and_toml_take_a_generator(tmp_path):
    args = build_parser().parse_args(["search", "Ar4", "--generator", "perov-5",
                                      "--generator-share", "0.25", "-p", "sw-si"])
    config, _, _ = search_settings(args)
    assert (config.generator, config.generator_share) == ("perov-5", 0.25)
    toml = tmp_path / "run.toml"
    toml.write_text('composition = "Ar4"\ngenerator = "models/x.ckpt"\n')
    config, _, _ = search_settings(build_parser().parse_args(["search", "-c", str(toml)]))
    assert config.generator == "models/x.ckpt" and config.generator_share == 1.0


@pytest.mark.parametrize("algorithm", ["random", "ga"])
def test_resume_asks_the_generator_for_nothing_it_has(tmp_path, algorithm):
    settings = dict(algorithm=algorithm, population=4, seed=2, generator_share=0.75,
                    **RANDOM_AR)
    first = _argon()
    done = jcsp.search("Ar4", AR, budget=8, generator=first, out=tmp_path, **settings)
    assert first.calls and done.n_generated > 0
    again = _argon()
    res = jcsp.search("Ar4", AR, budget=8, generator=again, out=tmp_path, **settings)
    assert not again.calls  # every structure read back
    assert res.n_generated == done.n_generated and res.n_relaxations == 8
    assert res.best.info["uid"] == done.best.info["uid"]
    # a larger budget asks again, by seed: the same structures as one longer run
    more = jcsp.search("Ar4", AR, budget=12, generator=_argon(), out=tmp_path, **settings)
    whole = jcsp.search("Ar4", AR, budget=12, generator=_argon(), **settings)

    def by_uid(result):
        return {a.info["uid"]: round(a.info["enthalpy"], 8) for a in result.structures}

    assert more.n_relaxations == whole.n_relaxations == 12
    if algorithm == "ga":  # generations replay exactly (walkers may finish in another order)
        assert more.n_generated == whole.n_generated
        assert by_uid(more) == by_uid(whole)

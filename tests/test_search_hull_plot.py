"""Variable-composition search of a binary: the convex hull PNG and table are written,
the hull is the one ASE's PhaseDiagram computes from the same structures, and the mixed
composition with the stronger unlike bond lies below the elemental line."""

import numpy as np
import pytest
from ase.phasediagram import PhaseDiagram

import jcsp
from jcsp.potentials import LennardJones

PNG = b"\x89PNG\r\n\x1a\n"


def _binary_lj():
    # unlike pairs bound 1.5 x more strongly: mixing lowers the enthalpy
    return LennardJones(cutoff=None, pairs={("Ar", "Ar"): (1.0, 2.0), ("Kr", "Kr"): (1.0, 2.2),
                                            ("Ar", "Kr"): (1.5, 2.1)})


def test_variable_composition_writes_hull_plot(tmp_path):
    res = jcsp.search.variable_composition(["Ar4", "Ar2Kr2", "ArKr3", "Kr4"], _binary_lj(),
                                           algorithm="random", budget=2, cluster=True,
                                           seed=0, out=tmp_path, population=2)
    png = tmp_path / "hull.png"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == PNG
    table = (tmp_path / "hull.txt").read_text()
    assert "above hull" in table and "Ar2Kr2" in table
    assert (tmp_path / "Ar2Kr2" / "structures.db").exists()
    assert res.n_relaxations == 8
    mixed = [a for a in res.structures if a.get_chemical_formula() == "Ar2Kr2"]
    assert min(a.info["formation_enthalpy"] for a in mixed) < -0.1  # not vacuous
    assert "Ar2Kr2" in [a.get_chemical_formula() for a in res.stable]
    # energies above the hull equal ASE's phase diagram on the same points
    refs = [(a.get_chemical_formula(), a.info["enthalpy"]) for a in res.structures]
    pd = PhaseDiagram(refs, verbose=False)
    for a in res.structures:
        e_hull = pd.decompose(a.get_chemical_formula())[0]
        assert a.info["e_above_hull"] == pytest.approx(
            (a.info["enthalpy"] - e_hull) / len(a), abs=1e-9)
    assert np.all(np.diff([a.info["e_above_hull"] for a in res.structures]) >= 0)


def test_variable_composition_refuses_bad_requests():
    lj = _binary_lj()
    with pytest.raises(ValueError, match="pure Kr"):
        jcsp.search.variable_composition(["Ar4", "Ar2Kr2"], lj, cluster=True)
    with pytest.raises(ValueError, match="exactly two elements"):
        jcsp.search.variable_composition(["Ar4"], lj, cluster=True)
    with pytest.raises(ValueError, match="repeated"):
        jcsp.search.variable_composition(["Ar4", "Ar4", "Kr4"], lj, cluster=True)

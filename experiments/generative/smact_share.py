"""How many Perov-5 test compositions DiffCSP's SMACT filter calls invalid.

DiffCSP's ``compute_metrics.py`` counts a prediction as valid only when its composition
passes ``smact_validity`` (charge neutrality with some combination of SMACT oxidation
states, plus Pauling's electronegativity ordering), and at k = 1 it also requires the
reference to pass. Every prediction of a test crystal has the reference's composition, so
a composition that fails is unmatched in DiffCSP's protocol whatever the model does.
``jcsp.generative.evaluate`` does not apply the filter (SMACT is not a jcsp dependency);
this script measures the share of the test split it would remove, an upper bound on how
much higher jcsp's match rate can read than DiffCSP's protocol for the same samples.

``smact_valid`` below is DiffCSP's ``smact_validity`` (``scripts/eval_utils.py``) written
against the installed SMACT. SMACT's oxidation-state lists changed between versions, so the
share is measured with each list SMACT 4 ships (``oxidation_states`` is the default one)
and the version is recorded. ``smact_valid`` is also what to pass as
``jcsp.generative.evaluate.match(..., composition_filter=...)`` for DiffCSP's filtered
numbers (``functools.partial(smact_valid, ox_list="oxidation_states_smact14")``).

Needs smact (not a jcsp dependency), e.g. ``pip install --target /tmp/smact --no-deps
smact`` and ``PYTHONPATH=/tmp/smact``.

Example:
  PYTHONPATH=/tmp/smact python experiments/generative/smact_share.py \\
      --record experiments/results/generative_smact_share.json
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys

import numpy as np
import smact
from smact.screening import pauling_test

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from records import write_record  # noqa: E402

from jcsp.generative.data import perov5  # noqa: E402
from jcsp.generative.evaluate import composition  # noqa: E402

LISTS = ("oxidation_states", "oxidation_states_smact14", "oxidation_states_icsd24",
         "oxidation_states_wiki")


def smact_valid(symbols: tuple[str, ...], counts: tuple[int, ...], ox_list: str) -> bool:
    """DiffCSP's smact_validity(use_pauling_test=True, include_alloys=True)."""
    if len(set(symbols)) == 1:
        return True
    if all(s in smact.metals for s in symbols):
        return True
    elements = [smact.Element(s) for s in symbols]
    electronegs = [e.pauling_eneg for e in elements]
    ox_combos = [getattr(e, ox_list) or [] for e in elements]
    if math.prod(len(o) for o in ox_combos) > 1e7:
        return False
    threshold = max(counts)
    stoichs = [(c,) for c in counts]
    for ox_states in itertools.product(*ox_combos):
        found = smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold)
        # SMACT 2 (DiffCSP's) returns (is_neutral, ratios); SMACT 3+ the list of ratios
        neutral = found[0] if isinstance(found, tuple) else bool(found)
        if neutral:
            try:
                ok = pauling_test(ox_states, electronegs)
            except TypeError:  # no electronegativity data: DiffCSP assumes it is fine
                ok = True
            if ok:
                return True
    return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--record")
    args = parser.parse_args(argv)
    crystals = perov5(args.split)
    comps = [composition(a) for a in crystals]
    unique = sorted(set(comps))
    results = {"n_crystals": len(crystals), "n_compositions": len(unique)}
    for ox_list in LISTS:
        verdict = {c: smact_valid(*c, ox_list) for c in unique}
        bad = sum(not verdict[c] for c in comps)
        results[ox_list] = {"invalid_crystals": bad,
                            "invalid_percent": 100.0 * bad / len(crystals),
                            "examples": sorted({"".join(f"{s}{n}" for s, n in zip(*c))
                                                for c in comps if not verdict[c]})[:10]}
        print(ox_list, results[ox_list], flush=True)
    if args.record:
        version = getattr(smact, "__version__", None)
        if version is None:
            from importlib.metadata import version as _version
            version = _version("smact")
        write_record(args.record, settings={"split": args.split, "smact": version,
                                            "lists": list(LISTS)}, results=results)


if __name__ == "__main__":
    main()

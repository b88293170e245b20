"""Files of an active-learning run (host side): the final committee published as
``out/model`` and the per-round plot ``out/active.png`` (:mod:`jcsp.search.active`)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path


def publish(source: Path, target: Path) -> Path:
    """Copy the final round's model to ``target`` (replacing an older copy) atomically."""
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("state.pkl"))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def plot_rounds(rounds: list[dict], path: Path) -> Path | None:
    """Oracle calls, best oracle enthalpy and committee errors per round (PNG; skipped
    without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not rounds:
        return None
    r = [row["round"] for row in rounds]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(r, [row["oracle_calls"] for row in rounds], "o-")
    axes[0].set(xlabel="round", ylabel="oracle calls")
    axes[1].plot([row["oracle_calls"] for row in rounds],
                 [row["best_oracle_enthalpy_per_atom"] for row in rounds], "o-")
    axes[1].set(xlabel="oracle calls", ylabel="best oracle enthalpy (eV/atom)")
    for key, label in (("valid_forces_mae", "validation"), ("new_forces_mae", "new labels")):
        axes[2].plot(r, [row.get(key, math.nan) for row in rounds], "o-", label=label)
    axes[2].set(xlabel="round", ylabel="force MAE (eV/Å)", yscale="log")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

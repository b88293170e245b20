"""Records of measured numbers: one small JSON file per measurement, under
``experiments/results/``, with the command that produced it, the commit it ran at, the
date and the machine, beside the numbers themselves.

Every figure quoted in README.md, docs/ and experiments/*/README.md names the record it
comes from; ``python experiments/check_records.py`` lists the quoted tables that do not.

    from records import write_record
    write_record("experiments/results/x.json", settings={...}, results={...})
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def provenance() -> dict:
    """The commit of the working tree (and the files under jcsp/ that differ from it), the UTC date
    and the machine: CPU model, core count, Python, JAX and its device."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import jax

    return {
        "commit": _git("rev-parse", "HEAD"),
        "jcsp_uncommitted": _git("status", "--porcelain", "--", "jcsp").splitlines(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "jax": jax.__version__,
                    "device": str(jax.devices()[0]),
                    "cpu_affinity": sorted(os.sched_getaffinity(0)),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
    }


def command_line() -> str:
    """The command that is running, relative to the repository root when it can be."""
    argv = list(sys.argv)
    if argv and os.path.isabs(argv[0]) and argv[0].startswith(ROOT + os.sep):
        argv[0] = os.path.relpath(argv[0], ROOT)
    return "python " + shlex.join(argv)


def write_record(path: str, *, settings: dict, results: dict, command: str | None = None,
                 notes: str | None = None, **extra) -> dict:
    """Write ``{command, commit, jcsp_uncommitted, date, machine, settings, results, ...}``
    to ``path`` (directories created) and return it."""
    record = {"command": command or command_line(), **provenance(), "settings": settings,
              "results": results, **extra}
    if notes:
        record["notes"] = notes
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(record, fh, indent=1, default=float)
        fh.write("\n")
    print(f"record: {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path}")
    return record

"""List the number-bearing table rows of README.md, docs/*.md and experiments/*/README.md
that name no record.

A markdown table row with a decimal number outside backticks (``1.79``, ``0.055``;
option defaults such as `` `0.01` `` are code) counts as backed when the row itself names
a file under ``experiments/results/`` or cites a publication (``published``, ``et
al.``), or when the paragraph right before the table does. Each other row is printed as
``file:line: row`` for a reader to judge: definitions and unit constants (10.18 fs)
are listed too, measurements among them need a record. A heuristic: it reads tables
only, so figures in prose need a reader's eye as well.

    python experiments/check_records.py
"""

from __future__ import annotations

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = re.compile(r"`[^`]*`")
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")
BACKED = re.compile(r"experiments/results/\S+|published|et al\.")


def pages() -> list[str]:
    found = [os.path.join(ROOT, "README.md")]
    found += sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    found += sorted(glob.glob(os.path.join(ROOT, "experiments", "*", "README.md")))
    return [p for p in found if os.path.isfile(p)]


def unbacked_rows(path: str) -> list[tuple[int, str]]:
    with open(path) as fh:
        lines = fh.read().splitlines()
    out, in_code, paragraph, context = [], False, "", ""
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if not line.startswith("|"):
            if line.strip():
                paragraph += " " + line
            elif paragraph:
                context, paragraph = paragraph, ""
            continue
        if paragraph:
            context, paragraph = paragraph, ""
        text = CODE.sub("", line)
        if NUMBER.search(text) and not BACKED.search(line) and not BACKED.search(context):
            out.append((number, line))
    return out


def main() -> int:
    missing = 0
    for path in pages():
        for number, line in unbacked_rows(path):
            print(f"{os.path.relpath(path, ROOT)}:{number}: {line}")
            missing += 1
    print(f"{missing} number-bearing table rows name no record", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

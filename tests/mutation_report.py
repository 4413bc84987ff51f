"""After `mutmut run` (``make mutation``): the score per file, and a failure on any survivor not known to be equivalent.

Reads ``mutmut results --all true`` and, for each survivor, the mutated line from ``mutmut show`` (mutmut 3.8's
fork server records no per-mutant durations, so the time reported is the whole run's, passed in by ``make``). A survivor
is accepted when tests/mutation_equivalents.tsv lists its name with the same mutated line (so a renumbered
mutant is never hidden by a stale entry) and a one-line reason. Exit status 1 when any other mutant survived,
had no test, or was not checked; the new survivors are printed in the list's format, to kill or to review.

Usage: ``python tests/mutation_report.py [--markdown] [--seconds WALL]`` from the project root, after ``mutmut run``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.tsv"
KILLED = {"killed", "timeout", "caught by type check"}
MUTMUT = [str(Path(sys.executable).with_name("mutmut"))]


def module_file(mutant: str) -> str:
    """``fedkit.metrics.x_grouped_metrics__mutmut_3`` → ``fedkit/metrics.py`` (methods are ``xǁClassǁname``)."""
    module = re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0]
    return module.replace(".", "/") + ".py"


def results() -> dict[str, str]:
    """Every mutant's status from ``mutmut results``."""
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], capture_output=True, text=True, check=True, cwd=ROOT)
    statuses = {}
    for line in out.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def mutated_line(mutant: str) -> str:
    """The first added line of the mutant's diff, stripped (what the equivalence list records)."""
    out = subprocess.run([*MUTMUT, "show", mutant], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    added = [line[1:].strip() for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else "(line removed)"


def equivalents() -> dict[str, tuple[str, str]]:
    """``{mutant: (mutated line, reason)}`` from the checked-in list (tab-separated; # starts a comment line)."""
    listed = {}
    for number, line in enumerate(EQUIVALENTS.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[2].strip():
            raise SystemExit(f"{EQUIVALENTS}:{number}: expected 'mutant<TAB>mutated line<TAB>reason', got {line!r}")
        listed[fields[0]] = (fields[1], fields[2])
    return listed


def main(argv: list[str] | None = None) -> int:
    """Print the per-file score; return 1 when a survivor is not on the equivalence list."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the score table as Markdown")
    parser.add_argument("--seconds", type=float, help="wall-clock seconds of the mutmut run, to print with the score")
    args = parser.parse_args(argv)
    statuses = results()
    if not statuses:
        print("No mutmut results: run `make mutation` (or `mutmut run`) first.")
        return 1
    listed = equivalents()
    counts: dict[str, Counter] = {}
    new: list[tuple[str, str, str]] = []
    seen = set()
    for mutant, status in sorted(statuses.items()):
        row = counts.setdefault(module_file(mutant), Counter())
        row["mutants"] += 1
        if status in KILLED:
            row["killed"] += 1
            continue
        line = mutated_line(mutant) if status == "survived" else "-"
        known = listed.get(mutant)
        if status == "survived" and known is not None and known[0] == line:
            row["equivalent"] += 1
            seen.add(mutant)
            continue
        row["new"] += 1
        new.append((mutant, line, status))
    header = ("file", "mutants", "killed", "equivalent", "not killed")
    table = [(f, c["mutants"], c["killed"], c["equivalent"], c["new"]) for f, c in sorted(counts.items())]
    total = ("total", *(sum(r[i] for r in table) for i in range(1, 5)))
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in [*table, total]:
            print("| " + " | ".join(map(str, r)) + " |")
    else:
        for r in [header, *table, total]:
            print(f"{r[0]:<34}" + "".join(f"{v!s:>12}" for v in r[1:]))
    if args.seconds is not None:
        print(f"\nThe mutmut run took {args.seconds / 60:.0f} min of wall-clock time.")
    stale = sorted(set(listed) - seen)
    if stale:
        print(f"\n{len(stale)} listed equivalent(s) no longer survive as listed (killed, renumbered or gone):")
        for mutant in stale:
            print(f"  {mutant}")
    if new:
        print(f"\n{len(new)} mutant(s) not killed and not listed as equivalent: kill them with a test, or add")
        print(f"the line to {EQUIVALENTS.relative_to(ROOT)} with the reason it cannot change a result:")
        for mutant, line, status in new:
            print(f"{mutant}\t{line}\t({status}) REASON")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

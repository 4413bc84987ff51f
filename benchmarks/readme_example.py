"""The README's example output of ``fedkit run``, generated from a real run so that it cannot go stale.

Runs the command written in the README's ``readme-example`` section (through the CLI, in a scratch run
store) and prints what it prints, the run id masked; ``--write-docs`` writes that into the README.
``tests/test_readme.py`` runs the README's command again and fails when the README's block differs.

    python benchmarks/readme_example.py [--write-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import tempfile
from unittest import mock

from _sections import read_section, write_section

SECTION = "readme-example"
COMMAND = "fedkit run --split flamby --rounds 15 --seed 42"
RUN_ID = re.compile(r"^run \S+ ", flags=re.MULTILINE)


def command_in_readme() -> str:
    """The ``$ fedkit ...`` command of the README's example block."""
    for line in read_section(SECTION).splitlines():
        if line.startswith("$ "):
            return line.removeprefix("$ ")
    raise SystemExit(f"The README's {SECTION} section has no '$ fedkit ...' line.")


def example_block(command: str) -> str:
    """``command`` run through the CLI in a scratch run store, as the README shows it (a fenced block)."""
    from fedkit.cli import main

    words = shlex.split(command)
    if words[0] != "fedkit":
        raise SystemExit(f"The example command must start with 'fedkit'; got {command!r}.")
    out = io.StringIO()
    with (
        tempfile.TemporaryDirectory() as home,
        mock.patch.dict(os.environ, {"FEDKIT_HOME": home}),  # not into the user's run store
        contextlib.redirect_stdout(out),
    ):
        status = main([*words[1:], "--quiet"])
    if status != 0:
        raise SystemExit(f"{command} exited with {status}.")
    printed = RUN_ID.sub("run <run id> ", out.getvalue().rstrip())
    return f"```text\n$ {command}\n{printed}\n```"


def main() -> None:
    """Print the example block; with ``--write-docs`` also write it into the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write the block into README.md")
    args = parser.parse_args()
    block = example_block(COMMAND)
    print(block)
    if args.write_docs:
        write_section(SECTION, block)


if __name__ == "__main__":
    main()

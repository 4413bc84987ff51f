"""Wall time of `fedkit report notebooks/04_headless_report.ipynb -p rounds 5` against a kernel's start-up.

Target (issue 6): the report takes at most the kernel start-up time + 3 s. Printed, each the median
of ``--repeat`` runs measured in this one process:

- kernel start-up: start a ``python3`` kernel of this interpreter and wait until it answers (ready);
- kernel + fedkit imports: the same, then run ``fedkit._kernel_startup.WARM_UP`` (what every fedkit notebook
  imports: pandas, matplotlib, fedkit's round loop; one small figure drawn): what any notebook pays
  before its first result;
- report: the whole command in a fresh process, from exec to exit (kernel, 5 rounds, figures, HTML).

Usage: ``python benchmarks/report_time.py [--repeat 5] [--rounds 5]`` (FEDKIT_DATA_DIR as for the tests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_headless_report.ipynb"


def kernel_start(imports: bool) -> float:
    """Seconds from starting a python3 kernel until it replies (and, with ``imports``, has imported fedkit's stack)."""
    from jupyter_client.manager import start_new_kernel

    from fedkit._kernel_startup import WARM_UP

    start = time.perf_counter()
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=120)
    try:
        if imports:
            client.execute_interactive(WARM_UP, silent=True, timeout=120)
        return time.perf_counter() - start
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def report(rounds: int, out: Path, env: dict[str, str]) -> float:
    """Seconds of one `fedkit report ... -p rounds N` in a fresh process."""
    command = [sys.executable, "-m", "fedkit", "report", str(NOTEBOOK), "-p", "rounds", str(rounds)]
    command += ["--output-dir", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FEDKIT_HOME": str(Path(tmp) / "home")}
        report(args.rounds, Path(tmp) / "warm", env)  # first run: data checks, font cache, OS file cache
        kernel, warm, reports = [], [], []
        for i in range(args.repeat):  # interleaved, so background load hits all three alike
            kernel.append(kernel_start(imports=False))
            warm.append(kernel_start(imports=True))
            reports.append(report(args.rounds, Path(tmp) / f"r{i}", env))
        pages = [p.stat().st_size for p in sorted(Path(tmp).glob("r*/*.html"))]
    k, w, r = statistics.median(kernel), statistics.median(warm), statistics.median(reports)
    print(f"kernel start-up (python3, ready):            {k:6.2f} s   runs: {', '.join(f'{x:.2f}' for x in kernel)}")
    print(f"kernel start-up + fedkit imports:            {w:6.2f} s   runs: {', '.join(f'{x:.2f}' for x in warm)}")
    print(
        f"fedkit report 04_headless_report -p rounds {args.rounds}: {r:6.2f} s   runs: "
        f"{', '.join(f'{x:.2f}' for x in reports)}"
    )
    print(
        f"report - kernel start-up = {r - k:.2f} s (target <= 3 s: {'met' if r <= k + 3 else 'NOT met'}); "
        f"report - (kernel + imports) = {r - w:.2f} s"
    )
    print(f"HTML reports written: {len(pages)}, {pages[-1] // 1024} KiB each" if pages else "no HTML written!")


if __name__ == "__main__":
    main()

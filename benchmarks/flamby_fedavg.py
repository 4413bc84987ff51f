"""FedAvg under the FLamby Fed-Heart-Disease protocol, seeds 42-46, through the CLI; compares with FLamby's Avg4.

    python benchmarks/flamby_fedavg.py [--write-docs]

Runs exactly ``fedkit run --split flamby --strategy fedavg --rounds 15 --local-steps 100
--batch-size 4 --lr 0.001 --optimizer sgd --seed S --json`` for S = 42..46.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _sections import write_section

FLAMBY_FEDAVG_AVG4 = 0.6850
SEEDS = range(42, 47)
COMMAND = (
    "fedkit run --split flamby --strategy fedavg --rounds 15 --local-steps 100 "
    "--batch-size 4 --lr 0.001 --optimizer sgd --seed {seed} --json"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write the table into its docs page")
    args = parser.parse_args()
    rows = []
    for seed in SEEDS:
        cmd = [sys.executable, "-m", "fedkit", *COMMAND.format(seed=seed).split()[1:], "--quiet"]
        start = time.perf_counter()
        summary = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        final = summary["final"]
        rows.append((seed, final, time.perf_counter() - start))
    silos = list(rows[0][1]["silos"])
    lines = [
        "| seed | " + " | ".join(f"{s} acc / AUC" for s in silos) + " | pooled AUC | Avg4 accuracy | wall s |",
        "|---" * (len(silos) + 4) + "|",
    ]
    for seed, final, seconds in rows:
        cells = [f"{final['silos'][s]['accuracy']:.3f} / {final['silos'][s]['auc']:.3f}" for s in silos]
        lines.append(
            f"| {seed} | "
            + " | ".join(cells)
            + f" | {final['pooled']['auc']:.3f} | {final['avg_accuracy']:.4f} | {seconds:.1f} |"
        )
    avg = [final["avg_accuracy"] for _, final, _ in rows]
    mean, sd = statistics.mean(avg), statistics.stdev(avg)
    lines += [
        "",
        f"Mean Avg4 over seeds 42-46: **{mean:.4f} ± {sd:.4f}** (FLamby published FedAvg: {FLAMBY_FEDAVG_AVG4}; "
        f"difference {mean - FLAMBY_FEDAVG_AVG4:+.4f}).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_section("flamby-fedavg", f"`{COMMAND.format(seed='S')}`, S = 42..46:\n\n{table}")


if __name__ == "__main__":
    main()

"""Every fedkit method under the FLamby Fed-Heart-Disease protocol, seeds 42-46, beside FLamby's published Avg4.

    python benchmarks/flamby_table.py [--write-docs]

Avg4 = unweighted mean over the four hospitals of test accuracy at 0.5. Global-model methods are
scored with the global model; personalized ones (and ``local``) with each silo's own model on its
own test set. Timings are in ``benchmarks/speed.py``. FLamby's "local" figures (0.72 / 0.63 /
0.57 / 0.64) score each hospital's local model on all four test sets, so they are not comparable
to the ``local`` row here.
"""

from __future__ import annotations

import argparse

from _common import describe, finals, mean_std, protocol
from _sections import write_section

from fedkit.presets import PRESETS

# client settings from FLamby's Fed-Heart-Disease benchmark (DESIGN.md); the robust and
# personalized methods use FedAvg's.
METHODS: dict[str, tuple[dict, float | None]] = {
    "pooled": ({"strategy": "pooled", "optimizer": "adam", "lr": 0.001, "local_epochs": 50, "rounds": 1}, 0.7353),
    "local": ({"strategy": "local", "optimizer": "adam", "lr": 0.001, "local_epochs": 50, "rounds": 1}, None),
    "fedavg": ({"strategy": "fedavg", "lr": 0.001}, 0.6850),
    "fedprox": ({"strategy": "fedprox", "lr": 0.001, "mu": 0.01}, 0.6850),
    "scaffold": ({"strategy": "scaffold", "lr": 0.001, "server_lr": 1.0}, 0.6840),
    "fedadam": ({"strategy": "fedadam", "lr": 0.01, "server_lr": 0.01}, 0.7255),
    "fedyogi": ({"strategy": "fedyogi", "lr": 0.003162, "server_lr": 0.01}, 0.7314),
    "fedadagrad": ({"strategy": "fedadagrad", "lr": 0.003162, "server_lr": 0.316228}, 0.7314),
    "fedavgm": ({"strategy": "fedavgm", "lr": 0.001}, None),
    "fedmedian": ({"strategy": "fedmedian", "lr": 0.001}, None),
    "trimmedmean": ({"strategy": "trimmedmean", "lr": 0.001, "trim_beta": 0.25}, None),
    "krum": ({"strategy": "krum", "lr": 0.001, "byzantine": 1, "krum_m": 2}, None),
    "fedavg + fine-tuning": ({"strategy": "fedavg", "lr": 0.001, "personalize": "finetune"}, None),
    "fedper (per-silo bias)": ({"strategy": "fedavg", "lr": 0.001, "personalize": "fedper"}, None),
    "preset best-global": (PRESETS["best-global"], None),
    "preset best-personalized": (PRESETS["best-personalized"], None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write the table into its docs page")
    args = parser.parse_args()
    lines = [
        "| method | flags beyond the FLamby protocol | scored with | Avg4 (mean ± std, 5 seeds) | FLamby Avg4 | Δ | "
        "pooled-test AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (fields, published) in METHODS.items():
        fields = protocol(fields)
        results = finals(fields)
        avg, sd = mean_std([r["avg_accuracy"] for r in results])
        auc, _ = mean_std([r["pooled"]["auc"] for r in results])
        ref = f"{published:.4f}" if published else "–"
        delta = f"{avg - published:+.4f}" if published else "–"
        lines.append(
            f"| {name} | `{describe(fields)}` | {results[0]['model']} | {avg:.4f} ± {sd:.4f} | {ref} | {delta} | "
            f"{auc:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_section("flamby-table", "`python benchmarks/flamby_table.py --write-docs`:\n\n" + table)


if __name__ == "__main__":
    main()

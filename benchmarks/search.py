"""Honest search for the best global and the best personalized configuration under the FLamby protocol.

    python benchmarks/search.py [--write-docs]

Every candidate is scored by 4-fold cross-validation inside each silo's train set
(``validation_split``; 4 folds × seeds 42-46 = 20 runs per candidate) — never on a test set. The winners (highest mean
validation Avg4 accuracy; ties broken by validation pooled AUC) are then measured once on the real
test sets and compared with ``fedkit.presets``, which ship them as ``best-global`` and
``best-personalized``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

from _common import FLAMBY_PROTOCOL, SEEDS, describe, finals, mean_std
from _sections import write_section
from tqdm import tqdm

from fedkit.data import load_silos
from fedkit.data.silos import validation_split
from fedkit.presets import PRESETS

LRS = (0.001, 0.003162, 0.01, 0.03162, 0.1)
SERVER_LRS = (0.01, 0.03162, 0.1, 0.3162, 1.0)


def global_space() -> list[dict[str, Any]]:
    """Global-model candidates: every FedAvg-family strategy over client and server learning rates."""
    space: list[dict[str, Any]] = []
    for lr in LRS:
        space.append({"strategy": "fedavg", "lr": lr})
        space.append({"strategy": "scaffold", "lr": lr})
        space += [{"strategy": "fedprox", "lr": lr, "mu": mu} for mu in (0.01, 0.1, 1.0)]
        space += [{"strategy": "fedavgm", "lr": lr, "server_momentum": m} for m in (0.5, 0.9)]
        for strategy, server_lr in itertools.product(("fedadam", "fedyogi", "fedadagrad"), SERVER_LRS):
            space.append({"strategy": strategy, "lr": lr, "server_lr": server_lr})
    return [{**FLAMBY_PROTOCOL, **c} for c in space]


def personal_space() -> list[dict[str, Any]]:
    """Personalized candidates: FedPer (per-silo bias) and FedAvg/FedYogi + local fine-tuning."""
    space: list[dict[str, Any]] = []
    for lr, strategy in itertools.product(LRS, ("fedavg", "fedyogi")):
        extra = {"server_lr": 0.01} if strategy == "fedyogi" else {}
        space.append({"strategy": strategy, "lr": lr, "personalize": "fedper", **extra})
        space += [
            {"strategy": strategy, "lr": lr, "personalize": "finetune", "finetune_steps": steps, **extra}
            for steps in (50, 100, 300)
        ]
    return [{**FLAMBY_PROTOCOL, **c} for c in space]


FOLDS = 4


def best(
    space: list[dict[str, Any]], validation: dict[tuple[int, int], Any], label: str
) -> tuple[dict[str, Any], float]:
    """The candidate with the highest mean validation Avg4 (then validation pooled AUC)."""
    scored = []
    for fields in tqdm(space, desc=f"search {label}", unit="config"):
        results = [r for (seed, fold), fed in validation.items() for r in finals(fields, fed, seeds=(seed,))]
        avg, _ = mean_std([r["avg_accuracy"] for r in results])
        auc, _ = mean_std([r["pooled"]["auc"] for r in results])
        scored.append((round(avg, 6), round(auc, 6), fields))
    top = max(scored, key=lambda s: (s[0], s[1]))
    return top[2], top[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write the result table into its docs page")
    args = parser.parse_args()
    federation = load_silos("flamby")
    validation = {
        (seed, fold): validation_split(federation, seed=seed, fold=fold, folds=FOLDS)
        for seed in SEEDS
        for fold in range(FOLDS)
    }
    start = time.perf_counter()
    lines = [
        "| preset | chosen on validation (flags beyond the FLamby protocol) | validation Avg4 | "
        "test Avg4 (42-46) | test pooled AUC | ships as preset |",
        "|---|---|---|---|---|---|",
    ]
    for name, space in (("best-global", global_space()), ("best-personalized", personal_space())):
        fields, val = best(space, validation, name)
        test = finals(fields, federation)
        avg, sd = mean_std([r["avg_accuracy"] for r in test])
        auc, _ = mean_std([r["pooled"]["auc"] for r in test])
        shipped = PRESETS.get(name) == fields
        lines.append(
            f"| `{name}` | `{describe(fields)}` | {val:.4f} | {avg:.4f} ± {sd:.4f} | {auc:.4f} | "
            f"{'yes' if shipped else 'NO: update fedkit/presets.py'} |"
        )
        print(f"{name}: {fields!r}")
    seconds = time.perf_counter() - start
    table = (
        "\n".join(lines)
        + f"\n\n{len(global_space()) + len(personal_space())} candidates × 5 seeds × 4 folds in {seconds:.0f} s."
    )
    print(table)
    if args.write_docs:
        write_section("search", "`python benchmarks/search.py --write-docs`:\n\n" + table)


if __name__ == "__main__":
    main()

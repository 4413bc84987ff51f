"""The privacy table: ε × {client-level central DP, DP-SGD} × {FLamby protocol, best presets}, seeds 42-46.

    python benchmarks/privacy_table.py [--write-docs] [--seeds 42 43 ...]

For every configuration, DP mode and target ε (δ = 1e-3; ε = ∞ is the run without DP), one run per
seed through :func:`fedkit.tradeoff.tradeoff`: Avg4 accuracy (scored as the configuration is: the
personalized preset with each silo's own model), pooled AUC, the ε spent, and the membership-inference
attack AUC on the final global model (loss threshold, Yeom et al. 2018; shadow models, Shokri et al.
2017, 4 shadows) and on cleveland's update (loss threshold), each the mean over seeds with the mean
bootstrap interval. SCAFFOLD (the best-global preset) is refused with client-level DP: its control
variates are not privatized.
"""

from __future__ import annotations

import argparse
import math
import time

from _common import SEEDS, describe, mean_std
from _sections import write_section

from fedkit import tradeoff
from fedkit.config import RunConfig
from fedkit.errors import ConfigError
from fedkit.presets import PRESETS

CONFIGS: dict[str, dict] = {
    "FLamby FedAvg": PRESETS["flamby-fedavg"],
    "best-global": PRESETS["best-global"],
    "best-personalized": PRESETS["best-personalized"],
}
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
MODES = ("central", "dpsgd")


def _cell(rows, target: str, attack: str) -> str:
    part = rows[(rows["target"] == target) & (rows["attack"] == attack)]
    return f"{part['auc'].mean():.3f} [{part['low'].mean():.2f}, {part['high'].mean():.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write the table into its docs page")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds (default 42-46)")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = [
        "| configuration | DP | target ε | ε spent | Avg4 (mean ± std) | pooled AUC | attack AUC, global model, "
        "loss threshold | attack AUC, global model, shadow models | attack AUC, cleveland's update, loss threshold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, fields in CONFIGS.items():
        levels = [("none", math.inf)]
        for mode in MODES:
            try:
                RunConfig(**fields, dp=mode, dp_epsilon=1.0)
            except ConfigError:
                lines.append(f"| {name} | {mode} | all | – | refused: {fields['strategy']} with dp={mode} | | | | |")
                continue
            levels += [(mode, e) for e in EPSILONS]
        table = tradeoff.tradeoff(fields, levels, seeds=args.seeds, progress=print)
        for (dp, target), rows in table.groupby(["dp", "target_epsilon"], sort=False):
            runs = rows.drop_duplicates("seed")
            avg, sd = mean_std(runs["avg_accuracy"].tolist())
            auc, _ = mean_std(runs["pooled_auc"].tolist())
            spent = runs["epsilon"].mean()
            lines.append(
                f"| {name} | {dp} | {target:g} | {spent:.3g} | {avg:.4f} ± {sd:.4f} | {auc:.4f} | "
                f"{_cell(rows, 'global model', 'loss_threshold_attack')} | "
                f"{_cell(rows, 'global model', 'shadow_model_attack')} | "
                f"{_cell(rows, 'silo update', 'loss_threshold_attack')} |"
            )
        print(f"{name} (`{describe(dict(fields))}`) done after {time.perf_counter() - started:.0f} s")
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        seeds = f"seeds {args.seeds[0]}-{args.seeds[-1]}" if len(args.seeds) > 1 else f"seed {args.seeds[0]}"
        configs = "; ".join(f"{n}: `{describe(dict(f))}`" for n, f in CONFIGS.items())
        write_section(
            "privacy-table",
            f"`python benchmarks/privacy_table.py --write-docs` ({seeds}, δ = 1e-3; {configs}):\n\n{text}",
        )


if __name__ == "__main__":
    main()

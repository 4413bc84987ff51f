"""Median round time of the remote engine (NVIDIA FLARE, 4 sites on 127.0.0.1, mTLS) beside the simulation engine.

FLamby FedAvg configuration (logreg, 100 local SGD steps of batch 4, lr 0.001, 15 rounds, seed 42).
Starts a loopback federation (``fedkit remote poc``), runs the same config on both engines, and prints
the median seconds per round (remote: between consecutive round events on the server's clock;
simulation: between consecutive round callbacks), the one-off job start-up, and the largest
difference of any final metric. ``--write-docs`` puts the table into its docs page (docs/benchmarks.md).

    python benchmarks/remote_rounds.py [--rounds 15] [--write-docs]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path

import fedkit
from fedkit.presets import FLAMBY_PROTOCOL
from fedkit.remote.kits import start_poc
from fedkit.remote.submit import run_remote
from fedkit.tracking.local import LocalStore


def largest_difference(a: dict, b: dict) -> float:
    """Largest absolute difference over the final per-silo and pooled metrics of two summaries."""
    worst = 0.0
    for silo in [*a["final"]["silos"], "pooled"]:
        block_a = a["final"]["pooled"] if silo == "pooled" else a["final"]["silos"][silo]
        block_b = b["final"]["pooled"] if silo == "pooled" else b["final"]["silos"][silo]
        for metric in ("loss", "auc", "accuracy"):
            if block_a[metric] is not None:
                worst = max(worst, abs(block_a[metric] - block_b[metric]))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    config = fedkit.RunConfig(
        **{**FLAMBY_PROTOCOL, "strategy": "fedavg", "rounds": args.rounds, "lr": 0.001, "seed": 42}
    )
    with tempfile.TemporaryDirectory(prefix="fedkit-bench-") as tmp:
        store = LocalStore(Path(tmp) / "runs.sqlite")
        sim_times: list[float] = []
        sim = fedkit.run(
            config, trackers=[store], callbacks=[lambda e: sim_times.append(time.perf_counter())], progress=False
        )
        t0 = time.perf_counter()
        with start_poc(Path(tmp) / "poc", 4) as poc:
            ready = time.perf_counter() - t0
            server_times: list[float] = []
            t1 = time.perf_counter()
            remote = run_remote(
                fedkit.RunConfig(**{**config.to_dict(), "engine": "remote"}),
                admin_kit=poc.admin_kit,
                trackers=[store],
                progress=False,
                on_event=lambda e: server_times.append(e["time"]) if e["kind"] == "round" else None,
            )
            total = time.perf_counter() - t1
    sim_round = statistics.median(b - a for a, b in itertools.pairwise(sim_times[1:]))
    remote_round = statistics.median(b - a for a, b in itertools.pairwise(server_times[1:]))
    diff = largest_difference(sim.summary(), remote.summary())
    rows = [
        "| engine | median s/round | whole run s | Avg4 accuracy | pooled AUC |",
        "|---|---|---|---|---|",
        f"| simulation (in-process, vectorized) | {sim_round:.3f} | {sim_times[-1] - sim_times[0]:.1f} | "
        f"{sim.final['avg_accuracy']:.4f} | {sim.final['pooled']['auc']:.4f} |",
        f"| remote (FLARE, 4 sites + server on 127.0.0.1, mTLS) | {remote_round:.3f} | {total:.1f} (incl. job start) | "
        f"{remote.final['avg_accuracy']:.4f} | {remote.final['pooled']['auc']:.4f} |",
    ]
    text = "\n".join(
        [
            f"`python benchmarks/remote_rounds.py --rounds {args.rounds}` (FLamby FedAvg config, seed 42; "
            f"federation start-up {ready:.1f} s, not counted):",
            "",
            *rows,
            "",
            f"Largest difference of any final metric (per silo and pooled loss / AUC / accuracy), remote vs "
            f"simulation: {diff:.2e}.",
        ]
    )
    print(text)
    if not math.isfinite(diff) or diff > 1e-5:
        raise SystemExit(f"remote and simulation disagree by {diff:.2e} (> 1e-5)")
    if args.write_docs:
        from _sections import write_section

        write_section("remote-rounds", text)


if __name__ == "__main__":
    main()

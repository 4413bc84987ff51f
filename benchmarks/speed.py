"""Speed of fedkit's simulation engine, measured against a plain per-silo torch loop in the same process.

    python benchmarks/speed.py [--write-docs] [--repeats N]

1. The FLamby FedAvg run (4 silos × 15 rounds × 100 local steps, batch 4, logistic regression):
   fedkit's vectorized engine (whole round loop with per-round evaluation, no run store) against a
   straightforward torch loop written here as the baseline (a model per silo, DataLoader batches,
   ``optimizer.step()`` per batch, weighted average of state dicts; training only).
2. FLamby's 8-method table (pooled, FedAvg, FedProx, SCAFFOLD, FedAdam, FedYogi, FedAdagrad, local)
   × seeds 42-46: total time.
3. 1,000 silos (Dirichlet alpha 0.5 over the pooled rows, tiled ×10 so that every silo has rows)
   × 100 rounds of the same local training, in a fresh process: wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from _common import SEEDS
from _sections import write_section
from torch.utils.data import DataLoader, TensorDataset

import fedkit
from fedkit.data import load_silos

FLAMBY_FEDAVG = {
    "split": "flamby",
    "strategy": "fedavg",
    "rounds": 15,
    "local_steps": 100,
    "batch_size": 4,
    "lr": 0.001,
}
EIGHT = {
    "pooled": {"strategy": "pooled", "optimizer": "adam", "lr": 0.001, "local_epochs": 50, "rounds": 1},
    "fedavg": {"strategy": "fedavg", "lr": 0.001},
    "fedprox": {"strategy": "fedprox", "lr": 0.001, "mu": 0.01},
    "scaffold": {"strategy": "scaffold", "lr": 0.001, "server_lr": 1.0},
    "fedadam": {"strategy": "fedadam", "lr": 0.01, "server_lr": 0.01},
    "fedyogi": {"strategy": "fedyogi", "lr": 0.003162, "server_lr": 0.01},
    "fedadagrad": {"strategy": "fedadagrad", "lr": 0.003162, "server_lr": 0.316228},
    "local": {"strategy": "local", "optimizer": "adam", "lr": 0.001, "local_epochs": 50, "rounds": 1},
}


def plain_torch_fedavg(fed, seed: int) -> float:
    """The baseline: FedAvg written the straightforward way with torch modules, optimizers and DataLoaders."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    global_model = torch.nn.Linear(13, 1)
    loaders = [
        DataLoader(TensorDataset(torch.as_tensor(s.x_train), torch.as_tensor(s.y_train)), batch_size=4, shuffle=True)
        for s in fed.silos
    ]
    sizes = np.array([s.n_train for s in fed.silos], dtype=np.float64)
    for _ in range(15):
        states = []
        for loader in loaders:
            model = torch.nn.Linear(13, 1)
            model.load_state_dict(global_model.state_dict())
            optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
            steps, batches = 0, iter(loader)
            while steps < 100:
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    continue
                optimizer.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy(torch.sigmoid(model(x)).squeeze(-1), y)
                loss.backward()
                optimizer.step()
                steps += 1
            states.append(model.state_dict())
        weights = sizes / sizes.sum()
        global_model.load_state_dict(
            {k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]}
        )
    return time.perf_counter() - start


def fedkit_run(fields: dict, fed, seed: int) -> float:
    start = time.perf_counter()
    fedkit.run(fedkit.RunConfig(**fields, seed=seed), federation=fed, trackers=[], progress=False)
    return time.perf_counter() - start


def thousand_silos() -> dict:
    """Runs in a child process: 1,000 Dirichlet silos × 100 rounds; prints time and peak RSS as JSON."""
    import resource

    from fedkit.data import partition
    from fedkit.data.silos import Federation, Silo, train_test_indices

    base = load_silos("flamby")
    x = np.concatenate([np.concatenate([s.x_train, s.x_test]) for s in base.silos])
    y = np.concatenate([np.concatenate([s.y_train, s.y_test]) for s in base.silos])
    x, y = np.tile(x, (10, 1)), np.tile(y, 10)
    parts = partition.dirichlet(y.astype(int), 1000, 0.5, np.random.default_rng(0), min_size=3)
    silos = []
    for i, rows in enumerate(parts):
        train, test = train_test_indices(y[rows], i)
        silos.append(Silo(f"silo_{i:03d}", x[rows][train], y[rows][train], x[rows][test], y[rows][test]))
    fed = Federation(tuple(silos), base.features, "dirichlet", base.provenance)
    config = fedkit.RunConfig(split="dirichlet", silos=1000, rounds=100, local_steps=100, batch_size=4, lr=0.001)
    start = time.perf_counter()
    result = fedkit.run(config, federation=fed, trackers=[], progress=False)
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": rss_mb, "rows": len(result.records), "silos": len(silos)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write the table into its docs page")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs of the FLamby FedAvg run (fedkit)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(thousand_silos()))
        return
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead to the baseline
    fed = load_silos("flamby")
    fedkit_run(FLAMBY_FEDAVG, fed, 42)  # warm-up (imports, caches)
    ours = [fedkit_run(FLAMBY_FEDAVG, fed, 42) for _ in range(args.repeats)]
    theirs = [plain_torch_fedavg(fed, 42) for _ in range(3)]
    ours_med, theirs_med = statistics.median(ours), statistics.median(theirs)

    table_start = time.perf_counter()
    for fields in EIGHT.values():
        for seed in SEEDS:
            fedkit_run({"split": "flamby", **fields}, fed, seed)
    table_seconds = time.perf_counter() - table_start

    child = subprocess.run([sys.executable, __file__, "--child"], check=True, capture_output=True, text=True)
    big = json.loads(child.stdout.strip().splitlines()[-1])

    lines = [
        "| measurement | result |",
        "|---|---|",
        f"| FLamby FedAvg run, fedkit vectorized engine (median of {args.repeats}) | {ours_med * 1000:.1f} ms |",
        f"| same run, plain per-silo torch loop (median of 3) | {theirs_med * 1000:.0f} ms |",
        f"| speed-up, same process | **{theirs_med / ours_med:.0f}×** |",
        f"| FLamby's 8 methods × 5 seeds (40 runs) | {table_seconds:.2f} s |",
        f"| 1,000 silos × 100 rounds × 100 local steps (fresh process) | {big['seconds']:.1f} s, "
        f"peak RSS {big['peak_rss_mb']:.0f} MB |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_section("speed", "`python benchmarks/speed.py --write-docs` (2 cores):\n\n" + table)


if __name__ == "__main__":
    main()

"""Speed of fedkit's simulation engine, measured against a plain per-silo torch loop in the same process.

    python benchmarks/speed.py [--write-docs] [--repeats N]

1. The FLamby FedAvg run (4 silos × 15 rounds × 100 local steps, batch 4, logistic regression):
   fedkit's vectorized engine (whole round loop with per-round evaluation, no run store) against two
   torch loops written here, training only, in the same process: the DataLoader one (a model per
   silo, ``DataLoader(shuffle=True)`` batches as FLamby trains, ``optimizer.step()`` per batch,
   weighted average of state dicts) and a minimal one (no DataLoader: each epoch indexes a
   ``torch.randperm`` of the silo's tensor), the latter with ``torch.set_num_threads(1)`` and with
   torch's default threads.
2. FLamby's 8-method table (pooled, FedAvg, FedProx, SCAFFOLD, FedAdam, FedYogi, FedAdagrad, local)
   × seeds 42-46: total time, run by run.
3. A sweep of 100 configurations (client learning rates) × seeds 42-46 of the FLamby FedAvg protocol
   as one ``fedkit.sweep`` job: recorded in a local store (a temporary one), and not recorded.
4. 1,000 silos (Dirichlet alpha 0.5 over the pooled rows, tiled ×10 so that every silo has rows)
   × 100 rounds of the same local training, in a fresh process: wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import SEEDS, median_run_seconds, run_seconds
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


def average_into(global_model: torch.nn.Module, states: list[dict], weights: np.ndarray) -> None:
    """Load the train-size-weighted average of the silos' state dicts into ``global_model`` (FedAvg)."""
    global_model.load_state_dict({k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]})


def plain_torch_fedavg(fed, seed: int) -> float:
    """The DataLoader baseline: FedAvg the straightforward way, with torch modules, optimizers and DataLoaders."""
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
        average_into(global_model, states, sizes / sizes.sum())
    return time.perf_counter() - start


def minimal_torch_fedavg(fed, seed: int) -> float:
    """The minimal torch loop: one module and optimizer per silo, made once; batches indexed from a shuffled tensor."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    global_model = torch.nn.Linear(13, 1)
    models = [torch.nn.Linear(13, 1) for _ in fed.silos]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.001) for m in models]
    data = [(torch.as_tensor(s.x_train), torch.as_tensor(s.y_train)) for s in fed.silos]
    sizes = np.array([s.n_train for s in fed.silos], dtype=np.float64)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(15):
        for model, optimizer, (x, y) in zip(models, optimizers, data, strict=True):
            model.load_state_dict(global_model.state_dict())
            order, at = torch.randperm(len(y)), 0
            for _ in range(100):
                if at >= len(y):
                    order, at = torch.randperm(len(y)), 0
                rows = order[at : at + 4]
                at += 4
                optimizer.zero_grad()
                loss_fn(model(x[rows])[:, 0], y[rows]).backward()
                optimizer.step()
        average_into(global_model, [m.state_dict() for m in models], sizes / sizes.sum())
    return time.perf_counter() - start


def timed_sweep(store: Path | None) -> float:
    """100 client learning rates × seeds 42-46 of the FLamby FedAvg protocol as one fedkit.sweep."""
    from fedkit.tracking.local import LocalStore

    lrs = [float(lr) for lr in np.geomspace(1e-4, 1e-1, 100)]
    trackers = [] if store is None else [LocalStore(store)]
    start = time.perf_counter()
    fedkit.sweep(FLAMBY_FEDAVG, {"lr": lrs}, seeds=SEEDS, trackers=trackers, progress=False, keep_results=False)
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
    fed = load_silos("flamby")
    ours = median_run_seconds(FLAMBY_FEDAVG, args.repeats, fed)
    default_threads = torch.get_num_threads()
    minimal_default = statistics.median(minimal_torch_fedavg(fed, 42) for _ in range(3))
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead to a torch loop
    loader = statistics.median(plain_torch_fedavg(fed, 42) for _ in range(3))
    minimal = statistics.median(minimal_torch_fedavg(fed, 42) for _ in range(3))

    timed_sweep(None)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        swept_recorded = timed_sweep(Path(tmp) / "runs.sqlite")
    swept = timed_sweep(None)

    table_start = time.perf_counter()
    for fields in EIGHT.values():
        for seed in SEEDS:
            run_seconds({"split": "flamby", **fields}, fed, seed)
    table_seconds = time.perf_counter() - table_start

    child = subprocess.run([sys.executable, __file__, "--child"], check=True, capture_output=True, text=True)
    big = json.loads(child.stdout.strip().splitlines()[-1])

    lines = [
        "| measurement | result |",
        "|---|---|",
        f"| FLamby FedAvg run, fedkit vectorized engine (median of {args.repeats}) | {ours * 1000:.1f} ms |",
        f"| same run, torch loop with DataLoader batches, 1 thread (median of 3) | {loader * 1000:.0f} ms "
        f"(fedkit **{loader / ours:.0f}×** faster) |",
        f"| same run, minimal torch loop (shuffled tensor, no DataLoader), 1 thread | {minimal * 1000:.0f} ms "
        f"(fedkit **{minimal / ours:.0f}×** faster) |",
        f"| same minimal loop, torch's default {default_threads} threads | {minimal_default * 1000:.0f} ms "
        f"(fedkit **{minimal_default / ours:.0f}×** faster) |",
        f"| FLamby's 8 methods × 5 seeds (40 runs, one by one) | {table_seconds:.2f} s |",
        f"| sweep: 100 configurations × 5 seeds of FLamby FedAvg (500 runs, one stacked job), recorded in a "
        f"local store | {swept_recorded:.2f} s |",
        f"| the same sweep, not recorded (`trackers=[]`) | {swept:.2f} s |",
        f"| 1,000 silos × 100 rounds × 100 local steps (fresh process) | {big['seconds']:.1f} s, "
        f"peak RSS {big['peak_rss_mb']:.0f} MB |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        write_section("speed", "`python benchmarks/speed.py --write-docs` (2 cores):\n\n" + table)


if __name__ == "__main__":
    main()

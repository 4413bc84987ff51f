"""Per-round cost of update validation, checkpointing and the audit log in a simulated FLamby FedAvg run.

Runs the FLamby FedAvg configuration (logreg, 4 hospitals, 100 local SGD steps of batch 4, 15 rounds)
with the local run store on disk, and times, in every round, the parts the trust features add to
the round loop: :func:`fedkit.runner.validate_replies`, :func:`fedkit.runner.checkpoint` (the state
encoded), the audit record (:func:`fedkit.privacy.audit.round_record` and the hash chain). The
store's share is measured by replaying each round's write into a scratch store twice — metric rows
alone, then with the checkpoint and audit record in the same transaction — and taking the
difference. Prints medians over rounds and ``--runs`` runs; ``--write-docs`` puts the table into
docs/benchmarks.md.

The remote engine's share is measured in-process (no FLARE: the sites are :class:`SiloWorker` s
answered directly, under secure aggregation as remote runs are by default; the sites' own check and
signed statement are on in both variants): the median round of :func:`fedkit.remote.server.serve`
with the server's run store (checkpoints, audit log) and the sites' state files, against the same
run without them; and the submitting machine's verified copy of the audit log (its share of
replaying the relayed events into its store).

    python benchmarks/trust_overhead.py [--runs 3] [--write-docs]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _sections import write_section

import fedkit
from fedkit import runner
from fedkit.presets import FLAMBY_PROTOCOL
from fedkit.privacy import audit
from fedkit.tracking.local import LocalStore

PARTS = {
    "validate": "update validation (`validate_replies`: shapes, finiteness, norms)",
    "checkpoint": "checkpoint encoding (`checkpoint`: parameters, strategy and silo state)",
    "audit": "audit record (`round_record` + SHA-256 chain)",
    "store": "checkpoint + audit record written in the round's transaction (beyond its metric rows)",
}


def timed(into: list[float], call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` that appends its wall time in seconds to ``into``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = call(*args, **kwargs)
        into.append(time.perf_counter() - start)
        return out

    return wrapper


def one_run(config: fedkit.RunConfig, folder: Path) -> dict[str, list[float]]:
    """Seconds per round of each part, and of whole rounds, in one run recorded in a store under ``folder``."""
    times: dict[str, list[float]] = defaultdict(list)
    records: list[float] = []  # round_record of rounds 0..R
    links: list[float] = []  # Chain.append of the round records 0..R
    originals = (runner.validate_replies, runner.checkpoint, audit.round_record, audit.Chain.append)
    runner.validate_replies = timed(times["validate"], originals[0])
    runner.checkpoint = timed(times["checkpoint"], originals[1])
    audit.round_record = timed(records, originals[2])

    def append(chain: audit.Chain, kind: str, fields: Any) -> dict[str, Any]:
        return timed(links, originals[3])(chain, kind, fields) if kind == "round" else originals[3](chain, kind, fields)

    audit.Chain.append = append  # type: ignore[method-assign]
    stamps: list[float] = []
    writes: list[tuple[int, list[dict[str, Any]], bytes | None, list[dict[str, Any]]]] = []
    store = LocalStore(folder / "runs.sqlite")
    save = store.save_round

    def keep(run_id: str, server_round: int, rows: list, *, checkpoint: bytes | None = None, audit: Any = ()) -> None:
        writes.append((server_round, rows, checkpoint, list(audit)))
        save(run_id, server_round, rows, checkpoint=checkpoint, audit=audit)

    store.save_round = keep  # type: ignore[method-assign]
    try:
        fedkit.run(config, trackers=[store], callbacks=[lambda e: stamps.append(time.perf_counter())], progress=False)
    finally:
        runner.validate_replies, runner.checkpoint, audit.round_record = originals[:3]
        audit.Chain.append = originals[3]  # type: ignore[method-assign]
    times["round"] = [b - a for a, b in itertools.pairwise(stamps)]  # rounds 1..R (callback to callback)
    times["audit"] = [a + b for a, b in zip(records[1:], links[1:], strict=True)]
    times["checkpoint"] = times["checkpoint"][1:]  # round 0's is not part of a round
    times["store"] = store_share(writes[1:], folder)
    return times


def store_share(writes: list[tuple[int, list, bytes | None, list]], folder: Path, repeats: int = 5) -> list[float]:
    """Per round: median over ``repeats`` of (rows + checkpoint + audit record) minus (rows alone) write time.

    Two scratch stores, one per kind of write, each written ``repeats`` times per round under fresh
    run ids, in alternating order (so neither always pays for a cold cache first).
    """
    plain, full = LocalStore(folder / "plain.sqlite"), LocalStore(folder / "full.sqlite")
    out = []
    for i, (server_round, rows, blob, records) in enumerate(writes):
        differences = []
        for rep in range(repeats):
            run_id = f"bench-{i}-{rep}"
            for store in (plain, full):
                store.start_run(run_id, {}, {"directory": "-", "sha256": {}, "verified": True})
            seconds = {}
            for name in ("plain", "full") if rep % 2 == 0 else ("full", "plain"):
                start = time.perf_counter()
                if name == "plain":
                    plain.save_round(run_id, server_round, rows)
                else:
                    full.save_round(run_id, server_round, rows, checkpoint=blob, audit=records)
                seconds[name] = time.perf_counter() - start
            differences.append(seconds["full"] - seconds["plain"])
        out.append(statistics.median(differences))
    return out


def table(times: dict[str, list[float]], runs: int, rounds: int) -> str:
    """The Markdown table of medians in milliseconds and shares of the median round."""
    round_ms = 1000 * statistics.median(times["round"])
    lines = [
        f"`python benchmarks/trust_overhead.py --runs {runs}` (FLamby FedAvg: logreg, 4 hospitals, 100 local SGD "
        f"steps of batch 4, {rounds} rounds, local store on disk; medians over {runs} x {rounds} rounds):",
        "",
        "| part of a round | median ms | share of the round |",
        "|---|---|---|",
    ]
    total = 0.0
    for key, label in PARTS.items():
        ms = 1000 * statistics.median(times[key])
        total += ms
        lines.append(f"| {label} | {ms:.3f} | {100 * ms / round_ms:.1f}% |")
    lines.append(f"| **all four** | **{total:.3f}** | **{100 * total / round_ms:.1f}%** |")
    lines.append(f"| whole round (training, aggregation, evaluation, all the above) | {round_ms:.3f} | 100% |")
    return "\n".join(lines)


def remote_rounds(config: fedkit.RunConfig, folder: Path | None) -> tuple[list[float], float]:
    """Seconds of each round of an in-process remote run, and of replaying its events on the submitting machine.

    Parameters
    ----------
    config
        A remote run.
    folder
        Where the server's store and the sites' state files go; None keeps neither (the baseline).
    """
    from fedkit.data.uci import HOSPITALS
    from fedkit.privacy.identity import ephemeral_identities
    from fedkit.remote.server import RelayTracker, serve
    from fedkit.remote.silo import SiloWorker
    from fedkit.remote.submit import _Follower

    signers, verifier = ephemeral_identities(HOSPITALS)
    workers = {
        s: SiloWorker(s, identity=(signers[s], verifier), state_dir=None if folder is None else folder / s)
        for s in HOSPITALS
    }

    def transport(task: str, payload: dict, targets: Any, need: int) -> dict:
        return {s: workers[s].handle(task, payload) for s in targets}

    times: list[float] = []
    relay = RelayTracker()
    store = None if folder is None else LocalStore(folder / "server.sqlite")
    callbacks = [lambda event: times.append(time.perf_counter())]
    serve(transport, config, list(HOSPITALS), relay, store=store, callbacks=callbacks, verifier=verifier)
    copy = [] if folder is None else [LocalStore(folder / "here.sqlite")]
    t0 = time.perf_counter()
    _Follower(config, copy, []).feed(relay.since(0))
    return [b - a for a, b in itertools.pairwise(times)], time.perf_counter() - t0


def remote_table(config: fedkit.RunConfig, runs: int) -> str:
    """The remote engine's per-round trust cost (server store, site state, the verified copy), in ms.

    Parameters
    ----------
    config
        A remote run.
    runs
        Runs of each variant.
    """
    plain: list[float] = []
    kept: list[float] = []
    copy: list[float] = []
    for _ in range(runs):
        plain += remote_rounds(config, None)[0]
        with tempfile.TemporaryDirectory(prefix="fedkit-trust-remote-") as tmp:
            rounds, replay = remote_rounds(config, Path(tmp))
            kept += rounds
            copy.append(replay / (config.rounds + 1))
    base, full = 1000 * statistics.median(plain), 1000 * statistics.median(kept)
    return "\n".join(
        [
            f"Remote engine, in-process (no FLARE; secure aggregation; each site checks and signs its own update in "
            f"both variants; medians over {runs} x {config.rounds} rounds):",
            "",
            "| remote round | median ms |",
            "|---|---|",
            f"| without the server's store and the sites' state files | {base:.2f} |",
            f"| with them (server: checkpoint + audit record per round; each site: its state per round) | {full:.2f} |",
            f"| **difference** | **{full - base:.2f}** |",
            f"| submitting machine: one round's events replayed into its store, audit copy checked and verified | "
            f"{1000 * statistics.median(copy):.2f} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    config = fedkit.RunConfig(**{**FLAMBY_PROTOCOL, "strategy": "fedavg", "lr": 0.001, "seed": 42})
    merged: dict[str, list[float]] = defaultdict(list)
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="fedkit-trust-") as tmp:
            for key, values in one_run(config, Path(tmp)).items():
                merged[key] += values
        print(f"run {i + 1}/{args.runs} done", flush=True)
    remote = fedkit.RunConfig(**{**config.to_dict(), "engine": "remote", "secure_aggregation": True})
    text = table(merged, args.runs, config.rounds) + "\n\n" + remote_table(remote, args.runs)
    print(text)
    if args.write_docs:
        write_section("trust-overhead", text)


if __name__ == "__main__":
    main()

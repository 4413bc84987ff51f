"""Cost of a round: seconds and bytes per site, remote (NVIDIA FLARE, 4 sites on 127.0.0.1) and simulated, with and
without secure aggregation.

FLamby FedAvg configuration (logreg, 100 local SGD steps of batch 4, lr 0.001, 15 rounds, seed 42).
Starts a loopback federation (``fedkit remote poc``), runs the same config on both engines (remote
twice: in the clear and under secure aggregation), and prints the median seconds per round (remote:
between consecutive round events on the server's clock; simulation: between consecutive round
callbacks), the one-off job start-up, the bytes a site sends per round (the same payloads, counted
in-process), and the largest difference of any final metric; then the same for a 100-silo
simulation. It then times the phases of one run as a user's shell sees them (issue 14's breakdown):
``fedkit run --engine remote`` as a subprocess from command start to its result, and, in-process,
connect (the admin session's login), submit (the job uploaded), first round (round 1's result arrived
here), rounds (median between round results, on the server's clock) and end (from the last round's
result to ``run_remote`` returning). Every remote run starts on an idle federation (``Poc.wait_idle``), but
the last three: those go back to back, each submitted as soon as the one before returned.
The baseline, in the same run: a second federation whose kits keep FLARE's own job launchers (every
job process started when its job comes, with FLARE's fixed waits: :mod:`fedkit.remote.tuning` applies only
in fedkit's launchers and the job processes they start) times the first round and the command in the
clear, against fedkit's launchers (the next job process started ahead, FLARE's waits shortened).
``--write-docs`` puts the tables into their docs page (docs/benchmarks.md).

    python benchmarks/remote_rounds.py [--rounds 15] [--write-docs]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from _common import median_run_seconds
from secagg_cost import one_round, payload_bytes

import fedkit
from fedkit.presets import FLAMBY_PROTOCOL
from fedkit.remote import wire
from fedkit.remote.kits import Poc, start_poc
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


def site_bytes_per_round(config: fedkit.RunConfig) -> float:
    """Mean payload bytes one site sends per round (all its replies of rounds 1..R, hello excluded), in-process.

    The sites answer through the same wire payloads FLARE carries (its framing not counted).
    """
    from fedkit.privacy.identity import ephemeral_identities
    from fedkit.remote.server import RelayTracker, serve
    from fedkit.remote.silo import SiloWorker

    sites = ("cleveland", "hungarian", "switzerland", "va")
    signers, verifier = ephemeral_identities(sites)
    workers = {s: SiloWorker(s, identity=(signers[s], verifier)) for s in sites}
    sent = {"bytes": 0}

    def transport(task: str, payload: dict, targets: Any, need: int) -> dict:
        replies = {s: workers[s].handle(task, payload) for s in targets}
        if task != wire.HELLO:
            sent["bytes"] += sum(payload_bytes(r) for r in replies.values())
        return replies

    serve(transport, config, list(sites), RelayTracker())
    return sent["bytes"] / len(sites) / (config.rounds + 1)  # rounds 1..R plus round 0's evaluation


def phases(config: fedkit.RunConfig, admin_kit: Path, store: LocalStore) -> dict[str, float]:
    """Seconds of each phase of one remote run of ``config``, timed here (connect, submit, first round, rounds, end).

    Parameters
    ----------
    config
        A remote run.
    admin_kit
        The federation's admin startup kit.
    store
        Where the run is recorded.
    """
    from fedkit.remote.submit import open_session

    t0 = time.perf_counter()
    session = open_session(admin_kit)
    marks = {"connect": time.perf_counter()}
    submit = session.submit_job

    def timed_submit(*args: Any, **kwargs: Any) -> Any:
        job = submit(*args, **kwargs)
        marks["submit"] = time.perf_counter()
        return job

    session.submit_job = timed_submit
    rounds: list[tuple[float, float]] = []  # (arrival here, server clock)

    def on_event(event: dict) -> None:
        if event["kind"] == "round" and event["round"] >= 1:
            rounds.append((time.perf_counter(), event["time"]))

    try:
        run_remote(config, admin_kit=admin_kit, trackers=[store], progress=False, session=session, on_event=on_event)
    finally:
        end = time.perf_counter()
        session.close()
    return {
        "connect": marks["connect"] - t0,
        "submit": marks["submit"] - marks["connect"],
        "first round": rounds[0][0] - marks["submit"],
        "rounds (median)": statistics.median(b - a for (_, a), (_, b) in itertools.pairwise(rounds)),
        "end": end - rounds[-1][0],
        "total": end - t0,
    }


def command_seconds(config: fedkit.RunConfig, admin_kit: Path, home: Path) -> float:
    """Wall seconds of ``fedkit run --engine remote ...`` as a subprocess, from its start to its exit (result stored).

    Parameters
    ----------
    config
        A remote run (its fields become the command's flags).
    admin_kit
        The federation's admin startup kit.
    home
        ``FEDKIT_HOME`` of the command (its local store).
    """
    import os
    import subprocess
    import sys

    flags = [
        f"--{k.replace('_', '-')}={v}" for k, v in config.to_dict().items() if v is not None and k in COMMAND_FIELDS
    ]
    secure = "--secure-aggregation" if config.secure_aggregation else "--no-secure-aggregation"
    command = [sys.executable, "-m", "fedkit", "run", *flags, secure, "--admin-kit", str(admin_kit), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "FEDKIT_HOME": str(home)}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def command_and_phases(
    poc: Poc, config: fedkit.RunConfig, home: Path, store: LocalStore
) -> tuple[float, dict[str, float]]:
    """``command_seconds`` then ``phases`` of ``config`` on ``poc``, each started on an idle federation.

    Parameters
    ----------
    poc
        The running federation.
    config
        A remote run.
    home
        ``FEDKIT_HOME`` of the command.
    store
        Where the in-process run is recorded.
    """
    poc.wait_idle()
    command = command_seconds(config, poc.admin_kit, home)
    poc.wait_idle()
    return command, phases(config, poc.admin_kit, store)


BACK_TO_BACK = 3
"""Runs submitted one right after another (a notebook loop over remote runs), timed by ``phases``."""


def remote_of(config: fedkit.RunConfig, secure: bool) -> fedkit.RunConfig:
    """``config`` on the remote engine, with or without secure aggregation."""
    return fedkit.RunConfig(**{**config.to_dict(), "engine": "remote", "secure_aggregation": secure})


COMMAND_FIELDS = (
    "engine",
    "split",
    "model",
    "strategy",
    "rounds",
    "lr",
    "seed",
    "batch_size",
    "local_steps",
    "optimizer",
)
"""The config fields ``command_seconds`` passes as flags (the rest are the defaults of FLamby's protocol)."""


def silos_100(rounds: int) -> list[str]:
    """Seconds per round and bytes per silo per round of a 100-silo simulation, in the clear and masked."""
    from fedkit.data.silos import load_silos
    from fedkit.engines.simulation import make_engine
    from fedkit.evalstats import BINS, site_stats
    from fedkit.privacy.identity import ephemeral_identities
    from fedkit.privacy.summation import secagg_config

    rows = []
    for secure in (False, True):
        config = fedkit.RunConfig(split="iid", silos=100, rounds=rounds, secure_aggregation=secure, seed=42)
        federation = load_silos("iid", silos=100, seed=42)
        engine = make_engine(federation, config)
        times: list[float] = []
        tick = partial(lambda out, event: out.append(time.perf_counter()), times)
        fedkit.run(config, federation=federation, engine=engine, trackers=[], progress=False, callbacks=[tick])
        per_round = statistics.median(b - a for a, b in itertools.pairwise(times[1:]))
        p = len(engine.initial_params())
        if secure:  # the protocol's messages of one sum of each vector (update + weight; statistics)
            names = list(federation.names)
            signers, verifier = ephemeral_identities(names)
            protocol = secagg_config("bench", names)
            sent = sum(
                one_round(protocol, 1 + i, dim, signers, verifier)["sent"] for i, dim in enumerate((p + 1, BINS.length))
            )
        else:
            z = engine.trainer.logits(engine.initial_params(), federation.silos[0].x_test)
            stats = wire.pack(site_stats(federation.silos[0].y_test, z), compress=True)
            sent = payload_bytes(wire.pack(engine.initial_params())) + payload_bytes(stats)
        rows.append(f"| simulation, 100 silos (iid) | {'on' if secure else 'off'} | {per_round:.3f} | {sent:,.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    config = fedkit.RunConfig(
        **{**FLAMBY_PROTOCOL, "strategy": "fedavg", "rounds": args.rounds, "lr": 0.001, "seed": 42}
    )
    load = os.getloadavg()[0]
    reference = 1000 * median_run_seconds(config.to_dict())  # the machine's speed now: it varies by the hour
    with tempfile.TemporaryDirectory(prefix="fedkit-bench-") as tmp:
        store = LocalStore(Path(tmp) / "runs.sqlite")
        sim_times: list[float] = []
        sim = fedkit.run(
            config, trackers=[store], callbacks=[lambda e: sim_times.append(time.perf_counter())], progress=False
        )
        t0 = time.perf_counter()
        remote: dict[bool, Any] = {}
        with start_poc(Path(tmp) / "poc", 4) as poc:
            ready = time.perf_counter() - t0
            for secure in (False, True):
                server_times: list[float] = []
                poc.wait_idle()
                t1 = time.perf_counter()
                result = run_remote(
                    remote_of(config, secure),
                    admin_kit=poc.admin_kit,
                    trackers=[store],
                    progress=False,
                    on_event=lambda e, times=server_times: times.append(e["time"]) if e["kind"] == "round" else None,
                )
                per_round = statistics.median(b - a for a, b in itertools.pairwise(server_times[1:]))
                remote[secure] = (result, per_round, time.perf_counter() - t1)
            timed = {
                secure: command_and_phases(poc, remote_of(config, secure), Path(tmp) / f"home-{secure}", store)
                for secure in (False, True)
            }
            poc.wait_idle()
            back_to_back = [phases(remote_of(config, False), poc.admin_kit, store) for _ in range(BACK_TO_BACK)]
        with start_poc(Path(tmp) / "poc-flare", 4, prestart=False) as flare_poc:  # the baseline: FLARE's launchers
            flare_command, flare_parts = command_and_phases(
                flare_poc, remote_of(config, False), Path(tmp) / "home-flare", store
            )
    sim_round = statistics.median(b - a for a, b in itertools.pairwise(sim_times[1:]))
    diff = max(largest_difference(sim.summary(), r.summary()) for r, _, _ in remote.values())
    rows = [
        "| engine | secure aggregation | median s/round | whole run s | Avg4 accuracy | pooled AUC | "
        "bytes/site/round |",
        "|---|---|---|---|---|---|---|",
        f"| simulation (in-process, vectorized) | off | {sim_round:.3f} | {sim_times[-1] - sim_times[0]:.1f} | "
        f"{sim.final['avg_accuracy']:.4f} | {sim.final['pooled']['auc']:.4f} | |",
    ]
    for secure, (result, per_round, total) in remote.items():
        sent = site_bytes_per_round(remote_of(config, secure))
        rows.append(
            f"| remote (FLARE, 4 sites + server on 127.0.0.1, mTLS) | {'on' if secure else 'off'} | "
            f"{per_round:.3f} | {total:.1f} (incl. job start) | {result.final['avg_accuracy']:.4f} | "
            f"{result.final['pooled']['auc']:.4f} | {sent:,.0f} |"
        )
    names = ["connect", "submit", "first round", "rounds (median)", "end", "total"]
    breakdown = [
        "| secure aggregation | `fedkit run` command to result s | " + " | ".join(f"{n} s" for n in names) + " |",
        "|---" * (len(names) + 2) + "|",
        *(
            f"| {'on' if secure else 'off'} | {command:.1f} | " + " | ".join(f"{parts[n]:.2f}" for n in names) + " |"
            for secure, (command, parts) in timed.items()
        ),
    ]
    scale = [
        "| federation | secure aggregation | median s/round | bytes/silo/round |",
        "|---|---|---|---|",
        *silos_100(min(args.rounds, 5)),
    ]
    text = "\n".join(
        [
            f"`python benchmarks/remote_rounds.py --rounds {args.rounds}` (FLamby FedAvg config, seed 42; "
            f"federation start-up {ready:.1f} s, not counted; bytes: payload content of every reply a site sends in "
            "a round, measured in-process with the same payloads, FLARE's framing not counted; every remote run "
            "starts on an idle federation (the job before ended, the next job processes ready: `Poc.wait_idle`), "
            "but the back-to-back ones below; "
            "the machine's speed "
            f"at the start: the FLamby FedAvg simulation in {reference:.0f} ms, median of 11, "
            f"load average {load:.1f}):",
            "",
            *rows,
            "",
            f"Largest difference of any final metric (per silo and pooled loss / AUC / accuracy), remote vs "
            f"simulation: {diff:.2e} (pooled AUC comes from the summed histograms in both engines).",
            "",
            f"One {args.rounds}-round remote run by phase (command: `fedkit run --engine remote` as a subprocess, "
            "from its start to its exit with the result in the local store; the phases timed in-process: connect = "
            "the admin login, submit = the job uploaded, first round = from submit to round 1's result here, "
            "rounds = median between round results on the server's clock, end = from the last round's result to "
            "the return):",
            "",
            *breakdown,
            "",
            "The same run in the clear with FLARE's own job launchers (each job process started when its job comes, "
            "FLARE's fixed waits kept; a second federation, in this run): first round "
            f"{flare_parts['first round']:.2f} s against {timed[False][1]['first round']:.2f} s with fedkit's "
            "(job processes started ahead, FLARE's waits shortened: `fedkit.remote.tuning`), "
            f"{flare_parts['first round'] / timed[False][1]['first round']:.1f}x; `fedkit run` command to result "
            f"{flare_command:.1f} s against {timed[False][0]:.1f} s.",
            "",
            f"{BACK_TO_BACK} runs in the clear back to back, each submitted as soon as the one before returned "
            "(its job processes still exiting, so no job process waits ready; each site starts one for the job "
            "then): total "
            + ", ".join(f"{p['total']:.1f}" for p in back_to_back)
            + " s; first round "
            + ", ".join(f"{p['first round']:.2f}" for p in back_to_back)
            + " s.",
            "",
            "In simulation with 100 silos (iid split of the UCI rows, 5 rounds; masked: SecAgg+ with 14 neighbours, "
            "every sum one in-process run of the protocol; bytes: the protocol's messages of one silo for the "
            "round's two sums, or its update and deflated statistics in the clear):",
            "",
            *scale,
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

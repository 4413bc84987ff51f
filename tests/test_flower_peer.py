"""Flower as a peer: fedkit's strategies and Flower's, fed the same seeded rounds, reach the same parameters.

Flower (flwr, pinned in requirements/flower.txt) lives in its own virtualenv, ``.venv-flower``, which
``make flower-venv`` builds and ``make test`` requires; the test fails (never skips) without it.
tests/flower_peer.py replays the rounds there through ``flwr.server.strategy``'s ``aggregate_fit``
with state kept on Flower's objects; here each fedkit strategy replays them through ``init`` /
``aggregate`` with its state carried along, and the two trajectories must agree round by round.

Where the two differ by definition, a case aligns one side explicitly (read in flwr 1.42.0's source):

============================  =========================  ==============================  ===========================
what                          fedkit                     Flower 1.42                     aligned here by
============================  =========================  ==============================  ===========================
what a silo sends             its delta (local - global) its local weights               Flower's clients send
                                                                                         global + delta
weights of the mean           train sizes                ``num_examples``                clients report train sizes
FedAvgM buffer                ``m = b m + delta``,       ``g = x - mean = -delta``,      nothing: same parameters,
                              ``x + lr m``               ``m = b m + g``, ``x - lr m``   buffers of opposite sign
FedAdam bias correction       none (Reddi et al. 2021,   ``eta * sqrt(1 - b2^(t+1)) /    fedkit's ``server_lr`` set
(Flower >= 1.13)              Alg. 2; as FLamby)         (1 - b1^(t+1))``, t = round     to Flower's rate each round
                                                         counted from 1
start of ``v`` (Adam, Yogi,   ``tau**2`` (Alg. 2:        0                               fedkit's initial state
Adagrad)                      ``v_{-1} >= tau**2``)                                      gets ``v = 0``
FedAdagrad first moment       ``beta1`` (0.9 default)    none: ``beta_1`` fixed at 0     fedkit ``beta1=0``
Krum vs Multi-Krum            ``krum_m=1`` is Krum       ``num_clients_to_keep=0`` is    ``krum_m=1`` against 0,
                                                         Krum                            ``m`` against ``m``
defaults                      FLamby's (FedAdam: 0.01,   FedAdam: eta 0.1, beta_2 0.99,  every hyperparameter set
                              beta2 0.999, tau 1e-8)     tau 1e-9                        on both sides
============================  =========================  ==============================  ===========================

Median, trimmed mean (``beta`` = ``trim_beta``, ``floor(beta K)`` cut at each end, unweighted) and
FedYogi need nothing beyond the rows above. ``test_each_alignment_is_needed`` shows every alignment
matters: without it the two sides part by far more than rounding.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedkit.strategies import make_strategy

ROOT = Path(__file__).resolve().parents[1]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
FLOWER_PIN = ROOT / "requirements" / "flower.txt"
ROUNDS, SILOS, PARAMETERS = 4, 6, 9
# Flower averages global + delta and subtracts the global, fedkit averages the deltas: the two agree up to float64
# rounding (seen: 6e-15 relative after four rounds), while each definitional difference moves the parameters by
# more than 1e-3 (seen: 1e-2 to 1e-1; test_each_alignment_is_needed), so a tolerance of 1e-12 tells them apart.
RTOL, ATOL = 1e-12, 1e-14


def flower_adam_lr(eta: float, beta1: float, beta2: float, server_round: int) -> float:
    """Flower's bias-corrected FedAdam rate in round ``server_round`` (counted from 1): the exponent is round + 1."""
    return eta * np.sqrt(1 - beta2 ** (server_round + 1.0)) / (1 - beta1 ** (server_round + 1.0))


@dataclass(frozen=True)
class Case:
    """fedkit's strategy ``fedkit`` with ``options`` against Flower's class ``flower`` with ``flower_options``."""

    fedkit: str
    options: dict[str, float]
    flower: str
    flower_options: dict[str, float]
    server_lr_of_round: Callable[[int], float] | None = None
    v_starts_at_zero: bool = False


ADAPTIVE = {"server_lr": 0.1, "beta1": 0.8, "beta2": 0.9, "tau": 0.05}
FLOWER_ADAPTIVE = {"eta": 0.1, "beta_1": 0.8, "beta_2": 0.9, "tau": 0.05}
CASES = {
    "fedavg": Case("fedavg", {}, "FedAvg", {}),
    "fedavgm": Case(
        "fedavgm",
        {"server_lr": 0.7, "server_momentum": 0.5},
        "FedAvgM",
        {"server_learning_rate": 0.7, "server_momentum": 0.5},
    ),
    "fedadam": Case(
        "fedadam",
        ADAPTIVE,
        "FedAdam",
        FLOWER_ADAPTIVE,
        server_lr_of_round=lambda t: flower_adam_lr(ADAPTIVE["server_lr"], ADAPTIVE["beta1"], ADAPTIVE["beta2"], t),
        v_starts_at_zero=True,
    ),
    "fedyogi": Case("fedyogi", ADAPTIVE, "FedYogi", FLOWER_ADAPTIVE, v_starts_at_zero=True),
    "fedadagrad": Case(
        "fedadagrad",
        {"server_lr": 0.1, "beta1": 0.0, "tau": 0.05},
        "FedAdagrad",
        {"eta": 0.1, "tau": 0.05},
        v_starts_at_zero=True,
    ),
    "fedmedian": Case("fedmedian", {}, "FedMedian", {}),
    "trimmedmean": Case("trimmedmean", {"trim_beta": 0.2}, "FedTrimmedAvg", {"beta": 0.2}),
    "krum": Case("krum", {"byzantine": 1, "krum_m": 1}, "Krum", {"num_malicious_clients": 1, "num_clients_to_keep": 0}),
    "multikrum": Case(
        "krum", {"byzantine": 1, "krum_m": 3}, "Krum", {"num_malicious_clients": 1, "num_clients_to_keep": 3}
    ),
}


def seeded_inputs(seed: int = 11) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Initial parameters and, per round, every silo's update and integer train size."""
    rng = np.random.default_rng(seed)
    initial = rng.normal(size=PARAMETERS)
    rounds = [
        (rng.normal(0.05, 0.2, size=(SILOS, PARAMETERS)), rng.integers(5, 200, size=SILOS)) for _ in range(ROUNDS)
    ]
    return initial, rounds


def fedkit_trajectory(case: Case, initial: np.ndarray, rounds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """fedkit's global parameters after each round, state carried from ``init`` through every ``aggregate``."""

    def strategy(server_round: int) -> Any:
        lr = {} if case.server_lr_of_round is None else {"server_lr": case.server_lr_of_round(server_round)}
        return make_strategy(case.fedkit, **{**case.options, **lr})

    params = initial
    state = strategy(1).init(params)
    if case.v_starts_at_zero:
        state = state._replace(v=np.zeros_like(state.v))
    trajectory = []
    for server_round, (updates, sizes) in enumerate(rounds, start=1):
        params, state = strategy(server_round).aggregate(updates, sizes.astype(np.float64), state, params)
        trajectory.append(params)
    return np.array(trajectory)


def pinned_flower_version() -> str:
    """The flwr version requirements/flower.txt pins."""
    pins = [line.split("==")[1].strip() for line in FLOWER_PIN.read_text().splitlines() if line.startswith("flwr==")]
    assert len(pins) == 1, f"{FLOWER_PIN} must pin exactly one flwr==VERSION"
    return pins[0]


@pytest.fixture(scope="module")
def flower(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Flower's trajectory for every case, from one run of tests/flower_peer.py in .venv-flower."""
    version = pinned_flower_version()
    if not FLOWER_PYTHON.exists():
        pytest.fail(
            f"Flower's virtualenv {FLOWER_PYTHON.parent.parent} is missing, so the Flower cross-check cannot run: "
            f"run `make flower-venv` (`make test` does) to install flwr=={version} from requirements/flower.txt."
        )
    folder = tmp_path_factory.mktemp("flower")
    initial, rounds = seeded_inputs()
    cases = [
        {
            "name": name,
            "strategy": case.flower,
            "options": case.flower_options,
            "initial": initial.tolist(),
            "rounds": [{"updates": u.tolist(), "sizes": s.tolist()} for u, s in rounds],
        }
        for name, case in CASES.items()
    ]
    (folder / "cases.json").write_text(json.dumps(cases))
    done = subprocess.run(
        [str(FLOWER_PYTHON), str(ROOT / "tests" / "flower_peer.py"), "cases.json", "out.json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"tests/flower_peer.py failed in .venv-flower (exit {done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads((folder / "out.json").read_text())
    if out["flwr"] != version:
        pytest.fail(
            f".venv-flower has flwr {out['flwr']} but requirements/flower.txt pins {version}: run `make flower-venv`."
        )
    return {name: np.array(trajectory) for name, trajectory in out["cases"].items()}


@pytest.mark.parametrize("name", list(CASES))
def test_strategy_agrees_with_flower_round_by_round(name: str, flower: dict[str, np.ndarray]) -> None:
    initial, rounds = seeded_inputs()
    ours = fedkit_trajectory(CASES[name], initial, rounds)
    assert ours.shape == flower[name].shape == (ROUNDS, PARAMETERS)
    assert not np.allclose(ours[-1], initial, atol=1e-3)  # the rounds did move the parameters
    np.testing.assert_allclose(ours, flower[name], rtol=RTOL, atol=ATOL)


MISALIGNED = {
    "fedadam without Flower's bias correction": ("fedadam", {"server_lr_of_round": None}),
    "fedadam with v starting at tau**2": ("fedadam", {"v_starts_at_zero": False}),
    "fedyogi with v starting at tau**2": ("fedyogi", {"v_starts_at_zero": False}),
    "fedadagrad with v starting at tau**2": ("fedadagrad", {"v_starts_at_zero": False}),
    "fedadagrad with beta1 0.8": ("fedadagrad", {"options": {**CASES["fedadagrad"].options, "beta1": 0.8}}),
}


@pytest.mark.parametrize("misaligned", list(MISALIGNED))
def test_each_alignment_is_needed(misaligned: str, flower: dict[str, np.ndarray]) -> None:
    name, change = MISALIGNED[misaligned]
    initial, rounds = seeded_inputs()
    ours = fedkit_trajectory(replace(CASES[name], **change), initial, rounds)
    assert np.abs(ours - flower[name]).max() > 1e-3

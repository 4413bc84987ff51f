"""Simulated faults: seeded dropouts and stragglers with the remote engine's rules and notes."""

from __future__ import annotations

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig
from fedkit.config import load_federation
from fedkit.engines import faults
from fedkit.engines.simulation import make_engine
from fedkit.errors import RoundFailedError
from fedkit.remote import wire
from fedkit.remote.server import RelayTracker, serve
from fedkit.remote.silo import SiloWorker

HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")


def test_dropouts_are_seeded_per_silo_and_as_frequent_as_asked() -> None:
    ids = np.arange(60)
    draws = np.stack([faults.vanished(42, r, ids, 0.3) for r in range(1, 201)])
    assert np.array_equal(draws, np.stack([faults.vanished(42, r, ids, 0.3) for r in range(1, 201)]))
    # each silo's own stream: whoever else is selected, silo 17 vanishes in the same rounds
    alone = np.array([faults.vanished(42, r, [17], 0.3)[0] for r in range(1, 201)])
    assert np.array_equal(alone, draws[:, 17])
    # 12,000 Bernoulli(0.3) draws: the frequency is within 5 standard deviations (0.021) of 0.3
    assert abs(draws.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / draws.size)
    assert not faults.vanished(42, 1, ids, 0.0).any()
    assert not np.array_equal(draws, np.stack([faults.vanished(43, r, ids, 0.3) for r in range(1, 201)]))


def test_simulated_times_are_a_shifted_exponential_per_step() -> None:
    ids, steps = np.arange(5000), np.full(5000, 100)
    times = faults.durations(7, 3, ids, steps)
    base = 100 * faults.STEP_SECONDS
    assert times.min() >= base
    delays = times / base - 1  # Exp(1): mean 1, P(E > 1) = 1/e
    assert abs(delays.mean() - 1) < 5 / np.sqrt(5000) and abs((delays > 1).mean() - np.exp(-1)) < 0.03
    assert np.array_equal(times, faults.durations(7, 3, ids, steps))


def test_the_straggler_rule_is_flares_wait_after_min_replies() -> None:
    times = np.array([3.0, 1.0, 10.0, 2.0])
    assert faults.late(times, timeout=2.0, min_silos=2).tolist() == [False, False, True, False]  # waits until 2 + 2
    assert faults.late(times, timeout=2.0, min_silos=1).tolist() == [False, False, True, False]  # until 1 + 2 = 3
    assert faults.late(times, timeout=0.5, min_silos=1).tolist() == [True, False, True, True]
    assert faults.late(times, timeout=0.5, min_silos=9).tolist() == [False] * 4  # waits for every reply


def test_a_straggler_trains_but_its_reply_is_dropped(data_dir) -> None:
    config = RunConfig(strategy="scaffold", rounds=1, local_steps=5, straggler_timeout=1e-9, lr=0.01)
    engine = make_engine(load_federation(config), config)
    params = engine.initial_params()
    from fedkit.strategies import make_strategy

    strategy = make_strategy("scaffold")
    replies = engine.fit(params, 1, engine.silos, strategy.local_term(strategy.init(params), params))
    assert len(replies) == 1  # only the fastest: every other silo is later than it by more than 1e-9 s
    assert engine.state()["control_silos"].tolist() == list(HOSPITALS)  # all four trained: their state moved
    assert len(engine.notes) == 3 and all("dropped out (training: no reply in time)" in n for n in engine.notes)


def test_too_few_replies_fail_the_run_naming_the_round_and_silos(data_dir) -> None:
    config = RunConfig(rounds=30, local_steps=2, dropout=0.5, min_silos=3)
    with pytest.raises(RoundFailedError, match=r"Round \d+: only [0-2] of 4 silos answered training .* min_silos=3"):
        fedkit.run(config, progress=False)
    assert fedkit.runs().status.tolist() == ["failed"]


def test_dropout_notes_read_as_the_remote_engines(data_dir) -> None:
    """The same silos missing in the same rounds give the same notes, word for word, in both engines.

    Remotely a silo is down for the task that carries a round's training: in the clear that task is the
    evaluation of the round before (the training rides with it), and a silo missing it is noted as missing
    that training, as the simulation notes it.
    """
    config = RunConfig(rounds=8, local_steps=3, dropout=0.35, seed=5)
    simulation = fedkit.run(config, progress=False, trackers=[])
    ids = np.arange(len(HOSPITALS))
    down = {r: {HOSPITALS[i] for i in np.flatnonzero(faults.vanished(5, r, ids, 0.35))} for r in range(1, 9)}
    assert any(down.values()) and all(len(d) < 4 for d in down.values())
    workers = {h: SiloWorker(h) for h in HOSPITALS}
    tasks = []

    def transport(task, payload, sites, need):
        tasks.append(task)
        training = payload["round"] if task in (wire.FIT, wire.EVALUATE_FIT) else None
        return {s: workers[s].handle(task, payload) for s in sites if s not in down.get(training, ())}

    remote_config = RunConfig.from_dict({**config.to_dict(), "dropout": 0.0, "engine": "remote"})
    _, engine = serve(transport, remote_config, list(HOSPITALS), RelayTracker())
    assert wire.EVALUATE_FIT in tasks  # the training rode with the evaluations
    dropout_notes = [n for n in simulation.notes if "dropped out" in n or "rejoined" in n]
    assert dropout_notes and dropout_notes == engine.notes


def test_a_notebook_studies_faults_through_the_history(data_dir) -> None:
    config = RunConfig(split="iid", silos=10, rounds=5, local_steps=3, dropout=0.3, straggler_timeout=0.01)
    result = fedkit.run(config, progress=False, trackers=[])
    h = result.history
    trained = h[(h.model == "local") & (h.split == "train") & (h.metric == "loss")].groupby("round").silo.count()
    assert trained.min() >= 1 and trained.max() < 10  # some silos missing from some rounds
    assert np.isfinite(result.params).all()


def test_the_remote_server_waits_briefly_only_for_a_site_that_is_gone() -> None:
    wait_over = faults.wait_over
    sites, timeout = ["a", "b", "c", "d"], 8.0
    replied = {"a": 0.2, "b": 0.3, "c": 0.4}  # d has not replied
    assert wait_over(0.5, {**replied, "d": 0.45}, sites, set(), 2, timeout)  # everyone: at once
    assert not wait_over(5.0, replied, sites, set(), 2, timeout)  # d counts as slow: FLARE's full wait
    assert wait_over(0.3 + timeout, replied, sites, set(), 2, timeout)  # ... from the need-th (2nd) reply
    grace = max(0.5, 3 * 0.4)  # d gone: three times as long as the present sites took, at least 0.5 s
    assert not wait_over(0.4 + grace - 0.01, replied, sites, {"d"}, 2, timeout)
    assert wait_over(0.4 + grace, replied, sites, {"d"}, 2, timeout)
    assert not wait_over(3.0, {"a": 0.2}, sites, {"d"}, 2, timeout)  # fewer than need replied: keep waiting
    assert not wait_over(3.0, {"a": 0.2, "b": 0.3}, sites, {"d"}, 2, timeout)  # c (present) is waited for fully
    slow = {"a": 2.0, "b": 2.5, "c": 3.0}  # a loaded machine: the grace grows with it, up to the timeout
    assert not wait_over(3.0 + 5.0, slow, sites, {"d"}, 2, timeout)
    assert wait_over(2.5 + timeout, slow, sites, {"d"}, 2, timeout)


def test_once_the_wait_is_over_it_stays_over() -> None:
    wait_over = faults.wait_over
    rng = np.random.default_rng(7)
    sites = [f"s{i}" for i in range(6)]
    for _ in range(200):
        replied = {s: float(t) for s, t in zip(sites, rng.exponential(1.0, 6), strict=True) if rng.random() < 0.7}
        absent = {s for s in sites if s not in replied and rng.random() < 0.5}
        need, timeout = int(rng.integers(1, 5)), float(rng.uniform(0.5, 10))
        over = [wait_over(t, replied, sites, absent, need, timeout) for t in np.linspace(0, 30, 61)]
        assert over == sorted(over), (replied, absent, need, timeout)  # False ... False True ... True

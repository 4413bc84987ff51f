"""Secure aggregation inside runs, in both engines (the protocol's own tests are in test_secagg.py).

Simulation: every sum of a round (updates, evaluation statistics) is one in-process protocol run,
and a seeded run ends at the same model as the same run in the clear, to 1e-6. Remote (sites
answered in-process through the wire encoding): a site that drops after masking leaves the sum
exact, fewer than t survivors fail the run with the protocol's message, and a site refuses a
replayed request, a tampered share and a weakened configuration.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_remote_engine import HOSPITALS, remote_run, site_workers

import fedkit
from fedkit.engines.simulation import make_engine
from fedkit.errors import SecAggAuthenticationError, SecAggDropoutError, SecAggError, SecAggReplayError
from fedkit.metrics import roc_auc
from fedkit.privacy import fixedpoint
from fedkit.privacy.summation import SecureSum, plain_sum, secagg_config
from fedkit.remote import wire
from fedkit.remote.server import RelayTracker, serve

TOLERANCE = 1e-6
SUM_ONLY = [
    {"strategy": "fedavg"},
    {"strategy": "fedprox", "mu": 0.01},
    {"strategy": "fedavgm", "server_momentum": 0.9},
    {"strategy": "scaffold"},
    {"strategy": "fedadam", "lr": 0.01},
    {"strategy": "fedyogi", "lr": 0.003162},
    {"strategy": "fedadagrad", "lr": 0.003162},
    {"personalize": "fedper", "model": "mlp"},
    {"split": "hospitals", "fraction": 0.5},
]


@pytest.mark.parametrize("fields", SUM_ONLY, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_the_same_seed_gives_the_same_model_with_and_without_masking(fields) -> None:
    plain = fedkit.run(fedkit.RunConfig(rounds=15, **fields), trackers=[], progress=False)
    config = fedkit.RunConfig(rounds=15, secure_aggregation=True, **fields)
    engine = make_engine(fedkit.config.load_federation(config), config)
    masked = fedkit.run(config, engine=engine, trackers=[], progress=False)
    evaluations = 16 * (2 if config.scored == "personal" else 1)  # rounds 0-15, global (and personal) model
    assert engine.summation.rounds == 15 + evaluations  # one protocol run per round's updates and per evaluation
    np.testing.assert_allclose(masked.params, plain.params, atol=TOLERANCE, rtol=0)
    for a, b in zip(masked.records, plain.records, strict=True):
        if (a["split"], a["metric"]) == ("update", "norm"):  # the server learns no silo's update norm
            assert np.isnan(a["value"]) and np.isfinite(b["value"]), (a, b)
            continue
        assert (np.isnan(a["value"]) and np.isnan(b["value"])) or abs(a["value"] - b["value"]) <= TOLERANCE, (a, b)


def test_a_secure_sum_equals_the_plain_sum_within_the_fixed_point_bound() -> None:
    rng = np.random.default_rng(3)
    names = [f"silo_{i}" for i in range(5)]
    inputs = {n: rng.normal(scale=100.0, size=200) for n in names}
    secure = SecureSum(names)
    error = np.abs(secure(inputs) - plain_sum(inputs))
    assert error.max() <= fixedpoint.error_bound(len(names)) * 1.01  # + float64 rounding of sums ~1e3
    assert error.max() > 0  # quantized: not a plain sum in disguise


def test_the_pooled_auc_from_histograms_is_within_1e_3_of_the_exact_one() -> None:
    config = fedkit.RunConfig(rounds=5, secure_aggregation=True)
    federation = fedkit.config.load_federation(config)
    result = fedkit.run(config, federation=federation, trackers=[], progress=False)
    engine = make_engine(federation, config)
    x = np.concatenate([s.x_test for s in federation.silos])
    y = np.concatenate([s.y_test for s in federation.silos])
    exact = roc_auc(y, engine.trainer.logits(result.params, x))
    assert abs(result.final["pooled"]["auc"] - exact) <= 1e-3


@pytest.mark.parametrize("strategy", ["fedmedian", "trimmedmean", "krum"])
def test_robust_strategies_are_refused_with_secure_aggregation_saying_why(strategy) -> None:
    with pytest.raises(fedkit.ConfigError, match="needs each silo's update, while secure aggregation shows"):
        fedkit.RunConfig(strategy=strategy, secure_aggregation=True)
    with pytest.raises(fedkit.ConfigError, match=r"on by default with engine='remote'.*--no-secure-aggregation"):
        fedkit.RunConfig(strategy=strategy, engine="remote")
    assert not fedkit.RunConfig(strategy=strategy, engine="remote", secure_aggregation=False).secure_aggregation


def test_secure_aggregation_is_on_by_default_remotely_and_off_in_simulation() -> None:
    assert fedkit.RunConfig(engine="remote").secure_aggregation is True
    assert fedkit.RunConfig().secure_aggregation is False


def sum_number(payload) -> int | None:
    """The secure sum a task is a step of: the one whose input it asks for or unmasks, else the one it sets up."""
    for key in ("secagg", "unmask", "roster", "offer"):
        if key in payload:
            return payload[key]["round"]
    return None


def silent(workers, at: str, sites: set[str], rounds: set[int] | None = None):
    """A transport whose ``sites`` do not answer task ``at`` (in the given secure-aggregation rounds)."""

    def transport(task, payload, targets, need):
        quiet = task == at and (rounds is None or sum_number(payload) in rounds)
        return {s: workers[s].handle(task, payload) for s in targets if not (quiet and s in sites)}

    return transport


def serve_with(transport, **fields):
    config = fedkit.RunConfig(**{"rounds": 3, "engine": "remote", **fields})
    return serve(transport, config, list(HOSPITALS), RelayTracker())


@pytest.mark.parametrize("step", [wire.FIT, wire.SECAGG], ids=["before-masking", "after-masking"])
def test_a_site_dropping_during_a_secure_sum_leaves_the_others_sum_exact(step) -> None:
    workers = site_workers()
    result, engine = serve_with(silent(workers, step, {"va"}, rounds={2}))  # round 1's training sum
    # dropped at the training task (its masked input): round 1 is the other three's average; at unmasking (after
    # masking): va's update is in it
    reference = fedkit.RunConfig(rounds=3)
    assert result.status == "finished"
    assert any("silo 'va' dropped out" in note for note in engine.notes)
    if step == wire.SECAGG:
        plain = fedkit.run(reference, trackers=[], progress=False)
        np.testing.assert_allclose(result.params, plain.params, atol=TOLERANCE)


def test_fewer_than_t_survivors_fail_the_run_with_a_clear_message() -> None:
    workers = site_workers()
    transport = silent(workers, wire.FIT, {"va", "switzerland"}, rounds={2})
    with pytest.raises(SecAggDropoutError, match=r"fewer than the threshold t=3.*retry the round when at least 3"):
        serve_with(transport)


def test_a_tampered_share_is_detected_by_its_recipient() -> None:
    workers = site_workers()

    def transport(task, payload, targets, need):
        if "secagg" in payload:  # the shares delivered with the task whose input is summed
            delivery = payload["secagg"]["deliveries"]["cleveland"]
            share = delivery["shares"][0]
            share["ciphertext"] = bytes([share["ciphertext"][0] ^ 1]) + share["ciphertext"][1:]
        return {s: workers[s].handle(task, payload) for s in targets}

    with pytest.raises(SecAggAuthenticationError, match="failed authentication: it was altered"):
        serve_with(transport)


def test_a_replayed_request_is_refused_by_the_site() -> None:
    workers = site_workers()
    sent: dict[str, dict] = {}

    def transport(task, payload, targets, need):
        sent[task] = payload
        return {s: workers[s].handle(task, payload) for s in targets}

    serve_with(transport, rounds=1)
    with pytest.raises(SecAggReplayError, match=r"rounds only go forward|already contributed"):
        workers["cleveland"].handle(wire.FIT, sent[wire.FIT])  # the last round's training, sent again
    with pytest.raises(SecAggReplayError, match="already contributed its evaluate input"):
        workers["va"].handle(
            wire.EVALUATE, {**sent[wire.EVALUATE], "secagg": {**sent[wire.EVALUATE]["secagg"], "round": 99}}
        )


@pytest.mark.parametrize(
    "weaken",
    [
        lambda c: {**c, "neighbours": 2},
        lambda c: {**c, "roster": [*c["roster"], "mallory"]},
        lambda c: {**c, "run_id": "another-job"},
        lambda c: {**c, "roster": ["cleveland"]},
    ],
    ids=["sparser-graph", "stranger", "other-run", "alone"],
)
def test_a_site_refuses_a_weakened_protocol_configuration(weaken) -> None:
    workers = site_workers()

    def transport(task, payload, targets, need):
        if "offer" in payload:  # step 1 of a sum: the configuration the server offers
            payload = {**payload, "offer": {**payload["offer"], "config": weaken(payload["offer"]["config"])}}
        return {s: workers[s].handle(task, payload) for s in targets}

    with pytest.raises(SecAggError, match="refuses the secure-aggregation configuration"):
        serve_with(transport)


def test_the_protocol_configuration_is_derived_from_public_values_only() -> None:
    config = secagg_config("job-1", ["va", "cleveland", "hungarian"])
    assert config.roster == ("cleveland", "hungarian", "va") and config.t == 2 and config.neighbours is None


def test_remote_with_secure_aggregation_equals_the_plain_simulation_with_federated_standardization() -> None:
    fields = {"split": "hospitals", "standardize": "federated", "rounds": 3}
    simulation = fedkit.run(fedkit.RunConfig(**fields), trackers=[], progress=False)
    remote, _, _ = remote_run(fedkit.RunConfig(**fields, engine="remote"))
    np.testing.assert_allclose(remote.params, simulation.params, atol=TOLERANCE, rtol=0)
    for a, b in zip(remote.records, simulation.records, strict=True):
        if (a["split"], a["metric"]) == ("update", "norm"):  # the server learns no silo's update norm
            assert np.isnan(a["value"]) and np.isfinite(b["value"]), (a, b)
            continue
        assert (np.isnan(a["value"]) and np.isnan(b["value"])) or abs(a["value"] - b["value"]) <= TOLERANCE, (a, b)


def counting(workers, tasks: list[tuple[str, int]], rounds: dict[str, int]):
    """A transport that records each task sent, with the round of the last training task before it."""

    def transport(task, payload, targets, need):
        rounds["now"] = payload["round"] if task == wire.FIT else rounds["now"]
        tasks.append((task, rounds["now"]))
        return {s: workers[s].handle(task, payload) for s in targets}

    return transport


def test_a_secure_round_with_every_silo_costs_four_task_round_trips() -> None:
    """Each sum is set up one ahead: training, its unmasking, evaluation, its unmasking; nothing else."""
    tasks: list[tuple[str, int]] = []
    result, _ = serve_with(counting(site_workers(), tasks, {"now": 0}), rounds=3)
    assert result.status == "finished"
    for r in (1, 2, 3):
        assert [task for task, at in tasks if at == r] == [wire.FIT, wire.SECAGG, wire.EVALUATE, wire.SECAGG]
    # before round 1: hello, the first sum set up (offer, roster), round 0's evaluation and its unmasking
    assert [task for task, at in tasks if at == 0] == [wire.HELLO, wire.SECAGG, wire.SECAGG, wire.EVALUATE, wire.SECAGG]


def test_a_sampled_fraction_sets_each_sum_up_anew_and_still_equals_the_plain_run() -> None:
    fields = {"split": "hospitals", "fraction": 0.5, "rounds": 4}
    tasks: list[tuple[str, int]] = []
    result, _ = serve_with(counting(site_workers(), tasks, {"now": 0}), **fields)
    plain = fedkit.run(fedkit.RunConfig(**fields), trackers=[], progress=False)
    np.testing.assert_allclose(result.params, plain.params, atol=TOLERANCE, rtol=0)
    # two of four silos train, so neither the evaluation's sum (its keys came from the two) nor the next training's
    # (offered to all four) is set up ahead: each is set up before its task (offer, roster) — eight round trips
    unmask, setup = [wire.SECAGG], [wire.SECAGG, wire.SECAGG]
    for r in (1, 2, 3):
        assert [task for task, at in tasks if at == r] == [wire.FIT, *unmask, *setup, wire.EVALUATE, *unmask, *setup]

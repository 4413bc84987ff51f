"""Update validation before aggregation: malformed and oversized updates are left out, with the reason recorded."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig
from fedkit.config import load_federation
from fedkit.engines.base import FitReply
from fedkit.engines.simulation import make_engine
from fedkit.errors import RoundFailedError
from fedkit.privacy.validation import KINDS, check_global, norm_bound, validate_updates
from fedkit.tracking.local import LocalStore

FAST = {"rounds": 3, "local_steps": 5}
POISONED = "va"


def poison(kind: str, silo: str = POISONED):
    """A hook that replaces ``silo``'s reply with a ``kind`` of bad update."""

    def hook(server_round: int, reply: FitReply) -> FitReply:
        if reply.silo != silo:
            return reply
        p = reply.params
        bad = {
            "nan": lambda: np.where(np.arange(p.size) == 0, np.nan, p).astype(p.dtype),
            "inf": lambda: np.where(np.arange(p.size) == 1, np.inf, p).astype(p.dtype),
            "shape": lambda: p[:-1],
            "dtype": lambda: p.astype(np.float64),
            "huge": lambda: (p + 1e6 / math.sqrt(p.size)).astype(p.dtype),  # an update of L2 norm ~1e6
            "far": lambda: (p + 1e3).astype(p.dtype),
            "overflow": lambda: np.full_like(p, 3e38),
        }[kind]()
        return replace(reply, params=bad)

    return hook


# -- the pure checks ---------------------------------------------------------------------------------------------------


def _updates(rng: np.random.Generator, k: int = 4, p: int = 14) -> tuple[np.ndarray, list[np.ndarray]]:
    params = rng.normal(size=p).astype(np.float32)
    return params, [(params + 0.01 * rng.normal(size=p)).astype(np.float32) for _ in range(k)]


@pytest.mark.parametrize(
    ("make", "kind", "needle"),
    [
        (lambda p: np.where(np.arange(p.size) < 2, np.nan, p).astype(p.dtype), "nonfinite", "2 NaN and 0 infinite"),
        (lambda p: np.where(np.arange(p.size) < 3, -np.inf, p).astype(p.dtype), "nonfinite", "0 NaN and 3 infinite"),
        (lambda p: p[:5], "shape", "has shape (5,) but the global model has shape (14,)"),
        (lambda p: p.astype(np.float64), "dtype", "has dtype float64 but the global model has dtype float32"),
    ],
)
def test_malformed_updates_are_rejected_naming_the_problem(make, kind: str, needle: str) -> None:
    params, local = _updates(np.random.default_rng(0))
    local[2] = make(local[2])
    before = [x.copy() for x in local]
    verdicts = validate_updates(["a", "b", "c", "d"], local, [0.5] * 4, params)
    assert [v.accepted for v in verdicts] == [True, True, False, True]
    assert verdicts[2].kind == kind and kind in KINDS and needle in verdicts[2].reason
    assert verdicts[2].norm is None and all(v.norm is not None for v in verdicts if v.accepted)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(local, before, strict=True))  # untouched


def test_a_non_finite_aggregate_is_a_divergence_of_the_server_step() -> None:
    check_global(3, np.ones(4, np.float32), "fedadam")
    with pytest.raises(RoundFailedError, match=r"Round 3: the aggregated global model has 2 non-finite"):
        check_global(3, np.array([1, np.inf, np.nan, 0], np.float32), "fedadam")


def test_a_non_finite_loss_is_rejected_even_with_finite_parameters() -> None:
    params, local = _updates(np.random.default_rng(1))
    verdicts = validate_updates(list("abcd"), local, [0.3, float("nan"), 0.2, float("inf")], params)
    assert [v.kind for v in verdicts] == [None, "loss", None, "loss"]
    assert "local training loss is nan" in verdicts[1].reason


def test_norm_bounds_absolute_and_relative_to_the_rounds_median() -> None:
    rng = np.random.default_rng(2)
    params, local = _updates(rng)
    local[3] = (params + 1e6 / math.sqrt(params.size)).astype(np.float32)  # norm 1e6
    norms = [float(np.linalg.norm(x.astype(np.float64) - params)) for x in local]
    absolute = validate_updates(list("abcd"), local, [0.1] * 4, params, max_update_norm=10.0)
    assert [v.kind for v in absolute] == [None, None, None, "norm"]
    assert "exceeds max_update_norm=10" in absolute[3].reason
    assert absolute[3].norm == pytest.approx(1e6, rel=1e-6) and absolute[0].norm == pytest.approx(norms[0])
    relative = validate_updates(list("abcd"), local, [0.1] * 4, params, max_norm_ratio=3.0)
    assert [v.kind for v in relative] == [None, None, None, "norm"]
    assert "max_norm_ratio=3 x the round's median update norm" in relative[3].reason
    assert norm_bound(norms, 10.0, 3.0) == pytest.approx(min(10.0, 3.0 * float(np.median(norms))))
    assert norm_bound(norms) is None
    assert validate_updates(list("abcd"), local, [0.1] * 4, params)[3].accepted  # no bound: accepted


# -- through a run -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "reason"),
    [
        ("nan", {}, "NaN"),
        ("inf", {}, "infinite"),
        ("shape", {}, "has shape (13,) but the global model has shape (14,)"),
        ("huge", {"max_update_norm": 10.0}, "exceeds max_update_norm=10"),
        ("huge", {"max_norm_ratio": 5.0}, "exceeds max_norm_ratio=5"),
    ],
)
def test_a_rejected_update_is_left_out_and_recorded_everywhere(data_dir, kind: str, config: dict, reason: str) -> None:
    events = []
    result = fedkit.run(RunConfig(**FAST, **config), hooks=[poison(kind)], callbacks=[events.append], progress=False)
    assert result.status == "finished" and np.isfinite(result.params).all()
    # the summary's structured list and notes
    assert [(r["round"], r["silo"]) for r in result.rejected] == [(1, POISONED), (2, POISONED), (3, POISONED)]
    assert all(reason in r["reason"] for r in result.rejected)
    notes = [n for n in result.notes if f"the update of silo {POISONED!r} was rejected" in n]
    assert len(notes) == 3 and "went on with 3 of 4 updates" in notes[0] and reason in notes[0]
    # the history (and every tracker): a rejected row per silo and round
    h = result.history
    flags = h[(h.split == "update") & (h.metric == "rejected")]
    assert set(flags[flags.value == 1].silo) == {POISONED} and len(flags) == 12
    # the round events (the widget panel lists their notes), the store and the audit log
    assert [len(e.notes) for e in events] == [0, 1, 1, 1]
    stored = fedkit.load_run(result.run_id)["summary"]
    assert stored["rejected"] == result.rejected
    rounds = [r for r in LocalStore().audit_log(result.run_id) if r["kind"] == "round" and r["round"] > 0]
    assert all(r["participants"] == ["cleveland", "hungarian", "switzerland"] for r in rounds)
    assert all(reason in next(u for u in r["updates"] if u["silo"] == POISONED)["reason"] for r in rounds)


def test_a_report_lists_every_rejection_with_its_run(data_dir) -> None:
    from fedkit.explore import REJECTION_COLUMNS, rejections_table

    poisoned = fedkit.run(RunConfig(**FAST), hooks=[poison("inf")], progress=False).summary()
    clean = fedkit.run(RunConfig(**FAST, seed=3), progress=False).summary()
    table = rejections_table({"fedavg": [poisoned, clean]})
    assert list(table.columns) == REJECTION_COLUMNS and len(table) == 3
    assert set(table.run_id) == {poisoned["run_id"]} and table["round"].tolist() == [1, 2, 3]
    assert (table.kind == "nonfinite").all() and table.seed.eq(42).all()
    assert rejections_table({"fedavg": [clean]}).empty


def test_the_rejected_silo_does_not_reach_the_model(data_dir) -> None:
    """Rejecting a silo's update each round gives the run of the three others' updates (FedAvg weights renormalized)."""
    too_large = fedkit.run(RunConfig(**FAST, max_update_norm=10.0), hooks=[poison("huge")], progress=False)
    malformed = fedkit.run(RunConfig(**FAST), hooks=[poison("nan")], progress=False)
    clean = fedkit.run(RunConfig(**FAST), progress=False, trackers=[])
    assert np.array_equal(too_large.params, malformed.params)  # either way: the same three updates aggregated
    assert not np.array_equal(too_large.params, clean.params)


def test_too_few_valid_updates_fail_the_run_naming_silos_and_reasons(data_dir) -> None:
    hooks = [poison("nan", "va"), poison("shape", "cleveland")]
    with pytest.raises(RoundFailedError) as err:
        fedkit.run(RunConfig(**FAST, min_silos=3), hooks=hooks, progress=False)
    message = str(err.value)
    assert "Round 1: only 2 of 4 updates passed validation" in message and "min_silos=3" in message
    assert "'cleveland': its update has shape" in message and "'va': its update has 1 NaN" in message
    assert err.value.server_round == 1 and set(err.value.silos) == {"va", "cleveland"}
    run = fedkit.load_run(err.value.run_id)
    assert run["status"] == "failed" and run["error"] == message  # the message, not a traceback


@pytest.mark.parametrize(("strategy", "options"), [("fedmedian", {}), ("krum", {"byzantine": 1})])
def test_one_poisoned_silo_of_four_barely_moves_a_robust_aggregate(data_dir, strategy: str, options: dict) -> None:
    """Bound: every round the aggregate lies in the honest updates' coordinate-wise hull (median of 3 honest + 1) or
    is one honest update (Krum), so the model moves at most sum_r sqrt(sum_k ||u_k,r||^2) over honest silos k — with
    norms read from the run's own audit log — while the poison moves every coordinate by 1e3 (FedAvg moves ~100s)."""
    config = RunConfig(**FAST, strategy=strategy, **options)
    result = fedkit.run(config, hooks=[poison("far")], progress=False)
    rounds = [r for r in LocalStore().audit_log(result.run_id) if r["kind"] == "round" and r["round"] > 0]
    bound = sum(math.sqrt(sum(u["norm"] ** 2 for u in r["updates"] if u["silo"] != POISONED)) for r in rounds)
    initial = make_engine(load_federation(config), config).initial_params()
    moved = float(np.linalg.norm(result.params.astype(np.float64) - initial))
    assert moved <= bound + 1e-6, (moved, bound)
    assert bound < 0.1  # honest updates are small; the poison's norm is 1e3 * sqrt(14) ~ 3.7e3
    fedavg = fedkit.run(RunConfig(**FAST), hooks=[poison("far")], progress=False, trackers=[])
    assert float(np.linalg.norm(fedavg.params.astype(np.float64) - initial)) > 100


def test_with_fedavg_the_norm_bound_keeps_the_model_finite(data_dir) -> None:
    with pytest.raises(RoundFailedError, match=r"Round 2: only 0 of 4 updates passed validation.*diverged"):
        fedkit.run(RunConfig(**FAST), hooks=[poison("overflow")], progress=False)  # 0.17 x 3e38 in the model
    bounded = fedkit.run(RunConfig(**FAST, max_norm_ratio=10.0), hooks=[poison("overflow")], progress=False)
    assert np.isfinite(bounded.params).all() and len(bounded.rejected) == 3
    clean = fedkit.run(RunConfig(**FAST), progress=False, trackers=[])
    assert float(np.linalg.norm(bounded.params - clean.params)) < 0.05


def test_update_norm_is_numpys_norm_to_the_bit_on_random_updates() -> None:
    from fedkit.privacy.validation import update_norm

    rng = np.random.default_rng(7)
    for _ in range(200):
        size = int(rng.integers(1, 400))
        dtype = rng.choice([np.float32, np.float64])
        scale = 10.0 ** rng.integers(-8, 30)
        local = (rng.standard_normal(size) * scale).astype(dtype)
        reference = (rng.standard_normal(size) * scale).astype(dtype)
        expected = float(np.linalg.norm(local.astype(np.float64) - reference.astype(np.float64)))
        assert update_norm(local, reference) == expected


def test_validate_updates_gives_each_updates_own_check_and_norm_on_random_rounds() -> None:
    """The one-pass check of a usual round and the update-by-update one agree on random rounds, usual or not."""
    from fedkit.privacy.validation import malformed, update_norm, validate_updates

    rng = np.random.default_rng(11)
    for _ in range(150):
        size, k = int(rng.integers(1, 50)), int(rng.integers(1, 8))
        dtype = rng.choice([np.float32, np.float64])
        params = rng.standard_normal(size).astype(dtype)
        local = [(params + rng.standard_normal(size)).astype(dtype) for _ in range(k)]
        losses: list[float | None] = [float(v) for v in rng.random(k)] if rng.random() < 0.7 else [None] * k
        for _ in range(int(rng.integers(0, 3))):  # a few broken updates, or none (the usual round)
            i = int(rng.integers(k))
            kind = rng.integers(5)
            if kind == 0:
                local[i] = local[i].copy()
                local[i][int(rng.integers(size))] = rng.choice([np.nan, np.inf, -np.inf])
            elif kind == 1:
                local[i] = np.zeros(size + 1, dtype=dtype)
            elif kind == 2:
                local[i] = local[i].astype(np.float64 if dtype == np.float32 else np.float32)
            elif kind == 3:
                losses[i] = float("nan")
            else:
                local[i] = local[i] * 1e6
        verdicts = validate_updates([f"s{i}" for i in range(k)], local, losses, params, max_norm_ratio=3.0)
        for verdict, update, loss in zip(verdicts, local, losses, strict=True):
            bad = malformed(update, params, loss)
            if bad is not None:
                assert (verdict.kind, verdict.reason, verdict.norm) == (*bad, None)
            else:
                assert verdict.norm == update_norm(update, params)

"""Checkpoints and resume: a run SIGKILLed after round k, resumed, ends bit for bit as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main
from fedkit.config import load_federation
from fedkit.engines.simulation import make_engine
from fedkit.errors import ConfigError, ResumeError
from fedkit.result import RunResult
from fedkit.tracking.checkpoint import decode
from fedkit.tracking.local import LocalStore

BASE = {"rounds": 4, "local_steps": 5}
KILL_AFTER = 2
CASES = {
    "fedavg": {},
    "fedprox": {"strategy": "fedprox", "mu": 0.1},
    "fedavgm": {"strategy": "fedavgm"},
    "scaffold": {"strategy": "scaffold", "lr": 0.01},
    "fedadam": {"strategy": "fedadam", "lr": 0.01},
    "fedyogi": {"strategy": "fedyogi", "lr": 0.01},
    "fedadagrad": {"strategy": "fedadagrad", "lr": 0.01},
    "fedmedian": {"strategy": "fedmedian"},
    "trimmedmean": {"strategy": "trimmedmean", "trim_beta": 0.25},
    "krum": {"strategy": "krum", "byzantine": 1},
    "fedper": {"personalize": "fedper", "lr": 0.03},
    "finetune": {"personalize": "finetune", "finetune_steps": 3},
    "scaffold, mlp": {"strategy": "scaffold", "model": "mlp", "lr": 0.01},
    "fedper, mlp": {"personalize": "fedper", "model": "mlp", "lr": 0.01},
    "fedavgm, torch trainer": {"strategy": "fedavgm", "backend": "torch"},
    "faults: sampling, dropout, stragglers": {
        "split": "iid",
        "silos": 8,
        "fraction": 0.75,
        "dropout": 0.3,
        "straggler_timeout": 0.05,
        "rounds": 6,
    },
    "rejected updates": {"max_norm_ratio": 1.2},
}

KILLER = """
import os, signal, sys
import fedkit
config = fedkit.RunConfig.from_dict({config})

def die(event):
    if event.round == {round}:
        os.kill(os.getpid(), signal.SIGKILL)

fedkit.run(config, callbacks=[die], progress=False)
"""


def killed_run(config: RunConfig, after: int = KILL_AFTER) -> str:
    """Run ``config`` in a child process that SIGKILLs itself right after round ``after`` was recorded; its run id."""
    code = KILLER.format(config=repr(config.to_dict()), round=after)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (row,) = [r for r in LocalStore().list_runs() if r["status"] == "interrupted"]
    return row["run_id"]


def assert_same_run(resumed: RunResult, uninterrupted: RunResult) -> None:
    """Bit-for-bit parameters; the same metric rows, final table, notes and rejected updates."""
    assert resumed.status == uninterrupted.status == "finished"
    assert resumed.params.dtype == uninterrupted.params.dtype
    assert resumed.params.tobytes() == uninterrupted.params.tobytes()
    a, b = resumed.history, uninterrupted.history
    assert a[["round", "silo", "model", "split", "metric"]].equals(b[["round", "silo", "model", "split", "metric"]])
    assert np.array_equal(a.value.to_numpy(), b.value.to_numpy(), equal_nan=True)
    s, t = resumed.summary(), uninterrupted.summary()
    assert s["final"] == t["final"] and s["notes"] == t["notes"] and s["rejected"] == t["rejected"]


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_run_resumes_to_the_uninterrupted_result(data_dir, case: str) -> None:
    config = RunConfig(**{**BASE, **CASES[case]})
    run_id = killed_run(config)
    assert fedkit.load_run(run_id)["status"] == "interrupted"
    assert decode(LocalStore().checkpoint(run_id)).server_round == KILL_AFTER
    resumed = fedkit.run(resume=run_id, progress=False)
    uninterrupted = fedkit.run(config, progress=False, trackers=[])
    assert resumed.run_id == run_id
    assert_same_run(resumed, uninterrupted)
    stored = fedkit.load_run(run_id)
    assert stored["status"] == "finished" and stored["params"].tobytes() == uninterrupted.params.tobytes()
    assert len(LocalStore().history(run_id)) == len(resumed.records)  # every round once, none lost or doubled
    kinds = [r["kind"] for r in LocalStore().audit_log(run_id)]
    assert kinds == ["start", *["round"] * (KILL_AFTER + 1), "resume", *["round"] * (config.rounds - KILL_AFTER), "end"]
    LocalStore().verify_audit(run_id)


def test_the_checkpoint_holds_scaffolds_control_variates(data_dir) -> None:
    # float64, as the server's; SCAFFOLD and FedPer do not go together (RunConfig refuses it): a test each
    scaffold = RunConfig(**BASE, strategy="scaffold", model="mlp", lr=0.01)
    saved = decode(LocalStore().checkpoint(killed_run(scaffold)))
    assert saved.server_round == KILL_AFTER and set(saved.strategy) == {"control"}
    assert set(saved.engine) == {"control", "control_silos", "missing"}
    assert saved.engine["control_silos"].tolist() == ["cleveland", "hungarian", "switzerland", "va"]
    assert saved.engine["control"].shape == (4, len(saved.params)) and saved.engine["control"].dtype == np.float64
    engine = make_engine(load_federation(scaffold), scaffold)
    assert engine.state()["control"].shape == (0, len(saved.params))  # nothing trained yet
    engine.restore(saved.engine)
    assert all(np.array_equal(engine.state()[k], saved.engine[k]) for k in saved.engine)


def test_the_checkpoint_holds_fedpers_personal_heads(data_dir) -> None:
    fedper = RunConfig(**BASE, personalize="fedper", model="mlp", lr=0.01)
    saved = decode(LocalStore().checkpoint(killed_run(fedper)))
    assert set(saved.engine) == {"control", "control_silos", "personal", "missing"}
    mlp_head = 16 + 1  # FedPer keeps the MLP's output layer: 16 weights and a bias per silo
    assert saved.engine["personal"].shape == (4, mlp_head) and saved.engine["personal"].dtype == np.float32
    engine = make_engine(load_federation(fedper), fedper)
    before = engine.state()
    engine.restore(saved.engine)
    after = engine.state()
    assert not np.array_equal(before["personal"], after["personal"])
    assert all(np.array_equal(after[k], saved.engine[k]) for k in saved.engine)


def test_a_stopped_run_resumes_from_where_it_stopped(data_dir) -> None:
    config = RunConfig(**BASE, strategy="fedavgm")
    stopped = fedkit.run(config, should_stop=lambda: True, progress=False)
    assert stopped.status == "stopped" and stopped.final["round"] == 1
    resumed = fedkit.run(config, resume=stopped.run_id[:12], progress=False)  # a unique prefix is enough
    assert_same_run(resumed, fedkit.run(config, progress=False, trackers=[]))


def test_the_cli_resumes_a_killed_run(data_dir, capsys) -> None:
    config = RunConfig(**BASE, strategy="fedyogi", lr=0.01)
    run_id = killed_run(config, after=1)
    assert main(["run", "--resume", run_id, "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    uninterrupted = fedkit.run(config, progress=False, trackers=[]).summary()
    assert summary["run_id"] == run_id and summary["status"] == "finished"
    assert summary["final"] == uninterrupted["final"] and summary["history"] == uninterrupted["history"]


def test_what_cannot_be_resumed_is_refused_with_the_reason(data_dir, capsys) -> None:
    config = RunConfig(**BASE)
    finished = fedkit.run(config, progress=False).run_id
    with pytest.raises(ResumeError, match=f"Run {finished} cannot be resumed: it finished"):
        fedkit.run(resume=finished, progress=False)
    stopped = fedkit.run(config, should_stop=lambda: True, progress=False).run_id
    with pytest.raises(ConfigError, match="the given config differs in lr"):
        fedkit.run(replace(config, lr=0.5), resume=stopped, progress=False)
    assert main(["run", "--resume", stopped, "--lr", "0.5"]) == 2
    assert "--resume continues a run with its recorded config; drop --lr" in capsys.readouterr().err
    other_data = load_federation(replace(config, standardize="none"))  # other arrays: other silo checksums
    with pytest.raises(ResumeError, match="the data of silo\\(s\\) cleveland, hungarian"):
        fedkit.run(resume=stopped, federation=other_data, progress=False)
    same = load_federation(config)
    fewer = replace(same, silos=same.silos[:3])  # a site left out: named, not reported as changed data
    with pytest.raises(ResumeError, match=r"resumed: silo\(s\) va it started with are not here \(checksums"):
        fedkit.run(resume=stopped, federation=fewer, progress=False)

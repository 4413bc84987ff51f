"""Every message a site sends, for every kind of run, through the wire encoding: only the documented aggregates.

The sites answer in-process through the same payloads FLARE carries. A reply fails the test when it
has a field that :data:`fedkit.remote.wire.SENT_BY_SITE` does not list for its task, or holds an
array (or list, or masked vector) with one entry per patient of that site: as long as its train
or test set. docs/remote.md renders the same list as its table "What leaves a hospital".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_remote_engine import HOSPITALS, site_workers

import fedkit
from fedkit.evalstats import BINS
from fedkit.remote import wire
from fedkit.remote.server import RelayTracker, serve
from fedkit.remote.silo import SiloWorker
from fedkit.tracking.local import LocalStore

DOCS = Path(__file__).resolve().parents[1] / "docs" / "remote.md"

RUNS = [
    {"strategy": "fedavg"},
    {"strategy": "fedprox", "mu": 0.01},
    {"strategy": "scaffold"},
    {"strategy": "fedadam", "lr": 0.01},
    {"personalize": "fedper", "model": "mlp"},
    {"personalize": "finetune"},
    {"strategy": "local"},
    {"split": "hospitals", "standardize": "federated"},
]
RESUMED = "scaffold, resumed after its server died"


def lengths(value: Any) -> list[int]:
    """The length of every array-like thing in a reply: packed arrays (each axis) and lists."""
    found = []
    if isinstance(value, dict) and {"dtype", "shape", "data"} <= value.keys():
        found += list(wire.unpack(value).shape)
    elif isinstance(value, dict):
        for item in value.values():
            found += lengths(item)
    elif isinstance(value, list | tuple):
        found.append(len(value))
        for item in value:
            found += lengths(item)
    return found


class Recording(SiloWorker):
    """A site that records every reply it sends (by task), and its own train and test sizes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def handle(self, task: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = super().handle(task, payload)
        self.sent.append((task, reply))
        return reply

    @property
    def patients(self) -> set[int]:
        return {len(self._part.y_train), len(self._part.y_test)}


def run_recorded(fields: dict[str, Any], secure: bool) -> tuple[dict[str, Recording], set[int]]:
    """The sites of a 2-round run, and the lengths a masked vector may have in it (fixed by the protocol)."""
    workers = site_workers(Recording)
    config = fedkit.RunConfig(**{"rounds": 2, **fields, "engine": "remote", "secure_aggregation": secure})

    def transport(task, payload, sites, need):
        return {s: workers[s].handle(task, payload) for s in sites}

    result, _ = serve(transport, config, list(HOSPITALS), RelayTracker())
    p, f = len(result.params), 13
    masked = {p + 1, 2 * p + 1, BINS.length, 3 * f}  # update + n (+ control delta), statistics, moments
    return workers, {n + 1 for n in masked}  # + the weight the protocol appends


def run_resumed(secure: bool, tmp: Path) -> tuple[dict[str, Recording], set[int]]:
    """The sites of a SCAFFOLD run whose server died after round 1's training, resumed in a new job (restore)."""
    config = fedkit.RunConfig(rounds=2, strategy="scaffold", engine="remote", secure_aggregation=secure)
    store = LocalStore(tmp / "server.sqlite")
    first = site_workers(Recording, state=tmp)

    def dying(task, payload, sites, need):
        replies = {s: first[s].handle(task, payload) for s in sites}
        if task == wire.FIT or (task == wire.EVALUATE_FIT and payload["round"] == 2):  # in the clear, round 1's
            raise RuntimeError("the server's job died")  # evaluation (with round 2's training) follows round 1's
        return replies

    with pytest.raises(RuntimeError):
        serve(dying, config, list(HOSPITALS), RelayTracker(), store=store)
    workers = site_workers(Recording, state=tmp)

    def transport(task, payload, sites, need):
        return {s: workers[s].handle(task, payload) for s in sites}

    result, _ = serve(
        transport, config, list(HOSPITALS), RelayTracker(), store=store, resume=store.list_runs()[0]["run_id"]
    )
    p = len(result.params)
    return workers, {n + 1 for n in (p + 1, 2 * p + 1, BINS.length)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, bool], tuple[dict[str, Recording], set[int]]]:
    recorded = {(repr(f), secure): run_recorded(f, secure) for f in RUNS for secure in (True, False)}
    for secure in (True, False):
        recorded[(RESUMED, secure)] = run_resumed(secure, tmp_path_factory.mktemp("resumed"))
    return recorded


@pytest.fixture(scope="module")
def recorded(runs) -> dict[tuple[str, bool], dict[str, Recording]]:
    return {key: workers for key, (workers, _) in runs.items()}


@pytest.mark.parametrize("secure", [True, False], ids=["secure-aggregation", "in-the-clear"])
@pytest.mark.parametrize("fields", [*RUNS, RESUMED], ids=lambda f: f if isinstance(f, str) else repr(f))
def test_a_site_sends_only_documented_fields_and_nothing_per_patient(runs, fields, secure) -> None:
    workers, masked_lengths = runs[(fields if isinstance(fields, str) else repr(fields), secure)]
    for site, worker in workers.items():
        assert worker.sent, site
        for task, reply in worker.sent:
            undocumented = set(reply) - set(wire.SENT_BY_SITE[task])
            assert not undocumented, (site, task, undocumented)
            per_patient = set(lengths(reply)) & worker.patients
            assert not per_patient, (site, task, per_patient, sorted(worker.patients))
            if "masked" in reply:
                assert len(reply["masked"]["words"]) // 8 in masked_lengths, (site, task)


def test_without_secure_aggregation_updates_go_in_the_clear_and_with_it_only_masked(recorded) -> None:
    for secure in (True, False):
        sent = {task: reply for w in recorded[(repr(RUNS[2]), secure)].values() for task, reply in w.sent}
        training = sent[wire.FIT] if secure else sent[wire.EVALUATE_FIT]  # in the clear: with the evaluation before
        assert (wire.EVALUATE_FIT in sent) is not secure
        assert ("params" in training and "control_delta" in training) is not secure
        assert ("stats" in sent[wire.EVALUATE]) is not secure
        assert ("masked" in training and wire.SECAGG in sent) is secure


def test_every_documented_field_is_sent_by_some_run(recorded) -> None:
    seen = {(task, name) for workers in recorded.values() for w in workers.values() for task, r in w.sent for name in r}
    documented = {(task, name) for task, fields in wire.SENT_BY_SITE.items() for name in fields}
    assert documented == seen
    assert set(wire.SENT_BY_SITE) == set(wire.TASKS)


def test_pooled_cannot_run_remotely() -> None:
    with pytest.raises(fedkit.ConfigError, match="strategy other than 'pooled'"):
        fedkit.RunConfig(engine="remote", strategy="pooled")


def test_the_docs_table_lists_every_field_a_site_sends() -> None:
    text = DOCS.read_text()
    section = text[text.index("## What leaves a hospital") :]
    rows = set(re.findall(r"^\| `(fedkit_\w+)` \| `(\w+)` \|", section, flags=re.MULTILINE))
    documented = {(task, name) for task, fields in wire.SENT_BY_SITE.items() for name in fields}
    assert rows == documented

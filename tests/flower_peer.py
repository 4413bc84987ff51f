"""The Flower half of tests/test_flower_peer.py: replays seeded rounds through Flower's own strategy classes.

Runs under the Flower virtualenv's python (``make flower-venv`` builds ``.venv-flower``), never under
fedkit's: it imports only flwr and numpy. ``python tests/flower_peer.py CASES.json OUT.json`` reads a
JSON list of cases and writes ``{"flwr": version, "cases": {name: [parameters after each round]}}``
(JSON floats round-trip exactly).

A case names a class of ``flwr.server.strategy`` and its keyword options. In every round each client
replies as a Flower client does, with its local weights: the current global parameters plus its
seeded update, and its train size as ``num_examples``. ``aggregate_fit`` gets the replies with
``server_round`` counted from 1, as Flower's server loop counts, and the strategy keeps its own state
(momentum buffer, moments, current weights) between rounds. No server, client or network is started.
The ``flwr.serverapp.strategy`` classes compute the same update lines in the pinned version, but
their messages need the run id of a running SuperLink, so the direct call goes to these.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import flwr
import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import strategy as flower_strategies


def replay(case: dict[str, Any]) -> list[list[float]]:
    """The global parameters after each round of ``case``, as Flower's strategy computes them."""
    params = np.asarray(case["initial"], dtype=np.float64)
    strategy = getattr(flower_strategies, case["strategy"])(
        initial_parameters=ndarrays_to_parameters([params]), **case["options"]
    )
    trajectory = []
    for server_round, one_round in enumerate(case["rounds"], start=1):
        results = [
            (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([params + np.asarray(update)]), int(size), {}))
            for update, size in zip(one_round["updates"], one_round["sizes"], strict=True)
        ]
        aggregated, _ = strategy.aggregate_fit(server_round, results, [])
        params = parameters_to_ndarrays(aggregated)[0]
        trajectory.append(params.tolist())
    return trajectory


def main(cases_file: str, out_file: str) -> None:
    """Replay every case of ``cases_file`` and write the trajectories to ``out_file``."""
    cases = json.loads(Path(cases_file).read_text())
    out = {"flwr": flwr.__version__, "cases": {case["name"]: replay(case) for case in cases}}
    Path(out_file).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""A run's checkpoint after a round: everything the rounds after it need, as bytes the run store keeps.

The global parameters, the strategy's state (server momentum, adaptive moments, SCAFFOLD's server
control variate), the engine's silo state (SCAFFOLD's silo control variates, FedPer's personal
parameters; see :meth:`fedkit.engines.base.Engine.state`), the round it follows, and the run's notes
and rejected updates so far. Every other random draw of a run is a function of (seed, round, silo)
(:mod:`fedkit.seeding`), so restoring these makes the remaining rounds identical, bit for bit, to
those of a run that was never interrupted.

Encoded as one ``.npz`` archive (arrays keep their exact dtype and bytes; no pickle), with the
JSON-ready part under the ``meta`` key.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

FORMAT = 1
"""Version of the encoding, stored with every checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """The state of a run after round ``server_round`` (see the module docstring).

    Parameters
    ----------
    server_round
        The round it follows.
    params
        The global parameters after that round.
    strategy
        The strategy's state as named arrays (:func:`strategy_arrays`).
    engine
        The silos' state (:meth:`fedkit.engines.base.Engine.state`).
    notes
        The run's notes so far.
    rejected
        The updates rejected so far (``RunResult.rejected``).
    """

    server_round: int
    params: np.ndarray
    strategy: dict[str, np.ndarray]
    engine: dict[str, np.ndarray]
    notes: tuple[str, ...] = ()
    rejected: tuple[dict[str, Any], ...] = field(default=())


def strategy_arrays(state: NamedTuple) -> dict[str, np.ndarray]:
    """A strategy state (a NamedTuple of arrays) as named arrays.

    Parameters
    ----------
    state
        A strategy's state: a NamedTuple of arrays.
    """
    return {name: np.asarray(value) for name, value in state._asdict().items()}


def strategy_state(template: NamedTuple, arrays: Mapping[str, np.ndarray]) -> Any:
    """The state of ``template``'s type (a fresh ``strategy.init(params)``) holding ``arrays``.

    Parameters
    ----------
    template
        A fresh state of the strategy (``strategy.init(params)``), for its type and fields.
    arrays
        The named arrays :func:`strategy_arrays` gave.
    """
    return type(template)(**{name: np.array(arrays[name]) for name in template._fields})


def encode(checkpoint: Checkpoint) -> bytes:
    """The checkpoint as bytes (an ``.npz`` archive).

    Parameters
    ----------
    checkpoint
        The checkpoint.
    """
    meta = {
        "format": FORMAT,
        "round": checkpoint.server_round,
        "notes": list(checkpoint.notes),
        "rejected": list(checkpoint.rejected),
        "strategy": sorted(checkpoint.strategy),
        "engine": sorted(checkpoint.engine),
    }
    arrays = {"params": np.asarray(checkpoint.params)}
    arrays |= {f"strategy/{k}": np.asarray(v) for k, v in checkpoint.strategy.items()}
    arrays |= {f"engine/{k}": np.asarray(v) for k, v in checkpoint.engine.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode(blob: bytes) -> Checkpoint:
    """The :class:`Checkpoint` that :func:`encode` wrote.

    Parameters
    ----------
    blob
        Bytes :func:`encode` wrote.
    """
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes())
        return Checkpoint(
            server_round=int(meta["round"]),
            params=archive["params"],
            strategy={k: archive[f"strategy/{k}"] for k in meta["strategy"]},
            engine={k: archive[f"engine/{k}"] for k in meta["engine"]},
            notes=tuple(meta["notes"]),
            rejected=tuple(meta["rejected"]),
        )

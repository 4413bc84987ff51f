"""One seed, independent named streams: data, batch sampling, silo selection, fine-tuning.

``stream(seed, DATA)`` gives a numpy generator for one-off draws (the data split, silo selection).
Batch plans, drawn for every silo in every round, use :func:`uniform` instead: a counter-based
hash (splitmix64) of ``(seed, kind, round, silo, counter)``, so the keys of any silo are computed
alone or together with thousands of others in one vectorized call and come out identical — the
same batches whichever engine runs the silo, whoever else is selected, in whatever order. Model
initialization uses ``torch.manual_seed(seed)`` inside a forked RNG, as FLamby does.
"""

from __future__ import annotations

import numpy as np

DATA = 0
SAMPLING = 1
SELECTION = 2
FINETUNE = 3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def stream(seed: int, kind: int, *keys: int) -> np.random.Generator:
    """An independent generator for ``(seed, kind, *keys)``."""
    return np.random.default_rng([seed, kind, *keys])


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (wrapping uint64 arithmetic on arrays)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, kind: int, round: int, silos: np.ndarray, n: int) -> np.ndarray:
    """Uniform [0, 1) keys, shape (len(silos), n): row i depends only on (seed, kind, round, silos[i])."""
    base = np.array([seed, kind, round], dtype=np.uint64)
    key = np.zeros(1, dtype=np.uint64)
    for part in base:
        key = _mix(key + _GOLDEN + part)
    keys = _mix(key + _GOLDEN + np.asarray(silos, dtype=np.uint64))[:, None]
    counters = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return (_mix(keys + counters) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)

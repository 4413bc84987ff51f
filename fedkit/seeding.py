"""One seed, independent named streams: data, batch sampling, silo selection, fine-tuning, DP noise, faults.

``stream(seed, DATA)`` gives a numpy generator for one-off draws (the data split, silo selection).
Batch plans, drawn for every silo in every round, use :func:`uniform` instead: a counter-based
hash (splitmix64) of ``(seed, kind, round, silo, counter)``, so the keys of any silo are computed
alone or together with thousands of others in one vectorized call and come out identical — the
same batches whichever engine runs the silo, whoever else is selected, in whatever order. Model
initialization uses ``torch.manual_seed(seed)`` inside a forked RNG, as FLamby does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DATA = 0
SAMPLING = 1
SELECTION = 2
FINETUNE = 3
DP_NOISE = 4  # differential privacy's Gaussian noise (fedkit.privacy.dp), apart from every other draw
DROPOUT = 5  # simulated faults (fedkit.engines.faults): which silos vanish from a round
STRAGGLER = 6  # simulated faults: how long each silo's round takes
VALIDATION = 7  # the folds of validation_split (fedkit.data.silos), one stream per silo

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = 2**64 - 1


def stream(seed: int, kind: int, *keys: int) -> np.random.Generator:
    """An independent generator for ``(seed, kind, *keys)``.

    Parameters
    ----------
    seed
        The run's seed.
    kind
        Which use the stream is for (a constant of this module).
    *keys
        Further keys (round, silo...) that make the stream distinct.
    """
    return np.random.default_rng([seed, kind, *keys])


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (wrapping uint64 arithmetic on arrays)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    """:func:`_mix` on one Python int (mod 2**64), for the few scalar keys."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * int(_M1)) & _MASK
    x = ((x ^ (x >> 27)) * int(_M2)) & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, kind: int, server_round: int, silos: Sequence[int], n: int) -> np.ndarray:
    """Uniform [0, 1) keys, shape (len(silos), n): row i depends only on (seed, kind, server_round, silos[i]).

    Parameters
    ----------
    seed
        The run's seed.
    kind
        Which use the keys are for (a constant of this module).
    server_round
        The round.
    silos
        The silos' indices, one row each.
    n
        Keys per silo.
    """
    key = 0
    for part in (seed, kind, server_round):
        key = _mix_int(key + int(_GOLDEN) + int(part))
    keys = np.array([_mix_int(key + int(_GOLDEN) + int(s)) for s in silos], dtype=np.uint64)[:, None]
    counters = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return (_mix(keys + counters) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)

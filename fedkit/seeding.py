"""One seed, independent named streams: data, batch sampling, silo selection, fine-tuning.

``stream(seed, DATA)`` and ``stream(seed, SAMPLING, round, silo)`` are independent generators
derived from the same seed, so the batches a silo draws in a round do not depend on which engine
runs it, on the other silos, or on the order of calls. Model initialization uses
``torch.manual_seed(seed)`` inside a forked RNG, as FLamby does, without touching global state.
"""

from __future__ import annotations

import numpy as np

DATA = 0
SAMPLING = 1
SELECTION = 2
FINETUNE = 3


def stream(seed: int, kind: int, *keys: int) -> np.random.Generator:
    """An independent generator for ``(seed, kind, *keys)``."""
    return np.random.default_rng([seed, kind, *keys])

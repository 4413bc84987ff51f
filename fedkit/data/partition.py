"""Synthetic partitions of pooled rows into silos: IID, Dirichlet label skew, quantity skew.

Each function returns one index array per silo; together they hold every row exactly once.
"""

from __future__ import annotations

import numpy as np

from fedkit.errors import ConfigError

MAX_ATTEMPTS = 1000


def _check(n_rows: int, n_silos: int, min_size: int, split: str) -> None:
    if n_silos * min_size > n_rows:
        raise ConfigError(
            f"Cannot split {n_rows} rows into {n_silos} silos of at least {min_size} rows each "
            f"({split} split): use at most {n_rows // min_size} silos."
        )


def iid(n_rows: int, n_silos: int, rng: np.random.Generator, min_size: int = 1) -> list[np.ndarray]:
    """Shuffle the rows and cut them into ``n_silos`` parts of (almost) equal size."""
    _check(n_rows, n_silos, min_size, "iid")
    return [np.sort(p) for p in np.array_split(rng.permutation(n_rows), n_silos)]


def dirichlet(
    labels: np.ndarray, n_silos: int, alpha: float, rng: np.random.Generator, min_size: int = 1
) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution").

    For each class, the share of its rows that each silo gets is drawn from Dirichlet(alpha):
    small alpha → each silo sees mostly one class; large alpha → close to IID. Draws are
    repeated (bounded) until every silo has ``min_size`` rows.
    """
    _check(len(labels), n_silos, min_size, "dirichlet")
    classes = np.unique(labels)
    for _ in range(MAX_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_silos)]
        for cls in classes:
            rows = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(n_silos, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for silo, chunk in enumerate(np.split(rows, cuts)):
                parts[silo].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ConfigError(
        f"Could not draw a Dirichlet(alpha={alpha}) label split of {len(labels)} rows into "
        f"{n_silos} silos with at least {min_size} rows each in {MAX_ATTEMPTS} tries: "
        "raise alpha or use fewer silos."
    )


def quantity(n_rows: int, n_silos: int, alpha: float, rng: np.random.Generator, min_size: int = 1) -> list[np.ndarray]:
    """Quantity skew: silo sizes are ``min_size`` plus a Dirichlet(alpha) share of the rest; labels stay IID."""
    _check(n_rows, n_silos, min_size, "quantity")
    spare = n_rows - n_silos * min_size
    sizes = min_size + rng.multinomial(spare, rng.dirichlet(np.full(n_silos, alpha)))
    order = rng.permutation(n_rows)
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]

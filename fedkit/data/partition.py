"""Synthetic partitions of pooled rows into silos: IID, Dirichlet label skew, quantity skew.

Each function returns one index array per silo; together they hold every row exactly once.
"""

from __future__ import annotations

import numpy as np

from fedkit.errors import ConfigError


def _check(n_rows: int, n_silos: int, min_size: int, split: str) -> None:
    if n_silos * min_size > n_rows:
        raise ConfigError(
            f"Cannot split {n_rows} rows into {n_silos} silos of at least {min_size} rows each "
            f"({split} split): use at most {n_rows // min_size} silos."
        )


def iid(n_rows: int, n_silos: int, rng: np.random.Generator, min_size: int = 1) -> list[np.ndarray]:
    """Shuffle the rows and cut them into ``n_silos`` parts of (almost) equal size.

    Parameters
    ----------
    n_rows
        Rows to split.
    n_silos
        Number of silos.
    rng
        The seeded generator of the split.
    min_size
        Fewest rows a silo may get.
    """
    _check(n_rows, n_silos, min_size, "iid")
    return [np.sort(p) for p in np.array_split(rng.permutation(n_rows), n_silos)]


def dirichlet(
    labels: np.ndarray, n_silos: int, alpha: float, rng: np.random.Generator, min_size: int = 1
) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution").

    For each class, the share of its rows that each silo gets is drawn from Dirichlet(alpha):
    small alpha → each silo sees mostly one class; large alpha → close to IID. A silo left with
    fewer than ``min_size`` rows is topped up with random rows of the largest silo, so the split
    works for any silo count the rows allow.

    Parameters
    ----------
    labels
        Each row's label.
    n_silos
        Number of silos.
    alpha
        Dirichlet concentration; smaller = more skew.
    rng
        The seeded generator of the split.
    min_size
        Fewest rows a silo may get.
    """
    _check(len(labels), n_silos, min_size, "dirichlet")
    parts: list[list[np.ndarray]] = [[] for _ in range(n_silos)]
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(n_silos, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for silo, chunk in enumerate(np.split(rows, cuts)):
            parts[silo].append(chunk)
    out = [rng.permutation(np.concatenate(p)) for p in parts]
    sizes = np.array([len(p) for p in out])
    for small in np.flatnonzero(sizes < min_size):
        while sizes[small] < min_size:
            large = int(np.argmax(sizes))
            take = min(min_size - sizes[small], sizes[large] - min_size)
            out[small] = np.concatenate([out[small], out[large][:take]])
            out[large] = out[large][take:]
            sizes[small] += take
            sizes[large] -= take
    return [np.sort(p) for p in out]


def quantity(n_rows: int, n_silos: int, alpha: float, rng: np.random.Generator, min_size: int = 1) -> list[np.ndarray]:
    """Quantity skew: silo sizes are ``min_size`` plus a Dirichlet(alpha) share of the rest; labels stay IID.

    Parameters
    ----------
    n_rows
        Rows to split.
    n_silos
        Number of silos.
    alpha
        Dirichlet concentration; smaller = more skew.
    rng
        The seeded generator of the split.
    min_size
        Fewest rows a silo may get.
    """
    _check(n_rows, n_silos, min_size, "quantity")
    spare = n_rows - n_silos * min_size
    sizes = min_size + rng.multinomial(spare, rng.dirichlet(np.full(n_silos, alpha)))
    order = rng.permutation(n_rows)
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]

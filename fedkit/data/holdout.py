"""Train/test holdout of one silo, drawn exactly as scikit-learn's ``train_test_split`` draws it.

FLamby splits each center with ``train_test_split(train_size=0.66, random_state=43, shuffle=True,
stratify=...)``. Reproducing its draws (``ShuffleSplit`` / ``StratifiedShuffleSplit`` with
``_approximate_mode``, scikit-learn 1.x, same ``RandomState`` calls in the same order) keeps
FLamby's split without importing scikit-learn, which costs about 2 s of every kernel's start-up.
tests/test_splits.py compares with scikit-learn on many label vectors and seeds.
"""

from __future__ import annotations

import math

import numpy as np


def sizes(n: int, train_fraction: float) -> tuple[int, int]:
    """``(n_train, n_test)`` as scikit-learn computes them for ``train_size=f, test_size=1-f`` of ``n`` rows.

    Parameters
    ----------
    n
        Rows.
    train_fraction
        Share of the rows that train, in (0, 1).
    """
    return math.floor(train_fraction * n), math.ceil((1.0 - train_fraction) * n)


def approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows drawn from each class: the rounded-down share, remainders by largest fraction, ties broken by ``rng``.

    Parameters
    ----------
    class_counts
        Rows of each class.
    n_draws
        Rows to draw in all.
    rng
        Breaks ties (scikit-learn's legacy generator, for identical draws).
    """
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), need)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            need -= now
            if need == 0:
                break
    return floored.astype(int)


def split(
    labels: np.ndarray, train_fraction: float, random_state: int, *, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices (each sorted) of one silo with labels ``labels``.

    Parameters
    ----------
    labels
        The silo's 0/1 labels.
    train_fraction
        Share of the rows that train, in (0, 1).
    random_state
        scikit-learn's ``random_state``.
    stratify
        Keep the label's share in both parts.
    """
    n_train, n_test = sizes(len(labels), train_fraction)
    rng = np.random.RandomState(random_state)
    if not stratify:
        permutation = rng.permutation(len(labels))
        return np.sort(permutation[n_test : n_test + n_train]), np.sort(permutation[:n_test])
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2 or min(n_train, n_test) < len(classes):
        raise ValueError(f"cannot stratify {len(labels)} rows with class counts {counts.tolist()}")
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    n_i = approximate_mode(counts, n_train, rng)
    t_i = approximate_mode(counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        rows = by_class[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(rows[: n_i[i]])
        test.extend(rows[n_i[i] : n_i[i] + t_i[i]])
    # scikit-learn shuffles both lists once more (rng.permutation each); the sets, hence the sorted indices, are final
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))

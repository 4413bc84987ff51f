"""Synthetic partitions: exact silo sizes and class counts for a seed, and the invariants of the Dirichlet top-up.

The references below are written from the algorithms' descriptions, one draw at a time in plain Python
(Hsu et al. 2019 for the label skew: class c's rows shuffled, then cut at ``floor(cumsum(p) * n_c)`` with
``p ~ Dirichlet(alpha)``; each silo's rows shuffled; a silo short of ``min_size`` topped up from the front of
the currently largest silo). They consume the generator in the documented order, so for a seed they give
the exact rows; the invariants are checked on top of that, for any input hypothesis finds.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from fedkit.data.partition import dirichlet, iid, quantity
from fedkit.errors import ConfigError


def _reference_dirichlet(
    labels: np.ndarray, n_silos: int, alpha: float, seed: int, min_size: int
) -> tuple[list[list[int]], list[list[int]]]:
    """(rows each silo was dealt before the top-up, final rows of each silo) as Python lists."""
    rng = np.random.default_rng(seed)
    dealt: list[list[int]] = [[] for _ in range(n_silos)]
    for cls in sorted(set(labels.tolist())):
        rows = rng.permutation([i for i, label in enumerate(labels) if label == cls]).tolist()
        shares = rng.dirichlet([alpha] * n_silos)
        bounds = [0]
        running = 0.0
        for share in shares[:-1]:
            running += share
            bounds.append(math.floor(running * len(rows)))
        bounds.append(len(rows))
        for silo in range(n_silos):
            dealt[silo].extend(rows[bounds[silo] : bounds[silo + 1]])
    final = [rng.permutation(np.array(rows, dtype=np.int64)).tolist() for rows in dealt]
    for small in [i for i in range(n_silos) if len(final[i]) < min_size]:
        while len(final[small]) < min_size:
            large = max(range(n_silos), key=lambda i: (len(final[i]), -i))  # first of the largest
            take = min(min_size - len(final[small]), len(final[large]) - min_size)
            final[small] += final[large][:take]
            final[large] = final[large][take:]
    return dealt, [sorted(rows) for rows in final]


def _class_counts(labels: np.ndarray, rows, n_classes: int) -> list[int]:
    return np.bincount(labels[np.asarray(rows, dtype=np.int64)], minlength=n_classes).tolist()


def test_dirichlet_split_for_a_seed_has_the_reference_sizes_and_class_counts() -> None:
    labels = np.array([0] * 30 + [1] * 14 + [2] * 6)
    got = dirichlet(labels, 4, 0.5, np.random.default_rng(7))
    _, final = _reference_dirichlet(labels, 4, 0.5, 7, 1)
    assert [p.tolist() for p in got] == final
    assert [_class_counts(labels, p, 3) for p in got] == [_class_counts(labels, f, 3) for f in final]
    assert sum(len(p) for p in got) == 50


def test_dirichlet_deals_each_class_only_its_own_rows() -> None:
    # With alpha tiny each class goes (almost) whole to one silo: the silo's label mix shows who was dealt what.
    labels = np.array([0] * 20 + [1] * 20)
    got = dirichlet(labels, 2, 1e-3, np.random.default_rng(0))
    dealt, _ = _reference_dirichlet(labels, 2, 1e-3, 0, 1)
    for part, rows in zip(got, dealt, strict=True):
        assert sorted(part.tolist()) == sorted(rows)
        assert _class_counts(labels, part, 2) == _class_counts(labels, rows, 2)


def test_dirichlet_top_up_takes_from_the_largest_silo_without_sinking_it_below_min_size() -> None:
    # seed 3, alpha 0.05: silos left near-empty by the draw are topped up to exactly min_size
    labels = np.array([0] * 25 + [1] * 15)
    dealt, final = _reference_dirichlet(labels, 5, 0.05, 3, 6)
    assert min(len(rows) for rows in dealt) < 6  # the case really needs a top-up
    got = dirichlet(labels, 5, 0.05, np.random.default_rng(3), min_size=6)
    assert [p.tolist() for p in got] == final
    assert min(len(p) for p in got) >= 6


_labels = st.lists(st.integers(0, 2), min_size=2, max_size=60).map(np.array)


@settings(max_examples=200, deadline=None)
@given(
    labels=_labels,
    n_silos=st.integers(1, 8),
    alpha=st.sampled_from([0.01, 0.1, 0.5, 1.0, 10.0]),
    seed=st.integers(0, 2**16),
    min_size=st.integers(1, 8),
)
@example(labels=np.array([0] * 8 + [1] * 7), n_silos=3, alpha=0.01, seed=1, min_size=5)
def test_dirichlet_top_up_invariants(labels, n_silos: int, alpha: float, seed: int, min_size: int) -> None:
    assume(n_silos * min_size <= len(labels))
    got = [p.tolist() for p in dirichlet(labels, n_silos, alpha, np.random.default_rng(seed), min_size=min_size)]
    dealt, final = _reference_dirichlet(labels, n_silos, alpha, seed, min_size)
    assert sorted(i for p in got for i in p) == list(range(len(labels)))  # every row exactly once
    assert all(p == sorted(p) for p in got)
    assert all(len(p) >= min_size for p in got)  # receivers reach min_size, donors never sink below it
    for part, rows in zip(got, dealt, strict=True):
        if len(part) > len(rows):  # a receiver keeps all it was dealt
            assert set(rows) <= set(part)
        else:  # a donor (or an untouched silo) only gives rows away
            assert set(part) <= set(rows)
    assert got == final


@settings(max_examples=100, deadline=None)
@given(n_rows=st.integers(1, 200), n_silos=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_iid_cuts_a_seeded_permutation_into_array_split_sizes(n_rows: int, n_silos: int, seed: int) -> None:
    assume(n_silos <= n_rows)
    got = iid(n_rows, n_silos, np.random.default_rng(seed))
    base, extra = divmod(n_rows, n_silos)
    assert [len(p) for p in got] == [base + 1] * extra + [base] * (n_silos - extra)
    order = np.random.default_rng(seed).permutation(n_rows).tolist()
    start = 0
    for part in got:
        assert part.tolist() == sorted(order[start : start + len(part)])
        start += len(part)


@settings(max_examples=100, deadline=None)
@given(
    n_rows=st.integers(1, 200),
    n_silos=st.integers(1, 10),
    alpha=st.sampled_from([0.1, 0.5, 2.0]),
    seed=st.integers(0, 2**16),
    min_size=st.integers(1, 10),
)
def test_quantity_sizes_are_min_size_plus_a_multinomial_share(n_rows, n_silos, alpha, seed, min_size) -> None:
    assume(n_silos * min_size <= n_rows)
    got = quantity(n_rows, n_silos, alpha, np.random.default_rng(seed), min_size=min_size)
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet([alpha] * n_silos)
    sizes = [min_size + int(k) for k in rng.multinomial(n_rows - n_silos * min_size, shares)]
    order = rng.permutation(n_rows).tolist()
    assert [len(p) for p in got] == sizes
    start = 0
    for part, size in zip(got, sizes, strict=True):
        assert part.tolist() == sorted(order[start : start + size])
        start += size


def test_partitions_allow_silos_of_one_row_by_default() -> None:
    labels = np.array([0, 1, 0, 1, 1])
    for parts in (
        iid(5, 5, np.random.default_rng(0)),
        dirichlet(labels, 5, 1.0, np.random.default_rng(0)),
        quantity(5, 5, 1.0, np.random.default_rng(0)),
    ):
        assert sorted(len(p) for p in parts) == [1] * 5


@pytest.mark.parametrize("split", ["iid", "dirichlet", "quantity"])
def test_too_many_silos_for_min_size_is_refused_naming_the_split_and_the_limit(split: str) -> None:
    rng = np.random.default_rng(0)
    call = {
        "iid": lambda: iid(20, 4, rng, min_size=6),
        "dirichlet": lambda: dirichlet(np.zeros(20, dtype=int), 4, 0.5, rng, min_size=6),
        "quantity": lambda: quantity(20, 4, 0.5, rng, min_size=6),
    }[split]
    message = f"Cannot split 20 rows into 4 silos of at least 6 rows each ({split} split): use at most 3 silos."
    with pytest.raises(ConfigError, match=re.escape(message)):
        call()
    if split == "iid":
        assert len(iid(18, 3, rng, min_size=6)) == 3  # exactly n_silos * min_size rows is enough

"""Silos: per-silo train/test arrays from the UCI files, for every split fedkit offers.

Splits:

- ``hospitals``: one silo per hospital, each with its own seeded, stratified 66/34 train/test split;
  missing values imputed by default, so every patient is used (920 rows).
- ``flamby``: exactly the FLamby Fed-Heart-Disease protocol (rows with a missing value dropped,
  ``train_test_split(train_size=0.66, random_state=43)`` per center, stratified when both classes
  have more than 2 rows) → train/test 199/104, 172/89, 30/16, 85/45, whatever the seed.
- ``iid``, ``dirichlet`` (label skew, ``alpha``), ``quantity`` (size skew, ``alpha``): the four
  hospitals pooled, then partitioned into ``silos`` silos, each split 66/34 like a hospital.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedkit import seeding
from fedkit._validation import NONE, Interval, Options, validate_params
from fedkit.data import holdout, partition, preprocess, uci
from fedkit.errors import ConfigError
from fedkit.paths import data_dir as default_data_dir

SPLITS: tuple[str, ...] = ("hospitals", "flamby", "iid", "dirichlet", "quantity")
SYNTHETIC: tuple[str, ...] = ("iid", "dirichlet", "quantity")
MISSING: tuple[str, ...] = ("drop", "impute")
STANDARDIZE: tuple[str, ...] = ("silo", "federated", "none")
TRAIN_FRACTION = 0.66
FLAMBY_SPLIT_SEED = 43
MIN_SILO_ROWS = 6

DATA_CONSTRAINTS: dict[str, list[Any]] = {
    "split": [Options(SPLITS)],
    "silos": [Interval(int, 1, None), NONE],
    "alpha": [Interval(float, 0, None, closed="neither")],
    "missing": [Options(MISSING), NONE],
    "standardize": [Options(STANDARDIZE)],
    "seed": [Interval(int, 0, 2**32 - 1)],
    "verify": [Options((True, False))],
}


@dataclass(frozen=True)
class Silo:
    """One silo's data: float32 features and 0/1 labels, split into train and test.

    Parameters
    ----------
    name
        The silo's name.
    x_train
        Train features, shape (rows, features).
    y_train
        Train labels.
    x_test
        Test features, shape (rows, features).
    y_test
        Test labels.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_train(self) -> int:
        """Number of train rows (the silo's aggregation weight)."""
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        """Number of test rows."""
        return len(self.y_test)


@dataclass(frozen=True)
class Provenance:
    """Where the rows came from: folder, sha256 of each file, and whether they matched the pins.

    Parameters
    ----------
    directory
        The folder the files were read from.
    sha256
        Each file's sha256, by file name.
    verified
        Whether the files matched their pins.
    """

    directory: str
    sha256: dict[str, str]
    verified: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, recorded with every run."""
        return {"directory": self.directory, "sha256": dict(self.sha256), "verified": self.verified}


@dataclass(frozen=True)
class Federation:
    """The silos of one split, the feature names, and the data provenance.

    Parameters
    ----------
    silos
        The silos, in order.
    features
        The feature names (the columns of every silo's ``x``).
    split
        How rows became silos.
    provenance
        Where the rows came from.
    options
        The data options it was built with (missing, standardize, alpha...).
    train_moments
        Each silo's train moments (``standardize="federated"``), else None.
    """

    silos: tuple[Silo, ...]
    features: tuple[str, ...]
    split: str
    provenance: Provenance
    options: dict[str, Any] = field(default_factory=dict)
    train_moments: tuple[preprocess.Moments, ...] | None = None
    """Per silo, the moments of the raw train rows its standardization used (None: not known)."""

    @property
    def names(self) -> tuple[str, ...]:
        """Silo names in order."""
        return tuple(s.name for s in self.silos)

    def summary(self) -> list[dict[str, Any]]:
        """One dict per silo: rows, positives and the train/test sizes."""
        return [
            {
                "silo": s.name,
                "rows": s.n_train + s.n_test,
                "positives": int(s.y_train.sum() + s.y_test.sum()),
                "positive_rate": float((s.y_train.sum() + s.y_test.sum()) / (s.n_train + s.n_test)),
                "train": s.n_train,
                "test": s.n_test,
            }
            for s in self.silos
        ]


def train_test_indices(labels: np.ndarray, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """FLamby's per-center split: 66/34, stratified when both classes have more than 2 rows (sorted indices).

    Parameters
    ----------
    labels
        The center's 0/1 labels.
    random_state
        scikit-learn's ``random_state`` (43 in FLamby).
    """
    levels, counts = np.unique(labels, return_counts=True)
    return holdout.split(labels, TRAIN_FRACTION, random_state, stratify=len(levels) > 1 and bool((counts > 2).all()))


def check_data_options(split: str, silos: int | None, missing: str | None, caller: str) -> str:
    """Cross-field rules of the data options; returns the missing-value policy in force.

    Parameters
    ----------
    split
        How rows become silos.
    silos
        Number of silos of a synthetic split.
    missing
        Missing-value policy, or None for the split's default.
    caller
        The public function's name, for the message.

    Raises
    ------
    ConfigError
        When the options disagree with the split.
    """
    if split not in SYNTHETIC and silos not in (None, len(uci.HOSPITALS)):
        raise ConfigError(
            f"The 'silos' parameter of {caller} must be None or 4 with split={split!r} (one silo per "
            f"hospital); got {silos!r}. Use split='iid', 'dirichlet' or 'quantity' for another number of silos."
        )
    if split == "flamby":
        if missing not in (None, "drop"):
            raise ConfigError(
                f"The 'missing' parameter of {caller} must be 'drop' or None with split='flamby': the "
                f"FLamby protocol drops rows with a missing value; got {missing!r}. Use "
                "split='hospitals' to keep every patient with imputation."
            )
        return "drop"
    return missing or "impute"


def _finish(
    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], standardize: str
) -> tuple[list[Silo], list[preprocess.Moments]]:
    """Standardize each silo's (x_train, y_train, x_test, y_test) and cast to float32; also the train moments."""
    local = [preprocess.moments(xtr) for _, xtr, _, _, _ in parts]
    shared = preprocess.mean_std(preprocess.combine(local)) if standardize == "federated" else None
    silos = []
    for (name, xtr, ytr, xte, yte), m in zip(parts, local, strict=True):
        mean, std = shared or preprocess.mean_std(m)
        scale = None if standardize == "none" else std
        silos.append(
            Silo(
                name,
                preprocess.standardize(xtr, mean, scale).astype(np.float32),
                ytr.astype(np.float32),
                preprocess.standardize(xte, mean, scale).astype(np.float32),
                yte.astype(np.float32),
            )
        )
    return silos, local


def load_silos(
    split: str = "flamby",
    *,
    silos: int | None = None,
    alpha: float = 0.5,
    missing: str | None = None,
    standardize: str = "silo",
    seed: int = 42,
    verify: bool = True,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Federation:
    """Load the UCI Heart Disease files and build the silos of ``split``.

    Parameters
    ----------
    split
        How rows become silos: ``flamby``, ``hospitals`` or a synthetic split (``iid``, ``dirichlet``,
        ``quantity``).
    silos
        Number of silos of a synthetic split (default 4); None or 4 for ``hospitals`` and ``flamby``.
    alpha
        Dirichlet concentration of the dirichlet/quantity splits; smaller = more skew.
    missing
        Missing-value policy: ``drop`` or ``impute`` (default: drop for flamby, impute otherwise).
    standardize
        ``"silo"`` (each silo with its own train mean/std, FLamby), ``"federated"`` (global mean/std from per-silo
        sums and counts: no row leaves a silo) or ``"none"``.
    seed
        Seed of the split.
    verify
        Check data files against pinned sha256.
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else ``~/.cache/fedkit/heart-disease``).
    download
        Download missing files (verified).

    Raises
    ------
    ConfigError
        When an option is not allowed or does not fit the split.
    DataError
        When a file is missing, does not match its pin, or is malformed.
    """
    validate_params(
        {
            "split": split,
            "silos": silos,
            "alpha": alpha,
            "missing": missing,
            "standardize": standardize,
            "seed": seed,
            "verify": verify,
        },
        DATA_CONSTRAINTS,
        "load_silos",
    )
    missing = check_data_options(split, silos, missing, "load_silos")
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    digests = uci.ensure_files(directory, verify=verify, download_missing=download)
    tables = {h: preprocess.select(uci.read_hospital(directory, h), h, missing) for h in uci.HOSPITALS}
    rng = seeding.stream(seed, seeding.DATA)

    groups: list[tuple[str, np.ndarray]]
    if split in SYNTHETIC:
        pooled = np.concatenate(list(tables.values()))
        labels = (pooled[:, -1] > 0).astype(int)
        k = silos or len(uci.HOSPITALS)
        if split == "iid":
            index = partition.iid(len(pooled), k, rng, MIN_SILO_ROWS)
        elif split == "dirichlet":
            index = partition.dirichlet(labels, k, alpha, rng, MIN_SILO_ROWS)
        else:
            index = partition.quantity(len(pooled), k, alpha, rng, MIN_SILO_ROWS)
        width = len(str(k - 1))
        groups = [(f"silo_{i:0{width}d}", pooled[rows]) for i, rows in enumerate(index)]
    else:
        groups = list(tables.items())

    parts = []
    for name, table in groups:
        x, y = preprocess.encode(table)
        state = FLAMBY_SPLIT_SEED if split == "flamby" else int(rng.integers(2**31 - 1))
        train, test = train_test_indices(y, state)
        parts.append((name, x[train], y[train], x[test], y[test]))

    finished, moments = _finish(parts, standardize)
    return Federation(
        silos=tuple(finished),
        features=preprocess.FEATURES,
        split=split,
        provenance=Provenance(str(directory.resolve()), digests, verify),
        options={"silos": len(parts), "alpha": alpha, "missing": missing, "standardize": standardize, "seed": seed},
        train_moments=tuple(moments),
    )


def validation_split(federation: Federation, *, seed: int, fold: int = 0, folds: int = 4) -> Federation:
    """Fold ``fold`` of a ``folds``-fold split of each silo's train rows: its validation rows replace the test set.

    For honest hyperparameter search: models are scored on rows that were train rows, never on the real test
    sets. Stratified when every class has at least ``folds`` rows; the train statistics used for
    standardization are unchanged.

    Parameters
    ----------
    federation
        The silos.
    seed
        Seed of the folds.
    fold
        Which fold validates, in ``[0, folds)``.
    folds
        Number of folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if not 0 <= fold < folds:
        raise ConfigError(f"The 'fold' parameter of validation_split must be in [0, {folds}); got {fold}.")
    silos = []
    for i, s in enumerate(federation.silos):
        _, counts = np.unique(s.y_train, return_counts=True)
        stratified = len(counts) > 1 and counts.min() >= folds
        splitter = (StratifiedKFold if stratified else KFold)(
            n_splits=folds, shuffle=True, random_state=seed * 1000 + i
        )
        train, val = list(splitter.split(s.x_train, s.y_train))[fold]
        silos.append(Silo(s.name, s.x_train[train], s.y_train[train], s.x_train[val], s.y_train[val]))
    options = {**federation.options, "validation_fold": f"{fold}/{folds}"}
    return replace(federation, silos=tuple(silos), options=options)  # standardization statistics unchanged

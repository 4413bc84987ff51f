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

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from fedkit import seeding
from fedkit._validation import NONE, Interval, Options, validate_params
from fedkit.data import holdout, partition, preprocess, uci
from fedkit.data.schema import UCI_HEART_DISEASE, Schema, load_schema, uci_not_measured
from fedkit.data.sitefile import Codes, SiteData, read_site_bytes, read_site_file, read_site_frame
from fedkit.errors import ConfigError
from fedkit.paths import data_dir as default_data_dir

if TYPE_CHECKING:
    import pandas as pd

SPLITS: tuple[str, ...] = ("hospitals", "flamby", "iid", "dirichlet", "quantity")
SYNTHETIC: tuple[str, ...] = ("iid", "dirichlet", "quantity")
SKEWED: tuple[str, ...] = ("dirichlet", "quantity")
"""The splits ``alpha`` shapes (label skew, size skew); the others ignore it."""
MISSING: tuple[str, ...] = preprocess.MISSING_POLICIES
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


class Part(NamedTuple):
    """One silo's rows split into train and test, before standardization (float64, NaN where missing).

    Parameters
    ----------
    name
        The silo's name.
    x_train
        Its train features (float64, NaN where missing).
    y_train
        Its train labels.
    x_test
        Its test features (float64, NaN where missing).
    y_test
        Its test labels.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def holdout_state(split: str, seed: int, index: int) -> int:
    """The ``random_state`` of the train/test split of silo ``index`` (its place in the federation).

    FLamby's fixed 43 for ``flamby``; else the ``index``-th draw of the seed's data stream, so a
    remote site computes its own split from its own rows and its index alone.

    Parameters
    ----------
    split
        The federation's split (``flamby`` uses FLamby's fixed state).
    seed
        The run's seed.
    index
        The silo's index in the federation.
    """
    if split == "flamby":
        return FLAMBY_SPLIT_SEED
    rng = seeding.stream(seed, seeding.DATA)
    for _ in range(index):
        rng.integers(2**31 - 1)
    return int(rng.integers(2**31 - 1))


def split_part(name: str, x: np.ndarray, y: np.ndarray, state: int) -> Part:
    """Silo ``name``'s rows split 66/34 by :func:`train_test_indices` with ``state``.

    Parameters
    ----------
    name
        The silo's name.
    x
        Its features, one row per patient.
    y
        Its 0/1 labels.
    state
        The split's ``random_state`` (:func:`holdout_state`).
    """
    train, test = train_test_indices(y, state)
    return Part(name, x[train], y[train], x[test], y[test])


def finish_silo(part: Part, scaling: preprocess.Moments, standardize: str) -> Silo:
    """The float32 silo of ``part``, standardized with the mean/std of ``scaling`` (its own or the federation's).

    Parameters
    ----------
    part
        The silo's rows split into train and test.
    scaling
        The train moments to standardize with (the silo's own or the federation's summed ones).
    standardize
        ``silo``, ``federated`` or ``none`` (``none``: missing values get the mean, no scaling).
    """
    mean, std = preprocess.mean_std(scaling)
    scale = None if standardize == "none" else std
    return Silo(
        part.name,
        preprocess.standardize(part.x_train, mean, scale).astype(np.float32),
        part.y_train.astype(np.float32),
        preprocess.standardize(part.x_test, mean, scale).astype(np.float32),
        part.y_test.astype(np.float32),
    )


def _finish(parts: list[Part], standardize: str) -> tuple[list[Silo], list[preprocess.Moments]]:
    """Standardize each silo (its own moments, or the federation's summed ones) and cast to float32."""
    local = [preprocess.moments(p.x_train) for p in parts]
    shared = preprocess.combine(local) if standardize == "federated" else None
    return [finish_silo(p, shared or m, standardize) for p, m in zip(parts, local, strict=True)], local


Source = Union[str, Path, "pd.DataFrame"]
"""A silo's own data: a file path (UCI ``.data`` format or a CSV with a header) or a pandas DataFrame."""


def read_source(
    name: str, source: Source, schema: Schema, *, missing: str, not_measured: Codes | None = None
) -> SiteData:
    """Silo ``name``'s rows read from ``source`` and checked against ``schema`` (errors name file, row, column).

    Parameters
    ----------
    name
        The silo's name (in errors about a data frame).
    source
        Its file path (UCI ``.data`` format or CSV with a header) or DataFrame.
    schema
        The federation's schema.
    missing
        ``drop`` or ``impute``.
    not_measured
        The codes its file writes for "not measured" (``{"chol": [0]}``), else None.
    """
    if isinstance(source, str | Path):
        return read_site_file(source, schema, missing=missing, not_measured=not_measured)
    return read_site_frame(source, schema, missing=missing, not_measured=not_measured, source=f"silo {name!r}")


def _own_data(
    data: Mapping[str, Source],
    schema: Schema | str | Path | None,
    not_measured: Mapping[str, Codes] | None,
    missing: str,
) -> tuple[list[tuple[str, SiteData]], Schema, Provenance]:
    if not isinstance(data, Mapping) or not data or not all(isinstance(k, str) and k for k in data):
        raise ConfigError(
            "The 'data' parameter of load_silos must map silo names (non-empty strings) to a file path or a "
            f"DataFrame, e.g. {{'site-a': 'a.csv', 'site-b': 'b.csv'}}; got {data!r}."
        )
    schema = resolve_schema(schema)
    unknown = sorted(set(not_measured or {}) - set(data))
    if unknown:
        raise ConfigError(
            f"The 'not_measured' parameter of load_silos names silo(s) {unknown} that are not in data "
            f"({', '.join(data)}); key it by silo name."
        )
    read = [
        (name, read_source(name, src, schema, missing=missing, not_measured=(not_measured or {}).get(name)))
        for name, src in data.items()
    ]
    sha = {name: site.sha256 or "data frame" for name, site in read}
    verified = schema == UCI_HEART_DISEASE and all(uci.pinned(Path(site.source).name, site.sha256) for _, site in read)
    where = ", ".join(f"{name}={site.source}" for name, site in read)
    return read, schema, Provenance(f"own data: {where}", sha, verified)


def resolve_schema(schema: Schema | str | Path | None) -> Schema:
    """``schema`` itself, the schema in a YAML/JSON file, or the built-in UCI Heart Disease schema for None.

    Parameters
    ----------
    schema
        A :class:`~fedkit.data.schema.Schema`, a YAML/JSON file of it, or None.
    """
    if schema is None:
        return UCI_HEART_DISEASE
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, str | Path):
        return load_schema(schema)
    raise ConfigError(f"The 'schema' parameter must be a Schema, a YAML/JSON file path or None; got {schema!r}.")


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
    data: Mapping[str, Source] | None = None,
    schema: Schema | str | Path | None = None,
    not_measured: Mapping[str, Codes] | None = None,
) -> Federation:
    """Load the UCI Heart Disease files, or each silo's own data, and build the silos of ``split``.

    Parameters
    ----------
    split : str
        ``flamby``, ``hospitals`` (one silo per hospital or per ``data`` entry) or a synthetic
        split (``iid``, ``dirichlet``, ``quantity``: the UCI rows pooled, never own data).
    silos : int or None
        Number of silos of a synthetic split (default 4); None or 4 for ``hospitals`` and ``flamby``.
    alpha : float
        Dirichlet concentration of the ``dirichlet`` and ``quantity`` splits.
    missing : str or None
        ``drop`` or ``impute`` (default: drop for flamby, impute otherwise).
    standardize : str
        ``silo`` (each silo with its own train mean/std, FLamby), ``federated`` (mean/std from the
        silos' summed counts, sums and sums of squares: no row leaves a silo) or ``none``.
    seed : int
        Seed of the synthetic partition and of the ``hospitals`` train/test splits.
    verify : bool
        Check the UCI files against their pinned sha256.
    data_dir : str, Path or None
        Folder of the UCI files (default ``$FEDKIT_DATA_DIR``, else the verified download).
    download : bool
        Download missing UCI files.
    data : mapping or None
        Own data: silo name -> file path (UCI ``.data`` format or CSV with a header) or DataFrame,
        each read once and checked against ``schema`` (errors name the file, row and column).
    schema : Schema, str, Path or None
        The federation's schema, or a YAML/JSON file of it (default: the UCI Heart Disease schema).
    not_measured : mapping or None
        Per silo of ``data``, the codes its file writes for "not measured" (``{"va": {"chol": [0]}}``).

    Returns
    -------
    Federation
        The silos, feature names and data provenance (the sha256 of every byte parsed).
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
    if data is not None:
        if split in SYNTHETIC:
            raise ConfigError(
                f"The 'data' parameter of load_silos takes split 'flamby' or 'hospitals' (one silo per entry); got "
                f"split={split!r}, which pools the public UCI rows. Drop data= or change the split."
            )
        read, used, provenance = _own_data(data, schema, not_measured, missing)
    else:
        if schema is not None or not_measured is not None:
            raise ConfigError(
                "The 'schema' and 'not_measured' parameters of load_silos apply to own data (data=...); the "
                "built-in UCI splits use the UCI schema and each hospital's own not-measured codes."
            )
        directory = Path(data_dir) if data_dir is not None else default_data_dir()
        files = uci.read_files(directory, verify=verify, download_missing=download)
        used = UCI_HEART_DISEASE
        read = [(h, read_uci_bytes(h, raw, str(directory / uci.file_name(h)), missing)) for h, raw in files.items()]
        digests = {uci.file_name(h): site.sha256 or "" for h, site in read}
        provenance = Provenance(str(directory.resolve()), digests, verify)
    rng = seeding.stream(seed, seeding.DATA)

    parts: list[Part]
    if split in SYNTHETIC:
        x_all = np.concatenate([site.x for _, site in read])
        y_all = np.concatenate([site.y for _, site in read])
        labels = y_all.astype(int)
        k = silos or len(uci.HOSPITALS)
        if split == "iid":
            index = partition.iid(len(y_all), k, rng, MIN_SILO_ROWS)
        elif split == "dirichlet":
            index = partition.dirichlet(labels, k, alpha, rng, MIN_SILO_ROWS)
        else:
            index = partition.quantity(len(y_all), k, alpha, rng, MIN_SILO_ROWS)
        width = len(str(k - 1))
        parts = [
            split_part(f"silo_{i:0{width}d}", x_all[rows], y_all[rows], int(rng.integers(2**31 - 1)))
            for i, rows in enumerate(index)
        ]
    else:
        parts = [split_part(name, site.x, site.y, holdout_state(split, seed, i)) for i, (name, site) in enumerate(read)]

    finished, moments = _finish(parts, standardize)
    return Federation(
        silos=tuple(finished),
        features=used.feature_names,
        split=split,
        provenance=provenance,
        options={"silos": len(parts), "alpha": alpha, "missing": missing, "standardize": standardize, "seed": seed},
        train_moments=tuple(moments),
    )


@functools.lru_cache(maxsize=16)
def read_uci_bytes(hospital: str, raw: bytes, source: str, missing: str) -> SiteData:
    """One UCI hospital's file (its bytes, read once) against the UCI schema, with its own not-measured codes.

    Parsed once per process for the same bytes (a sweep loads the federation once per seed); the arrays
    of the result are read-only, so no caller can change what the next one gets.

    Parameters
    ----------
    hospital
        The hospital the file belongs to.
    raw
        The file's bytes.
    source
        The file's path (named in errors and in the provenance).
    missing
        ``drop`` or ``impute``.
    """
    site = read_site_bytes(
        raw, UCI_HEART_DISEASE, source=source, missing=missing, not_measured=uci_not_measured(hospital, missing)
    )
    site.x.setflags(write=False)
    site.y.setflags(write=False)
    return site


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
        state = int(seeding.stream(seed, seeding.VALIDATION, i).integers(2**32))  # any valid seed, any silo
        splitter = (StratifiedKFold if stratified else KFold)(n_splits=folds, shuffle=True, random_state=state)
        train, val = list(splitter.split(s.x_train, s.y_train))[fold]
        silos.append(Silo(s.name, s.x_train[train], s.y_train[train], s.x_train[val], s.y_train[val]))
    options = {**federation.options, "validation_fold": f"{fold}/{folds}"}
    return replace(federation, silos=tuple(silos), options=options)  # standardization statistics unchanged

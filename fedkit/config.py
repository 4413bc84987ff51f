"""RunConfig: every knob of a run, validated once, with errors that name the field and what is allowed."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from fedkit._validation import NONE, Interval, OfType, Options, did_you_mean, validate_params
from fedkit.architectures import MODELS
from fedkit.data.silos import (
    DATA_CONSTRAINTS,
    MISSING,
    SKEWED,
    SPLITS,
    STANDARDIZE,
    Federation,
    check_data_options,
    load_silos,
)
from fedkit.errors import ConfigError
from fedkit.strategies import BASELINES, HYPERPARAMETERS, STRATEGIES, options_of
from fedkit.training import OPTIMIZERS, LocalTraining

PERSONALIZE: tuple[str, ...] = ("none", "finetune", "fedper")
BACKENDS: tuple[str, ...] = ("vectorized", "torch")
ENGINES: tuple[str, ...] = ("simulation", "remote")
REMOTE_SPLITS: tuple[str, ...] = ("flamby", "hospitals")
DEFAULT_LOCAL_STEPS = 100
DP_MODES: tuple[str, ...] = ("none", "central", "distributed", "dpsgd")
CLIENT_LEVEL: tuple[str, ...] = ("central", "distributed")
"""The DP modes that protect a whole silo (client-level DP-FedAvg, McMahan et al. 2018); ``dpsgd`` protects a row."""
DEFAULT_DP_DELTA = 1e-3
DEFAULT_DP_CLIP: dict[str, float] = {"central": 0.05, "distributed": 0.05, "dpsgd": 1.0}
"""The clip norm C when ``dp_clip`` is unset: about the median norm of a silo's update at FLamby's defaults
(client level), and of a logistic regression's per-example gradient (DP-SGD)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def silos_per_round(n_silos: int, fraction: float) -> int:
    """How many of ``n_silos`` a round trains: ``max(1, fraction * n_silos)`` rounded half up.

    Parameters
    ----------
    n_silos
        The federation's silos.
    fraction
        Fraction of silos sampled each round, in (0, 1].
    """
    return max(1, math.floor(fraction * n_silos + 0.5))


@dataclass(frozen=True)
class RunConfig:
    """A federated run. Defaults are FLamby's Fed-Heart-Disease FedAvg benchmark configuration.

    Raises
    ------
    ConfigError
        When a field's value is not allowed, or fields disagree (``RULES``); the message names the field and the
        fix.
    ConfigTypeError
        When a field has the wrong type.
    """

    split: str = field(default="flamby", metadata=_help(f"how rows become silos: {', '.join(SPLITS)}"))
    silos: int | None = field(default=None, metadata=_help("number of silos of a synthetic split (default 4)"))
    alpha: float = field(
        default=0.5, metadata=_help("Dirichlet concentration of the dirichlet/quantity splits; smaller = more skew")
    )
    missing: str | None = field(
        default=None,
        metadata=_help(f"missing-value policy: {', '.join(MISSING)} (default: drop for flamby, impute otherwise)"),
    )
    standardize: str = field(default="silo", metadata=_help(f"feature scaling: {', '.join(STANDARDIZE)}"))
    model: str = field(default="logreg", metadata=_help(f"model: {', '.join(MODELS)}"))
    hidden: int = field(default=16, metadata=_help("hidden units of the mlp model"))
    strategy: str = field(default="fedavg", metadata=_help(f"aggregation strategy: {', '.join(STRATEGIES)}"))
    server_lr: float | None = field(
        default=None, metadata=_help("server learning rate (fedavgm, scaffold, fedadam, fedyogi, fedadagrad)")
    )
    server_momentum: float | None = field(default=None, metadata=_help("server momentum (fedavgm)"))
    mu: float | None = field(default=None, metadata=_help("proximal term weight (fedprox)"))
    beta1: float | None = field(default=None, metadata=_help("first-moment decay (fedadam, fedyogi, fedadagrad)"))
    beta2: float | None = field(default=None, metadata=_help("second-moment decay (fedadam, fedyogi)"))
    tau: float | None = field(default=None, metadata=_help("adaptivity / epsilon (fedadam, fedyogi, fedadagrad)"))
    trim_beta: float | None = field(default=None, metadata=_help("fraction trimmed at each end (trimmedmean)"))
    byzantine: int | None = field(default=None, metadata=_help("number of Byzantine silos tolerated (krum)"))
    krum_m: int | None = field(default=None, metadata=_help("silos averaged by multi-Krum (krum; 1 = Krum)"))
    personalize: str = field(
        default="none",
        metadata=_help(
            "personalized models per silo: none, finetune (FedAvg + local fine-tuning), "
            "fedper (per-silo output layer; bias for logreg)"
        ),
    )
    finetune_steps: int | None = field(
        default=None,
        metadata=_help("local fine-tuning steps with --personalize finetune (default: one round of local steps)"),
    )
    backend: str = field(
        default="vectorized",
        metadata=_help("simulation trainer: vectorized (numpy, all silos per step) or torch (per silo)"),
    )
    engine: str = field(
        default="simulation",
        metadata=_help(
            "simulation (every silo in this process) or remote (one NVIDIA FLARE site per hospital; needs --admin-kit)"
        ),
    )
    rounds: int = field(default=15, metadata=_help("federated rounds"))
    fraction: float = field(default=1.0, metadata=_help("fraction of silos sampled each round, in (0, 1]"))
    min_silos: int = field(
        default=1,
        metadata=_help("fewest silos whose updates a round may aggregate: fewer replies or valid updates fail the run"),
    )
    dropout: float = field(
        default=0.0,
        metadata=_help("simulated faults: probability that a selected silo vanishes from a round (simulation)"),
    )
    straggler_timeout: float | None = field(
        default=None,
        metadata=_help(
            "seconds to wait for the other silos once --min-silos replied; later ones are dropped from the round "
            "(None: 10 s with the remote engine, no simulated stragglers in the simulation)"
        ),
    )
    max_update_norm: float | None = field(
        default=None, metadata=_help("reject a silo update whose L2 norm exceeds this (None: no absolute bound)")
    )
    max_norm_ratio: float | None = field(
        default=None,
        metadata=_help("reject a silo update whose L2 norm exceeds this multiple of the round's median norm"),
    )
    local_steps: int | None = field(
        default=None,
        metadata=_help(f"optimizer steps per silo per round (default {DEFAULT_LOCAL_STEPS} unless --local-epochs)"),
    )
    local_epochs: int | None = field(
        default=None, metadata=_help("passes over the silo's train set per round (instead of --local-steps)")
    )
    batch_size: int = field(default=4, metadata=_help("local batch size"))
    lr: float = field(default=0.001, metadata=_help("local learning rate"))
    optimizer: str = field(default="sgd", metadata=_help(f"local optimizer: {', '.join(OPTIMIZERS)}"))
    momentum: float = field(default=0.0, metadata=_help("SGD momentum (sgd only)"))
    weight_decay: float = field(default=0.0, metadata=_help("L2 weight decay of the local optimizer"))
    seed: int = field(default=42, metadata=_help("seed of the data split, model init, batches and silo sampling"))
    verify: bool = field(
        default=True,
        metadata=_help("check data files against pinned sha256 (--no-verify to use other files; recorded)"),
    )
    data: dict[str, str] | None = field(
        default=None,
        metadata=_help(
            "own data, silo name to file, e.g. --data a=a.csv --data b=b.csv (simulation; a remote site passes "
            "its own file to fedkit remote start --data)"
        ),
    )
    schema: str | None = field(
        default=None, metadata=_help("YAML/JSON schema file of own data (default: the built-in UCI Heart Disease one)")
    )
    not_measured: dict[str, dict[str, list[float | str]]] | None = field(
        default=None, metadata=_help("per silo of data, the values its file writes for not measured, e.g. va:chol=0")
    )
    secure_aggregation: bool | None = field(
        default=None,
        metadata=_help(
            "sum the silos' updates and evaluation statistics under secure aggregation (Bonawitz et al. 2017), "
            "so the server learns only sums (default: on for engine remote, off in simulation)"
        ),
    )
    dp: str = field(
        default="none",
        metadata=_help(
            "differential privacy: none; central (each silo's update clipped, the server adds Gaussian noise to "
            "the sum); distributed (each silo clips and adds its share of the noise before secure aggregation); "
            "dpsgd (record-level DP-SGD inside each silo)"
        ),
    )
    dp_epsilon: float | None = field(
        default=None,
        metadata=_help("the epsilon to reach at --dp-delta after the run's rounds: fedkit solves the noise multiplier"),
    )
    dp_delta: float | None = field(
        default=None,
        metadata=_help(
            f"delta of (epsilon, delta)-DP, below 1/n: n = silos (central, distributed) or the smallest silo's "
            f"train rows (dpsgd) (default {DEFAULT_DP_DELTA} with --dp)"
        ),
    )
    dp_noise_multiplier: float | None = field(
        default=None, metadata=_help("noise std over the clip norm, instead of --dp-epsilon")
    )
    dp_clip: float | None = field(
        default=None,
        metadata=_help(
            "L2 clip norm of each silo's update (central, distributed: 0.05 when unset) or of each example's "
            "gradient (dpsgd: 1.0 when unset)"
        ),
    )

    def __post_init__(self) -> None:
        validate_params({f.name: getattr(self, f.name) for f in fields(self)}, CONSTRAINTS, "RunConfig")
        if self.secure_aggregation is None:  # private by default across organizations
            object.__setattr__(self, "secure_aggregation", self.engine == "remote")
        for rule in RULES:
            rule(self)
        if self.local_steps is None and self.local_epochs is None:
            object.__setattr__(self, "local_steps", DEFAULT_LOCAL_STEPS)
        if self.dp != "none":  # the defaults DP runs with, recorded with the run
            if self.dp_delta is None:
                object.__setattr__(self, "dp_delta", DEFAULT_DP_DELTA)
            if self.dp_clip is None:
                object.__setattr__(self, "dp_clip", DEFAULT_DP_CLIP[self.dp])

    @property
    def strategy_options(self) -> dict[str, Any]:
        """The hyperparameters this run sets for its strategy (unset ones take the strategy's default)."""
        return {name: getattr(self, name) for name in options_of(self.strategy) if getattr(self, name) is not None}

    @property
    def local(self) -> LocalTraining:
        """The local-training hyperparameters of this run (the RunConfig fields of the same names)."""
        return LocalTraining(**{f.name: getattr(self, f.name) for f in fields(LocalTraining)})

    @property
    def scored(self) -> str:
        """The model this run is scored with, ``"personal"`` or ``"global"`` (see :func:`scored_model`)."""
        return scored_model(vars(self))

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-ready."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}  # asdict's result, 3x faster

    def in_use(self) -> dict[str, Any]:
        """The fields that shape this run, in field order: unset (None) ones are left out, and so are those
        its other fields make inert (``alpha`` outside the dirichlet / quantity splits, ``hidden`` outside
        the mlp model).
        """
        inert = {"alpha"} if self.split not in SKEWED else set()
        inert |= {"hidden"} if self.model != "mlp" else set()
        return {k: v for k, v in self.to_dict().items() if v is not None and k not in inert}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a mapping; unknown keys are rejected with the closest valid name.

        Parameters
        ----------
        values
            RunConfig fields by name.

        Raises
        ------
        ConfigError
            When a key is not a field (the message suggests the closest one) or a value is not allowed.
        """
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                hint = did_you_mean(key, names)
                raise ConfigError(f"RunConfig has no field {key!r}.{hint} Valid fields: {', '.join(names)}.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Build from a YAML or JSON file holding a mapping of RunConfig fields.

        Parameters
        ----------
        path
            The YAML (.yaml/.yml) or JSON file.

        Raises
        ------
        ConfigError
            When the file is missing or malformed, or its fields are not allowed.
        """
        return cls.from_dict(read_config_file(path))


def with_changes(values: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (RunConfig fields) with ``changes``; changing ``local_steps`` or ``local_epochs`` unsets the other.

    The two say one budget two ways, so a preset's ``local_steps`` gives way to a flag's ``--local-epochs``
    (and a sweep's grid value to its base) instead of clashing with it.

    Parameters
    ----------
    values
        RunConfig fields (a preset, a file, a sweep's base).
    changes
        The fields that override them.

    Returns
    -------
    dict
        The merged fields (neither input is modified).
    """
    out = dict(values)
    for name, other in (("local_epochs", "local_steps"), ("local_steps", "local_epochs")):
        if name in changes and other not in changes:
            out.pop(other, None)
    out.update(changes)
    return out


def scored_model(config: Mapping[str, Any]) -> str:
    """The model a run of ``config`` (RunConfig fields, e.g. a recorded run's) is scored with: personal or global.

    Each silo's own model when it has one: with ``personalize`` (FedPer's personal head, or the global model
    fine-tuned on the silo) and for the ``local`` baseline (nothing shared).

    Parameters
    ----------
    config
        RunConfig fields (e.g. a recorded run's).
    """
    personal = config.get("personalize", "none") != "none" or config.get("strategy") == "local"
    return "personal" if personal else "global"


def load_federation(config: RunConfig, *, data_dir: str | Path | None = None) -> Federation:
    """The federation ``config`` describes: its split, silos, missing values, scaling and seed (see :func:`load_silos`).

    Parameters
    ----------
    config
        The run.
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).

    Raises
    ------
    DataError
        When the files are missing or do not match their pinned checksums.
    """
    own = {name: getattr(config, name) for name in ("data", "schema", "not_measured")}
    return load_silos(**{name: getattr(config, name) for name in DATA_CONSTRAINTS}, **own, data_dir=data_dir)


@dataclass(frozen=True)
class Personalization:
    """What each silo keeps or redoes for itself in a run scored with ``"personal"`` models.

    Parameters
    ----------
    personal
        The parameters a silo keeps and never sends: FedPer's head (Arivazhagan et al. 2019), or all of them for the
        ``local`` baseline; None when all are shared.
    finetune_steps
        Local steps each silo fine-tunes the global model for before it is scored (``personalize="finetune"``); None
        otherwise.
    """

    personal: np.ndarray | None = None
    finetune_steps: int | None = None


def personalization(
    config: RunConfig, train_sizes: Sequence[int], n_params: int, head: Callable[[], np.ndarray]
) -> Personalization:
    """The personalization of ``config`` for silos of ``train_sizes`` rows and a model of ``n_params`` parameters.

    Fine-tuning takes ``finetune_steps``, else one round of local steps of the smallest silo.

    Parameters
    ----------
    config
        The run.
    train_sizes
        Train rows of each silo.
    n_params
        Number of model parameters.
    head
        Gives the model's FedPer mask (called only with ``personalize="fedper"``).
    """
    personal = None
    if config.strategy == "local":
        personal = np.ones(n_params, dtype=bool)
    elif config.personalize == "fedper":
        personal = head()
    finetune = None
    if config.personalize == "finetune":
        finetune = config.finetune_steps or config.local.n_steps(min(train_sizes))
    return Personalization(personal, finetune)


# -- cross-field rules, checked in this order by RunConfig.__post_init__ -------------------------------


@dataclass(frozen=True)
class OnlyWith:
    """A field that may leave its ``unset`` value only when another field has one of ``values``.

    Parameters
    ----------
    field
        The field the rule is about.
    unset
        Its value when not set.
    other
        The field it depends on.
    values
        The values of ``other`` that allow ``field`` to be set.
    allowed
        What allows it, in words for the message (e.g. ``"optimizer='sgd'"``).
    fix
        What to do, for the message.
    """

    field: str
    unset: Any
    other: str
    values: tuple[Any, ...]
    allowed: str
    fix: str = "Remove it or change it."

    def __call__(self, config: RunConfig) -> None:
        """Raise a ConfigError naming both fields when ``config`` breaks the rule.

        Parameters
        ----------
        config
            The run to check.
        """
        value, other = getattr(config, self.field), getattr(config, self.other)
        if value != self.unset and other not in self.values:
            raise ConfigError(
                f"The {self.field!r} parameter of RunConfig only applies to {self.allowed}; got "
                f"{self.field}={value} with {self.other}={other!r}. {self.fix}"
            )


def one_local_budget(config: RunConfig) -> None:
    """``local_steps`` and ``local_epochs`` are two ways to say the same thing: at most one is set.

    Parameters
    ----------
    config
        The run to check.
    """
    if config.local_steps is not None and config.local_epochs is not None:
        raise ConfigError(
            f"RunConfig got both local_steps={config.local_steps} and local_epochs={config.local_epochs}; "
            "set only one of them."
        )


def data_options(config: RunConfig) -> None:
    """The data fields agree with the split (see :func:`fedkit.data.silos.check_data_options`).

    Parameters
    ----------
    config
        The run to check.
    """
    check_data_options(config.split, config.silos, config.missing, "RunConfig")


def no_personal_baseline(config: RunConfig) -> None:
    """The baselines train no shared model, so there is nothing to personalize.

    Parameters
    ----------
    config
        The run to check.
    """
    if config.personalize != "none" and config.strategy in BASELINES:
        raise ConfigError(
            f"The 'personalize' parameter of RunConfig must be 'none' with strategy={config.strategy!r} "
            f"(a baseline); got {config.personalize!r}."
        )


def krum_has_enough_silos(config: RunConfig) -> None:
    """Krum scores each update against its K - byzantine - 2 nearest others: at least one is needed.

    Parameters
    ----------
    config
        The run to check.
    """
    if config.strategy != "krum":
        return
    per_round = silos_per_round(config.silos or 4, config.fraction)
    byzantine = config.byzantine or 0
    if per_round - byzantine - 2 < 1:
        raise ConfigError(
            f"Krum needs at least byzantine + 3 silos per round; with byzantine={byzantine} this run "
            f"trains {per_round} silo(s) per round (silos={config.silos or 4}, fraction={config.fraction}). "
            "Lower byzantine, raise fraction or use more silos."
        )


def scaffold_needs_plain_sgd(config: RunConfig) -> None:
    """SCAFFOLD's control update assumes plain local SGD and controls over every shared coordinate.

    Option II of Karimireddy et al. (2020), ``c_i+ = c_i - c + (x - y_i) / (K * lr)``, reads a
    silo's mean corrected gradient off ``K`` plain SGD steps of size ``lr``: Adam's or momentum's
    steps are not ``lr`` times a gradient, so the control would be wrong. With FedPer, the personal
    coordinates never reach the server, yet the control variates would span them.

    Parameters
    ----------
    config
        The config to check.

    Raises
    ------
    ConfigError
        With another optimizer than plain SGD, or with FedPer.
    """
    if config.strategy != "scaffold":
        return
    if config.optimizer != "sgd" or config.momentum != 0.0:
        raise ConfigError(
            "strategy='scaffold' needs optimizer='sgd' with momentum=0: its control variates are updated as "
            "c_i - c + (x - y_i) / (K * lr), which holds only for plain SGD steps; got "
            f"optimizer={config.optimizer!r}, momentum={config.momentum}. Use sgd without momentum, or another "
            "strategy (fedadam, fedyogi, fedadagrad for adaptive steps)."
        )
    if config.personalize == "fedper":
        raise ConfigError(
            "strategy='scaffold' cannot run with personalize='fedper': its control variates would span the personal "
            "head, which never reaches the server. Use personalize='finetune' or 'none', or another strategy."
        )


def enough_silos_per_round(config: RunConfig) -> None:
    """A round cannot need more silos (``min_silos``) than it selects.

    Parameters
    ----------
    config
        The config to check.
    """
    per_round = 1 if config.strategy == "pooled" else silos_per_round(config.silos or 4, config.fraction)
    if config.min_silos > per_round:
        raise ConfigError(
            f"The 'min_silos' parameter of RunConfig is {config.min_silos} but this run trains {per_round} silo(s) "
            f"per round (strategy={config.strategy!r}, silos={config.silos or 4}, fraction={config.fraction}). "
            "Lower min_silos or raise fraction."
        )


def remote_runs_hospitals(config: RunConfig) -> None:
    """The remote engine runs one FLARE site per hospital, and no rows leave a site.

    Parameters
    ----------
    config
        The run to check.
    """
    if config.engine == "remote" and (config.split not in REMOTE_SPLITS or config.strategy == "pooled"):
        raise ConfigError(
            f"engine='remote' runs one site per hospital, so it needs split in {REMOTE_SPLITS} and a strategy "
            f"other than 'pooled' (which moves rows off the silos); got split={config.split!r}, "
            f"strategy={config.strategy!r}. Use engine='simulation' for that run."
        )


NEEDS_EACH_UPDATE: tuple[str, ...] = ("fedmedian", "trimmedmean", "krum")
"""Robust strategies that read every silo's update (median, trimmed mean, Krum): impossible under secure aggregation."""


def secure_sum_only(config: RunConfig) -> None:
    """Secure aggregation shows the server only sums: refuse strategies that need each update, and ``pooled``.

    Parameters
    ----------
    config
        The run.
    """
    if not config.secure_aggregation:
        return
    if config.strategy in NEEDS_EACH_UPDATE or config.strategy == "pooled":
        why = (
            "moves every silo's rows into one place: there is nothing to sum"
            if config.strategy == "pooled"
            else "needs each silo's update, while secure aggregation shows the server only their sum"
        )
        default = " (on by default with engine='remote')" if config.engine == "remote" else ""
        raise ConfigError(
            f"strategy={config.strategy!r} cannot run with secure_aggregation=True{default}: it {why}. Use a "
            "strategy whose server step needs only the weighted sum (fedavg, fedprox, fedavgm, scaffold, fedadam, "
            "fedyogi, fedadagrad), or set secure_aggregation=False (--no-secure-aggregation) to let the server see "
            "each update."
        )


def own_data(config: RunConfig) -> None:
    """Own data (``data``/``schema``/``not_measured``): one silo per file, in simulation; remote sites pass theirs.

    Parameters
    ----------
    config
        The run.
    """
    if config.data is not None and config.engine == "remote":
        raise ConfigError(
            "The 'data' parameter of RunConfig applies to engine='simulation'; with engine='remote' each site "
            "reads only its own file: start it with `fedkit remote start --kit DIR --data FILE` (and --schema FILE)."
        )
    if config.data is not None:
        bad = {k: v for k, v in config.data.items() if not (isinstance(k, str) and k and isinstance(v, str) and v)}
        if bad or not config.data:
            raise ConfigError(
                f"The 'data' parameter of RunConfig maps silo names to file paths, e.g. {{'a': 'a.csv'}}; got "
                f"{bad or config.data!r}."
            )
        if config.split not in REMOTE_SPLITS:
            raise ConfigError(
                f"The 'data' parameter of RunConfig needs split in {REMOTE_SPLITS} (one silo per file); got "
                f"split={config.split!r}, which pools the public UCI rows."
            )
    elif config.not_measured is not None:
        raise ConfigError(
            "The 'not_measured' parameter of RunConfig applies to own data (data=...); the UCI splits use each "
            "hospital's own codes. A remote site passes its own with `fedkit remote start --not-measured chol=0`."
        )


def n_silos(config: RunConfig) -> int:
    """How many silos a run of ``config`` has, as far as the config says: one per data file, else ``silos or 4``.

    Parameters
    ----------
    config
        The run.
    """
    return len(config.data) if config.data else config.silos or 4


def dp_budget(config: RunConfig) -> None:
    """A DP run says how much noise: exactly one of ``dp_epsilon`` (solved for) and ``dp_noise_multiplier``.

    Parameters
    ----------
    config
        The run.
    """
    if config.dp == "none":
        return
    given = [name for name in ("dp_epsilon", "dp_noise_multiplier") if getattr(config, name) is not None]
    if len(given) != 1:
        got = "neither" if not given else "both"
        raise ConfigError(
            f"RunConfig with dp={config.dp!r} needs exactly one of dp_epsilon (the epsilon to reach after the run's "
            f"rounds; fedkit solves the noise) and dp_noise_multiplier; got {got}. Set one, e.g. dp_epsilon=1 "
            "(--dp-epsilon 1)."
        )


def dp_delta_below_one_over_silos(config: RunConfig) -> None:
    """Client-level DP protects a silo: its δ must be below 1/n for n silos (δ ≥ 1/n allows publishing a silo).

    DP-SGD's δ is checked against the smallest silo's train rows once they are loaded
    (:func:`fedkit.privacy.budget.check_record_delta`).

    Parameters
    ----------
    config
        The run.
    """
    if config.dp not in CLIENT_LEVEL or config.dp_delta is None:
        return
    n = n_silos(config)
    if config.dp_delta >= 1 / n:
        raise ConfigError(
            f"The 'dp_delta' parameter of RunConfig must be below 1/n = {1 / n:.4g} with dp={config.dp!r} "
            f"(n = {n} silos: a delta of 1/n or more allows a mechanism that publishes one silo's data outright); "
            f"got {config.dp_delta}. Use e.g. dp_delta=1e-3."
        )


DP_NOT_WITH: dict[str, str] = {
    "pooled": "it moves every silo's rows into one place, so no silo's data is protected",
    "local": "it shares nothing between silos, so there is nothing to protect",
    **dict.fromkeys(
        NEEDS_EACH_UPDATE,
        "its server step is not a sum of clipped updates (a median, trimmed mean or Krum's choice), so one "
        "silo's influence on it is not bounded by the clip norm and Gaussian noise on a sum does not apply",
    ),
}
"""Strategies DP refuses, and why."""


def dp_needs_a_sum(config: RunConfig) -> None:
    """DP needs a strategy whose server step is a sum of the silos' clipped updates (plus noise).

    SCAFFOLD is refused with client-level DP: its control-variate changes leave each silo beside the
    update, carry the same information as the unclipped update, and are neither clipped nor noised.
    With ``dpsgd`` they are post-processing of the DP-SGD-trained model, so SCAFFOLD is allowed.

    Parameters
    ----------
    config
        The run.
    """
    if config.dp == "none":
        return
    why = DP_NOT_WITH.get(config.strategy)
    if why is None and config.strategy == "scaffold" and config.dp in CLIENT_LEVEL:
        why = (
            "its control-variate changes leave each silo beside the update and carry the same information as the "
            "unclipped update, and client-level DP clips and noises only the update"
        )
    if why is not None:
        raise ConfigError(
            f"dp={config.dp!r} cannot run with strategy={config.strategy!r}: {why}. Use a sum-based strategy "
            "(fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad; scaffold with dp='dpsgd'), or dp='none'."
        )


def distributed_dp_needs_secure_sum(config: RunConfig) -> None:
    """Distributed noise protects against the server only if it sees the sum alone: it needs secure aggregation.

    Parameters
    ----------
    config
        The run.
    """
    if config.dp == "distributed" and not config.secure_aggregation:
        raise ConfigError(
            "dp='distributed' needs secure_aggregation=True (--secure-aggregation): each silo adds only its share "
            "of the noise, so without secure aggregation the server sees every update with a fraction of the noise "
            "and the accounted epsilon does not hold against it. Turn secure aggregation on (the remote engine's "
            "default), or use dp='central', where the server adds the whole noise."
        )


def _strategy_rule(name: str) -> OnlyWith:
    users = tuple(s for s in STRATEGIES if name in options_of(s))
    allowed = f"strategy {' / '.join(users) or '(none yet)'}"
    return OnlyWith(name, None, "strategy", users, allowed, "Remove it or change the strategy.")


RULES: tuple[Callable[[RunConfig], None], ...] = (
    one_local_budget,
    OnlyWith("momentum", 0.0, "optimizer", ("sgd",), "optimizer='sgd'", "Set momentum=0 or use sgd."),
    data_options,
    OnlyWith(
        "finetune_steps", None, "personalize", ("finetune",), "personalize='finetune'", "Remove it or use finetune."
    ),
    no_personal_baseline,
    krum_has_enough_silos,
    scaffold_needs_plain_sgd,
    enough_silos_per_round,
    OnlyWith("dropout", 0.0, "engine", ("simulation",), "engine='simulation' (remote sites drop out for real)"),
    remote_runs_hospitals,
    own_data,
    secure_sum_only,
    OnlyWith(
        "max_norm_ratio",
        None,
        "secure_aggregation",
        (False,),
        "secure_aggregation=False (under secure aggregation no one sees the updates' median norm)",
        "Bound the norm with max_update_norm instead (each site checks it), or set secure_aggregation=False.",
    ),
    *(_strategy_rule(name) for name in HYPERPARAMETERS),
    *(
        OnlyWith(name, None, "dp", DP_MODES[1:], "dp in " + " / ".join(DP_MODES[1:]), "Remove it or set dp.")
        for name in ("dp_epsilon", "dp_delta", "dp_noise_multiplier", "dp_clip")
    ),
    dp_budget,
    dp_needs_a_sum,
    distributed_dp_needs_secure_sum,
    dp_delta_below_one_over_silos,
)
"""Every cross-field rule of RunConfig, in the order they are checked (each raises a ConfigError)."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (.yaml/.yml) or JSON file, with errors naming the file.

    Parameters
    ----------
    path
        The YAML (.yaml/.yml) or JSON file.

    Raises
    ------
    ConfigError
        When the file is missing, does not parse, or holds no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:  # yaml and json raise unrelated types
        raise ConfigError(
            f"Config file {path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {exc}"
        ) from exc
    if not isinstance(values, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of RunConfig fields; it holds {type(values).__name__}."
        )
    return values


CONSTRAINTS: dict[str, list[Any]] = {
    **DATA_CONSTRAINTS,
    "model": [Options(MODELS)],
    "hidden": [Interval(int, 1, 4096)],
    "strategy": [Options(STRATEGIES)],
    "server_lr": [Interval(float, 0, None, closed="neither"), NONE],
    "server_momentum": [Interval(float, 0, 1, closed="left"), NONE],
    "mu": [Interval(float, 0, None), NONE],
    "beta1": [Interval(float, 0, 1, closed="left"), NONE],
    "beta2": [Interval(float, 0, 1, closed="left"), NONE],
    "tau": [Interval(float, 0, None, closed="neither"), NONE],
    "trim_beta": [Interval(float, 0, 0.5, closed="left"), NONE],
    "byzantine": [Interval(int, 0, None), NONE],
    "krum_m": [Interval(int, 1, None), NONE],
    "personalize": [Options(PERSONALIZE)],
    "finetune_steps": [Interval(int, 1, None), NONE],
    "backend": [Options(BACKENDS)],
    "engine": [Options(ENGINES)],
    "rounds": [Interval(int, 1, 100_000)],
    "fraction": [Interval(float, 0, 1, closed="right")],
    "min_silos": [Interval(int, 1, None)],
    "dropout": [Interval(float, 0, 1, closed="left")],
    "straggler_timeout": [Interval(float, 0, None, closed="neither"), NONE],
    "max_update_norm": [Interval(float, 0, None, closed="neither"), NONE],
    "max_norm_ratio": [Interval(float, 1, None), NONE],
    "local_steps": [Interval(int, 1, None), NONE],
    "local_epochs": [Interval(int, 1, None), NONE],
    "batch_size": [Interval(int, 1, None)],
    "lr": [Interval(float, 0, None, closed="neither")],
    "optimizer": [Options(OPTIMIZERS)],
    "momentum": [Interval(float, 0, 1, closed="left")],
    "weight_decay": [Interval(float, 0, None)],
    "data": [OfType(dict), NONE],
    "schema": [OfType(str), NONE],
    "not_measured": [OfType(dict), NONE],
    "secure_aggregation": [Options((True, False)), NONE],
    "dp": [Options(DP_MODES)],
    "dp_epsilon": [Interval(float, 0, None, closed="neither"), NONE],
    "dp_delta": [Interval(float, 0, 1, closed="neither"), NONE],
    "dp_noise_multiplier": [Interval(float, 0, None, closed="neither"), NONE],
    "dp_clip": [Interval(float, 0, None, closed="neither"), NONE],
}

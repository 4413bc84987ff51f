"""RunConfig: every knob of a run, validated once, with errors that name the field and what is allowed."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fedkit._validation import NONE, Interval, Options, validate_params
from fedkit.architectures import MODELS
from fedkit.data.silos import DATA_CONSTRAINTS, MISSING, SPLITS, STANDARDIZE, check_data_options
from fedkit.errors import ConfigError
from fedkit.strategies import HYPERPARAMETERS, STRATEGIES, options_of
from fedkit.training import OPTIMIZERS, LocalTraining

PERSONALIZE: tuple[str, ...] = ("none", "finetune", "fedper")
BACKENDS: tuple[str, ...] = ("vectorized", "torch")
ENGINES: tuple[str, ...] = ("simulation", "remote")
REMOTE_SPLITS: tuple[str, ...] = ("flamby", "hospitals")
DEFAULT_LOCAL_STEPS = 100


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def silos_per_round(n_silos: int, fraction: float) -> int:
    """How many of ``n_silos`` a round trains: ``max(1, fraction * n_silos)`` rounded half up."""
    return max(1, math.floor(fraction * n_silos + 0.5))


@dataclass(frozen=True)
class RunConfig:
    """A federated run. Defaults are FLamby's Fed-Heart-Disease FedAvg benchmark configuration."""

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

    def __post_init__(self) -> None:
        validate_params(asdict(self), CONSTRAINTS, "RunConfig")
        if self.local_steps is not None and self.local_epochs is not None:
            raise ConfigError(
                f"RunConfig got both local_steps={self.local_steps} and local_epochs={self.local_epochs}; "
                "set only one of them."
            )
        if self.local_steps is None and self.local_epochs is None:
            object.__setattr__(self, "local_steps", DEFAULT_LOCAL_STEPS)
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(
                f"The 'momentum' parameter of RunConfig only applies to optimizer='sgd'; got "
                f"momentum={self.momentum} with optimizer={self.optimizer!r}. Set momentum=0 or use sgd."
            )
        check_data_options(self.split, self.silos, self.missing, "RunConfig")
        if self.finetune_steps is not None and self.personalize != "finetune":
            raise ConfigError(
                f"The 'finetune_steps' parameter of RunConfig only applies to personalize='finetune'; got "
                f"finetune_steps={self.finetune_steps} with personalize={self.personalize!r}."
            )
        if self.personalize != "none" and self.strategy in ("local", "pooled"):
            raise ConfigError(
                f"The 'personalize' parameter of RunConfig must be 'none' with strategy={self.strategy!r} "
                f"(a baseline); got {self.personalize!r}."
            )
        if self.strategy == "krum":
            per_round = silos_per_round(self.silos or 4, self.fraction)
            byzantine = self.byzantine or 0
            if per_round - byzantine - 2 < 1:
                raise ConfigError(
                    f"Krum needs at least byzantine + 3 silos per round; with byzantine={byzantine} this run "
                    f"trains {per_round} silo(s) per round (silos={self.silos or 4}, fraction={self.fraction}). "
                    "Lower byzantine, raise fraction or use more silos."
                )
        if self.engine == "remote" and (self.split not in REMOTE_SPLITS or self.strategy == "pooled"):
            raise ConfigError(
                f"engine='remote' runs one site per hospital, so it needs split in {REMOTE_SPLITS} and a strategy "
                f"other than 'pooled' (which moves rows off the silos); got split={self.split!r}, "
                f"strategy={self.strategy!r}. Use engine='simulation' for that run."
            )
        takes = options_of(self.strategy)
        for name in HYPERPARAMETERS:
            if getattr(self, name) is not None and name not in takes:
                users = [s for s in STRATEGIES if name in options_of(s)]
                raise ConfigError(
                    f"The {name!r} parameter of RunConfig only applies to strategy "
                    f"{' / '.join(users) or '(none yet)'}; got {name}={getattr(self, name)} with "
                    f"strategy={self.strategy!r}. Remove it or change the strategy."
                )

    @property
    def strategy_options(self) -> dict[str, Any]:
        """The hyperparameters this run sets for its strategy (unset ones take the strategy's default)."""
        return {name: getattr(self, name) for name in options_of(self.strategy) if getattr(self, name) is not None}

    @property
    def local(self) -> LocalTraining:
        """The local-training hyperparameters of this run."""
        return LocalTraining(
            optimizer=self.optimizer, lr=self.lr, batch_size=self.batch_size,
            local_steps=self.local_steps, local_epochs=self.local_epochs,
            momentum=self.momentum, weight_decay=self.weight_decay,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a mapping; unknown keys are rejected with the closest valid name."""
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"RunConfig has no field {key!r}.{hint} Valid fields: {', '.join(names)}.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Build from a YAML or JSON file holding a mapping of RunConfig fields."""
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (.yaml/.yml) or JSON file, with errors naming the file."""
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
    "local_steps": [Interval(int, 1, None), NONE],
    "local_epochs": [Interval(int, 1, None), NONE],
    "batch_size": [Interval(int, 1, None)],
    "lr": [Interval(float, 0, None, closed="neither")],
    "optimizer": [Options(OPTIMIZERS)],
    "momentum": [Interval(float, 0, 1, closed="left")],
    "weight_decay": [Interval(float, 0, None)],
}

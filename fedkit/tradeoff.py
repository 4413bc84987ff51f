"""What differential privacy buys and costs: runs at several ε, each attacked by membership inference.

For each privacy level (a DP mode and a target ε; ε = ∞ is the run without DP) and seed, :func:`tradeoff`
runs fedkit and attacks what it produced (:mod:`fedkit.privacy.attacks`):

- the **final global model** (what the federation releases): members are every silo's train rows;
- **one silo's update** as the server receives it in one more round from the final model: the model
  ``global + update``, where under client-level DP the update is the silo's clipped update (plus its
  noise share with ``distributed``; with ``central`` the server adds the noise to the sum only, so it
  sees the clipped update itself), and under DP-SGD the update of private local training.

Non-members and the attacker's rows are the targets' test rows, cut at random in two halves: one half
scores the attack, the other trains the shadow models (Shokri et al. 2017), so the attacker never
holds a training row. Both attacks report their ROC AUC with a bootstrap interval, beside the run's
utility (Avg4 accuracy, pooled AUC): the trade-off curve a hospital's privacy officer asks for.
The notebook ``05_privacy_attacks`` and ``benchmarks/privacy_table.py`` call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from fedkit.config import CLIENT_LEVEL, DEFAULT_DP_DELTA, RunConfig, load_federation, with_changes
from fedkit.data.silos import Federation, Silo
from fedkit.engines.simulation import make_engine
from fedkit.privacy import attacks
from fedkit.training import LocalTraining

if TYPE_CHECKING:
    import pandas as pd

    from fedkit.result import RunResult

OVERFIT: dict[str, Any] = {"model": "mlp", "hidden": 64, "optimizer": "adam", "lr": 0.01, "local_steps": 100}
"""A configuration that overfits its silos (an MLP trained with Adam): the attacks' demonstration target."""
TARGETS: tuple[str, ...] = ("global model", "silo update")
"""What :func:`attack_run` attacks: the final global model, and one silo's update as the server receives it."""
COLUMNS: tuple[str, ...] = (
    "dp",
    "target_epsilon",
    "epsilon",
    "seed",
    "avg_accuracy",
    "pooled_auc",
    "target",
    "attack",
    "auc",
    "low",
    "high",
)
"""The columns of :func:`tradeoff`'s table, one row per level, seed, target and attack."""


class AttackRows(NamedTuple):
    """The rows of one attack: members, non-members, and the attacker's own rows (disjoint from the members).

    Parameters
    ----------
    members
        The target's training rows and labels.
    nonmembers
        Rows it never trained on, and labels.
    shadow
        The attacker's rows for its shadow models, and labels.
    """

    members: tuple[np.ndarray, np.ndarray]
    nonmembers: tuple[np.ndarray, np.ndarray]
    shadow: tuple[np.ndarray, np.ndarray]


def attack_rows(silos: Sequence[Silo], seed: int) -> AttackRows:
    """The silos' train rows as members; their test rows cut at random into non-members and the attacker's rows.

    Parameters
    ----------
    silos
        The silos whose rows the target trained on.
    seed
        Seed of the cut.
    """
    x_test = np.concatenate([s.x_test for s in silos])
    y_test = np.concatenate([s.y_test for s in silos])
    order = np.random.default_rng([seed, 7]).permutation(len(y_test))
    half = len(order) // 2
    members = (np.concatenate([s.x_train for s in silos]), np.concatenate([s.y_train for s in silos]))
    return AttackRows(
        members, (x_test[order[:half]], y_test[order[:half]]), (x_test[order[half:]], y_test[order[half:]])
    )


def attack(
    logits: Callable[[np.ndarray], np.ndarray],
    rows: AttackRows,
    shadow: attacks.NumpyModel,
    *,
    seed: int,
    n_shadows: int,
) -> list[attacks.AttackResult]:
    """The loss-threshold and shadow-model attacks on a model given by its ``logits`` function.

    Parameters
    ----------
    logits
        The target model's logits on rows.
    rows
        Members, non-members and the attacker's rows.
    shadow
        How the attacker trains its shadow models.
    seed
        Seed of the attacks (shadows and bootstrap).
    n_shadows
        Shadow models.
    """
    (xm, ym), (xn, yn), (xs, ys) = rows
    zm, zn = logits(xm), logits(xn)
    return [
        attacks.loss_threshold_attack(zm, ym, zn, yn, seed=seed),
        attacks.shadow_model_attack(
            zm, ym, zn, yn, xs, ys, train=shadow.train, logits=shadow.logits, n_shadows=n_shadows, seed=seed
        ),
    ]


def sent_model(config: RunConfig, federation: Federation, params: np.ndarray, silo: str) -> np.ndarray:
    """The model the server can rebuild from ``silo``'s update in one more round from ``params``.

    ``params + update``, the update being what the silo sends: its clipped update (plus its noise share under
    ``distributed``) with client-level DP, its DP-SGD-trained update with ``dpsgd``, its plain update without DP.

    Parameters
    ----------
    config
        The run.
    federation
        Its silos.
    params
        The final global parameters.
    silo
        The silo's name.
    """
    engine = make_engine(federation, config)
    server_round = config.rounds + 1
    reply = engine.fit(params, server_round, [silo])[0]
    if config.dp in CLIENT_LEVEL:
        sent = engine.update_vector(reply, params, server_round)[:-1]
        return (params + sent).astype(np.float32)
    return np.asarray(reply.params, dtype=np.float32)


def attack_run(
    result: RunResult, federation: Federation, *, silo: str, seed: int, n_shadows: int = 4
) -> list[dict[str, Any]]:
    """Both attacks on a finished run's final global model and on ``silo``'s update; one row per target and attack.

    Parameters
    ----------
    result
        The finished run.
    federation
        Its silos.
    silo
        The silo whose update is attacked.
    seed
        Seed of the attacks.
    n_shadows
        Shadow models per attack.
    """
    config = RunConfig.from_dict(result.config)
    local = config.local
    steps = local.n_steps(min(s.n_train for s in federation.silos)) * config.rounds
    shadow = attacks.NumpyModel(
        config.model,
        config.hidden,
        LocalTraining(local.optimizer, local.lr, local.batch_size, steps, None, local.momentum, local.weight_decay),
    )
    model = shadow.logits
    one = next(s for s in federation.silos if s.name == silo)
    update = sent_model(config, federation, result.params, silo)
    targets = {
        TARGETS[0]: (lambda x: model(result.params, x), attack_rows(federation.silos, seed)),
        TARGETS[1]: (lambda x: model(update, x), attack_rows([one], seed)),
    }
    out = []
    for target, (logits, rows) in targets.items():
        for found in attack(logits, rows, shadow, seed=seed, n_shadows=n_shadows):
            out.append(
                {"target": target, "attack": found.attack, "auc": found.auc, "low": found.low, "high": found.high}
            )
    return out


def tradeoff(
    base: Mapping[str, Any],
    levels: Sequence[tuple[str, float]],
    *,
    seeds: Sequence[int] = (42,),
    silo: str = "cleveland",
    n_shadows: int = 4,
    delta: float = DEFAULT_DP_DELTA,
    data_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run ``base`` at every privacy level and seed, attack each run; the table of :data:`COLUMNS`.

    Parameters
    ----------
    base
        RunConfig fields of every run (e.g. the FLamby protocol, :data:`OVERFIT`).
    levels
        ``(dp, epsilon)`` pairs: a DP mode with its target ε, or ``("none", inf)`` for the run without DP.
    seeds
        One run per seed and level.
    silo
        The silo whose update is attacked.
    n_shadows
        Shadow models per attack.
    delta
        The δ of every private run.
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).
    progress
        Called with a line per run done (e.g. ``print``).
    """
    import pandas as pd

    from fedkit.api import run

    rows = []
    for dp, target in levels:
        for seed in seeds:
            fields: dict[str, Any] = {"seed": int(seed), "dp": dp}
            if dp != "none":
                fields |= {"dp_epsilon": float(target), "dp_delta": float(delta)}
                if dp == "distributed":
                    fields["secure_aggregation"] = True
            config = RunConfig.from_dict(with_changes(base, fields))
            federation = load_federation(config, data_dir=data_dir)
            result = run(config, federation=federation, trackers=[], progress=False)
            final = result.final
            spent = final.get("privacy") or {}
            head = {
                "dp": dp,
                "target_epsilon": float(target),
                "epsilon": spent.get("epsilon", math.inf),
                "seed": int(seed),
                "avg_accuracy": final["avg_accuracy"],
                "pooled_auc": final["pooled"]["auc"],
            }
            rows += [
                {**head, **found} for found in attack_run(result, federation, silo=silo, seed=seed, n_shadows=n_shadows)
            ]
            if progress is not None:
                progress(f"{dp} epsilon {target:g} seed {seed}: Avg4 {head['avg_accuracy']:.3f}")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`tradeoff`'s table averaged over seeds: one row per level, target and attack (mean AUC and interval).

    Parameters
    ----------
    table
        The table :func:`tradeoff` returned.
    """
    keys = ["dp", "target_epsilon", "target", "attack"]
    return table.groupby(keys, sort=False).mean(numeric_only=True).drop(columns="seed").reset_index()

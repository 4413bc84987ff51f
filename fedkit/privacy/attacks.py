"""Membership inference: how well an attacker tells a model's training rows from rows it never saw.

- Loss threshold (Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the Connection to
  Overfitting"): a row is called a member when the model's loss on it is below a threshold; over
  all thresholds, the attack's ROC AUC is that of ``-loss``.
- Shadow models (Shokri et al. 2017, "Membership Inference Attacks against Machine Learning
  Models"): the attacker trains shadow models like the target on rows of its own (held-out rows,
  disjoint from the target's), half of them in each shadow's training set; one attack classifier
  per class learns "member or not" from a shadow's output on the row, then scores the target's
  outputs.

Both return the attack's ROC AUC (0.5: no better than a coin; 1: every member found) with a
percentile bootstrap 95% interval, members and non-members resampled separately from a seeded
generator. Models are a pair of callables, ``train(x, y, seed) -> params`` and
``logits(params, x) -> logits``; :class:`NumpyModel` gives them for fedkit's built-in models
through the vectorized trainer, so shadow models train exactly as a fedkit silo does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from fedkit import seeding
from fedkit._validation import Interval, validate_params
from fedkit.architectures import initial_params
from fedkit.data.silos import Federation, Provenance, Silo
from fedkit.engines.vectorized import VectorizedTrainer
from fedkit.errors import ConfigError
from fedkit.metrics import grouped_metrics, roc_auc
from fedkit.training import LocalTraining, batch_plans

TrainFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
"""``train(x, y, seed) -> params``: a model trained on rows ``x`` with 0/1 labels ``y``."""
LogitsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``logits(params, x) -> logits``: the model's logits on rows ``x``."""

N_BOOTSTRAP = 1000
LEVEL = 0.95
_SPLITS, _RESAMPLES = 1, 2  # keys of the attack's two streams (never 0: SeedSequence ignores a trailing 0)


class AttackResult(NamedTuple):
    """An attack's ROC AUC with its bootstrap interval.

    Parameters
    ----------
    attack
        The attack's name.
    auc
        Its ROC AUC (0.5 = no better than a coin).
    low
        Lower end of the bootstrap interval.
    high
        Upper end of the bootstrap interval.
    """

    attack: str
    auc: float
    low: float
    high: float


def _bootstrap(
    attack: str, member_scores: np.ndarray, nonmember_scores: np.ndarray, seed: int, n_bootstrap: int
) -> AttackResult:
    """AUC of the members' scores above the others', with its percentile interval over ``n_bootstrap`` resamples."""
    validate_params({"n_bootstrap": n_bootstrap}, {"n_bootstrap": [Interval(int, 1, None)]}, attack)
    m, n = len(member_scores), len(nonmember_scores)
    if m == 0 or n == 0:
        raise ConfigError(f"{attack} needs at least one member and one non-member row; got {m} and {n}.")
    scores = np.concatenate([member_scores, nonmember_scores]).astype(np.float64)
    labels = np.r_[np.ones(m), np.zeros(n)]
    rng = seeding.stream(seed, seeding.DATA, _RESAMPLES)
    picks = np.concatenate([rng.integers(0, m, (n_bootstrap, m)), m + rng.integers(0, n, (n_bootstrap, n))], axis=1)
    group = np.repeat(np.arange(n_bootstrap), m + n)
    aucs = grouped_metrics(labels[picks].ravel(), scores[picks].ravel(), group, n_bootstrap)["auc"]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return AttackResult(attack, roc_auc(labels, scores), float(low), float(high))


def example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each row from its logit: ``log(1 + exp(z)) - y * z``.

    Parameters
    ----------
    logits
        The model's logits.
    labels
        The rows' 0/1 labels.
    """
    z = np.asarray(logits, dtype=np.float64)
    return np.logaddexp(0.0, z) - np.asarray(labels, dtype=np.float64) * z


def loss_threshold_attack(
    member_logits: np.ndarray,
    member_labels: np.ndarray,
    nonmember_logits: np.ndarray,
    nonmember_labels: np.ndarray,
    *,
    seed: int,
    n_bootstrap: int = N_BOOTSTRAP,
) -> AttackResult:
    """Yeom et al. 2018's attack: members score ``-loss``; the AUC over every threshold, with its interval.

    Parameters
    ----------
    member_logits
        The target model's logits on its training rows.
    member_labels
        Their 0/1 labels.
    nonmember_logits
        Its logits on rows it never trained on.
    nonmember_labels
        Their 0/1 labels.
    seed
        Seed of the bootstrap.
    n_bootstrap
        Bootstrap resamples of the AUC's interval.

    Raises
    ------
    ConfigError
        When there is no member or no non-member row.
    """
    return _bootstrap(
        "loss_threshold_attack",
        -example_losses(member_logits, member_labels),
        -example_losses(nonmember_logits, nonmember_labels),
        seed,
        n_bootstrap,
    )


def _features(logits: np.ndarray) -> np.ndarray:
    """What an attack classifier sees of one output: the logit and its square (non-monotone rules allowed)."""
    z = np.asarray(logits, dtype=np.float64)
    return np.column_stack([z, z * z])


def shadow_model_attack(
    member_logits: np.ndarray,
    member_labels: np.ndarray,
    nonmember_logits: np.ndarray,
    nonmember_labels: np.ndarray,
    shadow_x: np.ndarray,
    shadow_y: np.ndarray,
    *,
    train: TrainFn,
    logits: LogitsFn,
    n_shadows: int = 4,
    seed: int,
    n_bootstrap: int = N_BOOTSTRAP,
) -> AttackResult:
    """Shokri et al. 2017's attack with ``n_shadows`` shadow models trained on the attacker's rows ``shadow_x``.

    Each shadow trains on a random draw of ``shadow_x`` as large as the target's member set (at most half the
    rows), as many other rows being its non-members; an attack model per class (the row's label, as in the
    paper; logistic regression on the logit and its square) learns membership from the shadow's output, then
    scores the target's logits.

    Parameters
    ----------
    member_logits
        The target model's logits on its training rows.
    member_labels
        Their 0/1 labels.
    nonmember_logits
        Its logits on rows it never trained on.
    nonmember_labels
        Their 0/1 labels.
    shadow_x
        The attacker's rows, disjoint from the target's training rows.
    shadow_y
        Their 0/1 labels.
    train
        Trains a shadow model: ``train(x, y, seed) -> params``.
    logits
        A shadow model's logits: ``logits(params, x)``.
    n_shadows
        Number of shadow models.
    seed
        Seed of the shadows' draws and training, and of the bootstrap.
    n_bootstrap
        Bootstrap resamples of the AUC's interval.

    Raises
    ------
    ConfigError
        When the attacker has too few rows for the shadows.
    """
    from sklearn.linear_model import LogisticRegression

    validate_params({"n_shadows": n_shadows}, {"n_shadows": [Interval(int, 1, None)]}, "shadow_model_attack")
    shadow_x, shadow_y = np.asarray(shadow_x), np.asarray(shadow_y, dtype=np.float64)
    size = min(len(member_labels), len(shadow_y) // 2)
    if size < 2:
        raise ConfigError(
            f"shadow_model_attack needs at least 4 shadow rows (2 in, 2 out per shadow); got {len(shadow_y)}."
        )
    rng = seeding.stream(seed, seeding.DATA, _SPLITS)
    feats, member, cls = [], [], []
    for i in range(n_shadows):
        order = rng.permutation(len(shadow_y))
        inside, outside = order[:size], order[size : 2 * size]  # as many non-members as members, as in the paper
        params = train(shadow_x[inside], shadow_y[inside], seed + 1 + i)
        for rows, is_member in ((inside, 1.0), (outside, 0.0)):
            feats.append(_features(logits(params, shadow_x[rows])))
            member.append(np.full(len(rows), is_member))
            cls.append(shadow_y[rows])
    x_att, y_att, c_att = np.concatenate(feats), np.concatenate(member), np.concatenate(cls)
    target_feats = [_features(member_logits), _features(nonmember_logits)]
    target_cls = [np.asarray(member_labels, dtype=np.float64), np.asarray(nonmember_labels, dtype=np.float64)]
    scores = [np.full(len(c), 0.5) for c in target_cls]
    for c in (0.0, 1.0):
        mine = c_att == c
        if len(np.unique(y_att[mine])) < 2:
            continue  # no shadow row of this class on one side: the attack has nothing to learn, scores 0.5
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x_att[mine], y_att[mine])
        for s, f, tc in zip(scores, target_feats, target_cls, strict=True):
            if np.any(tc == c):
                s[tc == c] = model.predict_proba(f[tc == c])[:, 1]
    return _bootstrap("shadow_model_attack", scores[0], scores[1], seed, n_bootstrap)


def _one_silo(x: np.ndarray, y: np.ndarray) -> Federation:
    """Rows ``x``, ``y`` as a federation of one silo, for the vectorized trainer."""
    silo = Silo("attack", np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32), x[:0], y[:0])
    features = tuple(f"x{i}" for i in range(x.shape[1]))
    return Federation((silo,), features, "attack", Provenance("", {}, verified=False))


@dataclass(frozen=True)
class NumpyModel:
    """``train`` / ``logits`` for fedkit's built-in models, trained by the vectorized trainer on one silo.

    Parameters
    ----------
    model
        ``"logreg"`` or ``"mlp"``.
    hidden
        Hidden units (``mlp`` only).
    training
        Optimizer, learning rate, batch size and ``local_steps`` (the total number of steps).
    """

    model: str = "mlp"
    hidden: int = 64
    training: LocalTraining = field(default_factory=LocalTraining)
    """Optimizer, learning rate, batch size and ``local_steps`` (the total number of steps)."""

    def train(self, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        """Flat parameters initialized from ``seed`` and trained on ``x``, ``y`` (batches drawn from ``seed``).

        Parameters
        ----------
        x
            Rows, shape (rows, features).
        y
            Their 0/1 labels.
        seed
            Seed of the initialization and the batches.
        """
        trainer = VectorizedTrainer(_one_silo(x, y), self.model, self.hidden)
        steps = self.training.n_steps(len(y))
        plans = batch_plans(
            [len(y)], self.training.batch_size, [steps], seed=seed, kind=seeding.SAMPLING, server_round=0, silos=[0]
        )
        start = initial_params(self.model, x.shape[1], hidden=self.hidden, seed=seed)
        params, _, _ = trainer.train([0], start[None, :], plans, self.training)
        return params[0]

    def logits(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits of the model with flat ``params`` on rows ``x``.

        Parameters
        ----------
        params
            Flat parameters.
        x
            Rows, shape (rows, features).
        """
        x = np.asarray(x, dtype=np.float32)
        return VectorizedTrainer(_one_silo(x[:1], np.zeros(1)), self.model, self.hidden).logits(params, x)

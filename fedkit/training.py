"""Local training of one silo, as data: its hyperparameters, its batch plan and what it returns (numpy only).

Batches follow ``DataLoader(shuffle=True)`` semantics: each epoch is a fresh permutation cut into
batches (the last one may be smaller), and ``local_steps`` runs across epoch boundaries as FLamby's
trainer does. The plan is a function of the run seed, round and silo only, so every engine
(per-silo torch, vectorized, remote) draws the same batches. The trainers themselves live with the
engines: :mod:`fedkit.engines.vectorized` (numpy) and :mod:`fedkit.engines.per_silo` (torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedkit.seeding import uniform

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class LocalTraining:
    """Hyperparameters of one silo's local update; exactly one of ``local_steps`` / ``local_epochs`` is set.

    Parameters
    ----------
    optimizer
        Local optimizer (a key of ``OPTIMIZERS``).
    lr
        Local learning rate.
    batch_size
        Local batch size.
    local_steps
        Optimizer steps per silo per round (None with ``local_epochs``).
    local_epochs
        Passes over the silo's train set per round (None with ``local_steps``).
    momentum
        SGD momentum (sgd only).
    weight_decay
        L2 weight decay of the local optimizer.
    """

    optimizer: str = "sgd"
    lr: float = 0.001
    batch_size: int = 4
    local_steps: int | None = 100
    local_epochs: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0

    def n_steps(self, n_train: int) -> int:
        """Optimizer steps per round for a silo with ``n_train`` rows.

        Parameters
        ----------
        n_train
            The silo's train rows.
        """
        if self.local_steps is not None:
            return self.local_steps
        return (self.local_epochs or 1) * math.ceil(n_train / self.batch_size)


def batch_plans(
    sizes: Sequence[int],
    batch_size: int,
    steps: Sequence[int],
    *,
    seed: int,
    kind: int,
    server_round: int,
    silos: Sequence[int],
) -> list[np.ndarray]:
    """Each silo's batches for a round: row indices of shape (steps, batch_size), ``-1`` pads a short last batch.

    Each epoch is the argsort of fresh keys from :func:`fedkit.seeding.uniform` (a uniform random permutation),
    so a silo's plan is the same whether it is computed alone or with others. Silos of equal size are drawn
    together in one vectorized call.

    Parameters
    ----------
    sizes
        Train rows of each silo.
    batch_size
        Local batch size.
    steps
        Steps each silo takes.
    seed
        The run's seed.
    kind
        Which use the plan is for (a constant of :mod:`fedkit.seeding`).
    server_round
        The round.
    silos
        The silos' indices in the federation.
    """
    plans: list[np.ndarray] = [np.empty((0, batch_size), dtype=np.int64)] * len(sizes)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (n, k) in enumerate(zip(sizes, steps, strict=True)):
        groups.setdefault((n, k), []).append(i)
    for (n, k), members in groups.items():
        per_epoch = math.ceil(n / batch_size)
        epochs = math.ceil(k / per_epoch)
        keys = uniform(seed, kind, server_round, np.asarray([silos[i] for i in members]), epochs * n)
        order = np.argsort(keys.reshape(len(members), epochs, n), axis=2, kind="stable")
        padded = np.full((len(members), epochs, per_epoch * batch_size), -1, dtype=np.int64)
        padded[:, :, :n] = order
        stacked = padded.reshape(len(members), epochs * per_epoch, batch_size)[:, :k]
        for j, i in enumerate(members):
            plans[i] = stacked[j]
    return plans


def batch_plan(
    n_train: int, batch_size: int, steps: int, *, seed: int, kind: int, server_round: int, silo: int
) -> np.ndarray:
    """One silo's batch plan for a round (see :func:`batch_plans`).

    Parameters
    ----------
    n_train
        The silo's train rows.
    batch_size
        Local batch size.
    steps
        Steps it takes.
    seed
        The run's seed.
    kind
        Which use the plan is for (a constant of :mod:`fedkit.seeding`).
    server_round
        The round.
    silo
        The silo's index in the federation.
    """
    return batch_plans([n_train], batch_size, [steps], seed=seed, kind=kind, server_round=server_round, silos=[silo])[0]


@dataclass(frozen=True)
class PrivateSteps:
    """Record-level DP-SGD of a training call (Abadi et al. 2016), as data; see :mod:`fedkit.privacy.dpsgd`.

    Each step of silo j clips every example's gradient to L2 norm ``clip``, sums them, adds Gaussian
    noise of std ``noise_multipliers[j] * clip`` drawn from ``streams[j]`` (one standard normal per
    parameter, step after step) and divides by ``expected_batch_sizes[j]``; the batches are Poisson
    samples (:func:`fedkit.privacy.dpsgd.poisson_plans`).

    Parameters
    ----------
    clip
        The per-example L2 clipping norm C.
    noise_multipliers
        Each silo's noise multiplier z.
    expected_batch_sizes
        Each silo's expected batch size ``q_k * n_k``.
    streams
        Each silo's noise generator for the round.
    """

    clip: float
    noise_multipliers: tuple[float, ...]
    expected_batch_sizes: tuple[float, ...]
    streams: tuple[np.random.Generator, ...]


@dataclass(frozen=True)
class TrainJob:
    """One trainer call as data: an engine builds it, a trainer runs it, alone or stacked with other runs' (a sweep).

    Parameters
    ----------
    silos
        The engine's indices of the silos that train.
    starts
        Their parameters before training, (silos, P).
    plans
        Each silo's batch plan (:func:`batch_plans`).
    hp
        The local-training hyperparameters.
    prox_mu
        FedProx's proximal weight (0: none).
    anchor
        FedProx's anchor (the global parameters).
    corrections
        SCAFFOLD's per-silo gradient corrections (silos, P), else None.
    private
        DP-SGD's clipping and noise (``plans`` are then Poisson batches), else None.
    """

    silos: list[int]
    starts: np.ndarray
    plans: list[np.ndarray]
    hp: LocalTraining
    prox_mu: float = 0.0
    anchor: np.ndarray | None = None
    corrections: np.ndarray | None = None
    private: PrivateSteps | None = None


@dataclass(frozen=True)
class LocalResult:
    """What a silo's training returns: its new parameters, mean training loss over its steps, and step count.

    Parameters
    ----------
    params
        The silo's new parameters.
    train_loss
        Mean training loss over its steps.
    steps
        Steps taken.
    """

    params: np.ndarray
    train_loss: float
    steps: int

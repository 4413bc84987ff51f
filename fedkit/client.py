"""Local training of one silo: hyperparameters, the batch plan, and the reference per-silo torch path.

Batches follow ``DataLoader(shuffle=True)`` semantics: each epoch is a fresh permutation cut into
batches (the last one may be smaller), and ``local_steps`` runs across epoch boundaries as FLamby's
trainer does. The plan is a function of the run seed, round and silo only, so every engine
(per-silo torch, vectorized, remote) draws the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedkit.seeding import uniform

if TYPE_CHECKING:  # torch is imported when training starts, so `import fedkit` stays fast
    from torch import nn

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class LocalTerm:
    """What a strategy adds to every silo's local objective, as data (so any engine can apply it).

    - ``prox_mu`` / ``anchor``: FedProx's proximal term ``mu/2 * ||w - anchor||^2`` (Li et al. 2020).
    - ``control``: SCAFFOLD's server control variate ``c``; a silo adds ``c - c_i`` to every
      gradient, with ``c_i`` its own control variate (Karimireddy et al. 2020).
    """

    prox_mu: float = 0.0
    anchor: np.ndarray | None = None
    control: np.ndarray | None = None


@dataclass(frozen=True)
class LocalTraining:
    """Hyperparameters of one silo's local update; exactly one of ``local_steps`` / ``local_epochs`` is set."""

    optimizer: str = "sgd"
    lr: float = 0.001
    batch_size: int = 4
    local_steps: int | None = 100
    local_epochs: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0

    def n_steps(self, n_train: int) -> int:
        """Optimizer steps per round for a silo with ``n_train`` rows."""
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
    round: int,
    silos: Sequence[int],
) -> list[np.ndarray]:
    """Each silo's batches for a round: row indices of shape (steps, batch_size), ``-1`` pads a short last batch.

    Silo ``silos[i]`` has ``sizes[i]`` train rows and takes ``steps[i]`` steps. Each epoch is the
    argsort of fresh keys from :func:`fedkit.seeding.uniform` (a uniform random permutation), so a
    silo's plan is the same whether it is computed alone or with others. Silos of equal size are
    drawn together in one vectorized call.
    """
    plans: list[np.ndarray] = [np.empty((0, batch_size), dtype=np.int64)] * len(sizes)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (n, k) in enumerate(zip(sizes, steps, strict=True)):
        groups.setdefault((n, k), []).append(i)
    for (n, k), members in groups.items():
        per_epoch = math.ceil(n / batch_size)
        epochs = math.ceil(k / per_epoch)
        keys = uniform(seed, kind, round, np.asarray([silos[i] for i in members]), epochs * n)
        order = np.argsort(keys.reshape(len(members), epochs, n), axis=2, kind="stable")
        padded = np.full((len(members), epochs, per_epoch * batch_size), -1, dtype=np.int64)
        padded[:, :, :n] = order
        stacked = padded.reshape(len(members), epochs * per_epoch, batch_size)[:, :k]
        for j, i in enumerate(members):
            plans[i] = stacked[j]
    return plans


def batch_plan(n_train: int, batch_size: int, steps: int, *, seed: int, kind: int, round: int, silo: int) -> np.ndarray:
    """One silo's batch plan for a round (see :func:`batch_plans`)."""
    return batch_plans([n_train], batch_size, [steps], seed=seed, kind=kind, round=round, silos=[silo])[0]


@dataclass(frozen=True)
class LocalResult:
    """What a silo's training returns: its new parameters, mean training loss over its steps, and step count."""

    params: np.ndarray
    train_loss: float
    steps: int


def train_local(
    model: nn.Module,
    start: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    hp: LocalTraining,
    plan: np.ndarray,
    *,
    prox_mu: float = 0.0,
    anchor: np.ndarray | None = None,
    correction: np.ndarray | None = None,
) -> LocalResult:
    """Train ``model`` from parameters ``start`` on ``(x, y)`` following ``plan``; ``start`` is left untouched.

    The loss of a step is the mean BCE over the batch, plus ``prox_mu/2 * ||w - anchor||^2``;
    ``correction`` is added to the gradient before the optimizer step. The optimizer state starts
    fresh every call (every round), as in FedAvg.
    """
    import torch
    from torch import nn

    from fedkit.models import get_flat, set_flat

    set_flat(model, start)
    params = list(model.parameters())
    if hp.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    elif hp.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=hp.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=hp.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=hp.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    anchor_t = torch.as_tensor(anchor, dtype=torch.float32) if prox_mu else None
    correction_t = None if correction is None else torch.as_tensor(correction, dtype=torch.float32)
    total = 0.0
    model.train()
    for rows in plan:
        index = torch.as_tensor(rows[rows >= 0])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt[index]), yt[index])
        total += loss.item()
        if anchor_t is not None:
            loss = loss + 0.5 * prox_mu * torch.sum((torch.cat([p.reshape(-1) for p in params]) - anchor_t) ** 2)
        loss.backward()
        if correction_t is not None:
            offset = 0
            for p in params:
                p.grad += correction_t[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
        optimizer.step()
    return LocalResult(get_flat(model), total / max(len(plan), 1), len(plan))

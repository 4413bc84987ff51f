"""Local training of one silo: the reference per-silo path for any ``torch.nn.Module``.

Batches follow ``DataLoader(shuffle=True)`` semantics: each epoch is a fresh permutation cut into
batches (the last one may be smaller), and ``local_steps`` runs across epoch boundaries as FLamby's
trainer does. The batch order comes from a generator the caller derives from the run seed, round
and silo, so every engine draws the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when training starts, so `import fedkit` stays fast
    import torch
    from torch import nn

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class LocalTerm:
    """What a strategy adds to every silo's local objective, as data (so any engine can apply it).

    - ``prox_mu`` / ``anchor``: FedProx's proximal term ``mu/2 * ||w - anchor||^2`` (Li et al. 2020).
    - ``correction``: a vector added to every gradient step (SCAFFOLD's ``c - c_i``, Karimireddy et al. 2020).
    """

    prox_mu: float = 0.0
    anchor: np.ndarray | None = None
    correction: np.ndarray | None = None


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


def batch_schedule(n_train: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The row indices of each of ``steps`` batches: epochs of fresh permutations, cut in order."""
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        order = rng.permutation(n_train)
        batches.extend(order[i : i + batch_size] for i in range(0, n_train, batch_size))
    return batches[:steps]


def make_optimizer(hp: LocalTraining, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The torch optimizer named by ``hp.optimizer`` with its learning rate, momentum and weight decay."""
    import torch

    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)


@dataclass(frozen=True)
class LocalResult:
    """What a silo sends back: its new parameters, mean training loss over its steps, and step count."""

    params: np.ndarray
    train_loss: float
    steps: int


def train_local(
    model: nn.Module,
    start: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    hp: LocalTraining,
    rng: np.random.Generator,
    *,
    term: LocalTerm | None = None,
) -> LocalResult:
    """Train ``model`` from parameters ``start`` on ``(x, y)``; ``start`` is left untouched.

    The optimizer state starts fresh every call (every round), as in FedAvg.
    """
    import torch
    from torch import nn

    from fedkit.models import get_flat, set_flat

    set_flat(model, start)
    params = list(model.parameters())
    optimizer = make_optimizer(hp, params)
    anchor = None if term is None or not term.prox_mu else torch.as_tensor(term.anchor, dtype=torch.float32)
    correction = (
        None if term is None or term.correction is None else torch.as_tensor(term.correction, dtype=torch.float32)
    )
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    batches = batch_schedule(len(y), hp.batch_size, hp.n_steps(len(y)), rng)
    total = 0.0
    model.train()
    for rows in batches:
        index = torch.as_tensor(rows)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt[index]), yt[index])
        total += loss.item()
        if anchor is not None:
            flat = torch.cat([p.reshape(-1) for p in params])
            loss = loss + 0.5 * term.prox_mu * torch.sum((flat - anchor) ** 2)
        loss.backward()
        if correction is not None:
            offset = 0
            for p in params:
                p.grad += correction[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
        optimizer.step()
    return LocalResult(get_flat(model), total / max(len(batches), 1), len(batches))

"""The per-silo trainer: one silo at a time with a real ``torch.nn.Module`` and ``torch.optim`` (any model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedkit.data.silos import Federation
from fedkit.models import get_flat, logits, set_flat
from fedkit.training import ADAM_BETAS, ADAM_EPS, LocalResult, LocalTraining


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

    The loss of a step is the mean BCE over the batch, plus ``prox_mu/2 * ||w - anchor||^2``. The optimizer
    state starts fresh every call (every round), as in FedAvg.

    Parameters
    ----------
    model
        The torch module to train (its parameters are overwritten).
    start
        Flat parameters to start from.
    x
        Rows, shape (rows, features).
    y
        0/1 labels.
    hp
        The local-training hyperparameters.
    plan
        The batch plan, row indices of shape (steps, batch_size) with ``-1`` padding
        (:func:`~fedkit.training.batch_plan`).
    prox_mu
        FedProx's proximal weight (0: none).
    anchor
        The proximal term's anchor, this round's global parameters.
    correction
        Added to the gradient before each optimizer step (SCAFFOLD's ``c - c_i``).
    """
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


class PerSiloTrainer:
    """Trains each silo with :func:`train_local`; the reference the vectorized trainer matches.

    Parameters
    ----------
    federation
        The silos.
    model
        The torch module every silo trains a copy of.
    """

    def __init__(self, federation: Federation, model: nn.Module) -> None:
        self.federation = federation
        self.model = model

    def logits(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits of the model with flat parameters ``params`` on rows ``x``."""
        return logits(self.model, params, x)

    def logits_each(self, params: np.ndarray, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Logits of model ``params[i]`` on rows ``xs[i]`` for every i."""
        return [self.logits(p, x) for p, x in zip(params, xs, strict=True)]

    def train(
        self,
        silos: Sequence[int],
        starts: np.ndarray,
        plans: Sequence[np.ndarray],
        hp: LocalTraining,
        *,
        prox_mu: float = 0.0,
        anchor: np.ndarray | None = None,
        corrections: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train each silo in turn; same contract as :meth:`VectorizedTrainer.train`."""
        out, losses, steps = [], [], []
        for j, (i, plan) in enumerate(zip(silos, plans, strict=True)):
            silo = self.federation.silos[i]
            result = train_local(
                self.model,
                starts[j],
                silo.x_train,
                silo.y_train,
                hp,
                plan,
                prox_mu=prox_mu,
                anchor=anchor,
                correction=None if corrections is None else corrections[j],
            )
            out.append(result.params)
            losses.append(result.train_loss)
            steps.append(result.steps)
        return np.stack(out), np.array(losses), np.array(steps)

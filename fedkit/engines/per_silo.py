"""The per-silo trainer: one silo at a time with a real ``torch.nn.Module`` and ``torch.optim`` (any model)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedkit.data.silos import Federation
from fedkit.models import get_flat, logits, set_flat
from fedkit.training import ADAM_BETAS, ADAM_EPS, LocalResult, LocalTraining, PrivateSteps


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
    private: PrivateSteps | None = None,
) -> LocalResult:
    """Train ``model`` from parameters ``start`` on ``(x, y)`` following ``plan``; ``start`` is left untouched.

    The loss of a step is the mean BCE over the batch, plus ``prox_mu/2 * ||w - anchor||^2``. The optimizer
    state starts fresh every call (every round), as in FedAvg.

    With ``private`` (one silo's DP-SGD settings) each step goes through Opacus (Yousefpour et al. 2021):
    a ``GradSampleModule`` computes the per-example gradients of the summed BCE and a ``DPOptimizer``
    (``expected_batch_size`` = the silo's ``q·n``, ``loss_reduction="mean"``) clips each to ``clip``,
    sums them, adds the noise and divides by the expected batch size; the noise is fedkit's
    (:func:`fedkit_noise_optimizer`, from the silo's stream), so this path and the vectorized one take
    the same steps. ``plan`` then holds Poisson batches; an empty one still takes its noisy step. The
    proximal term and the correction are added to the private gradient, as the vectorized trainer does.

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
    private
        DP-SGD's clipping and noise of this one silo, else None.
    """
    set_flat(model, start)
    params = list(model.parameters())
    optimizer = local_optimizer(params, hp)
    if private is not None:
        return _train_private(model, optimizer, x, y, plan, private, prox_mu, anchor, correction)
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


def local_optimizer(params: list[nn.Parameter], hp: LocalTraining) -> torch.optim.Optimizer:
    """The torch optimizer of a silo's local update: SGD (momentum, weight decay), Adam or AdamW.

    Parameters
    ----------
    params
        The model's parameters.
    hp
        The local-training hyperparameters.
    """
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=hp.weight_decay)
    return torch.optim.AdamW(params, lr=hp.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=hp.weight_decay)


def _flat_term(params: list[nn.Parameter], flat: torch.Tensor) -> list[torch.Tensor]:
    """``flat`` (torch's flat parameter order) cut into tensors shaped like ``params``."""
    sizes = [p.numel() for p in params]
    return [part.view_as(p) for part, p in zip(torch.split(flat, sizes), params, strict=True)]


def _train_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    plan: np.ndarray,
    private: PrivateSteps,
    prox_mu: float,
    anchor: np.ndarray | None,
    correction: np.ndarray | None,
) -> LocalResult:
    """:func:`train_local`'s DP-SGD path through Opacus (see there)."""
    from opacus import GradSampleModule

    params = list(model.parameters())
    gsm = GradSampleModule(model, loss_reduction="sum")
    dp_optimizer = fedkit_noise_optimizer(
        optimizer,
        noise_multiplier=private.noise_multipliers[0],
        max_grad_norm=private.clip,
        expected_batch_size=max(1, round(private.expected_batch_sizes[0])),
        loss_reduction="mean",
    )
    dp_optimizer.expected_batch_size = private.expected_batch_sizes[0]  # q·n itself, as the vectorized path
    dp_optimizer.stream = private.streams[0]
    anchor_t = torch.as_tensor(anchor, dtype=torch.float32) if prox_mu else None
    correction_t = None if correction is None else torch.as_tensor(correction, dtype=torch.float32)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    total = 0.0
    gsm.train()
    try:
        for rows in plan:
            index = torch.as_tensor(rows[rows >= 0])
            dp_optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.binary_cross_entropy_with_logits(gsm(xt[index]), yt[index], reduction="sum")
            with warnings.catch_warnings():  # Opacus's hooks fire on outputs: the rows need no gradient
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                loss.backward()
            total += loss.item() / max(len(index), 1)
            dp_optimizer.pre_step()  # clip, sum, noise, divide: p.grad is the private gradient
            if anchor_t is not None:
                flat = torch.cat([p.detach().reshape(-1) for p in params])
                for p, term in zip(params, _flat_term(params, prox_mu * (flat - anchor_t)), strict=True):
                    p.grad += term
            if correction_t is not None:
                for p, term in zip(params, _flat_term(params, correction_t), strict=True):
                    p.grad += term
            dp_optimizer.original_optimizer.step()
    finally:
        gsm._close()
    return LocalResult(get_flat(model), total / max(len(plan), 1), len(plan))


def _fedkit_noise_optimizer() -> type:
    """Opacus's ``DPOptimizer`` with fedkit's noise (imported lazily: Opacus is the ``dp`` extra)."""
    from opacus.optimizers import DPOptimizer

    class _Optimizer(DPOptimizer):  # type: ignore[misc]
        stream: np.random.Generator

        def add_noise(self) -> None:
            std = self.noise_multiplier * self.max_grad_norm
            normals = self.stream.standard_normal(sum(p.numel() for p in self.params))
            noise = torch.as_tensor(std * normals, dtype=torch.float32)
            for p, part in zip(self.params, _flat_term(self.params, noise), strict=True):
                p.grad = (p.summed_grad + part).view_as(p)

    return _Optimizer


def fedkit_noise_optimizer(optimizer: torch.optim.Optimizer, **options: object) -> torch.optim.Optimizer:
    """Opacus's ``DPOptimizer`` whose Gaussian noise comes from fedkit's seeded stream (its ``stream`` attribute).

    Opacus clips, sums, and divides by the expected batch size; only the draw differs: one standard
    normal per parameter in torch's flat parameter order, from the silo's
    :func:`~fedkit.privacy.dpsgd.step_noise_stream`, times ``noise_multiplier * max_grad_norm``, so the
    per-silo torch path and the vectorized trainer add the same noise.

    Parameters
    ----------
    optimizer
        The wrapped torch optimizer.
    **options
        ``DPOptimizer``'s keyword arguments (noise multiplier, max grad norm, expected batch size...).
    """
    return _fedkit_noise_optimizer()(optimizer, **options)


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
        private: PrivateSteps | None = None,
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
                private=None if private is None else _one(private, j),
            )
            out.append(result.params)
            losses.append(result.train_loss)
            steps.append(result.steps)
        return np.stack(out), np.array(losses), np.array(steps)


def _one(private: PrivateSteps, j: int) -> PrivateSteps:
    """Silo ``j``'s part of ``private``."""
    return PrivateSteps(
        private.clip, (private.noise_multipliers[j],), (private.expected_batch_sizes[j],), (private.streams[j],)
    )

"""The per-silo trainer: one silo at a time with a real ``torch.nn.Module`` and ``torch.optim`` (any model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from fedkit.client import LocalTraining, train_local
from fedkit.data.silos import Federation
from fedkit.models import logits


class PerSiloTrainer:
    """Trains each silo with :func:`fedkit.client.train_local`; the reference the vectorized trainer matches."""

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
                self.model, starts[j], silo.x_train, silo.y_train, hp, plan,
                prox_mu=prox_mu, anchor=anchor, correction=None if corrections is None else corrections[j],
            )  # fmt: skip
            out.append(result.params)
            losses.append(result.train_loss)
            steps.append(result.steps)
        return np.stack(out), np.array(losses), np.array(steps)

"""The simulation engine: every silo in this process, trained one after another with the reference path."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkit import seeding
from fedkit.client import LocalTerm, LocalTraining, train_local
from fedkit.data.silos import Federation
from fedkit.engines.base import FitReply, Scores
from fedkit.models import build_model, get_flat, logits


class SimulationEngine:
    """In-process silos; batches of silo ``i`` in round ``r`` come from ``stream(seed, SAMPLING, r, i)``."""

    def __init__(self, federation: Federation, *, model: str, hidden: int, local: LocalTraining, seed: int) -> None:
        self.federation = federation
        self.local = local
        self.seed = seed
        self._model = build_model(model, len(federation.features), hidden=hidden, seed=seed)
        self._index = {s.name: i for i, s in enumerate(federation.silos)}

    @property
    def silos(self) -> tuple[str, ...]:
        """Silo names in order."""
        return self.federation.names

    def initial_params(self) -> np.ndarray:
        """The seeded initial parameters of the model."""
        return get_flat(self._model)

    def fit(
        self, params: np.ndarray, round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> list[FitReply]:
        """Train each silo in ``silos`` from ``params``, with the strategy's local term if any."""
        replies = []
        for name in silos:
            i = self._index[name]
            silo = self.federation.silos[i]
            rng = seeding.stream(self.seed, seeding.SAMPLING, round, i)
            result = train_local(
                self._model, params, silo.x_train, silo.y_train, self.local, rng,
                term=term,
            )  # fmt: skip
            local_test = Scores(name, silo.y_test, logits(self._model, result.params, silo.x_test))
            replies.append(FitReply(name, result.params, silo.n_train, result.train_loss, result.steps, local_test))
        return replies

    def evaluate(self, params: np.ndarray) -> list[Scores]:
        """Global-model logits on every silo's test set."""
        return [Scores(s.name, s.y_test, logits(self._model, params, s.x_test)) for s in self.federation.silos]

"""The tracker interface the round loop calls; backends (local store, SageMaker, MLflow) implement it."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

STATUSES: tuple[str, ...] = ("running", "finished", "failed", "stopped")


class Tracker(Protocol):
    """Receives a run's life: start, one batch of metric rows per round, end with a status."""

    def start_run(self, run_id: str, config: dict[str, Any], data: dict[str, Any]) -> None:
        """A run begins with this config and data provenance."""
        ...

    def log_round(self, run_id: str, round: int, rows: list[dict[str, Any]]) -> None:
        """Metric rows ``{round, silo, model, split, metric, value}`` of one round (step = round)."""
        ...

    def end_run(
        self,
        run_id: str,
        status: str,
        *,
        summary: dict[str, Any] | None = None,
        params: np.ndarray | None = None,
        error: str | None = None,
    ) -> None:
        """The run ended with ``status``; ``summary`` and final ``params`` when it got that far."""
        ...

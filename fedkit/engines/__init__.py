"""Engines move parameters between the round loop and the silos."""

from fedkit.engines.base import Engine, Evaluation, FitReply, SiloEvaluation

__all__ = ["Engine", "Evaluation", "FitReply", "SiloEvaluation"]

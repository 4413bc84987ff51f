"""Engines move parameters between the round loop and the silos."""

from fedkit.engines.base import Engine, FitReply, Scores

__all__ = ["Engine", "FitReply", "Scores"]

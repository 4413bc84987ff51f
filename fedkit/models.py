"""Models: FLamby's logistic regression and a small MLP. Both output logits of shape (batch,).

Parameters travel as one flat float32 vector (:func:`get_flat` / :func:`set_flat`), which is what
strategies aggregate.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["MLP", "LogisticRegression", "build_model", "get_flat", "logits", "personal_mask", "set_flat"]


class LogisticRegression(nn.Module):
    """One linear layer (FLamby's Fed-Heart-Disease baseline); sigmoid of the logit is P(disease).

    Parameters
    ----------
    n_features
        Input features.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,).

        Parameters
        ----------
        x
            Rows, shape (batch, features).
        """
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """Linear → ReLU → Linear, a small non-linear model for tabular data.

    Parameters
    ----------
    n_features
        Input features.
    hidden
        Hidden units.
    """

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_features, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,).

        Parameters
        ----------
        x
            Rows, shape (batch, features).
        """
        return self.out(torch.relu(self.hidden(x))).squeeze(-1)


def build_model(name: str, n_features: int, *, hidden: int, seed: int) -> nn.Module:
    """A freshly initialized model; init draws from ``torch.manual_seed(seed)`` in a forked RNG (as FLamby).

    Parameters
    ----------
    name
        Architecture name (a key of ``fedkit.architectures.MODELS``).
    n_features
        Input features.
    hidden
        Hidden units (``mlp`` only).
    seed
        The seed of the initialization.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "logreg":
            return LogisticRegression(n_features)
        if name == "mlp":
            return MLP(n_features, hidden)
    raise ValueError(f"unknown model {name!r}")  # unreachable after RunConfig validation


def get_flat(model: nn.Module) -> np.ndarray:
    """All parameters of ``model`` as one new float32 vector.

    Parameters
    ----------
    model
        The torch module.
    """
    return nn.utils.parameters_to_vector(model.parameters()).detach().numpy().astype(np.float32, copy=True)


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    """Load a flat vector into ``model``'s parameters (in place on the model, never on ``flat``).

    Parameters
    ----------
    model
        The torch module to load into.
    flat
        Its parameters as one vector, in torch's parameter order.
    """
    nn.utils.vector_to_parameters(torch.as_tensor(np.array(flat, dtype=np.float32)), model.parameters())


@torch.no_grad()
def logits(model: nn.Module, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Logits of the model with parameters ``flat`` on rows ``x``.

    Parameters
    ----------
    model
        The torch module (its parameters are overwritten).
    flat
        The parameters to evaluate, as one vector.
    x
        Rows, shape (rows, features).
    """
    set_flat(model, flat)
    return model(torch.as_tensor(x)).numpy().astype(np.float64)


def personal_mask(model: nn.Module) -> np.ndarray:
    """Which flat parameters a silo keeps for itself in FedPer (Arivazhagan et al. 2019): the output layer.

    When the output layer is the whole model (logistic regression), only its bias is personal: a
    per-silo intercept on shared weights, so the model stays federated.

    Parameters
    ----------
    model
        The torch module.
    """
    layers = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    head = {id(p) for p in layers[-1].parameters(recurse=False)}
    if len(layers) == 1:
        head = {id(p) for name, p in layers[-1].named_parameters(recurse=False) if name == "bias"}
    return np.concatenate([np.full(p.numel(), id(p) in head) for p in model.parameters()])

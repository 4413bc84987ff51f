"""The built-in models as shapes, without torch: their layers, seeded initial parameters and FedPer head.

:mod:`fedkit.models` builds the same models as torch modules. The vectorized trainer, the report
notebooks and the FLARE server only need the flat parameter vector, and importing torch costs
seconds of every kernel's start-up, so the initialization is reproduced here bit for bit:
``torch.manual_seed(seed)`` then ``nn.Linear`` layers in order, each drawing its weight (row-major,
kaiming-uniform with ``a=sqrt(5)``) then its bias (uniform ±1/sqrt(fan_in)) from torch's CPU
generator — mt19937 seeded like ``init_genrand`` with the low 32 bits of the seed, one 32-bit word
per value, mapped to ``[low, high)`` as ATen's ``uniform_real`` does (24 random bits, in double,
rounded to float32). tests/test_architectures.py compares with torch for many seeds and shapes.
"""

from __future__ import annotations

import math

import numpy as np

MODELS: tuple[str, ...] = ("logreg", "mlp")
"""The built-in models: FLamby's logistic regression and Linear → ReLU → Linear."""
FLOAT_DIGITS = 24  # std::numeric_limits<float>::digits: the random bits behind one float32 draw
LINEAR_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # init.calculate_gain("leaky_relu", sqrt(5)), nn.Linear's


def layers(model: str, n_features: int, *, hidden: int) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each linear layer of ``model``, in torch's parameter order.

    Parameters
    ----------
    model
        Architecture name (a key of ``MODELS``).
    n_features
        Input features.
    hidden
        Hidden units (``mlp`` only).
    """
    if model == "logreg":
        return [(n_features, 1)]
    if model == "mlp":
        return [(n_features, hidden), (hidden, 1)]
    raise ValueError(f"unknown model {model!r}")  # unreachable after RunConfig validation


def torch_words(seed: int, n: int) -> np.ndarray:
    """The first ``n`` 32-bit outputs of torch's CPU generator after ``torch.manual_seed(seed)``.

    Parameters
    ----------
    seed
        The seed given to ``torch.manual_seed``.
    n
        How many 32-bit words to draw.
    """
    # RandomState(int) seeds mt19937 with init_genrand, as torch does; a full-range uint32 draw is one raw word
    return np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, size=n, dtype=np.uint32)


def torch_uniform(words: np.ndarray, low: float, high: float) -> np.ndarray:
    """``Tensor.uniform_(low, high)`` of a float32 tensor, given the generator words it consumes.

    Parameters
    ----------
    words
        The generator's 32-bit words, one per value.
    low
        Lower end of the range.
    high
        Upper end of the range.
    """
    lo, hi = float(np.float32(low)), float(np.float32(high))
    x = (words & np.uint32((1 << FLOAT_DIGITS) - 1)).astype(np.float64) / (1 << FLOAT_DIGITS)
    return (x * (hi - lo) + lo).astype(np.float32)


def initial_params(model: str, n_features: int, *, hidden: int, seed: int) -> np.ndarray:
    """The flat float32 parameters of ``fedkit.models.build_model(model, n_features, hidden=, seed=)``.

    Parameters
    ----------
    model
        Architecture name (a key of ``MODELS``).
    n_features
        Input features.
    hidden
        Hidden units (``mlp`` only).
    seed
        The seed of the model's initialization.
    """
    shape = layers(model, n_features, hidden=hidden)
    words = torch_words(seed, sum(i * o + o for i, o in shape))
    parts, used = [], 0
    for fan_in, fan_out in shape:
        bound = math.sqrt(3.0) * (LINEAR_GAIN / math.sqrt(fan_in))
        parts.append(torch_uniform(words[used : used + fan_in * fan_out], -bound, bound))
        used += fan_in * fan_out
        bound = 1 / math.sqrt(fan_in)
        parts.append(torch_uniform(words[used : used + fan_out], -bound, bound))
        used += fan_out
    return np.concatenate(parts)


def personal_mask(model: str, n_features: int, *, hidden: int) -> np.ndarray:
    """FedPer's personal parameters (Arivazhagan et al. 2019): the output layer; for logistic regression its bias.

    Equal to :func:`fedkit.models.personal_mask` of the torch module.

    Parameters
    ----------
    model
        Architecture name (a key of ``MODELS``).
    n_features
        Input features.
    hidden
        Hidden units (``mlp`` only).

    Returns
    -------
    np.ndarray
        Boolean mask over the flat parameters, True where the parameter is personal.
    """
    shape = layers(model, n_features, hidden=hidden)
    sizes = [i * o + o for i, o in shape]
    mask = np.zeros(sum(sizes), dtype=bool)
    fan_in, fan_out = shape[-1]
    mask[-(fan_out if len(shape) == 1 else fan_in * fan_out + fan_out) :] = True
    return mask

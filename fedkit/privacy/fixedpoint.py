"""Fixed-point encoding of float vectors in the ring Z_{2^64}, where numpy's uint64 arithmetic wraps.

A value ``v`` becomes the integer ``round(v * 2^f)`` (``f`` fractional bits, round half to even)
read as a 64-bit two's-complement word. Words add modulo 2^64, so masks that are uniform in the
ring hide a value completely, and the sum of ``n`` encoded values decodes to the sum of the values:

- error: each encoding is off by at most 2^-(f+1), so the decoded sum of ``n`` values is within
  ``n / 2^(f+1)`` of their exact sum per coordinate (:func:`error_bound`); decoding adds only the
  float64 rounding of the result (none while ``|sum| < 2^(53-f)``);
- range: every value must satisfy ``|v| < 2^(63 - f - ceil(log2 n))`` (:func:`max_abs`), which keeps
  the sum of ``n`` of them inside the signed 64-bit range, so it never wraps; :func:`encode` refuses
  anything larger or not finite.

With the default ``f = 32``: error ``n * 1.2e-10``; range ``2^31 / 2^ceil(log2 n)`` (5.4e8 for 4
summands, 1.7e7 for 100).
"""

from __future__ import annotations

import numpy as np

from fedkit.errors import SecAggRangeError

DEFAULT_FRAC_BITS = 32
"""Fractional bits of the encoding: 31 integer bits, a sign bit and 32 fractional bits before the sum's headroom."""


def _headroom(n_summands: int) -> int:
    return (n_summands - 1).bit_length()  # ceil(log2 n)


def max_abs(n_summands: int, frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    """Bound on ``|value|`` below which the sum of ``n_summands`` encodings cannot wrap around 2^64.

    Parameters
    ----------
    n_summands
        How many encodings will be summed.
    frac_bits
        Fractional bits f of the fixed-point encoding.
    """
    return 2.0 ** (63 - frac_bits - _headroom(n_summands))


def error_bound(n_summands: int, frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    """Per-coordinate bound on ``|decoded sum - exact sum|`` for ``n_summands`` encodings: ``n / 2^(f+1)``.

    Parameters
    ----------
    n_summands
        How many encodings will be summed.
    frac_bits
        Fractional bits f of the fixed-point encoding.
    """
    return n_summands * 2.0 ** -(frac_bits + 1)


def encode(values: np.ndarray, n_summands: int, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """``values`` (1-D floats) as uint64 words ``round(v * 2^f) mod 2^64``, checked to fit a sum of ``n_summands``.

    Parameters
    ----------
    values
        1-D floats.
    n_summands
        How many encodings will be summed.
    frac_bits
        Fractional bits f of the fixed-point encoding.

    Raises
    ------
    SecAggRangeError
        When a value is not finite or too large for a sum of ``n_summands``.
    """
    values = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise SecAggRangeError(
            f"Coordinate {bad[0]} of the input is {values[bad[0]]}; secure aggregation sums finite values only. "
            "Check the update for a diverged model (lower the learning rate)."
        )
    scaled = np.rint(np.ldexp(values, frac_bits))
    limit = 2.0 ** (63 - _headroom(n_summands))
    big = np.flatnonzero(np.abs(scaled) >= limit)
    if big.size:
        raise SecAggRangeError(
            f"Coordinate {big[0]} of the input is {values[big[0]]:.6g}; with frac_bits={frac_bits} and up to "
            f"{n_summands} summands every value must be below {max_abs(n_summands, frac_bits):.6g} in absolute value, "
            "or the masked sum could wrap around 2^64. Lower frac_bits, or scale the input down (e.g. weights as "
            "fractions of a nominal size rather than raw counts)."
        )
    return scaled.astype(np.int64).view(np.uint64)


def decode(words: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """The float values of uint64 ``words`` (one encoding, or a sum of encodings that did not wrap).

    Parameters
    ----------
    words
        uint64 words (one encoding, or a sum of encodings that did not wrap).
    frac_bits
        Fractional bits f of the fixed-point encoding.
    """
    return np.ldexp(np.asarray(words, dtype=np.uint64).view(np.int64).astype(np.float64), -frac_bits)

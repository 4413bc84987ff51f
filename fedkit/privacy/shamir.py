"""Shamir secret sharing of 32-byte secrets over the prime field of the Mersenne prime 2^521 - 1.

Shamir (1979), "How to share a secret": the secret is the constant term of a random polynomial of
degree ``threshold - 1``; a share is the polynomial's value at a non-zero point ``x``. Any
``threshold`` shares rebuild the secret by Lagrange interpolation at 0; fewer are uniformly
distributed whatever the secret (information-theoretic). The field (521 bits) holds any 256-bit
secret with room to spare, so an interpolated value of 2^256 or more proves a wrong share.
Coefficients come from ``secrets`` (the operating system's cryptographic generator).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from fedkit.errors import ConfigError, SecAggAuthenticationError

PRIME = 2**521 - 1
"""The field's modulus, a Mersenne prime (so reduction is cheap and every x in 1..2^521 - 2 is a valid point)."""
SECRET_BYTES = 32
"""Length of a shared secret: a 256-bit mask seed or an X25519 private key."""
SHARE_BYTES = (PRIME.bit_length() + 7) // 8
"""Length of one encoded share (66 bytes, big-endian)."""


def _check_points(xs: Sequence[int], threshold: int) -> None:
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ConfigError(f"Shamir share points must be distinct integers in 1..2^521 - 2; got {list(xs)}.")
    if not 1 <= threshold <= len(xs):
        raise ConfigError(
            f"The Shamir threshold must be between 1 and the number of shares ({len(xs)}); got {threshold}."
        )


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Shares of ``secret`` (32 bytes) at the points ``xs``: any ``threshold`` rebuild it, fewer reveal nothing.

    Parameters
    ----------
    secret
        32 bytes.
    xs
        The share points, distinct integers in 1..2^521 - 2.
    threshold
        How many shares rebuild the secret.

    Raises
    ------
    ConfigError
        When the points, threshold or secret are not allowed.
    """
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"A Shamir secret must be {SECRET_BYTES} bytes; got {len(secret)}.")
    _check_points(xs, threshold)
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        value = 0
        for c in reversed(coefficients):  # Horner
            value = (value * x + c) % PRIME
        shares[x] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret rebuilt from the ``threshold`` shares ``{x: share}`` of smallest ``x`` (others are ignored).

    A wrong share is not always detectable this way.

    Parameters
    ----------
    shares
        Shares ``{x: share}``.
    threshold
        How many shares rebuild the secret.

    Raises
    ------
    SecAggAuthenticationError
        When the shares cannot come from one 32-byte secret (a share was altered).
    """
    xs = sorted(shares)[:threshold]
    _check_points(xs, threshold)
    secret = 0
    for i in xs:
        numerator, denominator = 1, 1
        for j in xs:
            if j != i:
                numerator = numerator * j % PRIME
                denominator = denominator * (j - i) % PRIME
        y = int.from_bytes(shares[i], "big")
        if len(shares[i]) != SHARE_BYTES or y >= PRIME:
            raise SecAggAuthenticationError(f"The Shamir share at point {i} is not a field element; it was altered.")
        secret = (secret + y * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise SecAggAuthenticationError(
            f"The Shamir shares at points {xs} do not rebuild a {SECRET_BYTES}-byte secret: at least one was altered."
        )
    return secret.to_bytes(SECRET_BYTES, "big")

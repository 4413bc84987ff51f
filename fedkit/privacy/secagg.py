"""Secure aggregation: the server learns the (weighted) sum of the sites' vectors and nothing else.

Pairwise additive masking with dropout recovery, Bonawitz et al. 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning" (CCS), with the sparse masking graph of
SecAgg+, Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead" (CCS).
One round has four steps; each is one method of :class:`SecAggClient` (a site) and one of
:class:`SecAggServer`, and every message is a frozen value with ``to_wire()`` / ``from_wire()``:

1. ``advertise_keys``: each site makes two X25519 key pairs (an encryption channel, a mask key)
   and signs their public halves with its identity (:mod:`fedkit.privacy.identity`) → :class:`KeyAdvert`;
   the server sends every site the :class:`KeyRoster` of all adverts.
2. ``share_keys``: each site checks its neighbours' signatures, draws a self-mask seed ``b``, and
   Shamir-shares ``b`` and its mask private key among its neighbours and itself (threshold ``t``),
   each share AES-256-GCM-encrypted for its holder under a key agreed by X25519 + HKDF-SHA256, with
   associated data binding run, round, sender, recipient and step → :class:`ShareBundle`; the
   server routes each holder its shares (:class:`ShareDelivery`) and cannot read them.
3. ``mask_input``: each site encodes ``(w·x, w)`` in Z_{2^64} (:mod:`fedkit.privacy.fixedpoint`),
   adds the ChaCha20 keystream of ``b`` and, for each neighbour that shared keys, ± the keystream of
   their pairwise seed (X25519 + HKDF; ``+`` by the lexically smaller name) → :class:`MaskedInput`;
   the server adds them up; pairwise masks between two senders cancel.
4. ``unmask``: the server names the survivors (sent a masked input) and the dropped (shared keys but
   sent none) in an :class:`UnmaskRequest`; each survivor returns its shares of the survivors' seeds
   ``b`` and of the dropped sites' mask keys, never both for one site (:class:`UnmaskShares`); the
   server rebuilds them, removes the self masks and the dropped sites' pairwise masks, and decodes
   ``sum(w·x)`` and ``sum(w)`` (:class:`SecAggResult`).

The masking graph is the complete graph, or (``neighbours=k``) a random k-regular Harary graph that
every party derives from the run id, the round and the roster. Keys are fresh every round. Nothing
here does I/O: in simulation the sites are objects (:func:`aggregate_in_process`); remotely each
step is one task whose payload is a message's ``to_wire()`` dict (docs/concepts/secure-aggregation.md).
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedkit._validation import NONE, Interval, OfType, validate_params
from fedkit.errors import (
    ConfigError,
    SecAggAuthenticationError,
    SecAggDropoutError,
    SecAggError,
    SecAggRangeError,
    SecAggReplayError,
    SecAggUnmaskRequestError,
)
from fedkit.privacy import fixedpoint, shamir
from fedkit.privacy.identity import Signer, Verifier

PROTOCOL = "fedkit-secagg-v1"
"""Domain-separation tag in every signature, associated data and key derivation."""
ADVERTISE_KEYS = "advertise_keys"
SHARE_KEYS = "share_keys"
MASK_INPUT = "mask_input"
UNMASK = "unmask"
STEPS: tuple[str, ...] = (ADVERTISE_KEYS, SHARE_KEYS, MASK_INPUT, UNMASK)
"""The steps of one round, in order."""
SERVER = "server"
"""The sender name of the server's messages."""

# --- configuration -----------------------------------------------------------------------------------


def suggested_neighbours(n_sites: int) -> int | None:
    """A SecAgg+ neighbourhood for ``n_sites``: the complete graph (None) up to 10 sites, else 2·ceil(log2 n).

    A heuristic after Bell et al. 2020 (k = O(log n)): large enough that the survivors' masking graph stays
    connected under moderate dropout; size it to your dropout rate.

    Parameters
    ----------
    n_sites
        The number of sites.
    """
    return None if n_sites <= 10 else 2 * math.ceil(math.log2(n_sites))


@dataclass(frozen=True)
class SecAggConfig:
    """What every party of a run agrees on: run id, site roster, threshold, masking graph, fixed-point bits.

    Parameters
    ----------
    run_id
        The run's id.
    roster
        Every site's name; a site's Shamir point is its 1-based position.
    threshold
        The number t of share holders needed to rebuild a site's secrets; each site's holders are itself and its
        neighbours (``holders``). It must be above half of them, so that no server can collect both secrets of one
        site from honest holders, who answer once per round (default: the smallest majority).
    neighbours
        k (even): SecAgg+ masking with k neighbours on a random ring; None masks every pair (Bonawitz et al.).
    frac_bits
        Fractional bits of the fixed-point encoding (:mod:`fedkit.privacy.fixedpoint`).

    Raises
    ------
    ConfigError
        When the roster, threshold or neighbours are not allowed.
    """

    run_id: str
    roster: tuple[str, ...]
    threshold: int | None = None
    neighbours: int | None = None
    frac_bits: int = fixedpoint.DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        validate_params(
            {"run_id": self.run_id, "roster": self.roster, "threshold": self.threshold,
             "neighbours": self.neighbours, "frac_bits": self.frac_bits},
            {"run_id": [OfType(str)], "roster": [OfType(tuple), OfType(list)],
             "threshold": [NONE, Interval(int, 1, None)], "neighbours": [NONE, Interval(int, 2, None)],
             "frac_bits": [Interval(int, 1, 62)]},
            "SecAggConfig",
        )  # fmt: skip
        object.__setattr__(self, "roster", tuple(self.roster))
        if not self.run_id:
            raise ConfigError("The 'run_id' parameter of SecAggConfig must be a non-empty string; got ''.")
        if not self.roster or any(not isinstance(s, str) or not s or s == SERVER for s in self.roster):
            raise ConfigError(
                f"The 'roster' parameter of SecAggConfig must list site names (non-empty strings other than "
                f"{SERVER!r}); got {self.roster!r}."
            )
        if len(set(self.roster)) != len(self.roster):
            twice = sorted({s for s in self.roster if self.roster.count(s) > 1})
            raise ConfigError(f"The 'roster' parameter of SecAggConfig names site(s) {twice} twice; name each once.")
        if self.neighbours is not None and self.neighbours % 2:
            raise ConfigError(
                f"The 'neighbours' parameter of SecAggConfig must be even (k/2 neighbours on each side of a ring) "
                f"or None for every pair; got {self.neighbours}."
            )
        h = self.holders
        if self.threshold is not None and not h < 2 * self.threshold <= 2 * h:
            raise ConfigError(
                f"The 'threshold' parameter of SecAggConfig must be an int in the range ({h / 2:g}, {h}] for "
                f"{len(self.roster)} sites with neighbours={self.neighbours} (each site's secrets are shared among "
                f"{h} holders: above half, so the server can never collect both secrets of one site; at most {h}, so "
                f"they can be rebuilt); got {self.threshold}."
            )

    @property
    def holders(self) -> int:
        """How many sites hold shares of one site's secrets: itself and its neighbours."""
        n = len(self.roster)
        return (n - 1 if self.neighbours is None else min(self.neighbours, n - 1)) + 1

    @property
    def t(self) -> int:
        """The threshold in force: ``threshold``, or the smallest majority of ``holders``."""
        return self.threshold if self.threshold is not None else self.holders // 2 + 1

    def point(self, site: str) -> int:
        """The site's Shamir point: its 1-based position in the roster.

        Parameters
        ----------
        site
            The site's name.
        """
        return self.roster.index(site) + 1


def _frame(*parts: str | bytes | int) -> bytes:
    """An unambiguous byte string of ``parts`` (each length-prefixed), for signatures, AAD and KDF info."""
    out = bytearray()
    for part in parts:
        if isinstance(part, str):
            raw = part.encode()
        elif isinstance(part, int):
            raw = part.to_bytes(8, "big", signed=True)
        else:
            raw = part
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def masking_graph(config: SecAggConfig, server_round: int, sites: Collection[str]) -> dict[str, frozenset[str]]:
    """Each site's neighbours among ``sites``: all others, or ``config.neighbours`` on a random ring (Harary graph).

    The ring order is the sites sorted by SHA-256 of (run id, round, name): every party derives the same graph,
    and no one can choose it without choosing names.

    Parameters
    ----------
    config
        What every party of the run agrees on.
    server_round
        The round.
    sites
        The sites taking part.
    """
    names = sorted(sites)
    k = config.neighbours
    if k is None or k >= len(names) - 1:
        return {a: frozenset(names) - {a} for a in names}
    ring = sorted(
        names, key=lambda s: hashlib.sha256(_frame(PROTOCOL, "graph", config.run_id, server_round, s)).digest()
    )
    offsets = [d for d in range(-(k // 2), k // 2 + 1) if d]
    return {a: frozenset(ring[(i + d) % len(ring)] for d in offsets) for i, a in enumerate(ring)}


def _components(graph: Mapping[str, frozenset[str]], nodes: Collection[str]) -> list[set[str]]:
    """Connected components of ``graph`` restricted to ``nodes``."""
    left, parts = set(nodes), []
    while left:
        todo = [left.pop()]
        part = set(todo)
        while todo:
            reached = graph[todo.pop()] & left
            left -= reached
            part |= reached
            todo += reached
        parts.append(part)
    return parts


# --- messages ----------------------------------------------------------------------------------------


M = TypeVar("M", bound="Message")


class Message:
    """Base of every protocol message: ``to_wire()`` gives a dict of str, int, bytes, lists and dicts only."""

    KIND: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        """The message as a payload dict (``"kind"`` plus one entry per field)."""
        return {"kind": self.KIND, **{f.name: _to_wire(getattr(self, f.name)) for f in fields(self)}}  # type: ignore[arg-type]

    @classmethod
    def from_wire(cls: type[M], payload: Mapping[str, Any]) -> M:
        """The message from its payload dict; a malformed payload raises :class:`~fedkit.errors.SecAggError`.

        Parameters
        ----------
        payload
            The payload dict.

        Raises
        ------
        SecAggError
            When the payload is malformed.
        """
        if not isinstance(payload, Mapping) or payload.get("kind") != cls.KIND:
            got = payload.get("kind") if isinstance(payload, Mapping) else type(payload).__name__
            raise SecAggError(f"Expected a {cls.KIND!r} secure-aggregation message; got {got!r}.")
        hints = _hints(cls)
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in payload:
                raise SecAggError(f"The {cls.KIND!r} message has no field {f.name!r}; the sender runs another version.")
            values[f.name] = _from_wire(hints[f.name], payload[f.name], f"{cls.KIND}.{f.name}")
        return cls(**values)


@functools.cache
def _hints(cls: type[Message]) -> dict[str, Any]:
    """The field types of a message class (resolved once: ``get_type_hints`` evaluates every annotation anew)."""
    return get_type_hints(cls)


def _to_wire(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, tuple):
        return [_to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_wire(v) for k, v in value.items()}
    return value


def _from_wire(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if hint in (str, bytes) and isinstance(value, hint):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(_from_wire(get_args(hint)[0], v, where) for v in value)
    if origin is Mapping and isinstance(value, Mapping):
        key, item = get_args(hint)
        return {_from_wire(key, k, where): _from_wire(item, v, where) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Message) and isinstance(value, Mapping):
        return hint.from_wire(value)
    raise SecAggError(f"Field {where} of a secure-aggregation message is a {type(value).__name__}, not a {hint}.")


@dataclass(frozen=True)
class KeyAdvert(Message):
    """Step 1, site → server: the site's two public keys for this round, signed with its identity.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    sender
        The sending site's name.
    channel_key
        The public key of the channels that carry the shares (X25519).
    mask_key
        The public key the pairwise masks are agreed with (X25519).
    credential
        The sender's credential (public key or DER certificate).
    signature
        The sender's signature of the advert under its identity.
    """

    KIND: ClassVar[str] = "secagg_key_advert"
    run_id: str
    round: int
    sender: str
    channel_key: bytes
    mask_key: bytes
    credential: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        """What the signature covers: protocol, step, run, round, sender and both keys."""
        return _frame(PROTOCOL, ADVERTISE_KEYS, self.run_id, self.round, self.sender, self.channel_key, self.mask_key)


@dataclass(frozen=True)
class KeyRoster(Message):
    """Step 1, server → every advertised site: all adverts received.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    adverts
        Every advert received.
    """

    KIND: ClassVar[str] = "secagg_key_roster"
    run_id: str
    round: int
    adverts: tuple[KeyAdvert, ...]


@dataclass(frozen=True)
class EncryptedShare(Message):
    """One site's Shamir shares (self-mask seed, mask key) for one holder, AES-256-GCM-encrypted for it.

    Parameters
    ----------
    sender
        The site whose secrets are shared.
    recipient
        The holder the share is for.
    nonce
        AES-GCM nonce.
    ciphertext
        The encrypted shares.
    """

    KIND: ClassVar[str] = "secagg_encrypted_share"
    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class ShareBundle(Message):
    """Step 2, site → server: the site's encrypted shares, one per neighbour.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    sender
        The sending site's name.
    shares
        One encrypted share per neighbour.
    """

    KIND: ClassVar[str] = "secagg_share_bundle"
    run_id: str
    round: int
    sender: str
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class ShareDelivery(Message):
    """Step 2, server → one site: the encrypted shares addressed to it.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    recipient
        The site the shares are addressed to.
    shares
        The encrypted shares addressed to it.
    """

    KIND: ClassVar[str] = "secagg_share_delivery"
    run_id: str
    round: int
    recipient: str
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput(Message):
    """Step 3, site → server: the masked encoding of ``(w·x, w)`` as little-endian uint64 words.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    sender
        The sending site's name.
    words
        The masked encoding, little-endian uint64 words.
    """

    KIND: ClassVar[str] = "secagg_masked_input"
    run_id: str
    round: int
    sender: str
    words: bytes


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Step 4, server → every survivor: who sent a masked input (survivors) and who shared keys but did not.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    survivors
        The sites that sent a masked input.
    dropped
        The sites that shared keys but sent no masked input.
    """

    KIND: ClassVar[str] = "secagg_unmask_request"
    run_id: str
    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class UnmaskShares(Message):
    """Step 4, survivor → server: its shares of survivors' self-mask seeds and of dropped sites' mask keys.

    Parameters
    ----------
    run_id
        The run's id.
    round
        The round.
    sender
        The sending site's name.
    self_mask_shares
        Its shares of the survivors' self-mask seeds, by site.
    mask_key_shares
        Its shares of the dropped sites' mask keys, by site.
    """

    KIND: ClassVar[str] = "secagg_unmask_shares"
    run_id: str
    round: int
    sender: str
    self_mask_shares: Mapping[str, bytes]
    mask_key_shares: Mapping[str, bytes]


MESSAGES: dict[str, type[Message]] = {
    m.KIND: m for m in (KeyAdvert, KeyRoster, ShareBundle, ShareDelivery, MaskedInput, UnmaskRequest, UnmaskShares)
}
"""Every message a step sends, by its wire ``kind``."""


def decode_message(payload: Mapping[str, Any]) -> Message:
    """The message a payload dict encodes, whatever its kind.

    Parameters
    ----------
    payload
        The payload dict.

    Raises
    ------
    SecAggError
        When the kind is unknown or the payload malformed.
    """
    kind = payload.get("kind") if isinstance(payload, Mapping) else None
    if kind not in MESSAGES:
        raise SecAggError(f"Unknown secure-aggregation message kind {kind!r}; known kinds: {', '.join(MESSAGES)}.")
    return MESSAGES[kind].from_wire(payload)


# --- primitives --------------------------------------------------------------------------------------


def _hkdf(secret: bytes, *info: str | bytes | int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_frame(PROTOCOL, *info)).derive(secret)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _mask_seed(own: X25519PrivateKey, peer: bytes, run_id: str, server_round: int, a: str, b: str) -> bytes:
    """The pairwise mask seed of sites ``a`` and ``b`` (symmetric in them)."""
    return _hkdf(own.exchange(X25519PublicKey.from_public_bytes(peer)), "mask", run_id, server_round, *_pair(a, b))


def _prg(seed: bytes, length: int) -> np.ndarray:
    """``length`` uint64 words of the ChaCha20 keystream of ``seed`` (a fresh 256-bit key, so a fixed nonce)."""
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(8 * length))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)


def _share_aad(run_id: str, server_round: int, sender: str, recipient: str) -> bytes:
    return _frame(PROTOCOL, SHARE_KEYS, run_id, server_round, sender, recipient)


class _Steps:
    """Which step a party is at; refuses a message of another run/round, a repeated step or one out of order."""

    def __init__(self, config: SecAggConfig, server_round: int, party: str) -> None:
        self.config, self.round, self.party, self.next = config, server_round, party, 0

    def enter(self, step: str) -> None:
        i = STEPS.index(step)
        if i < self.next:
            raise SecAggReplayError(
                f"{self.party} already took step {step!r} of secure-aggregation round {self.round}; a repeated "
                "message is refused (replay)."
            )
        if i > self.next:
            raise SecAggReplayError(
                f"{self.party} got step {step!r} of round {self.round} before step {STEPS[self.next]!r}; "
                "a message out of step is refused."
            )
        self.next = i + 1

    def check(self, step: str, message: Any, sender: str) -> None:
        if message.run_id != self.config.run_id or message.round != self.round:
            raise SecAggReplayError(
                f"{self.party} got a {step!r} message from {sender} of run {message.run_id!r} round {message.round}, "
                f"but this is run {self.config.run_id!r} round {self.round}: an old or replayed message is refused."
            )

    def too_few(self, step: str, answered: Collection[str], what: str = "") -> SecAggDropoutError:
        t = self.config.t
        return SecAggDropoutError(
            f"Secure-aggregation round {self.round} of run {self.config.run_id!r} stops at step {step!r}: "
            f"{what or 'the sites that answered'} are {len(answered)} ({', '.join(sorted(answered)) or 'none'}), "
            f"fewer than the threshold t={t}. The round's sum stays masked and no update is applied; retry the "
            f"round when at least {t} sites are reachable, or lower SecAggConfig.threshold (it must stay above "
            "half of each site's share holders)."
        )


# --- site --------------------------------------------------------------------------------------------


class SecAggClient:
    """One site's side of one round: call :meth:`advertise_keys`, :meth:`share_keys`, :meth:`mask_input`,
    :meth:`unmask` in that order, each at most once (the state machine refuses repeats and old rounds).

    Keeps the round's private keys, self-mask seed and the shares it holds; make a new one per round.

    Parameters
    ----------
    config
        What every party of the run agrees on.
    site
        This site's name (in the roster).
    server_round
        The round.
    signer
        This site's identity.
    verifier
        The federation's trust, to check the other sites' adverts.

    Raises
    ------
    ConfigError
        When ``site`` is not in the roster.
    """

    def __init__(self, config: SecAggConfig, site: str, server_round: int, signer: Signer, verifier: Verifier) -> None:
        if site not in config.roster:
            raise ConfigError(f"Site {site!r} is not in the secure-aggregation roster {list(config.roster)}.")
        validate_params({"round": server_round}, {"round": [Interval(int, 0, None)]}, "SecAggClient")
        self.config, self.site, self.round = config, site, int(server_round)
        self._signer, self._verifier = signer, verifier
        self._steps = _Steps(config, self.round, f"Site {site!r}")
        self._channel = X25519PrivateKey.generate()
        self._mask = X25519PrivateKey.generate()
        self._self_seed = b""
        self._advert: KeyAdvert | None = None
        self._adverts: dict[str, KeyAdvert] = {}
        self._graph: dict[str, frozenset[str]] = {}
        self._channels: dict[str, bytes] = {}
        self._held: dict[str, tuple[bytes, bytes]] = {}  # site -> (share of its b, share of its mask key)

    def advertise_keys(self) -> KeyAdvert:
        """Step 1: this round's public channel and mask keys, signed."""
        self._steps.enter(ADVERTISE_KEYS)
        unsigned = KeyAdvert(
            self.config.run_id, self.round, self.site, self._channel.public_key().public_bytes_raw(),
            self._mask.public_key().public_bytes_raw(), self._signer.credential, b"",
        )  # fmt: skip
        self._advert = replace(unsigned, signature=self._signer.sign(unsigned.signed_bytes()))
        return self._advert

    def _channel_key(self, peer: str) -> bytes:
        """The AES-256-GCM key shared with ``peer`` this round (agreed once, used to seal and to open)."""
        if peer not in self._channels:
            shared = self._channel.exchange(X25519PublicKey.from_public_bytes(self._adverts[peer].channel_key))
            self._channels[peer] = _hkdf(shared, "channel", self.config.run_id, self.round, *_pair(self.site, peer))
        return self._channels[peer]

    def share_keys(self, roster: KeyRoster) -> ShareBundle:
        """Step 2: check the neighbours' signed keys, share ``b`` and the mask key among neighbours and self.

        Parameters
        ----------
        roster
            The server's roster of this round's adverts.

        Raises
        ------
        SecAggAuthenticationError
            When an advert's signature or credential fails its check.
        SecAggReplayError
            When the roster is of another run or round, or comes out of step.
        SecAggDropoutError
            When fewer than t sites advertised keys.
        """
        self._steps.enter(SHARE_KEYS)
        self._steps.check(SHARE_KEYS, roster, SERVER)
        adverts: dict[str, KeyAdvert] = {}
        for advert in roster.adverts:
            if advert.sender in adverts:
                raise SecAggReplayError(
                    f"The key roster of round {self.round} holds two adverts of site {advert.sender!r}; refused."
                )
            if advert.sender not in self.config.roster:
                raise SecAggAuthenticationError(
                    f"The key roster of round {self.round} holds an advert of {advert.sender!r}, who is not in the "
                    f"roster {list(self.config.roster)}; refused."
                )
            self._steps.check(ADVERTISE_KEYS, advert, f"site {advert.sender!r}")
            adverts[advert.sender] = advert
        if adverts.get(self.site) != self._advert:
            raise SecAggAuthenticationError(
                f"The key roster of round {self.round} does not carry the own advert of site {self.site!r} unchanged; "
                "the server altered or dropped it."
            )
        if len(adverts) < self.config.t:
            raise self._steps.too_few(SHARE_KEYS, adverts, "the sites that advertised keys")
        self._graph = masking_graph(self.config, self.round, adverts)
        neighbours = self._graph[self.site]
        for peer in neighbours:
            advert = adverts[peer]
            self._verifier.verify(peer, advert.credential, advert.signed_bytes(), advert.signature)
        self._adverts = adverts
        self._self_seed = secrets.token_bytes(shamir.SECRET_BYTES)
        holders = sorted(neighbours | {self.site})
        points = [self.config.point(h) for h in holders]
        seed_shares = shamir.split(self._self_seed, points, self.config.t)
        key_shares = shamir.split(self._mask.private_bytes_raw(), points, self.config.t)
        shares = []
        for holder, x in zip(holders, points, strict=True):
            if holder == self.site:
                self._held[self.site] = (seed_shares[x], key_shares[x])
                continue
            nonce = secrets.token_bytes(12)
            aad = _share_aad(self.config.run_id, self.round, self.site, holder)
            sealed = AESGCM(self._channel_key(holder)).encrypt(nonce, seed_shares[x] + key_shares[x], aad)
            shares.append(EncryptedShare(self.site, holder, nonce, sealed))
        return ShareBundle(self.config.run_id, self.round, self.site, tuple(shares))

    def mask_input(self, delivery: ShareDelivery, vector: np.ndarray, weight: float = 1.0) -> MaskedInput:
        """Step 3: open the shares addressed here, then send ``(weight·vector, weight)`` masked.

        Parameters
        ----------
        delivery
            The encrypted shares addressed here.
        vector
            The 1-D input.
        weight
            A finite number >= 0 (the site's train size for FedAvg; 1 for a plain sum).

        Raises
        ------
        SecAggAuthenticationError
            When a share addressed here fails its check.
        SecAggRangeError
            When the input is not finite or too large for the fixed-point ring.
        """
        self._steps.enter(MASK_INPUT)
        self._steps.check(MASK_INPUT, delivery, SERVER)
        if delivery.recipient != self.site:
            raise SecAggAuthenticationError(
                f"Site {self.site!r} got the share delivery of {delivery.recipient!r} in round {self.round}: misrouted."
            )
        neighbours = self._graph[self.site]
        for share in delivery.shares:
            if share.recipient != self.site or share.sender not in neighbours:
                raise SecAggAuthenticationError(
                    f"Site {self.site!r} got a share from {share.sender!r} to {share.recipient!r} in round "
                    f"{self.round}, who are not masking neighbours: misrouted."
                )
            if share.sender in self._held:
                raise SecAggReplayError(
                    f"Site {self.site!r} got two shares from site {share.sender!r} in round {self.round}; refused."
                )
            aad = _share_aad(self.config.run_id, self.round, share.sender, self.site)
            try:
                plain = AESGCM(self._channel_key(share.sender)).decrypt(share.nonce, share.ciphertext, aad)
            except InvalidTag:
                raise SecAggAuthenticationError(
                    f"The share that site {share.sender!r} sent to site {self.site!r} at step {SHARE_KEYS!r} of "
                    f"round {self.round} failed authentication: it was altered, replayed from another round or "
                    "misrouted on the way (the server relays it and cannot read it). The round is refused."
                ) from None
            half = shamir.SHARE_BYTES
            if len(plain) != 2 * half:
                raise SecAggAuthenticationError(f"The share from site {share.sender!r} has the wrong length.")
            self._held[share.sender] = (plain[:half], plain[half:])
        if len(self._held) < self.config.t:
            raise self._steps.too_few(MASK_INPUT, self._held, f"site {self.site!r} and its neighbours that shared keys")
        values = np.asarray(vector, dtype=np.float64)
        if values.ndim != 1:
            raise ConfigError(f"Site {self.site!r}: the vector to aggregate must be 1-D; got shape {values.shape}.")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(
                f"Site {self.site!r}: the aggregation weight must be a finite number >= 0; got {weight!r}."
            )
        try:
            words = fixedpoint.encode(
                np.append(values * float(weight), float(weight)), len(self._adverts), self.config.frac_bits
            )
        except SecAggRangeError as exc:
            raise SecAggRangeError(f"Site {self.site!r}, round {self.round}: {exc}") from None
        words = words + _prg(self._self_seed, words.size)
        for peer in sorted(self._held.keys() - {self.site}):
            seed = _mask_seed(self._mask, self._adverts[peer].mask_key, self.config.run_id, self.round, self.site, peer)
            words = words + _prg(seed, words.size) if self.site < peer else words - _prg(seed, words.size)
        return MaskedInput(self.config.run_id, self.round, self.site, words.astype("<u8").tobytes())

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Step 4: reveal shares of survivors' self-mask seeds and of dropped sites' mask keys, never both for one.

        Parameters
        ----------
        request
            The server's request: who survived, who dropped.

        Raises
        ------
        SecAggUnmaskRequestError
            When it asks for both secrets of one site.
        """
        self._steps.enter(UNMASK)
        self._steps.check(UNMASK, request, SERVER)
        survivors, dropped = set(request.survivors), set(request.dropped)
        both = sorted(survivors & dropped)
        if both:
            raise SecAggUnmaskRequestError(
                f"The server asked site {self.site!r} at step {UNMASK!r} of round {self.round} for both the self-mask "
                f"share and the mask-key share of site(s) {both} (listed as survivor and as dropped); together they "
                "would unmask their input. Refused: the server is faulty or malicious."
            )
        if self.site not in survivors:
            raise SecAggUnmaskRequestError(
                f"The unmask request of round {self.round} does not list site {self.site!r} as a survivor although "
                "it sent its masked input; answering could reveal its own mask key. Refused."
            )
        strangers = sorted((survivors | dropped) - self._adverts.keys())
        if strangers:
            raise SecAggUnmaskRequestError(
                f"The unmask request of round {self.round} names site(s) {strangers} that did not advertise keys; "
                "refused."
            )
        if len(survivors) < self.config.t:
            raise self._steps.too_few(UNMASK, survivors, "the survivors named by the server")
        parts = _components(self._graph, survivors)
        if len(parts) > 1:
            raise SecAggDropoutError(
                f"In round {self.round} the survivors' masking graph falls apart into {len(parts)} groups "
                f"({'; '.join(', '.join(sorted(p)) for p in parts)}): unmasking would show the server each group's "
                f"sum, not only the total. Site {self.site!r} refuses; use more neighbours (SecAggConfig.neighbours)."
            )
        seeds = {s: share[0] for s, share in self._held.items() if s in survivors}
        keys = {s: share[1] for s, share in self._held.items() if s in dropped}
        return UnmaskShares(self.config.run_id, self.round, self.site, seeds, keys)


# --- server ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecAggResult:
    """What the server learns from one round: ``sum(w·x)``, ``sum(w)`` and which sites are in the sum.

    Parameters
    ----------
    weighted_sum
        ``sum(w·x)`` over the survivors.
    total_weight
        ``sum(w)`` over the survivors.
    survivors
        The sites in the sum.
    dropped
        The sites that shared keys but are not in the sum.
    """

    weighted_sum: np.ndarray
    total_weight: float
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def mean(self) -> np.ndarray:
        """The weighted mean ``sum(w·x) / sum(w)``."""
        return self.weighted_sum / self.total_weight


class SecAggServer:
    """The server's side of one round: :meth:`key_roster`, :meth:`share_deliveries`, :meth:`unmask_request`,
    :meth:`result`, each given every reply of its step that arrived (a missing site has dropped).

    Each step raises :class:`~fedkit.errors.SecAggDropoutError` when fewer than t sites answered, and
    :class:`~fedkit.errors.SecAggReplayError` for a repeated, late or other-round message.

    Parameters
    ----------
    config
        What every party of the run agrees on.
    server_round
        The round.
    verifier
        Checks the adverts' signatures here too, to name a bad one early (optional).
    """

    def __init__(self, config: SecAggConfig, server_round: int, verifier: Verifier | None = None) -> None:
        validate_params({"round": server_round}, {"round": [Interval(int, 0, None)]}, "SecAggServer")
        self.config, self.round, self._verifier = config, int(server_round), verifier
        self._steps = _Steps(config, self.round, "The secure-aggregation server")
        self._adverts: dict[str, KeyAdvert] = {}
        self._graph: dict[str, frozenset[str]] = {}
        self._shared: set[str] = set()
        self._sum = np.zeros(0, dtype=np.uint64)
        self._masked: set[str] = set()

    def _collect(self, step: str, messages: Iterable[M], kind: type[M], expected: Collection[str]) -> dict[str, M]:
        self._steps.enter(step)
        got: dict[str, M] = {}
        for message in messages:
            if not isinstance(message, kind):
                raise SecAggError(f"Step {step!r} takes {kind.__name__} messages; got a {type(message).__name__}.")
            sender: str = message.sender  # type: ignore[attr-defined]
            self._steps.check(step, message, f"site {sender!r}")
            if sender in got:
                raise SecAggReplayError(
                    f"Site {sender!r} sent two {step!r} messages in round {self.round}; the second is refused (replay)."
                )
            if sender not in expected:
                raise SecAggReplayError(
                    f"Site {sender!r} sent a {step!r} message in round {self.round} but did not complete the step "
                    f"before it (expected only {', '.join(sorted(expected))}); a late or replayed message is refused."
                )
            got[sender] = message
        if len(got) < self.config.t:
            raise self._steps.too_few(step, got)
        return got

    def key_roster(self, adverts: Iterable[KeyAdvert]) -> KeyRoster:
        """Step 1: the roster of every advert that arrived, for every advertised site.

        Parameters
        ----------
        adverts
            The adverts that arrived.
        """
        got = self._collect(ADVERTISE_KEYS, adverts, KeyAdvert, self.config.roster)
        if self._verifier is not None:
            for site, advert in got.items():
                self._verifier.verify(site, advert.credential, advert.signed_bytes(), advert.signature)
        self._adverts = dict(sorted(got.items()))
        self._graph = masking_graph(self.config, self.round, got)
        return KeyRoster(self.config.run_id, self.round, tuple(self._adverts.values()))

    def share_deliveries(self, bundles: Iterable[ShareBundle]) -> dict[str, ShareDelivery]:
        """Step 2: each site that shared keys gets the encrypted shares addressed to it.

        Parameters
        ----------
        bundles
            The share bundles that arrived.
        """
        got = self._collect(SHARE_KEYS, bundles, ShareBundle, self._adverts)
        inbox: dict[str, list[EncryptedShare]] = {site: [] for site in sorted(got)}
        for site, bundle in got.items():
            for share in bundle.shares:
                if share.sender != site or share.recipient not in self._graph[site]:
                    raise SecAggAuthenticationError(
                        f"The share bundle of site {site!r} in round {self.round} holds a share from "
                        f"{share.sender!r} to {share.recipient!r}, not from it to one of its neighbours; refused."
                    )
                if share.recipient in inbox:
                    inbox[share.recipient].append(share)
        self._shared = set(got)
        return {site: ShareDelivery(self.config.run_id, self.round, site, tuple(s)) for site, s in inbox.items()}

    def unmask_request(self, inputs: Iterable[MaskedInput]) -> UnmaskRequest:
        """Step 3: add up the masked inputs that arrived; ask the survivors to unmask.

        Parameters
        ----------
        inputs
            The masked inputs that arrived.
        """
        got = self._collect(MASK_INPUT, inputs, MaskedInput, self._shared)
        sizes = {site: len(m.words) for site, m in got.items()}
        first = next(iter(sizes.values()))
        odd = sorted(site for site, size in sizes.items() if size != first or size % 8 or not size)
        if odd:
            listed = ", ".join(f"{site}: {size} bytes" for site, size in sorted(sizes.items()))
            raise SecAggError(
                f"In round {self.round} the masked inputs differ in size or are not whole uint64 words ({listed}); "
                f"every site must mask a vector of the same length (check site(s) {odd})."
            )
        total = np.zeros(first // 8, dtype=np.uint64)
        for message in got.values():
            total = total + np.frombuffer(message.words, dtype="<u8").astype(np.uint64)
        self._sum, self._masked = total, set(got)
        return UnmaskRequest(
            self.config.run_id, self.round, tuple(sorted(self._masked)), tuple(sorted(self._shared - self._masked))
        )

    def _rebuild(self, site: str, field: str, replies: Mapping[str, UnmaskShares]) -> bytes:
        what = "self-mask seed" if field == "self_mask_shares" else "mask key"
        holders = self._graph[site] | {site}
        shares = {}
        for holder, reply in replies.items():
            share = getattr(reply, field).get(site)
            if share is not None and holder in holders:
                shares[self.config.point(holder)] = share
        if len(shares) < self.config.t:
            answered = sorted(h for h in replies if h in holders)
            raise self._steps.too_few(
                UNMASK, answered, f"the holders of shares of the {what} of site {site!r} that answered"
            )
        try:
            return shamir.combine(shares, self.config.t)
        except SecAggAuthenticationError as exc:
            raise SecAggAuthenticationError(f"The {what} of site {site!r} in round {self.round}: {exc}") from None

    def result(self, replies: Iterable[UnmaskShares]) -> SecAggResult:
        """Step 4: rebuild the survivors' seeds and the dropped sites' mask keys, unmask, decode the sum.

        Parameters
        ----------
        replies
            The unmask shares that arrived.
        """
        got = self._collect(UNMASK, replies, UnmaskShares, self._masked)
        total = self._sum.copy()
        for site in sorted(self._masked):
            total = total - _prg(self._rebuild(site, "self_mask_shares", got), total.size)
        for site in sorted(self._shared - self._masked):
            key = X25519PrivateKey.from_private_bytes(self._rebuild(site, "mask_key_shares", got))
            if key.public_key().public_bytes_raw() != self._adverts[site].mask_key:
                raise SecAggAuthenticationError(
                    f"The mask key of dropped site {site!r} rebuilt in round {self.round} does not match its advert: "
                    "a share returned at the unmask step was altered. The round's sum cannot be trusted."
                )
            for peer in sorted(self._graph[site] & self._masked):
                seed = _mask_seed(key, self._adverts[peer].mask_key, self.config.run_id, self.round, site, peer)
                total = total - _prg(seed, total.size) if peer < site else total + _prg(seed, total.size)
        values = fixedpoint.decode(total, self.config.frac_bits)
        return SecAggResult(
            weighted_sum=values[:-1], total_weight=float(values[-1]), survivors=tuple(sorted(self._masked)),
            dropped=tuple(s for s in self.config.roster if s not in self._masked),
        )  # fmt: skip


# --- in-process driver -------------------------------------------------------------------------------


def aggregate_in_process(
    config: SecAggConfig,
    server_round: int,
    inputs: Mapping[str, tuple[np.ndarray, float]],
    signers: Mapping[str, Signer],
    verifier: Verifier,
    drop: Mapping[str, str] | None = None,
) -> SecAggResult:
    """One whole server_round with the sites as in-process objects (the simulation engine's call).

    Parameters
    ----------
    config
        What every party of the run agrees on.
    server_round
        The round.
    inputs
        ``(vector, weight)`` of each site taking part, by site (a roster site missing from it never advertises).
    signers
        Each site's identity.
    verifier
        The federation's trust.
    drop
        ``drop[site] = step`` makes that site fall silent from ``step`` on, to exercise dropout recovery:
        ``"mask_input"`` = shared keys, sent no masked input (not in the sum); ``"unmask"`` = sent its masked input,
        then vanished (in the sum).
    """
    drop = dict(drop or {})
    bad = {s: step for s, step in drop.items() if step not in STEPS}
    if bad:
        raise ConfigError(f"The 'drop' parameter of aggregate_in_process maps sites to one of {STEPS}; got {bad}.")

    def answers(site: str, step: str) -> bool:
        return site not in drop or STEPS.index(step) < STEPS.index(drop[site])

    server = SecAggServer(config, server_round, verifier)
    sites = {s: SecAggClient(config, s, server_round, signers[s], verifier) for s in config.roster if s in inputs}
    roster = server.key_roster([c.advertise_keys() for s, c in sites.items() if answers(s, ADVERTISE_KEYS)])
    bundles = [sites[a.sender].share_keys(roster) for a in roster.adverts if answers(a.sender, SHARE_KEYS)]
    deliveries = server.share_deliveries(bundles)
    masked = [sites[s].mask_input(d, *inputs[s]) for s, d in deliveries.items() if answers(s, MASK_INPUT)]
    request = server.unmask_request(masked)
    return server.result([sites[s].unmask(request) for s in request.survivors if answers(s, UNMASK)])

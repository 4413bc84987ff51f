"""Site identities for secure aggregation: who signed a key advertisement, checked by every peer.

A :class:`Signer` holds a site's identity key and the credential that lets a peer check its
signatures; a :class:`Verifier` decides whether a credential belongs to a named site and checks
the signature. Without them the server could hand each site keys of its own making and read every
share (a man in the middle); with them it can only relay (Bonawitz et al. 2017, §4, active security).

- Simulation: :func:`ephemeral_identities` makes one Ed25519 key per site and a verifier that pins them.
- Remote: :class:`CertificateSigner` signs with the site's provisioned X.509 certificate and key
  (NVIDIA FLARE's ``client.crt`` / ``client.key``; RSA-PSS, ECDSA or Ed25519 as the key is), the
  credential is the certificate, and :class:`CertificateAuthority` accepts it when the federation's
  root CA (``rootCA.pem``) issued it, it is valid now, and its common name is the sender's site name.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from fedkit.errors import ConfigError, SecAggAuthenticationError

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
"""Private key types a site identity may have."""
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class Signer(Protocol):
    """A site's identity: signs its key advertisements; ``credential`` lets a peer check the signatures."""

    @property
    def credential(self) -> bytes:
        """What a peer needs to verify this site's signatures (a public key or a certificate, as bytes)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """A signature of ``data`` under the site's identity key.

        Parameters
        ----------
        data
            The bytes signed.
        """
        ...


class Verifier(Protocol):
    """The federation's trust: whether a credential is a named site's and a signature is valid under it."""

    def verify(self, sender: str, credential: bytes, data: bytes, signature: bytes) -> None:
        """Return if ``signature`` over ``data`` is ``sender``'s; raise ``SecAggAuthenticationError`` otherwise.

        Parameters
        ----------
        sender
            The sending site's name.
        credential
            The sender's credential (public key or DER certificate).
        data
            The bytes signed.
        signature
            The signature.

        Raises
        ------
        SecAggAuthenticationError
            When the credential is not the sender's or the signature is invalid.
        """
        ...


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def _sign(key: SigningKey, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _pss(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data)


def _verify(key: PublicKey, signature: bytes, data: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` over ``data`` is valid under ``key``."""
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, _pss(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        key.verify(signature, data)


def _bad_signature(sender: str) -> SecAggAuthenticationError:
    return SecAggAuthenticationError(
        f"The signature on the key advertisement of site {sender!r} is not valid: the keys were forged or altered on "
        "the way (the server relays them). The round is refused; check the server and the site's identity."
    )


@dataclass(frozen=True)
class Ed25519Signer:
    """An Ed25519 identity key (the simulation's ephemeral site identities); the credential is its public key.

    Parameters
    ----------
    key
        The site's private identity key.
    """

    key: ed25519.Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Ed25519Signer:
        """A fresh random identity."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @property
    def credential(self) -> bytes:
        """The raw 32-byte public key."""
        return self.key.public_key().public_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of ``data``."""
        return self.key.sign(data)


@dataclass(frozen=True)
class PinnedKeys:
    """Trusts exactly one Ed25519 public key (raw 32 bytes) per site name.

    Parameters
    ----------
    keys
        Each site's Ed25519 public key (raw 32 bytes), by site name.
    """

    keys: Mapping[str, bytes]

    def verify(self, sender: str, credential: bytes, data: bytes, signature: bytes) -> None:
        """Check ``credential`` is the key pinned for ``sender`` and ``signature`` is valid under it."""
        pinned = self.keys.get(sender)
        if pinned is None:
            raise SecAggAuthenticationError(
                f"No identity key is pinned for site {sender!r}; known sites: {', '.join(sorted(self.keys))}."
            )
        if credential != pinned:
            raise SecAggAuthenticationError(
                f"Site {sender!r} advertised an identity key that is not the one pinned for it; the advertisement "
                "was forged or altered on the way."
            )
        try:
            _verify(ed25519.Ed25519PublicKey.from_public_bytes(pinned), signature, data)
        except InvalidSignature:
            raise _bad_signature(sender) from None


def ephemeral_identities(names: Iterable[str]) -> tuple[dict[str, Ed25519Signer], PinnedKeys]:
    """One fresh Ed25519 identity per site and the verifier that pins them (for in-process federations).

    Parameters
    ----------
    names
        The sites' names.
    """
    signers = {name: Ed25519Signer.generate() for name in names}
    return signers, PinnedKeys({name: s.credential for name, s in signers.items()})


def _load_private_key(key_pem: bytes, password: bytes | None) -> SigningKey:
    key = serialization.load_pem_private_key(key_pem, password=password)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(
            f"The site's private key is a {type(key).__name__}; secure aggregation signs with RSA, ECDSA or Ed25519 "
            "keys. Provision the site with one of those."
        )
    return key


def _public_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class CertificateSigner:
    """A site identity from an X.509 certificate and its private key (the site's provisioned startup kit).

    Parameters
    ----------
    certificate
        The site's certificate (its common name is the site's name).
    key
        The certificate's private key.
    """

    certificate: x509.Certificate
    key: SigningKey

    @classmethod
    def from_pem(cls, certificate_pem: bytes, key_pem: bytes, password: bytes | None = None) -> CertificateSigner:
        """Load a PEM certificate and PEM private key; refuse a key that is not the certificate's.

        Parameters
        ----------
        certificate_pem
            The PEM certificate.
        key_pem
            The PEM private key.
        password
            The key's password, if it has one.

        Raises
        ------
        ConfigError
            When the key is not the certificate's.
        """
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = _load_private_key(key_pem, password)
        if _public_der(key.public_key()) != _public_der(certificate.public_key()):  # type: ignore[arg-type]
            raise ConfigError(
                f"The private key does not belong to the certificate of {certificate.subject.rfc4514_string()}; "
                "pass the key file provisioned with that certificate."
            )
        return cls(certificate, key)

    @property
    def credential(self) -> bytes:
        """The certificate, DER-encoded."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        """A signature of ``data``: RSA-PSS/SHA-256, ECDSA/SHA-256 or Ed25519, as the key is."""
        return _sign(self.key, data)


@dataclass(frozen=True)
class CertificateAuthority:
    """Trusts certificates issued directly by ``root`` whose common name is the sender's site name.

    Parameters
    ----------
    root
        The federation's root CA certificate.
    """

    root: x509.Certificate

    @classmethod
    def from_pem(cls, ca_pem: bytes) -> CertificateAuthority:
        """The federation's root CA certificate from PEM (NVIDIA FLARE's ``rootCA.pem``).

        Parameters
        ----------
        ca_pem
            The PEM root certificate.
        """
        return cls(x509.load_pem_x509_certificate(ca_pem))

    def verify(self, sender: str, credential: bytes, data: bytes, signature: bytes) -> None:
        """Check the certificate ``credential`` (DER) names ``sender``, chains to the root, is valid now, and signed."""
        try:
            certificate = x509.load_der_x509_certificate(credential)
        except ValueError:
            raise SecAggAuthenticationError(
                f"Site {sender!r} advertised a credential that is not a certificate."
            ) from None
        try:
            certificate.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature):
            raise SecAggAuthenticationError(
                f"The certificate of site {sender!r} ({certificate.subject.rfc4514_string()}) was not issued by the "
                f"federation's root CA ({self.root.subject.rfc4514_string()}); the site is not a member."
            ) from None
        now = datetime.datetime.now(datetime.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SecAggAuthenticationError(
                f"The certificate of site {sender!r} is valid from {certificate.not_valid_before_utc:%Y-%m-%d} to "
                f"{certificate.not_valid_after_utc:%Y-%m-%d}, not now; provision the site again."
            )
        names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [sender]:
            raise SecAggAuthenticationError(
                f"A key advertisement from site {sender!r} carries the certificate of {', '.join(map(str, names))}; "
                "one site is posing as another."
            )
        try:
            _verify(certificate.public_key(), signature, data)  # type: ignore[arg-type]
        except (InvalidSignature, TypeError):
            raise _bad_signature(sender) from None

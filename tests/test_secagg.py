"""Secure aggregation: masked sums equal plain sums within the stated bound, dropouts recover, attacks are refused.

Input data are seeded; the protocol's own randomness (keys, seeds, Shamir coefficients) is cryptographic,
so the statistical tests use thresholds that a correct implementation fails with probability < 1e-8.
"""

from __future__ import annotations

import datetime
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from fedkit.errors import (
    ConfigError,
    ConfigTypeError,
    SecAggAuthenticationError,
    SecAggDropoutError,
    SecAggError,
    SecAggRangeError,
    SecAggReplayError,
    SecAggUnmaskRequestError,
)
from fedkit.privacy import fixedpoint, shamir
from fedkit.privacy.identity import CertificateAuthority, CertificateSigner, ephemeral_identities
from fedkit.privacy.secagg import (
    MESSAGES,
    KeyRoster,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    aggregate_in_process,
    decode_message,
    masking_graph,
    suggested_neighbours,
)
from fedkit.strategies.aggregate import weighted_mean


def _federation(n: int, **options):
    names = tuple(f"site{i:03d}" for i in range(n))
    config = SecAggConfig("run-1", names, **options)
    signers, verifier = ephemeral_identities(names)
    return config, signers, verifier


def _inputs(rng: np.random.Generator, names, dim: int) -> dict[str, tuple[np.ndarray, float]]:
    weights = [float(rng.integers(1, 1000)) if rng.random() < 0.5 else float(rng.uniform(0.01, 500)) for _ in names]
    return {s: (rng.normal(0, 3, dim), w) for s, w in zip(names, weights, strict=True)}


def _exact(inputs, sites) -> tuple[np.ndarray, float]:
    """sum(w·x) per coordinate, exactly rounded from the float64 products the sites encode, and sum(w)."""
    products = np.array([inputs[s][0] * inputs[s][1] for s in sites])
    return np.array([math.fsum(c) for c in products.T]), math.fsum(inputs[s][1] for s in sites)


def _tolerance(n: int, frac_bits: int, exact: np.ndarray) -> np.ndarray:
    """The stated bound n / 2^(f+1), plus the float64 rounding of the decoded result."""
    return fixedpoint.error_bound(n, frac_bits) + np.abs(exact) * 2.0**-52


def _start(n: int = 4, server_round: int = 1, **options):
    """A server_round driven by hand up to the key roster, so a test can tamper between steps."""
    config, signers, verifier = _federation(n, **options)
    server = SecAggServer(config, server_round)
    sites = {s: SecAggClient(config, s, server_round, signers[s], verifier) for s in config.roster}
    roster = server.key_roster([c.advertise_keys() for c in sites.values()])
    return config, server, sites, roster


def _masked(n: int = 4, **options):
    """A round driven by hand through the masked inputs (every site masks a vector of 3 ones)."""
    config, server, sites, roster = _start(n, **options)
    deliveries = server.share_deliveries([c.share_keys(roster) for c in sites.values()])
    inputs = [sites[s].mask_input(d, np.ones(3), 2.0) for s, d in deliveries.items()]
    return config, server, sites, inputs


# --- the sum -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 10, 100])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_weighted_sum_equals_the_plain_one_within_the_stated_bound(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    config, signers, verifier = _federation(n, neighbours=suggested_neighbours(n))
    assert (config.neighbours is None) == (n <= 10)
    inputs = _inputs(rng, config.roster, int(rng.integers(1, 40)))
    result = aggregate_in_process(config, seed, inputs, signers, verifier)
    exact, total = _exact(inputs, config.roster)
    assert np.all(np.abs(result.weighted_sum - exact) <= _tolerance(n, config.frac_bits, exact))
    assert abs(result.total_weight - total) <= _tolerance(n, config.frac_bits, np.array(total))
    assert result.survivors == config.roster and result.dropped == ()


@pytest.mark.parametrize("n", [3, 10])
def test_the_quantization_error_is_real_and_inside_n_over_two_to_the_f_plus_1(n: int) -> None:
    rng = np.random.default_rng(n)
    config, signers, verifier = _federation(n, frac_bits=10)
    inputs = _inputs(rng, config.roster, 2000)
    result = aggregate_in_process(config, 0, inputs, signers, verifier)
    error = np.abs(result.weighted_sum - _exact(inputs, config.roster)[0])
    bound = n / 2**11
    assert error.max() <= bound
    assert error.max() > bound / 8  # coarse bits do round: the check above is not vacuous


def test_masked_mean_equals_fedkits_plain_weighted_mean_to_the_stated_tolerance() -> None:
    rng = np.random.default_rng(7)
    config, signers, verifier = _federation(4)
    train_sizes = [199.0, 172.0, 30.0, 85.0]  # FLamby's: whole numbers encode exactly, so sum(w) is exact
    updates = rng.normal(0, 1, (4, 14))
    inputs = {s: (u, w) for s, u, w in zip(config.roster, updates, train_sizes, strict=True)}
    result = aggregate_in_process(config, 3, inputs, signers, verifier)
    plain = weighted_mean(updates, np.array(train_sizes))
    assert result.total_weight == sum(train_sizes)
    bound = fixedpoint.error_bound(4, config.frac_bits)
    assert np.all(np.abs(result.mean() - plain) <= bound / result.total_weight + 1e-15 * np.abs(plain))
    assert not np.array_equal(result.mean(), updates.mean(axis=0))  # the weights matter


def test_one_masked_input_is_uniform_and_uncorrelated_with_the_plain_one() -> None:
    rng = np.random.default_rng(11)
    config, signers, verifier = _federation(3)
    server = SecAggServer(config, 0)
    sites = {s: SecAggClient(config, s, 0, signers[s], verifier) for s in config.roster}
    roster = server.key_roster([c.advertise_keys() for c in sites.values()])
    deliveries = server.share_deliveries([c.share_keys(roster) for c in sites.values()])
    x = rng.normal(0, 1, 20_000)
    masked = np.frombuffer(sites["site000"].mask_input(deliveries["site000"], x, 1.0).words, dtype="<u8")
    plain = fixedpoint.encode(np.append(x, 1.0), 3)

    def correlation(words: np.ndarray) -> float:
        return float(np.corrcoef(words[:-1] / 2.0**64, x)[0, 1])

    def byte_chi2(words: np.ndarray) -> float:
        counts = np.bincount(words.view(np.uint8), minlength=256).astype(float)
        expected = counts.sum() / 256
        return float(((counts - expected) ** 2 / expected).sum())

    assert abs(correlation(masked)) < 6 / math.sqrt(x.size)  # |r| of independent samples: sd 1/sqrt(N)
    assert byte_chi2(masked) < 400  # 255 degrees of freedom: P(chi2 > 400) < 1e-8
    assert abs(correlation(plain)) > 0.5 and byte_chi2(plain) > 10_000  # the statistics can tell


# --- dropouts ------------------------------------------------------------------------------------------


ALL_STEPS = ("advertise_keys", "mask_input", "unmask")


@pytest.mark.parametrize(
    ("n", "neighbours", "steps"),
    [(4, None, ("advertise_keys",)), (4, None, ("mask_input",)), (4, None, ("unmask",)), (10, None, ALL_STEPS),
     (100, 14, ALL_STEPS)],
)  # fmt: skip
def test_sites_dropping_at_any_step_leave_the_exact_sum_of_the_sites_that_sent_inputs(n, neighbours, steps) -> None:
    # a site dropping at "advertise_keys" never joined; at "mask_input" it shared keys but sent no masked input
    # (its pairwise masks are removed with its rebuilt mask key); at "unmask" it sent its masked input, then
    # vanished (its self mask is removed with its rebuilt seed, and its input is in the sum)
    rng = np.random.default_rng(n + len(steps))
    config, signers, verifier = _federation(n, neighbours=neighbours)
    gone = max(1, min((n - config.t) // len(steps), n // 20))
    order = rng.permutation(config.roster)
    drop = {s: step for i, step in enumerate(steps) for s in order[i * gone : (i + 1) * gone]}
    inputs = _inputs(rng, config.roster, 15)
    result = aggregate_in_process(config, 2, inputs, signers, verifier, drop)
    counted = [s for s in config.roster if drop.get(s) in (None, "unmask")]
    assert result.survivors == tuple(sorted(counted))
    assert set(result.dropped) == set(config.roster) - set(counted)
    exact, total = _exact(inputs, counted)
    assert np.all(np.abs(result.weighted_sum - exact) <= _tolerance(len(counted), config.frac_bits, exact))
    assert abs(result.total_weight - total) <= _tolerance(len(counted), config.frac_bits, np.array(total))


@pytest.mark.parametrize("step", ["advertise_keys", "mask_input", "unmask"])
def test_fewer_than_t_survivors_fail_the_round_naming_them_t_and_the_fix(step: str) -> None:
    config, signers, verifier = _federation(4)
    assert config.t == 3
    inputs = {s: (np.ones(2), 1.0) for s in config.roster}
    drop = {"site001": step, "site003": step}
    with pytest.raises(SecAggDropoutError, match=rf"step '{step}'.* 2 \(site000, site002\).*t=3.*retry"):
        aggregate_in_process(config, 0, inputs, signers, verifier, drop)


def test_survivors_whose_masking_graph_falls_apart_refuse_to_unmask() -> None:
    config, server, sites, roster = _start(12, neighbours=2)  # a ring: each masks with 2, t = 2 of 3 holders
    ring = [config.roster[0]]
    graph = masking_graph(config, 1, config.roster)
    while len(ring) < 12:
        ring.append(min(graph[ring[-1]] - set(ring), default=ring[0]))
    cut = {ring[0], ring[6]}  # two opposite sites: the ring splits into two arcs of 5
    deliveries = server.share_deliveries([c.share_keys(roster) for c in sites.values()])
    inputs = [sites[s].mask_input(d, np.ones(2)) for s, d in deliveries.items() if s not in cut]
    request = server.unmask_request(inputs)
    with pytest.raises(SecAggDropoutError, match="falls apart into 2 groups"):
        sites[ring[1]].unmask(request)


# --- attacks -------------------------------------------------------------------------------------------


def test_a_tampered_share_is_detected_naming_its_sender_and_step() -> None:
    _, server, sites, roster = _start()
    deliveries = server.share_deliveries([c.share_keys(roster) for c in sites.values()])
    delivery = deliveries["site001"]
    share = next(s for s in delivery.shares if s.sender == "site000")
    flipped = replace(share, ciphertext=bytes([share.ciphertext[0] ^ 1]) + share.ciphertext[1:])
    tampered = replace(delivery, shares=tuple(flipped if s is share else s for s in delivery.shares))
    with pytest.raises(SecAggAuthenticationError, match="site 'site000' sent to site 'site001' at step 'share_keys'"):
        sites["site001"].mask_input(tampered, np.ones(3))


def test_a_share_replayed_from_an_earlier_round_rerouted_or_misdelivered_is_detected() -> None:
    _, old_server, old_sites, old_roster = _start(server_round=1)
    old = old_server.share_deliveries([c.share_keys(old_roster) for c in old_sites.values()])
    _, server, sites, roster = _start(server_round=2)
    new = server.share_deliveries([c.share_keys(roster) for c in sites.values()])

    def swap(delivery, share):
        return replace(delivery, shares=tuple(share if s.sender == share.sender else s for s in delivery.shares))

    stale = next(s for s in old["site001"].shares if s.sender == "site000")
    with pytest.raises(SecAggAuthenticationError, match=r"site 'site000' sent to site 'site001'.*replayed"):
        sites["site001"].mask_input(swap(new["site001"], stale), np.ones(3))
    for_two = next(s for s in new["site002"].shares if s.sender == "site000")
    with pytest.raises(SecAggAuthenticationError, match=r"site 'site000' sent to site 'site003'.*misrouted"):
        sites["site003"].mask_input(swap(new["site003"], replace(for_two, recipient="site003")), np.ones(3))
    with pytest.raises(SecAggAuthenticationError, match="Site 'site002' got the share delivery of 'site000'"):
        sites["site002"].mask_input(new["site000"], np.ones(3))


def test_replayed_and_out_of_step_messages_are_refused_naming_sender_and_step() -> None:
    config, server, sites, inputs = _masked()
    with pytest.raises(SecAggReplayError, match="Site 'site002' sent two 'mask_input' messages in round 1"):
        server.unmask_request([*inputs, inputs[2]])

    config, server, sites, inputs = _masked()
    request = server.unmask_request(inputs)
    sites["site000"].unmask(request)
    with pytest.raises(
        SecAggReplayError, match="Site 'site000' already took step 'unmask' of secure-aggregation round 1"
    ):
        sites["site000"].unmask(request)

    config, server, sites, roster = _start()
    deliveries = server.share_deliveries([sites[s].share_keys(roster) for s in config.roster[:3]])
    inputs = [sites[s].mask_input(d, np.ones(3)) for s, d in deliveries.items()]
    late = MaskedInput("run-1", 1, "site003", inputs[0].words)  # site003 never shared keys in this round
    with pytest.raises(SecAggReplayError, match=r"Site 'site003' sent a 'mask_input' message .* late or replayed"):
        server.unmask_request([*inputs, late])

    config, _, _, old_roster = _start(server_round=1)
    signers = ephemeral_identities(config.roster)[0]
    later = SecAggServer(config, 2)
    with pytest.raises(
        SecAggReplayError, match="'advertise_keys' message from site 'site000' of run 'run-1' round 1, "
    ):
        later.key_roster(old_roster.adverts)
    site = SecAggClient(config, "site000", 2, signers["site000"], None)
    with pytest.raises(SecAggReplayError, match="got step 'share_keys' of round 2 before step 'advertise_keys'"):
        site.share_keys(old_roster)
    site.advertise_keys()
    with pytest.raises(SecAggReplayError, match="'share_keys' message from server of run 'run-1' round 1, but this"):
        site.share_keys(old_roster)


def test_a_key_advert_with_a_bad_signature_or_a_foreign_identity_is_refused_naming_the_sender() -> None:
    config, signers, verifier = _federation(4)
    sites = {s: SecAggClient(config, s, 1, signers[s], verifier) for s in config.roster}
    adverts = [c.advertise_keys() for c in sites.values()]
    forged = [replace(a, mask_key=bytes(32)) if a.sender == "site002" else a for a in adverts]  # server's own key
    with pytest.raises(SecAggAuthenticationError, match="signature on the key advertisement of site 'site002'"):
        sites["site000"].share_keys(KeyRoster("run-1", 1, tuple(forged)))
    with pytest.raises(SecAggAuthenticationError, match="signature on the key advertisement of site 'site002'"):
        SecAggServer(config, 1, verifier).key_roster(forged)  # a server given the verifier names it too
    impostor = SecAggClient(config, "site002", 1, ephemeral_identities(["x"])[0]["x"], verifier)
    foreign = [impostor.advertise_keys() if a.sender == "site002" else a for a in adverts]
    with pytest.raises(SecAggAuthenticationError, match="Site 'site002' advertised an identity key that is not"):
        sites["site001"].share_keys(KeyRoster("run-1", 1, tuple(foreign)))
    without = [a for a in adverts if a.sender != "site003"]
    with pytest.raises(SecAggAuthenticationError, match="does not carry the own advert of site 'site003'"):
        sites["site003"].share_keys(KeyRoster("run-1", 1, tuple(without)))


def test_a_site_refuses_to_reveal_both_secrets_of_one_peer_and_any_later_request() -> None:
    config, server, sites, inputs = _masked()
    honest = server.unmask_request(inputs)
    assert honest.survivors == config.roster and honest.dropped == ()
    greedy = replace(honest, dropped=("site003",))
    with pytest.raises(SecAggUnmaskRequestError, match=r"site 'site000' at step 'unmask'.*site\(s\) \['site003'\]"):
        sites["site000"].unmask(greedy)
    with pytest.raises(SecAggReplayError, match="already took step 'unmask'"):
        sites["site000"].unmask(honest)  # fail closed: no second chance for the server
    self_dropped = replace(honest, survivors=("site000", "site002", "site003"), dropped=("site001",))
    with pytest.raises(SecAggUnmaskRequestError, match="does not list site 'site001' as a survivor"):
        sites["site001"].unmask(self_dropped)


def test_a_reply_with_an_altered_share_is_caught_when_the_mask_key_is_rebuilt() -> None:
    config, signers, verifier = _federation(4)
    server = SecAggServer(config, 0)
    sites = {s: SecAggClient(config, s, 0, signers[s], verifier) for s in config.roster}
    roster = server.key_roster([c.advertise_keys() for c in sites.values()])
    deliveries = server.share_deliveries([c.share_keys(roster) for c in sites.values()])
    request = server.unmask_request(
        [sites[s].mask_input(deliveries[s], np.ones(2)) for s in ("site000", "site001", "site002")]
    )
    replies = [sites[s].unmask(request) for s in request.survivors]
    share = replies[0].mask_key_shares["site003"]
    replies[0] = replace(replies[0], mask_key_shares={"site003": share[:-1] + bytes([share[-1] ^ 1])})
    with pytest.raises(
        SecAggAuthenticationError, match="mask key of dropped site 'site003' rebuilt in round 0 does not match"
    ):
        server.result(replies)


# --- wire ----------------------------------------------------------------------------------------------


def _leaves_are_wire_types(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _leaves_are_wire_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_leaves_are_wire_types(v) for v in value)
    return type(value) in (bytes, int, str)


def test_every_message_survives_the_wire_and_flare_serialization_unchanged() -> None:
    config, signers, verifier = _federation(4)
    server = SecAggServer(config, 5, verifier)
    sites = {s: SecAggClient(config, s, 5, signers[s], verifier) for s in config.roster}
    sent = [c.advertise_keys() for c in sites.values()]
    sent.append(roster := server.key_roster(sent[:4]))
    sent += (bundles := [c.share_keys(roster) for c in sites.values()])
    deliveries = server.share_deliveries(bundles)
    sent += deliveries.values()
    sent += (inputs := [sites[s].mask_input(deliveries[s], np.arange(5.0), 3.0) for s in config.roster[:3]])
    sent.append(request := server.unmask_request(inputs))
    sent += (replies := [sites[s].unmask(request) for s in request.survivors])
    assert replies[0].self_mask_shares and replies[0].mask_key_shares  # both kinds of share travel
    assert {type(m) for m in sent} == set(MESSAGES.values())
    fobs = pytest.importorskip("nvflare.fuel.utils.fobs")
    for message in sent:
        payload = message.to_wire()
        assert _leaves_are_wire_types(payload), type(message).__name__
        assert decode_message(payload) == message
        assert type(message).from_wire(fobs.loads(fobs.dumps(payload))) == message
    result = server.result([decode_message(r.to_wire()) for r in replies])
    assert np.allclose(result.weighted_sum, 9 * np.arange(5.0), atol=1e-8) and result.total_weight == 9.0


def test_a_malformed_payload_is_refused_naming_the_field() -> None:
    *_, roster = _start()
    payload = roster.to_wire()
    with pytest.raises(SecAggError, match="no field 'round'"):
        KeyRoster.from_wire({k: v for k, v in payload.items() if k != "round"})
    with pytest.raises(SecAggError, match=r"secagg_key_advert.mask_key of a secure-aggregation message is a str"):
        decode_message({**payload, "adverts": [{**payload["adverts"][0], "mask_key": "00"}]})
    with pytest.raises(SecAggError, match="Expected a 'secagg_masked_input'"):
        MaskedInput.from_wire(payload)
    with pytest.raises(SecAggError, match="Unknown secure-aggregation message kind 'fedkit_fit'"):
        decode_message({"kind": "fedkit_fit"})


# --- identities ------------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, days: tuple[int, int] = (-1, 30), ca: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def _pem(certificate, key) -> tuple[bytes, bytes]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def federation_ca():
    """A self-signed root CA (RSA, as NVIDIA FLARE provisions) and site certificates with RSA, ECDSA, Ed25519 keys."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _certificate("fedkit-test-root", ca_key, "fedkit-test-root", ca_key, ca=True)
    keys = {
        "cleveland": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "hungarian": ec.generate_private_key(ec.SECP256R1()),
        "switzerland": ed25519.Ed25519PrivateKey.generate(),
    }
    sites = {name: _pem(_certificate(name, key, "fedkit-test-root", ca_key), key) for name, key in keys.items()}
    return ca.public_bytes(serialization.Encoding.PEM), ca_key, sites


def test_sites_with_x509_identities_from_one_ca_aggregate(federation_ca) -> None:
    ca_pem, _, sites = federation_ca
    signers = {name: CertificateSigner.from_pem(cert, key) for name, (cert, key) in sites.items()}
    config = SecAggConfig("flare-job-7", tuple(sites))
    inputs = {name: (np.full(4, i + 1.0), 10.0) for i, name in enumerate(sites)}
    result = aggregate_in_process(config, 0, inputs, signers, CertificateAuthority.from_pem(ca_pem))
    assert np.allclose(result.weighted_sum, 60.0, atol=1e-8) and result.total_weight == 30.0


def test_certificates_of_another_ca_another_site_or_out_of_date_are_refused(federation_ca) -> None:
    ca_pem, ca_key, sites = federation_ca
    authority = CertificateAuthority.from_pem(ca_pem)
    signer = CertificateSigner.from_pem(*sites["hungarian"])
    data = b"advert"
    authority.verify("hungarian", signer.credential, data, signer.sign(data))
    with pytest.raises(SecAggAuthenticationError, match="key advertisement of site 'hungarian' is not valid"):
        authority.verify("hungarian", signer.credential, b"altered", signer.sign(data))
    with pytest.raises(SecAggAuthenticationError, match="site 'cleveland' carries the certificate of hungarian"):
        authority.verify("cleveland", signer.credential, data, signer.sign(data))
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rogue = CertificateSigner.from_pem(
        *_pem(_certificate("va", rogue_key, "fedkit-test-root", rogue_ca_key), rogue_key)
    )
    with pytest.raises(
        SecAggAuthenticationError, match=r"certificate of site 'va' .* was not issued by the federation"
    ):
        authority.verify("va", rogue.credential, data, rogue.sign(data))
    expired = CertificateSigner.from_pem(
        *_pem(_certificate("va", rogue_key, "fedkit-test-root", ca_key, (-30, -1)), rogue_key)
    )
    with pytest.raises(SecAggAuthenticationError, match=r"certificate of site 'va' is valid from .* not now"):
        authority.verify("va", expired.credential, data, expired.sign(data))
    with pytest.raises(SecAggAuthenticationError, match="not a certificate"):
        authority.verify("va", b"junk", data, b"")
    with pytest.raises(ConfigError, match="does not belong to the certificate of CN=hungarian"):
        CertificateSigner.from_pem(sites["hungarian"][0], sites["cleveland"][1])


# --- parts ---------------------------------------------------------------------------------------------


def test_config_refuses_a_threshold_at_or_below_half_the_holders_and_odd_neighbourhoods() -> None:
    names = tuple("abcd")
    assert SecAggConfig("r", names).t == 3 and SecAggConfig("r", names).holders == 4
    assert SecAggConfig("r", tuple(map(str, range(100))), neighbours=14).holders == 15
    with pytest.raises(
        ConfigError, match=r"'threshold' parameter of SecAggConfig must be an int in the range \(2, 4\]"
    ):
        SecAggConfig("r", names, threshold=2)
    with pytest.raises(ConfigError, match=r"'threshold'.*got 5"):
        SecAggConfig("r", names, threshold=5)
    with pytest.raises(ConfigError, match="'neighbours' parameter of SecAggConfig must be even"):
        SecAggConfig("r", names, neighbours=3)
    with pytest.raises(ConfigError, match=r"names site\(s\) \['a'\] twice"):
        SecAggConfig("r", ("a", "b", "a"))
    with pytest.raises(ConfigError, match="'frac_bits' parameter of SecAggConfig"):
        SecAggConfig("r", names, frac_bits=0)
    with pytest.raises(ConfigTypeError, match="'run_id' parameter of SecAggConfig"):
        SecAggConfig(7, names)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'round' parameter of SecAggServer must be an int in the range \[0, inf\)"):
        SecAggServer(SecAggConfig("r", names), -1)
    with pytest.raises(ConfigError, match="Site 'e' is not in the secure-aggregation roster"):
        SecAggClient(SecAggConfig("r", names), "e", 0, None, None)  # type: ignore[arg-type]


def test_secagg_plus_graph_is_regular_symmetric_connected_and_the_same_for_every_party() -> None:
    config = SecAggConfig("r", tuple(f"s{i}" for i in range(30)), neighbours=6)
    graph = masking_graph(config, 4, config.roster)
    assert graph == masking_graph(config, 4, list(reversed(config.roster)))  # order of arrival does not matter
    assert graph != masking_graph(config, 5, config.roster)  # a fresh ring every round
    assert all(len(peers) == 6 and site not in peers for site, peers in graph.items())
    assert all(site in graph[peer] for site, peers in graph.items() for peer in peers)
    seen, todo = set(), ["s0"]
    while todo:
        seen.add(node := todo.pop())
        todo += graph[node] - seen
    assert seen == set(config.roster)
    small = masking_graph(config, 4, config.roster[:7])  # too few for 6 neighbours each: everyone
    assert all(peers == set(config.roster[:7]) - {site} for site, peers in small.items())


def test_any_t_shamir_shares_rebuild_the_secret_and_an_altered_share_is_caught() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 5, 8, 13, 21], threshold=4)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares.values())
    for subset in itertools.combinations(shares, 4):
        assert shamir.combine({x: shares[x] for x in subset}, 4) == secret
    assert shamir.split(secret, [1, 2, 3], 2) != shamir.split(secret, [1, 2, 3], 2)  # fresh coefficients
    altered = {**shares, 1: (int.from_bytes(shares[1], "big") ^ 1).to_bytes(shamir.SHARE_BYTES, "big")}
    with pytest.raises(SecAggAuthenticationError, match="do not rebuild a 32-byte secret"):
        shamir.combine(altered, 4)
    with pytest.raises(ConfigError, match="threshold must be between 1 and the number of shares"):
        shamir.combine({1: shares[1]}, 2)


@pytest.mark.parametrize("frac_bits", [8, 32, 48])
def test_fixed_point_sums_do_not_wrap_up_to_the_stated_range_and_refuse_beyond_it(frac_bits: int) -> None:
    rng = np.random.default_rng(frac_bits)
    n = 5
    limit = fixedpoint.max_abs(n, frac_bits)
    values = rng.uniform(-1, 1, (n, 50)) * limit * (1 - 2.0**-20)
    values[:, 0] = limit * (1 - 2.0**-30)  # every summand near the top: the sum is near 2^63, not past it
    words = sum((fixedpoint.encode(v, n, frac_bits) for v in values), np.zeros(50, dtype=np.uint64))
    exact = np.array([math.fsum(c) for c in values.T])
    assert np.all(np.abs(fixedpoint.decode(words, frac_bits) - exact) <= _tolerance(n, frac_bits, exact))
    one = fixedpoint.encode(np.array([-1.5, 2.0**-frac_bits / 3]), n, frac_bits)
    assert np.array_equal(fixedpoint.decode(one, frac_bits), [-1.5, 0.0])
    with pytest.raises(SecAggRangeError, match=f"Coordinate 1 of the input is .*frac_bits={frac_bits} and up to 5"):
        fixedpoint.encode(np.array([0.0, -limit]), n, frac_bits)
    with pytest.raises(SecAggRangeError, match="Coordinate 0 of the input is nan"):
        fixedpoint.encode(np.array([np.nan]), n, frac_bits)


def test_a_site_whose_weighted_input_would_overflow_the_ring_is_refused_by_name() -> None:
    config, signers, verifier = _federation(4)
    inputs = {s: (np.ones(3), 1.0) for s in config.roster}
    inputs["site002"] = (np.ones(3), 1e9)  # 1e9 > 2^31 / 4: four such summands could wrap
    with pytest.raises(SecAggRangeError, match=r"Site 'site002', round 0: Coordinate 0 .* below 5.36871e\+08"):
        aggregate_in_process(config, 0, inputs, signers, verifier)

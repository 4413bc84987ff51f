"""Cost of one secure-aggregation round: bytes each site sends and receives, CPU seconds of a site and the server.

Drives :mod:`fedkit.privacy.secagg` step by step with in-process sites (no network), for 4 sites
(every pair masks) and 100 sites (SecAgg+, 14 neighbours; and every pair, for comparison), a vector
of 14 parameters and of 10,000 (+1 weight coordinate each). Bytes are the payload's content (dict
keys, strings, bytes, 8 per int), what a FLARE task carries before its own framing; the plain
update would be 8 bytes per coordinate. CPU seconds are ``time.process_time`` per round, median of
``--rounds`` rounds: a site's is the mean over sites of its four steps, the server's its four steps.

    python benchmarks/secagg_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from fedkit.privacy.identity import ephemeral_identities
from fedkit.privacy.secagg import SecAggClient, SecAggConfig, SecAggServer

SCENARIOS = ((4, None), (100, 14), (100, None))
DIMENSIONS = (14, 10_000)


def payload_bytes(value: Any) -> int:
    """Content bytes of a wire payload: keys, strings and bytes by length, 8 per int."""
    if isinstance(value, dict):
        return sum(len(k.encode()) + payload_bytes(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(payload_bytes(v) for v in value)
    if isinstance(value, str):
        return len(value.encode())
    return len(value) if isinstance(value, bytes) else 8


def one_round(config: SecAggConfig, server_round: int, dim: int, signers: dict, verifier: Any) -> dict[str, float]:
    """Run one server_round; return mean bytes sent/received per site and CPU seconds per site and of the server."""
    rng = np.random.default_rng(server_round)
    cpu: dict[str, float] = defaultdict(float)
    sent: dict[str, int] = defaultdict(int)
    received: dict[str, int] = defaultdict(int)

    def timed(who: str, call: Callable[..., Any], *args: Any) -> Any:
        start = time.process_time()
        out = call(*args)
        cpu[who] += time.process_time() - start
        return out

    def site_step(site: str, call: Callable[..., Any], *args: Any) -> Any:
        for message in args[:1]:
            received[site] += payload_bytes(message.to_wire())
        out = timed(site, call, *args)
        sent[site] += payload_bytes(out.to_wire())
        return out

    server = timed("server", SecAggServer, config, server_round)
    sites = {s: timed(s, SecAggClient, config, s, server_round, signers[s], verifier) for s in config.roster}
    adverts = [site_step(s, c.advertise_keys) for s, c in sites.items()]
    roster = timed("server", server.key_roster, adverts)
    bundles = [site_step(s, c.share_keys, roster) for s, c in sites.items()]
    deliveries = timed("server", server.share_deliveries, bundles)
    masked = [site_step(s, sites[s].mask_input, d, rng.normal(size=dim), 100.0) for s, d in deliveries.items()]
    request = timed("server", server.unmask_request, masked)
    timed("server", server.result, [site_step(s, sites[s].unmask, request) for s in request.survivors])
    n = len(config.roster)
    return {
        "sent": sum(sent.values()) / n,
        "received": sum(received.values()) / n,
        "site_cpu": sum(v for k, v in cpu.items() if k != "server") / n,
        "server_cpu": cpu["server"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'sites':>5} {'graph':>9} {'params':>6} {'t':>3} {'plain B':>8} {'sent B/site':>11} "
          f"{'recv B/site':>11} {'site CPU s':>10} {'server CPU s':>12}")  # fmt: skip
    for n, neighbours in SCENARIOS:
        names = tuple(f"site{i:03d}" for i in range(n))
        config = SecAggConfig("bench", names, neighbours=neighbours)
        signers, verifier = ephemeral_identities(names)
        for dim in DIMENSIONS:
            rows = [one_round(config, r, dim, signers, verifier) for r in range(args.rounds)]
            med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            graph = "all pairs" if neighbours is None else f"k={neighbours}"
            print(f"{n:>5} {graph:>9} {dim:>6} {config.t:>3} {8 * dim:>8} {med['sent']:>11,.0f} "
                  f"{med['received']:>11,.0f} {med['site_cpu']:>10.4f} {med['server_cpu']:>12.4f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

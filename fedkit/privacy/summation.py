"""How the silos' vectors of a round become one sum, written once for both engines.

What a silo contributes to a round's training sum is :func:`update_vector` (its train-size-weighted
update, its train size, SCAFFOLD's control-variate change), and what the server reads back is
:func:`read_update_sum`; evaluation statistics (:func:`fedkit.evalstats.site_stats`) and the
moments of federated standardization are summed as they are. Under secure aggregation every such
sum is one run of the protocol of :mod:`fedkit.privacy.secagg` (Bonawitz et al. 2017): in
simulation :class:`SecureSum` runs it with the silos as objects, remotely each step is a FLARE task
(:mod:`fedkit.remote`); both build the protocol's configuration with :func:`secagg_config`, and a
remote site refuses any other (:func:`check_offered`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit.errors import SecAggError
from fedkit.strategies.base import Controls

if TYPE_CHECKING:
    from fedkit.privacy.secagg import SecAggConfig

Summation = Callable[[Mapping[str, np.ndarray]], np.ndarray]
"""``{silo: vector} -> sum of the vectors``: in the clear, or one run of secure aggregation."""

MIN_PARTICIPANTS = 2
"""Fewest sites a secure sum may have: the sum of one site is its input."""


@dataclass(frozen=True)
class UpdateSum:
    """What the server learns of a round's training under secure aggregation: sums over the silos in it.

    Parameters
    ----------
    weighted_update
        Σ n_k·Δ_k (Δ_k = silo k's parameters minus the global ones).
    weight
        Σ n_k.
    control_delta
        Σ dc_k (SCAFFOLD), else None.
    count
        The number of silos summed.
    silos
        The silos summed, by name (empty when not known).
    """

    weighted_update: np.ndarray
    weight: float
    control_delta: np.ndarray | None
    count: int
    silos: tuple[str, ...] = ()

    def strategy_inputs(self, n_silos: int) -> tuple[np.ndarray, np.ndarray, Controls | None]:
        """``(updates, weights, controls)`` for :meth:`Strategy.aggregate` that give the same step as the silos'.

        The weighted mean is the one update (weight Σ n_k); SCAFFOLD's ``|S|/N · mean(dc)`` is
        ``Σ dc / N``, i.e. one control delta equal to the sum over a federation of ``n_silos``.

        Parameters
        ----------
        n_silos
            The number of silos in the federation (N).
        """
        update = (self.weighted_update / self.weight)[None, :]
        controls = None if self.control_delta is None else Controls(self.control_delta[None, :], n_silos)
        return update, np.array([self.weight]), controls


def update_vector(update: np.ndarray, n_train: int, control_delta: np.ndarray | None = None) -> np.ndarray:
    """What one silo contributes to a round's training sum: ``[n·Δ, n, dc]`` (float64, dc only for SCAFFOLD).

    Parameters
    ----------
    update
        Δ, the silo's parameters minus the global ones.
    n_train
        Its train size (n).
    control_delta
        SCAFFOLD's change of its control variate (dc), else None.
    """
    parts = [float(n_train) * np.asarray(update, np.float64), [float(n_train)]]
    if control_delta is not None:
        parts.append(np.asarray(control_delta, np.float64))
    return np.concatenate(parts)


def read_update_sum(total: np.ndarray, n_params: int, silos: Sequence[str]) -> UpdateSum:
    """The :class:`UpdateSum` in the sum of :func:`update_vector` s (of ``silos``, ``n_params`` parameters).

    Parameters
    ----------
    total
        The sum of the silos' :func:`update_vector` s.
    n_params
        The number of model parameters.
    silos
        The silos summed.
    """
    total = np.asarray(total, np.float64)
    control = total[n_params + 1 :] if len(total) > n_params + 1 else None
    return UpdateSum(total[:n_params], float(total[n_params]), control, len(silos), tuple(silos))


def plain_sum(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The sum of the silos' vectors, in silo order, as the server computes it without secure aggregation.

    Parameters
    ----------
    inputs
        Each silo's vector, by silo name.
    """
    return np.sum([np.asarray(v, np.float64) for v in inputs.values()], axis=0)


def secagg_config(run_id: str, participants: Sequence[str]) -> SecAggConfig:
    """The protocol configuration of one secure sum over ``participants`` (sorted): default threshold and graph.

    The threshold is the smallest majority of each site's share holders and the masking graph is
    SecAgg+'s ``suggested_neighbours`` (every pair up to 10 sites): derived from public values only,
    so a site can rebuild it and refuse anything else (:func:`check_offered`).

    Parameters
    ----------
    run_id
        The job's run id (named in every secure-aggregation message).
    participants
        The sites of this sum.
    """
    from fedkit.privacy.secagg import SecAggConfig, suggested_neighbours

    roster = tuple(sorted(participants))
    return SecAggConfig(run_id, roster, neighbours=suggested_neighbours(len(roster)))


def check_offered(offered: SecAggConfig, site: str, federation: Sequence[str], run_id: str) -> None:
    """A site's check of the protocol configuration the server sends it, before it advertises keys.

    Refuses a run id other than the job's, a roster with a site outside the federation the site
    joined (``federation``, fixed at hello) or without the site itself, a sum of fewer than
    :data:`MIN_PARTICIPANTS` sites, and a lower threshold or other masking graph or precision than
    :func:`secagg_config` gives for that roster (a server could otherwise weaken the protocol).

    Parameters
    ----------
    offered
        The configuration the server sent.
    site
        This site's name.
    federation
        The sites of the federation this site joined (fixed at hello).
    run_id
        The job's run id.
    """
    expected = secagg_config(run_id, offered.roster)
    problems = []
    if offered.run_id != run_id:
        problems.append(f"run id {offered.run_id!r} is not this job's ({run_id!r})")
    strangers = sorted(set(offered.roster) - set(federation))
    if strangers:
        problems.append(f"roster names {strangers}, not in the federation joined at hello ({', '.join(federation)})")
    if site not in offered.roster:
        problems.append(f"roster {list(offered.roster)} lacks this site")
    if len(offered.roster) < MIN_PARTICIPANTS:
        problems.append(f"a sum of {len(offered.roster)} site(s) would show the server this site's own input")
    if offered.roster != expected.roster or (offered.t, offered.neighbours, offered.frac_bits) != (
        expected.t,
        expected.neighbours,
        expected.frac_bits,
    ):
        problems.append(
            f"threshold {offered.t}, neighbours {offered.neighbours}, frac_bits {offered.frac_bits} differ from "
            f"the protocol's ({expected.t}, {expected.neighbours}, {expected.frac_bits})"
        )
    if problems:
        raise SecAggError(
            f"Site {site!r} refuses the secure-aggregation configuration the server sent: "
            + "; ".join(problems)
            + ". The server is misconfigured or faulty; check its fedkit version and the job."
        )


def config_to_wire(config: SecAggConfig) -> dict[str, Any]:
    """A :class:`~fedkit.privacy.secagg.SecAggConfig` as a task payload dict.

    Parameters
    ----------
    config
        The protocol configuration.
    """
    return {
        "run_id": config.run_id,
        "roster": list(config.roster),
        "threshold": config.threshold,
        "neighbours": config.neighbours,
        "frac_bits": config.frac_bits,
    }


def config_from_wire(payload: Mapping[str, Any]) -> SecAggConfig:
    """The configuration :func:`config_to_wire` encoded (validated again on the site).

    Parameters
    ----------
    payload
        The dict :func:`config_to_wire` wrote.
    """
    from fedkit.privacy.secagg import SecAggConfig

    return SecAggConfig(
        str(payload["run_id"]),
        tuple(payload["roster"]),
        payload["threshold"],
        payload["neighbours"],
        int(payload["frac_bits"]),
    )


class SecureSum:
    """The simulation's secure sum: each call is one whole run of the protocol with the silos as objects.

    Site identities are ephemeral Ed25519 keys (:func:`fedkit.privacy.identity.ephemeral_identities`);
    every call uses a new protocol round number, as the remote server does, and its roster is the
    silos of that call. The result equals :func:`plain_sum` within
    :func:`fedkit.privacy.fixedpoint.error_bound` per coordinate.

    Parameters
    ----------
    names
        The silos' names (one ephemeral identity each).
    run_id
        The run id named in every protocol message.
    """

    def __init__(self, names: Sequence[str], run_id: str = "simulation") -> None:
        from fedkit.privacy.identity import ephemeral_identities

        self.run_id = run_id
        self.signers, self.verifier = ephemeral_identities(names)
        self.rounds = 0

    def __call__(self, inputs: Mapping[str, np.ndarray], drop: Mapping[str, str] | None = None) -> np.ndarray:
        """The sum of ``inputs`` through the protocol; ``drop[silo] = step`` makes a silo fall silent (tests).

        Parameters
        ----------
        inputs
            Each silo's vector, by silo name.
        drop
            Silo name -> the protocol step at which it falls silent (tests), else None.
        """
        from fedkit.privacy.secagg import aggregate_in_process

        self.rounds += 1
        config = secagg_config(self.run_id, list(inputs))
        vectors = {name: (np.asarray(v, np.float64), 1.0) for name, v in inputs.items()}
        result = aggregate_in_process(config, self.rounds, vectors, self.signers, self.verifier, drop)
        return result.weighted_sum

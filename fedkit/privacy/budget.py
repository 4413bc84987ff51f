"""How a run spends its privacy budget: the noise it runs with, and ε at δ after every round.

The mechanisms are in :mod:`fedkit.privacy.dp` (client level) and :mod:`fedkit.privacy.dpsgd` (record
level), the accountant in :mod:`fedkit.privacy.accounting`; this module ties them to a
:class:`~fedkit.config.RunConfig`, once for every engine (the simulation, the remote server and each
remote site derive the same numbers from the same config):

- **central / distributed** (client-level DP-FedAvg, McMahan et al. 2018): every silo weighs 1 and
  the noisy sum is divided by the fixed expected number of silos of a round, ``silos_per_round(K,
  fraction)``. The noise multiplier ``z`` is ``dp_noise_multiplier``, or the smallest (within
  :data:`~fedkit.privacy.accounting.NOISE_TOL`) that keeps ε at ``dp_delta`` after ``rounds`` rounds at
  or below ``dp_epsilon``. Silos are drawn as a fixed-size sample (:func:`~fedkit.runner.select_silos`),
  not Poisson-sampled, so every round is accounted at sampling rate 1: exact with ``fraction = 1``,
  conservative below (no amplification by sampling is claimed). Under ``distributed`` each selected
  silo adds ``1/t`` of the noise variance, ``t`` = the silos selected; a round in which only ``m < t``
  contributions reach the sum (dropouts) carries noise multiplier ``z·sqrt(m/t)`` and is accounted so.
- **dpsgd** (Abadi et al. 2016): silo k samples each row with probability ``q_k = batch_size / n_k``
  at each local step; its noise multiplier is ``dp_noise_multiplier``, or solved for silo k alone so
  that its own ``local steps × rounds`` steps stay within ``dp_epsilon`` (a small silo needs more
  noise than a large one; each site can solve its own). ε after round r counts the rounds silo k was
  selected in (a silo selected but dropped out is still counted: conservative); the federation's ε
  is the largest silo's (disjoint rows: parallel composition).

Per round the run history gets rows with split ``privacy`` (:func:`privacy_rows`): ε and the noise
multiplier (model ``global``, silo ``pooled``), for ``distributed`` the contributions that reached the
sum, for ``dpsgd`` each silo's own ε and noise multiplier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fedkit.config import CLIENT_LEVEL, RunConfig, silos_per_round
from fedkit.errors import ConfigError
from fedkit.privacy import accounting, dp
from fedkit.training import PrivateSteps

PRIVACY = "privacy"
"""The ``split`` of the run history's privacy rows."""
ROUND_METRICS: tuple[str, ...] = ("epsilon", "noise_multiplier", "contributions", "selected")
"""The metrics of the privacy rows (``contributions`` with ``dp="distributed"``, ``selected`` with ``dpsgd``)."""


@lru_cache(maxsize=256)
def _solve(target: float, delta: float, sampling_rate: float, steps: int) -> float:
    return accounting.noise_multiplier_for(target, delta, sampling_rate, steps)


@lru_cache(maxsize=4096)
def _epsilon(noise_multipliers: tuple[float, ...], delta: float, sampling_rate: float, steps: int) -> float:
    return accounting.epsilon_of_rounds(noise_multipliers, delta, sampling_rate=sampling_rate, steps=steps)


def client_noise_multiplier(config: RunConfig) -> float:
    """The noise multiplier ``z`` of a client-level run: ``dp_noise_multiplier``, or solved for ``dp_epsilon``.

    Parameters
    ----------
    config
        The run (``dp`` central or distributed).
    """
    if config.dp_noise_multiplier is not None:
        return config.dp_noise_multiplier
    return _solve(float(config.dp_epsilon), float(config.dp_delta), 1.0, config.rounds)  # type: ignore[arg-type]


def dpsgd_sampling_rate(config: RunConfig, n_train: int) -> float:
    """Silo k's Poisson sampling rate ``q_k = batch_size / n_k`` (1 when the batch is the whole silo or more).

    Parameters
    ----------
    config
        The run.
    n_train
        The silo's train rows.
    """
    return accounting.dpsgd_sampling_rates(config.batch_size, [n_train])[0]


def expected_batch_size(config: RunConfig, n_train: int) -> float:
    """What DP-SGD divides a silo's noisy gradient sum by: ``q_k · n_k`` (the batch size, or the silo's rows).

    Parameters
    ----------
    config
        The run.
    n_train
        The silo's train rows.
    """
    return dpsgd_sampling_rate(config, n_train) * n_train


def dpsgd_noise_multiplier(config: RunConfig, n_train: int) -> float:
    """The noise multiplier of DP-SGD in a silo of ``n_train`` rows: given, or solved for that silo alone.

    Solved so that ``local steps × rounds`` steps at rate ``batch_size / n_train`` reach at most
    ``dp_epsilon`` at ``dp_delta`` (every round counted: the bound before the run).

    Parameters
    ----------
    config
        The run (``dp="dpsgd"``).
    n_train
        The silo's train rows.
    """
    if config.dp_noise_multiplier is not None:
        return config.dp_noise_multiplier
    steps = config.local.n_steps(n_train) * config.rounds
    q = dpsgd_sampling_rate(config, n_train)
    return _solve(float(config.dp_epsilon), float(config.dp_delta), q, steps)  # type: ignore[arg-type]


def check_record_delta(config: RunConfig, train_sizes: Mapping[str, int]) -> None:
    """DP-SGD protects a row: δ must be below ``1/n`` for the smallest silo's ``n`` train rows.

    Parameters
    ----------
    config
        The run.
    train_sizes
        Each silo's train rows, by name.

    Raises
    ------
    ConfigError
        When ``dp_delta`` is ``1/n`` or more, naming the silo.
    """
    if config.dp != "dpsgd":
        return
    silo = min(train_sizes, key=lambda name: train_sizes[name])
    n = train_sizes[silo]
    if config.dp_delta is not None and config.dp_delta >= 1 / n:
        raise ConfigError(
            f"The 'dp_delta' parameter of RunConfig must be below 1/n = {1 / n:.4g} with dp='dpsgd' (n = {n} train "
            f"rows of silo {silo!r}, the smallest: a delta of 1/n or more allows a mechanism that publishes one row "
            f"outright); got {config.dp_delta}. Use e.g. dp_delta=1e-3."
        )


def denominator(config: RunConfig, n_silos: int) -> float:
    """The fixed denominator ``q · W`` of DP-FedAvg with uniform weights: the silos a round selects.

    Parameters
    ----------
    config
        The run.
    n_silos
        The federation's silos.
    """
    return float(silos_per_round(n_silos, config.fraction))


def noise_shares(config: RunConfig, n_silos: int) -> int:
    """Into how many shares ``distributed`` splits the noise: the silos a round selects.

    Parameters
    ----------
    config
        The run.
    n_silos
        The federation's silos.
    """
    return silos_per_round(n_silos, config.fraction)


def start_fields(config: RunConfig, train_sizes: Mapping[str, int]) -> dict[str, Any] | None:
    """The DP parameters of a run for its audit log's start record; None without DP.

    Parameters
    ----------
    config
        The run.
    train_sizes
        Each silo's train rows, by name.
    """
    if config.dp == "none":
        return None
    if config.dp in CLIENT_LEVEL:
        z: float | dict[str, float] = client_noise_multiplier(config)
    else:
        z = {silo: dpsgd_noise_multiplier(config, n) for silo, n in train_sizes.items()}
    return {
        "mechanism": config.dp,
        "noise_multiplier": z,
        "clip": config.dp_clip,
        "delta": config.dp_delta,
        "target_epsilon": config.dp_epsilon,
        "accountant": accounting.accountant_name(),
    }


class Ledger:
    """What a run has spent so far, round by round: enough to give ε after each round.

    Client level: the contributions that reached each round's sum (they set the round's noise
    multiplier under ``distributed``). DP-SGD: the rounds each silo was selected in.

    Parameters
    ----------
    config
        The run.
    train_sizes
        Each silo's train rows, by name, in federation order.
    """

    def __init__(self, config: RunConfig, train_sizes: Mapping[str, int]) -> None:
        self.config = config
        self.train_sizes = dict(train_sizes)
        self.contributions: list[int] = []
        self.selected: dict[str, int] = dict.fromkeys(train_sizes, 0)

    @classmethod
    def from_rows(cls, config: RunConfig, train_sizes: Mapping[str, int], rows: Sequence[Mapping[str, Any]]) -> Ledger:
        """The ledger of a run resumed after the rounds of ``rows`` (its recorded history).

        Parameters
        ----------
        config
            The run.
        train_sizes
            Each silo's train rows, by name.
        rows
            The run's recorded metric rows.
        """
        ledger = cls(config, train_sizes)
        mine = [r for r in rows if r["split"] == PRIVACY and r["round"] > 0]
        by_round = {r["round"]: r for r in mine if r["metric"] == "contributions"}
        t = noise_shares(config, len(train_sizes))
        for server_round in sorted({r["round"] for r in mine}):
            row = by_round.get(server_round)
            ledger.contributions.append(t if row is None else int(row["value"]))
        for r in mine:
            if r["silo"] in ledger.selected and r["metric"] == "selected":
                ledger.selected[r["silo"]] += int(r["value"])
        return ledger

    def spend(self, server_round: int, selected: Sequence[str], contributions: int) -> list[dict[str, Any]]:
        """Record round ``server_round`` and return its privacy rows (see :func:`privacy_rows`).

        Parameters
        ----------
        server_round
            The round just done.
        selected
            The silos asked to train in it.
        contributions
            How many silo contributions reached the round's sum.
        """
        self.contributions.append(contributions)
        for silo in selected:
            self.selected[silo] += 1
        return self.rows(server_round, selected)

    def note(self, server_round: int) -> str | None:
        """A sentence when round ``server_round`` carried less noise than planned (distributed DP with dropouts).

        Parameters
        ----------
        server_round
            The round just recorded.
        """
        t = noise_shares(self.config, len(self.train_sizes))
        if self.config.dp != "distributed" or not self.contributions or self.contributions[-1] >= t:
            return None
        m = self.contributions[-1]
        return (
            f"Round {server_round}: only {m} of {t} distributed noise shares reached the sum (dropouts), so the round "
            f"carried noise multiplier {client_noise_multiplier(self.config) * math.sqrt(m / t):.4g} instead of "
            f"{client_noise_multiplier(self.config):.4g}; epsilon is accounted with it and can exceed dp_epsilon."
        )

    def epsilon(self) -> float:
        """ε at ``dp_delta`` after the rounds recorded so far (0 before the first)."""
        config, delta = self.config, float(self.config.dp_delta)  # type: ignore[arg-type]
        if config.dp in CLIENT_LEVEL:
            return _epsilon(self.round_noise(), delta, 1.0, 1)
        return max(self.silo_epsilons().values(), default=0.0)

    def round_noise(self) -> tuple[float, ...]:
        """Each client-level round's noise multiplier: ``z``, times ``sqrt(m/t)`` for a distributed round of m of t."""
        z = client_noise_multiplier(self.config)
        if self.config.dp != "distributed":
            return (z,) * len(self.contributions)
        t = noise_shares(self.config, len(self.train_sizes))
        return tuple(z * math.sqrt(min(m, t) / t) for m in self.contributions)

    def silo_epsilons(self) -> dict[str, float]:
        """DP-SGD: each silo's ε after the rounds it was selected in."""
        delta = float(self.config.dp_delta)  # type: ignore[arg-type]
        out = {}
        for silo, n in self.train_sizes.items():
            z, q = dpsgd_noise_multiplier(self.config, n), dpsgd_sampling_rate(self.config, n)
            out[silo] = _epsilon((z,), delta, q, self.config.local.n_steps(n) * self.selected[silo])
        return out

    def rows(self, server_round: int, selected: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The privacy rows after ``server_round`` (see :func:`privacy_rows`).

        Parameters
        ----------
        server_round
            The round just recorded (0: before any).
        selected
            The silos asked to train in it.
        """

        def row(silo: str, metric: str, value: float) -> dict[str, Any]:
            return {
                "round": server_round,
                "silo": silo,
                "model": "global",
                "split": PRIVACY,
                "metric": metric,
                "value": float(value),
            }

        if self.config.dp in CLIENT_LEVEL:
            z = client_noise_multiplier(self.config)
            out = [row("pooled", "epsilon", self.epsilon()), row("pooled", "noise_multiplier", z)]
            if self.config.dp == "distributed" and server_round > 0:
                out.append(row("pooled", "contributions", self.contributions[-1]))
            return out
        epsilons = self.silo_epsilons()
        binding = max(epsilons, key=lambda silo: epsilons[silo])
        zs = {silo: dpsgd_noise_multiplier(self.config, n) for silo, n in self.train_sizes.items()}
        out = [row("pooled", "epsilon", epsilons[binding]), row("pooled", "noise_multiplier", zs[binding])]
        for silo in self.train_sizes:
            out += [row(silo, "epsilon", epsilons[silo]), row(silo, "noise_multiplier", zs[silo])]
            if server_round > 0:
                out.append(row(silo, "selected", float(silo in selected)))
        return out


def privacy_rows(
    ledger: Ledger | None, server_round: int, selected: Sequence[str], contributions: int
) -> list[dict[str, Any]]:
    """Round ``server_round``'s privacy rows (none without DP), after recording it in ``ledger``.

    Rows have model ``global`` and split ``privacy``: silo ``pooled`` holds the run's ε at δ and noise
    multiplier (DP-SGD: of the silo with the largest ε), with ``distributed`` also the contributions
    that reached the sum; with ``dpsgd`` each silo's row holds its own ε, noise multiplier and whether
    it was selected.

    Parameters
    ----------
    ledger
        The run's ledger (None without DP).
    server_round
        The round just done (0: the initial model, ε = 0).
    selected
        The silos asked to train in it.
    contributions
        How many silo contributions reached the round's sum.
    """
    if ledger is None:
        return []
    if server_round == 0:
        return ledger.rows(0)
    return ledger.spend(server_round, selected, contributions)


@dataclass(frozen=True)
class SiloPrivacy:
    """What a silo does for a DP run, written once for the simulation engine and the remote site.

    Client level: the silo's contribution to the round's secure sum is its update clipped to
    ``dp_clip`` (weight 1), plus under ``distributed`` its share of the noise
    (:func:`fedkit.privacy.dp.silo_contribution`, from :func:`~fedkit.privacy.dp.silo_noise_stream`).
    DP-SGD: Poisson batches and each silo's clip, noise multiplier, expected batch size and noise stream.

    Parameters
    ----------
    config
        The run (``dp`` not ``"none"``).
    n_silos
        The silos of the whole federation (a remote site trains one of them).
    """

    config: RunConfig
    n_silos: int

    def update_vector(self, update: np.ndarray, server_round: int, silo: int) -> np.ndarray:
        """``[clip(update) (+ noise share), 1]``: what the silo adds to a client-level round's sum (float64).

        Parameters
        ----------
        update
            The silo's parameters minus the global ones.
        server_round
            The round.
        silo
            The silo's index in the federation (its noise stream).
        """
        config, clip = self.config, float(self.config.dp_clip)  # type: ignore[arg-type]
        if config.dp == "distributed":
            shares = noise_shares(config, self.n_silos)
            rng = dp.silo_noise_stream(config.seed, server_round, silo)
            z = client_noise_multiplier(config)
            sent = dp.silo_contribution(update, 1.0, clip=clip, noise_multiplier=z, shares=shares, rng=rng)
        else:
            sent = dp.clip_to_norm(update, clip)
        return np.concatenate([sent, [1.0]])

    def plans(
        self, sizes: Sequence[int], steps: Sequence[int], server_round: int, silos: Sequence[int]
    ) -> list[np.ndarray]:
        """DP-SGD's Poisson batch plans of the silos (:func:`fedkit.privacy.dpsgd.poisson_plans`).

        Parameters
        ----------
        sizes
            Each silo's train rows.
        steps
            Each silo's local steps.
        server_round
            The round.
        silos
            The silos' indices in the federation.
        """
        from fedkit.privacy.dpsgd import poisson_plans

        rates = [dpsgd_sampling_rate(self.config, n) for n in sizes]
        return poisson_plans(sizes, rates, steps, seed=self.config.seed, server_round=server_round, silos=silos)

    def steps(self, sizes: Sequence[int], server_round: int, silos: Sequence[int]) -> PrivateSteps:
        """DP-SGD's clipping and noise of the silos for one round (:class:`~fedkit.training.PrivateSteps`).

        Parameters
        ----------
        sizes
            Each silo's train rows.
        server_round
            The round.
        silos
            The silos' indices in the federation.
        """
        from fedkit.privacy.dpsgd import step_noise_stream

        return PrivateSteps(
            float(self.config.dp_clip),  # type: ignore[arg-type]
            tuple(dpsgd_noise_multiplier(self.config, n) for n in sizes),
            tuple(expected_batch_size(self.config, n) for n in sizes),
            tuple(step_noise_stream(self.config.seed, server_round, s) for s in silos),
        )

"""Faults of a federation, as the round loop sees them: silos that vanish from a round, and stragglers.

The remote engine meets them for real: a site that does not answer a task is dropped from that round
as long as ``min_silos`` answered, and FLARE waits ``straggler_timeout`` seconds for the others once
``min_silos`` replied. The simulation engine draws them from the run seed, with the same rules and
the same notes (:class:`Attendance`), so a notebook can study them without a cluster:

- **dropout** ``p``: each selected silo vanishes from a round with probability ``p`` — it does not
  train, its state does not move — drawn from its own stream ``uniform(seed, DROPOUT, round, silo)``;
- **stragglers**: each silo that trains takes a simulated time of ``steps x STEP_SECONDS x (1 + E)``
  with ``E`` a unit exponential from ``uniform(seed, STRAGGLER, round, silo)`` (a shifted
  exponential, the usual model of compute times); the ``min_silos``-th fastest reply arrives at
  ``t_min``, and a silo whose time exceeds ``t_min + straggler_timeout`` is dropped from the round,
  as FLARE drops a late reply. It did train (a real slow site does), so its own state moves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedkit import seeding

STEP_SECONDS = 0.01
"""Simulated seconds of one local optimizer step (so FLamby's 100 steps take 1 s plus a random delay)."""


def vanished(seed: int, server_round: int, stream_ids: Sequence[int], dropout: float) -> np.ndarray:
    """Which of the silos (by stream id) vanish from round ``server_round``: True with probability ``dropout``.

    Parameters
    ----------
    seed
        The run's seed.
    server_round
        The round.
    stream_ids
        The silos' indices in the full federation (their streams).
    dropout
        The probability that a silo vanishes.
    """
    if dropout <= 0 or not len(stream_ids):
        return np.zeros(len(stream_ids), dtype=bool)
    return seeding.uniform(seed, seeding.DROPOUT, server_round, stream_ids, 1)[:, 0] < dropout


def durations(seed: int, server_round: int, stream_ids: Sequence[int], steps: Sequence[int]) -> np.ndarray:
    """Simulated seconds each silo takes for its round: ``steps x STEP_SECONDS x (1 + E)``, E ~ Exp(1), seeded.

    Parameters
    ----------
    seed
        The run's seed.
    server_round
        The round.
    stream_ids
        The silos' indices in the full federation (their streams).
    steps
        Each silo's local optimizer steps this round.
    """
    if not len(stream_ids):
        return np.zeros(0)
    u = seeding.uniform(seed, seeding.STRAGGLER, server_round, stream_ids, 1)[:, 0]
    return np.asarray(steps, dtype=np.float64) * STEP_SECONDS * (1.0 - np.log1p(-u))


def late(times: np.ndarray, timeout: float, min_silos: int) -> np.ndarray:
    """Which replies come later than ``timeout`` after the ``min_silos``-th fastest one (FLARE's wait rule).

    Parameters
    ----------
    times
        Each reply's simulated arrival time, in seconds.
    timeout
        Seconds the server waits after the ``min_silos``-th reply.
    min_silos
        The replies the server waits for before the timeout starts.
    """
    if not len(times):
        return np.zeros(0, dtype=bool)
    need = min(max(min_silos, 1), len(times))
    return times > np.sort(times)[need - 1] + timeout


ABSENT_GRACE = 0.5
"""Least seconds the remote server waits for a site that missed its previous task, once the others have answered."""


def wait_over(
    elapsed: float,
    replied_at: Mapping[str, float],
    targets: Collection[str],
    absent: Collection[str],
    need: int,
    straggler_timeout: float,
    min_grace: float = ABSENT_GRACE,
) -> bool:
    """Whether the remote server stops waiting for a task's replies ``elapsed`` seconds after sending it.

    FLARE's rule: once ``need`` sites replied, wait ``straggler_timeout`` seconds more for the others;
    stop as soon as every target replied. One addition, so that a site that is gone does not cost the
    full timeout in every task of every round: a site ``absent`` from its previous task is waited for
    only a grace period once the present sites have all replied — three times as long as they took
    (at least ``min_grace``, at most ``straggler_timeout``), so a loaded machine gives more. A site
    that comes back answers within it and is present again.

    Parameters
    ----------
    elapsed
        Seconds since the task was sent.
    replied_at
        Seconds after sending at which each site that replied did, by site.
    targets
        The sites the task was sent to.
    absent
        The targets that did not answer their previous task.
    need
        The replies to wait for before the straggler timeout starts (``min_silos``).
    straggler_timeout
        Seconds to wait for the others once ``need`` sites replied.
    min_grace
        Least seconds to wait for absent sites after the present ones replied.
    """
    if set(targets) <= set(replied_at):
        return True
    times = sorted(replied_at.values())
    if times and need <= len(times) and elapsed >= times[max(need, 1) - 1] + straggler_timeout:
        return True
    present = [t for t in targets if t not in absent]
    if len(times) < need or not all(p in replied_at for p in present):
        return False
    done = max((replied_at[p] for p in present), default=0.0)
    return elapsed >= done + min(straggler_timeout, max(min_grace, 3 * done))


def dropout_note(server_round: int, silo: str, what: str, answered: int, asked: int) -> str:
    """The note of a silo that did not answer ``what`` (training, evaluation...) in round ``server_round``.

    Parameters
    ----------
    server_round
        The round.
    silo
        The silo that did not answer.
    what
        The task: "training", "evaluation"...
    answered
        How many silos answered.
    asked
        How many were asked.
    """
    return (
        f"Round {server_round}: silo {silo!r} dropped out ({what}: no reply in time); "
        f"the round went on with {answered} of {asked} silos."
    )


def rejoin_note(server_round: int, silo: str, what: str) -> str:
    """The note of a silo that answers again after it dropped out.

    Parameters
    ----------
    server_round
        The round.
    silo
        The silo that answered again.
    what
        The task it answered.
    """
    return f"Round {server_round}: silo {silo!r} rejoined ({what})."


@dataclass
class Attendance:
    """Who dropped out and has not answered since; turns each round's answers into dropout and rejoin notes.

    Parameters
    ----------
    missing
        The silos that dropped out and have not answered since.
    """

    missing: set[str] = field(default_factory=set)

    def update(self, server_round: int, asked: Sequence[str], answered: Sequence[str], what: str) -> list[str]:
        """Record which of ``asked`` answered ``what``; returns the notes of new dropouts and of rejoins.

        Parameters
        ----------
        server_round
            The round.
        asked
            The silos asked, in order.
        answered
            Those that answered.
        what
            The task: "training", "evaluation"...
        """
        notes = []
        present = set(answered)
        for name in asked:
            if name not in present and name not in self.missing:
                self.missing.add(name)
                notes.append(dropout_note(server_round, name, what, len(present), len(asked)))
            elif name in present and name in self.missing:
                self.missing.discard(name)
                notes.append(rejoin_note(server_round, name, what))
        return notes

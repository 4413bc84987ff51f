"""What a site keeps of a run between rounds, in its own workspace: its silo's state after each round it trained.

SCAFFOLD's control variate and FedPer's personal parameters live only on the site (the server never
sees them), so resuming a remote run needs each site to keep them. After every round it trains, a
site stores its one-silo engine's :meth:`~fedkit.engines.base.Engine.state` under ``(run id, round)``
in one SQLite transaction, in ``<site workspace>/fedkit/state.sqlite``, and keeps the last three rounds:
a site trains round r + 1 with round r's evaluation (one task,
:meth:`~fedkit.remote.server.RemoteEngine.expect_fit`), so the server may die after a site stored round
r + 1 and before it committed round r itself, and then resumes from round r - 1. A resumed run asks
each site for its state *after round r*: the latest it stored at or before r (a site that missed rounds
kept its state unchanged since, as in the simulation).
The arrays are encoded as a checkpoint (:mod:`fedkit.tracking.checkpoint`: an ``.npz``, no pickle).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

KEEP = 3
"""Rounds of a run a site keeps (the server's checkpoint is at most two rounds behind a site's)."""
FILE = "state.sqlite"
"""The file in the site's ``fedkit`` folder."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS silo_state (
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (run_id, round)
);
"""


class SiteState:
    """A site's own store of its silo's state per (run, round), in the SQLite file ``path``.

    Parameters
    ----------
    path
        The SQLite file (created with its folder on first use).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            con.executescript(SCHEMA)
            with con:  # one transaction
                yield con
        finally:
            con.close()

    def save(self, run_id: str, server_round: int, state: Mapping[str, np.ndarray]) -> None:
        """Keep the silo's state after ``server_round`` of ``run_id``, dropping all but the last :data:`KEEP` rounds.

        Parameters
        ----------
        run_id
            The run.
        server_round
            The round the site just trained.
        state
            The site engine's state (named arrays).
        """
        from fedkit.tracking.checkpoint import Checkpoint, encode

        blob = encode(Checkpoint(server_round, np.zeros(0, np.float32), {}, dict(state)))
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO silo_state VALUES (?, ?, ?)", (run_id, server_round, blob))
            con.execute(
                "DELETE FROM silo_state WHERE run_id = ? AND round NOT IN "
                "(SELECT round FROM silo_state WHERE run_id = ? ORDER BY round DESC LIMIT ?)",
                (run_id, run_id, KEEP),
            )

    def load(self, run_id: str, at_most: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """The silo's state after round ``at_most`` of ``run_id``: the latest stored at or before it, with its round.

        None when the site stored none (it has not trained in that run, or its file was lost).

        Parameters
        ----------
        run_id
            The run.
        at_most
            The round the run resumes after.
        """
        from fedkit.tracking.checkpoint import decode

        if not self.path.exists():
            return None
        with self._connect() as con:
            found = con.execute(
                "SELECT round, state FROM silo_state WHERE run_id = ? AND round <= ? ORDER BY round DESC LIMIT 1",
                (run_id, at_most),
            ).fetchone()
        if found is None:
            return None
        return int(found[0]), decode(bytes(found[1])).engine

    def rounds(self, run_id: str) -> list[int]:
        """The rounds of ``run_id`` this site keeps, oldest first.

        Parameters
        ----------
        run_id
            The run.
        """
        if not self.path.exists():
            return []
        with self._connect() as con:
            rows = con.execute("SELECT round FROM silo_state WHERE run_id = ? ORDER BY round", (run_id,)).fetchall()
        return [int(r[0]) for r in rows]

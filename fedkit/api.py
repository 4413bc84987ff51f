"""Reading the local run store from Python: ``fedkit.runs()`` and ``fedkit.load_run(id)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedkit.tracking.local import LocalStore

if TYPE_CHECKING:
    import pandas as pd


def runs(store: LocalStore | None = None) -> pd.DataFrame:
    """All recorded runs, newest first, one row each (id, status, split, strategy, final scores)."""
    import pandas as pd

    return pd.DataFrame((store or LocalStore()).list_runs())


def load_run(run_id: str, store: LocalStore | None = None) -> dict[str, Any]:
    """One recorded run (a unique id prefix is enough): status, config, data, summary, final params."""
    return (store or LocalStore()).get(run_id)

"""The one entry point of a run, ``fedkit.run``, and reading the run store: ``fedkit.runs()``, ``fedkit.load_run(id)``.

:func:`run` checks its arguments once, then chooses the deployment the config names: the simulation
(load the federation, build the engine, call the round loop :func:`fedkit.runner.run`) or the
remote engine (submit the job to an NVIDIA FLARE federation, :func:`fedkit.remote.submit.run_remote`).
The CLI, the widgets and the report notebooks call it; nothing below it knows that the remote
engine exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedkit.config import ENGINES, RunConfig, load_federation
from fedkit.errors import ConfigError, ConfigTypeError
from fedkit.tracking.local import LocalStore

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from fedkit.data.silos import Federation
    from fedkit.engines.base import Engine
    from fedkit.result import RoundEvent, RunResult
    from fedkit.runner import UpdateHook
    from fedkit.tracking.base import Tracker


def check_engine(engine: str, admin_kit: str | Path | None = None) -> None:
    """Refuse an engine this installation cannot run, or an admin kit without the remote engine, saying what to do.

    Parameters
    ----------
    engine
        The engine a run asks for: ``"simulation"`` or ``"remote"``.
    admin_kit
        The NVIDIA FLARE admin startup kit folder, given only with the remote engine.

    Raises
    ------
    ConfigError
        When ``engine`` is unknown or needs an extra this installation lacks, or ``admin_kit`` is missing (remote)
        or given (simulation).
    """
    if engine not in ENGINES:
        raise ConfigError(f"The engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}.")
    if engine == "remote":
        if find_spec("fedkit.remote") is None or find_spec("nvflare") is None:
            raise ConfigError(
                "engine='remote' needs NVIDIA FLARE (fedkit.remote and nvflare): pip install 'fedkit[remote]', "
                "or use engine='simulation'."
            )
        if admin_kit is None:
            raise ConfigError(
                "engine='remote' needs admin_kit (--admin-kit on the command line): the path to the FLARE admin "
                "startup kit (`fedkit remote provision` or `fedkit remote poc` makes one)."
            )
    elif admin_kit is not None:
        raise ConfigError(f"admin_kit only applies to engine='remote'; got admin_kit={admin_kit!r} with {engine!r}.")


def _refuse(engine: str, given: Mapping[str, Any], why: str) -> None:
    """Raise when an argument that does not apply to ``engine`` was given (is not None / not empty)."""
    extra = [name for name, value in given.items() if value is not None and value != ()]
    if extra:
        names = ", ".join(f"{name}=" for name in extra)
        raise ConfigError(f"engine={engine!r} takes no {names} ({why}); drop {'it' if len(extra) == 1 else 'them'}.")


def run(
    config: RunConfig | None = None,
    *,
    federation: Federation | None = None,
    model: nn.Module | None = None,
    engine: Engine | None = None,
    trackers: Sequence[Tracker] | None = None,
    hooks: Sequence[UpdateHook] = (),
    callbacks: Sequence[Callable[[RoundEvent], None]] = (),
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    admin_kit: str | Path | None = None,
    min_silos: int | None = None,
    straggler_timeout: int | None = None,
) -> RunResult:
    """Run federated training as ``config`` says (default: ``RunConfig()``) and record it; returns the result.

    Every run is recorded in ``trackers``; round 0 is the initial model. Ctrl-C records the run as ``stopped``;
    an exception records ``failed`` and is re-raised.

    Simulation (``config.engine == "simulation"``) trains every silo in this process. Remote
    (``config.engine == "remote"``) sends the run to the NVIDIA FLARE federation of ``admin_kit`` and records it
    here all the same (see :func:`fedkit.remote.submit.run_remote`).

    Parameters
    ----------
    config
        The run (default: ``RunConfig()``, FLamby's FedAvg benchmark).
    federation
        Simulation: the silos to train on (default: the one the config describes,
        :func:`fedkit.config.load_federation`).
    model
        Simulation: any ``torch.nn.Module`` returning logits, trained on the per-silo path (default:
        ``config.model``).
    engine
        Simulation: any :class:`~fedkit.engines.base.Engine` to use instead of the simulation engine.
    trackers
        Where the run is recorded (default: the local run store; :func:`fedkit.make_trackers` adds SageMaker or
        MLflow).
    hooks
        Simulation: called on every silo reply before aggregation (validation, privacy).
    callbacks
        Called with a :class:`~fedkit.result.RoundEvent` after each round (round 0 is the initial model).
    should_stop
        Checked after each round; when it returns True the run ends cleanly as ``stopped``.
    progress
        Show a progress bar over the rounds.
    admin_kit
        Remote: the admin startup kit folder of the FLARE federation.
    min_silos
        Remote: the fewest sites a round may aggregate (default 1).
    straggler_timeout
        Remote: seconds to wait for the other sites once ``min_silos`` replied (default 10).

    Returns
    -------
    RunResult
        The run's status, config, metric history and final parameters.

    Raises
    ------
    ConfigTypeError
        When ``config`` is not a RunConfig.
    ConfigError
        When an argument does not apply to the config's engine (e.g. ``admin_kit`` with the simulation, ``model``
        with the remote engine).
    DataError
        When the data files are missing, corrupted or break the federation's schema.
    RemoteRunError
        Remote: when too few sites take part or a site fails.
    """
    if config is None:
        config = RunConfig()
    if not isinstance(config, RunConfig):
        raise ConfigTypeError(
            f"run() takes a RunConfig; got {type(config).__name__}. Build one with fedkit.RunConfig(...)."
        )
    check_engine(config.engine, admin_kit)
    trackers = list(trackers) if trackers is not None else [LocalStore()]
    if config.engine == "remote":
        from fedkit.remote.submit import run_remote

        given = {"federation": federation, "model": model, "engine": engine, "hooks": tuple(hooks)}
        _refuse("remote", given, "each site loads its own hospital and trains the config's model")
        timeouts = {"min_silos": min_silos or 1, "straggler_timeout": straggler_timeout or 10}
        return run_remote(
            config,
            admin_kit=admin_kit,  # type: ignore[arg-type]  # check_engine made sure it is set
            trackers=trackers,
            callbacks=callbacks,
            should_stop=should_stop,
            progress=progress,
            **timeouts,
        )
    from fedkit import runner

    _refuse("simulation", {"min_silos": min_silos, "straggler_timeout": straggler_timeout}, "no sites to wait for")
    federation = federation or load_federation(config)
    if engine is None:
        from fedkit.engines.simulation import make_engine

        engine = make_engine(federation, config, model)
    return runner.run(
        config,
        federation,
        engine,
        trackers=trackers,
        hooks=hooks,
        callbacks=callbacks,
        should_stop=should_stop,
        progress=progress,
    )


def run_seeds(
    fields: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    tracker: str | Sequence[str] = "local",
    engine: str = "simulation",
    admin_kit: str | Path | None = None,
) -> list[RunResult]:
    """One run per seed of the RunConfig ``fields`` on ``engine`` (all validated first), recorded in ``tracker``.

    Parameters
    ----------
    fields
        RunConfig fields shared by every run (``seed`` is set per run).
    seeds
        One run per seed, in this order (at least one).
    tracker
        Tracker name(s) the runs are recorded in (see :func:`fedkit.make_trackers`).
    engine
        ``"simulation"`` or ``"remote"``.
    admin_kit
        The FLARE admin startup kit folder (remote engine only).

    Returns
    -------
    list[RunResult]
        One result per seed.

    Raises
    ------
    ConfigError
        When a field is invalid or ``seeds`` is empty; nothing has run then.
    TrackerError
        When ``tracker`` names an unknown backend or one whose extra is missing; nothing has run then.
    """
    from fedkit.tracking.factory import make_trackers

    check_engine(engine, admin_kit)
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds:
        raise ConfigError("seeds must list at least one seed, e.g. [42] or [42, 43, 44, 45, 46].")
    configs = [RunConfig.from_dict({**fields, "engine": engine, "seed": int(s)}) for s in seeds]
    return [run(c, trackers=make_trackers(tracker), progress=False, admin_kit=admin_kit) for c in configs]


def runs(store: LocalStore | None = None) -> pd.DataFrame:
    """All recorded runs, newest first, one row each (id, status, split, strategy, final scores).

    Parameters
    ----------
    store
        The run store to read (default: ``$FEDKIT_HOME/runs.sqlite``).
    """
    import pandas as pd

    return pd.DataFrame((store or LocalStore()).list_runs())


def load_run(run_id: str, store: LocalStore | None = None) -> dict[str, Any]:
    """One recorded run (a unique id prefix is enough): status, config, data, summary, final params.

    Parameters
    ----------
    run_id
        The run's id, or a prefix of it that matches one run only.
    store
        The run store to read (default: ``$FEDKIT_HOME/runs.sqlite``).

    Raises
    ------
    RunNotFoundError
        When no run, or more than one, matches ``run_id``.
    """
    return (store or LocalStore()).get(run_id)

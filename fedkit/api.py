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

RESUMABLE: tuple[str, ...] = ("stopped", "interrupted", "failed")
"""The statuses of a recorded run that ``fedkit.run(resume=...)`` continues."""

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
    resume: str | None = None,
) -> RunResult:
    """Run federated training as ``config`` says (default: ``RunConfig()``) and record it; returns the result.

    Every run is recorded in ``trackers``; round 0 is the initial model. Ctrl-C records the run as ``stopped``;
    an exception records ``failed`` and is re-raised.

    Simulation (``config.engine == "simulation"``) trains every silo in this process. Remote
    (``config.engine == "remote"``) sends the run to the NVIDIA FLARE federation of ``admin_kit`` and records it
    here all the same (see :func:`fedkit.remote.submit.run_remote`).

    Remote: ``config.min_silos`` is the fewest sites a round may aggregate, ``config.straggler_timeout``
    (default 10 s) how long to wait for the others once they replied.

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
        Simulation: called on every silo reply before validation and aggregation (privacy).
    callbacks
        Called with a :class:`~fedkit.result.RoundEvent` after each round (round 0 is the initial model).
    should_stop
        Checked after each round; when it returns True the run ends cleanly as ``stopped``.
    progress
        Show a progress bar over the rounds.
    admin_kit
        Remote: the admin startup kit folder of the FLARE federation.
    resume
        The id (or a unique prefix) of a recorded run that was stopped, interrupted (its process killed) or
        failed, to continue from its last checkpoint with its own config (simulation; ``config`` may be
        omitted, and if given must equal the recorded one). It ends exactly as an uninterrupted run would have.

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
        with the remote engine), or ``config`` differs from the recorded config of the run to ``resume``.
    ResumeError
        When the run to ``resume`` finished, is still running, has no checkpoint or other data.
    RoundFailedError
        When a round cannot be aggregated: too few valid updates (``config.min_silos``) or a diverged model.
    DataError
        When the data files are missing, corrupted or break the federation's schema.
    RemoteRunError
        Remote: when too few sites take part or a site fails.
    """
    if config is not None and not isinstance(config, RunConfig):
        raise ConfigTypeError(
            f"run() takes a RunConfig; got {type(config).__name__}. Build one with fedkit.RunConfig(...)."
        )
    if resume is not None:
        config, resume = resumed_config(config, resume, trackers)
    config = config or RunConfig()
    check_engine(config.engine, admin_kit)
    trackers = list(trackers) if trackers is not None else [LocalStore()]
    if config.engine == "remote":
        from fedkit.remote.submit import run_remote

        given = {"federation": federation, "model": model, "engine": engine, "hooks": tuple(hooks)}
        _refuse("remote", given, "each site loads its own hospital and trains the config's model")
        _refuse("remote", {"resume": resume}, "resuming a remote run is not supported yet")
        timeouts = {"min_silos": config.min_silos, "straggler_timeout": config.straggler_timeout or 10}
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
        resume=resume,
    )


def resumed_config(config: RunConfig | None, resume: str, trackers: Sequence[Tracker] | None) -> tuple[RunConfig, str]:
    """The recorded config and full id of run ``resume``, refusing a run that cannot be resumed or another config.

    Parameters
    ----------
    config
        The config the caller gave (None: take the recorded one).
    resume
        The run's id or a unique prefix of it.
    trackers
        The run's trackers: the first LocalStore among them is read (default: the local store).
    """
    from fedkit.errors import ResumeError

    store = next((t for t in trackers or () if isinstance(t, LocalStore)), None) or LocalStore()
    stored = store.get(resume)
    if stored["status"] not in RESUMABLE:
        why = "it finished" if stored["status"] == "finished" else "it is still running"
        raise ResumeError(
            f"Run {stored['run_id']} cannot be resumed: {why} (status {stored['status']!r}); only a stopped, "
            "interrupted or failed run can. Start a new run with `fedkit run`."
        )
    recorded = RunConfig.from_dict(stored["config"])
    if config is not None and config != recorded:
        differ = [k for k, v in recorded.to_dict().items() if config.to_dict()[k] != v]
        raise ConfigError(
            f"resume={stored['run_id']!r} continues the run with its recorded config; the given config differs in "
            f"{', '.join(differ)}. Drop the config (or those fields) to resume."
        )
    return recorded, stored["run_id"]


def run_seeds(
    fields: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    tracker: str | Sequence[str] = "local",
    engine: str = "simulation",
    admin_kit: str | Path | None = None,
    data_dir: str | Path | None = None,
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
    data_dir
        The folder of the UCI files of a simulation (default: ``$FEDKIT_DATA_DIR``, else the verified
        download); the remote engine's sites read their own, so it refuses one.

    Returns
    -------
    list[RunResult]
        One result per seed.

    Raises
    ------
    ConfigError
        When a field is invalid, ``seeds`` is empty or ``data_dir`` comes with the remote engine; nothing
        has run then.
    TrackerError
        When ``tracker`` names an unknown backend or one whose extra is missing; nothing has run then.
    """
    from fedkit.tracking.factory import make_trackers

    check_engine(engine, admin_kit)
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds:
        raise ConfigError("seeds must list at least one seed, e.g. [42] or [42, 43, 44, 45, 46].")
    if engine == "remote":
        _refuse("remote", {"data_dir": data_dir}, "each site reads its own hospital's file")
    configs = [RunConfig.from_dict({**fields, "engine": engine, "seed": int(s)}) for s in seeds]
    return [
        run(
            c,
            federation=None if engine == "remote" else load_federation(c, data_dir=data_dir),
            trackers=make_trackers(tracker),
            progress=False,
            admin_kit=admin_kit,
        )
        for c in configs
    ]


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

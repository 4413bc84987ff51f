"""The simulation engine: every silo in this process, with the state a real silo would keep.

A silo keeps its SCAFFOLD control variate and, with personalization, its personal parameters:
they never reach the server (the reply carries the global values in those coordinates). Training
goes through a trainer: vectorized numpy for the built-in models, per-silo torch for any module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fedkit import seeding
from fedkit.data import preprocess
from fedkit.data.silos import Federation, Silo
from fedkit.engines import faults
from fedkit.engines.base import Evaluation, FitReply, evaluate_silos
from fedkit.engines.vectorized import split_rows
from fedkit.errors import RoundFailedError
from fedkit.privacy.summation import Summation, UpdateSum, read_update_sum, update_vector
from fedkit.strategies.base import LocalTerm
from fedkit.training import LocalTraining, PrivateSteps, TrainJob, batch_plans

if TYPE_CHECKING:
    from torch import nn

    from fedkit.config import RunConfig
    from fedkit.privacy.budget import SiloPrivacy


PlanFn = Callable[..., list[np.ndarray]]
"""A function with the signature and results of :func:`fedkit.training.batch_plans`."""


class Trainer(Protocol):
    """Local training of several silos and forward passes of one model."""

    def train(
        self,
        silos: Sequence[int],
        starts: np.ndarray,
        plans: Sequence[np.ndarray],
        hp: LocalTraining,
        *,
        prox_mu: float = 0.0,
        anchor: np.ndarray | None = None,
        corrections: np.ndarray | None = None,
        private: PrivateSteps | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New parameters (silos, P), mean train loss and step count per silo.

        Parameters
        ----------
        silos
            The silos' indices in the federation.
        starts
            Each silo's starting parameters, shape (silos, parameters).
        plans
            Each silo's batch plan (:func:`~fedkit.training.batch_plans`).
        hp
            The local-training hyperparameters.
        prox_mu
            FedProx's proximal weight (0: none).
        anchor
            The proximal term's anchor, this round's global parameters.
        corrections
            Each silo's gradient correction (SCAFFOLD's ``c - c_i``), shape (silos, parameters), or None.
        private
            DP-SGD's per-example clipping and noise of each silo, or None.
        """
        ...

    def logits(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits of one model on rows ``x``.

        Parameters
        ----------
        params
            One model's flat parameters.
        x
            Rows, shape (rows, features).
        """
        ...

    def logits_each(self, params: np.ndarray, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Logits of model ``params[i]`` on rows ``xs[i]`` for every i.

        Parameters
        ----------
        params
            One model's flat parameters per row, shape (models, parameters).
        xs
            Each model's rows.
        """
        ...


class SimulationEngine:
    """In-process silos; the batches of silo ``i`` in round ``r`` come from ``stream(seed, SAMPLING, r, i)``.

    Simulated faults follow the remote engine's rules (:mod:`fedkit.engines.faults`); dropouts and rejoins
    go to ``notes``.

    Parameters
    ----------
    federation
        The silos that train.
    trainer
        Trains them and runs the forward passes.
    init
        The initial global parameters.
    local
        The local-training hyperparameters.
    seed
        The run's seed.
    personal
        The parameters each silo keeps for itself (FedPer, or all of them for the ``local`` baseline).
    finetune_steps
        When set, every round also evaluates each silo's copy of the global model fine-tuned for that many steps.
    eval_federation
        The test sets the models are scored on (default: the training federation's).
    stream_ids
        Each silo's index in the full federation, for the batch-plan streams (default ``0..K-1``): a remote site
        runs a one-silo engine with its hospital's index, so it draws the same batches as the simulation.
    plans
        Draws the batch plans (:func:`fedkit.training.batch_plans`; a sweep passes a memoized one, shared by
        the runs of one seed).
    summation
        Sums the silos' statistics and updates under secure aggregation, as the remote server does (default: none).
    dropout
        Simulated faults: the probability that a selected silo vanishes from a round (it does not train).
    straggler_timeout
        Simulated faults: a silo whose simulated time exceeds the ``min_silos``-th fastest one's by more than
        this many seconds is dropped from the round (None: no stragglers).
    min_silos
        The fewest replies a round needs; fewer fail it.
    privacy
        What each silo does for differential privacy (:class:`~fedkit.privacy.budget.SiloPrivacy`): clip (and
        noise) its contribution to a secure sum, or train with DP-SGD; None without DP.
    """

    def __init__(
        self,
        federation: Federation,
        trainer: Trainer,
        init: np.ndarray,
        *,
        local: LocalTraining,
        seed: int,
        personal: np.ndarray | None = None,
        finetune_steps: int | None = None,
        eval_federation: Federation | None = None,
        stream_ids: Sequence[int] | None = None,
        plans: PlanFn = batch_plans,
        summation: Summation | None = None,
        dropout: float = 0.0,
        straggler_timeout: float | None = None,
        min_silos: int = 1,
        privacy: SiloPrivacy | None = None,
    ) -> None:
        self.federation = federation
        self.privacy = privacy
        self._round = 0
        self.plans = plans
        self.summation = summation
        self.eval_federation = eval_federation or federation
        self.trainer = trainer
        self.local = local
        self.seed = seed
        self.personal = personal
        self.finetune_steps = finetune_steps
        self._init = np.asarray(init, dtype=np.float32)
        self._index = {s.name: i for i, s in enumerate(federation.silos)}
        self._stream_ids = list(stream_ids) if stream_ids is not None else list(range(len(federation.silos)))
        self._own = (
            {i: self._init[personal].copy() for i in range(len(federation.silos))} if personal is not None else {}
        )
        self._control: dict[int, np.ndarray] = {}
        self._eval_x = np.concatenate([s.x_test for s in self.eval_federation.silos])
        self.dropout = dropout
        self.straggler_timeout = straggler_timeout
        self.min_silos = min_silos
        self.notes: list[str] = []
        self._attendance = faults.Attendance()

    @property
    def silos(self) -> tuple[str, ...]:
        """Training silo names in order."""
        return self.federation.names

    def initial_params(self) -> np.ndarray:
        """The seeded initial parameters."""
        return self._init.copy()

    def _plans(self, kind: int, server_round: int, idx: Sequence[int], steps: int | None = None) -> list[np.ndarray]:
        sizes = [self.federation.silos[i].n_train for i in idx]
        counts = [steps or self.local.n_steps(n) for n in sizes]
        return self.plans(
            sizes,
            self.local.batch_size,
            counts,
            seed=self.seed,
            kind=kind,
            server_round=server_round,
            silos=[self._stream_ids[i] for i in idx],
        )

    def _starts(self, params: np.ndarray, idx: Sequence[int] | range) -> np.ndarray:
        starts = np.repeat(params[None, :], len(idx), axis=0).astype(np.float32)
        if self.personal is not None:
            for j, i in enumerate(idx):
                starts[j, self.personal] = self._own[i]
        return starts

    def fit(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None = None
    ) -> list[FitReply]:
        """Train ``silos`` from ``params``, adding the strategy's local term; one reply per silo that answered.

        Without simulated faults every silo answers. With them, vanished silos do not train, stragglers
        train but their replies are dropped, each change is noted, and too few replies fail the round.
        """
        self._round = server_round
        ids = np.asarray([self._stream_ids[self._index[name]] for name in silos], dtype=np.int64)
        gone = faults.vanished(self.seed, server_round, ids, self.dropout)
        replies = self._fit_answering(
            params, server_round, [s for s, g in zip(silos, gone, strict=True) if not g], term
        )
        if self.straggler_timeout is not None:
            trained = np.asarray([self._stream_ids[self._index[r.silo]] for r in replies], dtype=np.int64)
            times = faults.durations(self.seed, server_round, trained, [r.steps for r in replies])
            slow = faults.late(times, self.straggler_timeout, self.min_silos)
            replies = [r for r, is_late in zip(replies, slow, strict=True) if not is_late]
        answered = [r.silo for r in replies]
        self.notes += self._attendance.update(server_round, silos, answered, "training")
        need = min(self.min_silos, len(silos))
        if len(replies) < max(need, 1):
            raise RoundFailedError(
                f"Round {server_round}: only {len(replies)} of {len(silos)} silos answered training "
                f"({', '.join(answered) or 'none'}) under the simulated faults (dropout={self.dropout}, "
                f"straggler_timeout={self.straggler_timeout}); the run needs min_silos={self.min_silos}. "
                "Lower dropout or min_silos, or raise straggler_timeout.",
                server_round=server_round,
                silos=tuple(s for s in silos if s not in answered),
            )
        return replies

    def _fit_answering(
        self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm | None
    ) -> list[FitReply]:
        """Local training of ``silos`` (all of them answer)."""
        if not silos:
            return []
        term = term or LocalTerm()
        job = self.fit_job(params, server_round, silos, term)
        return self.fit_replies(job, params, term, self._train(job))

    def fit_job(self, params: np.ndarray, server_round: int, silos: Sequence[str], term: LocalTerm) -> TrainJob:
        """The local training :meth:`fit` asks of the trainer: starts, batch plans, proximal term, corrections.

        A sweep collects the jobs of many runs, trains them in one stacked call
        (:func:`fedkit.engines.vectorized.train_many`) and hands each result to :meth:`fit_replies`.

        Parameters
        ----------
        params
            The global parameters.
        server_round
            The round.
        silos
            Names of the silos that train.
        term
            The strategy's local term.

        Returns
        -------
        TrainJob
            What the trainer is to run.
        """
        self._round = server_round
        idx = [self._index[name] for name in silos]
        corrections = None
        if term.control is not None:
            zero = np.zeros_like(params)
            corrections = np.stack([term.control - self._control.get(i, zero) for i in idx])
        private = None
        if self.privacy is not None and self.privacy.config.dp == "dpsgd":
            sizes = [self.federation.silos[i].n_train for i in idx]
            streams = [self._stream_ids[i] for i in idx]
            plans = self.privacy.plans(sizes, [self.local.n_steps(n) for n in sizes], server_round, streams)
            private = self.privacy.steps(sizes, server_round, streams)
        else:
            plans = self._plans(seeding.SAMPLING, server_round, idx)
        starts = self._starts(params, idx)
        return TrainJob(idx, starts, plans, self.local, term.prox_mu, term.anchor, corrections, private)

    def fit_replies(
        self,
        job: TrainJob,
        params: np.ndarray,
        term: LocalTerm,
        trained: tuple[np.ndarray, np.ndarray, np.ndarray],
        *,
        score_local: bool = True,
    ) -> list[FitReply]:
        """The replies of ``job``'s silos once trained: silo-side state kept (control variates, personal parameters).

        Parameters
        ----------
        job
            The job :meth:`fit_job` built.
        params
            The global parameters it started from.
        term
            The strategy's local term of the round.
        trained
            The trainer's result for the job: new parameters, mean losses, step counts.
        score_local
            Score each local model on its silo's test set (False: the replies carry no scores; nothing records them).

        Returns
        -------
        list of FitReply
            One reply per silo of the job.
        """
        idx = job.silos
        new, losses, steps = trained
        silos = [self.federation.silos[i] for i in idx]
        local = None
        if score_local:
            logits = self.trainer.logits_each(new, [s.x_test for s in silos])
            local = evaluate_silos([s.name for s in silos], [s.y_test for s in silos], logits, pooled=False)
        replies = []
        for j, (i, silo) in enumerate(zip(idx, silos, strict=True)):
            local_model = new[j]
            control_delta = None
            if term.control is not None:
                # SCAFFOLD option II: c_i+ = c_i - c + (x - y_i) / (K * lr)
                old = self._control.get(i, np.zeros_like(params))
                fresh = old - term.control + (params - local_model) / (steps[j] * self.local.lr)
                self._control[i] = fresh  # float64, as the server's control (Scaffold's state)
                control_delta = fresh - old
            sent = local_model.copy()
            if self.personal is not None:
                self._own[i] = local_model[self.personal].copy()
                sent[self.personal] = params[self.personal]  # personal parameters stay on the silo
            replies.append(
                FitReply(
                    silo.name,
                    sent,
                    silo.n_train,
                    float(losses[j]),
                    int(steps[j]),
                    None if local is None else local.silos[j],
                    control_delta,
                )
            )
        return replies

    def state(self) -> dict[str, np.ndarray]:
        """What the silos keep between rounds, for a checkpoint: SCAFFOLD's control variates, personal parameters.

        ``control`` (silos, parameters) holds the control variate of each silo named in ``control_silos``
        (the silos that have trained); ``personal`` (silos, personal parameters) each silo's personal
        parameters, in federation order; ``missing`` the silos that dropped out and have not answered
        since (for the rejoin notes). Fine-tuning keeps nothing: each round fine-tunes a fresh copy of
        the global model. Stacked, so a thousand silos are a few arrays; copies.
        """
        names = self.federation.names
        trained = sorted(self._control)
        out = {
            "control_silos": np.array([names[i] for i in trained], dtype=np.str_),
            "control": np.array([self._control[i] for i in trained], dtype=np.float64).reshape(
                len(trained), self._init.size
            ),
            "missing": np.array(sorted(self._attendance.missing), dtype=np.str_),
        }
        if self.personal is not None:
            out["personal"] = np.stack([self._own[i] for i in range(len(names))])
        return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Put the silos back in the :meth:`state` they had (the engine's own state is replaced, not merged)."""
        silos = [self._index[str(name)] for name in state["control_silos"]]
        self._control = {i: np.array(c) for i, c in zip(silos, state["control"], strict=True)}
        if self.personal is not None:
            self._own = {i: np.array(p) for i, p in enumerate(state["personal"])}
        self._attendance = faults.Attendance({str(s) for s in state["missing"]})

    def sum_updates(self, replies: Sequence[FitReply], params: np.ndarray) -> UpdateSum:
        """The replies' :func:`~fedkit.privacy.summation.update_vector` s summed by this engine's secure sum."""
        if self.summation is None:
            raise TypeError("sum_updates needs an engine built with a summation (secure_aggregation=True).")
        inputs = {r.silo: self.update_vector(r, params, self._round) for r in replies}
        return read_update_sum(self.summation(inputs), len(params), list(inputs))

    def update_vector(self, reply: FitReply, params: np.ndarray, server_round: int) -> np.ndarray:
        """What the silo of ``reply`` adds to the round's secure sum (a remote site sends the same).

        :func:`~fedkit.privacy.summation.update_vector` (``[n·Δ, n, dc]``), or under client-level DP
        ``[clip(Δ) (+ its noise share), 1]`` (:meth:`fedkit.privacy.budget.SiloPrivacy.update_vector`).

        Parameters
        ----------
        reply
            The silo's reply.
        params
            The global parameters the round started from.
        server_round
            The round.
        """
        update = reply.params - params  # type: ignore[operator]
        if self.privacy is not None and self.privacy.config.dp in ("central", "distributed"):
            return self.privacy.update_vector(update, server_round, self._stream_ids[self._index[reply.silo]])
        return update_vector(update, reply.n_train, reply.control_delta)

    def _evaluation(self, silos: Sequence[Silo], logits: Sequence[np.ndarray]) -> Evaluation:
        names, labels = [s.name for s in silos], [s.y_test for s in silos]
        return evaluate_silos(names, labels, logits, summation=self.summation)

    def evaluate(self, params: np.ndarray) -> Evaluation:
        """The global model on every evaluation silo's test set (one forward pass over all of them)."""
        silos = self.eval_federation.silos
        z = split_rows(self.trainer.logits(params, self._eval_x), [s.n_test for s in silos])
        return self._evaluation(silos, z)

    def evaluate_personal(self, params: np.ndarray, server_round: int, models: np.ndarray | None = None) -> Evaluation:
        """Each silo's own model on its own test set: global + personal parameters, or fine-tuned from global.

        Parameters
        ----------
        params
            The global parameters.
        server_round
            The round (it seeds the fine-tuning batches).
        models
            The silos' fine-tuned models when already trained (a sweep trains the :meth:`finetune_job`
            of many runs in one stacked call); None: fine-tuned here.

        Returns
        -------
        Evaluation
            Each silo's own model's evaluation on its test set (and the summed statistics).
        """
        silos = self.federation.silos
        if models is None:
            job = self.finetune_job(params, server_round)
            models = self._starts(params, range(len(silos))) if job is None else self._train(job)[0]
        return self._evaluation(silos, self.trainer.logits_each(models, [s.x_test for s in silos]))

    def finetune_job(self, params: np.ndarray, server_round: int) -> TrainJob | None:
        """The fine-tuning of every silo from ``params`` that :meth:`evaluate_personal` scores.

        Parameters
        ----------
        params
            The global parameters.
        server_round
            The round.

        Returns
        -------
        TrainJob or None
            None when the run does not fine-tune.
        """
        if self.finetune_steps is None:
            return None
        idx = list(range(len(self.federation.silos)))
        plans = self._plans(seeding.FINETUNE, server_round, idx, self.finetune_steps)
        return TrainJob(idx, self._starts(params, idx), plans, self.local)

    def _train(self, job: TrainJob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        term = {"prox_mu": job.prox_mu, "anchor": job.anchor, "corrections": job.corrections}
        if job.private is not None:
            term["private"] = job.private
        return self.trainer.train(job.silos, job.starts, job.plans, job.hp, **term)


def pooled_federation(federation: Federation) -> Federation:
    """One training silo holding every silo's train rows (the non-federated reference), as FLamby pools them.

    A centralized trainer knows the statistics of all train rows, so FLamby's pooled baseline
    standardizes the pooled train rows with them, while each center's test rows stay standardized
    with that center's own statistics. Under ``standardize="silo"`` the train rows are therefore
    restored with each silo's statistics and standardized with the pooled ones (``train_moments``);
    under ``"federated"`` or ``"none"`` they already are. That is what reproduces FLamby's pooled
    Avg4 (0.7353); pooling the silo-standardized rows as they are scores 0.7151.

    Parameters
    ----------
    federation
        The silos to pool.
    """
    x_train = [s.x_train for s in federation.silos]
    moments = federation.train_moments
    if federation.options.get("standardize") == "silo" and moments is not None:
        pooled_mean, pooled_std = preprocess.mean_std(preprocess.combine(list(moments)))
        x_train = [
            preprocess.standardize(
                preprocess.unstandardize(x, *preprocess.mean_std(m)), pooled_mean, pooled_std
            ).astype(np.float32)
            for x, m in zip(x_train, moments, strict=True)
        ]
    merged = Silo(
        "all-silos",
        np.concatenate(x_train),
        np.concatenate([s.y_train for s in federation.silos]),
        np.concatenate([s.x_test for s in federation.silos]),
        np.concatenate([s.y_test for s in federation.silos]),
    )
    return replace(federation, silos=(merged,), train_moments=None)


def make_engine(
    federation: Federation,
    config: RunConfig,
    model: nn.Module | None = None,
    *,
    stream_ids: Sequence[int] | None = None,
    trainer: Trainer | None = None,
    plans: PlanFn = batch_plans,
    summation: Summation | None = None,
    federation_size: int | None = None,
) -> SimulationEngine:
    """The simulation engine ``config`` asks for: trainer, initial parameters, personalization, baselines.

    Parameters
    ----------
    federation
        The silos.
    config
        The run.
    model
        Any ``torch.nn.Module`` returning logits; it always trains on the per-silo path (default: ``config.model``).
    stream_ids
        Lets a remote site build the engine of its own silo only (its index in the full federation).
    trainer
        A vectorized trainer over the training silos, shared by the runs of one federation (a sweep);
        default: one built here.
    plans
        Draws the batch plans (a sweep passes a memoized :class:`fedkit.stacking.PlanCache`).
    summation
        Sums the silos' statistics and updates under secure aggregation; defaults to an in-process
        :class:`~fedkit.privacy.summation.SecureSum` over the silos when ``config.secure_aggregation``
        is on (a remote site passes none: it sends its own vectors).
    federation_size
        The silos of the whole federation (default: ``federation``'s; a remote site's engine holds one of them).
    """
    from fedkit import architectures
    from fedkit.config import personalization
    from fedkit.engines.vectorized import VectorizedTrainer

    train_fed = pooled_federation(federation) if config.strategy == "pooled" else federation
    shape = {"model": config.model, "n_features": len(federation.features), "hidden": config.hidden}
    privacy = None
    if config.dp != "none":
        from fedkit.privacy.budget import SiloPrivacy

        privacy = SiloPrivacy(config, federation_size or len(federation.silos))
    if model is None and config.backend == "vectorized":  # no torch import: seconds of a notebook's start-up
        trainer = trainer or VectorizedTrainer(train_fed, config.model, config.hidden)
        init = architectures.initial_params(**shape, seed=config.seed)
        head = partial(architectures.personal_mask, **shape)
    else:
        from fedkit._optional import import_opacus, import_torch

        import_torch("backend='torch' (the per-silo trainer)")
        if config.dp == "dpsgd":
            import_opacus("dp='dpsgd' on the per-silo torch path")
        from fedkit.engines.per_silo import PerSiloTrainer
        from fedkit.models import build_model, get_flat, personal_mask

        module = model or build_model(config.model, shape["n_features"], hidden=config.hidden, seed=config.seed)
        trainer = PerSiloTrainer(train_fed, module)
        init = get_flat(module)
        head = partial(personal_mask, module)
    setup = personalization(config, [s.n_train for s in federation.silos], len(init), head)
    if summation is None and config.secure_aggregation and stream_ids is None:
        from fedkit.privacy.summation import SecureSum

        summation = SecureSum(federation.names, run_id=f"simulation-seed-{config.seed}")
    return SimulationEngine(
        train_fed,
        trainer,
        init,
        local=config.local,
        seed=config.seed,
        personal=setup.personal,
        finetune_steps=setup.finetune_steps,
        eval_federation=federation,
        stream_ids=stream_ids,
        plans=plans,
        summation=summation,
        privacy=privacy,
        **simulated_faults(config),
    )


def simulated_faults(config: RunConfig) -> dict[str, float | int | None]:
    """The simulation engine's fault settings of ``config``; none for a remote run's sites (their faults are real).

    Parameters
    ----------
    config
        The run.
    """
    if config.engine != "simulation":
        return {}
    return {"dropout": config.dropout, "straggler_timeout": config.straggler_timeout, "min_silos": config.min_silos}

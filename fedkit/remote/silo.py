"""A site's side of a run: its own hospital's silo only, trained exactly as the simulation trains it.

The site loads the UCI files with :func:`~fedkit.config.load_federation` (same split, seed and
preprocessing as the server's config), keeps only the :class:`~fedkit.data.silos.Silo` of its hospital
and drops the others, and trains it with a one-silo :class:`~fedkit.engines.simulation.SimulationEngine`
whose batch-plan stream is the hospital's index in the full federation — so it draws the same batches,
keeps the same SCAFFOLD control variate and personal parameters, as the simulation. Raw rows never
leave: a reply carries parameters, the train-set size, the mean train loss, and logits on the silo's
test set (its test labels go once, in the hello reply, for pooled metrics).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fedkit._version import __version__
from fedkit.errors import ConfigError
from fedkit.remote import wire
from fedkit.strategies.base import LocalTerm


class SiloWorker:
    """Answers the server's tasks for one hospital; holds that silo's state for the whole job.

    Parameters
    ----------
    hospital
        The hospital this site holds.
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else ``~/.cache/fedkit/heart-disease``).
    """

    def __init__(self, hospital: str, data_dir: str | Path | None = None) -> None:
        self.hospital = hospital
        self.data_dir = data_dir
        self.engine: Any = None

    def hello(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Load this hospital's silo for ``payload["config"]``; reply with what the server may know of it.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        from fedkit.config import RunConfig, load_federation
        from fedkit.engines.simulation import make_engine

        config = RunConfig.from_dict(payload["config"])
        federation = load_federation(config, data_dir=self.data_dir)
        if self.hospital not in federation.names:
            raise ConfigError(
                f"Site {self.hospital!r} is not a hospital of split {config.split!r} ({', '.join(federation.names)}); "
                "name the FLARE site after its hospital in the project file, or pass hospital= to the executor."
            )
        index = federation.names.index(self.hospital)
        silo = federation.silos[index]
        own = replace(federation, silos=(silo,))  # the other hospitals' rows are dropped here
        self.engine = make_engine(own, config, stream_ids=[index])
        return {
            "silo": silo.name,
            "index": index,
            "n_train": silo.n_train,
            "y_test": wire.pack(silo.y_test),
            "features": list(federation.features),
            "data": federation.provenance.as_dict(),
            "fedkit_version": __version__,  # the server refuses a site whose version differs from its own
        }

    def _engine(self) -> Any:
        if self.engine is None:
            raise ConfigError(
                f"Site {self.hospital!r} got a task before the run's hello; the server must say hello first."
            )
        return self.engine

    def fit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One local update from the global parameters, with the strategy's local term.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        term = LocalTerm(
            prox_mu=payload["prox_mu"], anchor=wire.unpack(payload["anchor"]), control=wire.unpack(payload["control"])
        )
        reply = self._engine().fit(wire.unpack(payload["params"]), payload["round"], [self.hospital], term)[0]
        return {
            "params": wire.pack(reply.params),
            "n_train": reply.n_train,
            "train_loss": reply.train_loss,
            "steps": reply.steps,
            "logits": wire.pack(reply.local_test.logits),
            "control_delta": wire.pack(reply.control_delta),
        }

    def evaluate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Logits of the global parameters on this silo's test set.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        return {"logits": wire.pack(self._engine().evaluate(wire.unpack(payload["params"]))[0].logits)}

    def evaluate_personal(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Logits of this silo's own model (personal parameters, or fine-tuned from the global ones).

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        engine = self._engine()
        if payload.get("finetune_steps") is not None:
            engine.finetune_steps = payload["finetune_steps"]  # derived on the server from every silo's size
        return {
            "logits": wire.pack(engine.evaluate_personal(wire.unpack(payload["params"]), payload["round"])[0].logits)
        }

    def handle(self, task: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Dispatch one task by name.

        Parameters
        ----------
        task
            The task's name.
        payload
            The task's payload from the server.
        """
        handlers = {
            wire.HELLO: self.hello,
            wire.FIT: self.fit,
            wire.EVALUATE: self.evaluate,
            wire.EVALUATE_PERSONAL: self.evaluate_personal,
        }
        if task not in handlers:
            raise ConfigError(f"Site {self.hospital!r} got unknown task {task!r}; known tasks: {', '.join(handlers)}.")
        return handlers[task](payload)

"""A site's side of a run: its own data file only, trained exactly as the simulation trains its silo.

The site reads its own file (``fedkit remote start --data FILE``), checked against the federation's
schema, splits it into train and test from its own rows and its place in the federation (the
FLamby split is per center), standardizes it with its own moments or, for
``standardize="federated"``, with the moments summed through the federation, and trains it with a
one-silo :class:`~fedkit.engines.simulation.SimulationEngine` whose batch-plan stream is its index in
the federation, so it draws the same batches as the simulation.

Only aggregates leave it (:data:`fedkit.remote.wire.SENT_BY_SITE` lists every field): its train
and test sizes, its exact per-silo metrics, and, for each model evaluated, its evaluation statistics
(:mod:`fedkit.evalstats`); its update and statistics go masked under secure aggregation, where the
site takes part in each protocol run through :class:`~fedkit.privacy.secagg.SecAggClient` and
refuses a configuration, a repeated input or a replayed round that would weaken it. Under secure
aggregation it checks its own update before masking it (:mod:`fedkit.privacy.validation`), leaves
the sum of a round whose update it rejects, and answers with a signed statement of its verdict.

With a state folder (its workspace's ``fedkit`` folder under FLARE) the site keeps its silo's state
after each round it trains (:mod:`fedkit.remote.sitestate`) and reloads it when the server resumes
the run (task ``fedkit_restore``), or before its first task of a resumed run.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkit._version import __version__
from fedkit.data.sitefile import Codes, parse_not_measured
from fedkit.errors import ConfigError, SecAggReplayError
from fedkit.remote import wire
from fedkit.strategies.base import LocalTerm

if TYPE_CHECKING:
    from fedkit.data.schema import Schema
    from fedkit.data.sitefile import SiteData
    from fedkit.engines.base import Evaluation
    from fedkit.privacy.identity import Signer, Verifier
    from fedkit.privacy.secagg import SecAggClient

ENV_DATA = "FEDKIT_SITE_DATA"
ENV_SCHEMA = "FEDKIT_SITE_SCHEMA"
ENV_NOT_MEASURED = "FEDKIT_SITE_NOT_MEASURED"
ENV_DELIMITER = "FEDKIT_SITE_DELIMITER"


@dataclass(frozen=True)
class SiteOptions:
    """How a site reads its own data: the file, the schema file (None: UCI), its not-measured codes, the delimiter.

    Parameters
    ----------
    data
        The site's own data file (None: a UCI site's ``processed.<site>.data`` in the data folder).
    schema
        The federation's schema file (None: UCI).
    not_measured
        The codes its file writes for "not measured" (``{"chol": [0]}``), else None.
    delimiter
        The CSV file's delimiter.
    """

    data: str | None = None
    schema: str | None = None
    not_measured: Codes | None = None
    delimiter: str = ","

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these options to the site's FLARE job process."""
        env = {ENV_DATA: str(Path(self.data).resolve())} if self.data else {}
        if self.schema:
            env[ENV_SCHEMA] = str(Path(self.schema).resolve())
        if self.not_measured:
            env[ENV_NOT_MEASURED] = ",".join(f"{c}={v}" for c, values in self.not_measured.items() for v in values)
        if self.delimiter != ",":
            env[ENV_DELIMITER] = self.delimiter
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SiteOptions:
        """The options :meth:`to_env` wrote (or a deployment set): ``FEDKIT_SITE_DATA`` and friends.

        Parameters
        ----------
        environ
            The environment to read (default: ``os.environ``).
        """
        environ = os.environ if environ is None else environ
        codes = parse_not_measured(environ[ENV_NOT_MEASURED].split(",")) if environ.get(ENV_NOT_MEASURED) else None
        return cls(
            environ.get(ENV_DATA) or None, environ.get(ENV_SCHEMA) or None, codes, environ.get(ENV_DELIMITER, ",")
        )

    def resolve(self, site: str) -> tuple[str, Schema]:
        """This site's data file and schema: ``data``, else (UCI sites) ``processed.<site>.data`` in the data folder.

        Parameters
        ----------
        site
            This site's name.
        """
        from fedkit.data import uci
        from fedkit.data.silos import resolve_schema
        from fedkit.paths import data_dir

        schema = resolve_schema(self.schema)
        if self.data:
            return self.data, schema
        if self.schema is None and site in uci.HOSPITALS:
            return str(data_dir() / uci.file_name(site)), schema
        raise ConfigError(
            f"Site {site!r} has no data file: start it with `fedkit remote start --kit DIR --data FILE` "
            f"(or set {ENV_DATA}); a UCI hospital's site may instead find processed.<site>.data in $FEDKIT_DATA_DIR."
        )

    def read(self, site: str, missing: str) -> SiteData:
        """Read and check this site's own file against the schema (a :class:`~fedkit.errors.SiteDataError` names
        file, row and column); UCI hospitals get their own not-measured codes unless ``not_measured`` is set.

        Parameters
        ----------
        site
            This site's name.
        missing
            ``drop`` or ``impute``.
        """
        from fedkit.data.schema import UCI_HEART_DISEASE, uci_not_measured
        from fedkit.data.sitefile import read_site_file

        path, schema = self.resolve(site)
        codes = self.not_measured
        if codes is None and schema == UCI_HEART_DISEASE:
            codes = uci_not_measured(site, missing)
        return read_site_file(path, schema, missing=missing, not_measured=codes, delimiter=self.delimiter)


def site_identity(startup: Path) -> tuple[Signer, Verifier] | None:
    """A site's signer (its certificate and key) and its peers' verifier (the root CA) for secure aggregation.

    None when the startup folder lacks ``client.crt``, ``client.key`` or ``rootCA.pem``.

    Parameters
    ----------
    startup
        The startup folder of the site's kit.
    """
    from fedkit.privacy.identity import CertificateAuthority, CertificateSigner

    files = [Path(startup) / name for name in ("client.crt", "client.key", "rootCA.pem")]
    if not all(f.is_file() for f in files):
        return None
    crt, key, ca = (f.read_bytes() for f in files)
    return CertificateSigner.from_pem(crt, key), CertificateAuthority.from_pem(ca)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class SiloWorker:
    """Answers the server's tasks for one site; holds that site's data and state for the whole job.

    ``identity`` is the site's signer and the verifier of its peers for secure aggregation (remote:
    the FLARE site certificate and root CA of its startup kit; tests: ephemeral keys).

    Parameters
    ----------
    site
        This site's name.
    options
        How the site reads its own data (default: the UCI file of a UCI site).
    identity
        The site's signer and its peers' verifier for secure aggregation, else None.
    state_dir
        The folder of the site's own state file (:mod:`fedkit.remote.sitestate`); None keeps no state across jobs.
    """

    def __init__(
        self,
        site: str,
        options: SiteOptions | None = None,
        identity: tuple[Signer, Verifier] | None = None,
        state_dir: str | Path | None = None,
    ) -> None:
        from fedkit.remote.sitestate import FILE, SiteState

        self.site = site
        self.options = options or SiteOptions()
        self.identity = identity
        self.state = None if state_dir is None else SiteState(Path(state_dir) / FILE)
        self.engine: Any = None
        self._part: Any = None
        self._config: Any = None
        self._index = 0
        self._features: tuple[str, ...] = ()
        self._federation: tuple[str, ...] = ()
        self._run = ""
        self._run_id = ""  # the fedkit run (kept across the FLARE jobs of a resumed run); _run is this job's
        self._resumed = False  # this job continues a run: the site's state comes from its own file
        self._restored = False
        self._sums: dict[int, SecAggClient] = {}  # the secure sums this site has keys in, by number
        self._last_round = -1
        self._given: set[tuple[str, str]] = set()  # inputs already summed (never twice: open question 1)

    # --- hello and standardization ----------------------------------------------------------------------

    def hello(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Read this site's file for ``payload["config"]``, split it; reply with its sizes and schema fingerprint.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        from fedkit.config import RunConfig
        from fedkit.data import preprocess, uci
        from fedkit.data.silos import check_data_options, holdout_state, split_part
        from fedkit.privacy.audit import silo_checksums
        from fedkit.runner import versions

        config = RunConfig.from_dict(payload["config"])
        order = tuple(payload["silos"])
        if self.site not in order:
            raise ConfigError(f"Site {self.site!r} is not in the federation the server announced ({', '.join(order)}).")
        missing = check_data_options(config.split, None, config.missing, "RunConfig")
        data = self.options.read(self.site, missing)
        index = order.index(self.site)
        self._part = split_part(self.site, data.x, data.y, holdout_state(config.split, config.seed, index))
        self._config, self._federation, self._run, self._index = config, order, str(payload["run"]), index
        self._run_id, self._resumed = str(payload.get("run_id") or payload["run"]), bool(payload.get("resume"))
        self._features = data.features
        if config.standardize != "federated":
            self._build(preprocess.moments(self._part.x_train))
        path, schema = self.options.resolve(self.site)
        return {
            "silo": self.site,
            "n_train": len(self._part.y_train),
            "n_test": len(self._part.y_test),
            "test_positives": int(self._part.y_test.sum()),
            "features": list(data.features),
            "schema": schema.fingerprint(),
            "data": {
                "file": Path(path).name,
                "sha256": data.sha256,
                "verified": uci.pinned(Path(path).name, data.sha256),
            },
            "fedkit_version": __version__,  # the server refuses a site whose version differs from its own
            "nvflare_version": versions()["nvflare"],
            "silo_sha256": silo_checksums([self._part])[self.site],
            "identity": None if self.identity is None else base64.b64encode(self.identity[0].credential).decode(),
        }

    def _build(self, scaling: Any) -> None:
        from fedkit.data.silos import Federation, Provenance, finish_silo
        from fedkit.engines.simulation import make_engine

        silo = finish_silo(self._part, scaling, self._config.standardize)
        own = Federation((silo,), self._features, self._config.split, Provenance("", {}, False))
        self.engine = make_engine(own, self._config, stream_ids=[self._index], federation_size=len(self._federation))

    def moments(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Federated standardization: this site's train counts, sums and sums of squares (masked under secagg).

        Contributed once per job: a second request is refused (a sum over another set of sites would
        show the server the difference).

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        from fedkit.data import preprocess

        self._once("moments", "")
        m = preprocess.moments(self._part.x_train)
        vector = np.concatenate([m.n, m.total, m.squares])
        return self._contribute(payload, vector, {}) if "secagg" in payload else {"moments": wire.pack(vector)}

    def scaling(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Standardize with the federation's summed moments and build the site's engine.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        from fedkit.data import preprocess

        if self.engine is not None:
            raise ConfigError(f"Site {self.site!r} is already standardized; the server sent the moments twice.")
        total = wire.unpack(payload["moments"])
        self._build(preprocess.Moments(*np.split(np.asarray(total, np.float64), 3)))
        return {}

    # --- training and evaluation ------------------------------------------------------------------------

    def _engine(self, before_round: int | None = None) -> Any:
        """The site's engine; in a resumed run, with its state reloaded first (after round ``before_round - 1``)."""
        if self.engine is None:
            raise ConfigError(
                f"Site {self.site!r} got a task before the run's hello (and its standardization); the server must "
                "say hello first."
            )
        if self._resumed and not self._restored and before_round is not None:
            self._reload(before_round - 1, expect=False)
        return self.engine

    def _reload(self, after_round: int, *, expect: bool) -> int | None:
        """Load the silo's state after ``after_round`` from the site's own file; the round it was stored at."""
        saved = None if self.state is None else self.state.load(self._run_id, after_round)
        self._restored = True
        if saved is None:
            if expect:
                raise ConfigError(
                    f"Site {self.site!r} cannot resume run {self._run_id} after round {after_round}: it trained in "
                    "that run but holds no state of it "
                    + (
                        "(it keeps none: no state folder)."
                        if self.state is None
                        else f"in {self.state.path}. Restore that file, or start a new run."
                    )
                )
            return None
        self.engine.restore(saved[1])
        return saved[0]

    def restore(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Reload this site's state after the round the server resumes from (``fedkit_restore``).

        Parameters
        ----------
        payload
            ``{"run_id", "round", "trained"}``: the run, the round of the server's checkpoint, the sites that have
            trained in the run so far (each must find its state).
        """
        if payload["run_id"] != self._run_id:
            raise ConfigError(
                f"Site {self.site!r} was asked to restore run {payload['run_id']} but joined run {self._run_id}."
            )
        keeps = self._config.strategy == "scaffold" or self._engine().personal is not None  # else nothing to reload
        found = self._reload(int(payload["round"]), expect=keeps and self.site in payload.get("trained", ()))
        return {"restored": found}

    def _keep_state(self, server_round: int) -> None:
        """Store the silo's state after a round it trained (kept across FLARE jobs, for a resumed run)."""
        if self.state is not None:
            self.state.save(self._run_id, server_round, self.engine.state())

    def fit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One local update from the global parameters, with the strategy's local term.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        from fedkit.privacy.validation import statement, validate_updates

        term = LocalTerm(
            prox_mu=payload["prox_mu"], anchor=wire.unpack(payload["anchor"]), control=wire.unpack(payload["control"])
        )
        params = wire.unpack(payload["params"])
        server_round = int(payload["round"])
        reply = self._engine(server_round).fit(params, server_round, [self.site], term)[0]
        self._keep_state(server_round)
        out = {"train_loss": reply.train_loss, "steps": reply.steps, "local_metrics": reply.local_test.metrics}
        if "secagg" not in payload:
            return {**out, "params": wire.pack(reply.params), "control_delta": wire.pack(reply.control_delta)}
        self._once("fit", str(server_round))
        bound = self._config.max_update_norm
        (verdict,) = validate_updates([self.site], [reply.params], [reply.train_loss], params, max_update_norm=bound)
        out |= self._signed(statement(self._run_id, server_round, self.site, bound, verdict))
        if not verdict.accepted:  # not masked into the sum: the site leaves this round's sum (a protocol dropout)
            return out
        vector = self._engine().update_vector(reply, params, server_round)  # clipped (+ its noise share) under DP
        return self._contribute(payload, vector, out)

    def _signed(self, said: dict[str, Any]) -> dict[str, Any]:
        """``said`` with the site's signature over its canonical JSON (:func:`fedkit.privacy.audit.canonical`)."""
        from fedkit.privacy.audit import canonical

        if self.identity is None:
            raise ConfigError(
                f"Site {self.site!r} has no identity for secure aggregation (its startup kit's certificate)."
            )
        return {"statement": said, "signature": base64.b64encode(self.identity[0].sign(canonical(said))).decode()}

    def _evaluation(self, payload: dict[str, Any], kind: str, evaluation: Evaluation) -> dict[str, Any]:
        out = {"metrics": evaluation.silos[0].metrics}
        if "secagg" in payload:
            self._once(kind, _digest(wire.unpack(payload["params"])) + str(payload.get("round", "")))
            return self._contribute(payload, evaluation.pooled, out)
        return {**out, "stats": wire.pack(evaluation.pooled, compress=True)}

    def evaluate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The global model on this site's test rows: its exact metrics and its evaluation statistics.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        return self._evaluation(payload, "evaluate", self._engine().evaluate(wire.unpack(payload["params"])))

    def evaluate_fit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """:meth:`evaluate` of the payload's parameters, then :meth:`fit` from them when this site trains next round.

        The server sends it in the clear when the next round's training is known before this round's
        evaluation (:meth:`fedkit.remote.server.RemoteEngine.expect_fit`): one task round trip instead of two.

        Parameters
        ----------
        payload
            A fit task's payload (the next round's) and ``fit_sites``, the sites that train in it.
        """
        if "secagg" in payload:
            raise ConfigError(
                f"Site {self.site!r} got training with its evaluation under secure aggregation; the server sends "
                "those as separate tasks. Refused (check that the server runs this fedkit version)."
            )
        out = self.evaluate(payload)
        if self.site in payload["fit_sites"]:
            out |= self.fit(payload)
        return out

    def evaluate_personal(self, payload: dict[str, Any]) -> dict[str, Any]:
        """This site's own model (personal parameters, or fine-tuned from the global ones): metrics and statistics.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        engine = self._engine(int(payload["round"]) + 1)  # evaluates the model of that round
        if payload.get("finetune_steps") is not None:
            engine.finetune_steps = payload["finetune_steps"]  # derived on the server from every silo's size
        evaluation = engine.evaluate_personal(wire.unpack(payload["params"]), payload["round"])
        return self._evaluation(payload, "evaluate_personal", evaluation)

    # --- secure aggregation -----------------------------------------------------------------------------

    def _once(self, kind: str, key: str) -> None:
        if (kind, key) in self._given:
            raise SecAggReplayError(
                f"Site {self.site!r} already contributed its {kind} input ({key or 'once per job'}) to a secure sum; "
                "summing it again over another set of sites would show the server the difference. Refused."
            )
        self._given.add((kind, key))

    def _contribute(self, payload: dict[str, Any], vector: np.ndarray, out: dict[str, Any]) -> dict[str, Any]:
        """Step 3 of the secure sum the task names: open the shares delivered here, send ``vector`` masked.

        The sum's keys were advertised and shared before the task (:meth:`secagg`), so the input is masked as soon
        as it exists.
        """
        from fedkit.privacy.secagg import ShareDelivery

        number = int(payload["secagg"]["round"])
        client = self._sums.get(number)
        if client is None:
            raise SecAggReplayError(
                f"Site {self.site!r} holds no keys of secure sum {number}; the request is out of step and refused."
            )
        delivery = payload["secagg"]["deliveries"].get(self.site)
        if delivery is None:
            raise SecAggReplayError(
                f"The request of secure sum {number} holds no share delivery for site {self.site!r}."
            )
        return {**out, "masked": client.mask_input(ShareDelivery.from_wire(delivery), vector).to_wire()}

    def _offer(self, offer: dict[str, Any]) -> dict[str, Any]:
        """Step 1 of the secure sum the server offers: check its configuration, make its keys, advertise them."""
        from fedkit.privacy.secagg import SecAggClient
        from fedkit.privacy.summation import check_offered, config_from_wire

        if self.identity is None:
            raise ConfigError(
                f"Site {self.site!r} has no identity for secure aggregation (its startup kit's certificate)."
            )
        offered = config_from_wire(offer["config"])
        check_offered(offered, self.site, self._federation, self._run)
        number = int(offer["round"])
        if number <= self._last_round:
            raise SecAggReplayError(
                f"Site {self.site!r} got secure-aggregation round {number} after round {self._last_round}: "
                "rounds only go forward; an old or replayed request is refused."
            )
        self._last_round = number
        self._sums = {k: c for k, c in self._sums.items() if k >= number - 1}  # a sum left unfinished is dropped
        self._sums[number] = SecAggClient(offered, self.site, number, *self.identity)
        return {"advert": self._sums[number].advertise_keys().to_wire()}

    def secagg(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The secure-aggregation steps that need no input: step 4 of one sum, step 2 of the next (step 1 rides along).

        ``unmask`` (step 4 of the sum whose masked inputs are in): the shares the server needs, when
        the request lists this site as a survivor; a site whose input the server left out of the sum
        reveals nothing. ``roster`` (step 2 of the next sum): check the neighbours' signed keys and
        share this sum's secrets among them.

        Parameters
        ----------
        payload
            The task's payload from the server.
        """
        from fedkit.privacy.secagg import KeyRoster, UnmaskRequest

        out: dict[str, Any] = {}
        if "unmask" in payload:
            number = int(payload["unmask"]["round"])
            request = UnmaskRequest.from_wire(payload["unmask"]["request"])
            client = self._sums.pop(number, None)
            if self.site in request.survivors:
                if client is None:
                    raise SecAggReplayError(
                        f"Site {self.site!r} holds no keys of secure sum {number}; the unmask request is out of step."
                    )
                out["shares"] = client.unmask(request).to_wire()
        if "roster" in payload:
            number = int(payload["roster"]["round"])
            client = self._sums.get(number)
            if client is None:
                raise SecAggReplayError(
                    f"Site {self.site!r} holds no keys of secure sum {number}; the key roster is out of step."
                )
            out["bundle"] = client.share_keys(KeyRoster.from_wire(payload["roster"]["roster"])).to_wire()
        return out

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
            wire.MOMENTS: self.moments,
            wire.SCALING: self.scaling,
            wire.FIT: self.fit,
            wire.EVALUATE: self.evaluate,
            wire.EVALUATE_PERSONAL: self.evaluate_personal,
            wire.EVALUATE_FIT: self.evaluate_fit,
            wire.SECAGG: self.secagg,
            wire.RESTORE: self.restore,
        }
        if task not in handlers:
            raise ConfigError(f"Site {self.site!r} got unknown task {task!r}; known tasks: {', '.join(handlers)}.")
        reply = handlers[task](payload)
        if "offer" in payload:  # step 1 of the next secure sum rides on this task
            reply = {**reply, **self._offer(payload["offer"])}
        return reply

"""The notebook control panel: set a run up with widgets, Run / Stop it, watch curves per silo live.

Training runs in a background thread, so the kernel stays responsive: the Stop button, other
cells and the widgets keep working while rounds go by. Each round's callback updates the progress
bar, the round counter and the figure (a PNG drawn with matplotlib's Agg canvas into an
``ipywidgets.Image``, which needs no front-end extension: JupyterLab 4 and SageMaker Studio show
it as is). Every change of a value is checked by :class:`~fedkit.config.RunConfig`: an invalid
combination disables Run and the panel shows RunConfig's message instead of a traceback.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedkit.errors import FedkitError

if TYPE_CHECKING:
    import ipywidgets
    from matplotlib.figure import Figure

    from fedkit.config import RunConfig
    from fedkit.plots import LiveCurves
    from fedkit.result import RoundEvent, RunResult
    from fedkit.sweeps import SweepResult

DESCRIPTION_WIDTH = "96px"
FIELD_WIDTH = "250px"
REDRAW_EVERY_S = 0.25  # the figure is redrawn at most this often (and always after the last round)

TOOLTIPS: dict[str, str] = {
    "split": "How rows become silos: the 4 hospitals (hospitals, flamby) or synthetic silos of the pooled rows",
    "silos": "Number of silos of a synthetic split (iid, dirichlet, quantity)",
    "alpha": "Dirichlet concentration of the dirichlet/quantity splits: smaller = more skew between silos",
    "strategy": "Server aggregation strategy (pooled and local are the non-federated baselines)",
    "rounds": "Federated rounds",
    "local_unit": "Local training per round: a number of optimizer steps, or of passes (epochs) over the silo",
    "local_amount": "Local steps or epochs per round",
    "lr": "Local learning rate",
    "batch_size": "Local batch size",
    "optimizer": "Local optimizer",
    "weight_decay": "L2 weight decay of the local optimizer",
    "seed": "One seed for the data split, model init, batches and silo sampling",
    "dp": "Differential privacy: none; central or distributed (a whole hospital, client-level DP-FedAvg); "
    "dpsgd (one patient's row, DP-SGD in each silo)",
    "dp_epsilon": "The epsilon to reach after the run's rounds: fedkit solves the noise",
    "dp_delta": "delta of (epsilon, delta)-DP: below 1/silos (client level) or 1/rows of the smallest silo (dpsgd)",
    "dp_clip": "Clip norm of each silo's update (client level) or each row's gradient (dpsgd); 0: the default",
    "seeds": "Seeds every configuration runs with: 42-46, or 42,43,50",
    "metric": "The score the best configuration is chosen by",
}


def _short(exc: BaseException) -> str:
    """An error for the panel's message line: its one-line notebook form when it has one, else its message."""
    render = getattr(exc, "_render_traceback_", None)
    return " ".join(render()) if render is not None else str(exc)


def _field(widget: ipywidgets.Widget, name: str) -> ipywidgets.Widget:
    widget.tooltip = TOOLTIPS.get(name, "")
    widget.style = {"description_width": DESCRIPTION_WIDTH}
    widget.layout.width = FIELD_WIDTH
    widget.add_class(f"fedkit-{name.replace('_', '-')}")
    return widget


class ControlPanel:
    """An ipywidgets panel that builds a :class:`RunConfig`, runs it in a thread and plots it live.

    Display it with ``panel`` as the last value of a cell, or ``display(panel.widget)``.

    Parameters
    ----------
    trackers
        Tracker names each run is recorded in (see :func:`fedkit.make_trackers`).
    callbacks
        Also receive every round event.
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).
    admin_kit
        The FLARE admin startup kit of the federation, for a remote panel (``engine="remote"`` among the
        defaults): Run submits the run there, Stop asks the server to end it after the current round and
        Resume continues a stopped one from the server's checkpoint.
    **defaults
        RunConfig fields that preset the panel (fields the panel has no widget for, e.g. ``mu``, are passed through
        unchanged).
    """

    def __init__(
        self,
        *,
        trackers: Sequence[str] = ("local",),
        callbacks: Sequence[Callable[[RoundEvent], None]] = (),
        data_dir: str | Path | None = None,
        admin_kit: str | Path | None = None,
        **defaults: Any,
    ) -> None:
        from fedkit.api import check_engine
        from fedkit.config import RunConfig

        base = RunConfig.from_dict(defaults)  # a bad preset fails here, with RunConfig's message
        self.data_dir = data_dir
        check_engine(base.engine, admin_kit)
        self.admin_kit = admin_kit
        self._extra = {k: v for k, v in defaults.items() if k not in _WIDGET_FIELDS}
        self.callbacks = list(callbacks)
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.curves: LiveCurves | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()  # one refresh at a time (kernel thread and training thread)
        self._running = False
        self._thread: threading.Thread | None = None
        self._records: list[dict[str, Any]] = []
        self._notes: list[str] = []
        self._drawn_at = 0.0
        self._build_fields(base)
        self._build_trackers(trackers)
        self._build_outputs(base.rounds)
        self.widget = self._layout()
        for field in self._inputs():
            field.observe(self._on_change, names="value")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.resume_button.on_click(lambda _: self.resume())
        self.resume_from.observe(lambda _: self._refresh(), names="value")
        self._list_resumable()
        self._on_change()

    # -- building --------------------------------------------------------------------------------
    def _build_fields(self, base: RunConfig) -> None:
        """One input per RunConfig field the panel sets, starting at ``base``'s values."""
        import ipywidgets as w

        from fedkit.data.silos import SPLITS
        from fedkit.strategies import STRATEGIES
        from fedkit.training import OPTIMIZERS

        epochs = base.local_epochs is not None
        units = [("optimizer steps", "steps"), ("epochs", "epochs")]
        self.split = _field(w.Dropdown(options=SPLITS, value=base.split, description="split"), "split")
        self.silos = _field(w.IntText(value=base.silos or 4, description="silos"), "silos")
        self.alpha = _field(w.FloatText(value=base.alpha, step=0.1, description="alpha"), "alpha")
        self.strategy = _field(w.Dropdown(options=STRATEGIES, value=base.strategy, description="strategy"), "strategy")
        self.rounds = _field(w.IntText(value=base.rounds, description="rounds"), "rounds")
        unit = w.Dropdown(options=units, value="epochs" if epochs else "steps", description="local unit")
        self.local_unit = _field(unit, "local_unit")
        amount = w.IntText(value=base.local_epochs if epochs else base.local_steps, description="per round")
        self.local_amount = _field(amount, "local_amount")
        self.lr = _field(w.FloatText(value=base.lr, step=0.001, description="lr"), "lr")
        self.batch_size = _field(w.IntText(value=base.batch_size, description="batch size"), "batch_size")
        optimizer = w.Dropdown(options=OPTIMIZERS, value=base.optimizer, description="optimizer")
        self.optimizer = _field(optimizer, "optimizer")
        decay = w.FloatText(value=base.weight_decay, step=0.0001, description="weight decay")
        self.weight_decay = _field(decay, "weight_decay")
        self.seed = _field(w.IntText(value=base.seed, description="seed"), "seed")
        from fedkit.config import DEFAULT_DP_DELTA, DP_MODES

        self.dp = _field(w.Dropdown(options=DP_MODES, value=base.dp, description="privacy"), "dp")
        epsilon = w.FloatText(value=base.dp_epsilon or 1.0, step=0.5, description="target ε")
        self.dp_epsilon = _field(epsilon, "dp_epsilon")
        delta = w.FloatText(value=base.dp_delta or DEFAULT_DP_DELTA, step=0.0001, description="δ")
        self.dp_delta = _field(delta, "dp_delta")
        self.dp_clip = _field(w.FloatText(value=base.dp_clip or 0.0, step=0.01, description="clip"), "dp_clip")

    def _build_trackers(self, wanted: Sequence[str]) -> None:
        """A checkbox per tracker backend: the local store always on, the others when wanted and installed."""
        import ipywidgets as w

        from fedkit.tracking.registry import BACKENDS, LOCAL, available_trackers

        usable = available_trackers()
        self.trackers = {}
        for name, backend in BACKENDS.items():
            if name == LOCAL:
                tip = "every run is recorded in the local run store (always on)"
            elif usable[name]:
                tip = f"also record the run in {backend.label}"
            else:
                tip = f"{backend.label}: its client is not installed"
            self.trackers[name] = w.Checkbox(
                value=name == LOCAL or (name in wanted and usable[name]),
                description=backend.label,
                indent=False,
                disabled=name == LOCAL or not usable[name],
                tooltip=tip,
                layout=w.Layout(width="auto", margin="0 12px 0 0"),
            )

    def _build_outputs(self, rounds: int) -> None:
        """Run and Stop, the progress bar and round counter, the message line, the figure and the final table."""
        import ipywidgets as w

        self.run_button = w.Button(description="Run", icon="play", button_style="primary", tooltip="Start the run")
        stop_tip = "Stop after the current round; the run is recorded as stopped"
        self.stop_button = w.Button(
            description="Stop", icon="stop", button_style="warning", disabled=True, tooltip=stop_tip
        )
        self.run_button.add_class("fedkit-run")
        self.stop_button.add_class("fedkit-stop")
        resume_tip = "Continue the chosen stopped or interrupted run from its last round (its recorded config)"
        self.resume_button = w.Button(description="Resume", icon="repeat", disabled=True, tooltip=resume_tip)
        self.resume_button.add_class("fedkit-resume")
        self.resume_from = w.Dropdown(options=[("-", None)], value=None, description="resume", layout={"width": "auto"})
        self.resume_from.style = {"description_width": "52px"}
        self.resume_from.add_class("fedkit-resume-from")
        self.progress = w.IntProgress(value=0, min=0, max=rounds, description="", bar_style="info")
        self.progress.layout.width = "220px"
        self.counter = w.Label(value=f"round 0/{rounds}")
        self.counter.add_class("fedkit-round-counter")
        self.epsilon = w.Label(value="")
        self.epsilon.add_class("fedkit-epsilon")
        self.message = w.HTML()
        self.message.add_class("fedkit-message")
        self.notes = w.HTML()
        self.notes.add_class("fedkit-notes")
        # hidden until the first run draws it: an Image without a value shows a broken-image icon
        self.figure = w.Image(format="png", layout=w.Layout(width="100%", max_width="1140px", display="none"))
        self.figure.add_class("fedkit-figure")
        self.table = w.HTML()
        self.table.add_class("fedkit-table")

    def _layout(self) -> ipywidgets.Widget:
        """The panel: the fields in three columns, the tracker row, the controls, then the outputs."""
        import ipywidgets as w

        fields = [self.split, self.strategy, self.rounds, self.silos, self.optimizer, self.lr]
        fields += [self.alpha, self.batch_size, self.weight_decay, self.local_unit, self.local_amount, self.seed]
        fields += [self.dp, self.dp_epsilon, self.dp_delta, self.dp_clip]
        grid = w.GridBox(
            fields, layout=w.Layout(grid_template_columns=f"repeat(3, {FIELD_WIDTH})", grid_gap="4px 16px")
        )
        label = w.Label("record in:", layout=w.Layout(width=DESCRIPTION_WIDTH))
        tracker_row = w.HBox([label, *self.trackers.values()])
        controls = w.HBox([self.run_button, self.stop_button, self.progress, self.counter, self.epsilon])
        controls.layout.align_items = "center"
        resume_row = w.HBox([self.resume_button, self.resume_from])
        panel = w.VBox([grid, tracker_row, controls, resume_row, self.message, self.notes, self.figure, self.table])
        panel.add_class("fedkit-panel")
        return panel

    # -- state -----------------------------------------------------------------------------------
    def _inputs(self) -> list[ipywidgets.Widget]:
        fields = [self.split, self.silos, self.alpha, self.strategy, self.rounds, self.local_unit, self.local_amount]
        fields += [self.lr, self.batch_size, self.optimizer, self.weight_decay, self.seed]
        fields += [self.dp, self.dp_epsilon, self.dp_delta, self.dp_clip]
        return [*fields, *self.trackers.values()]

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._running

    def values(self) -> dict[str, Any]:
        """The RunConfig fields the panel currently sets (plus the presets it has no widget for)."""
        from fedkit.data.silos import SYNTHETIC

        synthetic = self.split.value in SYNTHETIC
        unit = self.local_unit.value
        return {
            **self._extra,
            "split": self.split.value,
            "silos": self.silos.value if synthetic else None,
            "alpha": self.alpha.value,
            "strategy": self.strategy.value,
            "rounds": self.rounds.value,
            "local_steps": self.local_amount.value if unit == "steps" else None,
            "local_epochs": self.local_amount.value if unit == "epochs" else None,
            "lr": self.lr.value,
            "batch_size": self.batch_size.value,
            "optimizer": self.optimizer.value,
            "weight_decay": self.weight_decay.value,
            "seed": self.seed.value,
            **self._privacy(),
        }

    def _privacy(self) -> dict[str, Any]:
        """The DP fields of the panel: none without DP; distributed noise turns secure aggregation on."""
        dp = self.dp.value
        if dp == "none":
            return {"dp": dp}
        out = {"dp": dp, "dp_delta": self.dp_delta.value, "dp_clip": self.dp_clip.value or None}
        if self._extra.get("dp_noise_multiplier") is None:  # a preset's noise multiplier replaces the target ε
            out["dp_epsilon"] = self.dp_epsilon.value
        if dp == "distributed":
            out["secure_aggregation"] = True
        return out

    def config(self) -> RunConfig:
        """The validated RunConfig of the current values (raises RunConfig's error when invalid)."""
        from fedkit.config import RunConfig

        return RunConfig.from_dict(self.values())

    def selected_trackers(self) -> list[str]:
        """Names of the trackers ticked in the panel."""
        return [name for name, box in self.trackers.items() if box.value]

    def _on_change(self, _change: Any = None) -> None:
        problem = self._refresh()
        if problem:
            self._say(problem, "error")
        elif not self.running:
            config = self.config()
            if self.progress.value == 0:  # before a run (or after a failed start): the counter follows rounds
                self.progress.max = config.rounds
                self.counter.value = f"round 0/{config.rounds}"
            self._say(
                f"Ready: {config.strategy} on the {config.split} split, {config.rounds} rounds, "
                f"recorded in {', '.join(self.selected_trackers())}.",
                "info",
            )

    def _refresh(self) -> str | None:
        """Enable what applies to the current values; returns the problem that blocks Run, if any."""
        from fedkit.data.silos import SKEWED, SYNTHETIC
        from fedkit.tracking.registry import available_trackers

        with self._lock:
            running = self._running
            for field in self._inputs():
                field.disabled = running
            self.silos.disabled = running or self.split.value not in SYNTHETIC
            self.alpha.disabled = running or self.split.value not in SKEWED
            for field in (self.dp_epsilon, self.dp_delta, self.dp_clip):
                field.disabled = running or self.dp.value == "none"
            for name, usable in available_trackers().items():
                self.trackers[name].disabled = running or name == "local" or not usable
            problem = self.problem()
            self.run_button.disabled = bool(problem) or running
            self.stop_button.disabled = not running or self._stop.is_set()
            self.resume_from.disabled = running
            self.resume_button.disabled = running or self.resume_from.value is None
            return problem

    def problem(self) -> str | None:
        """Why the current values cannot run (RunConfig's message), or None when they can."""
        try:
            self.config()
        except FedkitError as exc:
            return str(exc)
        return None

    def _say(self, text: str, kind: str) -> None:
        color = {"error": "#b00020", "info": "#444444", "ok": "#1b5e20"}[kind]
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> threading.Thread | None:
        """Start a run of the current values in a background thread (what the Run button does)."""
        if self.running:
            self._say("A run is in progress; Stop it or wait for it to finish.", "error")
            return None
        problem = self.problem()
        if problem:
            self._say(problem, "error")
            return None
        return self._start(self.config())

    def resume(self, run_id: str | None = None) -> threading.Thread | None:
        """Continue a stopped or interrupted run (default: the one chosen in the panel) in a background thread.

        It runs with its recorded config (shown in the fields) and ends exactly as an uninterrupted
        run would have (what the Resume button does).

        Parameters
        ----------
        run_id
            The run to resume (default: the one chosen in the panel's list).
        """
        from fedkit.config import RunConfig
        from fedkit.tracking.local import LocalStore

        run_id = run_id or self.resume_from.value
        if self.running or run_id is None:
            busy = "A run is in progress; Stop it or wait for it to finish."
            self._say(busy if self.running else "Choose a stopped or interrupted run to resume.", "error")
            return None
        try:
            store = LocalStore()
            stored = store.get(run_id)
            config = RunConfig.from_dict(stored["config"])
            records = store.history(stored["run_id"])
        except FedkitError as exc:
            self._say(str(exc), "error")
            return None
        self._show(config)
        return self._start(config, resume=stored["run_id"], records=records)

    def _show(self, config: RunConfig) -> None:
        """Set the fields to ``config``'s values (a resumed run's), without starting anything."""
        epochs = config.local_epochs is not None
        self.split.value, self.strategy.value, self.rounds.value = config.split, config.strategy, config.rounds
        self.silos.value, self.alpha.value = config.silos or 4, config.alpha
        self.local_unit.value = "epochs" if epochs else "steps"
        self.local_amount.value = config.local_epochs if epochs else config.local_steps
        self.lr.value, self.batch_size.value, self.optimizer.value = config.lr, config.batch_size, config.optimizer
        self.weight_decay.value, self.seed.value = config.weight_decay, config.seed
        self.dp.value, self.dp_clip.value = config.dp, config.dp_clip or 0.0
        self.dp_epsilon.value = config.dp_epsilon or self.dp_epsilon.value
        self.dp_delta.value = config.dp_delta or self.dp_delta.value
        self._extra = {k: v for k, v in config.to_dict().items() if k not in _WIDGET_FIELDS}

    def _start(
        self, config: RunConfig, *, resume: str | None = None, records: list[dict[str, Any]] | None = None
    ) -> threading.Thread | None:
        """Start (or resume) a run of ``config`` in the background thread, with fresh curves, counter and notes."""
        from fedkit.config import load_federation
        from fedkit.data.uci import HOSPITALS
        from fedkit.plots import LiveCurves
        from fedkit.tracking.factory import make_trackers

        try:
            trackers = make_trackers(self.selected_trackers())
            remote = config.engine == "remote"  # the sites read their own data
            federation = None if remote else load_federation(config, data_dir=self.data_dir)
        except FedkitError as exc:
            self._say(_short(exc), "error")
            return None
        title = f"{config.strategy} · {config.split} split · seed {config.seed}"
        names = HOSPITALS if federation is None else federation.names
        privacy = config.dp != "none"
        self.curves = LiveCurves(names, config.rounds, model=config.scored, title=title, privacy=privacy)
        self.epsilon.value = f"ε 0 at δ {config.dp_delta:g}" if privacy else ""
        self.result, self.error, self._records, self._notes = None, None, list(records or []), []
        self._stop.clear()
        done = max((r["round"] for r in self._records), default=0)
        self.progress.max, self.progress.value, self.progress.bar_style = config.rounds, done, "info"
        self.counter.value = f"round {done}/{config.rounds}"
        self.table.value = self.notes.value = ""
        self._draw()
        self._say(f"{'Resuming' if resume else 'Running'} {title}…", "info")
        with self._lock:  # the panel shows "running" before the thread can end it
            self._running = True
            self._refresh()
            self._thread = threading.Thread(
                target=self._work, args=(config, federation, trackers, resume), name="fedkit-run", daemon=True
            )
            self._thread.start()
        return self._thread

    def _list_resumable(self) -> None:
        """Offer the recorded runs that can be resumed (stopped, interrupted, failed), newest first."""
        from fedkit.api import RESUMABLE
        from fedkit.tracking.local import LocalStore

        runs = [r for r in LocalStore().list_runs() if r["status"] in RESUMABLE]
        options = [(f"{r['run_id']} · {r['strategy']} · {r['status']}", r["run_id"]) for r in runs]
        self.resume_from.options = options or [("no stopped or interrupted run", None)]
        self.resume_from.value = options[0][1] if options else None

    def stop(self) -> None:
        """Ask the run to stop after the current round (what the Stop button does)."""
        if self.running:
            self._stop.set()
            self.stop_button.disabled = True
            self._say("Stopping after the current round…", "info")

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the run ends (at most ``timeout`` s); returns its result (None if it failed).

        Parameters
        ----------
        timeout
            Longest wait, in seconds (None: no limit).
        """
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def _work(self, config: RunConfig, federation: Any, trackers: list[Any], resume: str | None = None) -> None:
        from fedkit.api import run

        try:
            self.result = run(
                None if resume else config,
                federation=federation,
                admin_kit=self.admin_kit if config.engine == "remote" else None,
                trackers=trackers,
                callbacks=[self._on_round, *self.callbacks],
                should_stop=self._stop.is_set,
                progress=False,
                resume=resume,
            )
        except BaseException as exc:  # shown in the panel; the run store has it as failed
            self.error = exc
            self.progress.bar_style = "danger"
            self._say(f"The run failed: {type(exc).__name__}: {exc}", "error")
        else:
            self._finished(self.result)
        finally:
            self._draw()
            with self._lock:
                self._running = False
                self._list_resumable()
                self._refresh()

    def _on_round(self, event: RoundEvent) -> None:
        self._records.extend(event.rows)
        if event.notes:
            self._show_notes([*self._notes, *event.notes])
        now = time.monotonic()
        if event.round == event.rounds or now - self._drawn_at >= REDRAW_EVERY_S:
            self._draw()  # before the counter, so "round N/N" means the figure shows round N
        self.progress.value = event.round
        self.counter.value = f"round {event.round}/{event.rounds}"
        spent = [
            r for r in event.rows if r["split"] == "privacy" and r["silo"] == "pooled" and r["metric"] == "epsilon"
        ]
        if spent:
            delta = self.epsilon.value.rpartition("δ ")[2]
            self.epsilon.value = f"ε {spent[0]['value']:.3g} at δ {delta}"

    def _draw(self) -> None:
        if self.curves is not None:
            self.curves.update(self._records)
            self.figure.value = self.curves.png()
            self.figure.layout.display = None  # shown from the first drawing on
            self._drawn_at = time.monotonic()

    def _show_notes(self, notes: Sequence[str]) -> None:
        """List the run's notes (rejected updates, dropouts, undefined AUCs) under the message line."""
        self._notes = list(notes)
        items = "".join(f"<li>{html.escape(n)}</li>" for n in self._notes)
        self.notes.value = f'<ul style="margin:2px 0;color:#6d4c00">{items}</ul>' if items else ""

    def _finished(self, result: RunResult) -> None:
        final = result.final
        self.progress.bar_style = "success" if result.status == "finished" else "warning"
        from fedkit.explore import readable_table

        table = readable_table(result.table()).to_html(float_format=lambda v: f"{v:.4f}", na_rep="null", border=0)
        self.table.value = f'<div class="jp-RenderedHTMLCommon">{table}</div>'
        self._show_notes(result.notes)
        rejected = f" {len(result.rejected)} update(s) rejected (see the notes)." if result.rejected else ""
        self._say(
            f"Run {result.run_id} {result.status} after round {final.get('round', 0)}: mean accuracy over "
            f"silos {_number(final['avg_accuracy'])}, pooled AUC {_number((final['pooled'] or {}).get('auc'))}."
            f"{rejected} Recorded in {', '.join(self.selected_trackers())}.",
            "ok",
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _number(value: float | None) -> str:
    """A score for the message line: four decimals, or null (undefined, or from a diverged model)."""
    return "null" if value is None else f"{value:.4f}"


_WIDGET_FIELDS = frozenset(
    (
        "split",
        "silos",
        "alpha",
        "strategy",
        "rounds",
        "local_steps",
        "local_epochs",
        "lr",
        "batch_size",
        "optimizer",
        "weight_decay",
        "seed",
        "dp",
        "dp_epsilon",
        "dp_delta",
        "dp_clip",
    )
)
"""The RunConfig fields the panel has a widget for (the others pass through from ``defaults``)."""


ALPHAS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""The partition explorer's alpha values: exact numbers on a roughly logarithmic scale (plus the one it starts at)."""


class SweepPanel:
    """An ipywidgets panel that runs a :func:`fedkit.sweep` in a thread and shows its grid as a heatmap.

    The grid is typed one field per line (``lr=0.001,0.01``, as ``fedkit sweep --grid``), with
    seeds (``42-46``) and validation folds (0: score on the test sets); every change is checked by
    building every configuration, so Run is disabled, with RunConfig's message, while a value is
    invalid. After a run the panel shows the heatmap of the first two grid fields (best cell
    outlined), the parallel coordinates of the grid and the table; ``result`` is the
    :class:`~fedkit.sweeps.SweepResult`.

    Parameters
    ----------
    grid
        The grid the panel starts with (RunConfig field -> values).
    seeds
        The seeds it starts with.
    folds
        The validation folds it starts with (None or 0: score on the test sets).
    metric
        The score the best configuration is chosen by.
    data_dir
        The folder of the four UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).
    **base
        The RunConfig fields every run shares.
    """

    def __init__(
        self,
        grid: dict[str, list[Any]] | None = None,
        *,
        seeds: Sequence[int] = (42, 43, 44, 45, 46),
        folds: int | None = 4,
        metric: str = "avg_accuracy",
        data_dir: str | Path | None = None,
        **base: Any,
    ) -> None:
        import ipywidgets as w

        from fedkit.sweeps import SCORES

        self.base = base
        self.data_dir = data_dir
        self.result: SweepResult | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._size = (0, 0)  # configurations and runs of the current values
        lines = "\n".join(f"{k}={','.join(map(str, v))}" for k, v in (grid or {"lr": [0.001, 0.01]}).items())
        self.grid = w.Textarea(value=lines, description="grid", rows=4, layout=w.Layout(width="420px"))
        self.grid.tooltip = "One RunConfig field per line: FIELD=VALUE,VALUE,... (as fedkit sweep --grid)"
        self.seeds = _field(w.Text(value=",".join(map(str, seeds)), description="seeds"), "seeds")
        self.folds = _field(w.IntText(value=folds or 0, description="folds"), "folds")
        self.folds.tooltip = "Validation folds of each silo's train rows (0: score on the test sets)"
        self.metric = _field(w.Dropdown(options=SCORES, value=metric, description="choose by"), "metric")
        self.run_button = w.Button(description="Run", icon="play", button_style="primary")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="warning", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="220px"))
        self.message, self.table = w.HTML(), w.HTML()
        self.figures = [w.Image(format="png", layout=w.Layout(max_width="900px")) for _ in range(2)]
        settings = w.VBox([self.seeds, self.folds, self.metric])
        controls = w.HBox([self.run_button, self.stop_button, self.progress], layout=w.Layout(align_items="center"))
        self.widget = w.VBox([w.HBox([self.grid, settings]), controls, self.message, *self.figures, self.table])
        self.widget.add_class("fedkit-sweep-panel")
        for field in (self.grid, self.seeds, self.folds, self.metric):
            field.observe(lambda _: self._check(), names="value")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self._check()

    def arguments(self) -> dict[str, Any]:
        """The :func:`fedkit.sweep` arguments of the current values (raises on a value it cannot read)."""
        from fedkit.sweeps import grid_from_text, seeds_from_text

        return {
            "base": self.base,
            "grid": grid_from_text(self.grid.value.splitlines()),
            "seeds": seeds_from_text(self.seeds.value),
            "folds": self.folds.value or None,
            "metric": self.metric.value,
        }

    def problem(self) -> str | None:
        """Why the current values cannot run (every configuration is built), or None when they can."""
        from fedkit.sweeps import plan_runs

        try:
            args = self.arguments()
            _, combos, runs = plan_runs(args["base"], args["grid"], args["seeds"], args["folds"])
        except FedkitError as exc:
            return str(exc)
        self._size = (len(combos), len(runs))
        return None

    def _check(self) -> None:
        problem = self.problem()
        running = self._thread is not None and self._thread.is_alive()
        self.run_button.disabled = bool(problem) or running
        if problem:
            self._say(problem, "#b00020")
        elif not running:
            self._say(f"Ready: {self._size[0]} configurations, {self._size[1]} runs.", "#444444")

    def _say(self, text: str, color: str) -> None:
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def run(self) -> threading.Thread | None:
        """Start the sweep of the current values in a background thread (what the Run button does)."""
        problem = self.problem()
        if problem or (self._thread is not None and self._thread.is_alive()):
            self._say(problem or "A sweep is running; Stop it or wait for it to finish.", "#b00020")
            return None
        self.result, self.error = None, None
        self._stop.clear()
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.progress.value, self.progress.bar_style = 0, "info"
        self._say(f"Running {self._size[1]} runs…", "#444444")
        self._thread = threading.Thread(target=self._work, args=(self.arguments(),), name="fedkit-sweep", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """End the sweep after the current round (what the Stop button does); its runs are recorded as stopped."""
        self._stop.set()
        self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> SweepResult | None:
        """Block until the sweep ends; returns its result (None if it failed).

        Parameters
        ----------
        timeout
            Seconds to wait at most (None: as long as it takes).

        Returns
        -------
        SweepResult or None
            The sweep's result.
        """
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def _on_round(self, done: int, total: int) -> None:
        self.progress.max, self.progress.value = total, done

    def _work(self, arguments: dict[str, Any]) -> None:
        from fedkit.sweeps import sweep

        try:
            self.result = sweep(
                **arguments,
                progress=False,
                should_stop=self._stop.is_set,
                on_round=self._on_round,
                keep_results=False,
                data_dir=self.data_dir,
            )
        except BaseException as exc:  # shown in the panel
            self.error = exc
            self.progress.bar_style = "danger"
            self._say(f"The sweep failed: {type(exc).__name__}: {exc}", "#b00020")
        else:
            self._show(self.result)
        finally:
            self.stop_button.disabled = True
            self._check()

    def figures_of(self, result: SweepResult) -> list[Figure]:
        """The heatmap of the first two grid fields and the parallel coordinates of all of them.

        Parameters
        ----------
        result
            A sweep's result.

        Returns
        -------
        list of matplotlib.figure.Figure
            Empty when the grid has no field.
        """
        from fedkit.plots import sweep_heatmap_figure, sweep_parallel_figure
        from fedkit.sweeps import LOWER_IS_BETTER

        fields = list(dict.fromkeys(k for c in result.configurations for k in c))
        if not fields:
            return []
        better = result.metric not in LOWER_IS_BETTER
        y = fields[1] if len(fields) > 1 else None
        options = {"metric": result.metric, "best": result.best}
        heatmap = sweep_heatmap_figure(result.table, fields[0], y, higher_is_better=better, **options)
        return [heatmap, sweep_parallel_figure(result.table, fields, metric=result.metric, best=result.best)]

    def _show(self, result: SweepResult) -> None:
        from fedkit.plots import figure_png

        for image, figure in zip(self.figures, self.figures_of(result), strict=False):
            image.value = figure_png(figure)
        styled = result.table.style.format(precision=4, na_rep="–").apply(
            lambda row: ["background-color: #fde0dc" if row.name == result.best else "" for _ in row], axis=1
        )
        self.table.value = f'<div class="jp-RenderedHTMLCommon">{styled.to_html()}</div>'
        self.progress.bar_style = "success" if not self._stop.is_set() else "warning"
        self._say(
            f"Sweep {result.sweep_id}: best by {result.scored_on} {result.metric}: {result.best_fields}. "
            + " ".join(result.notes),
            "#1b5e20",
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def partition_explorer(
    split: str = "dirichlet",
    silos: int = 4,
    alpha: float = 0.5,
    seed: int = 42,
    data_dir: str | Path | None = None,
) -> ipywidgets.Widget:
    """Pick split, silos, alpha and seed; see the label balance of the resulting silos (and RunConfig's errors).

    The alpha slider steps through :data:`ALPHAS` (and ``alpha``), exact values, so its partition is the
    one :func:`~fedkit.data.silos.load_silos` gives for the same parameters.

    Parameters
    ----------
    split
        The initial split.
    silos
        The initial number of silos.
    alpha
        The initial Dirichlet concentration (one of the slider's values).
    seed
        The initial seed.
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else the verified download).
    """
    import ipywidgets as w
    from IPython.display import display

    from fedkit.data.silos import SKEWED, SPLITS, SYNTHETIC, load_silos
    from fedkit.explore import partition_table
    from fedkit.plots import label_balance_figure

    alphas = sorted({*ALPHAS, float(alpha)})
    controls = {
        "split": _field(w.Dropdown(options=SPLITS, value=split, description="split"), "split"),
        "silos": _field(w.IntSlider(value=silos, min=2, max=16, description="silos"), "silos"),
        "alpha": _field(w.SelectionSlider(options=alphas, value=float(alpha), description="alpha"), "alpha"),
        "seed": _field(w.IntText(value=seed, description="seed"), "seed"),
    }

    def show(split: str, silos: int, alpha: float, seed: int) -> None:
        controls["silos"].disabled = split not in SYNTHETIC
        controls["alpha"].disabled = split not in SKEWED
        try:
            federation = load_silos(
                split, silos=silos if split in SYNTHETIC else None, alpha=alpha, seed=seed, data_dir=data_dir
            )
        except FedkitError as exc:
            display(w.HTML(f'<span style="color:#b00020">{html.escape(str(exc))}</span>'))
            return
        display(label_balance_figure(federation), partition_table(federation))

    out = w.interactive_output(show, controls)
    return w.VBox([w.HBox(list(controls.values())), out])

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
    "seeds": "Seeds every configuration runs with: 42-46, or 42,43,50",
    "metric": "The score the best configuration is chosen by",
}


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
    **defaults
        RunConfig fields that preset the panel (fields the panel has no widget for, e.g. ``mu``, are passed through
        unchanged).
    """

    def __init__(
        self,
        *,
        trackers: Sequence[str] = ("local",),
        callbacks: Sequence[Callable[[RoundEvent], None]] = (),
        **defaults: Any,
    ) -> None:
        from fedkit.config import RunConfig

        base = RunConfig.from_dict(defaults)  # a bad preset fails here, with RunConfig's message
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
        self._drawn_at = 0.0
        self._build_fields(base)
        self._build_trackers(trackers)
        self._build_outputs(base.rounds)
        self.widget = self._layout()
        for field in self._inputs():
            field.observe(self._on_change, names="value")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
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
        self.progress = w.IntProgress(value=0, min=0, max=rounds, description="", bar_style="info")
        self.progress.layout.width = "220px"
        self.counter = w.Label(value=f"round 0/{rounds}")
        self.counter.add_class("fedkit-round-counter")
        self.message = w.HTML()
        self.message.add_class("fedkit-message")
        self.figure = w.Image(format="png", layout=w.Layout(width="100%", max_width="1140px"))
        self.figure.add_class("fedkit-figure")
        self.table = w.HTML()
        self.table.add_class("fedkit-table")

    def _layout(self) -> ipywidgets.Widget:
        """The panel: the fields in three columns, the tracker row, the controls, then the outputs."""
        import ipywidgets as w

        fields = [self.split, self.strategy, self.rounds, self.silos, self.optimizer, self.lr]
        fields += [self.alpha, self.batch_size, self.weight_decay, self.local_unit, self.local_amount, self.seed]
        grid = w.GridBox(
            fields, layout=w.Layout(grid_template_columns=f"repeat(3, {FIELD_WIDTH})", grid_gap="4px 16px")
        )
        label = w.Label("record in:", layout=w.Layout(width=DESCRIPTION_WIDTH))
        tracker_row = w.HBox([label, *self.trackers.values()])
        controls = w.HBox([self.run_button, self.stop_button, self.progress, self.counter])
        controls.layout.align_items = "center"
        panel = w.VBox([grid, tracker_row, controls, self.message, self.figure, self.table])
        panel.add_class("fedkit-panel")
        return panel

    # -- state -----------------------------------------------------------------------------------
    def _inputs(self) -> list[ipywidgets.Widget]:
        fields = [self.split, self.silos, self.alpha, self.strategy, self.rounds, self.local_unit, self.local_amount]
        fields += [self.lr, self.batch_size, self.optimizer, self.weight_decay, self.seed]
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
        }

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
            self._say(
                f"Ready: {config.strategy} on the {config.split} split, {config.rounds} rounds, "
                f"recorded in {', '.join(self.selected_trackers())}.",
                "info",
            )

    def _refresh(self) -> str | None:
        """Enable what applies to the current values; returns the problem that blocks Run, if any."""
        from fedkit.data.silos import SYNTHETIC
        from fedkit.tracking.registry import available_trackers

        with self._lock:
            running = self._running
            for field in self._inputs():
                field.disabled = running
            self.silos.disabled = running or self.split.value not in SYNTHETIC
            self.alpha.disabled = running or self.split.value not in ("dirichlet", "quantity")
            for name, usable in available_trackers().items():
                self.trackers[name].disabled = running or name == "local" or not usable
            problem = self.problem()
            self.run_button.disabled = bool(problem) or running
            self.stop_button.disabled = not running or self._stop.is_set()
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
        from fedkit.config import load_federation
        from fedkit.plots import LiveCurves
        from fedkit.tracking.factory import make_trackers

        config = self.config()
        try:
            trackers = make_trackers(self.selected_trackers())
            federation = load_federation(config)
        except FedkitError as exc:
            self._say(str(exc), "error")
            return None
        title = f"{config.strategy} · {config.split} split · seed {config.seed}"
        self.curves = LiveCurves(federation.names, config.rounds, model=config.scored, title=title)
        self.result, self.error, self._records = None, None, []
        self._stop.clear()
        self.progress.max, self.progress.value, self.progress.bar_style = config.rounds, 0, "info"
        self.counter.value = f"round 0/{config.rounds}"
        self.table.value = ""
        self._draw()
        self._say(f"Running {title}…", "info")
        with self._lock:  # the panel shows "running" before the thread can end it
            self._running = True
            self._refresh()
            self._thread = threading.Thread(
                target=self._work, args=(config, federation, trackers), name="fedkit-run", daemon=True
            )
            self._thread.start()
        return self._thread

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

    def _work(self, config: RunConfig, federation: Any, trackers: list[Any]) -> None:
        from fedkit.api import run

        try:
            self.result = run(
                config,
                federation=federation,
                trackers=trackers,
                callbacks=[self._on_round, *self.callbacks],
                should_stop=self._stop.is_set,
                progress=False,
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
                self._refresh()

    def _on_round(self, event: RoundEvent) -> None:
        self._records.extend(event.rows)
        now = time.monotonic()
        if event.round == event.rounds or now - self._drawn_at >= REDRAW_EVERY_S:
            self._draw()  # before the counter, so "round N/N" means the figure shows round N
        self.progress.value = event.round
        self.counter.value = f"round {event.round}/{event.rounds}"

    def _draw(self) -> None:
        if self.curves is not None:
            self.curves.update(self._records)
            self.figure.value = self.curves.png()
            self._drawn_at = time.monotonic()

    def _finished(self, result: RunResult) -> None:
        final = result.final
        self.progress.bar_style = "success" if result.status == "finished" else "warning"
        table = result.table().to_html(float_format=lambda v: f"{v:.4f}", na_rep="null", border=0)
        self.table.value = f'<div class="jp-RenderedHTMLCommon">{table}</div>'
        self._say(
            f"Run {result.run_id} {result.status} after round {final.get('round', 0)}: mean accuracy over "
            f"silos {final['avg_accuracy']:.4f}, pooled AUC {final['pooled']['auc'] or float('nan'):.4f}. "
            f"Recorded in {', '.join(self.selected_trackers())}.",
            "ok",
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


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
    )
)
"""The RunConfig fields the panel has a widget for (the others pass through from ``defaults``)."""


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
        **base: Any,
    ) -> None:
        import ipywidgets as w

        from fedkit.sweeps import SCORES

        self.base = base
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
                **arguments, progress=False, should_stop=self._stop.is_set, on_round=self._on_round, keep_results=False
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
    split: str = "dirichlet", silos: int = 4, alpha: float = 0.5, seed: int = 42
) -> ipywidgets.Widget:
    """Pick split, silos, alpha and seed; see the label balance of the resulting silos (and RunConfig's errors).

    Parameters
    ----------
    split
        The initial split.
    silos
        The initial number of silos.
    alpha
        The initial Dirichlet concentration.
    seed
        The initial seed.
    """
    import ipywidgets as w
    from IPython.display import display

    from fedkit.data.silos import SPLITS, load_silos
    from fedkit.explore import partition_table
    from fedkit.plots import label_balance_figure

    controls = {
        "split": _field(w.Dropdown(options=SPLITS, value=split, description="split"), "split"),
        "silos": _field(w.IntSlider(value=silos, min=2, max=16, description="silos"), "silos"),
        "alpha": _field(w.FloatLogSlider(value=alpha, base=10, min=-2, max=2, step=0.1, description="alpha"), "alpha"),
        "seed": _field(w.IntText(value=seed, description="seed"), "seed"),
    }

    def show(split: str, silos: int, alpha: float, seed: int) -> None:
        from fedkit.data.silos import SYNTHETIC

        controls["silos"].disabled = split not in SYNTHETIC
        controls["alpha"].disabled = split not in ("dirichlet", "quantity")
        try:
            federation = load_silos(split, silos=silos if split in SYNTHETIC else None, alpha=alpha, seed=seed)
        except FedkitError as exc:
            display(w.HTML(f'<span style="color:#b00020">{html.escape(str(exc))}</span>'))
            return
        display(label_balance_figure(federation), partition_table(federation))

    out = w.interactive_output(show, controls)
    return w.VBox([w.HBox(list(controls.values())), out])

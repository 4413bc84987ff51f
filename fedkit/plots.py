"""Matplotlib figures for the notebooks and reports, with one colour per silo everywhere.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
safe to draw from the widget panel's training thread); a notebook displays it as the last value of
a cell (``%matplotlib inline``). Colours come from :func:`silo_colors`: a hospital, a synthetic silo
``silo_03`` and the pooled test set get the same colour in every notebook and report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fedkit.metrics import METRICS
from fedkit.result import POOLED

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from fedkit.data.silos import Federation

# tab10 without its grey (grey is too close to the pooled black), then tab20's light shades.
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
)
HOSPITAL_COLORS: dict[str, str] = {
    "cleveland": PALETTE[0],
    "hungarian": PALETTE[1],
    "switzerland": PALETTE[2],
    "va": PALETTE[3],
}
POOLED_COLOR = "#222222"
METRIC_LABELS: dict[str, str] = {"loss": "test loss (BCE)", "auc": "test ROC AUC", "accuracy": "test accuracy"}
LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
HATCHES: tuple[str, ...] = ("", "//", "..", "xx", "\\\\", "oo")
_SYNTHETIC = re.compile(r"^silo_(\d+)$")


def silo_colors(names: Sequence[str]) -> dict[str, str]:
    """The colour of each silo name: fixed per hospital, ``silo_<i>`` by its number, pooled near-black.

    A name is always given the same colour, whatever else is in ``names``, so every notebook and
    report shows a silo in one colour. Other names take the palette colours in order.

    Parameters
    ----------
    names
        Silo names (``pooled`` included or not).
    """
    colors: dict[str, str] = {}
    others = 0
    for name in names:
        match = _SYNTHETIC.match(name)
        if name == POOLED:
            colors[name] = POOLED_COLOR
        elif name in HOSPITAL_COLORS:
            colors[name] = HOSPITAL_COLORS[name]
        elif match:
            colors[name] = PALETTE[int(match.group(1)) % len(PALETTE)]
        else:
            colors[name] = PALETTE[(len(HOSPITAL_COLORS) + others) % len(PALETTE)]
            others += 1
    return colors


def new_figure(ncols: int, *, nrows: int = 1, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    """A pyplot-free figure with ``nrows`` x ``ncols`` axes (flattened), sized for a notebook.

    Parameters
    ----------
    ncols
        Columns of axes.
    nrows
        Rows of axes.
    width
        Width of one panel, in inches.
    height
        Height of one panel, in inches.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=90, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def scored_model(history: pd.DataFrame) -> str:
    """The model whose test curves a run is judged by, read back from its rows: :attr:`RunConfig.scored
    <fedkit.config.RunConfig.scored>` is personal exactly when the round loop recorded personal rows.

    Parameters
    ----------
    history
        A run's long metric table (``RunResult.history``).
    """
    return "personal" if "personal" in set(history["model"]) else "global"


def _curves(history: pd.DataFrame, model: str, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    rows = history[(history["model"] == model) & (history["split"] == "test") & (history["metric"] == metric)]
    return {
        silo: (part["round"].tolist(), part["value"].tolist())
        for silo, part in rows.sort_values("round").groupby("silo", sort=False)
    }


def _silo_order(names: Sequence[str]) -> list[str]:
    """Silos in their order, pooled last."""
    return [n for n in names if n != POOLED] + ([POOLED] if POOLED in names else [])


def curves_figure(
    history: pd.DataFrame,
    *,
    model: str | None = None,
    metrics: Sequence[str] = METRICS,
    title: str | None = None,
) -> Figure:
    """Test loss / AUC / accuracy per round: one panel per metric, one line per silo plus pooled.

    Parameters
    ----------
    history
        A run's long metric table (``RunResult.history``).
    model
        The model whose curves to draw (default: the one the run is scored by: global, or personal with
        personalization).
    metrics
        One panel per metric, in this order.
    title
        Figure title.
    """
    model = model or scored_model(history)
    fig, axes = new_figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        curves = _curves(history, model, metric)
        colors = silo_colors(list(curves))
        for silo in _silo_order(list(curves)):
            xs, ys = curves[silo]
            ax.plot(xs, ys, color=colors[silo], label=silo, lw=2.4 if silo == POOLED else 1.6, marker=".")
        style_axes(ax, metric, f"{metric} ({model} model)")
    axes[-1].legend(title="silo", fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title)
    return fig


def style_axes(ax: Axes, metric: str, title: str) -> None:
    """Title, axis labels, at most 5 ticks per axis (integer rounds) and a light grid.

    Five ticks read as well as eight, and tick labels are most of a figure's drawing time (a fifth less with five),
    which a report waits for.

    Parameters
    ----------
    ax
        The axes to style.
    metric
        The metric on the y axis.
    title
        The panel's title.
    """
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.grid(alpha=0.3)


class LiveCurves:
    """Curves that grow round by round (the widget panel's figure): one line per silo plus pooled per metric.

    Parameters
    ----------
    silos
        Silo names, one line each (plus pooled).
    rounds
        The run's rounds (the x axis's extent).
    model
        The model whose curves are drawn: ``"global"`` or ``"personal"``.
    title
        Figure title.
    privacy
        Also draw the run's ε (at its δ) round by round, in a panel of its own (a DP run).
    """

    def __init__(
        self, silos: Sequence[str], rounds: int, *, model: str = "global", title: str = "", privacy: bool = False
    ) -> None:
        self.silos = _silo_order([*silos, POOLED])
        self.model = model
        self.figure, axes = new_figure(len(METRICS) + (1 if privacy else 0))
        self.axes, self.privacy_axes = axes[: len(METRICS)], (axes[-1] if privacy else None)
        self.epsilon_line = None
        if self.privacy_axes is not None:
            (self.epsilon_line,) = self.privacy_axes.plot([], [], color="#333333", lw=2.0, marker=".")
            self.privacy_axes.set_title("privacy spent")
            self.privacy_axes.set_xlabel("round")
            self.privacy_axes.set_ylabel("ε at δ")
            self.privacy_axes.set_xlim(0, max(rounds, 1))
            self.privacy_axes.grid(alpha=0.3)
        colors = silo_colors(self.silos)
        self.lines: dict[tuple[str, str], Any] = {}
        for ax, metric in zip(self.axes, METRICS, strict=True):
            for silo in self.silos:
                (line,) = ax.plot([], [], color=colors[silo], label=silo, lw=2.4 if silo == POOLED else 1.6, marker=".")
                self.lines[(metric, silo)] = line
            style_axes(ax, metric, f"{metric} ({model} model)")
            ax.set_xlim(0, max(rounds, 1))
        self.axes[-1].legend(title="silo", fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
        if title:
            self.figure.suptitle(title)

    def update(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Redraw every line from the metric rows received so far.

        Parameters
        ----------
        records
            Every metric row of the run so far.
        """
        points: dict[tuple[str, str], dict[int, float]] = {key: {} for key in self.lines}
        for r in records:
            key = (r["metric"], r["silo"])
            if r["model"] == self.model and r["split"] == "test" and key in points:
                points[key][r["round"]] = r["value"]
        for key, line in self.lines.items():
            rounds = sorted(points[key])
            line.set_data(rounds, [points[key][i] for i in rounds])
        for ax in self.axes:  # the y axes fit the curves, as curves_figure's do (rounds stay fixed on x)
            ax.relim()
            ax.autoscale_view(scalex=False)
        if self.epsilon_line is not None and self.privacy_axes is not None:
            spent = {
                r["round"]: r["value"]
                for r in records
                if r["split"] == "privacy" and r["silo"] == POOLED and r["metric"] == "epsilon"
            }
            self.epsilon_line.set_data(sorted(spent), [spent[i] for i in sorted(spent)])
            self.privacy_axes.relim()
            self.privacy_axes.autoscale_view(scalex=False)

    def png(self) -> bytes:
        """The figure as PNG bytes (Agg canvas; no display needed)."""
        return figure_png(self.figure)


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes, drawn on an Agg canvas (no display needed: a widget's ``Image`` shows them).

    Parameters
    ----------
    figure
        The matplotlib figure.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def label_balance_figure(federation: Federation, title: str | None = None) -> Figure:
    """Rows per silo split into positives (silo colour) and negatives (grey), with the positive rate.

    Parameters
    ----------
    federation
        The silos.
    title
        Figure title.
    """
    summary = federation.summary()
    names = [r["silo"] for r in summary]
    colors = silo_colors(names)
    fig, (ax,) = new_figure(1, width=max(6.5, 0.75 * len(names) + 4), height=3.4)  # + the legend beside
    positives = [r["positives"] for r in summary]
    negatives = [r["rows"] - r["positives"] for r in summary]
    ax.bar(names, negatives, color="#cccccc", label="negative (num = 0)")
    ax.bar(names, positives, bottom=negatives, color=[colors[n] for n in names], label="positive (num > 0)")
    for i, r in enumerate(summary):
        ax.annotate(f"{r['positive_rate']:.0%}", (i, r["rows"]), ha="center", va="bottom", fontsize="small")
    ax.set_title(title or f"Label balance per silo ({federation.split} split)")
    ax.set_xlabel("silo")
    ax.set_ylabel("patients (label: % positive on top)")
    ax.margins(y=0.12)
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 6 else 0)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on a label
    return fig


def feature_figure(tables: Mapping[str, pd.DataFrame], features: Sequence[str], title: str | None = None) -> Figure:
    """Distribution of raw features per silo (densities, or level shares for categorical columns).

    Parameters
    ----------
    tables
        Each silo's raw rows, by silo name.
    features
        Columns to draw, one panel each.
    title
        Figure title.
    """
    import numpy as np

    colors = silo_colors(list(tables))
    ncols = min(4, len(features))
    nrows = -(-len(features) // ncols)
    fig, axes = new_figure(ncols, nrows=nrows, width=3.6, height=2.8)
    for ax, feature in zip(axes, features, strict=False):
        values = {silo: t[feature].dropna().to_numpy() for silo, t in tables.items()}
        levels = np.unique(np.concatenate(list(values.values())))
        if len(levels) <= 5:
            width = 0.8 / len(values)
            for i, (silo, v) in enumerate(values.items()):
                shares = [(v == level).mean() if len(v) else np.nan for level in levels]
                ax.bar(np.arange(len(levels)) + i * width, shares, width, color=colors[silo], label=silo)
            ax.set_xticks(np.arange(len(levels)) + 0.4 - width / 2, [f"{x:g}" for x in levels])
            ax.set_ylabel("share of patients")
        else:
            edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=20)
            for silo, v in values.items():
                if len(v):
                    ax.hist(v, bins=edges, density=True, histtype="step", lw=1.6, color=colors[silo], label=silo)
            ax.set_ylabel("density")
        ax.set_title(feature)
        ax.set_xlabel(feature)
        ax.grid(alpha=0.3)
    for ax in axes[len(features) :]:
        ax.set_visible(False)
    axes[0].legend(title="silo", fontsize="small")
    fig.suptitle(title or "Raw feature distributions per silo (missing values left out)")
    return fig


def overlay_figure(histories: Mapping[str, pd.DataFrame], metric: str = "auc", title: str | None = None) -> Figure:
    """One panel per silo (and pooled), one line per run: silo colour, a line style per run, one legend for all.

    A silo gets a panel only when some run has a value of ``metric`` for it (an AUC is undefined on a
    one-class test set), so no panel is drawn empty.

    Parameters
    ----------
    histories
        Each run's long metric table, by run label.
    metric
        ``"loss"``, ``"auc"`` or ``"accuracy"``.
    title
        Figure title.
    """
    import math

    from matplotlib.lines import Line2D

    curves = {label: _curves(history, scored_model(history), metric) for label, history in histories.items()}
    silos: list[str] = []
    for by_silo in curves.values():
        silos += [s for s, (_, ys) in by_silo.items() if s not in silos and any(not math.isnan(y) for y in ys)]
    silos = _silo_order(silos)
    colors = silo_colors(silos)
    ncols = max(1, len(silos) if len(silos) <= 5 else 4)
    fig, axes = new_figure(ncols, nrows=max(1, -(-len(silos) // ncols)), width=3.4, height=2.8)
    styles = {label: LINESTYLES[i % len(LINESTYLES)] for i, label in enumerate(curves)}
    for ax, silo in zip(axes, silos, strict=False):
        for label, by_silo in curves.items():
            if silo in by_silo:
                xs, ys = by_silo[silo]
                ax.plot(xs, ys, color=colors[silo], ls=styles[label], lw=1.6, label=label)
        style_axes(ax, metric, silo)
    for ax in axes[len(silos) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="#333333", ls=style, lw=1.6, label=label) for label, style in styles.items()]
    fig.legend(handles=handles, title="run (line style)", loc="outside lower center", ncols=min(3, len(handles)))
    fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} per silo, runs overlaid")
    return fig


def final_bars_figure(finals: Mapping[str, pd.DataFrame], metric: str = "accuracy", title: str | None = None) -> Figure:
    """Final ``metric`` per silo (and pooled) for several runs: silo colour, one hatch per run, 95% intervals.

    Parameters
    ----------
    finals
        Each run's final table (``RunResult.table()``: index silo), by run label; its ``{metric}_low`` /
        ``{metric}_high`` columns, when there, are drawn as error bars.
    metric
        ``"loss"``, ``"auc"`` or ``"accuracy"``.
    title
        Figure title.
    """
    import numpy as np
    from matplotlib.patches import Patch

    silos: list[str] = []
    for table in finals.values():
        silos += [s for s in table.index if s not in silos]
    silos = _silo_order(silos)
    colors = silo_colors(silos)
    width = 0.8 / max(len(finals), 1)
    fig, (ax,) = new_figure(1, width=max(7.5, 0.5 * len(silos) * max(len(finals), 2) + 2), height=4.4)
    handles = []
    for i, (label, table) in enumerate(finals.items()):
        values = np.array([table[metric].get(s, np.nan) for s in silos], dtype=float)
        x = np.arange(len(silos)) + i * width
        hatch = HATCHES[i % len(HATCHES)]
        ax.bar(x, values, width, color=[colors[s] for s in silos], hatch=hatch, edgecolor="white", label=label)
        if f"{metric}_low" in table.columns:
            low = np.array([table[f"{metric}_low"].get(s, np.nan) for s in silos], dtype=float)
            high = np.array([table[f"{metric}_high"].get(s, np.nan) for s in silos], dtype=float)
            known = ~np.isnan(low) & ~np.isnan(values)
            yerr = np.vstack([values - low, high - values])[:, known]
            ax.errorbar(x[known], values[known], yerr=yerr, fmt="none", ecolor="#333333", capsize=3, lw=1)
        handles.append(Patch(facecolor="#dddddd", edgecolor="#333333", hatch=hatch, label=label))
    ax.set_xticks(np.arange(len(silos)) + 0.4 - width / 2, silos)
    ax.set_xlabel("silo")
    ax.set_ylabel(f"final {METRIC_LABELS.get(metric, metric)}")
    ax.set_title(title or f"Final {metric} per silo (bars: 95% interval over the test rows)")
    ax.grid(axis="y", alpha=0.3)
    if metric != "loss":
        ax.set_ylim(0, 1.05)
    fig.legend(handles=handles, title="run (hatch)", loc="outside lower center", ncols=min(3, len(handles)))
    return fig


# -- sweeps -------------------------------------------------------------------------------------

SWEEP_LABELS: dict[str, str] = {
    "avg_accuracy": "Avg accuracy over silos",
    "pooled_auc": "pooled ROC AUC",
    "pooled_accuracy": "pooled accuracy",
    "pooled_loss": "pooled loss (BCE)",
}


def _levels(values: Sequence[Any]) -> list[Any]:
    """The distinct values of a grid field, sorted when they are all numbers (None first), else as they come."""
    distinct = list(dict.fromkeys(values))
    numbers = [v for v in distinct if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len([v for v in distinct if v is not None]):
        return [v for v in distinct if v is None] + sorted(numbers)
    return distinct


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_heatmap_figure(
    table: pd.DataFrame,
    x: str,
    y: str | None = None,
    *,
    metric: str = "avg_accuracy",
    best: int | None = None,
    higher_is_better: bool = True,
    title: str | None = None,
) -> Figure:
    """A sweep's mean ``metric`` over seeds on a grid of ``x`` × ``y`` values, each cell labelled, the best outlined.

    Parameters
    ----------
    table
        :class:`fedkit.SweepResult`'s ``table``: one row per configuration, its grid fields and ``<metric>_mean``.
    x, y
        Grid fields on the columns and rows (``y=None``: one row). With more grid fields, a cell
        shows the best value over the others.
    metric
        The score shown (``avg_accuracy``, ``pooled_auc``, ``pooled_accuracy``, ``pooled_loss``).
    best
        The table row of the best configuration (a :class:`fedkit.SweepResult`'s ``best``): its cell is outlined.
    higher_is_better
        False for a loss: a cell then shows the lowest value over the other fields.
    title
        The figure's title (default: the metric and what it is the mean of).
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    column = f"{metric}_mean"
    xs = _levels(table[x].tolist())
    ys = _levels(table[y].tolist()) if y else [None]
    values = np.full((len(ys), len(xs)), np.nan)
    for _, row in table.iterrows():
        i, j = (ys.index(row[y]) if y else 0), xs.index(row[x])
        v = row[column]
        if not np.isnan(v) and (np.isnan(values[i, j]) or (v > values[i, j]) == higher_is_better):
            values[i, j] = v
    fig, (ax,) = new_figure(1, width=max(5.5, 0.9 * len(xs) + 2.6), height=max(2.6, 0.5 * len(ys) + 1.8))
    image = ax.imshow(values, cmap="viridis" if higher_is_better else "viridis_r", aspect="auto")
    fig.colorbar(image, ax=ax, label=SWEEP_LABELS.get(metric, metric))
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(values[i, j]):
                color = "white" if (values[i, j] < middle) == higher_is_better else "black"
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize="small", color=color)
    ax.set_xticks(range(len(xs)), [_text(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_text(v) for v in ys] if y else [""])
    ax.set_xlabel(x)
    if y:
        ax.set_ylabel(y)
    if best is not None:
        row = table.loc[best]
        i, j = (ys.index(row[y]) if y else 0), xs.index(row[x])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=3))
    others = [c for c in table.columns if c not in (x, y) and not c.endswith(("_mean", "_std"))]
    others = [c for c in others if c not in ("runs", "complete")]
    note = f"\neach cell: the best over {', '.join(others)}" if others else ""
    ax.set_title(
        title or f"{SWEEP_LABELS.get(metric, metric)}, mean over seeds; best outlined{note}", fontsize="medium"
    )
    return fig


def sweep_parallel_figure(
    table: pd.DataFrame,
    fields: Sequence[str],
    *,
    metric: str = "avg_accuracy",
    best: int | None = None,
    title: str | None = None,
) -> Figure:
    """Parallel coordinates of a sweep: an axis per grid field and one for ``metric``; one line per configuration.

    Lines are coloured by the mean ``metric`` over seeds; the best configuration (``best``, a table
    row) is drawn thick in red. A numeric field spanning more than a factor of 10 is on a log scale.

    Parameters
    ----------
    table
        :class:`fedkit.SweepResult`'s ``table``.
    fields
        The grid fields, one axis each, left to right.
    metric
        The score on the last axis and in the colours.
    best
        The table row drawn in red.
    title
        The figure's title.
    """
    import numpy as np
    from matplotlib import colormaps

    column = f"{metric}_mean"
    positions, labels = [], []
    for name in fields:
        levels = _levels(table[name].tolist())
        numeric = [v for v in levels if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numeric) == len(levels) and len(levels) > 1 and min(numeric) > 0 and max(numeric) / min(numeric) > 10:
            logs = np.log10(np.asarray(table[name], dtype=float))
            low, high = float(logs.min()), float(logs.max())
            positions.append((logs - low) / (high - low))
            labels.append([((np.log10(v) - low) / (high - low), _text(v)) for v in levels])
        else:
            where = {v: k / max(len(levels) - 1, 1) for k, v in enumerate(levels)}
            positions.append(np.array([where[v] for v in table[name]]))
            labels.append([(where[v], _text(v)) for v in levels])
    scores = np.asarray(table[column], dtype=float)
    finite = scores[np.isfinite(scores)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low or 1.0
    positions.append((scores - low) / span)
    labels.append([(0.0, f"{low:.3f}"), (1.0, f"{high:.3f}")])
    points = np.column_stack(positions)
    fig, (ax,) = new_figure(1, width=max(5.5, 1.6 * (len(fields) + 1)), height=3.6)
    cmap = colormaps["viridis"]
    for k in np.argsort(np.nan_to_num(scores, nan=-np.inf)):  # best lines drawn last, on top
        if k != best:
            color = cmap((scores[k] - low) / span) if np.isfinite(scores[k]) else "#cccccc"
            ax.plot(range(points.shape[1]), points[k], color=color, alpha=0.6, lw=1.2)
    if best is not None:
        k = list(table.index).index(best)
        ax.plot(range(points.shape[1]), points[k], color="#d62728", lw=3.0, label="best configuration")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for axis, ticks in enumerate(labels):
        ax.axvline(axis, color="#444444", lw=0.8)
        for height, text in ticks:
            ax.text(axis + 0.03, height, text, fontsize="x-small", va="center")
    ax.set_xticks(range(len(fields) + 1), [*fields, SWEEP_LABELS.get(metric, metric)])
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(fields) + 0.4)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(title or f"one line per configuration, coloured by mean {metric} over seeds", fontsize="medium")
    return fig


# -- privacy ------------------------------------------------------------------------------------

ATTACK_LABELS: dict[str, str] = {"loss_threshold_attack": "loss threshold", "shadow_model_attack": "shadow models"}


def _epsilon_axis(values: Sequence[float]) -> tuple[list[float], list[float], list[str]]:
    """x positions of ε values on a log axis, ∞ placed one decade right of the largest finite one."""
    import math

    finite = sorted({float(v) for v in values if math.isfinite(v)})
    right = (finite[-1] if finite else 1.0) * 10
    ticks = [*finite, *([right] if any(not math.isfinite(v) for v in values) else [])]
    labels = [f"{v:g}" for v in finite] + (["∞ (no DP)"] if len(ticks) > len(finite) else [])
    return [v if math.isfinite(v) else right for v in values], ticks, labels


def tradeoff_figure(summary: pd.DataFrame, title: str | None = None) -> Figure:
    """Attack AUC (with its interval) and utility against ε: the privacy–utility trade-off of each DP mode.

    Left: each attack on each target (:data:`fedkit.tradeoff.TARGETS`), a line per DP mode; the band is
    the bootstrap interval; 0.5 is a coin. Right: Avg accuracy and pooled AUC. The run without DP is
    drawn at the right end of the axis (ε = ∞) for every mode.

    Parameters
    ----------
    summary
        :func:`fedkit.tradeoff.summarize`'s table (or :func:`fedkit.tradeoff.tradeoff`'s).
    title
        Figure title.
    """
    import pandas as pd

    fig, axes = new_figure(3, width=4.4, height=3.4)
    modes = [m for m in summary["dp"].unique() if m != "none"] or ["none"]
    plain = summary[summary["dp"] == "none"]
    styles = dict(zip(summary["attack"].unique(), LINESTYLES, strict=False))
    panels = dict(zip(summary["target"].unique(), axes[:2], strict=False))
    for i, mode in enumerate(modes):
        rows = pd.concat([summary[summary["dp"] == mode], plain]) if mode != "none" else plain
        color = f"C{i}"
        for (target, name), part in rows.groupby(["target", "attack"], sort=False):
            part = part.groupby("target_epsilon").mean(numeric_only=True).reset_index()
            xs, ticks, labels = _epsilon_axis(part["target_epsilon"].tolist())
            ax = panels[target]
            ax.plot(
                xs,
                part["auc"],
                marker="o",
                color=color,
                ls=styles[name],
                label=f"{mode}, {ATTACK_LABELS.get(name, name)}",
            )
            ax.fill_between(xs, part["low"], part["high"], color=color, alpha=0.12)
            ax.set_xticks(ticks, labels)
        util = rows.drop_duplicates(["target_epsilon", "seed"]) if "seed" in rows else rows
        util = util.groupby("target_epsilon").mean(numeric_only=True).reset_index()
        xs, ticks, labels = _epsilon_axis(util["target_epsilon"].tolist())
        axes[2].plot(xs, util["avg_accuracy"], marker="o", color=color, label=f"{mode}: Avg accuracy")
        axes[2].plot(xs, util["pooled_auc"], marker="s", color=color, ls="--", label=f"{mode}: pooled AUC")
        axes[2].set_xticks(ticks, labels)
    for target, ax in panels.items():
        ax.axhline(0.5, color="#888888", lw=1, ls=":")
        ax.set_title(f"attack on the {target}")
        ax.set_ylabel("attack ROC AUC (0.5 = a coin)")
    axes[2].set_title("utility")
    axes[2].set_ylabel("Avg accuracy / pooled AUC")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("ε (δ fixed)")
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title or "What differential privacy buys (attack AUC) and costs (utility)")
    return fig

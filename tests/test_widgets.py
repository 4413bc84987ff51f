"""The control panel without a browser: values → RunConfig, Run records the run, Stop stops it; plots."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("ipywidgets")

import fedkit
from fedkit import plots
from fedkit.result import POOLED
from fedkit.widgets import ControlPanel, partition_explorer

RUN_TIMEOUT_S = 60


def test_run_button_records_a_run_with_the_panel_values_and_draws_one_line_per_silo(data_dir) -> None:
    panel = ControlPanel()
    panel.split.value = "dirichlet"
    panel.silos.value = 5
    panel.alpha.value = 0.3
    panel.strategy.value = "fedavgm"
    panel.rounds.value = 3
    panel.local_unit.value = "epochs"
    panel.local_amount.value = 1
    panel.lr.value = 0.02
    panel.batch_size.value = 8
    panel.optimizer.value = "adam"
    panel.weight_decay.value = 0.001
    panel.seed.value = 7
    assert not panel.run_button.disabled
    panel.run_button.click()
    result = panel.wait(RUN_TIMEOUT_S)

    assert result is not None and result.status == "finished"
    recorded = fedkit.load_run(result.run_id)
    assert recorded["status"] == "finished"
    expected = {
        "split": "dirichlet",
        "silos": 5,
        "alpha": 0.3,
        "strategy": "fedavgm",
        "rounds": 3,
        "local_epochs": 1,
        "local_steps": None,
        "lr": 0.02,
        "batch_size": 8,
        "optimizer": "adam",
        "weight_decay": 0.001,
        "seed": 7,
    }
    assert {k: recorded["config"][k] for k in expected} == expected
    silos = [f"silo_{i}" for i in range(5)]
    for ax in panel.curves.axes:
        labels = [line.get_label() for line in ax.lines]
        assert labels == [*silos, POOLED]
        assert all(len(line.get_xdata()) == 4 for line in ax.lines)  # rounds 0..3
        assert ax.get_title() and ax.get_xlabel() == "round" and ax.get_ylabel()
    assert panel.counter.value == "round 3/3"
    assert panel.progress.value == 3
    assert bytes(panel.figure.value).startswith(b"\x89PNG")
    assert "silo_4" in panel.table.value and "pooled" in panel.table.value
    assert "finished" in panel.message.value
    assert not panel.run_button.disabled and panel.stop_button.disabled


def test_stop_mid_run_ends_after_the_round_and_records_stopped(data_dir) -> None:
    panel = ControlPanel(rounds=50, local_steps=5)

    def stop_at_round_two(event) -> None:
        if event.round == 2:
            assert not panel.stop_button.disabled
            panel.stop_button.click()

    panel.callbacks.append(stop_at_round_two)
    panel.run_button.click()
    result = panel.wait(RUN_TIMEOUT_S)
    assert result is not None and result.status == "stopped"
    assert fedkit.load_run(result.run_id)["status"] == "stopped"
    assert result.final["round"] == 2
    assert panel.counter.value == "round 2/50"
    assert "stopped" in panel.message.value


def test_resume_continues_a_stopped_run_to_the_uninterrupted_result(data_dir) -> None:
    panel = ControlPanel(rounds=4, local_steps=5, strategy="fedavgm")
    assert panel.resume_button.disabled and panel.resume_from.value is None  # nothing to resume yet
    panel.callbacks.append(lambda event: event.round == 2 and panel.stop())
    panel.run_button.click()
    stopped = panel.wait(RUN_TIMEOUT_S)
    assert stopped is not None and stopped.status == "stopped"
    assert panel.resume_from.value == stopped.run_id and not panel.resume_button.disabled  # offered at once
    panel.callbacks.clear()
    panel.lr.value = 0.5  # the resumed run takes its recorded config, whatever the fields say
    panel.resume_button.click()
    resumed = panel.wait(RUN_TIMEOUT_S)
    uninterrupted = fedkit.run(fedkit.RunConfig(rounds=4, local_steps=5, strategy="fedavgm"), progress=False)
    assert resumed is not None and resumed.run_id == stopped.run_id and resumed.status == "finished"
    assert resumed.params.tobytes() == uninterrupted.params.tobytes()
    assert panel.lr.value == 0.001 and panel.counter.value == "round 4/4"
    assert all(len(line.get_xdata()) == 5 for line in panel.curves.axes[0].lines)  # rounds 0-4 drawn
    assert "finished" in panel.message.value and panel.resume_from.value is None  # finished: no longer offered


def test_an_interrupted_run_is_offered_and_rejected_updates_are_listed(data_dir) -> None:
    import subprocess
    import sys

    kill_after_round_one = (
        "import os, signal, fedkit\n"
        "config = fedkit.RunConfig(rounds=3, local_steps=5, max_norm_ratio=1.1)\n"
        "die = lambda e: e.round == 1 and os.kill(os.getpid(), signal.SIGKILL)\n"
        "fedkit.run(config, progress=False, callbacks=[die])"
    )
    assert subprocess.run([sys.executable, "-c", kill_after_round_one], timeout=120).returncode == -9
    (killed,) = fedkit.runs().run_id
    panel = ControlPanel()
    assert panel.resume_from.value == killed and "interrupted" in panel.resume_from.label
    assert panel.resume() is not None
    result = panel.wait(RUN_TIMEOUT_S)
    assert result is not None and result.rejected
    assert panel.notes.value.count("<li>") == len(result.notes) and "was rejected" in panel.notes.value
    assert f"{len(result.rejected)} update(s) rejected" in panel.message.value


def test_kernel_thread_is_free_while_the_run_trains(data_dir) -> None:
    panel = ControlPanel(rounds=30, local_steps=20)
    thread = panel.run()
    assert thread is not None and thread.daemon
    assert panel.running and panel.run_button.disabled and panel.split.disabled  # returned at once
    panel.stop()
    assert panel.wait(RUN_TIMEOUT_S).status in ("stopped", "finished")
    assert not panel.running and not panel.split.disabled


def test_invalid_values_disable_run_and_show_runconfigs_message() -> None:
    panel = ControlPanel()
    panel.lr.value = -1.0
    assert panel.run_button.disabled
    assert "lr" in panel.message.value and "RunConfig" in panel.message.value
    assert panel.run() is None
    panel.lr.value = 0.01
    assert not panel.run_button.disabled
    panel.optimizer.value = "adam"
    panel.split.value = "flamby"
    assert panel.silos.disabled and panel.alpha.disabled
    panel.split.value = "iid"
    assert not panel.silos.disabled and panel.alpha.disabled


def test_presets_the_panel_has_no_widget_for_pass_through(data_dir) -> None:
    panel = ControlPanel(strategy="fedprox", mu=0.05, rounds=1, local_steps=2)
    assert panel.config().mu == 0.05
    panel.strategy.value = "fedavg"
    assert panel.run_button.disabled and "mu" in panel.message.value


def test_a_bad_preset_fails_with_runconfigs_message() -> None:
    with pytest.raises(fedkit.ConfigError, match="rounds"):
        ControlPanel(rounds=0)


def test_trackers_not_installed_are_shown_disabled() -> None:
    from fedkit.tracking import available_trackers

    panel = ControlPanel()
    for name, usable in available_trackers().items():
        assert panel.trackers[name].disabled == (name == "local" or not usable)
    assert panel.selected_trackers() == ["local"]  # always on


def test_partition_explorer_builds(data_dir) -> None:
    box = partition_explorer(split="quantity", silos=3, alpha=1.0)
    assert len(box.children) == 2


def test_silo_colors_are_fixed_per_name_whatever_the_company() -> None:
    a = plots.silo_colors(["cleveland", "hungarian", "switzerland", "va", "pooled"])
    b = plots.silo_colors(["va", "pooled", "switzerland"])
    assert a["va"] == b["va"] and a["switzerland"] == b["switzerland"] and a["pooled"] == b["pooled"]
    assert len(set(a.values())) == 5
    synthetic = plots.silo_colors([f"silo_{i:02d}" for i in range(12)])
    assert len(set(synthetic.values())) == 12
    assert plots.silo_colors(["silo_03"])["silo_03"] == synthetic["silo_03"]


def test_figures_have_titles_axis_labels_and_legends(data_dir) -> None:
    from fedkit import explore

    result = fedkit.run(fedkit.RunConfig(rounds=2, local_steps=3), progress=False)
    fed = fedkit.load_silos("hospitals")
    figures = [
        plots.curves_figure(result.history, title="t"),
        plots.overlay_figure({"a": result.history, "b": result.history}),
        plots.final_bars_figure({"a": result.table(), "b": result.table()}),
        plots.label_balance_figure(fed),
        plots.feature_figure(explore.raw_tables(), ["age", "sex", "chol"]),
    ]
    for fig in figures:
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert visible
        for ax in visible:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        assert fig.legends or any(ax.get_legend() is not None for ax in visible)


def test_differences_table_fits_the_cell_one_column_per_run_and_a_tie_is_a_tie(data_dir) -> None:
    from fedkit import explore

    for lr in (0.001, 0.05, 0.05):  # the last two are the same run twice: a tie everywhere
        fedkit.run(fedkit.RunConfig(rounds=1, local_steps=2, lr=lr), progress=False)
    runs = explore.load_runs(last=3)
    table = explore.differences_table(runs)
    assert list(table.columns) == [r["label"] for r in runs]  # one column per run, whatever the silos
    assert list(table.index) == ["lr", "avg_accuracy", "pooled_accuracy", "pooled_auc"]
    finals = {r["label"]: explore.final_frame(r["summary"]["final"]) for r in runs}
    text = explore.best_summary(finals)
    tied = f"a tie between {runs[1]['label']}, {runs[2]['label']}"
    assert "Best mean accuracy" in text and "switzerland" in text and "+0.000" not in text
    assert any(tied in line for line in text.splitlines())
    sides = explore.finals_table(finals)
    assert sides.index.nlevels == 2 and set(sides.index.get_level_values(0)) == {"accuracy", "auc"}
    assert list(sides.columns) == [r["label"] for r in runs]  # the metric names the rows: no heading off-screen


def test_the_default_comparison_is_of_one_split_and_says_so(data_dir) -> None:
    from fedkit import explore

    fedkit.run(fedkit.RunConfig(split="iid", silos=3, rounds=1, local_steps=2), progress=False)
    fedkit.run(fedkit.RunConfig(split="hospitals", rounds=1, local_steps=2, seed=1), progress=False)
    fedkit.run(fedkit.RunConfig(split="hospitals", rounds=1, local_steps=2, seed=2), progress=False)
    runs = explore.load_runs(last=3)
    assert [r["config"]["split"] for r in runs] == ["hospitals", "hospitals"]
    assert "differ in seed (seed: 1, 2)" in explore.comparability(runs)  # hospitals: the seed draws the test rows
    iid = next(r["run_id"] for r in fedkit.runs().to_dict("records") if r["split"] == "iid")
    mixed = explore.load_runs([iid, runs[0]["run_id"]])  # picked by hand: said not comparable silo by silo
    assert "Not comparable silo by silo" in explore.comparability(mixed)


def test_the_panel_shows_no_image_before_its_first_run_and_its_counter_follows_rounds(data_dir) -> None:
    panel = ControlPanel(rounds=15, local_steps=2)
    assert panel.figure.layout.display == "none" and not panel.figure.value  # no broken-image icon
    panel.rounds.value = 5
    assert panel.counter.value == "round 0/5" and panel.progress.max == 5
    panel.rounds.value = 2
    panel.run()
    assert panel.wait(RUN_TIMEOUT_S).status == "finished"
    assert panel.figure.layout.display != "none" and bytes(panel.figure.value).startswith(b"\x89PNG")
    assert "auc 95% CI" in panel.table.value and "n_test" in panel.table.value  # the final table, in the panel


def test_live_curves_fit_their_y_axes_to_the_values(data_dir) -> None:
    curves = plots.LiveCurves(["a"], rounds=3)
    rows = [
        {"round": r, "silo": s, "model": "global", "split": "test", "metric": m, "value": 0.70 + 0.01 * r}
        for r in range(4)
        for s in ("a", POOLED)
        for m in ("loss", "auc", "accuracy")
    ]
    curves.update(rows)
    for ax in curves.axes:
        low, high = ax.get_ylim()
        assert 0.6 < low < 0.70 and 0.73 < high < 0.8  # not pinned to 0-1: the curves are not flattened
        assert ax.get_xlim() == (0, 3)


def test_the_partition_explorer_shows_exactly_the_alpha_it_was_given(data_dir, monkeypatch) -> None:
    from fedkit.data import silos

    calls: list[dict] = []
    load = silos.load_silos
    monkeypatch.setattr(silos, "load_silos", lambda *a, **kw: calls.append(kw) or load(*a, **kw))
    box = partition_explorer(split="dirichlet", silos=4, alpha=0.5, seed=42)
    alpha = next(c for c in box.children[0].children if c.description == "alpha")
    assert alpha.value == 0.5 and 0.5 in alpha.options  # not 10 ** -0.3 = 0.501
    assert calls[-1]["alpha"] == 0.5  # so its partition is the notebook cell's with the same parameters
    alpha.value = alpha.options[alpha.options.index(0.5) + 1]
    assert calls[-1]["alpha"] == 1.0


def test_the_label_balance_legend_covers_no_label(data_dir) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for split, alpha in (("dirichlet", 0.5), ("dirichlet", 0.1), ("quantity", 1.0)):
        fig = plots.label_balance_figure(fedkit.load_silos(split, silos=4, alpha=alpha))
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        (ax,) = fig.axes
        legend = ax.get_legend().get_window_extent(renderer)
        texts = [t.get_window_extent(renderer) for t in ax.texts] + [ax.title.get_window_extent(renderer)]
        texts += [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert not any(legend.overlaps(t) for t in texts), split


def test_overlaid_runs_share_one_legend_and_draw_no_empty_panel(data_dir) -> None:
    import pandas as pd

    a = fedkit.run(fedkit.RunConfig(rounds=2, local_steps=3), progress=False).history
    b = fedkit.run(fedkit.RunConfig(rounds=2, local_steps=3, lr=0.05), progress=False).history
    one_class = pd.DataFrame([{**r, "silo": "silo_x", "value": float("nan")} for r in a.to_dict("records")])
    fig = plots.overlay_figure({"a": a, "b": pd.concat([b, one_class])}, metric="auc")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["cleveland", "hungarian", "switzerland", "va", "pooled"]
    assert all(ax.lines and ax.get_legend() is None for ax in visible)
    (legend,) = fig.legends
    styles = [line.get_linestyle() for line in legend.get_lines()]
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"] and len(set(styles)) == 2


def test_final_bars_are_readable_and_show_the_intervals(data_dir) -> None:
    result = fedkit.run(fedkit.RunConfig(rounds=2, local_steps=3), progress=False)
    fig = plots.final_bars_figure({"a": result.table(), "b": result.table(), "c": result.table()})
    width, height = fig.get_size_inches()
    assert height >= 4 and width >= 7.5
    (legend,) = fig.legends
    assert all(t.get_fontsize() >= 9 for t in legend.get_texts())
    (ax,) = fig.axes
    assert len(ax.containers) == 6  # 3 runs: bars and their 95% error bars


def test_a_pooled_auc_of_zero_is_shown_as_zero_not_nan() -> None:
    import numpy as np

    from fedkit.result import RunResult

    rows = [
        {"round": 1, "silo": s, "model": "global", "split": "test", "metric": m, "value": 0.0}
        for s in ("a", POOLED)
        for m in ("loss", "auc", "accuracy")
    ]
    result = RunResult("r", "finished", {}, rows, np.zeros(2), {"a": 5, POOLED: 5}, {})
    panel = ControlPanel()
    panel._finished(result)
    assert "pooled AUC 0.0000" in panel.message.value and "nan" not in panel.message.value


def _without_compare(monkeypatch, explore, runs):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    return explore.differences_table(runs)


def test_the_sweep_panel_refuses_a_bad_grid_value_and_runs_a_good_grid(data_dir) -> None:
    from fedkit.widgets import SweepPanel

    panel = SweepPanel({"lr": [0.01, 0.1]}, seeds=[42, 43], folds=2, rounds=2, local_steps=5)
    assert not panel.run_button.disabled and "2 configurations, 8 runs" in panel.message.value
    panel.grid.value = "lr=0.01,-1\nstrategy=fedavg"
    assert panel.run_button.disabled and "&#x27;lr&#x27; parameter of RunConfig" in panel.message.value
    panel.grid.value = "lr=0.01,0.1\nstrategy=fedavg,fedprox"
    assert not panel.run_button.disabled
    panel.run_button.click()
    result = panel.wait(RUN_TIMEOUT_S)
    assert result is not None and len(result.table) == 4 and len(result.runs) == 16
    assert panel.progress.value == panel.progress.max == 16 * 2  # every round of every run
    assert all(bytes(image.value).startswith(b"\x89PNG") for image in panel.figures)  # heatmap, parallel coords
    assert "best by validation avg_accuracy" in panel.message.value
    assert fedkit.runs().shape[0] == 16


def test_sweep_figures_outline_the_best_configuration(data_dir) -> None:
    result = fedkit.sweep(
        {"rounds": 2, "local_steps": 5}, {"lr": [0.01, 0.1], "optimizer": ["sgd", "adam"]}, trackers=[], progress=False
    )
    heatmap = plots.sweep_heatmap_figure(result.table, "lr", "optimizer", best=result.best)
    (ax,) = heatmap.axes[:1]
    (outline,) = [p for p in ax.patches if p.get_edgecolor()[:3] != (0, 0, 0)]
    row = result.table.loc[result.best]
    assert outline.get_xy() == ([0.01, 0.1].index(row["lr"]) - 0.5, ["sgd", "adam"].index(row["optimizer"]) - 0.5)
    assert len(ax.texts) == 4  # every cell labelled with its value
    parallel = plots.sweep_parallel_figure(result.table, ["lr", "optimizer"], best=result.best)
    assert [line.get_label() for line in parallel.axes[0].lines if line.get_color() == "#d62728"] == [
        "best configuration"
    ]


def test_the_dp_controls_run_a_private_run_and_show_epsilon_live_beside_the_curves(data_dir) -> None:
    panel = ControlPanel(rounds=3, local_steps=5)
    assert panel.dp.value == "none" and panel.dp_epsilon.disabled and "dp" not in panel.epsilon.value
    panel.dp.value = "central"
    panel.dp_epsilon.value = 2.0
    assert not panel.dp_epsilon.disabled and not panel.run_button.disabled
    shown: list[str] = []
    panel.callbacks.append(lambda event: shown.append(panel.epsilon.value))
    panel.run_button.click()
    result = panel.wait(RUN_TIMEOUT_S)

    assert result is not None and result.status == "finished"
    spent = result.final["privacy"]
    assert spent["mechanism"] == "central" and spent["epsilon"] <= 2.0
    assert fedkit.load_run(result.run_id)["config"]["dp_epsilon"] == 2.0
    assert len(shown) == 4 and shown[-1] == f"ε {spent['epsilon']:.3g} at δ 0.001"  # round 0..3, updated live
    xs, ys = panel.curves.epsilon_line.get_data()
    assert list(xs) == [0, 1, 2, 3] and all(a < b for a, b in itertools.pairwise(ys))
    assert panel.curves.privacy_axes.get_ylabel() == "ε at δ"

    panel.dp_delta.value = 0.5  # not below 1/4 silos
    assert panel.run_button.disabled and "dp_delta" in panel.message.value
    panel.dp_delta.value = 0.001
    panel.dp.value = "distributed"
    assert panel.config().secure_aggregation  # distributed noise needs the secure sum: the panel turns it on
    panel.strategy.value = "krum"
    assert panel.run_button.disabled and "krum" in panel.message.value

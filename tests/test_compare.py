"""fedkit.compare and `fedkit runs compare`: differing config columns, final per-silo and pooled metrics, plots."""

from __future__ import annotations

import json

import pytest

import fedkit
from fedkit import RunConfig, run
from fedkit.cli import main
from fedkit.tracking import TrackerError

A = RunConfig(split="iid", silos=2, rounds=2, local_steps=3, lr=0.01)
B = RunConfig(split="iid", silos=2, rounds=2, local_steps=3, lr=0.05, seed=7)


@pytest.fixture
def two_runs(data_dir) -> tuple[fedkit.RunResult, fedkit.RunResult]:
    return run(A, progress=False), run(B, progress=False)


def test_compare_has_one_row_per_run_with_differing_config_and_final_metrics(two_runs) -> None:
    a, b = two_runs
    table = fedkit.compare([a.run_id, b.run_id[:20]])
    assert table.index.tolist() == [a.run_id, b.run_id]
    assert {"lr", "seed"} <= set(table.columns) and "split" not in table.columns and "rounds" not in table.columns
    assert table.loc[a.run_id, "lr"] == 0.01 and table.loc[b.run_id, "seed"] == 7
    for result in (a, b):
        final = result.final
        row = table.loc[result.run_id]
        for silo in ("silo_0", "silo_1"):
            assert row[f"{silo}_accuracy"] == pytest.approx(final["silos"][silo]["accuracy"])
            assert row[f"{silo}_auc"] == pytest.approx(final["silos"][silo]["auc"])
        assert row["pooled_loss"] == pytest.approx(final["pooled"]["loss"])
        assert row["avg_accuracy"] == pytest.approx(final["avg_accuracy"])
        assert row["status"] == "finished"


def test_compare_takes_a_filter_of_config_values(two_runs) -> None:
    a, b = two_runs
    assert fedkit.compare({"lr": 0.05}).index.tolist() == [b.run_id]
    assert fedkit.compare({"split": "iid", "lr": [0.01, 0.05]}).index.tolist() == [a.run_id, b.run_id]
    assert fedkit.compare().index.tolist() == [a.run_id, b.run_id]
    assert fedkit.compare({"split": "flamby"}).empty


def test_compare_rejects_an_unknown_source_with_the_allowed_ones() -> None:
    with pytest.raises(TrackerError, match="'source' parameter of compare must be one of local, sagemaker, mlflow"):
        fedkit.compare(source="wandb")


def test_runs_compare_prints_a_table_of_two_runs(two_runs, capsys) -> None:
    a, b = two_runs
    assert main(["runs", "compare", a.run_id, b.run_id]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["field", a.run_id, b.run_id]
    lr = next(line for line in lines if line.startswith("lr "))
    assert lr.split() == ["lr", "0.0100", "0.0500"]
    assert any(line.startswith("pooled_auc ") for line in lines)
    assert main(["runs", "compare", a.run_id, b.run_id, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == [a.run_id, b.run_id]


def test_plot_helpers_overlay_curves_and_draw_final_bars(two_runs) -> None:
    pytest.importorskip("matplotlib")
    from fedkit.comparison import plot_curves, plot_final

    a, b = two_runs
    curves = plot_curves([a.run_id, b.run_id], "auc")
    assert len([ax for ax in curves.axes if ax.get_visible()]) == 3  # silo_0, silo_1, pooled
    assert len(curves.axes[0].get_lines()) == 2  # one line per run
    bars = plot_final([a.run_id, b.run_id], "accuracy")
    heights = sorted(round(p.get_height(), 6) for p in bars.axes[0].patches)
    expected = [a.final["silos"][s]["accuracy"] for s in ("silo_0", "silo_1")] + [a.final["pooled"]["accuracy"]]
    expected += [b.final["silos"][s]["accuracy"] for s in ("silo_0", "silo_1")] + [b.final["pooled"]["accuracy"]]
    assert heights == sorted(round(v, 6) for v in expected)


def test_runs_of_different_silo_sets_each_get_their_own_avg_and_whole_numbers_stay_whole(data_dir, capsys) -> None:
    iid = run(RunConfig(split="iid", silos=3, rounds=1, local_steps=2), progress=False)
    hospitals = run(RunConfig(split="hospitals", rounds=1, local_steps=2), progress=False)
    table = fedkit.compare([iid.run_id, hospitals.run_id])
    assert table.loc[iid.run_id, "avg_accuracy"] == pytest.approx(iid.final["avg_accuracy"])
    assert table.loc[hospitals.run_id, "avg_accuracy"] == pytest.approx(hospitals.final["avg_accuracy"])
    assert main(["runs", "compare", iid.run_id, hospitals.run_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("silos ")).split() == ["silos", "3", "null"]
    assert "null" not in next(line for line in lines if line.startswith("avg_accuracy "))
    assert main(["runs", "compare", iid.run_id, hospitals.run_id, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["silos"] for r in rows] == [3, None] and all(r["avg_accuracy"] is not None for r in rows)

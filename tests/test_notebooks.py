"""Every notebook runs through papermill with small parameters; a cell error fails the test."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

pytest.importorskip("papermill")

import fedkit
from fedkit import reports
from fedkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_explore_silos", "02_fedavg_widgets", "03_compare_runs", "04_headless_report", "05_privacy_attacks"]
NAMES += ["06_sweep"]


def _outputs(path: Path) -> str:
    nb = json.loads(path.read_text())
    return json.dumps([c.get("outputs", []) for c in nb["cells"]])


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs_and_starts_with_parameters(name) -> None:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "parameters" in nb["cells"][0]["metadata"].get("tags", [])
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_explore_silos_runs(data_dir, tmp_path) -> None:
    report = reports.render(
        NOTEBOOKS / "01_explore_silos.ipynb",
        {"split": "quantity", "silos": 3, "alpha": 1.0},
        output_dir=tmp_path,
        html=False,
    )
    text = _outputs(report.notebook)
    assert "switzerland" in text and "image/png" in text and "silo_2" in text


def test_fedavg_widgets_runs_the_panel_headless(data_dir, tmp_path) -> None:
    parameters = {"autorun": True, "rounds": 2, "local_steps": 5}
    report = reports.render(NOTEBOOKS / "02_fedavg_widgets.ipynb", parameters, output_dir=tmp_path, html=False)
    assert "finished" in _outputs(report.notebook)
    (run,) = fedkit.runs().to_dict("records")
    assert run["status"] == "finished" and run["rounds"] == 2


def test_compare_runs_compares_the_last_runs(data_dir, tmp_path) -> None:
    ids = [fedkit.run(fedkit.RunConfig(rounds=2, local_steps=3, lr=lr), progress=False).run_id for lr in (0.001, 0.05)]
    report = reports.render(
        NOTEBOOKS / "03_compare_runs.ipynb", {"last": 2, "metric": "accuracy"}, output_dir=tmp_path, html=False
    )
    text = _outputs(report.notebook)
    assert all(i in text for i in ids)
    assert "Best mean accuracy" in text and "lr" in text


def test_headless_report_writes_html_with_curves_and_a_final_table(data_dir, tmp_path, capsys) -> None:
    hyperparameters = "{mu: 0.01, local_steps: 5, max_update_norm: 0.003}"  # below some honest update norms
    parameters = f"-p rounds 2 -p seeds '[42, 43]' -p strategy fedprox -p hyperparameters '{hyperparameters}'"
    code = main(
        ["report", str(NOTEBOOKS / "04_headless_report.ipynb"), *shlex.split(parameters), "--output-dir", str(tmp_path)]
    )
    assert code == 0
    (page,) = tmp_path.glob("*_04_headless_report_*.html")
    (executed,) = tmp_path.glob("*_04_headless_report_*.ipynb")
    html = page.read_text()
    assert html.count('src="data:image/png;base64') == 3  # curves, overlay, bars: embedded
    assert "Summary: final test metrics per silo" in html and "switzerland" in html and "fedavg (baseline)" in html
    assert "api.run_seeds" not in html  # code hidden
    rejected = sum(len(r["summary"]["rejected"]) for r in map(fedkit.load_run, fedkit.runs().run_id))
    assert rejected and html.count("exceeds max_update_norm=0.003") >= rejected  # the table and the notes
    assert sys.executable in _outputs(executed)  # the kernel is this interpreter
    assert len(fedkit.runs()) == 4  # 2 seeds x (fedprox + fedavg baseline)


def test_a_fedavg_report_has_curves_and_a_table_and_no_comparison_with_itself(data_dir, tmp_path, capfd) -> None:
    code = main(
        ["report", str(NOTEBOOKS / "04_headless_report.ipynb"), "-p", "rounds", "2", "--output-dir", str(tmp_path)]
    )
    assert code == 0
    html = next(tmp_path.glob("*.html")).read_text()
    assert html.count('src="data:image/png;base64') == 1  # the curves per silo
    assert "Summary: final test metrics per silo" in html and "cleveland" in html
    assert "Compared with the FedAvg baseline" not in html and len(fedkit.runs()) == 1
    assert "No update was rejected." in html
    assert "No run is differentially private" in html
    assert "without encryption" not in capfd.readouterr().err  # no kernel start-up warning after the report


def test_a_private_report_shows_the_epsilon_each_run_spent(data_dir, tmp_path) -> None:
    hyperparameters = "{dp: central, dp_epsilon: 2, local_steps: 5}"
    argv = ["report", str(NOTEBOOKS / "04_headless_report.ipynb"), "-p", "rounds", "2"]
    argv += ["-p", "hyperparameters", hyperparameters, "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    html = next(tmp_path.glob("*.html")).read_text()
    assert "Privacy: ε spent" in html and "dp-accounting" in html and "central" in html
    (run,) = fedkit.runs().to_dict("records")
    assert fedkit.load_run(run["run_id"])["summary"]["final"]["privacy"]["epsilon"] <= 2


def test_the_sweep_notebook_renders_headless_with_its_grid_and_the_best_tested_once(data_dir, tmp_path) -> None:
    from fedkit.tracking.local import LocalStore

    parameters = shlex.split(
        "-p autorun true -p grid '{lr: [0.01, 0.1], strategy: [fedavg, fedprox]}' -p seeds '[42, 43]' -p folds 2 "
        "-p rounds 2 -p local_steps 5"
    )
    assert main(["report", str(NOTEBOOKS / "06_sweep.ipynb"), *parameters, "--output-dir", str(tmp_path)]) == 0
    html = next(tmp_path.glob("*_06_sweep_*.html")).read_text()
    assert html.count('src="data:image/png;base64') == 2  # the heatmap and the parallel coordinates
    assert "best by validation avg_accuracy" in html and "on the test sets: Avg accuracy" in html
    sweeps = LocalStore().list_sweeps()
    assert [s["runs"] for s in sweeps] == [2, 16]  # the test of the best (2 seeds), the sweep (4 x 2 x 2)


def test_a_failing_cell_fails_the_report_with_the_cells_error(data_dir, tmp_path, capsys) -> None:
    parameters = shlex.split("-p hyperparameters '{lr: -1}'")
    code = main(["report", str(NOTEBOOKS / "04_headless_report.ipynb"), *parameters, "--output-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "failed in cell" in err and "ConfigError" in err and "'lr' parameter of RunConfig" in err
    assert not list(tmp_path.glob("*.html"))


def test_privacy_attacks_notebook_attacks_an_overfit_model_and_dp_brings_the_attack_to_chance(
    data_dir, tmp_path
) -> None:
    """The attack AUC the notebook computes: above 0.5 on the non-private overfit model, toward 0.5 as ε shrinks."""
    parameters = {"modes": ["dpsgd"], "epsilons": [0.5, 8.0], "n_shadows": 2}
    report = reports.render(NOTEBOOKS / "05_privacy_attacks.ipynb", parameters, output_dir=tmp_path, html=False)
    cells = json.loads(report.notebook.read_text())["cells"]
    texts = ["".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o.get("name") == "stdout"]
    (line,) = [t for text in texts for t in text.splitlines() if t.startswith("ATTACK_SUMMARY ")]
    summary = json.loads(line.removeprefix("ATTACK_SUMMARY "))
    assert "image/png" in _outputs(report.notebook)

    def auc(dp: str, target: str, attack: str = "loss_threshold_attack", epsilon: float = 0.5) -> dict:
        rows = [r for r in summary if r["dp"] == dp and r["target"] == target and r["attack"] == attack]
        (row,) = [r for r in rows if dp == "none" or r["target_epsilon"] == epsilon]
        return row

    plain = auc("none", "global model")
    assert plain["low"] > 0.5 and plain["auc"] > 0.56  # clearly above a coin: its interval excludes 0.5
    for attack in ("loss_threshold_attack", "shadow_model_attack"):
        private = auc("dpsgd", "global model", attack)
        assert private["low"] < 0.5 < private["high"]  # at epsilon 0.5 the attack is no better than a coin
        assert private["epsilon"] <= 0.5
        gap = {e: abs(auc("dpsgd", "global model", attack, e)["auc"] - 0.5) for e in (8.0, 0.5)}
        assert abs(auc("none", "global model", attack)["auc"] - 0.5) > gap[8.0] > gap[0.5]  # ever closer to a coin

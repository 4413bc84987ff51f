"""Every notebook runs through papermill with small parameters; a cell error fails the test."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("papermill")

import fedkit
from fedkit import reports
from fedkit.cli import main
from fedkit.errors import ReportError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_explore_silos", "02_fedavg_widgets", "03_compare_runs", "04_headless_report", "05_privacy_attacks"]
NAMES += ["06_sweep"]


def _outputs(path: Path) -> str:
    nb = json.loads(path.read_text())
    return json.dumps([c.get("outputs", []) for c in nb["cells"]])


READS_DATA = ["01_explore_silos", "02_fedavg_widgets", "04_headless_report", "05_privacy_attacks", "06_sweep"]
"""The notebooks that read the UCI files (take ``data_dir``); 03 reads only the run store."""


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs_and_starts_with_parameters(name) -> None:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"] == {"display_name": "Python (fedkit)", "language": "python", "name": "fedkit"}
    assert "parameters" in nb["cells"][0]["metadata"].get("tags", [])
    assert ("data_dir" in reports.notebook_parameters(NOTEBOOKS / f"{name}.ipynb")) == (name in READS_DATA)
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


def test_compare_runs_compares_the_last_runs_of_one_split(data_dir, tmp_path) -> None:
    other = fedkit.run(fedkit.RunConfig(split="iid", silos=3, rounds=2, local_steps=3), progress=False).run_id
    ids = [fedkit.run(fedkit.RunConfig(rounds=2, local_steps=3, lr=lr), progress=False).run_id for lr in (0.001, 0.05)]
    report = reports.render(
        NOTEBOOKS / "03_compare_runs.ipynb", {"last": 3, "metric": "accuracy"}, output_dir=tmp_path, html=False
    )
    text = _outputs(report.notebook)
    assert all(i in text for i in ids) and other not in text  # the newest run's split only
    assert "The 2 runs are on the flamby split with the same 254 test rows" in text
    assert "Best mean accuracy" in text and "lr=0.05" in text


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
    outputs = [o for c in json.loads(_outputs(executed)) for o in c if "data" in o]
    markdown = ["".join(o["data"].get("text/markdown", "")) for o in outputs]
    header = next(text for text in markdown if text.startswith("# fedkit report"))
    run_line, baseline_line = (line for line in header.splitlines() if line.startswith(("**Run:**", "**FedAvg")))
    assert "strategy=fedprox" in run_line and "mu=0.01" in run_line and "local_steps=5" in run_line
    assert "strategy=fedavg" in baseline_line and "lr=0.001" in baseline_line and "mu=" not in baseline_line
    assert "None" not in header and "alpha=" not in header  # only what the runs use (alpha: not for flamby)
    assert "accuracy std" in html and "typical 95% CI" in html and "n_test" in html  # two seeds: a spread


def test_a_fedavg_report_has_curves_and_a_table_and_no_comparison_with_itself(data_dir, tmp_path, capfd) -> None:
    code = main(
        ["report", str(NOTEBOOKS / "04_headless_report.ipynb"), "-p", "rounds", "2", "--output-dir", str(tmp_path)]
    )
    assert code == 0
    html = next(tmp_path.glob("*.html")).read_text()
    assert html.count('src="data:image/png;base64') == 1  # the curves per silo
    assert "Summary: final test metrics per silo" in html and "cleveland" in html
    assert "Compared with the FedAvg baseline" not in html and len(fedkit.runs()) == 1
    assert "accuracy std" not in html and "accuracy 95% CI" in html  # one seed: no column of zeros
    assert "n_test" in html and "<th>loss</th>" in html
    assert "0.00–1.00" in html and "rests on 1 negative among 16" in html  # switzerland's AUC, and why
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


def test_make_registers_the_notebooks_kernel_with_the_data_folder() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    kernel = json.loads((NOTEBOOKS / "01_explore_silos.ipynb").read_text())["metadata"]["kernelspec"]
    data = ROOT.parent / "elsewhere" / "data"
    for target, scope in (("setup", "--sys-prefix"), ("lab", "--sys-prefix"), ("kernel", "--user")):
        printed = subprocess.run(
            [make, "-n", "-B", "-C", str(ROOT), target, f"FEDKIT_DATA_DIR={data}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        install = [line for line in printed.splitlines() if "ipykernel install" in line][-1]  # the target's own
        words = shlex.split(install.removesuffix("; fi"))
        assert words[words.index("--name") + 1] == kernel["name"]
        assert words[words.index("--display-name") + 1] == kernel["display_name"]
        assert words[words.index("--env") + 1 : words.index("--env") + 3] == ["FEDKIT_DATA_DIR", str(data.resolve())]
        assert scope in words


@pytest.mark.parametrize("name", READS_DATA)
def test_without_the_data_a_notebook_says_where_in_one_line(name, tmp_path, monkeypatch) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    for key in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # the download is refused on loopback at once
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(ReportError, match="MissingDataError") as failed:
        reports.render(NOTEBOOKS / f"{name}.ipynb", {"data_dir": str(empty)}, output_dir=tmp_path, html=False)
    executed = next(tmp_path.glob("*.ipynb"))
    errors = [
        o
        for c in json.loads(executed.read_text())["cells"]
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]
    (error,) = errors
    (line,) = error["traceback"]  # one line, no traceback
    assert str(empty) in line and "data_dir" in line and "FEDKIT_DATA_DIR" in line
    assert "executed notebook" in str(failed.value)


def test_with_the_data_beside_the_repo_the_notebooks_need_no_variable(data_dir, tmp_path, monkeypatch) -> None:
    beside = ROOT.parent / "shared" / "data" / "heart-disease"
    if not beside.is_dir():
        pytest.skip(f"no data folder beside the repository ({beside})")
    monkeypatch.delenv("FEDKIT_DATA_DIR")
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    printed = subprocess.run([make, "-n", "-C", str(ROOT), "lab"], capture_output=True, text=True, check=True).stdout
    install = shlex.split(next(line for line in printed.splitlines() if "ipykernel install" in line))
    env = dict(zip(install[install.index("--env") + 1 :: 3], install[install.index("--env") + 2 :: 3], strict=False))
    kernel_data = Path(env["FEDKIT_DATA_DIR"])  # what the kernel's environment gets (``shared`` may be a link)
    assert kernel_data.is_absolute() and kernel_data.resolve() == beside.resolve()
    monkeypatch.setenv("FEDKIT_DATA_DIR", env["FEDKIT_DATA_DIR"])  # as the kernel of `make lab` / `make kernel` has it
    report = reports.render(NOTEBOOKS / "01_explore_silos.ipynb", {"silos": 3}, output_dir=tmp_path, html=False)
    assert "switzerland" in _outputs(report.notebook)

"""The CLI: parameter merging (patched API call), the --json schema, tables, errors."""

from __future__ import annotations

import json
from unittest import mock

import pytest

import fedkit
from fedkit import RunConfig
from fedkit.cli import main


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("split: dirichlet\nsilos: 6\nalpha: 0.2\nlr: 0.05\nlocal_steps: 7\n")
    with mock.patch.object(fedkit, "run", side_effect=SystemExit(0)) as run, pytest.raises(SystemExit):
        main(["run", "--config", str(tmp_path / "c.yaml"), "--lr", "0.1", "--local-epochs", "2", "--no-verify"])
    config = run.call_args.args[0]
    assert config == RunConfig(split="dirichlet", silos=6, alpha=0.2, lr=0.1, local_epochs=2, verify=False)


def test_every_config_field_has_a_flag(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text


def test_run_json_schema(data_dir, capsys) -> None:
    assert main(["run", "--rounds", "2", "--local-steps", "5", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"run_id", "config", "final", "history"} <= set(summary)
    assert summary["config"] == RunConfig(rounds=2, local_steps=5).to_dict()
    final = summary["final"]
    assert set(final["silos"]) == {"cleveland", "hungarian", "switzerland", "va"}
    for block in [*final["silos"].values(), final["pooled"]]:
        intervals = {"auc_low", "auc_high", "accuracy_low", "accuracy_high"}
        assert set(block) == {"accuracy", "auc", "loss", "n_test", *intervals}
        assert isinstance(block["n_test"], int) and all(
            isinstance(block[m], float) for m in ("accuracy", "auc", "loss")
        )
        for metric in ("auc", "accuracy"):  # the 95% interval holds the value
            assert 0 <= block[f"{metric}_low"] <= block[metric] <= block[f"{metric}_high"] <= 1
    assert isinstance(final["avg_accuracy"], float)
    for row in summary["history"]:
        assert set(row) == {"round", "silo", "model", "split", "metric", "value"}
        assert row["model"] in ("local", "global") and row["split"] in ("train", "test", "update")
    updates = [r for r in summary["history"] if r["split"] == "update"]
    assert {r["metric"] for r in updates} == {"norm", "rejected"} and len(updates) == 2 * 2 * 4  # rounds x silos
    assert summary["rejected"] == []
    assert fedkit.load_run(summary["run_id"])["summary"] == summary


def test_runs_show_lists_rejected_updates_with_their_reason(data_dir, capsys) -> None:
    argv = ["run", "--rounds", "2", "--local-steps", "5", "--max-update-norm", "0.003", "--json", "-q"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rejected"], "the bound is below some honest norms"
    assert main(["runs", "show", summary["run_id"]]) == 0
    out = capsys.readouterr().out
    assert f"rejected updates ({len(summary['rejected'])}):" in out
    first = summary["rejected"][0]
    assert first["silo"] in out and "exceeds max_update_norm=0.003" in out and "was rejected" in out


def test_run_prints_a_per_silo_table_and_runs_list_and_show_read_it(data_dir, capsys) -> None:
    assert main(["run", "--rounds", "1", "--local-steps", "3", "-q"]) == 0
    out = capsys.readouterr().out
    for needle in ("cleveland", "switzerland", "pooled", "avg_accuracy", "n_test"):
        assert needle in out
    run_id = out.split()[1]
    assert main(["runs", "list"]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["runs", "show", run_id[:17]]) == 0
    shown = capsys.readouterr().out
    assert "status finished" in shown
    switzerland = next(line for line in shown.splitlines() if line.startswith("switzerland "))
    assert switzerland.split()[1] == "16" and "0.00–1.00" in switzerland  # n_test and the AUC's 95% interval
    assert "auc 95% CI" in shown and "accuracy 95% CI" in shown


def test_bad_values_exit_2_with_the_message(capsys) -> None:
    assert main(["run", "--optimizer", "rmsprop"]) == 2
    err = capsys.readouterr().err
    assert "fedkit: error: The 'optimizer' parameter of RunConfig must be one of 'sgd', 'adam', 'adamw'" in err
    assert main(["runs", "show", "nope"]) == 2
    assert "No run 'nope'" in capsys.readouterr().err


def test_data_info_shows_the_silos(data_dir, capsys) -> None:
    assert main(["data", "info", "--split", "flamby"]) == 0
    out = capsys.readouterr().out
    assert "cleveland" in out and "199" in out and "104" in out and "verified" in out
    assert main(["data", "info", "--split", "iid", "--silos", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["silos"]) == 5


def test_commands_other_than_run_do_not_load_the_training_stack_to_parse() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fedkit.cli import build_parser\n"
        "args = build_parser('report').parse_args(['report', 'nb.ipynb', '-p', 'rounds', '5'])\n"
        "assert args.parameter == [['rounds', '5']], args\n"
        "assert 'fedkit.config' not in sys.modules and 'numpy' not in sys.modules, 'imported to parse'\n"
        "run = build_parser('run').parse_args(['run', '--lr', '0.1', '--rounds', '3'])\n"
        "assert (run.lr, run.rounds) == (0.1, 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_remote_flags_reach_the_run_call() -> None:
    argv = ["run", "--engine", "remote", "--admin-kit", "kit/", "--min-silos", "2", "--straggler-timeout", "5"]
    with mock.patch.object(fedkit, "run", side_effect=SystemExit(0)) as run, pytest.raises(SystemExit):
        main(argv)
    config = run.call_args.args[0]
    assert (config.engine, config.min_silos, config.straggler_timeout) == ("remote", 2, 5.0)
    assert run.call_args.kwargs["admin_kit"] == "kit/"


def test_an_admin_kit_without_the_remote_engine_is_an_actionable_error(capsys) -> None:
    assert main(["run", "--admin-kit", "kit/", "--rounds", "1", "-q"]) == 2
    assert "admin_kit only applies to engine='remote'" in capsys.readouterr().err


def test_run_help_states_each_default_once() -> None:
    from fedkit.cli import build_parser

    run_parser = build_parser("run")._subparsers._group_actions[0].choices["run"]
    helps = [action.help or "" for action in run_parser._actions]
    assert all(text.count("default") <= 1 for text in helps), [t for t in helps if t.count("default") > 1]
    assert any("(default: 4)" in text for text in helps)  # batch size


def test_an_unknown_flag_after_run_prints_runs_usage(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["run", "--rounds", "2", "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fedkit run ") and "fedkit run: error: unrecognized arguments: --bogus" in err


def test_a_misspelt_strategy_gets_a_suggestion(capsys) -> None:
    assert main(["run", "--strategy", "fedavgg"]) == 2
    assert "got 'fedavgg' (str). Did you mean 'fedavg'?" in capsys.readouterr().err


def test_run_json_keeps_stdout_for_the_json_when_a_library_prints(capsys) -> None:
    summary = {"run_id": "r", "final": {}}

    def noisy_run(*args, **kwargs):
        print("Connecting to FLARE ...")  # what NVIDIA FLARE's admin API prints while the run goes
        return mock.Mock(summary=lambda: summary)

    with mock.patch.object(fedkit, "run", side_effect=noisy_run):
        assert main(["run", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == summary
    assert "Connecting to FLARE" in captured.err


@pytest.mark.parametrize(
    ("words", "usage", "hint"),
    [
        (["rn"], "usage: fedkit ", "Did you mean 'run'?"),
        (["runs", "shw", "x"], "usage: fedkit runs ", "Did you mean 'show'?"),
        (["run", "--stratgy", "fedavg"], "usage: fedkit run ", "Did you mean '--strategy'?"),
        (["run", "--batchsize=3"], "usage: fedkit run ", "Did you mean '--batch-size'?"),
        (["sweep", "--lrr", "0.1"], "usage: fedkit sweep ", "Did you mean '--lr'?"),
        (["runs", "compare", "--source", "sagemkr"], "usage: fedkit runs compare ", "Did you mean 'sagemaker'?"),
    ],
)
def test_a_misspelt_subcommand_or_flag_gets_a_suggestion(capsys, words: list[str], usage: str, hint: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(words)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and err.rstrip().endswith(hint), err


def test_a_flag_far_from_every_flag_gets_no_suggestion(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--bogus"])  # '--' alone is no likeness: no "Did you mean '--rounds'?"
    assert "Did you mean" not in capsys.readouterr().err


@pytest.mark.parametrize("words", [["sweep"], ["audit", "show", "x"], ["audit", "verify", "x"], ["data", "info"]])
def test_every_subcommand_reports_an_unknown_flag_with_its_own_usage(capsys, words: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*words, "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: fedkit {' '.join(w for w in words if w != 'x')} "), err

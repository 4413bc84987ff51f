"""``fedkit`` on the command line: a thin layer that merges parameter sources and calls the Python API."""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fedkit._validation import did_you_mean
from fedkit._version import __version__
from fedkit.errors import AuditError, ConfigError, FedkitError, RoundFailedError
from fedkit.presets import PRESETS
from fedkit.tracking.registry import BACKENDS

if TYPE_CHECKING:
    from fedkit.tracking.local import LocalStore

_TYPES = {"int": int, "float": float, "str": str}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors suggest the closest subcommand, choice or flag: ``Did you mean 'run'?``.

    Its subcommands' parsers are of this class too (``add_subparsers`` builds them with the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``message`` with a suggestion for a misspelt word, and exit with status 2.

        Parameters
        ----------
        message
            argparse's error message.
        """
        hint = self.suggestion(message)
        super().error(f"{message}.{hint}" if hint else message)

    def suggestion(self, message: str) -> str:
        """`` Did you mean ...?`` for an invalid choice or unrecognized flags named in ``message``, else ``""``.

        Parameters
        ----------
        message
            argparse's error message (``invalid choice: 'x' (choose from ...)`` or ``unrecognized arguments: ...``).
        """
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:
            return did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        unknown = re.match(r"unrecognized arguments: (.*)$", message)
        if not unknown:
            return ""
        flags = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        words = [w.split("=")[0] for w in unknown[1].split() if w.startswith("--")]
        return "".join(did_you_mean(word, flags, prefix="--") for word in words)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (only flags given on the command line override the config file).

    Parameters
    ----------
    parser
        The parser (or subcommand parser) to add the flags to.
    """
    from fedkit.config import RunConfig
    from fedkit.strategies import HYPERPARAMETERS

    group = parser.add_argument_group("run configuration (every RunConfig field; nested mappings: --config FILE)")
    for f in fields(RunConfig):
        base = str(f.type).split("|")[0].strip()
        text = f.metadata.get("help", "")
        if "default" not in text:  # a help text that explains its default already says it once
            default = None if f.default is MISSING else f.default
            shown = "the strategy's own" if default is None and f.name in HYPERPARAMETERS else default
            text += f" (default: {'unset' if shown is None else shown})"
        if base.startswith("dict"):  # data: NAME=FILE; not_measured: SILO:COLUMN=VALUE (repeatable)
            metavar = "NAME=FILE" if base == "dict[str, str]" else "SILO:COLUMN=VALUE"
            group.add_argument(_flag(f.name), action="append", default=argparse.SUPPRESS, metavar=metavar, help=text)
        elif base == "bool":
            group.add_argument(
                _flag(f.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
        else:
            group.add_argument(
                _flag(f.name), type=_TYPES[base], default=argparse.SUPPRESS, metavar=f.name.upper(), help=text
            )


def _mappings(explicit: dict[str, Any]) -> dict[str, Any]:
    """``--data NAME=FILE`` and ``--not-measured SILO:COLUMN=VALUE`` (repeated) as the RunConfig mappings."""
    from fedkit.data.sitefile import parse_not_measured
    from fedkit.errors import ConfigError

    out = dict(explicit)
    if "data" in out:
        pairs = [item.partition("=") for item in out["data"]]
        if any(not name or not sep or not value for name, sep, value in pairs):
            raise ConfigError(f"--data takes NAME=FILE (e.g. site-a=a.csv); got {out['data']!r}.")
        out["data"] = {name: value for name, _, value in pairs}
    if "not_measured" in out:
        codes: dict[str, list[str]] = {}
        for item in out["not_measured"]:
            silo, sep, code = item.partition(":")
            if not sep or not silo:
                raise ConfigError(f"--not-measured takes SILO:COLUMN=VALUE (e.g. va:chol=0); got {item!r}.")
            codes.setdefault(silo, []).append(code)
        out["not_measured"] = {silo: parse_not_measured(items) for silo, items in codes.items()}
    return out


def config_from_args(args: argparse.Namespace) -> Any:
    """RunConfig from defaults < ``--preset NAME`` < ``--config FILE`` < explicit flags.

    Parameters
    ----------
    args
        The parsed command line.

    Raises
    ------
    ConfigError
        When the preset, the config file or a flag's value is not allowed.
    """
    from fedkit.config import RunConfig, read_config_file, with_changes
    from fedkit.presets import preset

    values: dict[str, Any] = preset(args.preset) if args.preset else {}
    values.update(read_config_file(args.config) if args.config else {})
    names = {f.name for f in fields(RunConfig)}
    explicit = _mappings({k: v for k, v in vars(args).items() if k in names})
    return RunConfig.from_dict(with_changes(values, explicit))  # --local-epochs replaces steps from the file


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def block_interval(block: dict[str, Any], metric: str) -> str:
    """A final block's 95% interval of ``metric`` as text (:func:`fedkit.intervals.interval_text`), "-" for a
    run recorded before intervals existed.

    Parameters
    ----------
    block
        A silo's block of a summary's ``final``.
    metric
        ``"auc"`` or ``"accuracy"``.
    """
    from fedkit.intervals import interval_text

    if f"{metric}_low" not in block:
        return "-"
    return interval_text(block[f"{metric}_low"], block[f"{metric}_high"])


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table (first column left-aligned, the rest right-aligned).

    Parameters
    ----------
    rows
        One mapping per row.
    columns
        The keys to show, in this order.
    """
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def format_summary(summary: dict[str, Any]) -> str:
    """The readable report of ``fedkit run``: header, per-silo table, Avg accuracy, notes.

    Parameters
    ----------
    summary
        A run's summary (``RunResult.summary``).
    """
    config, final = summary["config"], summary["final"]
    steps = (
        f"{config['local_steps']} local steps" if config["local_steps"] else f"{config['local_epochs']} local epochs"
    )
    head = (
        f"run {summary['run_id']} {summary['status']} · split {config['split']} · {config['strategy']} · "
        f"{final.get('round', 0)}/{config['rounds']} rounds · {steps} · "
        f"{config['optimizer']} lr {config['lr']} · seed {config['seed']}"
    )
    blocks = [*final["silos"].items(), *([("pooled", final["pooled"])] if final.get("pooled") else [])]
    rows = [
        {"silo": s, **m, "auc 95% CI": block_interval(m, "auc"), "accuracy 95% CI": block_interval(m, "accuracy")}
        for s, m in blocks
    ]
    body = format_table(rows, ["silo", "n_test", "loss", "auc", "auc 95% CI", "accuracy", "accuracy 95% CI"])
    avg = f"avg_accuracy (unweighted mean over silos, FLamby's Avg{len(final['silos'])}): {_fmt(final['avg_accuracy'])}"
    title = "Global model" if final.get("model", "global") == "global" else "Each silo's own (personalized) model"
    ci = "95% CI over its n_test rows: AUC DeLong, accuracy Wilson"
    lines = [head, "", f"{title} on each silo's test set ({ci}):", body, "", avg]
    privacy = final.get("privacy")
    if privacy:
        lines.append(
            f"privacy ({privacy['mechanism']} DP): epsilon {_fmt(privacy['epsilon'])} at delta {privacy['delta']:g} "
            f"(noise multiplier {_fmt(privacy['noise_multiplier'])}, clip {privacy['clip']:g}; "
            f"{privacy['accountant']})"
        )
    lines += [f"note: {n}" for n in summary.get("notes", [])]
    return "\n".join(lines)


def _trackers(args: argparse.Namespace) -> list[Any]:
    """The run's trackers from ``--tracker``, ``--experiment`` and ``--tracking-uri``."""
    from fedkit.tracking import make_trackers

    return make_trackers(args.tracker, experiment=args.experiment, tracking_uri=args.tracking_uri)


def _resume_alone(args: argparse.Namespace) -> None:
    """``--resume`` takes the recorded run's config: refuse config flags, a preset or a config file beside it."""
    from fedkit.config import RunConfig

    given = [_flag(f.name) for f in fields(RunConfig) if f.name in vars(args)]
    given += [flag for flag, value in (("--preset", args.preset), ("--config", args.config)) if value]
    if given:
        raise ConfigError(
            f"--resume continues a run with its recorded config; drop {', '.join(given)} "
            "(`fedkit runs show RUN_ID` shows that config)."
        )


def cmd_run(args: argparse.Namespace) -> int:
    """``fedkit run``; with ``--json`` stdout holds the JSON alone (other prints go to stderr), and a run that
    fails still prints a JSON object (run id, status, error).

    Parameters
    ----------
    args
        The parsed command line.
    """
    import contextlib

    import fedkit

    if args.resume:
        _resume_alone(args)
    out = sys.stdout
    # a library's prints (FLARE's "Connecting to FLARE ...") would break the JSON: they go to stderr while the run goes
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            result = fedkit.run(
                None if args.resume else config_from_args(args),
                trackers=_trackers(args),
                progress=not args.quiet,
                admin_kit=args.admin_kit,
                resume=args.resume,
            )
            summary = result.summary()
    except RoundFailedError as exc:
        if args.json:
            print(json.dumps({"run_id": exc.run_id, "status": "failed", "error": str(exc)}), file=out)
        raise
    print(json.dumps(summary, indent=None if args.compact else 2) if args.json else format_summary(summary), file=out)
    return 0


def format_sweep(result: Any) -> str:
    """The readable report of ``fedkit sweep``: the table (best row starred), the best configuration, notes.

    Parameters
    ----------
    result
        The sweep's :class:`fedkit.SweepResult`.

    Returns
    -------
    str
        The report.
    """
    table = result.table
    grid = list(dict.fromkeys(k for c in result.configurations for k in c))
    rows = []
    for i, row in table.iterrows():
        line = {"": "*" if i == result.best else "", **{k: row.get(k) for k in grid}, "runs": row["runs"]}
        for score in ("avg_accuracy", "pooled_auc"):
            mean, std = row[f"{score}_mean"], row[f"{score}_std"]
            line[score] = f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")
        rows.append(line)
    best = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in result.best_fields.items())
    lines = [
        f"sweep {result.sweep_id} · {len(table)} configurations · {len(result.runs)} runs · scored on "
        f"{result.scored_on} sets (mean ± std over seeds {', '.join(map(str, result.seeds))})",
        "",
        format_table(rows, ["", *grid, "runs", "avg_accuracy", "pooled_auc"]),
        "",
        f"best by {result.scored_on} {result.metric}: {best or '(the base config)'}",
    ]
    return "\n".join(lines + [f"note: {n}" for n in result.notes])


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fedkit sweep``.

    Parameters
    ----------
    args
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    import fedkit
    from fedkit.sweeps import grid_from_text, seeds_from_text

    result = fedkit.sweep(
        config_from_args(args),
        grid_from_text(args.grid),
        seeds=seeds_from_text(args.seeds),
        folds=args.folds,
        metric=args.metric,
        trackers=_trackers(args),
        history=args.history,
        progress=not args.quiet,
        keep_results=False,
    )
    print(json.dumps(result.summary(), indent=None if args.compact else 2) if args.json else format_sweep(result))
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    """``fedkit data info``.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.data import load_silos

    federation = load_silos(args.split, silos=args.silos, alpha=args.alpha, seed=args.seed, verify=args.verify)
    rows = federation.summary()
    if args.json:
        payload = {"split": federation.split, "silos": rows, "features": list(federation.features)}
        print(json.dumps({**payload, "data": federation.provenance.as_dict()}, indent=2))
        return 0
    total = {k: sum(r[k] for r in rows) for k in ("rows", "positives", "train", "test")}
    total["positive_rate"] = total["positives"] / total["rows"]
    verified = "verified" if federation.provenance.verified else "NOT verified"
    print(
        f"split {federation.split} · {len(rows)} silos · {len(federation.features)} features · "
        f"data {federation.provenance.directory} ({verified})"
    )
    print(
        format_table(
            [*rows, {"silo": "total", **total}], ["silo", "rows", "positives", "positive_rate", "train", "test"]
        )
    )
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    """``fedkit data download``.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.data import uci
    from fedkit.paths import data_dir

    target = data_dir()
    digests = uci.ensure_files(target)
    print(f"{len(digests)} verified files in {target}")
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    """``fedkit runs list``.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.tracking.local import LocalStore

    rows = LocalStore().list_runs()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("No runs recorded yet; start one with `fedkit run`.")
    else:
        print(
            format_table(
                rows,
                ["run_id", "status", "created_at", "split", "strategy", "rounds", "seed", "avg_accuracy", "pooled_auc"],
            )
        )
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    """``fedkit runs show RUN_ID``.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.tracking.local import LocalStore

    run = LocalStore().get(args.run_id)
    run.pop("params")
    if args.json:
        print(json.dumps(run, indent=2))
        return 0
    print(
        f"run {run['run_id']} · status {run['status']} · fedkit {run['fedkit_version']} · "
        f"started {run['created_at']} · ended {run['finished_at'] or '-'}"
    )
    print("config: " + ", ".join(f"{k}={v}" for k, v in run["config"].items()))
    print(f"data: {run['data']['directory']} ({'verified' if run['data']['verified'] else 'NOT verified'})")
    if run["summary"]:
        print()
        print(format_summary(run["summary"]))
        rejected = run["summary"].get("rejected", [])
        if rejected:
            print(f"\nrejected updates ({len(rejected)}):")
            print(format_table(rejected, ["round", "silo", "kind", "reason"]))
    for backend, state in LocalStore().delivery(run["run_id"]).items():
        line = f"tracker {backend}: {state['delivered']} event(s) delivered, {state['pending']} pending"
        print(line + (f" ({state['last_error']}); `fedkit runs sync` delivers them" if state["pending"] else ""))
    if run["error"]:
        print("\nerror:\n" + run["error"])
    return 0


def format_audit_record(record: dict[str, Any]) -> str:
    """One audit record on one line: sequence number, kind, time, what it says, its hash's first characters.

    Parameters
    ----------
    record
        One audit record as stored.
    """
    kind = record["kind"]
    if kind == "start":
        what = (
            f"started by {record['user']} · fedkit {record['versions']['fedkit']} · "
            f"nvflare {record['versions']['nvflare'] or '-'} · config {record['config_sha256'][:12]} · "
            + ", ".join(f"{silo} {digest[:12]}" for silo, digest in record["silos"].items())
        )
        if record.get("dp"):
            dp = record["dp"]
            what += f" · dp {dp['mechanism']} clip {dp['clip']:g} delta {dp['delta']:g} ({dp['accountant']})"
    elif kind == "round":
        updates = ", ".join(
            f"{u['silo']} {_fmt(u['norm'])}" + ("" if u["accepted"] else f" REJECTED ({u['reason']})")
            for u in record["updates"]
        )
        what = f"round {record['round']} · norms: {updates or '-'} · params {record['params_sha256'][:12]}"
        if record.get("dp"):
            what += f" · epsilon {_fmt(record['dp'].get('epsilon'))}"
    elif kind == "resume":
        what = f"resumed after round {record['after_round']} by {record['user']}"
    else:
        what = f"{record['status']} after round {record['rounds']}" + (
            f" · {record['error']}" if record.get("error") else ""
        )
    return f"{record['seq']:>4}  {kind:<6}  {record['time']}  {what}  [{record['hash'][:12]}]"


def _audit_store(args: argparse.Namespace) -> LocalStore:
    """The run store ``fedkit audit`` reads: ``--store FILE`` (which must exist), else the local one."""
    from fedkit.tracking.local import LocalStore

    if args.store is not None and not Path(args.store).is_file():
        raise ConfigError(
            f"--store {args.store}: no such run store. Give the SQLite file of the store that holds the run "
            "(a FLARE server's is <server workspace>/fedkit/runs.sqlite), or leave --store out for this machine's."
        )
    return LocalStore(args.store)


def cmd_audit_show(args: argparse.Namespace) -> int:
    """``fedkit audit show RUN_ID``.

    Parameters
    ----------
    args
        The parsed command line.
    """

    records = _audit_store(args).audit_log(args.run_id)
    if args.json:
        print(json.dumps(records, indent=2))
    elif not records:
        print("This run has no audit log (recorded before fedkit kept one).")
    else:
        print("\n".join(format_audit_record(r) for r in records))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """``fedkit audit verify RUN_ID``: 0 when the chain is intact, 1 naming the first bad record otherwise.

    Parameters
    ----------
    args
        The parsed command line.
    """

    try:
        head, count = _audit_store(args).verify_audit(args.run_id)
    except AuditError as exc:
        print(f"fedkit: audit FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"audit log verifies: {count} record(s), head hash {head}")
    return 0


def cmd_remote_provision(args: argparse.Namespace) -> int:
    """``fedkit remote provision``.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.remote.kits import provision

    kits = provision(args.project, args.workspace)
    print(f"startup kits (CA, per-site certificates, mTLS) in {kits}:")
    for kit in sorted(p for p in kits.iterdir() if p.is_dir()):
        print(f"  {kit.name}: {kit}")
    print("Give each participant only its own kit folder; the admin kit is what --admin-kit takes.")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_remote_start(args: argparse.Namespace) -> int:
    """``fedkit remote start``: run one participant's FLARE process from its kit (the container entry point).

    A site checks its own data file against the schema first and refuses to start when it breaks it.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.data.sitefile import parse_not_measured
    from fedkit.remote.kits import run_participant
    from fedkit.remote.silo import SiteOptions

    codes = parse_not_measured(args.not_measured) if args.not_measured else None
    given = args.data or args.schema or codes or args.delimiter != ","
    site = SiteOptions(args.data, args.schema, codes, args.delimiter) if given else None
    return run_participant(args.kit, args.workspace, site)


def cmd_remote_poc(args: argparse.Namespace) -> int:
    """``fedkit remote poc``: a federation on 127.0.0.1 until Ctrl-C.

    Parameters
    ----------
    args
        The parsed command line.
    """
    import signal
    import time

    from fedkit.remote.kits import start_poc

    poc = start_poc(args.workspace, args.silos, data_dir=args.data_dir)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops the federation like Ctrl-C
    try:
        print(f"server and {args.silos} site(s) on 127.0.0.1 (mTLS); PIDs: {poc.pids}")
        print(f"run on it:  fedkit run --engine remote --admin-kit {poc.admin_kit}")
        print("Ctrl-C stops every process.", flush=True)
        while all(p.poll() is None for p in poc.processes.values()):
            time.sleep(1)
        dead = [n for n, p in poc.processes.items() if p.poll() is not None]
        print(f"fedkit: {', '.join(dead)} exited; see {poc.log(dead[0])}. Stopping the rest.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        poc.stop()


def report_parameters(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs as a dict, each VALUE read as YAML (like papermill's ``-p``).

    Parameters
    ----------
    pairs
        The ``NAME VALUE`` pairs as given.
    """
    import yaml

    values: dict[str, Any] = {}
    for name, text in pairs:
        try:
            values[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            values[name] = text
    return values


def cmd_report(args: argparse.Namespace) -> int:
    """``fedkit report NOTEBOOK -p NAME VALUE ...``.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit import reports

    report = reports.render(
        args.notebook, report_parameters(args.parameter), output_dir=args.output_dir, html=not args.no_html
    )
    print(f"executed notebook: {report.notebook}")
    if report.html is not None:
        print(f"HTML report: {report.html}")
    return 0


def cmd_runs_sync(args: argparse.Namespace) -> int:
    """``fedkit runs sync [RUN_ID]``: 0 when nothing is left pending, 1 otherwise.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.tracking import sync

    report = sync(args.run_id, progress=not args.quiet)
    if not report:
        print("Nothing to sync: every event has been delivered.")
    for r in report:
        line = f"run {r['run_id']} · {r['backend']}: {r['delivered']} event(s) delivered, {r['pending']} pending"
        print(line + (f" ({r['error']}); run `fedkit runs sync` again when it is reachable" if r["error"] else ""))
    return 1 if any(r["pending"] for r in report) else 0


def cmd_runs_compare(args: argparse.Namespace) -> int:
    """``fedkit runs compare ID ID ...``: one column per run, config fields that differ, final metrics.

    Parameters
    ----------
    args
        The parsed command line.
    """
    from fedkit.comparison import compare

    table = compare(
        args.run_ids or None, source=args.source, experiment=args.experiment, tracking_uri=args.tracking_uri
    )
    if args.json:
        print(table.reset_index().to_json(orient="records", indent=2))
    elif table.empty:
        print("No runs to compare; `fedkit runs list` shows the recorded runs.")
    else:
        rows = [{"field": str(field), **{str(k): v for k, v in values.items()}} for field, values in table.T.iterrows()]
        print(format_table(rows, ["field", *map(str, table.index)]))
    return 0


Subparsers = Any  # argparse's private _SubParsersAction


def add_run(sub: Subparsers, config_flags: bool) -> None:
    """``fedkit run``: the RunConfig flags (only when ``config_flags``), presets, remote and tracking options.

    Parameters
    ----------
    sub
        The ``fedkit`` parser's subcommands.
    config_flags
        Add one flag per RunConfig field.
    """
    run = sub.add_parser(
        "run",
        help="train federatedly and record the run",
        description="Train federatedly and record the run in the local store.",
    )
    run.add_argument(
        "--preset",
        metavar="NAME",
        help="a named configuration: " + ", ".join(PRESETS) + " (file and flags override it)",
    )
    run.add_argument("--config", metavar="FILE", help="YAML or JSON file of RunConfig fields (flags override it)")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    run.add_argument("--compact", action="store_true", help="with --json: one line")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue a stopped, interrupted (killed) or failed run from its last checkpoint, with its recorded "
        "config (no other config flags); it ends exactly as an uninterrupted run would",
    )
    remote = run.add_argument_group("remote engine (--engine remote)")
    remote.add_argument("--admin-kit", metavar="DIR", help="admin startup kit of the FLARE federation")
    tracking = run.add_argument_group("tracking (the local store is always on)")
    tracking.add_argument(
        "--tracker",
        default="local",
        metavar="LIST",
        help=f"comma-separated trackers: {', '.join(BACKENDS)} (e.g. {','.join(BACKENDS)}; default: local)",
    )
    tracking.add_argument(
        "--experiment", default=None, metavar="NAME", help="SageMaker/MLflow experiment name (default: fedkit)"
    )
    tracking.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI or SageMaker MLflow tracking server ARN (default: $MLFLOW_TRACKING_URI)",
    )
    if config_flags:
        add_config_flags(run)
    run.set_defaults(func=cmd_run, parser=run)


def add_sweep(sub: Subparsers, config_flags: bool) -> None:
    """``fedkit sweep``: a grid of RunConfig values × seeds (× folds) as one job; the RunConfig flags set the base.

    Parameters
    ----------
    sub
        The subcommands to add it to.
    config_flags
        Add the RunConfig flags (and the choices of ``--metric``/``--history``, which import the training stack).
    """
    sweep = sub.add_parser(
        "sweep",
        help="every combination of a grid × seeds as one stacked job, with a table of mean ± std per configuration",
        description="Run every combination of the --grid values on top of the base configuration (--preset, "
        "--config and the RunConfig flags), for each seed and, with --folds, on validation folds of each silo's "
        "train rows; print one row per configuration (mean ± std over seeds) and the best one. Invalid values "
        "are refused before anything runs. E.g. fedkit sweep --grid lr=0.001,0.01 --grid "
        "strategy=fedavg,fedprox --seeds 42-46 --folds 4",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="a RunConfig field and the values to try (repeat for more fields; 'none' unsets an optional one)",
    )
    sweep.add_argument("--seeds", default="42", metavar="LIST", help="seeds, e.g. 42-46 or 42,43 (default: 42)")
    sweep.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="score on K validation folds of each silo's train rows instead of the test sets (choose honestly)",
    )
    scores, histories = None, None
    if config_flags:  # the choices come with the training stack: imported only for `fedkit sweep` itself
        from fedkit.stacking import HISTORIES as histories
        from fedkit.sweeps import SCORES as scores
    sweep.add_argument("--metric", default="avg_accuracy", choices=scores, help="what the best configuration maximizes")
    sweep.add_argument(
        "--history", default="final", choices=histories, help="record each run's last round (final) or every round"
    )
    sweep.add_argument("--preset", metavar="NAME", help="base configuration: " + ", ".join(PRESETS))
    sweep.add_argument("--config", metavar="FILE", help="base configuration from a YAML or JSON file")
    sweep.add_argument("--json", action="store_true", help="print the table and the best configuration as JSON")
    sweep.add_argument("--compact", action="store_true", help="with --json: one line")
    sweep.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    sweep.add_argument(
        "--tracker", default="local", metavar="LIST", help=f"comma-separated trackers: {', '.join(BACKENDS)}"
    )
    sweep.add_argument("--experiment", default=None, metavar="NAME", help="SageMaker/MLflow experiment name")
    sweep.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow tracking URI")
    if config_flags:
        add_config_flags(sweep)
    sweep.set_defaults(func=cmd_sweep, parser=sweep)


def add_data(sub: Subparsers) -> None:
    """``fedkit data info`` and ``fedkit data download``.

    Parameters
    ----------
    sub
        The ``fedkit`` parser's subcommands.
    """
    data = sub.add_parser("data", help="the UCI Heart Disease files and silos")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="rows, positives and train/test sizes per silo")
    info.add_argument("--split", default="flamby", help="split to show (default: flamby)")
    info.add_argument("--silos", type=int, default=None, help="silos of a synthetic split")
    info.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of dirichlet/quantity splits")
    info.add_argument("--seed", type=int, default=42, help="seed of the split")
    info.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True, help="check sha256 pins")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_data_info, parser=info)
    download = commands.add_parser("download", help="download and verify the files into the data folder")
    download.set_defaults(func=cmd_data_download, parser=download)


def add_remote(sub: Subparsers) -> None:
    """``fedkit remote provision | start | poc``.

    Parameters
    ----------
    sub
        The ``fedkit`` parser's subcommands.
    """
    remote = sub.add_parser("remote", help="NVIDIA FLARE federations: startup kits, a local federation")
    commands = remote.add_subparsers(dest="remote_command", required=True, metavar="COMMAND")
    prov = commands.add_parser("provision", help="startup kits (CA, per-site certificates, mTLS) from a project file")
    prov.add_argument("--project", default="deploy/project.yml", metavar="FILE", help="default: deploy/project.yml")
    prov.add_argument("--workspace", default="workspace", metavar="DIR", help="where the kits go (default: workspace)")
    prov.set_defaults(func=cmd_remote_provision, parser=prov)
    start = commands.add_parser("start", help="run the server or a site from its startup kit (containers)")
    start.add_argument("--kit", required=True, metavar="DIR", help="the startup kit (startup/ and local/)")
    start.add_argument("--workspace", required=True, metavar="DIR", help="writable folder the kit is copied to")
    own = start.add_argument_group("a site's own data (checked against the schema before the site joins)")
    own.add_argument(
        "--data",
        metavar="FILE",
        help="this site's data file: UCI processed.<center>.data format or a CSV with a header "
        "(default: $FEDKIT_SITE_DATA, else processed.<site>.data in $FEDKIT_DATA_DIR for a UCI hospital)",
    )
    own.add_argument("--schema", metavar="FILE", help="YAML/JSON schema of the federation (default: UCI Heart Disease)")
    own.add_argument(
        "--not-measured",
        action="append",
        metavar="COL=VALUE",
        help='a value this file writes for "not measured" (repeatable; UCI hospitals get their own by default)',
    )
    own.add_argument("--delimiter", default=",", help="field separator of the file (default: ',')")
    start.set_defaults(func=cmd_remote_start, parser=start)
    poc = commands.add_parser("poc", help="server + one process per hospital on 127.0.0.1 until Ctrl-C")
    poc.add_argument("--silos", type=int, default=4, help="hospitals to start, 1-4 (default: 4)")
    poc.add_argument(
        "--workspace", default="poc-workspace", metavar="DIR", help="kits and logs (default: poc-workspace)"
    )
    poc.add_argument("--data-dir", default=None, metavar="DIR", help="the UCI files (default: $FEDKIT_DATA_DIR)")
    poc.set_defaults(func=cmd_remote_poc, parser=poc)


def add_runs(sub: Subparsers) -> None:
    """``fedkit runs list | show | sync | compare``.

    Parameters
    ----------
    sub
        The ``fedkit`` parser's subcommands.
    """
    runs = sub.add_parser("runs", help="recorded runs in the local store")
    commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="every recorded run, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_runs_list, parser=listing)
    show = commands.add_parser("show", help="one run: config, data, final metrics")
    show.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_runs_show, parser=show)
    sync = commands.add_parser(
        "sync",
        help="deliver events that SageMaker/MLflow missed (safe to repeat)",
        description="Deliver every event a remote tracker has not received yet, in order; "
        "repeating it never duplicates runs, components or metric points.",
    )
    sync.add_argument("run_id", metavar="RUN_ID", nargs="?", help="one run (default: every run with pending events)")
    sync.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    sync.set_defaults(func=cmd_runs_sync, parser=sync)
    compare = commands.add_parser("compare", help="a table of runs: differing config and final metrics")
    compare.add_argument("run_ids", metavar="RUN_ID", nargs="*", help="runs to compare (default: all)")
    compare.add_argument("--source", default="local", choices=tuple(BACKENDS), help="where to read the runs from")
    compare.add_argument("--experiment", default="fedkit", metavar="NAME", help="with --source sagemaker/mlflow")
    compare.add_argument("--tracking-uri", default=None, metavar="URI", help="with --source mlflow")
    compare.add_argument("--json", action="store_true", help="print JSON (one object per run)")
    compare.set_defaults(func=cmd_runs_compare, parser=compare)


STORE_HELP = (
    "the run store to read (default: $FEDKIT_HOME/runs.sqlite; a FLARE server keeps its own in "
    "<server workspace>/fedkit/runs.sqlite)"
)
"""Help of ``fedkit audit``'s ``--store``: whose copy of the log to read."""


def add_audit(sub: Subparsers) -> None:
    """``fedkit audit show | verify``.

    Parameters
    ----------
    sub
        The ``fedkit`` parser's subcommands.
    """
    audit = sub.add_parser(
        "audit",
        help="a run's tamper-evident audit log",
        description="Each run's audit log is a chain of records, each carrying the SHA-256 hash of the one "
        "before it: who started the run, versions, config hash, data checksums, each round's update norms "
        "and verdicts, resumes and the end.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    show = commands.add_parser("show", help="print the run's audit records")
    show.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    show.add_argument("--json", action="store_true", help="print the records as JSON")
    show.add_argument("--store", default=None, metavar="FILE", help=STORE_HELP)
    show.set_defaults(func=cmd_audit_show, parser=show)
    verify = commands.add_parser(
        "verify",
        help="check the hash chain; exit 1 naming the first edited, removed or reordered record",
    )
    verify.add_argument("run_id", metavar="RUN_ID", help="run id or a unique prefix of it")
    verify.add_argument("--store", default=None, metavar="FILE", help=STORE_HELP)
    verify.set_defaults(func=cmd_audit_verify, parser=verify)


def add_report(sub: Subparsers) -> None:
    """``fedkit report NOTEBOOK -p NAME VALUE ...``.

    Parameters
    ----------
    sub
        The ``fedkit`` parser's subcommands.
    """
    report = sub.add_parser(
        "report",
        help="execute a notebook with papermill and export a standalone HTML report",
        description="Execute NOTEBOOK with papermill (parameters injected after its 'parameters' cell) and "
        "write the executed notebook and a standalone HTML report (code hidden) named by date and parameters.",
    )
    report.add_argument(
        "notebook", metavar="NOTEBOOK", help="the .ipynb to run, e.g. notebooks/04_headless_report.ipynb"
    )
    report.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter; VALUE is read as YAML (5 -> int, [42, 43] -> list, fedavg -> str)",
    )
    report.add_argument("--output-dir", default="reports", metavar="DIR", help="where to write (default: reports/)")
    report.add_argument("--no-html", action="store_true", help="only write the executed notebook")
    report.set_defaults(func=cmd_report, parser=report)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``fedkit`` argument parser with all subcommands.

    Parameters
    ----------
    command
        The subcommand about to run: ``run``'s RunConfig flags are left out unless it is ``run`` (or None), since
        generating them imports the training stack, 0.2 s before e.g. ``fedkit report`` can start its kernel.
    """
    parser = Parser(prog="fedkit", description="Cross-silo federated learning on the UCI Heart Disease hospitals.")
    parser.add_argument("--version", action="version", version=f"fedkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run(sub, config_flags=command in (None, "run"))
    add_sweep(sub, config_flags=command in (None, "sweep"))
    add_data(sub)
    add_remote(sub)
    add_runs(sub)
    add_audit(sub)
    add_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedkit`` console script.

    Parameters
    ----------
    argv
        The arguments after ``fedkit`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
    args, unknown = parser.parse_known_args(words)
    if unknown:  # argparse would print the top-level usage; the subcommand's own says what it takes
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except FedkitError as exc:
        print(f"fedkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedkit: stopped (Ctrl-C); the run is recorded as stopped.", file=sys.stderr)
        return 130
    finally:
        if argv is None:  # the console script, about to exit: results are written, files closed
            gc.freeze()  # no final collection of every object the imports made (0.3 s after a report)


if __name__ == "__main__":
    sys.exit(main())

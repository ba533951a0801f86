"""normbench from Python: what the command line does, as functions a notebook calls.

    import normbench

    runs = normbench.run("morvan_tf23", overrides=["seeds=[1, 2]"])  # runs.parquet's rows, as a DataFrame
    res = normbench.open_results("results/morvan_tf23")
    res.runs                      # one row per run: grid values, status, final numbers
    res.curves()                  # the loss curves (step, split, mode, loss, ...)
    res.layers(where=["norm=batch"])  # per-layer numbers of the runs with batch norm
    normbench.draw("results/morvan_tf23")  # every figure, as `normbench plot` draws them
    rows = normbench.check_claims(only=["relu-dies-without-bn"], quick=True)

A config is a file, a packaged config's name, or a dict of the same sections as a YAML file; `overrides` are
`--set` items. Errors are the command line's: a normbench.UserError (a ConfigError for what the config or options
get wrong, a DamagedResults for a results folder that cannot be read, ...), whose message is one line. Nothing here
imports torch until a run is trained.

The command line is a client of this module: each `normbench` command parses its options and calls one function
here (run, print_grid, print_summary, plot_folders, report, check, export_tensorboard, catalogue), which prints to
the consoles it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from normbench.config import ConfigError, Experiment, apply_override, experiment_from_dict, load_experiment
from normbench.results import FINISHED, experiment_axes, find_experiments, load_runs, load_table, select_runs

TABLES = ("curves", "layers", "histograms", "landscape", "time")


def load_config(config: str | Path | Mapping[str, Any] | Experiment, overrides: Iterable[str] = ()) -> Experiment:
    """The experiment a config describes, validated as `normbench validate` does, with `--set` overrides (an
    Experiment, already loaded, is itself)."""
    overrides = list(overrides)
    if isinstance(config, Experiment) and not overrides:
        return config
    if isinstance(config, Mapping):
        import copy

        raw = copy.deepcopy(dict(config))
        for item in overrides:
            apply_override(raw, item)
        return experiment_from_dict(raw)
    return load_experiment(config, overrides)


def run(
    config: str | Path | Mapping[str, Any] | Experiment,
    overrides: Iterable[str] = (),
    out: str | Path = "results",
    *,
    quiet: bool = False,
    console: Console | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Train the config's runs not finished yet into OUT/<name>/, as `normbench run` does, and return
    runs.parquet's rows of its runs. `options` are run's (sweep.SweepOptions): force, retry_failed, workers,
    executor, scheduler, kernel, stack, compile, device. Progress and log lines go to `console` (default stderr);
    `quiet`: none."""
    from normbench.sweep import SweepOptions, run_experiment

    exp = load_config(config, overrides)
    console = console or Console(stderr=True, quiet=quiet)
    return run_experiment(exp, out, SweepOptions(**options), console=console)


@dataclass(frozen=True)
class Results:
    """One experiment folder's results, read as `normbench summary` and `plot` read them."""

    dir: Path
    runs: pd.DataFrame  # runs.parquet: one row per run listed by the folder's config

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def axes(self) -> list[str]:
        """The grid keys the folder's config varies (model.norm, model.activation, seed, ...)."""
        return [a for a in experiment_axes(self.dir) if a in self.runs.columns]

    def select(self, where: Iterable[str] = ()) -> pd.DataFrame:
        """The runs whose grid values match every `KEY=VALUE` (as `--where`: `norm=batch`, `lr=[0.1, 0.01]`)."""
        where = list(where)
        return select_runs(self.runs, where, self.axes, self.name) if where else self.runs

    def table(self, name: str, where: Iterable[str] = ()) -> pd.DataFrame:
        """A recorded table of the selected runs (one of TABLES), with each run's grid values beside its rows."""
        if name not in TABLES:
            raise ConfigError(f"no table {name!r}: choose from {', '.join(TABLES)}")
        runs = self.select(where)
        runs = runs[runs.status.isin(FINISHED)]  # a failed run recorded no tables
        rows = load_table(self.dir, name, runs.run_id.tolist())
        if rows.empty:
            return rows
        return rows.merge(runs[["run_id", *self.axes]], on="run_id", how="left")

    def curves(self, where: Iterable[str] = ()) -> pd.DataFrame:
        return self.table("curves", where)

    def layers(self, where: Iterable[str] = ()) -> pd.DataFrame:
        return self.table("layers", where)

    def histograms(self, where: Iterable[str] = ()) -> pd.DataFrame:
        return self.table("histograms", where)

    def time(self, where: Iterable[str] = ()) -> pd.DataFrame:
        """A sequence model's statistics at each time step (time.parquet; empty for runs that recorded none)."""
        return self.table("time", where)


def open_results(path: str | Path) -> Results:
    """An experiment folder (results/morvan_tf23), or a results folder that holds exactly one."""
    found = find_experiments(path)
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise ConfigError(f"{path} holds {len(found)} experiments ({names}): open one of them")
    return Results(found[0], load_runs(found[0]))


def draw(
    path: str | Path, compare: str | None = None, where: Iterable[str] = (), point: str = "post_act", **options: Any
) -> list[Path]:
    """Every figure `normbench plot` draws for the experiment(s) at `path`, with its --compare and --where;
    `options` are overlay, animate, ridge, fmt, workers. Returns the paths written."""
    from normbench.labels import where_folder
    from normbench.views.render import plot_experiments

    where = list(where)
    dirs = find_experiments(path)
    keep: set[str] = set()
    if where:
        for d in dirs:
            keep |= set(open_results(d).select(where).run_id)
    return plot_experiments(
        dirs,
        compare=compare,
        point=point,
        where=(lambda runs: runs.run_id.isin(keep)) if where else None,
        subdir=where_folder(where) if where else None,
        **options,
    )


def check_claims(
    out: str | Path = "results", claims_file: str | Path | None = None, *, quiet: bool = False, **options: Any
) -> list[dict[str, Any]]:
    """Train what the claims need and judge each setting, as `normbench claims` does; one dict per row of its
    table (claim, setting, measurement, verdict, reason, values). `options` are quick, only, experiments, kernel,
    force."""
    from normbench.claims import check_claims as check
    from normbench.claims import load_claims

    rows = check(load_claims(claims_file), out, console=Console(stderr=True, quiet=quiet), **options)
    return [asdict(row) for row in rows]


# -- the command line's work: each `normbench` command parses its options and calls one of these ------------------


def readable_experiments(path: str | Path, *, err: Console) -> list[Path]:
    """The experiments under `path`, each of this results format with a readable config.yaml (else a
    DamagedResults naming it), after a note on `err` for each that holds run folders its runs.parquet does not list
    (which no command shows). A runs.parquet that disagrees with the run folders' summary.json is rebuilt from them
    first, with one line saying so: an edited or stale value is never shown as a result."""
    from normbench.results import (
        DamagedResults,
        check_format,
        config_problem,
        damaged_note,
        read_summaries,
        unlisted_note,
    )
    from normbench.store import remove_leftovers, repair_runs_table

    exps = find_experiments(path)
    notes = []
    for e in exps:
        remove_leftovers(e)  # what a killed normbench left: temporaries of dead pids
        check_format(e)
        problem = config_problem(e)
        if problem:
            raise DamagedResults(problem)
        summaries = read_summaries(e)  # read once for both checks
        notes += [repair_runs_table(e, summaries), damaged_note(e, summaries)]
    notes += [unlisted_note(e) for e in exps]
    for note in filter(None, notes):
        err.print(note, markup=False, soft_wrap=True)
    return exps


def select_experiments(exps: list[Path], where: list[str] | None, *, err: Console) -> dict[Path, pd.DataFrame | None]:
    """Each experiment's runs that --where keeps (None: no --where, all of them), by results.select_runs. In a
    folder of several experiments, one whose grid lacks a key or has no matching run is left out with a note on
    `err`; it is a SelectionError when none is left."""
    if not where:
        return dict.fromkeys(exps)
    from normbench.results import SelectionError, parse_where

    kept: dict[Path, pd.DataFrame | None] = {}
    reasons = []
    parse_where(where)  # a malformed --where is an error whatever the experiments
    for e in exps:
        try:
            kept[e] = select_runs(load_runs(e), where, experiment_axes(e), e.name)
        except SelectionError as ex:
            reasons.append(str(ex))
    if not kept:
        raise SelectionError(
            reasons[0] if len(exps) == 1 else f"no experiment has a run matching --where: {'; '.join(reasons)}"
        )
    for reason in reasons:
        err.print(f"left out: {reason}", soft_wrap=True, markup=False)
    return kept


def _kept(runs: pd.DataFrame | None, run_id: str) -> bool:
    return runs is None or run_id in set(runs.run_id)


def print_grid(exp: Experiment, out: str | Path, *, force: bool = False, stdout: Console, err: Console) -> None:
    """`normbench run --dry-run`: the grid with run ids and what is finished, then one line on `err` saying what the
    run would do to the folder (or the refusal the run would give, a ConfigError)."""
    from rich.table import Table
    from rich.text import Text

    from normbench.results import RESULTS_FORMAT, run_format
    from normbench.store import ExperimentStore

    store = ExperimentStore(out, exp.name)
    change = store.change(exp, force=force)
    if change.case == "refused":
        raise ConfigError(change.message)
    title = Text(f"{exp.name}: {len(exp.runs)} runs (dry run: nothing trained or written)")
    table = Table(title=title, title_justify="left")
    for col in ("run id", *exp.axes, "state"):
        table.add_column(Text(col))
    for run in exp.runs:
        s = store.summary(run.run_id)
        state = "to train" if s is None or run_format(s) != RESULTS_FORMAT else s["status"]
        table.add_row(run.run_id, *(Text(str(v)) for v in run.params.values()), Text(str(state)))
    stdout.print(table)
    err.print(change.message, markup=False, soft_wrap=True)


def catalogue() -> list[tuple[str, list[tuple[str, str]]]]:
    """`normbench list`: (title, [(name, description), ...]) for each registry, then the packaged configs."""
    import yaml

    from normbench.config import packaged_configs, resolve_config_path
    from normbench.registry import ACTIVATIONS, DATASETS, INITS, MODELS, NORMS, OPTIMIZERS, SEQUENCE_NORMS
    from normbench.safe import load_yaml

    def also(aliases: tuple[str, ...]) -> str:
        return f" Also: {', '.join(aliases)}." if aliases else ""

    sections = [
        (title, [(name, reg.help(name) + also(reg.aliases(name))) for name in reg])
        for title, reg in (
            ("norms", NORMS),
            ("sequence norms", SEQUENCE_NORMS),
            ("activations", ACTIVATIONS),
            ("inits", INITS),
            ("optimizers", OPTIMIZERS),
            ("datasets", DATASETS),
            ("models", MODELS),
        )
    ]
    configs = []
    for name in packaged_configs():
        try:
            raw = load_yaml(resolve_config_path(name).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError):  # listed without a description
            raw = None
        configs.append((name, str(raw.get("description") or "") if isinstance(raw, dict) else ""))
    sections.append(("configs (run by name, e.g. `normbench run morvan_tf23`)", configs))
    return sections


def print_summary(
    results: str | Path,
    *,
    fmt: str = "table",
    by: list[str] | None = None,
    where: list[str] | None = None,
    metrics: list[str] | None = None,
    stdout: Console,
    err: Console,
) -> None:
    """`normbench summary`: one record per run (fmt table, csv or json) of the experiments under `results`, or
    with `by` one row per group of runs (also markdown), on `stdout`; notes on `err`."""
    import json
    import sys

    from normbench.views.summary import records_csv, summary_records, summary_table

    selected = select_experiments(readable_experiments(results, err=err), where, err=err)
    exps = list(selected)
    if by:
        _summary_groups(exps, [k for item in by for k in item.split(",") if k], fmt, selected, metrics, stdout, err)
        return
    records = [r for e in exps for r in summary_records(e) if _kept(selected[e], r["run_id"])]
    if fmt == "json":
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(records_csv(records))
    else:
        for e in exps:
            recs = [r for r in records if r["experiment"] == e.name]
            stdout.print(summary_table(recs, experiment_axes(e), title=e.name))
    for e in exps:
        missing = sum(r["status"] == "missing" for r in records if r["experiment"] == e.name)
        if missing:
            total = sum(r["experiment"] == e.name for r in records)
            err.print(
                f"{e.name}: {missing} of {total} runs not finished yet (`normbench run` trains them)", markup=False
            )


def _summary_groups(
    exps: list[Path],
    by: list[str],
    fmt: str,
    selected: dict[Path, pd.DataFrame | None],
    metrics: list[str] | None,
    stdout: Console,
    err: Console,
) -> None:
    import json
    import sys

    from normbench.views.summary import (
        aggregate_csv,
        aggregate_markdown,
        aggregate_records,
        aggregate_runs,
        aggregate_table,
        has_dropout,
        resolve_keys_across,
    )

    keys = resolve_keys_across(exps, by)
    tables = [aggregate_runs(e, k, selected.get(e)) for e, k in zip(exps, keys, strict=True)]
    for e, k in zip(exps, keys, strict=True):
        if len(k) < len(by):
            keys_text = ", ".join(k) or "nothing (all runs)"
            err.print(
                f"{e.name}: grouped by {keys_text}: the other keys are not its grid keys", soft_wrap=True, markup=False
            )
    if metrics:
        tables = [
            t[[c for c in t.columns if "." not in c or c.rsplit(".", 1)[0] in metrics or c in k]]
            for t, k in zip(tables, keys, strict=True)
        ]
    if fmt == "json":
        sys.stdout.write(json.dumps([r for t in tables for r in aggregate_records(t)], indent=2) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(aggregate_markdown([r for t in tables for r in aggregate_records(t)]))
    elif fmt == "csv":
        sys.stdout.write(aggregate_csv(pd.concat(tables, ignore_index=True)))
    else:
        for e, t in zip(exps, tables, strict=True):
            runs = selected.get(e)
            dropout = has_dropout(load_runs(e) if runs is None else runs, e)
            stdout.print(aggregate_table(t, title=e.name, dropout=dropout))


def plot_folders(
    results: str | Path,
    *,
    where: list[str] | None = None,
    err: Console,
    **options: Any,
) -> None:
    """`normbench plot`: every figure of the experiments under `results` (their runs that `where` keeps), with a
    progress bar and one line per experiment on `err`. `options` are plot_experiments's: compare, point, fmt,
    overlay, animate, ridge."""
    from rich.progress import Progress

    from normbench.labels import where_folder
    from normbench.views.render import plot_experiments

    selected = select_experiments(readable_experiments(results, err=err), where, err=err)
    exps = list(selected)
    # A run id is the hash of the run's config, so one set of ids serves every experiment.
    keep = {rid for runs in selected.values() if runs is not None for rid in runs.run_id}
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("drawing figures", total=None)
        paths = plot_experiments(
            exps,
            **options,
            where=(lambda runs: runs.run_id.isin(keep)) if where else None,
            subdir=where_folder(where) if where else None,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for e in exps:
        mine = [p for p in paths if e in p.parents]
        err.print(f"{e.name}: {len(mine)} figures -> {mine[0].parent if mine else e / 'figures'}", markup=False)


def report(results: str | Path, out_file: Path | None = None, *, where: list[str] | None = None, err: Console) -> Path:
    """`normbench report`: the HTML page of the experiment(s) under `results` (default file: DIR/report.html),
    with one line on `err` saying where; returns its path."""
    from normbench.views.html import write_report

    results = Path(results)
    selected = select_experiments(readable_experiments(results, err=err), where, err=err)  # before anything is drawn
    if out_file is not None and out_file.is_dir():
        raise ConfigError(f"--out {out_file} is a folder; give the file to write, e.g. {out_file / 'report.html'}")
    path = write_report(results, out_file, console=err, where=where, selected=selected)
    err.print(f"report -> {path} ({path.stat().st_size / 1e6:.1f} MB)", soft_wrap=True, markup=False)
    return path


def check(results: str | Path, *, stdout: Console, err: Console) -> int:
    """`normbench check`: verify each experiment's results format and every run folder against the sizes and
    checksums written when it was committed and the columns its format requires, one line per experiment on
    `stdout` and each damaged run under it; returns how many problems were found (0: none)."""
    from collections import Counter

    from normbench.results import (
        RESULTS_FORMAT,
        DamagedResults,
        check_experiment,
        check_format,
        config_problem,
        experiments_to_check,
    )
    from normbench.store import repair_runs_table

    damaged = 0
    exps = experiments_to_check(results)
    for e in exps:
        if not (e / "runs.parquet").is_file():
            err.print(f"{e / 'runs.parquet'} is missing; `normbench run` writes it again", markup=False, soft_wrap=True)
            damaged += 1
        else:
            try:
                check_format(e)
            except DamagedResults as ex:  # another format, or runs.parquet unreadable: one line, the next experiment
                err.print(str(ex), markup=False, soft_wrap=True)
                damaged += 1
                continue
        problem = config_problem(e)
        if problem:
            err.print(problem, markup=False, soft_wrap=True)
            damaged += 1
        if (e / "runs.parquet").is_file():
            try:
                rebuilt = repair_runs_table(e)
            except DamagedResults as ex:
                rebuilt = str(ex)
            if rebuilt:
                err.print(rebuilt, markup=False, soft_wrap=True)
                damaged += 1
        rows = check_experiment(e)
        bad = [r for r in rows if r["problems"]]
        damaged += len(bad)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r["status"] for r in rows).items()))
        found = f"{len(rows)} run folders ({counts})" if rows else "no run folders (runs/ is empty or missing)"
        stdout.print(f"{e.name}: results format {RESULTS_FORMAT}, {found}, {len(bad)} damaged", markup=False)
        for r in bad:
            stdout.print(f"  {e / 'runs' / r['run_id']} ({r['status']}): {'; '.join(r['problems'])}", markup=False)
        unlisted = [r for r in rows if not r["listed"]]
        if unlisted:
            older = sum(r["format"] != RESULTS_FORMAT for r in unlisted)
            err.print(
                f"{e}: {len(unlisted)} of these run folders are not listed in runs.parquet (left by an earlier config "
                f"or another normbench version{f'; {older} in another results format' if older else ''}): summary, "
                "plot and report do not show them",
                markup=False,
                soft_wrap=True,
            )
    return damaged


def export_tensorboard(results: str | Path, logdir: Path, *, err: Console) -> None:
    """`normbench export --tensorboard`: every run of the experiments under `results` as a TensorBoard run under
    LOGDIR/<name>/, one line per experiment on `err`."""
    from normbench.views.export import export_tensorboard as export
    from normbench.views.export import summary_writer_class

    summary_writer_class()  # the missing extra is one line, before any folder is read
    for e in readable_experiments(results, err=err):
        rep = export(e, logdir)
        skipped = f", {rep.missing} not trained yet" if rep.missing else ""
        failed = f", {rep.failed} failed (status text only)" if rep.failed else ""
        runs = f"{rep.exported} run{'s' if rep.exported != 1 else ''}"
        err.print(f"{e.name}: {runs}{failed}{skipped} -> {rep.path}", soft_wrap=True, markup=False)
    err.print(f"view: tensorboard --logdir {logdir}", soft_wrap=True, markup=False)

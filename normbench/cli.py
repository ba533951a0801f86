"""The `normbench` command. Thin: each command parses its options and calls a plain function.

    normbench run configs/morvan_tf23.yaml --set train.lr=0.01
    normbench plot results/morvan_tf23
    normbench summary results --format json
    normbench demo dead-neurons

A mistake in the user's input (config, option, path) is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from normbench.config import MAX_AXIS_VALUES, MAX_RUNS, ConfigError, load_experiment, packaged_configs
from normbench.errors import UserError, is_disk_full
from normbench.points import ALL as ALL_POINTS
from normbench.safe import load_yaml

if TYPE_CHECKING:
    import pandas as pd


def _flags_as_flags(params: list) -> list:
    """A flag's help line reads `--force`, not `--force <bool>`: typer's rich help prints its metavar, or else a
    type, after every option, a flag's included. An empty metavar prints nothing."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx):
        return _flags_as_flags(super().get_params(ctx))

    def invoke(self, ctx):
        """The one handler of what a user must fix (errors.UserError: a config, an option, a data file, damaged
        results): `error: <its one line>`, exit 2; and every fault a command does not handle itself ends in one
        line too: a write that fails (disk full, a read-only folder) names the file."""
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise fail(str(e)) from None
        except OSError as e:
            raise fail(os_error_line(e)) from None


def os_error_line(e: OSError) -> str:
    """One line for a failed read or write: 'disk full writing PATH', 'permission denied: PATH', ..."""
    import errno

    where = e.filename or ""
    if is_disk_full(e):
        return f"disk full writing {where or 'a file'}; nothing partial was left there: free some space and run again"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where or 'a file'}: {e.strerror} (a read-only or foreign folder?)"
    return f"{where + ': ' if where else ''}{e.strerror or e}"


class _Group(TyperGroup):
    def get_params(self, ctx):
        return _flags_as_flags(super().get_params(ctx))


class _Typer(typer.Typer):
    """Every command of this app, whoever adds it, shows its flags as flags."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs):
        return super().command(name, cls=cls or _Command, **kwargs)


app = _Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train grids of small networks and see what normalization layers do inside them.",
)
demo_app = _Typer(cls=_Group, no_args_is_help=True, help="Reproduce a classic demonstration with one command.")
app.add_typer(demo_app, name="demo")

# The examples at the end of a command's --help, as typed in a shell (quoted where a shell would expand [ or ().
# tests/test_cli.py runs every one, in a folder whose results/morvan_tf23 holds a finished sweep.
EXAMPLES = {
    "run": [
        "normbench run morvan_tf23 --set 'seeds=[1,2]' --set train.lr=0.01 --set name=morvan_tf23_lr0.01 --dry-run",
        "normbench run init_scale --set 'grid.model.weight_init.std=logspace(-4, 0, 5)' --dry-run",
    ],
    "validate": [
        "normbench validate cnn_norms --set 'grid.model.norm=[batch,group]' --set 'seeds=[1]'",
        "normbench validate morvan_tf23 --set 'grid.zip=[{model.depth: 3, model.width: 60}, "
        "{model.depth: 7, model.width: 30}]'",
    ],
    "summary": [
        "normbench summary results/morvan_tf23 --where model.norm=batch",
        "normbench summary results --where norm=batch --where activation=relu --format csv",
        "normbench summary results/morvan_tf23 --by norm --by activation",
    ],
    "plot": ["normbench plot results/morvan_tf23 --where 'activation=[relu,tanh]' --where norm=batch"],
}


def _examples(command: str) -> str:
    """The help's closing paragraph: EXAMPLES[command], one a line (escaped, as typer reads help as rich markup)."""
    from rich.markup import escape

    return "Examples:\n" + "\n".join(f"  {escape(x)}" for x in EXAMPLES[command])


err = Console(stderr=True, highlight=False)
# Piped output (CI logs, files) gets wide tables instead of 80 columns of wrapped cells.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

ConfigArg = Annotated[
    str, typer.Argument(metavar="CONFIG", help="A YAML config file, or the name of a packaged config.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a dotted key with a YAML value (repeatable), e.g. --set train.lr=0.01; a key the grid varies "
        "is changed as grid.KEY, the seeds as seeds (examples below).",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Results folder; the experiment goes to OUT/<name>/.")]
ResultsArg = Annotated[
    Path, typer.Argument(metavar="DIR", help="An experiment folder (OUT/<name>) or a results folder.")
]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        metavar="KEY=VALUE",
        help="Keep only the runs whose grid value matches, e.g. --where model.norm=batch (repeatable: a run must "
        "match every key; the value is read as YAML, and a list, or the key given again, matches any of its values, "
        "except for a key whose values are lists (norm_noise), where a list is one value; a short key like norm will "
        "do, and a name as a config may spell it, like norm=bn).",
    ),
]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class Executor(StrEnum):
    local = "local"
    dask = "dask"


class KernelName(StrEnum):
    auto = "auto"
    written_out = "written-out"
    autograd = "autograd"


class CheckKernel(StrEnum):
    auto = "auto"
    written_out = "written-out"
    autograd = "autograd"
    both = "both"


KernelOpt = Annotated[
    CheckKernel,
    typer.Option(
        help="auto: train as `normbench run` does; written-out or autograd: train on that kernel, into "
        "OUT/<name>-<kernel>/; both: auto and again autograd wherever auto writes runs out, and a verdict that "
        "differs between the two (two float32 roundings, as two CPUs give) says 'depends on rounding'."
    ),
]


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class FigFormat(StrEnum):
    png = "png"
    svg = "svg"
    pdf = "pdf"


Point = StrEnum("Point", {name: name for name in (*ALL_POINTS, "all")})  # --point: the recorded points, or all


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)  # plain: one line, never wrapped
    return typer.Exit(code=2)


MaxRunsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-runs",
        metavar="N",
        help=f"Refuse a grid of more than N runs, counted before any run is made (default {MAX_RUNS}; each axis "
        f"may have at most {MAX_AXIS_VALUES} values).",
        show_default=False,
    ),
]


def _load(config: str, overrides: list[str] | None, max_runs: int | None = None):
    if max_runs is not None and max_runs < 1:
        raise fail(f"--max-runs {max_runs}: give a number of runs of at least 1")
    return load_experiment(config, overrides or [], max_runs=max_runs)


def _readable(path: Path) -> list[Path]:
    """The experiments under `path`, each of this results format with a readable config.yaml (else one line naming
    it, exit 2), after a note on stderr for each that holds run folders its runs.parquet does not list (which no
    command shows). A runs.parquet that disagrees with the run folders' summary.json is rebuilt from them first,
    with one line saying so: an edited or stale value is never shown as a result."""
    from normbench.store import (
        DamagedResults,
        check_format,
        config_problem,
        damaged_note,
        find_experiments,
        read_summaries,
        remove_leftovers,
        repair_runs_table,
        unlisted_note,
    )

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


def _select(exps: list[Path], where: list[str] | None) -> dict[Path, pd.DataFrame | None]:
    """Each experiment's runs that --where keeps (None: no --where, all of them), by store.select_runs. In a
    folder of several experiments, one whose grid lacks a key or has no matching run is left out with a note on
    stderr; it is an error when none is left."""
    if not where:
        return dict.fromkeys(exps)
    from normbench.store import SelectionError, experiment_axes, load_runs, parse_where, select_runs

    kept: dict[Path, pd.DataFrame | None] = {}
    reasons = []
    parse_where(where)  # a malformed --where is an error whatever the experiments
    for e in exps:
        try:
            kept[e] = select_runs(load_runs(e), where, experiment_axes(e), e.name)
        except SelectionError as ex:
            reasons.append(str(ex))
    if not kept:
        raise fail(reasons[0] if len(exps) == 1 else f"no experiment has a run matching --where: {'; '.join(reasons)}")
    for reason in reasons:
        err.print(f"left out: {reason}", soft_wrap=True, markup=False)
    return kept


def _kept(runs: pd.DataFrame | None, run_id: str) -> bool:
    return runs is None or run_id in set(runs.run_id)


@app.command(epilog=_examples("run"), short_help="Train every run of a config's grid that has not finished yet.")
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    out_dir: OutOpt = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="Re-run runs that already finished.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Re-run runs recorded as failed.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Local worker processes of one thread each (default: one per core when the grid is large)."),
    ] = None,
    executor: Annotated[Executor, typer.Option(help="local, or dask (needs --scheduler).")] = Executor.local,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, e.g. tcp://HOST:8786.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the expanded grid with run ids; train nothing.")
    ] = False,
    kernel: Annotated[
        KernelName,
        typer.Option(
            help="How a step is computed: written-out (MLPs, backward by hand), autograd (any model), or auto: "
            "written-out wherever it supports the config."
        ),
    ] = KernelName.auto,
    stack: Annotated[
        int | None,
        typer.Option(help="At most this many runs of one structure train together (1: each alone; default: 16)."),
    ] = None,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="Compile the written-out kernel's step (torch.compile) (default: when the grid is large enough).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where runs train: auto (the GPU if any), cpu or cuda.")] = Device.auto,
    max_runs: MaxRunsOpt = None,
) -> None:
    """Train every run of CONFIG's grid that has not finished yet, recording what happens inside."""

    for option, value in (("--workers", workers), ("--stack", stack)):
        if value is not None and value < 1:
            raise fail(f"{option} {value}: give a whole number of at least 1")
    exp = _load(config, set_, max_runs)
    if dry_run:
        _print_grid(exp, out_dir, force)
        return
    if executor is Executor.dask and not scheduler:
        raise fail("--executor dask needs --scheduler tcp://HOST:PORT (the address of a running Dask scheduler)")
    from normbench.sweep import SweepInterrupted  # torch: after the config is known to be good

    try:
        from normbench.sweep import run_experiment

        table = run_experiment(
            exp,
            out_dir,
            force=force,
            retry_failed=retry_failed,
            workers=workers,
            executor=executor.value,
            scheduler=scheduler,
            kernel=kernel.value,
            stack=stack,
            compile=compile_,
            device=device.value,
            console=err,
        )
    except SweepInterrupted as e:  # Ctrl-C: what was saved and how to resume, exit 130 as a shell expects
        typer.echo(str(e), err=True)
        raise typer.Exit(code=130) from None
    except KeyboardInterrupt:  # before training began (loading data, building models): nothing trained yet
        typer.echo("interrupted before any run was trained; running the same command again starts the sweep", err=True)
        raise typer.Exit(code=130) from None
    counts = table.status.value_counts().to_dict()
    err.print("done: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" -> {out_dir / exp.name}", markup=False)
    if counts.get("failed"):  # diverged is a result; failed is an error (see its summary.json), and scripts should know
        raise typer.Exit(code=1)


def _print_grid(exp, out_dir: Path, force: bool = False) -> None:
    """The grid with run ids and what is finished, then one line on stderr saying what the run would do to the
    folder (or the refusal the run would give, exit 2)."""
    from rich.table import Table
    from rich.text import Text

    from normbench.store import RESULTS_FORMAT, ExperimentStore, run_format

    store = ExperimentStore(out_dir, exp.name)
    change = store.change(exp, force)
    if change.case == "refused":
        raise fail(change.message)
    title = Text(f"{exp.name}: {len(exp.runs)} runs (dry run: nothing trained or written)")
    table = Table(title=title, title_justify="left")
    for col in ("run id", *exp.axes, "state"):
        table.add_column(Text(col))
    for run in exp.runs:
        s = store.summary(run.run_id)
        state = "to train" if s is None or run_format(s) != RESULTS_FORMAT else s["status"]
        table.add_row(run.run_id, *(Text(str(v)) for v in run.params.values()), Text(str(state)))
    out.print(table)
    err.print(change.message, markup=False, soft_wrap=True)


@app.command(epilog=_examples("validate"), short_help="Check a config and print the size of its grid.")
def validate(config: ConfigArg, set_: SetOpt = None, max_runs: MaxRunsOpt = None) -> None:
    """Check CONFIG, load its data and build its models; print the size of its grid."""
    exp = _load(config, set_, max_runs)
    from normbench.sweep import preflight

    preflight(exp)
    out.print(
        f"{exp.source}: ok; experiment {exp.name!r}: {len(exp.runs)} runs = {exp.config.shape()}",
        markup=False,
        soft_wrap=True,
    )


def _also(aliases: tuple[str, ...]) -> str:
    return f" Also: {', '.join(aliases)}." if aliases else ""


@app.command("list", short_help="The registries and the packaged configs, with their descriptions.")
def list_() -> None:
    """What the registries hold and the packaged configs, each with its description."""

    from normbench.config import resolve_config_path
    from normbench.registry import ACTIVATIONS, DATASETS, INITS, MODELS, NORMS, OPTIMIZERS, SEQUENCE_NORMS

    sections = [
        (title, [(name, reg.help(name) + _also(reg.aliases(name))) for name in reg])
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
    # A terminal gets each description wrapped under itself; a pipe one line per entry, whole, for grep.
    width = out.width if out.is_terminal else None
    column = 2 + max(len(name) for _, rows in sections for name, _ in rows) + 2
    for title, rows in sections:
        out.print(title, style="bold", markup=False, soft_wrap=True)
        for name, text in rows:
            for line in entry_lines(name, text, column, width):
                out.print(line, markup=False, soft_wrap=True)


def entry_lines(name: str, text: str, column: int, width: int | None) -> list[str]:
    """`  name    text`, the text from `column` on, wrapped at word breaks to `width` (None: one line) with the
    continuation lines indented to `column`; never cut."""
    import textwrap

    head = f"  {name}".ljust(column)
    if width is None or not text:
        return [(head + text).rstrip()]
    return textwrap.wrap(
        text,
        width=max(width, column + 20),
        initial_indent=head,
        subsequent_indent=" " * column,
        break_long_words=False,
        break_on_hyphens=False,
    )


@app.command(epilog=_examples("summary"), short_help="One record per run, or with --by one row per group of runs.")
def summary(
    results: ResultsArg,
    format: Annotated[
        Format, typer.Option("--format", help="table, csv or json; with --by also markdown (median and range).")
    ] = Format.table,
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Group runs by this grid key (repeatable; a short name like `norm` will do): one row per group, "
            "status counts and mean, std, min and max over the group's ok runs.",
        ),
    ] = None,
    where: WhereOpt = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="With --by: show only this final number (repeatable), e.g. final_test_accuracy."),
    ] = None,
) -> None:
    """One record per run: status, diverged step, final losses (and accuracies), grid parameters, dead/saturated
    per layer. With --by: one row per group of runs."""
    from normbench.finals import FINALS
    from normbench.store import experiment_axes
    from normbench.views.summary import records_csv, summary_records, summary_table

    if not by and (format is Format.markdown or metric):
        raise fail(f"{'--format markdown' if format is Format.markdown else '--metric'} needs --by")
    for m in metric or []:
        if m not in FINALS:
            raise fail(f"--metric {m!r}: not a final number; choose from {', '.join(FINALS)}")
    selected = _select(_readable(results), where)
    exps = list(selected)
    if by:
        _summary_groups(exps, [k for item in by for k in item.split(",") if k], format, selected, metric)
        return
    records = [r for e in exps for r in summary_records(e) if _kept(selected[e], r["run_id"])]
    if format is Format.json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    elif format is Format.csv:
        sys.stdout.write(records_csv(records))
    else:
        for e in exps:
            recs = [r for r in records if r["experiment"] == e.name]
            out.print(summary_table(recs, experiment_axes(e), title=e.name))
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
    format: Format,
    selected: dict[Path, pd.DataFrame | None] | None = None,
    metrics: list[str] | None = None,
) -> None:
    import pandas as pd

    from normbench.store import load_runs
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
    tables = [aggregate_runs(e, k, (selected or {}).get(e)) for e, k in zip(exps, keys, strict=True)]
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
    if format is Format.json:
        sys.stdout.write(json.dumps([r for t in tables for r in aggregate_records(t)], indent=2) + "\n")
    elif format is Format.markdown:
        sys.stdout.write(aggregate_markdown([r for t in tables for r in aggregate_records(t)]))
    elif format is Format.csv:
        sys.stdout.write(aggregate_csv(pd.concat(tables, ignore_index=True)))
    else:
        for e, t in zip(exps, tables, strict=True):
            runs = (selected or {}).get(e)
            dropout = has_dropout(load_runs(e) if runs is None else runs, e)
            out.print(aggregate_table(t, title=e.name, dropout=dropout))


@app.command(epilog=_examples("plot"), short_help="Draw each experiment's figures.")
def plot(
    results: ResultsArg,
    format: Annotated[FigFormat, typer.Option("--format", help="png, svg or pdf.")] = FigFormat.png,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Grid key whose values are compared side by side, by dotted name or last part (default model.norm)."
        ),
    ] = None,
    point: Annotated[Point, typer.Option(help="Which values the histogram grids show.")] = Point.post_act,
    overlay: Annotated[
        bool,
        typer.Option(
            "--overlay", help="Also draw the compared runs on the same axes (overlay_<point>_<group>, beside grids)."
        ),
    ] = False,
    animate: Annotated[
        bool, typer.Option("--animate", help="Also write the histogram grid over training as a GIF.")
    ] = False,
    ridge: Annotated[
        bool, typer.Option("--ridge", help="Also draw every recorded step's histograms offset upwards (a ridge plot).")
    ] = False,
    where: WhereOpt = None,
) -> None:
    """Write the figures of each experiment to OUT/<name>/figures/ (OUT/<name>/figures/by-<key>/ with a --compare
    other than the default, a where-... folder inside it with --where)."""
    from rich.progress import Progress

    from normbench.labels import where_folder
    from normbench.views.render import plot_experiments

    selected = _select(_readable(results), where)
    exps = list(selected)
    # A run id is the hash of the run's config, so one set of ids serves every experiment.
    keep = {rid for runs in selected.values() if runs is not None for rid in runs.run_id}
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("drawing figures", total=None)
        paths = plot_experiments(
            exps,
            compare=compare,
            point=point.value,
            fmt=format.value,
            overlay=overlay,
            animate=animate,
            ridge=ridge,
            where=(lambda runs: runs.run_id.isin(keep)) if where else None,
            subdir=where_folder(where) if where else None,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for e in exps:
        mine = [p for p in paths if e in p.parents]
        err.print(f"{e.name}: {len(mine)} figures -> {mine[0].parent if mine else e / 'figures'}", markup=False)


@app.command(short_help="One self-contained HTML page of an experiment's results.")
def report(
    results: ResultsArg,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="The HTML file to write (default: DIR/report.html).", show_default=False),
    ] = None,
    where: WhereOpt = None,
) -> None:
    """One self-contained HTML page: final numbers over seeds, the figures, every run's status, engine and device,
    versions, the project's git commit and the resolved config. Figures are drawn unless DIR/<name>/figures/
    holds PNGs newer than the results."""
    from normbench.views.html import write_report

    selected = _select(_readable(results), where)  # a wrong folder or --where: one line before anything is drawn
    if out_file is not None and out_file.is_dir():
        raise fail(f"--out {out_file} is a folder; give the file to write, e.g. {out_file / 'report.html'}")
    path = write_report(results, out_file, console=err, where=where, selected=selected)
    err.print(f"report -> {path} ({path.stat().st_size / 1e6:.1f} MB)", soft_wrap=True, markup=False)


@app.command(short_help="Verify every run's files against their checksums, and the results format.")
def check(results: ResultsArg) -> None:
    """Verify each experiment's results format and every run folder against the sizes and checksums written when
    it was committed and the columns its format requires; exit 1 if an experiment is of another format or any run
    is damaged (`normbench run` trains damaged runs again)."""
    from normbench.store import (
        RESULTS_FORMAT,
        DamagedResults,
        check_experiment,
        check_format,
        config_problem,
        experiments_to_check,
        repair_runs_table,
    )

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
        out.print(f"{e.name}: results format {RESULTS_FORMAT}, {found}, {len(bad)} damaged", markup=False)
        for r in bad:
            out.print(f"  {e / 'runs' / r['run_id']} ({r['status']}): {'; '.join(r['problems'])}", markup=False)
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
    if damaged:
        raise typer.Exit(code=1)


@app.command(short_help="Write the results for another tool (TensorBoard).")
def export(
    results: ResultsArg,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="TensorBoard event files (pip install 'normbench[tensorboard]').")
    ] = False,
    logdir: Annotated[
        Path, typer.Option("--out", help="Log folder; each experiment goes to LOGDIR/<name>/, replaced.")
    ] = Path("tensorboard"),
) -> None:
    """Write every run's curves, layer statistics and histograms for another tool: --tensorboard writes one
    TensorBoard run per run (view with `tensorboard --logdir LOGDIR`)."""
    from normbench.views.export import export_tensorboard, summary_writer_class

    if not tensorboard:
        raise fail("say what to export: --tensorboard")
    summary_writer_class()  # the missing extra is one line, before any folder is read
    exps = _readable(results)
    for e in exps:
        rep = export_tensorboard(e, logdir)
        skipped = f", {rep.missing} not trained yet" if rep.missing else ""
        failed = f", {rep.failed} failed (status text only)" if rep.failed else ""
        runs = f"{rep.exported} run{'s' if rep.exported != 1 else ''}"
        err.print(f"{e.name}: {runs}{failed}{skipped} -> {rep.path}", soft_wrap=True, markup=False)
    err.print(f"view: tensorboard --logdir {logdir}", soft_wrap=True, markup=False)


@app.command(short_help="Check the source articles' claims against measured numbers.")
def claims(
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer grid values and epochs where a full experiment is long (minutes).")
    ] = False,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Results folder: experiments go to OUT/<name>/, the verdicts to OUT/claims.md."),
    ] = Path("results"),
    only: Annotated[
        list[str] | None, typer.Option("--only", metavar="ID", help="Check only this claim (repeatable).")
    ] = None,
    claims_file: Annotated[
        Path | None, typer.Option("--claims", help="Another claims file (default: the packaged configs/claims.yaml).")
    ] = None,
    kernel: KernelOpt = CheckKernel.auto,
) -> None:
    """Check every testable claim of the source articles against measured numbers: trains the runs that are
    missing, then prints one verdict per claim and setting (supported, not supported, inconclusive, not measured
    yet), writes OUT/claims.md and OUT/claims.json, and draws one figure per family of claims into OUT/figures/.
    Exit 0 whatever the verdicts."""
    from normbench.claims import run_claims

    run_claims(out_dir, quick=quick, only=only, path=claims_file, kernel=kernel.value, console=out, progress=err)


@app.command(short_help="Time the ways of training side by side.")
def bench(
    runs: Annotated[int, typer.Option(min=1, help="Runs (seeds) in the grid.")] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per run.")] = 251,
    repeat: Annotated[int, typer.Option(min=1, help="Time each way this many times, keep the best.")] = 1,
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="Also time the demo's training.")] = True,
) -> None:
    """Time the tutorial's 7x30 MLP grid several ways side by side (a plain PyTorch loop, its matmul floor, each
    kernel alone and stacked, eager and compiled, and `normbench run` as typed) and report the speed targets."""
    from normbench.bench import print_bench

    print_bench(runs, steps, repeat, out, demo)


@demo_app.command("dead-neurons", short_help="Morvan's batch-norm demonstration: run, draw, judge.")
def dead_neurons(
    out_dir: OutOpt = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="Re-run runs that already finished.")] = False,
    kernel: KernelOpt = CheckKernel.auto,
) -> None:
    """The tutorial's batch-norm demonstration: ReLU/tanh, with and without BN, 20 seeds each; runs, figures, and
    the verdicts of `normbench claims` on its claims. Writes OUT/demo.json and OUT/demo.md beside the experiments."""
    from normbench.demo import run_dead_neurons

    run_dead_neurons(out_dir, kernel=kernel.value, force=force, console=out)


def main() -> None:  # python -m normbench
    app()

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
from typing import Annotated

import typer
from rich.console import Console

from normbench.config import ConfigError, load_experiment, packaged_configs

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train grids of small networks and see what normalization layers do inside them.",
)
demo_app = typer.Typer(no_args_is_help=True, help="Reproduce a classic demonstration with one command.")
app.add_typer(demo_app, name="demo")

err = Console(stderr=True, highlight=False)
# Piped output (CI logs, files) gets wide tables instead of 80 columns of wrapped cells.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

ConfigArg = Annotated[str, typer.Argument(help="A YAML config file, or the name of a packaged config.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a dotted key, e.g. --set train.lr=0.01 or --set grid.seed=[1,2]."),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Results folder; the experiment goes to OUT/<name>/.")]
ResultsArg = Annotated[Path, typer.Argument(help="An experiment folder (OUT/<name>) or a results folder.")]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Executor(StrEnum):
    local = "local"
    dask = "dask"


class KernelName(StrEnum):
    auto = "auto"
    written_out = "written-out"
    autograd = "autograd"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class FigFormat(StrEnum):
    png = "png"
    svg = "svg"
    pdf = "pdf"


class Point(StrEnum):
    pre_norm = "pre_norm"
    post_norm = "post_norm"
    post_act = "post_act"
    all = "all"


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)  # plain: one line, never wrapped
    return typer.Exit(code=2)


def _load(config: str, overrides: list[str] | None):
    try:
        return load_experiment(config, overrides or [])
    except ConfigError as e:
        raise fail(str(e)) from None


def _experiments(path: Path) -> list[Path]:
    from normbench.store import find_experiments

    try:
        return find_experiments(path)
    except FileNotFoundError as e:
        raise fail(str(e)) from None


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    out_dir: OutOpt = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="Re-run runs that already finished.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Re-run runs recorded as failed.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Local worker processes of one thread each (default: one per core when the grid is large)."
        ),
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
        typer.Option(
            min=1, help="At most this many runs of one structure train together (1: each alone; default: 16)."
        ),
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
) -> None:
    """Train every run of CONFIG's grid that has not finished yet, recording what happens inside."""
    from normbench.sweep import run_experiment

    exp = _load(config, set_)
    if dry_run:
        _print_grid(exp, out_dir)
        return
    if executor is Executor.dask and not scheduler:
        raise fail("--executor dask needs --scheduler tcp://HOST:PORT (the address of a running Dask scheduler)")
    try:
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
    except ConfigError as e:  # data files or shapes found wrong before any training, or no scheduler
        raise fail(str(e)) from None
    counts = table.status.value_counts().to_dict()
    err.print("done: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" -> {out_dir / exp.name}")
    if counts.get("failed"):  # diverged is a result; failed is an error (see its summary.json), and scripts should know
        raise typer.Exit(code=1)


def _print_grid(exp, out_dir: Path) -> None:
    from rich.table import Table

    from normbench.store import ExperimentStore

    store = ExperimentStore(out_dir, exp.name)
    table = Table(title=f"{exp.name}: {len(exp.runs)} runs (dry run: nothing trained or written)", title_justify="left")
    for col in ("run id", *exp.axes, "state"):
        table.add_column(col)
    for run in exp.runs:
        s = store.summary(run.run_id)
        table.add_row(run.run_id, *(str(v) for v in run.params.values()), s["status"] if s else "to train")
    out.print(table)


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check CONFIG, load its data and build its models; print the size of its grid."""
    exp = _load(config, set_)
    from normbench.sweep import preflight

    try:
        preflight(exp)
    except ConfigError as e:
        raise fail(str(e)) from None
    axes = exp.config.axes()
    shape = " x ".join(f"{k} ({len(v)})" for k, v in axes.items()) or "no grid"
    out.print(f"{exp.source}: ok; experiment {exp.name!r}: {len(exp.runs)} runs = {shape}")


@app.command("list")
def list_() -> None:
    """What the registries hold and the packaged configs."""
    from normbench.registry import ACTIVATIONS, DATASETS, INITS, MODELS, NORMS, OPTIMIZERS

    for title, reg in (
        ("norms", NORMS),
        ("activations", ACTIVATIONS),
        ("inits", INITS),
        ("optimizers", OPTIMIZERS),
        ("datasets", DATASETS),
        ("models", MODELS),
    ):
        out.print(f"[bold]{title}[/]")
        for name in reg:
            out.print(f"  {name:<12} {reg.help(name)}")
    out.print("[bold]configs[/] (run by name, e.g. `normbench run morvan_tf23`)")
    for name in packaged_configs():
        out.print(f"  {name}")


@app.command()
def summary(
    results: ResultsArg,
    format: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
) -> None:
    """One record per run: status, diverged step, final losses, grid parameters, dead/saturated per layer."""
    from normbench.report import records_csv, summary_records, summary_table
    from normbench.store import DamagedResults, experiment_axes

    exps = _experiments(results)
    try:
        records = [r for e in exps for r in summary_records(e)]
    except DamagedResults as ex:
        raise fail(str(ex)) from None
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
            err.print(f"{e.name}: {missing} of {total} runs not finished yet (`normbench run` trains them)")


@app.command()
def plot(
    results: ResultsArg,
    format: Annotated[FigFormat, typer.Option("--format", help="png, svg or pdf.")] = FigFormat.png,
    compare: Annotated[
        str | None, typer.Option(help="Grid key whose values are compared side by side (default model.norm).")
    ] = None,
    point: Annotated[Point, typer.Option(help="Which values the histogram grids show.")] = Point.post_act,
) -> None:
    """Write the figures of each experiment to OUT/<name>/figures/."""
    from normbench.plot import PlotError, plot_experiment
    from normbench.store import DamagedResults

    for e in _experiments(results):
        try:
            paths = plot_experiment(e, compare=compare, point=point.value, fmt=format.value)
        except (PlotError, DamagedResults) as ex:
            raise fail(str(ex)) from None
        err.print(f"{e.name}: {len(paths)} figures -> {e / 'figures'}")


@app.command()
def check(results: ResultsArg) -> None:
    """Verify every run folder against the sizes and checksums written when it was committed; exit 1 if any run
    is damaged (`normbench run` trains damaged runs again)."""
    from normbench.store import check_experiment

    damaged = 0
    for e in _experiments(results):
        rows = check_experiment(e)
        bad = [r for r in rows if r["problems"]]
        damaged += len(bad)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r["status"] for r in rows).items()))
        out.print(f"{e.name}: {len(rows)} run folders ({counts}), {len(bad)} damaged")
        for r in bad:
            out.print(f"  {r['run_id']} ({r['status']}): {'; '.join(r['problems'])}")
    if damaged:
        raise typer.Exit(code=1)


@app.command()
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


@demo_app.command("dead-neurons")
def dead_neurons(
    out_dir: OutOpt = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="Re-run runs that already finished.")] = False,
) -> None:
    """The tutorial's batch-norm demonstration: ReLU/tanh, with and without BN; runs, figures and verdicts."""
    from normbench.demo import run_dead_neurons

    run_dead_neurons(out_dir, force=force, console=out)


def main() -> None:  # python -m normbench
    app()

"""Run an experiment's grid: every run not yet finished, each committed as it ends.

    table = run_experiment(load_experiment("configs/morvan_tf23.yaml"), out="results")
    table = run_experiment(exp, workers=2)                                    # local processes
    table = run_experiment(exp, executor="dask", scheduler="tcp://host:8786")  # a Dask cluster

An exception inside one run marks that run 'failed' (with its error) and the sweep goes on; a diverged run is
not a failure. Ctrl-C stops the sweep; the runs committed so far stay, and the next call resumes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from normbench.config import ConfigError, Experiment, Run, RunConfig
from normbench.data import DataError, build_dataset
from normbench.models import build_model
from normbench.store import ExperimentStore
from normbench.train import RunFailure, RunResult, resolve_device, total_steps, train_run


def run_experiment(
    exp: Experiment,
    out: Path | str = "results",
    *,
    force: bool = False,
    retry_failed: bool = False,
    workers: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    engine: str = "per-run",
    compile: bool = False,
    device: str = "cpu",
    console: Console | None = None,
) -> pd.DataFrame:
    """Train the runs of `exp` not finished yet and return runs.parquet's table.

    executor 'local' with workers 1 trains in this process (with a progress bar per step); workers N > 1 trains
    in N processes of one thread each; 'dask' sends each run to the Dask cluster at `scheduler`. In every case
    the runs' results come back here and are committed by this process alone, one atomic folder per run.
    engine 'stacked' trains the runs that share a structure as one stacked computation (stacked.py), a stack
    being the unit sent to a worker; runs it cannot stack use the per-run engine. engine 'auto' is 'stacked' on
    a GPU and 'per-run' (the reference) on the CPU. `compile` puts the stacked training step through
    torch.compile; `device` is 'cpu', 'cuda' or 'auto' (the GPU if PyTorch sees one), where each worker trains.
    """
    console = console or Console(stderr=True)
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    engine = ("stacked" if dev.type == "cuda" else "per-run") if engine == "auto" else engine
    if compile and engine != "stacked":
        raise ConfigError("--compile compiles the stacked engine's step: use it with --engine stacked")
    if compile and dev.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise ConfigError("--compile on the CPU needs a C++ compiler on the PATH (g++ or clang++) for torch.compile")
    preflight(exp)
    store = ExperimentStore(out, exp.name)
    store.prepare(exp)
    todo = [r for r in exp.runs if force or not store.is_done(r.run_id, retry_failed)]
    skipped = len(exp.runs) - len(todo)
    where = f"dask at {scheduler}" if executor == "dask" else f"{workers} worker process(es)" if workers > 1 else ""
    console.print(
        f"[bold]{exp.name}[/]: {len(exp.runs)} runs, {len(todo)} to train"
        + (f", {skipped} already finished (--force to redo)" if skipped else "")
        + (f" on {where}" if where else "")
        + f", {engine} engine{' (compiled)' if compile else ''} on {dev}"
        + f" -> {store.dir}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not todo) as bar:
        runs_task = bar.add_task("runs", total=len(todo))
        units = _units(todo, engine)
        options = {"compile": compile, "device": str(dev)}
        if executor == "local" and workers == 1:
            outcomes = _in_process(units, bar, options)
        else:
            outcomes = _elsewhere(units, workers, executor, scheduler, options)
        for run, outcome in outcomes:
            summary = store.write_run(run, outcome)
            bar.advance(runs_task)
            console.print(f"  {_label(run)}: {_outcome(summary)}", highlight=False)
    return store.write_runs_table(exp)


Outcome = RunResult | RunFailure


def _label(run: Run) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in run.params.items()) or run.run_id


Unit = tuple[list[Run], bool]  # runs trained together, and whether as one stack


def _units(todo: list[Run], engine: str) -> list[Unit]:
    if engine != "stacked":
        return [([r], False) for r in todo]
    from normbench.stacked import stack_groups, stackable

    stacks = [(group, True) for group in stack_groups([r for r in todo if stackable(r.config)])]
    return stacks + [([r], False) for r in todo if not stackable(r.config)]


def train_unit(
    configs: list[dict], stacked: bool, on_step=None, *, compile: bool = False, device: str = "cpu"
) -> list[Outcome]:
    """Train one unit where it lands (this process, a local worker, a Dask worker); configs travel as JSON-able
    data, failures come back as data. A stack that fails records the failure on each of its runs."""
    cfgs = [RunConfig.model_validate(c) for c in configs]
    if not stacked:
        return [attempt(c, on_step, device) for c in cfgs]
    from normbench.stacked import train_stacked

    try:
        return list(train_stacked(cfgs, on_step=on_step, compile=compile, device=device))
    except Exception as e:
        return [RunFailure.from_exception(e)] * len(cfgs)


def attempt(cfg: RunConfig, on_step=None, device: str = "cpu") -> Outcome:
    """Train one run; an exception becomes a RunFailure, so that one broken run is recorded as failed and the
    sweep goes on (and, in a worker, the failure comes back as data instead of dying in the worker's log)."""
    try:
        return train_run(cfg, on_step=on_step, device=device)
    except Exception as e:
        return RunFailure.from_exception(e)


def _payload(unit: Unit) -> tuple[list[dict], bool]:
    runs, stacked = unit
    return [r.config.model_dump(mode="json") for r in runs], stacked


def _in_process(units: list[Unit], bar: Progress, options: dict) -> Iterator[tuple[Run, Outcome]]:
    for runs, stacked in units:
        label = f"stack of {len(runs)} runs" if stacked else _label(runs[0])
        task = bar.add_task(f"  {label}", total=total_steps(runs[0].config, build_dataset(runs[0].config.data)))
        progress = lambda s, t=task: bar.update(t, completed=s)  # noqa: E731
        outcomes = train_unit(*_payload((runs, stacked)), on_step=progress, **options)
        bar.remove_task(task)
        yield from zip(runs, outcomes, strict=True)


def _elsewhere(
    units: list[Unit], workers: int, executor: str, scheduler: str | None, options: dict
) -> Iterator[tuple[Run, Outcome]]:
    if executor == "dask":
        try:
            from dask.distributed import Client, as_completed
        except ImportError:
            raise ConfigError("--executor dask needs Dask: pip install 'normbench[dask]'") from None
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(f"--scheduler {scheduler}: cannot reach a Dask scheduler ({e})") from None
        with client:
            futures = {
                client.submit(train_unit, *_payload(u), **options, key=f"normbench-{u[0][0].run_id}", pure=False): u[0]
                for u in units
            }
            for future in as_completed(futures):
                yield from zip(futures[future], future.result(), strict=True)
        return
    # 'spawn': a fresh interpreter per worker; forking a process whose OpenMP threads already ran can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(train_unit, *_payload(u), **options): u[0] for u in units}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield from zip(futures[future], future.result(), strict=True)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def preflight(exp: Experiment) -> None:
    """Load every data set and build every model of the grid once before training anything, so that missing or
    malformed data files and shapes that do not fit are one clear error up front, not N failed runs."""
    models: set[str] = set()
    for run in exp.runs:
        cfg = run.config
        try:
            data = build_dataset(cfg.data)
            if cfg.record.eval_split == "test" and data.x_test is None:
                raise ValueError("record.eval_split is 'test' but the data has no test split")
            key = cfg.model.model_dump_json() + str(data.input_shape)
            if key not in models:
                models.add(key)
                build_model(cfg.model, data.input_shape, data.out_features)
        except (DataError, ValueError) as e:
            point = ", ".join(f"{k}={v}" for k, v in run.params.items())
            raise ConfigError(f"{exp.source}: {e}" + (f" (grid point {point})" if point else "")) from None


def _outcome(s: dict) -> str:
    if s["status"] == "failed":
        return f"[red]failed[/]: {s['error']}"
    loss = s.get("final_train_loss")
    if s["status"] == "diverged":
        return f"[yellow]diverged at step {s['diverged_step']}[/] (loss non-finite)"
    return f"ok, final train loss {loss:.4g} ({s['wall_time_s']:.1f}s)"

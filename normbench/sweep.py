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
from normbench.train import RunFailure, RunResult, total_steps, train_run


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
    console: Console | None = None,
) -> pd.DataFrame:
    """Train the runs of `exp` not finished yet and return runs.parquet's table.

    executor 'local' with workers 1 trains in this process (with a progress bar per step); workers N > 1 trains
    in N processes of one thread each; 'dask' sends each run to the Dask cluster at `scheduler`. In every case
    the runs' results come back here and are committed by this process alone, one atomic folder per run.
    engine 'stacked' (in-process only) trains the runs that share a structure as one stacked computation
    (stacked.py); runs it cannot stack use the per-run engine.
    """
    console = console or Console(stderr=True)
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
        if engine == "stacked" and executor == "local" and workers == 1:
            outcomes = _stacked(todo, bar)
        elif executor == "local" and workers == 1:
            outcomes = _in_process(todo, bar)
        else:
            outcomes = _elsewhere(todo, workers, executor, scheduler)
        for run, outcome in outcomes:
            summary = store.write_run(run, outcome)
            bar.advance(runs_task)
            console.print(f"  {_label(run)}: {_outcome(summary)}", highlight=False)
    return store.write_runs_table(exp)


Outcome = RunResult | RunFailure


def _label(run: Run) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in run.params.items()) or run.run_id


def _in_process(todo: list[Run], bar: Progress) -> Iterator[tuple[Run, Outcome]]:
    for run in todo:
        steps_task = bar.add_task(f"  {_label(run)}", total=total_steps(run.config, build_dataset(run.config.data)))
        outcome = attempt(run.config, on_step=lambda s, t=steps_task: bar.update(t, completed=s))
        bar.remove_task(steps_task)
        yield run, outcome


def _stacked(todo: list[Run], bar: Progress) -> Iterator[tuple[Run, Outcome]]:
    from normbench.stacked import stack_groups, stackable, train_stacked

    alone = [r for r in todo if not stackable(r.config)]
    for group in stack_groups([r for r in todo if stackable(r.config)]):
        task = bar.add_task(
            f"  stack of {len(group)} runs", total=total_steps(group[0].config, build_dataset(group[0].config.data))
        )
        try:
            outcomes: list[Outcome] = list(
                train_stacked([r.config for r in group], on_step=lambda s, t=task: bar.update(t, completed=s))
            )
        except Exception as e:  # the whole stack failed: each of its runs is recorded as failed
            outcomes = [RunFailure.from_exception(e)] * len(group)
        bar.remove_task(task)
        yield from zip(group, outcomes, strict=True)
    yield from _in_process(alone, bar)


def attempt(cfg: RunConfig, on_step=None) -> Outcome:
    """Train one run; an exception becomes a RunFailure, so that one broken run is recorded as failed and the
    sweep goes on (and, in a worker, the failure comes back as data instead of dying in the worker's log)."""
    try:
        return train_run(cfg, on_step=on_step)
    except Exception as e:
        return RunFailure.from_exception(e)


def train_isolated(config: dict) -> Outcome:
    """One run in a worker (a local process or a Dask worker): the config travels as plain JSON-able data."""
    return attempt(RunConfig.model_validate(config))


def _elsewhere(todo: list[Run], workers: int, executor: str, scheduler: str | None) -> Iterator[tuple[Run, Outcome]]:
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
                client.submit(
                    train_isolated, r.config.model_dump(mode="json"), key=f"normbench-{r.run_id}", pure=False
                ): r
                for r in todo
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
        return
    # 'spawn': a fresh interpreter per worker; forking a process whose OpenMP threads already ran can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(train_isolated, r.config.model_dump(mode="json")): r for r in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
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

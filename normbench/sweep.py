"""Run an experiment's grid: every run not yet finished, one after another, each committed as it ends.

    table = run_experiment(load_experiment("configs/morvan_tf23.yaml"), out="results")

An exception inside one run marks that run 'failed' (with its error) and the sweep goes on; a diverged run is
not a failure. Ctrl-C stops the sweep; the runs committed so far stay, and the next call resumes.
"""

from __future__ import annotations

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

from normbench.config import ConfigError, Experiment
from normbench.data import DataError, build_dataset
from normbench.models import build_model
from normbench.store import ExperimentStore
from normbench.train import total_steps, train_run


def run_experiment(
    exp: Experiment,
    out: Path | str = "results",
    *,
    force: bool = False,
    retry_failed: bool = False,
    console: Console | None = None,
) -> pd.DataFrame:
    console = console or Console(stderr=True)
    preflight(exp)
    store = ExperimentStore(out, exp.name)
    store.prepare(exp)
    todo = [r for r in exp.runs if force or not store.is_done(r.run_id, retry_failed)]
    skipped = len(exp.runs) - len(todo)
    console.print(
        f"[bold]{exp.name}[/]: {len(exp.runs)} runs, {len(todo)} to train"
        + (f", {skipped} already finished (--force to redo)" if skipped else "")
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
        for run in todo:
            label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in run.params.items()) or run.run_id
            steps_task = bar.add_task(f"  {label}", total=total_steps(run.config, build_dataset(run.config.data)))
            try:
                result = train_run(run.config, on_step=lambda s, t=steps_task: bar.update(t, completed=s))
                summary = store.write_run(run, result)
            except Exception as e:  # one broken run must not stop the sweep; it is recorded as failed
                summary = store.write_run(run, None, error=e)
            bar.remove_task(steps_task)
            bar.advance(runs_task)
            console.print(f"  {label}: {_outcome(summary)}", highlight=False)
    return store.write_runs_table(exp)


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

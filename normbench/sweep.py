"""Run an experiment's grid: every run not yet finished, each committed as it ends.

    table = run_experiment(load_experiment("configs/morvan_tf23.yaml"), out="results")
    table = run_experiment(exp, "results", SweepOptions(workers=2))           # 2 local processes
    table = run_experiment(exp, "results", SweepOptions(executor="dask", scheduler="tcp://host:8786"))  # Dask

An exception inside one run marks that run 'failed' (with its error) and the sweep goes on; a diverged run is
not a failure. runs.parquet is rewritten after every committed run, so `summary` and `plot` work on a sweep in
progress or stopped. Ctrl-C stops the sweep; the runs committed so far stay, and the next call resumes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from normbench.engine import (
    Plan,
    PlanError,
    RunFailure,
    RunResult,
    Unit,
    kernel_for,
    make_plan,
    resolve_device,
    total_steps,
    train_stack,
)
from normbench.engine.plan import memory_available, memory_needed
from normbench.labels import settings
from normbench.nn.models import build_model
from normbench.results import FINISHED, RESULTS_FORMAT, run_format
from normbench.safe import esc
from normbench.store import ExperimentStore, FolderChange

_COLUMNS = (  # the progress bars
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
    TextColumn("eta"),
    TimeRemainingColumn(),
)


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep trains (`normbench run`'s options; run_experiment says what each does)."""

    force: bool = False  # train every run again, finished or not
    retry_failed: bool = False  # train the runs recorded as failed again
    workers: int | None = None  # local worker processes (None: one per core when the grid is large enough)
    executor: str = "local"  # 'local' or 'dask'
    scheduler: str | None = None  # the Dask scheduler's address, with executor 'dask'
    kernel: str = "auto"  # 'auto', or a name of engine.KERNELS
    stack: int | None = None  # at most this many runs of one structure train together
    compile: bool | None = None  # compile the written-out kernel's step (None: when it pays back)
    device: str = "cpu"  # 'cpu', 'cuda' or 'auto'


@dataclass(frozen=True)
class _Found:
    """What the folder holds of the runs a sweep is asked for, read once when it starts."""

    found: dict[str, dict | None]  # run id -> its summary (None: not committed, or damaged)
    todo: list[Run]  # the runs to train
    damaged_ids: set[str]  # runs of `todo` whose folders are damaged, moved aside before training
    damaged: int  # how many finished runs are trained again for damaged files
    older: int  # how many finished runs are trained again for another results format


@dataclass(frozen=True)
class _Job:
    """What one sweep trains and where it commits it: _train_and_commit's arguments."""

    exp: Experiment
    store: ExperimentStore
    plan: Plan
    steps_of: dict[str, int]  # run id -> training steps (the progress bars)
    found: dict[str, dict | None]  # the runs' summaries when the sweep started
    listed: list[tuple[str, dict]] | None  # the runs runs.parquet lists when not exp's
    client: Any  # a Dask client, or None
    device: str
    console: Console

    @property
    def todo(self) -> list[Run]:
        return [run for unit in self.plan.units for run in unit.runs]


def run_experiment(
    exp: Experiment,
    out: Path | str = "results",
    options: SweepOptions = SweepOptions(),  # frozen: one shared default is safe
    *,
    console: Console | None = None,
) -> pd.DataFrame:
    """Train the runs of `exp` not finished yet and return runs.parquet's rows of exp's runs.

    The folder OUT/<name> keeps what it holds (ExperimentStore.change): a grid that extends the folder's becomes
    its config, one within it trains what is missing and leaves the folder's config and list as they are, and one
    that would no longer list some of the folder's runs, or a folder of another results format (unless
    `options.force`, which trains every run again in this format), is a ConfigError before anything is written.

    The plan (engine/plan.py) groups the runs into stacks of one structure (at most `options.stack` runs; 1 trains
    each run alone), each trained by one call of the driver on `options.kernel` ('auto': the written-out kernel
    where it supports the config, else autograd), compiled or not (`options.compile` None: when it pays back).
    executor 'local' trains the stacks in this process (workers 1, with a progress bar per step) or in worker
    processes of one thread each (workers None: one per core when the grid is large enough); 'dask' sends each
    stack to the Dask cluster at `options.scheduler`. In every case the results come back here and are committed
    by this process alone, one atomic folder per run. `options.device` is 'cpu', 'cuda' or 'auto' (the GPU if
    PyTorch sees one).
    """
    console = console or Console(stderr=True)
    try:
        dev = resolve_device(options.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    preflight(exp)
    store = ExperimentStore(out, exp.name)
    change = store.change(exp, force=options.force)
    state = _read_folder(exp, store, change, options)
    steps_of = {r.run_id: total_steps(r.config, build_dataset(r.config.data)) for r in state.todo}
    plan = _plan(state.todo, steps_of, options, dev.type)  # checked before anything is written
    if change.case == "refused":
        raise ConfigError(change.message)
    client = _dask_client(options.scheduler) if options.executor == "dask" and state.todo else None
    try:
        store.prepare(exp, keep_config=change.case == "within")
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write the results there ({e.strerror or e})") from None
    claimed = [r for r in state.todo if store.claim(r.run_id)]  # runs another `normbench run` trains are left to it
    try:
        if len(claimed) < len(state.todo):  # the stacks of the runs left to this process
            plan = _plan(claimed, steps_of, options, dev.type)
        job = _Job(exp, store, plan, steps_of, state.found, change.listed, client, str(dev), console)
        _say_what_it_does(job, change, state, options)
        if not options.force:
            _move_aside([r.run_id for r in claimed if r.run_id in state.damaged_ids], store, console)
        _train(job, busy=len(state.todo) - len(claimed))
    finally:
        for run in claimed:
            store.release(run.run_id)
    table = store.write_runs_table(exp, listed=change.listed)  # read back: another invocation may have committed
    mine = {r.run_id for r in exp.runs}
    return table if change.listed is None else table[table.run_id.isin(mine)].reset_index(drop=True)


def _read_folder(exp: Experiment, store: ExperimentStore, change: FolderChange, options: SweepOptions) -> _Found:
    """Every summary.json of the runs asked for and of those the folder lists, read once: which runs to train, and
    which of them finished with damaged files or in another results format."""
    ids = [r.run_id for r in exp.runs] + [rid for rid, _ in change.listed or []]
    read = {rid: store.read_summary(rid) for rid in dict.fromkeys(ids)}
    found = {rid: summary for rid, (summary, _) in read.items()}
    todo = [
        r
        for r in exp.runs
        if options.force or not store.is_done(r.run_id, retry_failed=options.retry_failed, summary=found[r.run_id])
    ]
    finished = [found[r.run_id] for r in todo if (found[r.run_id] or {}).get("status") in FINISHED]
    finished = [] if options.force else finished
    older = sum(run_format(s) != RESULTS_FORMAT for s in finished)  # trained again in this format
    # A run folder whose summary.json is damaged (unreadable, of the wrong shape) is a run not finished.
    unreadable = {r.run_id for r in todo if read[r.run_id][1]}
    damaged_ids = unreadable | {
        r.run_id
        for r in todo
        if (found[r.run_id] or {}).get("status") in FINISHED and run_format(found[r.run_id]) == RESULTS_FORMAT
    }
    return _Found(found, todo, damaged_ids, damaged=len(finished) - older + len(unreadable), older=older)


def _plan(runs: list[Run], steps_of: dict[str, int], options: SweepOptions, device_type: str) -> Plan:
    """The plan of `runs` under the sweep's options (on Dask, one worker unless told: the cluster decides where
    units run); a plan that cannot be had is a ConfigError."""
    workers = 1 if options.executor == "dask" and options.workers is None else options.workers
    try:
        return make_plan(
            runs,
            steps_of,
            kernel=options.kernel,
            stack=options.stack,
            workers=workers,
            compile=options.compile,
            device_type=device_type,
        )
    except PlanError as e:
        raise ConfigError(str(e)) from None


def _say_what_it_does(job: _Job, change: FolderChange, state: _Found, options: SweepOptions) -> None:
    """The lines a sweep starts with: what it does to the folder, how many runs it trains and how, and the
    finished runs kept from another kernel."""
    exp, todo, console = job.exp, job.todo, job.console
    busy = len(state.todo) - len(todo)
    skipped = len(exp.runs) - len(todo) - busy
    where = f" on dask at {options.scheduler}" if options.executor == "dask" else ""
    if change.case in ("extends", "within", "retrain"):
        console.print(change.message, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"[bold]{esc(exp.name)}[/]: {len(exp.runs)} runs, {len(todo)} to train"
        + (f", {skipped} already finished (--force to redo)" if skipped else "")
        + (f", {busy} being trained by another normbench run" if busy else "")
        + (f", {state.damaged} of them finished but with damaged files" if state.damaged else "")
        + (f", {state.older} of them finished in another results format" if state.older else "")
        + (f": {esc(job.plan.describe())}{esc(where)}, {job.device}" if todo else "")
        + f" -> {esc(job.store.dir)}"
    )
    _say_other_kernels(exp.runs, todo, state.found, options.kernel, console)


def _train(job: _Job, *, busy: int) -> None:
    """_train_and_commit, with Ctrl-C turned into SweepInterrupted saying what was saved (`busy`: the runs another
    `normbench run` trains)."""
    committed: list[str] = []
    try:
        _train_and_commit(job, committed)
    except KeyboardInterrupt:
        total, store = len(job.exp.runs), job.store
        kept = total - len(job.todo) - busy + len(committed)
        raise SweepInterrupted(
            f"interrupted: {len(committed)} runs of this sweep were saved ({kept} of {total} finished in "
            f"{store.dir}); running the same command again resumes with the {total - kept} others"
        ) from None


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep (a KeyboardInterrupt still): the message says how many runs were saved and how to
    resume."""


class SweepStopped(ConfigError):
    """The cluster the sweep ran on went away: one line saying what was kept and how to resume."""


def _move_aside(run_ids: list[str], store: ExperimentStore, console) -> None:
    """Move the damaged run folders that are about to be trained again to runs/.damaged-<id>-<time>, so that
    nothing a user may have put there is deleted; one line says so."""
    if not run_ids:
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved = []
    for rid in run_ids:
        src = store.runs_dir / rid
        if src.exists():
            with contextlib.suppress(OSError):  # one that cannot be moved is replaced whole when committed
                os.rename(src, store.runs_dir / f".damaged-{rid}-{stamp}")
                moved.append(rid)
    if moved:
        console.print(
            f"  {len(moved)} damaged run folder{'s' * (len(moved) > 1)} moved aside to "
            f"{store.runs_dir / f'.damaged-<id>-{stamp}'} and trained again (remove them once not needed)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _train_and_commit(job: _Job, committed: list[str]) -> None:
    """Train the job's plan and commit each run as its outcome arrives, runs.parquet after each. `committed`: gets
    the id of each run committed."""
    store, plan, todo, console = job.store, job.plan, job.todo, job.console
    known = dict(job.found)
    try:
        store.write_runs_table(job.exp, known, job.listed)  # summary and plot work from the first committed run on
    except OSError as e:
        raise ConfigError(f"cannot write {store.dir / 'runs.parquet'} ({e.strerror or e})") from None
    with Progress(*_COLUMNS, console=console, transient=True, disable=not todo) as bar:
        runs_task = bar.add_task("runs", total=len(todo))
        if job.client is None and plan.workers == 1:
            outcomes = _in_process(plan.units, bar, job.steps_of, job.device)
        else:
            outcomes = _elsewhere(plan.units, plan.workers, job.client, job.device)
        for run, outcome in outcomes:
            try:
                known[run.run_id] = store.write_run(run, outcome)
                committed.append(run.run_id)
                store.write_runs_table(job.exp, known, job.listed)
            except OSError as e:
                raise ConfigError(
                    f"cannot write run {run.run_id} under {store.dir} ({e.strerror or e}); "
                    "the runs committed before it are kept"
                ) from None
            bar.advance(runs_task)
            console.print(f"  {esc(_label(run))}: {_outcome(known[run.run_id])}", highlight=False)


Outcome = RunResult | RunFailure


def _label(run: Run) -> str:
    return settings(run.params, tuple(run.params.values()), sep=" ") or run.run_id


def _say_other_kernels(runs: list[Run], todo: list[Run], found: dict, kernel: str, console) -> None:
    """A results folder never mixes kernels silently: finished runs kept from another kernel are named."""
    pending = {r.run_id for r in todo}
    other: dict[str, int] = {}
    for run in runs:
        s = found[run.run_id]
        if run.run_id in pending or s is None or s.get("status") == "failed":
            continue
        had = (s.get("engine") or {}).get("kernel", "an older engine")
        try:
            now = kernel_for(run.config, kernel)
        except PlanError:
            now = kernel
        if had != now:
            other[had] = other.get(had, 0) + 1
    for had, n in other.items():
        console.print(
            f"  [yellow]{n} finished run(s) were trained by {esc(had)}, not the kernel this invocation uses; kept "
            "(--force retrains them)[/]"
        )


def train_unit(configs: list[dict], kernel: str, *, compile: bool, on_step=None, device: str = "cpu") -> list[Outcome]:
    """Train one unit where it lands (this process, a local worker, a Dask worker); configs travel as JSON-able
    data, failures come back as data. When a stack fails, its runs are trained again one by one, so that one
    broken run is recorded as failed (with its error) and the others are not."""
    try:
        cfgs = [RunConfig.model_validate(c) for c in configs]
        return list(train_stack(cfgs, on_step, kernel=kernel, compile=compile, device=device))
    except Exception as e:
        if len(configs) == 1:
            return [RunFailure.from_exception(e)]
    return [train_unit([c], kernel, compile=compile, on_step=on_step, device=device)[0] for c in configs]


def _payload(unit: Unit) -> dict[str, Any]:
    """train_unit's arguments for `unit`, as data a worker process or a Dask worker receives."""
    return {
        "configs": [r.config.model_dump(mode="json") for r in unit.runs],
        "kernel": unit.kernel,
        "compile": unit.compile,
    }


def _in_process(
    units: list[Unit], bar: Progress, steps_of: dict[str, int], device: str
) -> Iterator[tuple[Run, Outcome]]:
    for unit in units:
        label = f"stack of {len(unit.runs)} runs" if len(unit.runs) > 1 else _label(unit.runs[0])
        task = bar.add_task(f"  {esc(label)}", total=steps_of[unit.runs[0].run_id])
        progress = lambda s, t=task: bar.update(t, completed=s)  # noqa: E731
        outcomes = train_unit(**_payload(unit), on_step=progress, device=device)
        bar.remove_task(task)
        yield from zip(unit.runs, outcomes, strict=True)


def _dask_client(scheduler: str | None):
    """A client of the Dask scheduler, or one line saying why there is none."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise ConfigError("--executor dask needs Dask: pip install 'normbench[dask]'") from None
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"--scheduler {scheduler}: cannot reach a Dask scheduler ({e})") from None


def _elsewhere(units: list[Unit], workers: int, client, device: str) -> Iterator[tuple[Run, Outcome]]:
    if client is not None:
        import logging

        # distributed logs every failed reconnection with its traceback; a lost scheduler is one line (_on_dask)
        names = ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]
        levels = {n: logging.getLogger(n).level for n in names}
        for n in names:
            logging.getLogger(n).setLevel(logging.CRITICAL + 1)
        try:
            with client:
                yield from _on_dask(units, client, device)
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)
        return
    yield from _on_local_workers(units, workers, device)


DASK_NO_WORKER_S = 60.0  # a Dask cluster without any worker for this long ends the sweep


def _on_dask(units: list[Unit], client, device: str) -> Iterator[tuple[Run, Outcome]]:
    """Units on a Dask cluster, as they finish. When the cluster has had no worker for DASK_NO_WORKER_S seconds
    (every worker died, none came back), the sweep ends with one line; the runs finished before are kept."""
    from dask.distributed import wait

    futures = {
        client.submit(train_unit, **_payload(u), device=device, key=f"normbench-{u.runs[0].run_id}", pure=False): u.runs
        for u in units
    }
    pending, alone_since = set(futures), None
    while pending:
        done: set = set()
        try:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            results = [(future, future.result()) for future in done]
            has_workers = bool(client.scheduler_info().get("workers"))
        except Exception as e:  # the scheduler died or the connection to it was lost: results cannot come back
            left = sum(len(futures[f]) for f in pending | done)
            raise SweepStopped(
                f"lost the Dask scheduler ({type(e).__name__}); {left} runs were not trained; the finished ones are "
                "kept: run the same command again once the scheduler is back to resume"
            ) from None
        for future, outcome in results:
            yield from zip(futures[future], outcome, strict=True)
        if has_workers:
            alone_since = None
        elif pending:
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > DASK_NO_WORKER_S:
                left = sum(len(futures[f]) for f in pending)
                raise ConfigError(
                    f"the Dask cluster has had no worker for {DASK_NO_WORKER_S:.0f} s; {left} runs were not trained "
                    "(the finished ones are kept: run again once workers are back)"
                )


WORKER_ATTEMPTS = 3  # a unit whose worker process died is sent again, up to this many times in all


def _on_local_workers(units: list[Unit], workers: int, device: str) -> Iterator[tuple[Run, Outcome]]:
    """Units on `workers` spawned processes. A worker that dies (killed, out of memory) breaks the pool: the units
    that were in flight are sent again to a fresh pool, each at most WORKER_ATTEMPTS times, then recorded as
    failed; the finished ones are kept and the others go on."""
    attempts = dict.fromkeys(range(len(units)), 0)
    pending = list(range(len(units)))
    while pending:
        lost = yield from _pool_round(units, pending, workers, device, attempts)
        pending = []
        for i in lost:
            if attempts[i] >= WORKER_ATTEMPTS:
                failure = RunFailure(f"worker died {attempts[i]} times (killed by a signal or out of memory)", "")
                yield from ((run, failure) for run in units[i].runs)
            else:
                pending.append(i)


def _pool_round(units, indices, workers, device, attempts):
    """One pool over the units `indices`; yields their outcomes; returns the indices lost to a dead worker."""
    # 'spawn': a fresh interpreter per worker; forking a process whose OpenMP threads already ran can hang.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),))
    lost: list[int] = []
    try:
        futures = {}
        # The workers start as the units are submitted: without the caller's __main__, with Ctrl-C ignored (the
        # parent stops them: _stop_workers).
        with _callers_main_hidden(), _sigint_ignored():
            for i in indices:
                attempts[i] += 1
                futures[pool.submit(train_unit, **_payload(units[i]), device=device)] = i
        for future in concurrent.futures.as_completed(futures):
            try:
                outcomes = future.result()
            except BrokenProcessPool:
                lost.append(futures[future])
                continue
            yield from zip(units[futures[future]].runs, outcomes, strict=True)
    except BaseException:  # Ctrl-C, or a failed commit: the workers are stopped now, not after their stacks
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    return lost


@contextmanager
def _callers_main_hidden() -> Iterator[None]:
    """Spawned workers run normbench's own functions, so they need not import the caller's __main__ again, and
    must not: `python -` has no file to import, and a script or notebook that calls normbench.run without an
    `if __name__ == "__main__":` guard would run again in every worker. Spawn prepares a worker from __main__'s
    __spec__ or __file__; while the workers start, __main__ has neither."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    spec, file = getattr(main, "__spec__", None), main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


@contextmanager
def _sigint_ignored():
    """SIGINT ignored while worker processes start: an ignored signal stays ignored across exec, and Python keeps
    it so, so a Ctrl-C at the terminal (sent to every process of the group) reaches only the parent, which stops
    the workers; none prints a KeyboardInterrupt traceback, not even one still importing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool's worker processes at once (their units are not committed) and let the pool go."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(timeout=5)


def _exit_with(parent: int) -> None:
    """A worker's initializer: end this process when the sweep that started it is gone (killed with -9, say),
    instead of living on with its memory."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (_stop_workers)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


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
                if cfg.model.name == "cnn" and len(data.input_shape) != 3:
                    raise ValueError(
                        f"model cnn needs images (channels, height, width), but data {cfg.data.name} gives inputs of "
                        f"shape {data.input_shape}: use model.name mlp, or an image data set"
                    )
                _fits_in_memory(cfg, data)
                build_model(cfg.model, data.input_shape, data.out_features)
        except (DataError, ValueError) as e:
            point = ", ".join(f"{k}={v}" for k, v in run.params.items())
            raise ConfigError(f"{exp.source}: {e}" + (f" (grid point {point})" if point else "")) from None


def _fits_in_memory(cfg: RunConfig, data) -> None:
    largest = max(len(data.x_train), len(data.x_test) if data.x_test is not None else 0)
    need, have = memory_needed(cfg, data.input_shape, largest, data.out_features), memory_available()
    if need > have:
        raise ValueError(
            f"one run of this model needs at least {need / 2**30:.3g} GiB (parameters, gradients, optimizer state and "
            f"the values of a pass over {largest} samples), more than the {have / 2**30:.3g} GiB this machine has free"
        )


def _outcome(s: dict) -> str:
    if s["status"] == "failed":
        return f"[red]failed[/]: {esc(s['error'])}"
    loss = s.get("final_train_loss")
    if s["status"] == "diverged":
        return f"[yellow]diverged at step {s['diverged_step']}[/] (loss non-finite)"
    return f"ok, final train loss {loss:.4g} ({s['wall_time_s']:.1f}s)"

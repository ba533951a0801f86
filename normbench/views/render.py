"""`normbench plot`: the figures of the table (views/figures.py) drawn into files, in parallel worker processes.

    paths = plot_experiments([Path("results/morvan_tf23")], compare="model.norm", point="post_act", fmt="png")

Each figure is a Job (the experiment's index, the figure, its file); the experiments' tables are loaded once,
before a fork pool starts, and the workers inherit them (_EXPERIMENTS). Each file is written whole or not at all
(store.write_file_atomic).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from normbench.results import default_compare
from normbench.store import remove_stale_temps, write_file_atomic
from normbench.views.data import ExperimentData, NoSuchFigure, read_experiment
from normbench.views.figures import Figure, planned
from normbench.views.style import DPI, close_figure


@dataclass(frozen=True)
class Job:
    """One figure to draw: the experiment's index in _EXPERIMENTS, the figure, its file."""

    exp: int
    figure: Figure
    path: Path


_EXPERIMENTS: list[ExperimentData] = []  # read by forked workers: set before the pool starts


def plot_experiment(
    exp_dir: Path, compare: str | None = None, point: str = "post_act", fmt: str = "png", **kw: Any
) -> list[Path]:
    return plot_experiments([exp_dir], compare=compare, point=point, fmt=fmt, **kw)


def plot_experiments(
    exp_dirs: list[Path],
    compare: str | None = None,
    point: str = "post_act",
    fmt: str = "png",
    *,
    overlay: bool = False,
    animate: bool = False,
    ridge: bool = False,
    where: Callable[[pd.DataFrame], pd.Series] | None = None,
    subdir: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Every figure of every experiment, into DIR/figures/ (DIR/figures/by-<key>/ for a --compare other than the
    default). `where(runs) -> mask` keeps some runs; their figures go to a `subdir` of that folder when given, so
    that the figures of every run stay. Returns the paths written, in a stable order (views.figures.planned's)."""
    experiments = [read_experiment(d, compare, where) for d in exp_dirs]
    options = tuple(name for name, on in (("overlay", overlay), ("ridge", ridge), ("animate", animate)) if on)
    jobs: list[Job] = []
    for i, exp in enumerate(experiments):
        figures = planned(exp, point, options)
        out = figure_dir(exp, subdir)
        jobs += [Job(i, f, out / f.path(fmt)) for f in figures]
    with _loaded(experiments):
        # The costliest kinds first, so that the workers finish together; the paths come back in job order.
        order = sorted(range(len(jobs)), key=lambda k: jobs[k].figure.spec.rank)
        paths = _render([jobs[k] for k in order], workers, progress)
        return [paths[order.index(k)] for k in range(len(jobs))]


@contextmanager
def _loaded(experiments: list[ExperimentData]) -> Iterator[None]:
    """The experiments the jobs' indices refer to (_EXPERIMENTS, which forked workers inherit), inside only."""
    global _EXPERIMENTS
    _EXPERIMENTS = experiments
    try:
        yield
    finally:
        _EXPERIMENTS = []


def draw_figure(
    exp_dir: Path,
    figure: str,
    path: Path,
    *,
    compare: str | None = None,
    where: Callable[[pd.DataFrame], pd.Series] | None = None,
) -> Path:
    """One of the figures `normbench plot` draws for an experiment, written to `path` (its format from the suffix):
    `figure` is the name plot gives its file, without the extension ('cost', 'final_vs_lr', 'grad_all'). Nothing
    else is drawn, and the experiment's figures folder is left as it is. PlotError naming the experiment's figures
    when it has none of that name."""
    exp = read_experiment(exp_dir, compare, where)
    figures = planned(exp)
    found = [f for f in figures if f.stem == figure]
    if not found:
        names = ", ".join(f.stem for f in figures)
        raise NoSuchFigure(f"{exp.name} has no figure {figure!r}; its figures: {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _loaded([exp]):
        return _draw(Job(0, found[0], path))  # a figure there before stays whole until this one is


def figure_dir(exp: ExperimentData, subdir: str | None = None, *, empty: bool = True) -> Path:
    """The folder of an experiment's figures: DIR/figures[/by-<compare>][/<subdir>], created, emptied of an earlier
    plot's files unless `empty` is False."""
    out = exp.dir / "figures"
    if exp.compare != default_compare(exp.axes):
        out = out / f"by-{exp.compare}"
    if subdir:
        out = out / subdir
    if not empty:
        return out
    if out.exists():  # figures of an earlier plot would mislead: this folder holds this plot's figures only
        for old in out.iterdir():
            if old.is_file():
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _render(jobs: list[Job], workers: int | None, progress: Callable[[int, int], None] | None) -> list[Path]:
    workers = workers if workers is not None else min(len(os.sched_getaffinity(0)), 4)
    done = 0
    if progress:
        progress(0, len(jobs))
    if workers <= 1 or len(jobs) < 4 or "fork" not in multiprocessing.get_all_start_methods():
        for job in jobs:
            _draw(job)
            done += 1
            if progress:
                progress(done, len(jobs))
        return [j.path for j in jobs]
    # fork: workers inherit the loaded tables; each figure's arguments are a few small values
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_draw, jobs):
                done += 1
                if progress:
                    progress(done, len(jobs))
    except BaseException:
        # One figure failed (a full disk, Ctrl-C): the pool terminated the other workers, perhaps mid-write; their
        # temporary files name processes now gone.
        for folder in {j.path.parent for j in jobs}:
            remove_stale_temps(folder)
        raise
    return [j.path for j in jobs]


def _draw(job: Job) -> Path:
    """Draw one figure into a temporary file beside its target, renamed over it once whole (write_file_atomic): a
    full disk or a Ctrl-C leaves the figure there before (or none), never a cut or empty file a report would embed."""
    exp = _EXPERIMENTS[job.exp]
    draw, args = job.figure.spec.draw, job.figure.args()

    def write(tmp: Path) -> None:
        if job.figure.spec.suffix == "gif":  # an animation saves itself
            draw(exp, **args, path=tmp)
            return
        fig = draw(exp, **args)
        if fig is not None:
            try:
                fig.savefig(tmp, dpi=DPI)
            finally:
                close_figure(fig)

    try:
        # The suffix stays last: matplotlib and Pillow take the format from it.
        write_file_atomic(job.path, write, keep_suffix=True)
    except OSError as e:
        if not e.filename or Path(e.filename).name.startswith(f".{job.path.name}.tmp-"):  # savefig's own writes
            e.filename = str(job.path)
        raise
    return job.path

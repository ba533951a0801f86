"""Figures from a results folder, each making one point.

    paths = plot_experiments([Path("results/morvan_tf23")], compare="model.norm", point="post_act", fmt="png")

Runs are grouped by every grid key except the compared one and `seed`: one figure set per group (e.g. per
activation). Per experiment:

    cost.png               loss curves, one panel per group (as square a grid as 3 columns allow), the seeds that
                           did not diverge as mean and min-max band (they set the y range), diverged seeds apart
    final_vs_<key>.png     final numbers against each numeric grid key (batch size, weight scale, lr)
Per group:
    hist_<point>_<g>.png   the histogram grid of one seed at the first and the last recorded step: rows = compared
                           runs x {first, last}, columns = layers
    overlay_<point>_<g>.png  (--overlay) the same with the compared runs on the same axes, as outlines
    ridge_<point>_<g>.png  (--ridge) the histograms of one seed at every recorded step, offset upwards
    dist_<g>.png           distributions over training: the 1/20/50/80/99th percentiles of the stored histograms
                           against the step, columns = layers, rows = points x compared runs, each panel its own
                           y range (Glorot & Bengio 2010)
    grad_<g>.png           per-layer gradient norms over training (backpropagated dL/dz and weight gradient)
    units_<g>.png          dead units and saturated values, layer x step, and every seed's values at the end
    landscape_<g>.png      (record.landscape_every) the loss range, gradient change and beta-smoothness along the
                           gradient against the step (Santurkar et al. 2018, fig. 4)
    running_<g>.png        (record.running_stats) the running statistics' error per layer, and the training-set
                           loss in train mode, eval mode and, with record.precise_bn, with precise statistics
    anim_<point>_<g>.gif   (--animate) the histogram grid at every recorded step, one frame each

Nothing is left out silently: values outside a histogram's range and NaN/inf are drawn as bars at the panel's
edges; what a diverged run recorded at its divergence step and later is never drawn as data (before_divergence):
its panels or steps from there on say "diverged at step k"; every figure of one seed per compared value says how
far the other seeds are from it (or draws their range); every histogram figure says on which split and in which
mode (batch or running statistics) its values were taken, and, in eval mode, that at step 0 batch norm's running
statistics are still their initial values.

Figures of several experiments render in parallel worker processes (fork: the tables are loaded once, before).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import textwrap
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.errors import UserError
from normbench.points import ALL as ALL_POINTS
from normbench.points import FORWARD as FORWARD_POINTS
from normbench.points import WORDS as POINT_WORDS
from normbench.report import landscape_summary
from normbench.results import (
    FINISHED,
    SelectionError,
    default_compare,
    experiment_axes,
    experiment_axis_groups,
    folder_config,
    group_keys,
    group_slug,
    load_runs,
    load_table,
    resolve_axis,
    show_value,
    tied_with,
)
from normbench.store import remove_stale_temps, write_file_atomic

# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OUT_OF_RANGE = "#8c8c8c"
BROKEN = "#D55E00"  # NaN / inf / diverged
PERCENTILES = (1, 20, 50, 80, 99)
WIDTH = 9.0  # inches; at DPI this is the README's width, so nothing is scaled down when shown there
DPI = 100

plt.rcParams.update(
    {"text.usetex": False, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7.5}
)


class PlotError(UserError):
    pass


class NoSuchFigure(PlotError):
    """draw_figure: the experiment's runs give no figure of that name (e.g. a final_vs figure needs 3 axis values)."""


# ---------------------------------------------------------------------------------------------------------------
# What a figure is drawn from: one experiment's tables, read once


@dataclass
class ExperimentData:
    dir: Path
    runs: pd.DataFrame  # finished runs only
    all_runs: pd.DataFrame
    axes: list[str]
    tied: list[list[str]]  # axes that vary together (a zip group), or alone
    compare: str | None
    group_keys: list[str]
    config: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.dir.name

    def groups(self) -> list[tuple[Any, pd.DataFrame]]:
        if not self.group_keys:
            return [((), self.runs)]
        return list(self.runs.groupby(self.group_keys, sort=False, dropna=False))

    def mode_text(self) -> str:
        rec = self.config.get("record", {})
        split = "training set" if rec.get("eval_split", "train") == "train" else "test set"
        dropout = self.dropout_text()
        if rec.get("eval_mode", "train") == "eval":
            return f"{split}, eval mode (norms use running statistics{', no dropout' if dropout else ''})"
        return f"{split}, train mode (norms use the batch's statistics{dropout})"

    def dropout_text(self) -> str:
        """', dropout on' for train mode when the runs have dropout ('where set' when the grid varies it), else ''."""
        grid = self.config.get("grid") or {}
        if any(grid.get("model.dropout") or []):
            return ", dropout on where set"
        return ", dropout on" if self.config.get("model", {}).get("dropout") else ""


def read_experiment(
    exp_dir: Path, compare: str | None = None, where: Callable[[pd.DataFrame], pd.Series] | None = None
) -> ExperimentData:
    """Read what the figures need. `where(runs) -> mask` keeps some of runs.parquet's rows."""
    all_runs = load_runs(exp_dir)
    if where is not None:
        all_runs = all_runs[where(all_runs)]
    axes = [a for a in experiment_axes(exp_dir) if a in all_runs.columns]
    if compare is not None:
        try:
            compare = resolve_axis(compare, axes, "--compare", exp_dir.name)
        except SelectionError as e:
            raise PlotError(str(e)) from None
    compare = compare or default_compare(axes)
    runs = all_runs[all_runs.status.isin(FINISHED)]
    if runs.empty:
        statuses = ", ".join(sorted(set(all_runs.status))) or "none"
        raise PlotError(f"{exp_dir.name}: no finished runs to plot (statuses: {statuses})")
    config = folder_config(exp_dir)
    tied = experiment_axis_groups(exp_dir)
    exp = ExperimentData(exp_dir, runs, all_runs, axes, tied, compare, group_keys(axes, tied, compare), config)
    ids = runs.run_id.tolist()
    exp.tables = {
        name: before_divergence(load_table(exp_dir, name, ids), runs)
        for name in ("curves", "histograms", "layers", "landscape")
    }
    hists = exp.tables["histograms"]
    if not hists.empty:
        exp.tables["histograms"] = hists.join(percentiles(hists))
    return exp


def before_divergence(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of a run's table recorded before its divergence step: what a diverged run recorded at that step
    and later (NaN/inf, or the finite values of the step that blew up) is never drawn as data."""
    diverged = runs[runs.status == "diverged"]
    if table.empty or diverged.empty:
        return table
    limit = table.run_id.map(diverged.set_index("run_id").diverged_step.astype(float))
    return table[~(table.step.to_numpy(float) >= limit.to_numpy(float))]


def percentiles(hists: pd.DataFrame, qs: tuple[int, ...] = PERCENTILES) -> pd.DataFrame:
    """The q-th percentiles of the finite values of each stored histogram, by linear interpolation inside its bin
    (exact when the values are spread evenly within each bin), kept within the values' recorded min and max (a
    dead layer's zeros are 0 at every percentile, not spread over the bin that holds them). Mass outside the range
    sits at the range's edge, so a percentile that falls there is the edge (the true value lies beyond it). NaN when
    no value is finite."""
    sizes = hists["counts"].map(len)
    if sizes.nunique() > 1:  # rows of different bin counts: each size on its own
        return pd.concat([percentiles(hists[sizes == k], qs) for k in sizes.unique()]).loc[hists.index]
    counts = np.stack(hists["counts"].to_numpy()).astype(float)  # (R, bins)
    lo, hi = hists["lo"].to_numpy(float), hists["hi"].to_numpy(float)
    below, above = hists["below"].to_numpy(float), hists["above"].to_numpy(float)
    bins = counts.shape[1]
    # cum[:, i] = values < the i-th edge (i = 0..bins), the below-range mass included
    cum = np.concatenate([below[:, None], below[:, None] + np.cumsum(counts, 1)], 1)
    finite = cum[:, -1] + above
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for q in qs:
            target = q / 100 * finite
            i = np.clip((cum < target[:, None]).sum(1) - 1, 0, bins - 1)  # the bin holding the target
            rows = np.arange(len(cum))
            inside = (target - cum[rows, i]) / np.maximum(counts[rows, i], 1e-300)
            value = lo + (i + np.clip(inside, 0, 1)) * (hi - lo) / bins
            value = np.where(target <= cum[:, 0], lo, np.where(target >= cum[:, -1], hi, value))
            if "min" in hists.columns and "max" in hists.columns:  # fmin/fmax: a missing bound bounds nothing
                value = np.fmax(np.fmin(value, hists["max"].to_numpy(float)), hists["min"].to_numpy(float))
            out[f"p{q}"] = np.where(finite > 0, value, np.nan)
    return pd.DataFrame(out, index=hists.index)


# ---------------------------------------------------------------------------------------------------------------
# Entry points


@dataclass
class Job:
    """One figure: a drawing function of this module, the experiment's index and its arguments."""

    draw: str
    exp: int
    path: Path
    args: dict[str, Any] = field(default_factory=dict)


_EXPERIMENTS: list[ExperimentData] = []  # read by forked workers: set before the pool starts
# The kinds of figure, costliest first (one GIF is a figure per recorded step).
DRAW_ORDER = {
    "animation": 0,
    "ridge": 1,
    "hist": 2,
    "overlay": 2,
    "dist": 3,
    "grad": 4,
    "running": 5,
    "landscape": 6,
    "cost": 7,
    "units": 8,
    "final_vs": 9,
}


def plot_experiment(
    exp_dir: Path, compare: str | None = None, point: str = "post_act", fmt: str = "png", **kw: Any
) -> list[Path]:
    return plot_experiments([exp_dir], compare=compare, point=point, fmt=fmt, **kw)


def where_folder(where: list[str]) -> str:
    """The figure folder of a selection: `--where norm=batch --where lr=0.1` -> 'where-norm=batch,lr=0.1'."""
    return "where-" + ",".join(re.sub(r"[^A-Za-z0-9_.=+-]", "_", w) for w in where)


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
    that the figures of every run stay. Returns the paths written, in a stable order."""
    experiments = [read_experiment(d, compare, where) for d in exp_dirs]
    jobs: list[Job] = []
    for i, exp in enumerate(experiments):
        jobs += _jobs(i, exp, _figure_dir(exp, subdir), point, fmt, overlay=overlay, animate=animate, ridge=ridge)
    with _loaded(experiments):
        # The costliest kinds first, so that the workers finish together; the paths come back in job order.
        order = sorted(range(len(jobs)), key=lambda k: DRAW_ORDER.get(jobs[k].draw, 1))
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
    jobs = _jobs(0, exp, path.parent, "post_act", path.suffix.lstrip("."))
    found = [j for j in jobs if j.path.stem == figure]
    if not found:
        names = ", ".join(j.path.stem for j in jobs)
        raise NoSuchFigure(f"{exp.name} has no figure {figure!r}; its figures: {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _loaded([exp]):
        return _draw(replace(found[0], path=path))  # a figure there before stays whole until this one is


def _figure_dir(exp: ExperimentData, subdir: str | None = None) -> Path:
    out = exp.dir / "figures"
    if exp.compare != default_compare(exp.axes):
        out = out / f"by-{exp.compare}"
    if subdir:
        out = out / subdir
    if out.exists():  # figures of an earlier plot would mislead: this folder holds this plot's figures only
        for old in out.iterdir():
            if old.is_file():
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _jobs(
    i: int,
    exp: ExperimentData,
    out: Path,
    point: str,
    fmt: str,
    *,
    overlay: bool = False,
    animate: bool = False,
    ridge: bool = False,
) -> list[Job]:
    hists, layers = exp.tables["histograms"], exp.tables["layers"]
    present = set(hists.point.unique()) if not hists.empty else set()
    if point == "all":
        points = [p for p in ALL_POINTS if p in present]
    else:
        if point not in present and not hists.empty:
            raise PlotError(f"--point {point!r} was not recorded in {exp.name}; recorded: {', '.join(sorted(present))}")
        points = [point]
    jobs = [Job("cost", i, out / f"cost.{fmt}")]
    jobs += [Job("final_vs", i, out / f"final_vs_{k.split('.')[-1]}.{fmt}", {"key": k}) for k in numeric_axes(exp)]
    landscape = exp.tables["landscape"]
    for key, grp in exp.groups():
        slug = group_slug(exp.group_keys, key)
        g = {"group": key}
        if not hists.empty:
            for p in points:
                jobs.append(Job("hist", i, out / f"hist_{p}_{slug}.{fmt}", g | {"point": p}))
                if overlay:  # beside the grid of one run per row, never instead of it
                    jobs.append(Job("overlay", i, out / f"overlay_{p}_{slug}.{fmt}", g | {"point": p}))
                if ridge:
                    jobs.append(Job("ridge", i, out / f"ridge_{p}_{slug}.{fmt}", g | {"point": p}))
                if animate:
                    gif = out / f"anim_{p}_{slug}.gif"
                    jobs.append(Job("animation", i, gif, g | {"point": p, "path": gif}))
            jobs.append(Job("dist", i, out / f"dist_{slug}.{fmt}", g))
        if not layers.empty:
            if "backprop_norm" in layers.columns or "grad_norm" in layers.columns:
                jobs.append(Job("grad", i, out / f"grad_{slug}.{fmt}", g))
            jobs.append(Job("units", i, out / f"units_{slug}.{fmt}", g))
            mine = layers[layers.run_id.isin(grp.run_id)]
            if "running_mean_err" in mine.columns and mine.running_mean_err.notna().any():
                jobs.append(Job("running", i, out / f"running_{slug}.{fmt}", g))
        if not landscape.empty and landscape.run_id.isin(grp.run_id).any():
            jobs.append(Job("landscape", i, out / f"landscape_{slug}.{fmt}", g))
    return jobs


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

    def write(tmp: Path) -> None:
        if job.draw == "animation":  # an animation saves itself
            DRAW[job.draw](exp, **(job.args | {"path": tmp}))
            return
        fig = DRAW[job.draw](exp, **job.args)
        if fig is not None:
            try:
                fig.savefig(tmp, dpi=DPI)
            finally:
                _done(fig)

    try:
        # The suffix stays last: matplotlib and Pillow take the format from it.
        write_file_atomic(job.path, write, keep_suffix=True)
    except OSError as e:
        if not e.filename or Path(e.filename).name.startswith(f".{job.path.name}.tmp-"):  # savefig's own writes
            e.filename = str(job.path)
        raise
    return job.path


# ---------------------------------------------------------------------------------------------------------------
# Labels


def _literal(text: str) -> str:
    """A value from a config as matplotlib prints it literally: `a$b$` is not mathtext (no TeX is used)."""
    return text.replace("$", r"\$")


def _label(keys: list[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k.split('.')[-1]}={_literal(show_value(v))}" for k, v in zip(keys, values, strict=True))


def _value_label(compare: str | None, value: Any) -> str:
    return f"{compare.split('.')[-1]}={_literal(show_value(value))}" if compare else "all runs"


def _group(exp: ExperimentData, key: Any) -> pd.DataFrame:
    for k, grp in exp.groups():
        if k == key:
            return grp
    raise KeyError(key)


def _variants(exp: ExperimentData, runs: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    return list(runs.groupby(exp.compare, sort=False, dropna=False)) if exp.compare else [("", runs)]


def _title(exp: ExperimentData, group: Any, runs: pd.DataFrame, what: str) -> str:
    """'<experiment>: <what> | <group's values>, seed <s>' for a figure of one group's first seed."""
    label = _label(exp.group_keys, group)
    seed = f", seed {runs.seed.iloc[0]}" if "seed" in runs.columns and exp.compare != "seed" else ""
    return f"{exp.name}: {what}" + (f" | {label}" if label else "") + seed


def _first_seed(runs: pd.DataFrame, compare: str | None = None) -> pd.DataFrame:
    """The runs of the lowest seed: a figure of one run per compared value. All of them when the seeds are what is
    compared (--compare seed)."""
    if compare == "seed" or "seed" not in runs.columns:
        return runs
    return runs[runs.seed == runs.seed.min()]


def _seed_count(runs: pd.DataFrame, compare: str | None) -> int:
    """How many seeds each compared value has in `runs` (1 when the seeds are what is compared)."""
    return 1 if compare == "seed" or "seed" not in runs.columns else int(runs.seed.nunique())


def _same_variant(exp: ExperimentData, runs: pd.DataFrame, run: pd.Series) -> pd.DataFrame:
    """The runs of `runs` with `run`'s compared value: its seeds."""
    return next((v for _, v in _variants(exp, runs) if run.run_id in set(v.run_id)), runs.iloc[:0])


@dataclass
class Spread:
    """How far the seeds a figure does not draw are from the one it draws: `what` is measured (words for the figure),
    `measure(drawn run id, other run ids)` its value for one compared value's seeds (None: nothing to compare)."""

    what: str
    measure: Callable[[str, list[str]], str | None]


def _seeds_note(exp: ExperimentData, group_runs: pd.DataFrame, drawn: pd.DataFrame, spread: Spread) -> str:
    """What a figure of one seed per compared value says about the seeds it does not draw: '' with one seed, else
    'seed s of n drawn; the other seeds' <what>: <value> per compared value', the seeds that diverged counted."""
    n = _seed_count(group_runs, exp.compare)
    if n < 2 or drawn.empty:
        return ""
    parts = []
    drawn_ids = set(drawn.run_id)
    for _, seeds in _variants(exp, group_runs):
        run = seeds[seeds.run_id.isin(drawn_ids)]
        if run.empty:
            continue
        run = run.iloc[0]
        seeds = seeds[seeds.run_id != run.run_id]
        others = seeds[seeds.status != "diverged"].run_id.tolist()
        lost = int((seeds.status == "diverged").sum())
        value = spread.measure(run.run_id, others) if others else None
        name = _value_label(exp.compare, run[exp.compare]) if exp.compare else "all runs"
        diverged = f"{lost} diverged" if lost else ""
        if value is None:
            parts.append(f"{name}: {diverged or 'nothing to compare'}")
        else:
            parts.append(f"{name} {value}" + (f" ({diverged})" if diverged else ""))
    return f"seed {drawn.seed.iloc[0]} of {n} drawn; the other seeds' {spread.what}: " + "; ".join(parts)


def _cdf_spread(table: pd.DataFrame) -> Spread:
    """The largest Kolmogorov-Smirnov distance (the largest gap between two cumulative shares of values) between an
    other seed's histogram of a layer and the drawn seed's, at the last step, from a histograms table."""

    last = table[table.step == table.groupby("run_id").step.transform("max")] if len(table) else table
    rows = {(r["run_id"], r["layer"]): r for r in last.to_dict("records")}  # each run's last histograms

    def measure(drawn: str, others: list[str]) -> str | None:
        gaps = [
            (_cdf_gap(rows[drawn, layer], rows[o, layer]), layer)
            for (rid, layer) in rows
            if rid == drawn
            for o in others
            if (o, layer) in rows
        ]
        if not gaps:
            return None
        gap, layer = max(gaps)
        return f"{gap:.2f}" + (f" ({'the input' if layer == 0 else f'layer {layer}'})" if gap > 0 else "")

    return Spread("histograms at the last step (largest KS distance from the drawn seed's)", measure)


def _cdf_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The Kolmogorov-Smirnov distance between two stored histograms: the largest difference of their cumulative
    shares of finite values, each linear within its bins and bounded by its recorded min and max."""
    grid = np.unique(np.r_[_bin_edges(a), _bin_edges(b), a["min"], a["max"], b["min"], b["max"]])
    grid = grid[np.isfinite(grid)]
    return float(np.max(np.abs(_cdf(a, grid) - _cdf(b, grid)), initial=0.0))


def _bin_edges(h: dict[str, Any]) -> np.ndarray:
    return np.linspace(float(h["lo"]), float(h["hi"]), len(h["counts"]) + 1)


def _cdf(h: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """A stored histogram's share of finite values <= x (values below its range at its lower edge)."""
    counts = np.asarray(h["counts"], dtype=float)
    finite = float(h["below"]) + counts.sum() + float(h["above"])
    if finite <= 0:
        return np.zeros_like(x)
    cum = (float(h["below"]) + np.r_[0.0, np.cumsum(counts)]) / finite
    share = np.interp(x, _bin_edges(h), cum, left=0.0, right=1.0)
    return np.where(x < h["min"], 0.0, np.where(x >= h["max"], 1.0, share))


def _ratio_spread(table: pd.DataFrame, metrics: list[str], what: str) -> Spread:
    """The largest factor between an other seed's value and the drawn seed's, over the layers and `metrics` (positive
    per-layer numbers: gradient norms, errors), at the last step."""

    lasts = [_last_values(table, metric) for metric in metrics]  # runs x layers each

    def measure(drawn: str, others: list[str]) -> str | None:
        factors, zero_in_one = [], False
        for last in lasts:
            if drawn not in last.index:
                continue
            mine = last.loc[drawn].to_numpy(float)
            theirs = last.loc[last.index.intersection(others)].to_numpy(float)  # other seeds x layers
            finite = np.isfinite(mine) & np.isfinite(theirs)
            zero_in_one |= bool((finite & ((mine == 0) != (theirs == 0))).any())
            factors += [1.0] * int((finite & (mine == 0) & (theirs == 0)).sum())  # both 0: the same
            both = finite & (mine > 0) & (theirs > 0)
            ratio = theirs[both] / np.broadcast_to(mine, theirs.shape)[both]
            factors += list(np.maximum(ratio, 1 / ratio))
        if zero_in_one:
            return "0 in one seed where not in the other"
        if not factors:
            return None
        worst = max(factors)
        return f"{worst:.2g}" if worst < 10 else f"{worst:.0f}" if worst < 1000 else _short(worst)

    return Spread(f"{what} at the last step (largest factor from the drawn seed's)", measure)


def _eval_start_note(exp: ExperimentData, runs: pd.DataFrame, steps: Any) -> str:
    """What a figure of values recorded in eval mode must say when it shows step 0 of a run with a norm: batch
    norm's running statistics are still their initial values then, not its data's. '' otherwise."""
    if exp.config.get("record", {}).get("eval_mode", "train") != "eval" or not len(steps) or min(steps) > 0:
        return ""
    norms = runs["model.norm"] if "model.norm" in runs.columns else [exp.config.get("model", {}).get("norm")]
    if all(n in (None, "none", "identity") for n in norms):
        return ""
    return (
        "step 0 in eval mode: batch norm's running statistics are still their initial mean 0, variance 1, so step 0 "
        "is not the net with its data's statistics"
    )


def _grid(
    n: int, ncols: int, panel_h: float, top: float = 0.55, reuse: str | None = None, **kw: Any
) -> tuple[plt.Figure, np.ndarray]:
    """n panels in the fewest rows of at most ncols, as few columns as those rows need (4 panels of at most 3 a row:
    2 x 2, not 3 + 1), the figure WIDTH wide; unused panels hidden."""
    nrows = math.ceil(n / max(1, min(ncols, n)))
    ncols = max(1, math.ceil(n / nrows))
    height = panel_h * nrows + top + 0.5
    fig, axs = _subplots(nrows, ncols, (WIDTH, height), reuse, **kw)
    for ax in axs.ravel()[n:]:
        ax.set_visible(False)
    return fig, axs


_REUSABLE: dict[tuple, tuple[plt.Figure, Any]] = {}  # per process: a worker draws many alike figures


def _subplots(
    nrows: int, ncols: int, size: tuple[float, float], reuse: str | None = None, **kw: Any
) -> tuple[plt.Figure, np.ndarray]:
    """plt.subplots; with `reuse` (a kind of figure), the figure of an earlier call with the same layout, emptied:
    making the axes and their ticks is most of the cost of a figure of small multiples. A reused figure stays
    open (_done closes the others)."""
    key = (reuse, nrows, ncols, size, tuple(sorted(kw.items())))
    if reuse is not None and key in _REUSABLE:
        fig, axs = _REUSABLE[key]
        _empty(fig)
        return fig, axs
    fig, axs = plt.subplots(nrows, ncols, figsize=size, squeeze=False, **kw)
    if reuse is not None:
        _REUSABLE[key] = (fig, axs)
    return fig, axs


def _empty(fig: plt.Figure) -> None:
    """Take back everything a drawing function adds to a figure of _subplots, keeping the axes and their ticks."""
    for artist in [*fig.texts, *fig.legends]:
        artist.remove()
    fig.suptitle("")
    for ax in fig.axes:
        for artist in [*ax.patches, *ax.lines, *ax.texts, *ax.collections, *ax.images]:
            artist.remove()
        ax.set_visible(True)
        ax.set_facecolor("white")
        ax.set_title("")
        ax.set_xlabel("")
        ax.set_ylabel("")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(matplotlib.ticker.AutoLocator())
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.relim()
        ax.set_autoscale_on(True)


def _done(fig: plt.Figure) -> None:
    if not any(fig is f for f, _ in _REUSABLE.values()):
        plt.close(fig)


def _note(ax: plt.Axes, x: float, y: float, text: str, **kw: Any) -> None:
    """Text in axes coordinates; small, in the warning colour unless told otherwise."""
    ax.text(x, y, text, transform=ax.transAxes, **{"fontsize": 7, "color": BROKEN, **kw})


PLAIN = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 100, 1e+06: no mathtext, which is slow to draw


def _fitted_suptitle(fig: plt.Figure, text: str, size: float | None = None, **kw: Any) -> None:
    """The figure's title at font size `size` (None: matplotlib's), or smaller where one line of it would not fit
    the figure's width."""
    title = fig.suptitle(text, **({"fontsize": size} if size else {}), **kw)
    for _ in range(4):  # text width is not quite proportional to the size (hinting): shrink until it fits
        width = title.get_window_extent(fig.canvas.get_renderer()).width
        if width <= 0.98 * fig.bbox.width or title.get_fontsize() <= 6.0:
            break
        title.set_fontsize(max(6.0, title.get_fontsize() * 0.97 * fig.bbox.width / width))


def _notes(fig: plt.Figure, lines: list[str], x: float, y_inches: float, **kw: Any) -> int:
    """The non-empty `lines` under a figure's title, each wrapped to the figure's width, `y_inches` below its top
    edge (small, gray); returns how many lines of text that is."""
    text = "\n".join(textwrap.fill(line, NOTE_WIDTH) for line in lines if line)
    if text:
        fig.text(x, 1 - y_inches / fig.get_figheight(), text, va="top", fontsize=7, color="#444444", **kw)
    return text.count("\n") + 1 if text else 0


NOTE_WIDTH = 165  # characters of a 7-point line across a WIDTH-wide figure


class _FewLogTicks(matplotlib.ticker.LogLocator):
    """Log ticks at 1, 2 and 5 of each decade over a short range (so that a range within one decade still has
    labelled ticks), at 1 and 3 over up to three decades, at powers of ten beyond: about six ticks at most."""

    def tick_values(self, vmin: float, vmax: float):
        decades = abs(math.log10(vmax / vmin)) if vmin > 0 and vmax > 0 else math.inf
        subs = (1.0, 2.0, 5.0) if decades < 1.3 else (1.0, 3.0) if decades < 3 else (1.0,)
        self.set_params(subs=subs, numticks=6)
        return super().tick_values(vmin, vmax)


def _layer_color(layer: int, depth: int) -> tuple:
    """Layer 1 dark to the last layer light, on viridis short of its palest yellow (hard to see on white)."""
    return plt.get_cmap("viridis")(0.85 * (layer - 1) / max(depth - 1, 1))


def _log_y(ax: plt.Axes) -> None:
    """A log y axis whose ticks read as plain numbers (_FewLogTicks), without minor labels (mathtext is slow to draw
    and hard to read)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(_FewLogTicks())
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _pct(share: float) -> str:
    """A share that is never shown as 0% when something is there."""
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def _wide(values: list[float] | np.ndarray) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(pos) and max(pos) / min(pos) > 100


# ---------------------------------------------------------------------------------------------------------------
# Histograms: one panel per layer


def _hist_rows(exp: ExperimentData, run_ids: list[str], point: str) -> pd.DataFrame:
    h = exp.tables["histograms"]
    return h[h.run_id.isin(run_ids) & (h.point == point)]


def _shown_steps(hists: pd.DataFrame, runs: pd.DataFrame) -> list[int]:
    """The scheduled histogram steps (a diverged run's extra record at its divergence step is not one)."""
    healthy = runs[runs.status != "diverged"].run_id
    steps = hists[hists.run_id.isin(healthy)].step if len(healthy) else hists.step
    return sorted(int(s) for s in steps.unique())


def _diverged_before(run: pd.Series, step: int) -> bool:
    return run.status == "diverged" and run.diverged_step is not None and step >= run.diverged_step


def _hist_panel(ax: plt.Axes, h: pd.Series | None, run: pd.Series, step: int, color: str) -> None:
    """One histogram as shares of values per bin; out-of-range and NaN/inf shares as bars beyond the edges."""
    if h is None or _diverged_before(run, step) or h["nan"] or h["inf"]:
        why = f"diverged at step {run.diverged_step}" if run.status == "diverged" else "NaN/inf values"
        if h is None and run.status != "diverged":
            why = "not recorded"
        ax.set_facecolor("#fbe9e1" if why != "not recorded" else "white")
        _note(ax, 0.5, 0.5, why.replace(" at ", "\nat "), ha="center", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    counts = np.asarray(h["counts"], dtype=float)
    n = float(h["n"])
    lo, hi = float(h["lo"]), float(h["hi"])
    w = (hi - lo) / len(counts)
    ax.stairs(counts / n, np.linspace(lo, hi, len(counts) + 1), fill=True, color=color, alpha=0.85)
    _outside_bars(ax, h, w, "white")
    ax.set_xlim(lo - 2 * w, hi + 2 * w)
    ax.set_xticks(_edge_ticks(lo, hi))
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))


def _outside_bars(ax: plt.Axes, h: pd.Series, w: float, edge: str) -> None:
    """The shares of a histogram's values below and above its range, as gray hatched bars (hatched in `edge`'s
    colour) one bin beyond its edges, each share written above its bar from 5% on."""
    n = float(h["n"])
    lo, hi = float(h["lo"]), float(h["hi"])
    for share, x in ((h["below"] / n, lo - 1.5 * w), (h["above"] / n, hi + 0.5 * w)):
        if share > 0:
            ax.bar(x, share, width=w, align="edge", color=OUT_OF_RANGE, hatch="///", edgecolor=edge, lw=0)
            if share >= 0.05:  # smaller shares (automatic ranges leave out at most 1%) are the bar alone
                ax.annotate(_pct(share), (x + w / 2, share), ha="center", va="bottom", fontsize=6.5, color="#555555")


def _edge_ticks(lo: float, hi: float) -> list[float]:
    """The range's ends (a bounded activation's automatic range is its bounds: tanh's -1 and 1) and 0 inside."""
    ticks = [lo, hi] + ([0.0] if lo < 0 < hi and min(-lo, hi) > 0.2 * (hi - lo) else [])
    return sorted({float(f"{t:.2g}") for t in ticks})


def _hist(exp: ExperimentData, group: Any, point: str, steps: list[int] | None = None):
    """The histogram grid of one seed: a row per compared run and step (the first and the last recorded one unless
    `steps` says), a column per layer."""
    runs, hists, steps = _hist_data(exp, group, point, steps)
    rows = [(s, [r]) for s in steps for _, r in runs.iterrows()]
    return _hist_grid(exp, group, point, runs, hists, rows)


def _overlay(exp: ExperimentData, group: Any, point: str):
    """The histogram grid with the compared runs on the same axes (--overlay): a row per step, a column per layer;
    each run's histogram an outline in its colour (translucent fills would blend into a colour of no run), over the
    union of their ranges."""
    runs, hists, steps = _hist_data(exp, group, point, None)
    fig = _hist_grid(exp, group, point, runs, hists, [(s, [r for _, r in runs.iterrows()]) for s in steps])
    handles = [
        matplotlib.lines.Line2D([], [], color=COLORS[i % len(COLORS)], lw=1.5, label=_value_label(exp.compare, v))
        for i, v in enumerate(runs[exp.compare] if exp.compare else [""])
    ]
    fig.legend(handles=handles, loc="upper right", ncols=len(handles), frameon=False)
    return fig


def _hist_data(
    exp: ExperimentData, group: Any, point: str, steps: list[int] | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """The runs a histogram grid draws (the first seed of each compared value), their histograms of `point`, and
    its steps: the given ones, else the first and the last recorded step."""
    runs = _first_seed(_group(exp, group), exp.compare)
    hists = _hist_rows(exp, runs.run_id.tolist(), point)
    all_steps = _shown_steps(hists, runs)
    steps = steps or ([all_steps[0], all_steps[-1]] if len(all_steps) > 1 else all_steps)
    return runs, hists, steps


def _hist_grid(
    exp: ExperimentData,
    group: Any,
    point: str,
    runs: pd.DataFrame,
    hists: pd.DataFrame,
    rows: list[tuple[int, list[pd.Series]]],
):
    """A row of histograms per (step, runs): one run's filled, several runs' as outlines on the same axes."""
    layers = sorted(hists.layer.unique())
    fig, axs = _grid(len(rows) * len(layers), len(layers), 1.15 if len(layers) > 4 else 1.6, top=0.8, reuse="hist")
    index = {(r.run_id, int(r.step), int(r.layer)): r for r in hists.itertuples()}
    colors = {rid: COLORS[i % len(COLORS)] for i, rid in enumerate(runs.run_id)}
    for r, (step, shown) in enumerate(rows):
        for c, layer in enumerate(layers):
            ax = axs[r][c]
            records = []
            for one in shown:
                rec = index.get((one.run_id, step, layer))
                records.append((pd.Series(rec._asdict()) if rec is not None else None, one, colors[one.run_id]))
            if len(records) == 1:
                _hist_panel(ax, records[0][0], records[0][1], step, records[0][2])
            else:
                _outline_panel(ax, records, step)
            if r == 0:
                ax.set_title("input" if layer == 0 else f"layer {layer}")
            if c == 0:
                one = shown[0]
                who = _value_label(exp.compare, one[exp.compare]) + "\n" if exp.compare and len(shown) == 1 else ""
                ax.set_ylabel(f"{who}step {step}", fontsize=7.5)
        # One y scale per row, labelled once: the panels of a row compare at a glance (and unlabelled axes
        # without ticks draw several times faster than shared ones).
        top = max(ax.get_ylim()[1] for ax in axs[r])
        for c, ax in enumerate(axs[r]):
            ax.set_ylim(0, top)
            if c:
                ax.yaxis.set_major_locator(matplotlib.ticker.NullLocator())
    lines = _hist_title(fig, exp, runs, group, point, [s for s, _ in rows])
    top = 1 - (0.6 + 0.13 * lines) / fig.get_figheight()
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.04, top=top, hspace=0.45)
    return fig


def _outline_panel(ax: plt.Axes, records: list[tuple[pd.Series | None, pd.Series, str]], step: int) -> None:
    """Several runs' histograms of one layer and step on the same axes, each an outline in its colour over the union
    of their ranges; a run with nothing to draw at this step (diverged, NaN/inf, not recorded) is a line of text."""
    drawn, missing = [], []
    for h, run, color in records:
        if h is None or _diverged_before(run, step) or h["nan"] or h["inf"]:
            missing.append((run, color))
        else:
            drawn.append((h, color))
    for k, (run, color) in enumerate(missing):
        why = f"diverged\nat step {run.diverged_step}" if run.status == "diverged" else "NaN/inf or\nnot recorded"
        _note(ax, 0.97, 0.95 - 0.22 * k, why, ha="right", va="top", color=color, fontsize=6.5)
    if not drawn:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lo = min(float(h["lo"]) for h, _ in drawn)
    hi = max(float(h["hi"]) for h, _ in drawn)
    w = (hi - lo) / len(drawn[0][0]["counts"])
    for k, (h, color) in enumerate(drawn):  # each outline thinner than the one before: equal ones both show
        counts = np.asarray(h["counts"], dtype=float)
        edges = np.linspace(float(h["lo"]), float(h["hi"]), len(counts) + 1)
        ax.stairs(counts / float(h["n"]), edges, color=color, lw=max(2.0 - 0.7 * k, 0.7))
        _outside_bars(ax, h, (float(h["hi"]) - float(h["lo"])) / len(counts), color)
    ax.set_xlim(lo - 2 * w, hi + 2 * w)
    ax.set_xticks(_edge_ticks(lo, hi))
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))


def _hist_title(
    fig: plt.Figure, exp: ExperimentData, runs: pd.DataFrame, group: Any, point: str, steps: list[int]
) -> int:
    """The histogram grid's title and the lines under it (split and mode, the key, the seeds not drawn, what step 0
    in eval mode is); returns how many lines there are under it."""
    fig.suptitle(
        _title(exp, group, runs, f"values {POINT_WORDS.get(point, point)}"),
        x=0.01,
        ha="left",
        fontsize=9.5,
    )
    key = "gray hatched bars beyond the edges: values outside the range; y: share of values per bin"
    group_runs = _group(exp, group)
    h = exp.tables["histograms"]
    spread = _cdf_spread(h[h.run_id.isin(group_runs.run_id) & (h.point == point)])
    lines = [f"on the {exp.mode_text()}. {key}", _seeds_note(exp, group_runs, runs, spread)]
    return _notes(fig, [*lines, _eval_start_note(exp, runs, steps)], 0.01, 0.3)


def _animation(exp: ExperimentData, group: Any, point: str, path: Path | None = None) -> None:
    """The histogram grid at every recorded step, one GIF frame each (matplotlib's Pillow writer)."""
    from matplotlib.animation import PillowWriter

    runs = _first_seed(_group(exp, group), exp.compare)
    steps = _shown_steps(_hist_rows(exp, runs.run_id.tolist(), point), runs)
    writer = PillowWriter(fps=2)
    fig = _hist(exp, group, point, steps=[steps[0]])
    with writer.saving(fig, str(path), dpi=80):
        for step in steps:  # one layout: every frame is the same (reused) figure, drawn again
            fig = _hist(exp, group, point, steps=[step])
            writer.grab_frame()
    _done(fig)


# ---------------------------------------------------------------------------------------------------------------
# Distributions over training: percentile bands per layer and point


def _dist(exp: ExperimentData, group: Any):
    """Distributions over training (Glorot & Bengio 2010): the 1/20/50/80/99th percentiles of each layer's values
    against the step, one column per layer, one row per point and compared run (its first seed), every panel with
    its own y range: no series hides under another or shrinks to a line on another's scale. Dotted: the median's
    range over the seeds that did not diverge. A diverged run's steps from its divergence on are a band saying so."""
    group_runs = _group(exp, group)
    runs = _first_seed(group_runs, exp.compare)
    h = exp.tables["histograms"]
    h = h[h.run_id.isin(group_runs.run_id) & (h.layer > 0) & (h.nan == 0) & (h.inf == 0)]
    points = [p for p in FORWARD_POINTS if p in set(h.point)]
    layers = sorted(h.layer.unique())
    variants = _variants(exp, runs)
    nrows = len(points) * (len(variants) + 1) - 1  # a thin spacer row between the points' blocks
    ratios = tuple(([1.0] * len(variants) + [0.32]) * len(points))[:nrows]
    fig, axs = _subplots(
        nrows, len(layers), (WIDTH, 0.92 * len(points) * len(variants) + 1.7), "dist", height_ratios=ratios
    )
    panels = dict(list(h.sort_values("step").groupby(["run_id", "layer", "point"])))
    span = _step_span(exp, exp.tables["histograms"].step)
    seeds = _seed_count(group_runs, exp.compare)
    medians = _median_ranges(exp, h, group_runs) if seeds > 1 else {}
    for b, point in enumerate(points):
        for v, (value, vruns) in enumerate(variants):
            r = b * (len(variants) + 1) + v
            run = vruns.iloc[0]
            for c, layer in enumerate(layers):
                ax = axs[r][c]
                d = panels.get((run.run_id, layer, point), h.iloc[:0])
                _dist_panel(ax, d, run, COLORS[v % len(COLORS)], span, bottom=r == nrows - 1)
                m = medians.get((value, layer, point))
                if m is not None:  # min and max over the seeds, one line broken between them
                    x = m.index.to_numpy(float)
                    ax.plot(np.r_[x, np.nan, x], np.r_[m["min"], np.nan, m["max"]], color="black", lw=0.7, ls=":")
                if b == 0 and v == 0:
                    ax.set_title(f"layer {layer}")
            name = _value_label(exp.compare, value) if exp.compare else ""
            axs[r][0].set_ylabel(name, fontsize=7)
        if b < len(points) - 1:
            for ax in axs[r + 1]:
                ax.set_visible(False)
        top = axs[b * (len(variants) + 1)][0]
        top.annotate(
            POINT_WORDS[point],
            (0.0, 1.0),
            xycoords="axes fraction",
            xytext=(-38, 3 if b else 14),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=8,
            fontweight="bold",
        )
    for ax in axs[-1]:
        ax.set_xlabel("step")
    h_in = fig.get_figheight()
    title = _title(exp, group, runs, "distributions over training") + f" ({exp.mode_text()})"
    _fitted_suptitle(fig, title, y=1 - 0.05 / h_in)
    key = "band: 1st-99th percentile (light), 20th-80th (dark); line: median; each panel has its own y range"
    if seeds > 1:
        key += f"; dotted: the median's range over the {seeds} seeds (those that did not diverge)"
    lines = [key]
    artefact = _eval_start_note(exp, runs, sorted(h.step.unique()))
    if artefact:
        lines.append(artefact)
    n = _notes(fig, lines, 0.5, 0.27, ha="center")
    fig.subplots_adjust(
        left=0.08, right=0.99, bottom=0.45 / h_in, top=1 - (0.75 + 0.12 * n) / h_in, hspace=0.3, wspace=0.5
    )
    return fig


def _step_span(exp: ExperimentData, steps: pd.Series) -> tuple[float, float]:
    """A figure's step axis: from the first to the last step of `steps` (a table's steps over the experiment's runs),
    to the training's last step where that is one step (every run diverged after its first record)."""
    lo, hi = (float(steps.min()), float(steps.max())) if len(steps) else (0.0, 0.0)
    if hi <= lo:
        hi = max(lo + 1.0, float(exp.config.get("train", {}).get("steps") or 0))
    return lo, hi


def _padded(span: tuple[float, float]) -> tuple[float, float]:
    """A step axis's limits with 2% room on the left, so that what is drawn at the first step is not on the spine."""
    return span[0] - 0.02 * (span[1] - span[0]), span[1]


def _dist_panel(
    ax: plt.Axes, d: pd.DataFrame, run: pd.Series, color: str, span: tuple[float, float], *, bottom: bool
) -> None:
    """One run's percentiles of one layer and point against the step; a single step before a divergence as a
    percentile bar; the steps from the divergence on as a band saying so. Step ticks on the `bottom` row only."""
    x = d.step.to_numpy(float)
    if len(x) > 1:  # both bands as one artist: a tenth of the cost of two fills
        rgb = matplotlib.colors.to_rgb(color)
        bands = [np.c_[np.r_[x, x[::-1]], np.r_[d[a].to_numpy(), d[b].to_numpy()[::-1]]] for a, b in BANDS]
        ax.add_collection(matplotlib.collections.PolyCollection(bands, facecolors=[(*rgb, 0.2), (*rgb, 0.45)], lw=0))
        ax.plot(x, d.p50, color=color, lw=1.2)
    elif len(x) == 1:
        ax.plot([x[0]] * 2, [d.p1.iloc[0], d.p99.iloc[0]], color=color, alpha=0.5, lw=2)
        ax.plot([x[0]] * 2, [d.p20.iloc[0], d.p80.iloc[0]], color=color, lw=4)
        ax.plot(x, d.p50, "o", color="black", ms=2.5)
    if run.status == "diverged" and not pd.isna(run.diverged_step):
        _diverged_band(ax, float(run.diverged_step), span[1], f"diverged\nat step {run.diverged_step}", 6.5)
    ax.set_xlim(*_padded(span))
    ax.grid(axis="y", alpha=0.3)  # a grid line at every step tick of every panel costs more than it says
    ax.tick_params(labelsize=6.5, length=2, pad=1, labelbottom=bottom)
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3) if bottom else matplotlib.ticker.NullLocator())


BANDS = (("p1", "p99"), ("p20", "p80"))  # the percentile bands of the distribution figure, light then dark


def _diverged_band(ax: plt.Axes, start: float, end: float, text: str, size: float) -> None:
    """The steps from a run's divergence to the end of the step axis: a hatched band with `text` in it."""
    ax.axvspan(start, end, facecolor="#fbe9e1", edgecolor="#efb9a3", hatch="///", lw=0)
    ax.text(
        (start + end) / 2,
        0.5,
        text,
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="center",
        fontsize=size,
        color=BROKEN,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
    )


def _median_ranges(exp: ExperimentData, h: pd.DataFrame, runs: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """(compared value, layer, point) -> the min and max per step of the median over that value's seeds that did not
    diverge, where there are two or more of them."""
    out = {}
    for value, vruns in _variants(exp, runs):
        ok = vruns[vruns.status != "diverged"].run_id
        if len(ok) < 2:
            continue
        ranges = h[h.run_id.isin(ok)].groupby(["layer", "point", "step"]).p50.agg(["min", "max"])
        for (layer, point), d in ranges.groupby(level=["layer", "point"]):
            out[(value, layer, point)] = d.droplevel(["layer", "point"])
    return out


def _ridge(exp: ExperimentData, group: Any, point: str = "post_act"):
    """Histograms over training, offset upwards step by step (TensorBoard's histogram view), one panel per compared
    run and layer. Each histogram is scaled to its own tallest bin; a diverged run's steps after its divergence
    are left out and said so."""
    runs = _first_seed(_group(exp, group), exp.compare)
    hists = _hist_rows(exp, runs.run_id.tolist(), point)
    hists = hists[hists.layer > 0]
    layers = sorted(hists.layer.unique())
    steps = _shown_steps(hists, runs)
    fig, axs = plt.subplots(len(runs), len(layers), figsize=(WIDTH, 2.0 * len(runs) + 1.2), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for r, (_, run) in enumerate(runs.iterrows()):
        mine = hists[hists.run_id == run.run_id]
        for c, layer in enumerate(layers):
            ax = axs[r][c]
            rows = mine[(mine.layer == layer) & mine.step.isin(steps)].sort_values("step", ascending=False)
            rows = rows[(rows.nan == 0) & (rows.inf == 0)]
            for h in rows.itertuples():
                k = steps.index(int(h.step))
                counts = np.asarray(h.counts, dtype=float)
                top = counts.max() or 1.0
                edges = np.linspace(h.lo, h.hi, len(counts) + 1)
                color = cmap(k / max(len(steps) - 1, 1))
                ax.stairs(k + 0.9 * counts / top, edges, baseline=k, fill=True, color=color, ec="white", lw=0.5)
            if run.status == "diverged" and not pd.isna(run.diverged_step):  # its steps from there on: a band
                first = sum(st < run.diverged_step for st in steps)
                ax.axhspan(first - 0.1, len(steps), facecolor="#fbe9e1", edgecolor="#efb9a3", hatch="///", lw=0)
                ax.text(
                    0.5,
                    (first + len(steps)) / 2,
                    f"diverged\nat step {run.diverged_step}",
                    transform=ax.get_yaxis_transform(),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color=BROKEN,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
                )
            ax.tick_params(labelsize=6.5, length=2, labelleft=c == 0)
            if len(rows):
                ax.set_xticks(_edge_ticks(rows.lo.min(), rows.hi.max()))
            if r == 0:
                ax.set_title(f"layer {layer}")
        every = math.ceil(len(steps) / 7)  # at most 7 labelled steps
        axs[r][0].set_yticks(range(0, len(steps), every), [str(s) for s in steps[::every]])
        axs[r][0].set_ylabel((_value_label(exp.compare, run[exp.compare]) + "\n" if exp.compare else "") + "step")
    group_runs = _group(exp, group)
    h = exp.tables["histograms"]
    spread = _cdf_spread(h[h.run_id.isin(group_runs.run_id) & (h.point == point)])
    lines = [
        f"on the {exp.mode_text()}; each histogram scaled to its tallest bin, later steps higher",
        _seeds_note(exp, group_runs, runs, spread),
        _eval_start_note(exp, runs, steps),
    ]
    fig.suptitle(
        _title(exp, group, runs, f"histograms over training, values {POINT_WORDS.get(point, point)}"),
        fontsize=8.5,
    )
    height = fig.get_figheight()
    n = _notes(fig, lines, 0.5, 0.28, ha="center")
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.35 / height, top=1 - (0.6 + 0.12 * n) / height)
    return fig


HATCHES = ("////", "\\\\\\\\", "||||", "----", "xxxx")  # one direction per series: crossing bands keep both colours


def _spread_band(ax: plt.Axes, x: Any, lo: Any, hi: Any, color: str, k: int) -> None:
    """The band of series k (a range over seeds, or along the gradient): hatched in its colour, the hatching's
    direction its own, nothing filled; where two series' bands cross, both colours' lines show, not a blend of the two
    that reads as a third series."""
    ax.fill_between(x, lo, hi, facecolor="none", edgecolor=color, hatch=HATCHES[k % len(HATCHES)], lw=0, alpha=0.45)


# ---------------------------------------------------------------------------------------------------------------
# Gradients: per-layer norms over training


def _grad(exp: ExperimentData, group: Any):
    """Per layer against the step: the norms of the backpropagated and the weight gradient (log scale), and, where
    recorded (record.ics_every), internal covariate shift as cos(G, G') (Santurkar et al. 2018)."""
    group_runs = _group(exp, group)
    runs = _first_seed(group_runs, exp.compare)
    layers = exp.tables["layers"]
    seeds_note = _seeds_note(
        exp,
        group_runs,
        runs,
        _ratio_spread(layers[layers.run_id.isin(group_runs.run_id)], ["backprop_norm", "grad_norm"], "gradient norms"),
    )
    layers = layers[layers.run_id.isin(runs.run_id)]
    metrics = [
        (m, t)
        for m, t in (
            ("backprop_norm", "backpropagated gradient ||dL/dz||"),
            ("grad_norm", "weight gradient ||dL/dW||"),
            ("ics_cos", "cos(G, G'), 1: no covariate shift"),
        )
        if m in layers.columns and layers[m].notna().any()
    ]
    variants = _variants(exp, runs)
    fig, axs = _subplots(len(metrics), len(variants), (WIDTH, 2.3 * len(metrics) + 1.0), "grad", sharey="row")
    depth = int(layers.layer.max())
    for c, (value, vruns) in enumerate(variants):
        run = vruns.iloc[0]
        mine = layers[layers.run_id == run.run_id]
        for r, (metric, title) in enumerate(metrics):
            ax = axs[r][c]
            log = metric != "ics_cos"
            for layer, d in mine.groupby("layer"):
                d = d.sort_values("step")
                y = d[metric].to_numpy(float)
                ok = np.isfinite(y) & ((y > 0) if log else True)
                one = "o" if ok.sum() == 1 else None  # a run that diverged after its first record: a point
                ax.plot(d.step[ok], y[ok], color=_layer_color(layer, depth), lw=1.2, marker=one, ms=3)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
            if log:
                _log_y(ax)
            else:
                ax.set_ylim(-1.05, 1.05)
                ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([-1, 0, 1]))
            if log and not (mine[metric] > 0).any():
                zero = (mine[metric] == 0).any()
                why = "0 in every layer at every step:\nno gradient flows" if zero else "no finite values"
                _note(ax, 0.5, 0.5, why, ha="center", va="center", fontsize=8)
                ax.set_xlim(mine.step.min(), mine.step.max())
            head = _value_label(exp.compare, value) if exp.compare and r == 0 else ""
            ax.set_title(f"{head}\n{title}" if head else title)
            if r == len(metrics) - 1:
                ax.set_xlabel("step")
    depth_handles = [
        matplotlib.lines.Line2D([], [], color=_layer_color(layer, depth), lw=1.2, label=f"layer {layer}")
        for layer in sorted(layers.layer.unique())
    ]
    axs[0][-1].legend(handles=depth_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    title = _title(
        exp, group, runs, "gradients per layer" + (" and internal covariate shift" if len(metrics) == 3 else "")
    )
    title += f" ({exp.mode_text()})"
    _fitted_suptitle(fig, title, 9)
    span = _step_span(exp, exp.tables["layers"].step)  # ICS is measured at fewer steps: one step axis for every row
    for ax in axs.ravel():
        ax.set_xlim(*_padded(span))
    for c, (_, vruns) in enumerate(variants):
        run = vruns.iloc[0]
        if run.status == "diverged" and not pd.isna(run.diverged_step):
            for r in range(len(metrics)):
                _diverged_band(axs[r][c], float(run.diverged_step), span[1], f"diverged at step {run.diverged_step}", 8)
    n = _notes(fig, [seeds_note, _eval_start_note(exp, runs, sorted(layers.step.unique()))], 0.5, 0.3, ha="center")
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.88, bottom=0.5 / h, top=1 - (0.8 + 0.12 * n) / h, hspace=0.45)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# The loss landscape along the gradient (record.landscape_every)


def _landscape(exp: ExperimentData, group: Any):
    """Santurkar et al. (2018, fig. 4)'s three panels against the step, compared runs overlaid: the range of the loss
    along the gradient (a band from its min to its max), the largest change of the gradient there, and the effective
    beta-smoothness. Narrower and lower is smoother."""
    group_runs = _group(exp, group)
    runs = _first_seed(group_runs, exp.compare)
    table = exp.tables["landscape"]
    every = landscape_summary(table[table.run_id.isin(group_runs.run_id)]).assign(layer=0)
    seeds_note = _seeds_note(exp, group_runs, runs, _ratio_spread(every, ["beta"], "effective beta"))
    table = table[table.run_id.isin(runs.run_id)]
    summary = landscape_summary(table)
    fig, axs = _subplots(1, 3, (WIDTH, 3.5), "landscape")
    titles = (
        "loss at the step (line), along the gradient (hatched)",
        "gradient change, max ||g - g'||",
        "effective beta, max ||g - g'|| / ||d||",
    )
    scales = sorted(table.scale.unique())
    for k, (value, vruns) in enumerate(_variants(exp, runs)):
        run = vruns.iloc[0]
        color = COLORS[k % len(COLORS)]
        mine = table[table.run_id == run.run_id]
        band = mine.groupby("step").loss.agg(["min", "max"])
        band = band[np.isfinite(band["min"]) & np.isfinite(band["max"]) & (band["min"] > 0)]
        label = _value_label(exp.compare, value) if exp.compare else run.run_id
        x = band.index.to_numpy(float)
        _spread_band(axs[0][0], x, band["min"].to_numpy(), band["max"].to_numpy(), color, k)
        start = mine[mine.scale == 0].set_index("step").loss.reindex(band.index)
        axs[0][0].plot(band.index, start, color=color, lw=1.0, label=label)
        mine_summary = summary[summary.run_id == run.run_id]
        for ax, metric in zip(axs[0][1:], ("grad_change", "beta"), strict=True):
            d = mine_summary[np.isfinite(mine_summary[metric]) & (mine_summary[metric] > 0)]
            ax.plot(d.step, d[metric], color=color, lw=1.4, marker="o", ms=2.5)
        blown = mine_summary.step[np.isposinf(mine_summary.loss_range)].tolist()
        if blown:
            where = f"step {blown[0]}" if len(blown) == 1 else f"{len(blown)} steps from {blown[0]}"
            _note(axs[0][2], 0.02, 0.96 - 0.07 * k, f"{label}: a point blew up (inf) at {where}", color=color, va="top")
        if run.status == "diverged":
            _note(axs[0][0], 0.02, 0.04 + 0.07 * k, f"{label}: diverged at step {run.diverged_step}", color=color)
    for ax, title in zip(axs[0], titles, strict=True):
        _log_y(ax)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    handles, labels = axs[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    steps = ", ".join(f"{s:g}" for s in scales if s > 0)
    fig.suptitle(
        _title(exp, group, runs, "loss landscape along the gradient")
        + f"\nfrom each measured step to theta - k lr g, k in {{{steps}}}, on the step's batch (batch statistics)",
        fontsize=9,
    )
    n = _notes(fig, [seeds_note], 0.5, 0.45, ha="center")
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.24, top=1 - (0.7 + 0.12 * n) / 3.5, wspace=0.28)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Batch norm's running statistics (record.running_stats, record.precise_bn)


def _running(exp: ExperimentData, group: Any):
    """For each compared run with running statistics: per layer, how far the running mean and variance are from the
    training set's (record.running_stats), and the training-set loss with batch statistics (train mode), running
    statistics (eval mode) and, at the end, with recomputed ones (precise BN's, and the population's): the gap between
    train and eval mode is what deploying the model costs; precise BN's loss shows the moving averages' share of it,
    the population's what is left of mini-batch statistics."""
    group_runs = _group(exp, group)
    runs = _first_seed(group_runs, exp.compare)
    layers, curves = exp.tables["layers"], exp.tables["curves"]
    errors = _ratio_spread(layers, ["running_mean_err", "running_var_err"], "running statistics' errors")
    seeds_note = _seeds_note(exp, group_runs, runs[runs.run_id.isin(layers.run_id)], errors)
    with_stats = layers[layers.run_id.isin(runs.run_id) & layers.running_mean_err.notna()].run_id.unique()
    variants = [(v, r) for v, r in _variants(exp, runs) if r.run_id.iloc[0] in with_stats]
    if not variants:  # the first seed's runs have none (plot schedules the figure for groups with some)
        fig, axs = _subplots(1, 1, (WIDTH, 1.5))
        _note(axs[0][0], 0.5, 0.5, "no run of this group keeps running statistics", ha="center", va="center")
        axs[0][0].set_axis_off()
        return fig
    rows = (
        ("running_mean_err", "running mean's error, in stds"),
        ("running_var_err", "running variance's error, |log ratio|"),
    )
    fig, axs = _subplots(3, len(variants), (WIDTH, 7.2), "running", sharey="row")
    depth = int(layers.layer.max())
    for c, (value, vruns) in enumerate(variants):
        run = vruns.iloc[0]
        mine = layers[layers.run_id == run.run_id]
        name = _value_label(exp.compare, value) if exp.compare else ""
        for r, (metric, title) in enumerate(rows):
            ax = axs[r][c]
            for layer, d in mine.groupby("layer"):
                d = d.sort_values("step")
                ok = np.isfinite(d[metric]) & (d[metric] > 0)
                color = _layer_color(layer, depth)
                ax.plot(d.step[ok], d[metric][ok], color=color, lw=1.2, label=f"layer {layer}")
            _log_y(ax)
            ax.grid(alpha=0.3)
            ax.set_title(f"{name}\n{title}" if name and r == 0 else title)
        ax = axs[2][c]
        train = curves[(curves.run_id == run.run_id) & (curves.split == "train")]
        for mode, color, label in (("train", COLORS[0], "train mode"), ("eval", COLORS[1], "eval mode")):
            d = train[train["mode"] == mode].sort_values("step")
            ok = np.isfinite(d.loss) & (d.loss > 0)
            ax.plot(d.step[ok], d.loss[ok], color=color, lw=1.3, label=label)
        for mode, marker, color, label in (
            ("precise", "D", COLORS[2], "precise BN (eval)"),
            ("population", "o", COLORS[3], "population stats (eval)"),
        ):
            at_end = train[train["mode"] == mode]
            if len(at_end):
                ax.plot(
                    at_end.step,
                    at_end.loss,
                    marker,
                    color=color,
                    ms=6,
                    mfc="none" if marker == "o" else color,
                    label=label,
                )
        _log_y(ax)
        ax.grid(alpha=0.3)
        ax.set_title("training-set loss")
        ax.set_xlabel("step")
        if run.status == "diverged" and not pd.isna(run.diverged_step):
            end = float(layers.step.max())
            for r in range(3):
                _diverged_band(axs[r][c], float(run.diverged_step), end, f"diverged at step {run.diverged_step}", 7.5)
    axs[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axs[2][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(
        _title(exp, group, runs, "running statistics against the training set's")
        + "\n(each layer's input over the training set, the network in eval mode)",
        fontsize=9,
    )
    n = _notes(fig, [seeds_note], 0.5, 0.45, ha="center")
    fig.subplots_adjust(left=0.08, right=0.8, bottom=0.07, top=1 - (1.08 + 0.12 * n) / 7.2, hspace=0.45)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Cost curves: one panel per group, one line per compared value, seeds as mean and min-max band


@dataclass
class _Curve:
    """One line of a cost panel: the mean of the seeds that did not diverge (with their min-max band), or one
    diverged seed's losses before its divergence."""

    ax: plt.Axes
    color: str
    style: str
    steps: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    run: pd.Series | None = None  # the diverged seed


def _cost(exp: ExperimentData):
    """Loss curves, one panel per group. The seeds that did not diverge are a mean with a min-max band and set the
    y range; a diverged seed is a thin line up to its last finite loss, marked there (at the axis's edge, with its
    value, when that loss lies beyond the range): a run that blew up cannot flatten the others' curves."""
    groups = exp.groups()
    fig, axs = _grid(len(groups), 3, 2.6, top=0.9, sharey=True)
    drawn: list[_Curve] = []
    for ax, (key, grp) in zip(axs.ravel(), groups, strict=False):
        for i, (_, runs) in enumerate(_variants(exp, grp)):
            drawn += _cost_curves(exp, ax, runs, COLORS[i % len(COLORS)])
        ax.set_title(_label(exp.group_keys, key) or exp.name)
        ax.grid(alpha=0.3)
    healthy = [c for c in drawn if c.run is None] or drawn  # all diverged: their losses are the data
    finite = np.concatenate([np.r_[c.mean, c.lo, c.hi] for c in healthy] or [np.array([])])
    finite = finite[np.isfinite(finite)]
    ylog = _wide(finite)
    for c in drawn:
        c.ax.plot(c.steps, c.mean, c.style, color=c.color, lw=1.5 if c.run is None else 0.8)
        if c.run is None and np.any(c.lo != c.hi):
            _spread_band(c.ax, c.steps, c.lo, c.hi, c.color, COLORS.index(c.color))
    limits = _margins(finite, log=ylog)
    for ax in axs.ravel():
        if ylog:
            _log_y(ax)
        if limits is not None:
            ax.set_ylim(*limits)
    for ax in axs.ravel():
        _divergence_marks(ax, [c for c in drawn if c.ax is ax and c.run is not None and c.style == "-"])
    for ax in axs[-1]:
        ax.set_xlabel("step (parameter updates)")
    for ax in axs[:, 0]:
        ax.set_ylabel("loss" + (" (log scale)" if ylog else ""))
    _cost_legend(fig, exp, drawn)
    return fig


def _cost_curves(exp: ExperimentData, ax: plt.Axes, runs: pd.DataFrame, color: str) -> list[_Curve]:
    """The curves of one compared value's seeds in one panel: per split, the mean of the seeds that did not diverge,
    and each diverged seed apart (never averaged in)."""
    curves = exp.tables["curves"]
    out = []
    for split, mode, style in (("train", "train", "-"), ("test", "eval", "--")):
        c = curves[curves.run_id.isin(runs.run_id) & (curves.split == split) & (curves["mode"] == mode)]
        if c.empty:
            continue
        wide = c.pivot_table(index="step", columns="run_id", values="loss", aggfunc="first", dropna=False)
        vals = wide.to_numpy(dtype=float, copy=True)
        vals[~np.isfinite(vals)] = np.nan
        steps = wide.index.to_numpy(float)
        diverged = wide.columns.isin(runs[runs.status == "diverged"].run_id)
        if (~diverged).any():
            ok = vals[:, ~diverged]
            with np.errstate(all="ignore"), warnings.catch_warnings(action="ignore", category=RuntimeWarning):
                mean, lo, hi = np.nanmean(ok, 1), np.nanmin(ok, 1), np.nanmax(ok, 1)
            keep = np.isfinite(mean)
            out.append(_Curve(ax, color, style, steps[keep], mean[keep], lo[keep], hi[keep]))
        for k in np.flatnonzero(diverged):
            keep = np.isfinite(vals[:, k])
            y = vals[keep, k]
            run = runs[runs.run_id == wide.columns[k]].iloc[0]
            out.append(_Curve(ax, color, style, steps[keep], y, y, y, run))
    return out


def _margins(values: np.ndarray, *, log: bool) -> tuple[float, float] | None:
    """The axis range of `values` with matplotlib's default margins, 5% of the span on each side (in log space on a
    log axis); None when there is nothing to range."""
    if log:
        values = values[values > 0]
    if not len(values):
        return None
    lo, hi = float(values.min()), float(values.max())
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    pad = 0.05 * (hi - lo) if hi > lo else (0.5 if log else max(abs(hi), 1.0) * 0.05)
    lo, hi = lo - pad, hi + pad
    return (10**lo, 10**hi) if log else (lo, hi)


def _divergence_marks(ax: plt.Axes, diverged: list[_Curve]) -> None:
    """Each diverged seed's last finite loss (x; an arrowhead at the axis's edge when it lies beyond the range, its
    value written there), its divergence step (dotted), and a note per compared value."""
    lo, hi = ax.get_ylim()
    by_color: dict[str, list[_Curve]] = {}
    for c in diverged:
        by_color.setdefault(c.color, []).append(c)
        ax.axvline(c.run.diverged_step, color=c.color, ls=":", lw=1)
        if not len(c.steps):
            continue
        s, v = c.steps[-1], c.mean[-1]
        if lo <= v <= hi:
            ax.plot([s], [v], "x", color=c.color, ms=9, mew=2.5)
        else:
            edge, marker = (hi, "^") if v > hi else (lo, "v")
            ax.plot([s], [edge], marker, color=c.color, ms=8, clip_on=False)
    lines = []
    for color, cs in by_color.items():
        steps = [int(c.run.diverged_step) for c in cs]
        last = [c.mean[-1] for c in cs if len(c.mean)]
        beyond = [v for v in last if not lo <= v <= hi]
        text = f"{len(cs)} run(s) diverged at step {_span(steps)}"
        if beyond:
            where = "above" if max(beyond) > hi else "below"
            text += f"\nlast finite loss {_span(beyond)}:\n{where} the axis (arrowhead at its edge)"
        lines.append((color, text))
    for k, (color, text) in enumerate(lines):
        _note(ax, 0.98, 0.95 - 0.2 * k, text, ha="right", va="top", fontsize=7, color=color)


def _span(values: list[float]) -> str:
    """'35', '4-5', '1.7e9' or '1.8e8-1.7e9': the range of a few numbers (steps, losses), short."""
    lo, hi = _short(min(values)), _short(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _short(v: float) -> str:
    """A whole number below 100000 as it is, any other in two digits: 0.31, 1.7e9, 2e-5."""
    if float(v).is_integer() and abs(v) < 1e5:
        return str(int(v))
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{v:.2g}")


def _cost_legend(fig: plt.Figure, exp: ExperimentData, drawn: list[_Curve]) -> None:
    """The cost figure's legend, headed by its title, above the panels."""
    handles = [
        matplotlib.lines.Line2D([], [], color=COLORS[i % len(COLORS)], lw=2, label=_value_label(exp.compare, v))
        for i, (v, _) in enumerate(_variants(exp, exp.runs))
    ]
    handles.append(
        matplotlib.lines.Line2D([], [], color="black", label=f"training set, train mode{exp.dropout_text()}")
    )
    if any(c.style == "--" for c in drawn):
        handles.append(matplotlib.lines.Line2D([], [], color="black", ls="--", label="test set, eval mode"))
    nseeds = _seed_count(exp.runs, exp.compare)
    if nseeds > 1:
        band = {"facecolor": "none", "edgecolor": "gray", "hatch": HATCHES[0], "lw": 0}
        handles.append(matplotlib.patches.Patch(**band, label="hatched: min-max over the seeds"))
    if any(c.run is not None for c in drawn):
        handles.append(
            matplotlib.lines.Line2D(
                [], [], color="gray", lw=0.8, marker="x", label="a diverged seed (not in the mean), x: last finite loss"
            )
        )
    mean = f" ({nseeds} seeds; line: the mean of those that did not diverge)"
    title = f"{exp.name}: cost curves" + (mean if nseeds > 1 else "")
    # The title heads the legend, so that the two never overlap whatever the number of entries.
    legend = fig.legend(
        handles=handles, loc="upper center", ncols=min(len(handles), 3), frameon=False, bbox_to_anchor=(0.5, 1.0)
    )
    legend.set_title(title, prop={"size": 10})
    h = fig.get_figheight()
    rows = math.ceil(len(handles) / 3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.45 / h, top=1 - (0.35 + 0.17 * rows + 0.25) / h)
    fig.subplots_adjust(hspace=0.45)


# ---------------------------------------------------------------------------------------------------------------
# Final numbers against a numeric grid key (batch size, weight scale, lr): one line per compared value


def numeric_axes(exp: ExperimentData) -> list[str]:
    """Grid keys other than seed whose values are all numbers, with at least 3 of them."""
    found = []
    for a in exp.axes:
        values = exp.all_runs[a].dropna().unique()
        numeric = all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in values)
        if a != "seed" and numeric and len(values) >= 3:
            found.append(a)
    return found


def _final_vs(exp: ExperimentData, key: str):
    """Final train loss and (for classification) final test accuracy in eval mode against `key`; seeds as mean
    with min-max band; failed or diverged runs are counted in the legend, never silently averaged in."""
    runs = exp.all_runs
    rest = [a for a in exp.axes if a not in (*tied_with(exp.tied, key), *tied_with(exp.tied, exp.compare), "seed")]
    groups = list(runs.groupby(rest, sort=False)) if rest else [((), runs)]
    metrics = [("final_train_loss", "final train loss (train mode)")]
    if runs.final_test_accuracy.notna().any():
        metrics.append(("final_test_accuracy", "final test accuracy (eval mode)"))
    fig, axs = plt.subplots(len(groups), len(metrics), figsize=(WIDTH, 2.8 * len(groups) + 0.8), squeeze=False)
    for r, (gkey, grp) in enumerate(groups):
        for c, (metric, title) in enumerate(metrics):
            ax = axs[r][c]
            for i, (value, vruns) in enumerate(_variants(exp, grp)):
                ok = vruns[vruns.status == "ok"]
                stats = ok.groupby(key)[metric].agg(["mean", "min", "max"]).sort_index()
                lost = len(vruns) - len(ok)
                color = COLORS[i % len(COLORS)]
                label = _value_label(exp.compare, value) + (f" ({lost} diverged/failed)" if lost else "")
                ax.plot(stats.index, stats["mean"], "o-", color=color, ms=3, label=label)
                _spread_band(ax, stats.index, stats["min"], stats["max"], color, i)
            xs = runs[key].astype(float)
            if xs.min() > 0 and xs.max() / xs.min() >= 8:
                ax.set_xscale("log", base=2 if key.endswith("batch_size") else 10)
                ax.xaxis.set_major_formatter(PLAIN)
            if metric == "final_train_loss" and _wide(list(runs[metric].dropna())):
                _log_y(ax)
            ax.set_xlabel(key)
            ax.set_title(title + (f" | {_label(rest, gkey)}" if rest else ""))
            ax.grid(alpha=0.3)
            ax.legend()
    nseeds = runs.seed.nunique() if "seed" in runs.columns else 1
    band = f" (line: mean over {nseeds} seeds, hatched: min-max)" if nseeds > 1 else ""
    fig.suptitle(f"{exp.name}: final numbers against {key}{band}", fontsize=9.5)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Dead / saturated units: layer x step, one row of panels per compared run


def _units(exp: ExperimentData, group: Any):
    """Dead units and saturated values, layer x step, one row per compared run (its first seed), all rows on one
    step axis; beside each heatmap, every seed's last values per layer (their range and the drawn seed)."""
    group_runs = _group(exp, group)
    runs = _first_seed(group_runs, exp.compare)
    layers = exp.tables["layers"]
    layers = layers[layers.run_id.isin(group_runs.run_id)]
    titles = {"dead_fraction": "dead units (output 0 for every sample)", "saturated_fraction": "saturated values"}
    # A metric is shown when it says something: saturation only for activations with a saturating region,
    # dead units when some unit of some run died (an all-zero panel is a sentence, not a picture).
    shown = [m for m in titles if layers[m].notna().any() and (m != "dead_fraction" or (layers[m] > 0).any())]
    notes = []
    if "dead_fraction" not in shown and layers.dead_fraction.notna().any():
        notes.append("no dead units in any layer of these runs")
    if "saturated_fraction" not in shown:
        notes.append("the activation has no saturating region")
    if not shown:
        shown = ["dead_fraction"]
    # The steps of the units' schedule (rows of other measurements only, record.ics_every, are not unit rows).
    layers = layers[layers[["dead_fraction", "saturated_fraction"]].notna().any(axis=1)]
    every = exp.tables["layers"]
    every = every[every[["dead_fraction", "saturated_fraction"]].notna().any(axis=1)].step
    steps = np.sort(every.unique()).astype(float) if len(every) else np.array([0.0])
    end = max(_edges(steps)[-1], _step_span(exp, every)[1])  # every row on the experiment's step axis
    spread = _seed_count(group_runs, exp.compare) > 1
    fig, heat_axs, seed_axs, bar_ax = _units_axes(len(runs), len(shown), spread=spread)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="lightgray")
    for r, (_, run) in enumerate(runs.iterrows()):
        data = layers[layers.run_id == run.run_id]
        for c, metric in enumerate(shown):
            ax = heat_axs[r][c]
            _units_heatmap(ax, data, metric, run, steps, end, cmap)
            if r == 0:
                ax.set_title(titles[metric])
            ax.set_ylabel((_value_label(exp.compare, run[exp.compare]) + "\n" if exp.compare else "") + "layer")
            if r < len(runs) - 1:  # one step axis, at the bottom: every row's steps line up
                ax.tick_params(labelbottom=False)
            if spread:
                _seed_strip(seed_axs[r][c], layers, _same_variant(exp, group_runs, run), run, metric, head=r == 0)
                seed_axs[r][c].set_ylim(ax.get_ylim())
    for ax in heat_axs[-1]:
        ax.set_xlabel("step")
    bar = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), cmap)
    fig.colorbar(bar, cax=bar_ax, label="fraction")
    title = _title(exp, group, runs, "dead and saturated units") + (f" ({'; '.join(notes)})" if notes else "")
    _fitted_suptitle(fig, title, 9, y=1 - 0.05 / fig.get_figheight())
    below = [f"on the {exp.mode_text()}"]
    artefact = _eval_start_note(exp, runs, steps)
    if artefact:
        below.append(artefact)
    h = fig.get_figheight()
    n = _notes(fig, below, 0.5, 0.27, ha="center")
    fig.subplots_adjust(left=0.08, right=0.93, bottom=0.45 / h, top=1 - (0.6 + 0.12 * n) / h)
    return fig


def _units_axes(nrows: int, nmetrics: int, *, spread: bool) -> tuple[plt.Figure, list, list, plt.Axes]:
    """The units figure's axes: per metric a heatmap column and (with several seeds) a narrow column of every seed's
    last values, one row per compared run; a colour bar at the right. The figure of an earlier call with the same
    layout, emptied, when there is one (as _subplots)."""
    key = ("units", nrows, nmetrics, spread)
    if key in _REUSABLE:
        fig, axes = _REUSABLE[key]
        _empty(fig)
        return (fig, *axes)
    fig = plt.figure(figsize=(WIDTH, 1.3 * nrows + 1.3))
    per_metric = [6.0, 1.3] if spread else [6.0]
    ratios = per_metric * nmetrics + [0.18]
    gs = fig.add_gridspec(nrows, len(ratios), width_ratios=ratios, wspace=0.12 if spread else 0.25, hspace=0.25)
    step = len(per_metric)
    heat = [[fig.add_subplot(gs[r, step * c]) for c in range(nmetrics)] for r in range(nrows)]
    seeds = [[fig.add_subplot(gs[r, step * c + 1]) for c in range(nmetrics)] for r in range(nrows)] if spread else []
    bar = fig.add_subplot(gs[:, -1])
    _REUSABLE[key] = (fig, (heat, seeds, bar))
    return fig, heat, seeds, bar


def _units_heatmap(
    ax: plt.Axes, data: pd.DataFrame, metric: str, run: pd.Series, steps: np.ndarray, axis_end: float, cmap: Any
) -> None:
    """One run's layer x step heatmap on the cells of the shared step schedule `steps`, the step axis up to
    `axis_end`. A diverged run's cells stop at its divergence step; the steps from there on are a 'diverged at
    step k' band, not values."""
    edges = _edges(steps)
    diverged = run.status == "diverged" and not pd.isna(run.diverged_step)
    end = float(run.diverged_step) if diverged else edges[-1]
    before = steps[steps < end]
    wide = data.pivot_table(index="layer", columns="step", values=metric, aggfunc="first", dropna=False)
    if len(before) and not wide.empty:
        values = wide.reindex(columns=before).to_numpy(dtype=float)
        x = edges[: len(before) + 1].copy()
        x[-1] = min(x[-1], end)
        ax.pcolormesh(x, _edges(wide.index.to_numpy(float)), np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1)
        ax.set_yticks(list(wide.index))
        if np.isnan(values).any():
            _note(ax, 0.0, 1.01, "gray: NaN/inf", va="bottom", color="#555555")
    if diverged:
        _diverged_band(ax, end, axis_end, f"diverged at step {run.diverged_step}", 8)
    ax.set_xlim(edges[0], axis_end)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    ax.tick_params(labelsize=7)


def _seed_strip(ax: plt.Axes, layers: pd.DataFrame, seeds: pd.DataFrame, drawn: pd.Series, metric: str, *, head: bool):
    """Every seed's value of `metric` per layer at its last recorded step: the range over the seeds that did not
    diverge (a bar) and the drawn seed (a dot); the diverged seeds are counted."""
    ok = seeds[seeds.status != "diverged"]
    last = _last_values(layers[layers.run_id.isin(ok.run_id)], metric)  # seeds x layers
    if len(last):
        ax.hlines(last.columns, last.min(), last.max(), color="#777777", lw=3.5, alpha=0.6)
        if drawn.run_id in last.index:
            ax.plot(last.loc[drawn.run_id], last.columns, "o", color="black", ms=3)
    lost = len(seeds) - len(ok)
    if lost:
        _note(ax, 0.5, 0.5, f"{lost} of {len(seeds)}\ndiverged", ha="center", va="center")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"])
    ax.tick_params(labelsize=6.5, labelleft=False, length=2)
    ax.grid(axis="x", alpha=0.3)
    if head:
        ax.set_title(f"at the end, {len(seeds)} seeds\n(bar: range, dot: seed {drawn.seed})", fontsize=6.5)


def _last_values(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each run's values of `metric` per layer at its last step with a value: runs x layers."""
    table = table[table[metric].notna()]
    if table.empty:
        return pd.DataFrame()
    last = table[table.step == table.groupby("run_id").step.transform("max")].drop_duplicates(["run_id", "layer"])
    return last.pivot(index="run_id", columns="layer", values=metric)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (steps or layers), so that a heatmap's axis is numeric."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[centres[0] - (mid[0] - centres[0])], mid, [centres[-1] + (centres[-1] - mid[-1])]])


DRAW: dict[str, Callable[..., Any]] = {
    "cost": _cost,
    "final_vs": _final_vs,
    "hist": _hist,
    "overlay": _overlay,
    "dist": _dist,
    "ridge": _ridge,
    "grad": _grad,
    "units": _units,
    "animation": _animation,
    "landscape": _landscape,
    "running": _running,
}

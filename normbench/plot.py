"""Figures from a results folder, each making one point.

    paths = plot_experiments([Path("results/morvan_tf23")], compare="model.norm", point="post_act", fmt="png")

Runs are grouped by every grid key except the compared one and `seed`: one figure set per group (e.g. per
activation). Per experiment:

    cost.png               loss curves, one panel per group (wrapped into a grid), seeds as mean and min-max band
    final_vs_<key>.png     final numbers against each numeric grid key (batch size, weight scale, lr)
Per group:
    hist_<point>_<g>.png   the histogram grid of one seed at the first and the last recorded step: rows = compared
                           runs x {first, last}, columns = layers (--overlay: compared runs on the same axes)
    ridge_<point>_<g>.png  (--ridge) the histograms of one seed at every recorded step, offset upwards
    dist_<g>.png           distributions over training: per layer and point, the 1/20/50/80/99th percentiles of
                           the stored histograms against the step, compared runs overlaid (Glorot & Bengio 2010)
    grad_<g>.png           per-layer gradient norms over training (backpropagated dL/dz and weight gradient)
    units_<g>.png          dead units and saturated values, layer x step
    landscape_<g>.png      (record.landscape_every) the loss range, gradient change and beta-smoothness along the
                           gradient against the step (Santurkar et al. 2018, fig. 4)
    running_<g>.png        (record.running_stats) the running statistics' error per layer, and the training-set
                           loss in train mode, eval mode and, with record.precise_bn, with precise statistics
    anim_<point>_<g>.gif   (--animate) the histogram grid at every recorded step, one frame each

Nothing is left out silently: values outside a histogram's range and NaN/inf are drawn as bars at the panel's
edges, a diverged run is a "diverged at step k" panel (never drawn as data), and every histogram figure says on
which split and in which mode (batch or running statistics) its values were taken.

Figures of several experiments render in parallel worker processes (fork: the tables are loaded once, before).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
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
import yaml

from normbench.report import landscape_summary
from normbench.store import (
    FINISHED,
    SelectionError,
    default_compare,
    experiment_axes,
    experiment_axis_groups,
    group_keys,
    group_slug,
    load_runs,
    load_table,
    resolve_axis,
    show_value,
    tied_with,
)

FORWARD_POINTS = ("pre_norm", "post_norm", "post_act")
POINT_TITLES = {
    "pre_norm": "before the norm",
    "post_norm": "after the norm",
    "post_act": "after the activation",
    "grad_pre_norm": "gradient dL/dz at the norm's input",
    "grad_weight": "weight gradient dL/dW",
}
# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OUT_OF_RANGE = "#8c8c8c"
BROKEN = "#D55E00"  # NaN / inf / diverged
PERCENTILES = (1, 20, 50, 80, 99)
WIDTH = 9.0  # inches; at DPI this is the README's width, so nothing is scaled down when shown there
DPI = 100

plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7.5})


class PlotError(ValueError):
    pass


class NoSuchFigure(PlotError):
    """draw_figure: the experiment's runs give no figure of that name (e.g. a final_vs figure needs 3 axis values)."""


# ---------------------------------------------------------------------------------------------------------------
# What a figure is drawn from: one experiment's tables, read once


@dataclass
class Experiment:
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


def load_experiment(
    exp_dir: Path, compare: str | None = None, where: Callable[[pd.DataFrame], pd.Series] | None = None
) -> Experiment:
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
    config = yaml.safe_load((exp_dir / "config.yaml").read_text()) or {}
    tied = experiment_axis_groups(exp_dir)
    exp = Experiment(exp_dir, runs, all_runs, axes, tied, compare, group_keys(axes, tied, compare), config)
    ids = runs.run_id.tolist()
    exp.tables = {name: load_table(exp_dir, name, ids) for name in ("curves", "histograms", "layers", "landscape")}
    hists = exp.tables["histograms"]
    if not hists.empty:
        exp.tables["histograms"] = hists.join(percentiles(hists))
    return exp


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


_EXPERIMENTS: list[Experiment] = []  # read by forked workers: set before the pool starts
# The kinds of figure, costliest first (one GIF is a figure per recorded step).
DRAW_ORDER = {
    "animation": 0,
    "ridge": 1,
    "hist": 2,
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
    experiments = [load_experiment(d, compare, where) for d in exp_dirs]
    jobs: list[Job] = []
    for i, exp in enumerate(experiments):
        jobs += _jobs(i, exp, _figure_dir(exp, subdir), point, fmt, overlay, animate, ridge)
    with _loaded(experiments):
        # The costliest kinds first, so that the workers finish together; the paths come back in job order.
        order = sorted(range(len(jobs)), key=lambda k: DRAW_ORDER.get(jobs[k].draw, 1))
        paths = _render([jobs[k] for k in order], workers, progress)
        return [paths[order.index(k)] for k in range(len(jobs))]


@contextmanager
def _loaded(experiments: list[Experiment]) -> Iterator[None]:
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
    exp = load_experiment(exp_dir, compare, where)
    jobs = _jobs(0, exp, path.parent, "post_act", path.suffix.lstrip("."), False, False, False)
    found = [j for j in jobs if j.path.stem == figure]
    if not found:
        names = ", ".join(j.path.stem for j in jobs)
        raise NoSuchFigure(f"{exp.name} has no figure {figure!r}; its figures: {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with _loaded([exp]):
            _draw(replace(found[0], path=tmp))
        os.replace(tmp, path)  # a figure there before stays whole until this one is
        return path
    finally:
        tmp.unlink(missing_ok=True)


def _figure_dir(exp: Experiment, subdir: str | None = None) -> Path:
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
    i: int, exp: Experiment, out: Path, point: str, fmt: str, overlay: bool, animate: bool, ridge: bool
) -> list[Job]:
    hists, layers = exp.tables["histograms"], exp.tables["layers"]
    present = set(hists.point.unique()) if not hists.empty else set()
    if point == "all":
        points = [p for p in (*FORWARD_POINTS, "grad_pre_norm", "grad_weight") if p in present]
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
                jobs.append(Job("hist", i, out / f"hist_{p}_{slug}.{fmt}", g | {"point": p, "overlay": overlay}))
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
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in pool.imap_unordered(_draw, jobs):
            done += 1
            if progress:
                progress(done, len(jobs))
    return [j.path for j in jobs]


def _draw(job: Job) -> Path:
    exp = _EXPERIMENTS[job.exp]
    fig = DRAW[job.draw](exp, **job.args)
    if fig is not None:  # an animation saves itself
        fig.savefig(job.path, dpi=DPI)
        _done(fig)
    return job.path


# ---------------------------------------------------------------------------------------------------------------
# Labels


def _label(keys: list[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k.split('.')[-1]}={show_value(v)}" for k, v in zip(keys, values, strict=True))


def _value_label(compare: str | None, value: Any) -> str:
    return f"{compare.split('.')[-1]}={show_value(value)}" if compare else "all runs"


def _group(exp: Experiment, key: Any) -> pd.DataFrame:
    for k, grp in exp.groups():
        if k == key:
            return grp
    raise KeyError(key)


def _variants(exp: Experiment, runs: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    return list(runs.groupby(exp.compare, sort=False, dropna=False)) if exp.compare else [("", runs)]


def _title(exp: Experiment, group: Any, runs: pd.DataFrame, what: str) -> str:
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


_REUSABLE: dict[tuple, tuple[plt.Figure, np.ndarray]] = {}  # per process: a worker draws many alike figures


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


def _few_ticks(ax: plt.Axes, x: int = 4, y: int = 3) -> None:
    """At most about x and y ticks: small panels read better, and every tick costs drawing time."""
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(x))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(y))


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


def _hist_rows(exp: Experiment, run_ids: list[str], point: str) -> pd.DataFrame:
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
    for share, x in ((h["below"] / n, lo - 1.5 * w), (h["above"] / n, hi + 0.5 * w)):
        if share > 0:
            ax.bar(x, share, width=w, align="edge", color=OUT_OF_RANGE, hatch="///", edgecolor="white", lw=0)
            if share >= 0.05:  # smaller shares (automatic ranges leave out at most 1%) are the bar alone
                ax.annotate(_pct(share), (x + w / 2, share), ha="center", va="bottom", fontsize=6.5, color="#555555")
    ax.set_xlim(lo - 2 * w, hi + 2 * w)
    ax.set_xticks(_edge_ticks(lo, hi))
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))


def _edge_ticks(lo: float, hi: float) -> list[float]:
    """The range's ends (a bounded activation's automatic range is its bounds: tanh's -1 and 1) and 0 inside."""
    ticks = [lo, hi] + ([0.0] if lo < 0 < hi and min(-lo, hi) > 0.2 * (hi - lo) else [])
    return sorted({float(f"{t:.2g}") for t in ticks})


def _hist(exp: Experiment, group: Any, point: str, overlay: bool = False, steps: list[int] | None = None):
    runs = _first_seed(_group(exp, group), exp.compare)
    hists = _hist_rows(exp, runs.run_id.tolist(), point)
    all_steps = _shown_steps(hists, runs)
    steps = steps or ([all_steps[0], all_steps[-1]] if len(all_steps) > 1 else all_steps)
    layers = sorted(hists.layer.unique())
    rows = [(s, None) for s in steps] if overlay else [(s, r) for s in steps for _, r in runs.iterrows()]
    fig, axs = _grid(len(rows) * len(layers), len(layers), 1.15 if len(layers) > 4 else 1.6, top=0.8, reuse="hist")
    index = {(r.run_id, int(r.step), int(r.layer)): r for r in hists.itertuples()}
    colors = {rid: COLORS[i % len(COLORS)] for i, rid in enumerate(runs.run_id)}
    for r, (step, run) in enumerate(rows):
        for c, layer in enumerate(layers):
            ax = axs[r][c]
            shown = [run] if run is not None else [row for _, row in runs.iterrows()]
            for one in shown:
                rec = index.get((one.run_id, step, layer))
                h = pd.Series(rec._asdict()) if rec is not None else None
                _hist_panel(ax, h, one, step, colors[one.run_id])
                if overlay and h is not None and not _diverged_before(one, step):
                    ax.patches[-1].set_alpha(0.45) if ax.patches else None
            if r == 0:
                ax.set_title("input" if layer == 0 else f"layer {layer}")
            if c == 0:
                who = "" if run is None else _value_label(exp.compare, run[exp.compare]) + "\n" if exp.compare else ""
                ax.set_ylabel(f"{who}step {step}", fontsize=7.5)
        # One y scale per row, labelled once: the panels of a row compare at a glance (and unlabelled axes
        # without ticks draw several times faster than shared ones).
        top = max(ax.get_ylim()[1] for ax in axs[r])
        for c, ax in enumerate(axs[r]):
            ax.set_ylim(0, top)
            if c:
                ax.yaxis.set_major_locator(matplotlib.ticker.NullLocator())
    if overlay:
        handles = [
            matplotlib.patches.Patch(color=colors[r.run_id], alpha=0.6, label=_value_label(exp.compare, r[exp.compare]))
            for _, r in runs.iterrows()
        ]
        fig.legend(handles=handles, loc="upper right", ncols=len(handles), frameon=False)
    _hist_title(fig, exp, runs, group, point, overlay)
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.04, top=1 - 0.75 / fig.get_figheight(), hspace=0.45)
    return fig


def _hist_title(fig: plt.Figure, exp: Experiment, runs: pd.DataFrame, group: Any, point: str, overlay: bool) -> None:
    fig.suptitle(
        _title(exp, group, runs, f"values {POINT_TITLES.get(point, point)}"),
        x=0.01,
        ha="left",
        fontsize=9.5,
    )
    key = "gray hatched bars beyond the edges: values outside the range; y: share of values per bin"
    fig.text(0.01, 1 - 0.42 / fig.get_figheight(), f"on the {exp.mode_text()}. {key}", fontsize=7, color="#444444")


def _animation(exp: Experiment, group: Any, point: str, path: Path | None = None) -> None:
    """The histogram grid at every recorded step, one GIF frame each (matplotlib's Pillow writer)."""
    from matplotlib.animation import PillowWriter

    runs = _first_seed(_group(exp, group), exp.compare)
    steps = _shown_steps(_hist_rows(exp, runs.run_id.tolist(), point), runs)
    writer = PillowWriter(fps=2)
    fig = _hist(exp, group, point, overlay=False, steps=[steps[0]])
    with writer.saving(fig, str(path), dpi=80):
        for step in steps:  # one layout: every frame is the same (reused) figure, drawn again
            fig = _hist(exp, group, point, overlay=False, steps=[step])
            writer.grab_frame()
    _done(fig)


# ---------------------------------------------------------------------------------------------------------------
# Distributions over training: percentile bands per layer and point


def _dist(exp: Experiment, group: Any):
    runs = _first_seed(_group(exp, group), exp.compare)
    h = exp.tables["histograms"]
    h = h[h.run_id.isin(runs.run_id) & (h.layer > 0)]
    points = [p for p in FORWARD_POINTS if p in set(h.point)]
    layers = sorted(h.layer.unique())
    fig, axs = _subplots(len(layers), len(points), (WIDTH, 1.05 * len(layers) + 1.1), reuse="dist")
    panels = dict(list(h.sort_values("step").groupby(["run_id", "layer", "point"])))
    shown = {}  # compared value -> what its legend entry says
    marked = False
    variants = _variants(exp, runs)
    lines = len(runs) > 2  # three or more overlaid bands blur into one colour: percentiles as lines instead
    for i, (value, vruns) in enumerate(variants):
        color = COLORS[i % len(COLORS)]
        for _, run in vruns.iterrows():
            shown[value] = _value_label(exp.compare, value)
            steps = h.loc[h.run_id == run.run_id, "step"]
            if run.status == "diverged" and steps[steps < run.diverged_step].nunique() < 2:
                # Diverged before a second record: nothing over time to draw, and its values at step 0 would
                # set every axis's scale.
                shown[value] += f" (diverged at step {run.diverged_step}: not drawn)"
                continue
            for r, layer in enumerate(layers):
                for c, point in enumerate(points):
                    d = panels.get((run.run_id, layer, point), h.iloc[:0])
                    d = d[(d.nan == 0) & (d.inf == 0)]
                    if run.status == "diverged":
                        d = d[d.step < run.diverged_step]
                    ax = axs[r][c]
                    x = d.step.to_numpy()
                    if lines:
                        for q, style in (("p1", ":"), ("p20", "--"), ("p80", "--"), ("p99", ":")):
                            ax.plot(x, d[q], color=color, lw=0.9, ls=style)
                    else:
                        _band(ax, x, d.p1.to_numpy(), d.p99.to_numpy(), color=color, alpha=0.15)
                        _band(ax, x, d.p20.to_numpy(), d.p80.to_numpy(), color=color, alpha=0.35)
                    ax.plot(x, d.p50, color=color, lw=1.2)
                    if run.status == "diverged" and len(x):
                        ax.plot([x[-1]], [d.p50.iloc[-1]], "x", color=BROKEN, ms=6, mew=2)
                        marked = True
    span = (h.step.min(), h.step.max())
    for r, layer in enumerate(layers):
        axs[r][0].set_ylabel(f"layer {layer}")
        for c, point in enumerate(points):
            ax = axs[r][c]
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            _few_ticks(ax)
            ax.set_xlim(*span)
            if r < len(layers) - 1:  # one step axis, at the bottom (a shared axis costs ticks in every panel)
                ax.xaxis.set_major_locator(matplotlib.ticker.NullLocator())
            if r == 0:
                ax.set_title(POINT_TITLES[point])
    for ax in axs[-1]:
        ax.set_xlabel("step")
    handles = [
        matplotlib.patches.Patch(color=COLORS[i % len(COLORS)], alpha=0.5 if not lines else 1.0, label=label)
        for i, label in enumerate(shown.values())
    ]
    if lines:
        handles += [
            matplotlib.lines.Line2D([], [], color="gray", lw=1.2, label="median"),
            matplotlib.lines.Line2D([], [], color="gray", lw=0.9, ls="--", label="20th, 80th percentile"),
            matplotlib.lines.Line2D([], [], color="gray", lw=0.9, ls=":", label="1st, 99th percentile"),
        ]
    else:
        handles += [
            matplotlib.lines.Line2D([], [], color="gray", lw=1.2, label="median"),
            matplotlib.patches.Patch(color="gray", alpha=0.5, label="20-80th percentile"),
            matplotlib.patches.Patch(color="gray", alpha=0.2, label="1-99th percentile"),
        ]
    if marked:
        handles.append(matplotlib.lines.Line2D([], [], ls="", marker="x", color=BROKEN, label="diverged after"))
    h = fig.get_figheight()
    ncols = min(len(handles), 4)
    fig.legend(handles=handles, loc="upper center", ncols=ncols, frameon=False, bbox_to_anchor=(0.5, 1 - 0.25 / h))
    title = _title(exp, group, runs, "distributions over training") + f" ({exp.mode_text()})"
    _fitted_suptitle(fig, title, y=1 - 0.05 / h)
    rows = math.ceil(len(handles) / ncols)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.45 / h, top=1 - (0.45 + 0.2 * rows) / h)
    return fig


def _ridge(exp: Experiment, group: Any, point: str = "post_act"):
    """Histograms over training, offset upwards step by step (TensorBoard's histogram view), one panel per compared
    run and layer. Each histogram is scaled to its own tallest bin; a diverged run's steps after its divergence
    are left out and said so."""
    runs = _first_seed(_group(exp, group), exp.compare)
    hists = _hist_rows(exp, runs.run_id.tolist(), point)
    hists = hists[hists.layer > 0]
    layers = sorted(hists.layer.unique())
    steps = _shown_steps(hists, runs)
    fig, axs = plt.subplots(len(runs), len(layers), figsize=(WIDTH, 2.0 * len(runs) + 0.9), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for r, (_, run) in enumerate(runs.iterrows()):
        mine = hists[hists.run_id == run.run_id]
        for c, layer in enumerate(layers):
            ax = axs[r][c]
            rows = mine[(mine.layer == layer) & mine.step.isin(steps)].sort_values("step", ascending=False)
            broken = rows[(rows.nan > 0) | (rows.inf > 0)]
            if run.status == "diverged":
                broken = rows[rows.step >= run.diverged_step]
            rows = rows.drop(broken.index)
            for h in rows.itertuples():
                k = steps.index(int(h.step))
                counts = np.asarray(h.counts, dtype=float)
                top = counts.max() or 1.0
                edges = np.linspace(h.lo, h.hi, len(counts) + 1)
                color = cmap(k / max(len(steps) - 1, 1))
                ax.stairs(k + 0.9 * counts / top, edges, baseline=k, fill=True, color=color, ec="white", lw=0.5)
            if len(broken):
                _note(ax, 0.5, 0.98, f"diverged at step {run.diverged_step}", ha="center", va="top", fontsize=6.5)
            ax.tick_params(labelsize=6.5, length=2, labelleft=c == 0)
            if len(rows):
                ax.set_xticks(_edge_ticks(rows.lo.min(), rows.hi.max()))
            if r == 0:
                ax.set_title(f"layer {layer}")
        every = math.ceil(len(steps) / 7)  # at most 7 labelled steps
        axs[r][0].set_yticks(range(0, len(steps), every), [str(s) for s in steps[::every]])
        axs[r][0].set_ylabel((_value_label(exp.compare, run[exp.compare]) + "\n" if exp.compare else "") + "step")
    fig.suptitle(
        _title(exp, group, runs, f"histograms over training, values {POINT_TITLES.get(point, point)}")
        + f"\non the {exp.mode_text()}; each histogram scaled to its tallest bin, later steps higher",
        fontsize=8.5,
    )
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.35 / fig.get_figheight(), top=1 - 0.6 / fig.get_figheight())
    return fig


def _band(ax: plt.Axes, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, **kw: Any) -> None:
    """The area between two curves as one polygon (fill_between's general machinery costs 5x more here)."""
    if len(x):
        ax.fill(np.r_[x, x[::-1]], np.r_[lo, hi[::-1]], lw=0, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Gradients: per-layer norms over training


def _grad(exp: Experiment, group: Any):
    """Per layer against the step: the norms of the backpropagated and the weight gradient (log scale), and, where
    recorded (record.ics_every), internal covariate shift as cos(G, G') (Santurkar et al. 2018)."""
    runs = _first_seed(_group(exp, group), exp.compare)
    layers = exp.tables["layers"]
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
                ax.plot(d.step[ok], y[ok], color=_layer_color(layer, depth), lw=1.2, label=f"layer {layer}")
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
            if run.status == "diverged":
                _note(ax, 0.98, 0.04, f"diverged at step {run.diverged_step}", ha="right", fontsize=7.5)
            head = _value_label(exp.compare, value) if exp.compare and r == 0 else ""
            ax.set_title(f"{head}\n{title}" if head else title)
            if r == len(metrics) - 1:
                ax.set_xlabel("step")
    axs[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    title = _title(
        exp, group, runs, "gradients per layer" + (" and internal covariate shift" if len(metrics) == 3 else "")
    )
    title += f" ({exp.mode_text()})"
    _fitted_suptitle(fig, title, 9)
    span = (layers.step.min(), layers.step.max())  # ICS is measured at fewer steps: one step axis for every row
    for ax in axs.ravel():
        ax.set_xlim(*span)
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.88, bottom=0.5 / h, top=1 - 0.8 / h, hspace=0.45)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# The loss landscape along the gradient (record.landscape_every)


def _landscape(exp: Experiment, group: Any):
    """Santurkar et al. (2018, fig. 4)'s three panels against the step, compared runs overlaid: the range of the loss
    along the gradient (a band from its min to its max), the largest change of the gradient there, and the effective
    beta-smoothness. Narrower and lower is smoother."""
    runs = _first_seed(_group(exp, group), exp.compare)
    table = exp.tables["landscape"]
    table = table[table.run_id.isin(runs.run_id)]
    summary = landscape_summary(table)
    fig, axs = _subplots(1, 3, (WIDTH, 3.5), "landscape")
    titles = (
        "loss at the step (line), along the gradient (band)",
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
        _band(
            axs[0][0],
            band.index.to_numpy(float),
            band["min"].to_numpy(),
            band["max"].to_numpy(),
            color=color,
            alpha=0.35,
        )
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
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.24, top=0.8, wspace=0.28)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Batch norm's running statistics (record.running_stats, record.precise_bn)


def _running(exp: Experiment, group: Any):
    """For each compared run with running statistics: per layer, how far the running mean and variance are from the
    training set's (record.running_stats), and the training-set loss with batch statistics (train mode), running
    statistics (eval mode) and, at the end, with recomputed ones (precise BN's, and the population's): the gap between
    train and eval mode is what deploying the model costs; precise BN's loss shows the moving averages' share of it,
    the population's what is left of mini-batch statistics."""
    runs = _first_seed(_group(exp, group), exp.compare)
    layers, curves = exp.tables["layers"], exp.tables["curves"]
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
        if run.status == "diverged":
            _note(ax, 0.98, 0.04, f"diverged at step {run.diverged_step}", ha="right")
    axs[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axs[2][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(
        _title(exp, group, runs, "running statistics against the training set's")
        + "\n(each layer's input over the training set, the network in eval mode)",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.08, right=0.8, bottom=0.07, top=0.85, hspace=0.45)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Cost curves: one panel per group, one line per compared value, seeds as mean and min-max band


def _cost(exp: Experiment):
    groups = exp.groups()
    curves = exp.tables["curves"]
    fig, axs = _grid(len(groups), 3, 2.6, top=0.9, sharey=True)
    finite_all: list[float] = []
    has_test = False
    nseeds = 1
    for ax, (key, grp) in zip(axs.ravel(), groups, strict=False):
        marks = []
        for i, (_, runs) in enumerate(_variants(exp, grp)):
            color = COLORS[i % len(COLORS)]
            for split, mode, style in (("train", "train", "-"), ("test", "eval", "--")):
                c = curves[curves.run_id.isin(runs.run_id) & (curves.split == split) & (curves["mode"] == mode)]
                if c.empty:
                    continue
                wide = c.pivot_table(index="step", columns="run_id", values="loss", aggfunc="first", dropna=False)
                vals = wide.to_numpy(dtype=float, copy=True)
                vals[~np.isfinite(vals)] = np.nan  # a diverged seed leaves the aggregate at its divergence step
                with np.errstate(all="ignore"), warnings.catch_warnings(action="ignore", category=RuntimeWarning):
                    mean, lo, hi = np.nanmean(vals, 1), np.nanmin(vals, 1), np.nanmax(vals, 1)
                steps = wide.index.to_numpy()
                ok = np.isfinite(mean)
                finite_all += list(mean[ok]) + list(lo[ok]) + list(hi[ok])
                nseeds = max(nseeds, vals.shape[1])
                has_test |= split == "test"
                ax.plot(steps[ok], mean[ok], style, color=color, lw=1.5)
                if vals.shape[1] > 1:
                    ax.fill_between(steps[ok], lo[ok], hi[ok], color=color, alpha=0.2, lw=0)
                if split == "train":
                    for _, run in runs[runs.status == "diverged"].iterrows():
                        col = wide[run.run_id].to_numpy(dtype=float)
                        fin = np.isfinite(col)
                        last = (steps[fin][-1], col[fin][-1]) if fin.any() else (steps[0], np.nan)
                        marks.append((color, int(run.diverged_step), last))
        _divergence_marks(ax, marks, finite_all)
        ax.set_title(_label(exp.group_keys, key) or exp.name)
        ax.grid(alpha=0.3)
    ylog = _wide(finite_all)
    for ax in axs.ravel():
        if ylog:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(PLAIN)
    for ax in axs[-1]:
        ax.set_xlabel("step (parameter updates)")
    for ax in axs[:, 0]:
        ax.set_ylabel("loss" + (" (log scale)" if ylog else ""))
    handles = [
        matplotlib.lines.Line2D([], [], color=COLORS[i % len(COLORS)], lw=2, label=_value_label(exp.compare, v))
        for i, (v, _) in enumerate(_variants(exp, exp.runs))
    ]
    handles.append(
        matplotlib.lines.Line2D([], [], color="black", label=f"training set, train mode{exp.dropout_text()}")
    )
    if has_test:
        handles.append(matplotlib.lines.Line2D([], [], color="black", ls="--", label="test set, eval mode"))
    if nseeds > 1:
        handles.append(matplotlib.patches.Patch(color="gray", alpha=0.3, label=f"band: min-max over {nseeds} seeds"))
    title = f"{exp.name}: cost curves" + (f" (line: mean over {nseeds} seeds)" if nseeds > 1 else "")
    # The title heads the legend, so that the two never overlap whatever the number of entries.
    legend = fig.legend(
        handles=handles, loc="upper center", ncols=min(len(handles), 3), frameon=False, bbox_to_anchor=(0.5, 1.0)
    )
    legend.set_title(title, prop={"size": 10})
    h = fig.get_figheight()
    rows = math.ceil(len(handles) / 3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.45 / h, top=1 - (0.35 + 0.17 * rows + 0.25) / h)
    fig.subplots_adjust(hspace=0.45)
    return fig


def _divergence_marks(ax: plt.Axes, marks: list, finite_all: list[float]) -> None:
    for color, dstep, (s, v) in marks:
        y = v if np.isfinite(v) else (max(finite_all) if finite_all else 1.0)
        ax.plot([s], [y], "x", color=color, ms=9, mew=2.5)
        ax.axvline(dstep, color=color, ls=":", lw=1)
    if marks:
        by_color: dict[str, list[int]] = {}
        for color, dstep, _ in marks:
            by_color.setdefault(color, []).append(dstep)
        text = "\n".join(
            f"{len(v)} run(s) diverged at step {min(v)}" + (f"-{max(v)}" if max(v) != min(v) else "")
            for v in by_color.values()
        )
        _note(ax, 0.98, 0.97, text + "\n(x: last finite loss)", ha="right", va="top", fontsize=7)


# ---------------------------------------------------------------------------------------------------------------
# Final numbers against a numeric grid key (batch size, weight scale, lr): one line per compared value


def numeric_axes(exp: Experiment) -> list[str]:
    """Grid keys other than seed whose values are all numbers, with at least 3 of them."""
    found = []
    for a in exp.axes:
        values = exp.all_runs[a].dropna().unique()
        numeric = all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in values)
        if a != "seed" and numeric and len(values) >= 3:
            found.append(a)
    return found


def _final_vs(exp: Experiment, key: str):
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
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
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
    band = f" (line: mean over {nseeds} seeds, band: min-max)" if nseeds > 1 else ""
    fig.suptitle(f"{exp.name}: final numbers against {key}{band}", fontsize=9.5)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Dead / saturated units: layer x step, one row of panels per compared run


def _units(exp: Experiment, group: Any):
    runs = _first_seed(_group(exp, group), exp.compare)
    layers = exp.tables["layers"]
    layers = layers[layers.run_id.isin(runs.run_id)]
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
    fig, axs = plt.subplots(len(runs), len(shown), figsize=(WIDTH, 1.3 * len(runs) + 1.0), squeeze=False)
    image = None
    cmap = plt.get_cmap("magma_r").with_extremes(bad="lightgray")
    for r, (_, run) in enumerate(runs.iterrows()):
        data = layers[layers.run_id == run.run_id]
        if run.status != "diverged":  # rows of other measurements only (record.ics_every) are not unit rows
            data = data[data.dead_fraction.notna()]
        for c, metric in enumerate(shown):
            ax = axs[r][c]
            wide = data.pivot_table(index="layer", columns="step", values=metric, aggfunc="first", dropna=False)
            if r == 0:
                ax.set_title(titles[metric])
            ax.set_ylabel((_value_label(exp.compare, run[exp.compare]) + "\n" if exp.compare else "") + "layer")
            if wide.empty:
                continue
            steps = wide.columns.to_numpy(float)
            image = ax.pcolormesh(
                _edges(steps),
                _edges(wide.index.to_numpy(float)),
                np.ma.masked_invalid(wide.to_numpy(dtype=float)),
                cmap=cmap,
                vmin=0,
                vmax=1,
            )
            ax.set_yticks(list(wide.index))
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
            ax.tick_params(labelsize=7)
            if run.status == "diverged":
                _note(ax, 0.99, 0.03, f"diverged at step {run.diverged_step} (gray: NaN/inf)", ha="right")
    for ax in axs[-1]:
        ax.set_xlabel("step")
    if image is not None:
        fig.colorbar(image, ax=axs.ravel().tolist(), fraction=0.025, pad=0.01, label="fraction")
    fig.suptitle(
        _title(exp, group, runs, "dead and saturated units") + (f" ({'; '.join(notes)})" if notes else ""),
        fontsize=9,
    )
    return fig


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
    "dist": _dist,
    "ridge": _ridge,
    "grad": _grad,
    "units": _units,
    "animation": _animation,
    "landscape": _landscape,
    "running": _running,
}

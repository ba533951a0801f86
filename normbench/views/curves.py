"""Figures of final and running numbers: the cost curves (cost) and the final numbers against a numeric grid key
(final_vs)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.results import tied_with
from normbench.views.data import ExperimentData
from normbench.views.seeds import short_number
from normbench.views.style import (
    COLORS,
    HATCHES,
    PLAIN,
    WIDTH,
    compared_variants,
    group_label,
    log_y,
    note,
    panel_grid,
    seed_count,
    spans_decades,
    spread_band,
    variant_label,
)


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


def cost(exp: ExperimentData):
    """Loss curves, one panel per group. The seeds that did not diverge are a mean with a min-max band and set the
    y range; a diverged seed is a thin line up to its last finite loss, marked there (at the axis's edge, with its
    value, when that loss lies beyond the range): a run that blew up cannot flatten the others' curves."""
    groups = exp.groups()
    fig, axs = panel_grid(len(groups), 3, 2.6, top=0.9, sharey=True)
    drawn: list[_Curve] = []
    for ax, (key, grp) in zip(axs.ravel(), groups, strict=False):
        for i, (_, runs) in enumerate(compared_variants(exp, grp)):
            drawn += _cost_curves(exp, ax, runs, COLORS[i % len(COLORS)])
        ax.set_title(group_label(exp.group_keys, key) or exp.name)
        ax.grid(alpha=0.3)
    healthy = [c for c in drawn if c.run is None] or drawn  # all diverged: their losses are the data
    finite = np.concatenate([np.r_[c.mean, c.lo, c.hi] for c in healthy] or [np.array([])])
    finite = finite[np.isfinite(finite)]
    ylog = spans_decades(finite)
    for c in drawn:
        c.ax.plot(c.steps, c.mean, c.style, color=c.color, lw=1.5 if c.run is None else 0.8)
        if c.run is None and np.any(c.lo != c.hi):
            spread_band(c.ax, c.steps, c.lo, c.hi, c.color, COLORS.index(c.color))
    limits = _margins(finite, log=ylog)
    for ax in axs.ravel():
        if ylog:
            log_y(ax)
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
        note(ax, 0.98, 0.95 - 0.2 * k, text, ha="right", va="top", fontsize=7, color=color)


def _span(values: list[float]) -> str:
    """'35', '4-5', '1.7e9' or '1.8e8-1.7e9': the range of a few numbers (steps, losses), short."""
    lo, hi = short_number(min(values)), short_number(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _cost_legend(fig: plt.Figure, exp: ExperimentData, drawn: list[_Curve]) -> None:
    """The cost figure's legend, headed by its title, above the panels."""
    handles = [
        matplotlib.lines.Line2D([], [], color=COLORS[i % len(COLORS)], lw=2, label=variant_label(exp, exp.runs, v))
        for i, (v, _) in enumerate(compared_variants(exp, exp.runs))
    ]
    handles.append(
        matplotlib.lines.Line2D([], [], color="black", label=f"training set, train mode{exp.dropout_text()}")
    )
    if any(c.style == "--" for c in drawn):
        handles.append(matplotlib.lines.Line2D([], [], color="black", ls="--", label="test set, eval mode"))
    nseeds = seed_count(exp.runs, exp.compare)
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


def final_vs(exp: ExperimentData, key: str):
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
            for i, (value, vruns) in enumerate(compared_variants(exp, grp)):
                ok = vruns[vruns.status == "ok"]
                stats = ok.groupby(key)[metric].agg(["mean", "min", "max"]).sort_index()
                lost = len(vruns) - len(ok)
                color = COLORS[i % len(COLORS)]
                label = variant_label(exp, grp, value) + (f" ({lost} diverged/failed)" if lost else "")
                ax.plot(stats.index, stats["mean"], "o-", color=color, ms=3, label=label)
                spread_band(ax, stats.index, stats["min"], stats["max"], color, i)
            xs = runs[key].astype(float)
            if xs.min() > 0 and xs.max() / xs.min() >= 8:
                ax.set_xscale("log", base=2 if key.endswith("batch_size") else 10)
                ax.xaxis.set_major_formatter(PLAIN)
            if metric == "final_train_loss" and spans_decades(list(runs[metric].dropna())):
                log_y(ax)
            ax.set_xlabel(key)
            ax.set_title(title + (f" | {group_label(rest, gkey)}" if rest else ""))
            ax.grid(alpha=0.3)
            ax.legend()
    nseeds = runs.seed.nunique() if "seed" in runs.columns else 1
    band = f" (line: mean over {nseeds} seeds, hatched: min-max)" if nseeds > 1 else ""
    fig.suptitle(f"{exp.name}: final numbers against {key}{band}", fontsize=9.5)
    fig.tight_layout()
    return fig

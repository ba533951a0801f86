"""Figures of the values' distributions: the histogram grid (hist), the compared runs overlaid (overlay), every step
offset upwards (ridge), the percentiles against the step (dist), and the grid over training as a GIF (animation).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.points import FORWARD as FORWARD_POINTS
from normbench.points import WORDS as POINT_WORDS
from normbench.views.data import ExperimentData
from normbench.views.seeds import cdf_spread, other_seeds_note
from normbench.views.style import (
    BROKEN,
    COLORS,
    OUT_OF_RANGE,
    PLAIN,
    WIDTH,
    close_figure,
    compared_variants,
    diverged_band,
    eval_start_note,
    figure_title,
    first_seed,
    fitted_suptitle,
    note,
    padded,
    panel_grid,
    percent,
    run_label,
    runs_of_group,
    seed_count,
    step_span,
    subplots,
    title_notes,
    variant_label,
)


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
        note(ax, 0.5, 0.5, why.replace(" at ", "\nat "), ha="center", va="center", fontsize=8)
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
                ax.annotate(percent(share), (x + w / 2, share), ha="center", va="bottom", fontsize=6.5, color="#555555")


def _edge_ticks(lo: float, hi: float) -> list[float]:
    """The range's ends (a bounded activation's automatic range is its bounds: tanh's -1 and 1) and 0 inside."""
    ticks = [lo, hi] + ([0.0] if lo < 0 < hi and min(-lo, hi) > 0.2 * (hi - lo) else [])
    return sorted({float(f"{t:.2g}") for t in ticks})


def hist(exp: ExperimentData, group: Any, point: str, steps: list[int] | None = None):
    """The histogram grid of one seed: a row per compared run and step (the first and the last recorded one unless
    `steps` says), a column per layer."""
    runs, hists, steps = _hist_data(exp, group, point, steps)
    rows = [(s, [r]) for s in steps for _, r in runs.iterrows()]
    return _hist_grid(exp, group, point, runs, hists, rows)


def overlay(exp: ExperimentData, group: Any, point: str):
    """The histogram grid with the compared runs on the same axes (--overlay): a row per step, a column per layer;
    each run's histogram an outline in its colour (translucent fills would blend into a colour of no run), over the
    union of their ranges."""
    runs, hists, steps = _hist_data(exp, group, point, None)
    fig = _hist_grid(exp, group, point, runs, hists, [(s, [r for _, r in runs.iterrows()]) for s in steps])
    handles = [
        matplotlib.lines.Line2D([], [], color=COLORS[i % len(COLORS)], lw=1.5, label=run_label(exp, runs, r))
        for i, (_, r) in enumerate(runs.iterrows() if exp.compare else [(0, None)])
    ]
    fig.legend(handles=handles, loc="upper right", ncols=len(handles), frameon=False)
    return fig


def _hist_data(
    exp: ExperimentData, group: Any, point: str, steps: list[int] | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[int]]:
    """The runs a histogram grid draws (the first seed of each compared value), their histograms of `point`, and
    its steps: the given ones, else the first and the last recorded step."""
    runs = first_seed(runs_of_group(exp, group), exp.compare)
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
    fig, axs = panel_grid(len(rows) * len(layers), len(layers), 1.15 if len(layers) > 4 else 1.6, top=0.8, reuse="hist")
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
                who = run_label(exp, runs, one) + "\n" if exp.compare and len(shown) == 1 else ""
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
        note(ax, 0.97, 0.95 - 0.22 * k, why, ha="right", va="top", color=color, fontsize=6.5)
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
        figure_title(exp, group, runs, f"values {POINT_WORDS.get(point, point)}"),
        x=0.01,
        ha="left",
        fontsize=9.5,
    )
    key = "gray hatched bars beyond the edges: values outside the range; y: share of values per bin"
    group_runs = runs_of_group(exp, group)
    h = exp.tables["histograms"]
    spread = cdf_spread(h[h.run_id.isin(group_runs.run_id) & (h.point == point)])
    lines = [f"on the {exp.mode_text()}. {key}", other_seeds_note(exp, group_runs, runs, spread)]
    return title_notes(fig, [*lines, eval_start_note(exp, runs, steps)], 0.01, 0.3)


def animation(exp: ExperimentData, group: Any, point: str, path: Path | None = None) -> None:
    """The histogram grid at every recorded step, one GIF frame each (matplotlib's Pillow writer)."""
    from matplotlib.animation import PillowWriter

    runs = first_seed(runs_of_group(exp, group), exp.compare)
    steps = _shown_steps(_hist_rows(exp, runs.run_id.tolist(), point), runs)
    writer = PillowWriter(fps=2)
    fig = hist(exp, group, point, steps=[steps[0]])
    with writer.saving(fig, str(path), dpi=80):
        for step in steps:  # one layout: every frame is the same (reused) figure, drawn again
            fig = hist(exp, group, point, steps=[step])
            writer.grab_frame()
    close_figure(fig)


def dist(exp: ExperimentData, group: Any):
    """Distributions over training (Glorot & Bengio 2010): the 1/20/50/80/99th percentiles of each layer's values
    against the step, one column per layer, one row per point and compared run (its first seed), every panel with
    its own y range: no series hides under another or shrinks to a line on another's scale. Dotted: the median's
    range over the seeds that did not diverge. A diverged run's steps from its divergence on are a band saying so."""
    group_runs = runs_of_group(exp, group)
    runs = first_seed(group_runs, exp.compare)
    h = exp.tables["histograms"]
    h = h[h.run_id.isin(group_runs.run_id) & (h.layer > 0) & (h.nan == 0) & (h.inf == 0)]
    points = [p for p in FORWARD_POINTS if p in set(h.point)]
    layers = sorted(h.layer.unique())
    variants = compared_variants(exp, runs)
    nrows = len(points) * (len(variants) + 1) - 1  # a thin spacer row between the points' blocks
    ratios = tuple(([1.0] * len(variants) + [0.32]) * len(points))[:nrows]
    fig, axs = subplots(
        nrows, len(layers), (WIDTH, 0.92 * len(points) * len(variants) + 1.7), "dist", height_ratios=ratios
    )
    panels = dict(list(h.sort_values("step").groupby(["run_id", "layer", "point"])))
    span = step_span(exp, exp.tables["histograms"].step)
    seeds = seed_count(group_runs, exp.compare)
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
            name = variant_label(exp, runs, value) if exp.compare else ""
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
    _dist_title(fig, exp, group, runs, sorted(h.step.unique()), seeds)
    return fig


def _dist_title(fig: plt.Figure, exp: ExperimentData, group: Any, runs: pd.DataFrame, steps: list, seeds: int) -> None:
    """The distribution figure's title, its key and what step 0 in eval mode is, and the room they take."""
    h_in = fig.get_figheight()
    title = figure_title(exp, group, runs, "distributions over training") + f" ({exp.mode_text()})"
    fitted_suptitle(fig, title, y=1 - 0.05 / h_in)
    key = "band: 1st-99th percentile (light), 20th-80th (dark); line: median; each panel has its own y range"
    if seeds > 1:
        key += f"; dotted: the median's range over the {seeds} seeds (those that did not diverge)"
    lines = [key]
    artefact = eval_start_note(exp, runs, steps)
    if artefact:
        lines.append(artefact)
    n = title_notes(fig, lines, 0.5, 0.27, ha="center")
    fig.subplots_adjust(
        left=0.08, right=0.99, bottom=0.45 / h_in, top=1 - (0.75 + 0.12 * n) / h_in, hspace=0.3, wspace=0.5
    )


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
        diverged_band(ax, float(run.diverged_step), span[1], f"diverged\nat step {run.diverged_step}", 6.5)
    ax.set_xlim(*padded(span))
    ax.grid(axis="y", alpha=0.3)  # a grid line at every step tick of every panel costs more than it says
    ax.tick_params(labelsize=6.5, length=2, pad=1, labelbottom=bottom)
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3) if bottom else matplotlib.ticker.NullLocator())


BANDS = (("p1", "p99"), ("p20", "p80"))  # the percentile bands of the distribution figure, light then dark


def _median_ranges(exp: ExperimentData, h: pd.DataFrame, runs: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """(compared value, layer, point) -> the min and max per step of the median over that value's seeds that did not
    diverge, where there are two or more of them."""
    out = {}
    for value, vruns in compared_variants(exp, runs):
        ok = vruns[vruns.status != "diverged"].run_id
        if len(ok) < 2:
            continue
        ranges = h[h.run_id.isin(ok)].groupby(["layer", "point", "step"]).p50.agg(["min", "max"])
        for (layer, point), d in ranges.groupby(level=["layer", "point"]):
            out[(value, layer, point)] = d.droplevel(["layer", "point"])
    return out


def ridge(exp: ExperimentData, group: Any, point: str = "post_act"):
    """Histograms over training, offset upwards step by step (TensorBoard's histogram view), one panel per compared
    run and layer. Each histogram is scaled to its own tallest bin; a diverged run's steps after its divergence
    are left out and said so."""
    runs = first_seed(runs_of_group(exp, group), exp.compare)
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
            _ridge_panel(ax, rows, run, steps, cmap)
            ax.tick_params(labelsize=6.5, length=2, labelleft=c == 0)
            if len(rows):
                ax.set_xticks(_edge_ticks(rows.lo.min(), rows.hi.max()))
            if r == 0:
                ax.set_title(f"layer {layer}")
        every = math.ceil(len(steps) / 7)  # at most 7 labelled steps
        axs[r][0].set_yticks(range(0, len(steps), every), [str(s) for s in steps[::every]])
        axs[r][0].set_ylabel((run_label(exp, runs, run) + "\n" if exp.compare else "") + "step")
    group_runs = runs_of_group(exp, group)
    h = exp.tables["histograms"]
    spread = cdf_spread(h[h.run_id.isin(group_runs.run_id) & (h.point == point)])
    lines = [
        f"on the {exp.mode_text()}; each histogram scaled to its tallest bin, later steps higher",
        other_seeds_note(exp, group_runs, runs, spread),
        eval_start_note(exp, runs, steps),
    ]
    fig.suptitle(
        figure_title(exp, group, runs, f"histograms over training, values {POINT_WORDS.get(point, point)}"),
        fontsize=8.5,
    )
    height = fig.get_figheight()
    n = title_notes(fig, lines, 0.5, 0.28, ha="center")
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.35 / height, top=1 - (0.6 + 0.12 * n) / height)
    return fig


def _ridge_panel(ax: plt.Axes, rows: pd.DataFrame, run: pd.Series, steps: list[int], cmap: Any) -> None:
    """One run's histograms of one layer, step k's offset k upwards; a diverged run's steps from its divergence on
    a band saying so."""
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

"""Figures of what training meets inside the net: per-layer gradient norms and internal covariate shift (grad), the
loss landscape along the gradient (landscape), batch norm's running statistics (running)."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.views.data import ExperimentData
from normbench.views.seeds import other_seeds_note, ratio_spread
from normbench.views.style import (
    COLORS,
    WIDTH,
    compared_variants,
    diverged_band,
    eval_start_note,
    figure_title,
    first_seed,
    fitted_suptitle,
    layer_color,
    log_y,
    note,
    padded,
    runs_of_group,
    spread_band,
    step_span,
    subplots,
    title_notes,
    variant_label,
)
from normbench.views.summary import landscape_summary


def grad(exp: ExperimentData, group: Any):
    """Per layer against the step: the norms of the backpropagated and the weight gradient (log scale), and, where
    recorded (record.ics_every), internal covariate shift as cos(G, G') (Santurkar et al. 2018)."""
    group_runs = runs_of_group(exp, group)
    runs = first_seed(group_runs, exp.compare)
    layers = exp.tables["layers"]
    seeds_note = other_seeds_note(
        exp,
        group_runs,
        runs,
        ratio_spread(layers[layers.run_id.isin(group_runs.run_id)], ["backprop_norm", "grad_norm"], "gradient norms"),
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
    variants = compared_variants(exp, runs)
    fig, axs = subplots(len(metrics), len(variants), (WIDTH, 2.3 * len(metrics) + 1.0), "grad", sharey="row")
    depth = int(layers.layer.max())
    for c, (value, vruns) in enumerate(variants):
        run = vruns.iloc[0]
        mine = layers[layers.run_id == run.run_id]
        for r, (metric, title) in enumerate(metrics):
            ax = axs[r][c]
            _grad_panel(ax, mine, metric, depth)
            head = variant_label(exp, runs, value) if exp.compare and r == 0 else ""
            ax.set_title(f"{head}\n{title}" if head else title)
            if r == len(metrics) - 1:
                ax.set_xlabel("step")
    depth_handles = [
        matplotlib.lines.Line2D([], [], color=layer_color(layer, depth), lw=1.2, label=f"layer {layer}")
        for layer in sorted(layers.layer.unique())
    ]
    axs[0][-1].legend(handles=depth_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    title = figure_title(
        exp, group, runs, "gradients per layer" + (" and internal covariate shift" if len(metrics) == 3 else "")
    )
    title += f" ({exp.mode_text()})"
    fitted_suptitle(fig, title, 9)
    _grad_steps(exp, axs, variants)
    n = title_notes(fig, [seeds_note, eval_start_note(exp, runs, sorted(layers.step.unique()))], 0.5, 0.3, ha="center")
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.88, bottom=0.5 / h, top=1 - (0.8 + 0.12 * n) / h, hspace=0.45)
    return fig


def _grad_panel(ax: plt.Axes, mine: pd.DataFrame, metric: str, depth: int) -> None:
    """One run's `metric` per layer against the step: a gradient norm on a log axis, or the cosine of ICS."""
    log = metric != "ics_cos"
    for layer, d in mine.groupby("layer"):
        d = d.sort_values("step")
        y = d[metric].to_numpy(float)
        ok = np.isfinite(y) & ((y > 0) if log else True)
        one = "o" if ok.sum() == 1 else None  # a run that diverged after its first record: a point
        ax.plot(d.step[ok], y[ok], color=layer_color(layer, depth), lw=1.2, marker=one, ms=3)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    if log:
        log_y(ax)
    else:
        ax.set_ylim(-1.05, 1.05)
        ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([-1, 0, 1]))
    if log and not (mine[metric] > 0).any():
        zero = (mine[metric] == 0).any()
        why = "0 in every layer at every step:\nno gradient flows" if zero else "no finite values"
        note(ax, 0.5, 0.5, why, ha="center", va="center", fontsize=8)
        ax.set_xlim(mine.step.min(), mine.step.max())


def _grad_steps(exp: ExperimentData, axs: np.ndarray, variants: list) -> None:
    """One step axis for every row (ICS is measured at fewer steps); a diverged run's steps from its divergence on
    a band in each of its panels."""
    span = step_span(exp, exp.tables["layers"].step)
    for ax in axs.ravel():
        ax.set_xlim(*padded(span))
    for c, (_, vruns) in enumerate(variants):
        run = vruns.iloc[0]
        if run.status == "diverged" and not pd.isna(run.diverged_step):
            for r in range(len(axs)):
                diverged_band(axs[r][c], float(run.diverged_step), span[1], f"diverged at step {run.diverged_step}", 8)


def landscape(exp: ExperimentData, group: Any):
    """Santurkar et al. (2018, fig. 4)'s three panels against the step, compared runs overlaid: the range of the loss
    along the gradient (a band from its min to its max), the largest change of the gradient there, and the effective
    beta-smoothness. Narrower and lower is smoother."""
    group_runs = runs_of_group(exp, group)
    runs = first_seed(group_runs, exp.compare)
    table = exp.tables["landscape"]
    every = landscape_summary(table[table.run_id.isin(group_runs.run_id)]).assign(layer=0)
    seeds_note = other_seeds_note(exp, group_runs, runs, ratio_spread(every, ["beta"], "effective beta"))
    table = table[table.run_id.isin(runs.run_id)]
    summary = landscape_summary(table)
    fig, axs = subplots(1, 3, (WIDTH, 3.5), "landscape")
    titles = (
        "loss at the step (line), along the gradient (hatched)",
        "gradient change, max ||g - g'||",
        "effective beta, max ||g - g'|| / ||d||",
    )
    scales = sorted(table.scale.unique())
    for k, (value, vruns) in enumerate(compared_variants(exp, runs)):
        run = vruns.iloc[0]
        color = COLORS[k % len(COLORS)]
        mine = table[table.run_id == run.run_id]
        band = mine.groupby("step").loss.agg(["min", "max"])
        band = band[np.isfinite(band["min"]) & np.isfinite(band["max"]) & (band["min"] > 0)]
        label = variant_label(exp, runs, value) if exp.compare else run.run_id
        x = band.index.to_numpy(float)
        spread_band(axs[0][0], x, band["min"].to_numpy(), band["max"].to_numpy(), color, k)
        start = mine[mine.scale == 0].set_index("step").loss.reindex(band.index)
        axs[0][0].plot(band.index, start, color=color, lw=1.0, label=label)
        mine_summary = summary[summary.run_id == run.run_id]
        for ax, metric in zip(axs[0][1:], ("grad_change", "beta"), strict=True):
            d = mine_summary[np.isfinite(mine_summary[metric]) & (mine_summary[metric] > 0)]
            ax.plot(d.step, d[metric], color=color, lw=1.4, marker="o", ms=2.5)
        blown = mine_summary.step[np.isposinf(mine_summary.loss_range)].tolist()
        if blown:
            where = f"step {blown[0]}" if len(blown) == 1 else f"{len(blown)} steps from {blown[0]}"
            note(axs[0][2], 0.02, 0.96 - 0.07 * k, f"{label}: a point blew up (inf) at {where}", color=color, va="top")
        if run.status == "diverged":
            note(axs[0][0], 0.02, 0.04 + 0.07 * k, f"{label}: diverged at step {run.diverged_step}", color=color)
    for ax, title in zip(axs[0], titles, strict=True):
        log_y(ax)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    handles, labels = axs[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    steps = ", ".join(f"{s:g}" for s in scales if s > 0)
    fig.suptitle(
        figure_title(exp, group, runs, "loss landscape along the gradient")
        + f"\nfrom each measured step to theta - k lr g, k in {{{steps}}}, on the step's batch (batch statistics)",
        fontsize=9,
    )
    n = title_notes(fig, [seeds_note], 0.5, 0.45, ha="center")
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.24, top=1 - (0.7 + 0.12 * n) / 3.5, wspace=0.28)
    return fig


def running(exp: ExperimentData, group: Any):
    """For each compared run with running statistics: per layer, how far the running mean and variance are from the
    training set's (record.running_stats), and the training-set loss with batch statistics (train mode), running
    statistics (eval mode) and, at the end, with recomputed ones (precise BN's, and the population's): the gap between
    train and eval mode is what deploying the model costs; precise BN's loss shows the moving averages' share of it,
    the population's what is left of mini-batch statistics."""
    group_runs = runs_of_group(exp, group)
    runs = first_seed(group_runs, exp.compare)
    layers, curves = exp.tables["layers"], exp.tables["curves"]
    errors = ratio_spread(layers, ["running_mean_err", "running_var_err"], "running statistics' errors")
    seeds_note = other_seeds_note(exp, group_runs, runs[runs.run_id.isin(layers.run_id)], errors)
    with_stats = layers[layers.run_id.isin(runs.run_id) & layers.running_mean_err.notna()].run_id.unique()
    variants = [(v, r) for v, r in compared_variants(exp, runs) if r.run_id.iloc[0] in with_stats]
    if not variants:  # the first seed's runs have none (plot schedules the figure for groups with some)
        fig, axs = subplots(1, 1, (WIDTH, 1.5))
        note(axs[0][0], 0.5, 0.5, "no run of this group keeps running statistics", ha="center", va="center")
        axs[0][0].set_axis_off()
        return fig
    rows = (
        ("running_mean_err", "running mean's error, in stds"),
        ("running_var_err", "running variance's error, |log ratio|"),
    )
    fig, axs = subplots(3, len(variants), (WIDTH, 7.2), "running", sharey="row")
    depth = int(layers.layer.max())
    for c, (value, vruns) in enumerate(variants):
        run = vruns.iloc[0]
        mine = layers[layers.run_id == run.run_id]
        name = variant_label(exp, runs, value) if exp.compare else ""
        for r, (metric, title) in enumerate(rows):
            ax = axs[r][c]
            for layer, d in mine.groupby("layer"):
                d = d.sort_values("step")
                ok = np.isfinite(d[metric]) & (d[metric] > 0)
                color = layer_color(layer, depth)
                ax.plot(d.step[ok], d[metric][ok], color=color, lw=1.2, label=f"layer {layer}")
            log_y(ax)
            ax.grid(alpha=0.3)
            ax.set_title(f"{name}\n{title}" if name and r == 0 else title)
        ax = axs[2][c]
        _modes_panel(ax, curves[(curves.run_id == run.run_id) & (curves.split == "train")])
        log_y(ax)
        ax.grid(alpha=0.3)
        ax.set_title("training-set loss")
        ax.set_xlabel("step")
        if run.status == "diverged" and not pd.isna(run.diverged_step):
            end = float(layers.step.max())
            for r in range(3):
                diverged_band(axs[r][c], float(run.diverged_step), end, f"diverged at step {run.diverged_step}", 7.5)
    axs[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axs[2][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(
        figure_title(exp, group, runs, "running statistics against the training set's")
        + "\n(each layer's input over the training set, the network in eval mode)",
        fontsize=9,
    )
    n = title_notes(fig, [seeds_note], 0.5, 0.45, ha="center")
    fig.subplots_adjust(left=0.08, right=0.8, bottom=0.07, top=1 - (1.08 + 0.12 * n) / 7.2, hspace=0.45)
    return fig


def _modes_panel(ax: plt.Axes, train: pd.DataFrame) -> None:
    """One run's training-set loss in train and eval mode against the step, and with recomputed statistics at the
    end (precise BN's, the population's)."""
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
            mfc = "none" if marker == "o" else color
            ax.plot(at_end.step, at_end.loss, marker, color=color, ms=6, mfc=mfc, label=label)

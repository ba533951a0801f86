"""The figures of a sequence model over time (time.parquet, record.time): saturated (or dead) units as a layer x time
step heat map per variant (time_units), the gradient dL/dh_t against the time step (time_grad), and the values
after the norm as percentile bands against the time step (time_dist)."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.points import POST_ACT, POST_NORM, STATE
from normbench.views.data import ExperimentData
from normbench.views.style import (
    BROKEN,
    COLORS,
    WIDTH,
    compared_variants,
    eval_start_note,
    figure_title,
    first_seed,
    fitted_suptitle,
    log_y,
    panel_grid,
    runs_of_group,
    subplots,
    variant_label,
)


def _time_rows(exp: ExperimentData, runs: pd.DataFrame, point: str) -> pd.DataFrame:
    table = exp.tables["time"]
    return table[table.run_id.isin(runs.run_id) & (table.point == point)]


def _variants(exp: ExperimentData, group: Any) -> tuple[pd.DataFrame, list[tuple[str, pd.Series]]]:
    """The group's first-seed runs and, for each variant, its label and that run."""
    runs = first_seed(runs_of_group(exp, group), exp.compare)
    return runs, [(variant_label(exp, runs, v), vr.iloc[0]) for v, vr in compared_variants(exp, runs)]


def time_units(exp: ExperimentData, group: Any):
    """Saturated values (dead units where the activation has no saturated region) per layer and time step at the last
    recorded step, one panel per variant, one colour scale from 0 to 1."""
    runs, variants = _variants(exp, group)
    rows = _time_rows(exp, runs, POST_ACT)
    metric = "saturated_fraction" if rows.saturated_fraction.notna().any() else "dead_fraction"
    what = "saturated values" if metric == "saturated_fraction" else "dead units"
    step = int(rows.step.max())
    layers = sorted(rows.layer.unique())
    fig, axs = panel_grid(len(variants), 1, 0.35 + 0.28 * len(layers), top=0.75, sharex=True)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="lightgray")
    steps = int(rows.t.max()) + 1
    for ax, (label, run) in zip(axs.ravel(), variants, strict=False):
        mine = rows[(rows.run_id == run.run_id) & (rows.step == step)]
        grid = np.full((len(layers), steps), np.nan)
        for r, layer in enumerate(layers):
            at = mine[mine.layer == layer]
            grid[r, at.t.to_numpy()] = at[metric].to_numpy()
        ax.imshow(
            grid,
            aspect="auto",
            cmap=cmap,
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(-0.5, steps - 0.5, len(layers) + 0.5, 0.5),
        )
        ax.set_yticks(range(1, len(layers) + 1), [str(layer) for layer in layers])
        ax.set_ylabel("layer")
        shares = mine[metric].dropna()
        said = f" (mean {shares.mean():.1%}, max {shares.max():.1%})" if len(shares) else " (nothing recorded)"
        ax.set_title(label + said, loc="left")
    axs.ravel()[len(variants) - 1].set_xlabel("time step t (gray: no real position)")
    height, panel = fig.get_figheight(), 0.35 + 0.28 * len(layers)  # inches: a title above, the t axis below
    fig.subplots_adjust(right=0.88, top=1 - 0.75 / height, bottom=0.5 / height, hspace=0.45 / panel)
    bar = fig.add_axes((0.905, 0.15, 0.015, 0.7))
    fig.colorbar(
        matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), cmap), cax=bar, label=f"share of {what}"
    )
    fitted_suptitle(fig, figure_title(exp, group, runs, f"{what} over time, at step {step}"), 9)
    return fig


def time_grad(exp: ExperimentData, group: Any):
    """||dL/dh_t|| against the time step t (log scale) at the first and the last recorded step, one line per variant
    (a dashed line per further layer)."""
    runs, variants = _variants(exp, group)
    rows = _time_rows(exp, runs, STATE)
    steps = sorted(rows.step.unique())
    shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
    fig, axs = subplots(1, len(shown), (WIDTH, 3.4), sharey=True)
    for ax, step in zip(axs[0], shown, strict=True):
        for k, (label, run) in enumerate(variants):
            mine = rows[(rows.run_id == run.run_id) & (rows.step == step)]
            for d, (layer, at) in enumerate(mine.groupby("layer")):
                name = label + (f", layer {layer}" if mine.layer.nunique() > 1 else "")
                ax.plot(
                    at.t, at.grad_norm, color=COLORS[k % len(COLORS)], ls=("-", "--", ":")[d % 3], lw=1.3, label=name
                )
        log_y(ax)
        ax.set_title(f"step {step}")
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3, which="both")
    axs[0][0].set_ylabel("‖dL/dh_t‖, RMS over sequences")
    axs[0][-1].legend(fontsize=7, loc="best")
    fitted_suptitle(fig, figure_title(exp, group, runs, "gradient through time"), 9)
    said = eval_start_note(exp, runs, shown)
    fig.tight_layout(rect=(0, 0.05 if said else 0, 1, 0.94))
    if said:
        fig.text(0.01, 0.01, f"on the {exp.mode_text()}; {said}", fontsize=6.5, color=BROKEN, wrap=True)
    return fig


def time_dist(exp: ExperimentData, group: Any):
    """The values after the norm against the time step at the last recorded step: the median, 20-80 and 1-99
    percentile bands, one panel per variant (each with its own y range), one panel row per layer."""
    runs, variants = _variants(exp, group)
    rows = _time_rows(exp, runs, POST_NORM)
    step = int(rows.step.max())
    layers = sorted(rows.layer.unique())
    fig, axs = subplots(len(layers), len(variants), (WIDTH, 0.6 + 2.1 * len(layers)), sharex=True)
    for c, (label, run) in enumerate(variants):
        color = COLORS[c % len(COLORS)]
        for r, layer in enumerate(layers):
            ax = axs[r][c]
            at = rows[(rows.run_id == run.run_id) & (rows.step == step) & (rows.layer == layer)]
            ax.fill_between(at.t, at.p1, at.p99, color=color, alpha=0.18, lw=0, label="1-99%")
            ax.fill_between(at.t, at.p20, at.p80, color=color, alpha=0.45, lw=0, label="20-80%")
            ax.plot(at.t, at.p50, color=color, lw=1.2, label="median")
            ax.set_title(label.replace(", ", "\n") if r == 0 else "", fontsize=7)
            ax.set_xlabel("time step t" if r == len(layers) - 1 else "")
    for r, layer in enumerate(layers):
        axs[r][0].set_ylabel(f"layer {layer}: after the norm")
    axs[0][-1].legend(fontsize=6.5, loc="upper right")
    fitted_suptitle(fig, figure_title(exp, group, runs, f"after the norm over time, at step {step}"), 9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig

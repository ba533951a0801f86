"""The figure of dead units and saturated values: layer x step heatmaps, and every seed's values at the end."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normbench.views.data import ExperimentData
from normbench.views.seeds import last_values
from normbench.views.style import (
    REUSABLE,
    WIDTH,
    cell_edges,
    diverged_band,
    empty_figure,
    eval_start_note,
    figure_title,
    first_seed,
    fitted_suptitle,
    note,
    run_label,
    runs_of_group,
    same_variant,
    seed_count,
    step_span,
    title_notes,
)


def units(exp: ExperimentData, group: Any):
    """Dead units and saturated values, layer x step, one row per compared run (its first seed), all rows on one
    step axis; beside each heatmap, every seed's last values per layer (their range and the drawn seed)."""
    group_runs = runs_of_group(exp, group)
    runs = first_seed(group_runs, exp.compare)
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
    end = max(cell_edges(steps)[-1], step_span(exp, every)[1])  # every row on the experiment's step axis
    spread = seed_count(group_runs, exp.compare) > 1
    fig, heat_axs, seed_axs, bar_ax = _units_axes(len(runs), len(shown), spread=spread)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="lightgray")
    for r, (_, run) in enumerate(runs.iterrows()):
        data = layers[layers.run_id == run.run_id]
        for c, metric in enumerate(shown):
            ax = heat_axs[r][c]
            _units_heatmap(ax, data, metric, run, steps, end, cmap)
            if r == 0:
                ax.set_title(titles[metric])
            ax.set_ylabel((run_label(exp, runs, run) + "\n" if exp.compare else "") + "layer")
            if r < len(runs) - 1:  # one step axis, at the bottom: every row's steps line up
                ax.tick_params(labelbottom=False)
            if spread:
                _seed_strip(seed_axs[r][c], layers, same_variant(exp, group_runs, run), run, metric, head=r == 0)
                seed_axs[r][c].set_ylim(ax.get_ylim())
    for ax in heat_axs[-1]:
        ax.set_xlabel("step")
    bar = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), cmap)
    fig.colorbar(bar, cax=bar_ax, label="fraction")
    title = figure_title(exp, group, runs, "dead and saturated units") + (f" ({'; '.join(notes)})" if notes else "")
    fitted_suptitle(fig, title, 9, y=1 - 0.05 / fig.get_figheight())
    below = [f"on the {exp.mode_text()}"]
    artefact = eval_start_note(exp, runs, steps)
    if artefact:
        below.append(artefact)
    h = fig.get_figheight()
    n = title_notes(fig, below, 0.5, 0.27, ha="center")
    fig.subplots_adjust(left=0.08, right=0.93, bottom=0.45 / h, top=1 - (0.6 + 0.12 * n) / h)
    return fig


def _units_axes(nrows: int, nmetrics: int, *, spread: bool) -> tuple[plt.Figure, list, list, plt.Axes]:
    """The units figure's axes: per metric a heatmap column and (with several seeds) a narrow column of every seed's
    last values, one row per compared run; a colour bar at the right. The figure of an earlier call with the same
    layout, emptied, when there is one (as subplots)."""
    key = ("units", nrows, nmetrics, spread)
    if key in REUSABLE:
        fig, axes = REUSABLE[key]
        empty_figure(fig)
        return (fig, *axes)
    fig = plt.figure(figsize=(WIDTH, 1.3 * nrows + 1.3))
    per_metric = [6.0, 1.3] if spread else [6.0]
    ratios = per_metric * nmetrics + [0.18]
    gs = fig.add_gridspec(nrows, len(ratios), width_ratios=ratios, wspace=0.12 if spread else 0.25, hspace=0.25)
    step = len(per_metric)
    heat = [[fig.add_subplot(gs[r, step * c]) for c in range(nmetrics)] for r in range(nrows)]
    seeds = [[fig.add_subplot(gs[r, step * c + 1]) for c in range(nmetrics)] for r in range(nrows)] if spread else []
    bar = fig.add_subplot(gs[:, -1])
    REUSABLE[key] = (fig, (heat, seeds, bar))
    return fig, heat, seeds, bar


def _units_heatmap(
    ax: plt.Axes, data: pd.DataFrame, metric: str, run: pd.Series, steps: np.ndarray, axis_end: float, cmap: Any
) -> None:
    """One run's layer x step heatmap on the cells of the shared step schedule `steps`, the step axis up to
    `axis_end`. A diverged run's cells stop at its divergence step; the steps from there on are a 'diverged at
    step k' band, not values."""
    edges = cell_edges(steps)
    diverged = run.status == "diverged" and not pd.isna(run.diverged_step)
    end = float(run.diverged_step) if diverged else edges[-1]
    before = steps[steps < end]
    wide = data.pivot_table(index="layer", columns="step", values=metric, aggfunc="first", dropna=False)
    if len(before) and not wide.empty:
        values = wide.reindex(columns=before).to_numpy(dtype=float)
        x = edges[: len(before) + 1].copy()
        x[-1] = min(x[-1], end)
        ax.pcolormesh(
            x, cell_edges(wide.index.to_numpy(float)), np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1
        )
        ax.set_yticks(list(wide.index))
        if np.isnan(values).any():
            note(ax, 0.0, 1.01, "gray: NaN/inf", va="bottom", color="#555555")
    if diverged:
        diverged_band(ax, end, axis_end, f"diverged at step {run.diverged_step}", 8)
    ax.set_xlim(edges[0], axis_end)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    ax.tick_params(labelsize=7)


def _seed_strip(ax: plt.Axes, layers: pd.DataFrame, seeds: pd.DataFrame, drawn: pd.Series, metric: str, *, head: bool):
    """Every seed's value of `metric` per layer at its last recorded step: the range over the seeds that did not
    diverge (a bar) and the drawn seed (a dot); the diverged seeds are counted."""
    ok = seeds[seeds.status != "diverged"]
    last = last_values(layers[layers.run_id.isin(ok.run_id)], metric)  # seeds x layers
    if len(last):
        ax.hlines(last.columns, last.min(), last.max(), color="#777777", lw=3.5, alpha=0.6)
        if drawn.run_id in last.index:
            ax.plot(last.loc[drawn.run_id], last.columns, "o", color="black", ms=3)
    lost = len(seeds) - len(ok)
    if lost:
        note(ax, 0.5, 0.5, f"{lost} of {len(seeds)}\ndiverged", ha="center", va="center")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"])
    ax.tick_params(labelsize=6.5, labelleft=False, length=2)
    ax.grid(axis="x", alpha=0.3)
    if head:
        ax.set_title(f"at the end, {len(seeds)} seeds\n(bar: range, dot: seed {drawn.seed})", fontsize=6.5)

"""What a figure is drawn from: one experiment's tables, read once (no matplotlib here).

    exp = read_experiment(Path("results/morvan_tf23"), compare="model.norm")

The tables a figure reads are the runs' own, cut before each diverged run's divergence step (before_divergence),
the histograms with their percentiles (percentiles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normbench.errors import UserError
from normbench.results import (
    FINISHED,
    SelectionError,
    default_compare,
    experiment_axes,
    experiment_axis_groups,
    folder_config,
    group_keys,
    load_runs,
    load_table,
    resolve_axis,
)

PERCENTILES = (1, 20, 50, 80, 99)


class PlotError(UserError):
    pass


class NoSuchFigure(PlotError):
    """draw_figure: the experiment's runs give no figure of that name (e.g. a final_vs figure needs 3 axis values)."""


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
        for name in ("curves", "histograms", "layers", "landscape", "time")
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


def numeric_axes(exp: ExperimentData) -> list[str]:
    """Grid keys other than seed whose values are all numbers, with at least 3 of them."""
    found = []
    for a in exp.axes:
        values = exp.all_runs[a].dropna().unique()
        numeric = all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in values)
        if a != "seed" and numeric and len(values) >= 3:
            found.append(a)
    return found

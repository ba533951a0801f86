"""What a figure of one seed per compared value says about the seeds it does not draw: how far they are from the
drawn one (a Spread: histograms' largest KS distance, per-layer numbers' largest factor)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from normbench.views.data import ExperimentData
from normbench.views.style import compared_variants, run_label, seed_count


@dataclass
class Spread:
    """How far the seeds a figure does not draw are from the one it draws: `what` is measured (words for the figure),
    `measure(drawn run id, other run ids)` its value for one compared value's seeds (None: nothing to compare)."""

    what: str
    measure: Callable[[str, list[str]], str | None]


def other_seeds_note(exp: ExperimentData, group_runs: pd.DataFrame, drawn: pd.DataFrame, spread: Spread) -> str:
    """What a figure of one seed per compared value says about the seeds it does not draw: '' with one seed, else
    'seed s of n drawn; the other seeds' <what>: <value> per compared value', the seeds that diverged counted."""
    n = seed_count(group_runs, exp.compare)
    if n < 2 or drawn.empty:
        return ""
    parts = []
    drawn_ids = set(drawn.run_id)
    for _, seeds in compared_variants(exp, group_runs):
        run = seeds[seeds.run_id.isin(drawn_ids)]
        if run.empty:
            continue
        run = run.iloc[0]
        seeds = seeds[seeds.run_id != run.run_id]
        others = seeds[seeds.status != "diverged"].run_id.tolist()
        lost = int((seeds.status == "diverged").sum())
        value = spread.measure(run.run_id, others) if others else None
        name = run_label(exp, group_runs, run)
        diverged = f"{lost} diverged" if lost else ""
        if value is None:
            parts.append(f"{name}: {diverged or 'nothing to compare'}")
        else:
            parts.append(f"{name} {value}" + (f" ({diverged})" if diverged else ""))
    return f"seed {drawn.seed.iloc[0]} of {n} drawn; the other seeds' {spread.what}: " + "; ".join(parts)


def cdf_spread(table: pd.DataFrame) -> Spread:
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


def ratio_spread(table: pd.DataFrame, metrics: list[str], what: str) -> Spread:
    """The largest factor between an other seed's value and the drawn seed's, over the layers and `metrics` (positive
    per-layer numbers: gradient norms, errors), at the last step."""

    lasts = [last_values(table, metric) for metric in metrics]  # runs x layers each

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
        return f"{worst:.2g}" if worst < 10 else f"{worst:.0f}" if worst < 1000 else short_number(worst)

    return Spread(f"{what} at the last step (largest factor from the drawn seed's)", measure)


def last_values(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each run's values of `metric` per layer at its last step with a value: runs x layers."""
    table = table[table[metric].notna()]
    if table.empty:
        return pd.DataFrame()
    last = table[table.step == table.groupby("run_id").step.transform("max")].drop_duplicates(["run_id", "layer"])
    return last.pivot(index="run_id", columns="layer", values=metric)


def short_number(v: float) -> str:
    """A whole number below 100000 as it is, any other in two digits: 0.31, 1.7e9, 2e-5."""
    if float(v).is_integer() and abs(v) < 1e5:
        return str(int(v))
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{v:.2g}")

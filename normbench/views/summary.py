"""Run records for people and programs: `normbench summary` (table, csv, json) and the demo's verdicts.

records = summary_records(Path("results/morvan_tf23"))
# [{'run_id': ..., 'status': 'diverged', 'diverged_step': 1, 'final_train_loss': None,
#   'model.norm': 'none', 'model.activation': 'relu', 'dead_fraction': [...], ...}, ...]

groups = aggregate_runs(Path("results/morvan_tf23"), ["norm", "activation"])
# a DataFrame, one row per group: runs, ok, diverged, failed, missing, diverged_steps, and for each final number
# `<metric>.mean`, `.std`, `.min`, `.max`, `.n` over the group's ok runs (`normbench summary --by`, the tables of
# `normbench report`)
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from normbench.finals import CURVE_FINALS, HEADINGS, applicable, per_run
from normbench.labels import value_text
from normbench.results import (
    SelectionError,
    experiment_axes,
    folder_config,
    jsonable,
    load_runs,
    resolve_axis,
)

COLUMNS = (
    "run_id",
    "status",
    "diverged_step",
    *CURVE_FINALS,
    "last_finite_train_loss",
    "wall_time_s",
    "engine.kernel",
)


def summary_records(exp_dir: Path) -> list[dict[str, Any]]:
    runs = load_runs(exp_dir)
    axes = [a for a in experiment_axes(exp_dir) if a in runs.columns]
    records = []
    for row in runs.to_dict("records"):
        rec: dict[str, Any] = {"experiment": exp_dir.name}
        rec |= {c: row.get(c) for c in COLUMNS}
        rec |= {a: row[a] for a in axes}
        rec["dead_fraction"] = list(row["dead_fraction"])
        rec["saturated_fraction"] = list(row["saturated_fraction"])
        rec["error"] = row["error"]
        records.append(jsonable({k: (None if _is_na(v) else v) for k, v in rec.items()}))
    return records


def _is_na(v: Any) -> bool:
    try:
        return v is None or (not isinstance(v, list | str) and bool(v != v))
    except (TypeError, ValueError):
        return False


def fmt_loss(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def fmt_fractions(values: list[float | None]) -> str:
    """[0.0, 0.5, None] -> '0 .50 -' : compact, one entry per hidden layer, layer 1 first."""
    out = []
    for v in values:
        if v is None:
            out.append("-")
        elif v == 0:
            out.append("0")
        elif v == 1:
            out.append("1")
        else:
            out.append(f"{v:.2f}".lstrip("0"))
    return " ".join(out)


def outcome(rec: dict[str, Any]) -> str:
    if rec["status"] == "diverged":
        return f"diverged@{rec['diverged_step']}"
    return rec["status"]


def summary_table(records: list[dict[str, Any]], axes: list[str], title: str = "") -> Table:
    table = Table(title=Text(title), title_justify="left", header_style="bold")
    for a in axes:
        table.add_column(Text(a.split(".")[-1]))
    # Accuracy columns for classification (regression records hold None there).
    accuracy = any(r.get("final_train_accuracy") is not None for r in records)
    numbers = ["train loss", "test loss", *(("train acc", "test acc") if accuracy else ())]
    for name in ("status", *numbers, "dead units / layer", "saturated / layer", "kernel", "run id"):
        table.add_column(name, justify="right" if name in numbers else "left")
    for r in records:
        style = {"diverged": "yellow", "failed": "red"}.get(r["status"])
        # A diverged run's outputs at its last step are not numbers: no accuracy either.
        acc = tuple(
            fmt_accuracy(None if r["status"] == "diverged" else r[c])
            for c in ("final_train_accuracy", "final_test_accuracy")
            if accuracy
        )
        table.add_row(
            *(Text(str(r.get(a))) for a in axes),
            Text(outcome(r)),
            fmt_loss(r["final_train_loss"]) if r["status"] != "diverged" else "inf/nan",
            fmt_loss(r["final_test_loss"]),
            *acc,
            fmt_fractions(r["dead_fraction"]),
            fmt_fractions(r["saturated_fraction"]),
            Text(str(r.get("engine.kernel") or "-")),
            r["run_id"],
            style=style,
        )
    return table


def fmt_accuracy(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def records_csv(records: list[dict[str, Any]]) -> str:
    flat = [
        {k: (" ".join("" if x is None else f"{x:.4g}" for x in v) if isinstance(v, list) else v) for k, v in r.items()}
        for r in records
    ]
    buf = io.StringIO()
    pd.DataFrame(flat).to_csv(buf, index=False)
    return buf.getvalue()


# -- groups of runs: `normbench summary --by`, the tables of `normbench report` ---------------------------------

# The final numbers aggregated over a group's runs (finals.FINALS), with their column headings.
METRICS = HEADINGS
STATS = ("mean", "std", "min", "max", "median")
STATUS_COLUMNS = ("runs", "ok", "diverged", "failed", "missing")


GroupKeyError = SelectionError  # a --by key that is not a grid key (or matches several): the message names them


def resolve_keys(exp_dir: Path, keys: list[str], *, skip_absent: bool = False) -> list[str]:
    """Grid keys by their dotted name or an unambiguous last part: 'norm' -> 'model.norm' (results.resolve_axis).
    In the given order, each once. A key that matches no grid key is an error, or left out with `skip_absent`;
    one that matches several is always an error."""
    axes = experiment_axes(exp_dir)
    resolved: list[str] = []
    for key in keys:
        if skip_absent and not any(a == key or a.endswith("." + key) for a in axes):
            continue
        axis = resolve_axis(key, axes, "--by", exp_dir.name)
        if axis not in resolved:
            resolved.append(axis)
    return resolved


def resolve_keys_across(exp_dirs: list[Path], keys: list[str]) -> list[list[str]]:
    """resolve_keys for each experiment of a results folder: a key needs to be a grid key of at least one of them
    (experiments without it are grouped by the other keys); one experiment alone needs all of them."""
    if len(exp_dirs) == 1:
        return [resolve_keys(exp_dirs[0], keys)]
    resolved = [resolve_keys(e, keys, skip_absent=True) for e in exp_dirs]
    for key in keys:
        if not any(resolve_keys(e, [key], skip_absent=True) for e in exp_dirs):
            valid = sorted({a for e in exp_dirs for a in experiment_axes(e)})
            raise GroupKeyError(f"--by {key!r} is not a grid key of any experiment here; grid keys: {', '.join(valid)}")
    return resolved


def aggregate_runs(exp_dir: Path, by: list[str], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group of runs sharing the values of the grid keys `by` ([]: all runs in one group), in grid
    order. Columns: `experiment`, the `by` keys, `runs`, `ok`, `diverged`, `failed`, `missing` (counts),
    `diverged_steps` (sorted list), then `<metric>.mean`, `.std` (ddof 1: NaN for one run), `.min`, `.max`,
    `.median` of each final number (finals.FINALS that apply to the experiment) over the group's ok runs only: a
    diverged or failed run is counted, never averaged; `<metric>.n`: how many ok runs have a value (a loss that is
    not finite, or saturation of an activation without a saturated region, has none). Dead and saturated
    fractions are per run the mean over hidden layers at the last recorded step.
    `runs`: the experiment's runs.parquet rows to aggregate (default: all)."""
    runs = load_runs(exp_dir) if runs is None else runs
    by = resolve_keys(exp_dir, by)
    values = per_run(runs)
    values = values[applicable(values)]
    # Grid values that are lists (model.channels) group as tuples.
    groups = runs.groupby(by, sort=False, dropna=False) if by else [((), runs)]
    rows = []
    for key, members in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = runs.loc[members.index]
        status = g.status.value_counts()
        row: dict[str, Any] = {"experiment": exp_dir.name, **dict(zip(by, key, strict=True)), "runs": len(g)}
        row |= {s: int(status.get(s, 0)) for s in STATUS_COLUMNS[1:]}
        row["diverged_steps"] = sorted(int(s) for s in g.diverged_step[g.status == "diverged"].dropna())
        ok = values.loc[g.index[g.status == "ok"]]
        for metric in values.columns:
            v = ok[metric].dropna()
            row |= {
                f"{metric}.mean": v.mean() if len(v) else math.nan,
                f"{metric}.std": v.std(ddof=1) if len(v) > 1 else math.nan,
                f"{metric}.min": v.min() if len(v) else math.nan,
                f"{metric}.max": v.max() if len(v) else math.nan,
                f"{metric}.median": v.median() if len(v) else math.nan,
                f"{metric}.n": len(v),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The aggregate table as JSON-ready objects (NaN -> null)."""
    return [jsonable({k: (None if _is_na(v) else v) for k, v in r.items()}) for r in df.to_dict("records")]


def aggregate_markdown(records: list[dict[str, Any]], metrics: list[str] | None = None) -> str:
    """The groups as a Markdown table, from aggregate_records' objects (what `summary --by --format json` prints,
    so a table in a document can be rendered again from the JSON it came from): the group's keys, its runs, and per
    metric the median with the range over the ok runs, 'median (min-max)'. `metrics`: which (default: every one
    with a value). One experiment grouped by two keys with one metric is a grid: the first key's values down, the
    second's across, a cell per group (its runs that are not ok said in it)."""
    if not records:
        return ""
    first = list(records[0])
    keys = first[first.index("experiment") + 1 : first.index("runs")]
    several = len({r["experiment"] for r in records}) > 1
    metrics = metrics or [m for m in METRICS if any(r.get(f"{m}.median") is not None for r in records)]
    if len(keys) == 2 and len(metrics) == 1 and not several:
        return _pivot_markdown(records, keys, metrics[0])
    head = [*(["experiment"] if several else []), *(k.split(".")[-1] for k in keys), "runs"]
    head += [METRICS[m].replace("\n", " ") for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        ok, others = fmt_runs(r)
        cells = [*([r["experiment"]] if several else []), *(value_text(r[k]) for k in keys)]
        cells.append(ok + (f", {others}" if others else ""))
        cells += [_median_range(r, m) for m in metrics]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _pivot_markdown(records: list[dict[str, Any]], keys: list[str], metric: str) -> str:
    down, across = keys
    rows = list(dict.fromkeys(value_text(r[down]) for r in records))
    cols = list(dict.fromkeys(value_text(r[across]) for r in records))
    cell = {(value_text(r[down]), value_text(r[across])): r for r in records}
    corner = f"{down.split('.')[-1]} \\ {across.split('.')[-1]}"
    lines = ["| " + " | ".join([corner, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for row in rows:
        cells = [row]
        for col in cols:
            r = cell.get((row, col))
            if r is None:
                cells.append("")
                continue
            _, others = fmt_runs(r)
            cells.append(_median_range(r, metric) + (f" ({others})" if others else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _median_range(r: dict[str, Any], metric: str) -> str:
    median, lo, hi = (r.get(f"{metric}.{s}") for s in ("median", "min", "max"))
    if median is None:
        return "-"
    lo_text, hi_text = fmt_metric(metric, lo), fmt_metric(metric, hi)
    centre = fmt_metric(metric, median)
    return centre if lo_text == hi_text else f"{centre} ({lo_text}-{hi_text})"


def aggregate_csv(df: pd.DataFrame) -> str:
    flat = df.copy()
    flat["diverged_steps"] = flat.diverged_steps.map(lambda s: " ".join(str(x) for x in s))
    buf = io.StringIO()
    flat.to_csv(buf, index=False)
    return buf.getvalue()


def shown_metrics(df: pd.DataFrame) -> list[str]:
    """The metrics with at least one value in `df` (a table of dashes is left out)."""
    return [m for m in METRICS if f"{m}.mean" in df.columns and df[f"{m}.mean"].notna().any()]


def key_columns(df: pd.DataFrame) -> list[str]:
    start, stop = list(df.columns).index("experiment") + 1, list(df.columns).index("runs")
    return list(df.columns[start:stop])


def fmt_metric(metric: str, v: float, *, spread: bool = False) -> str:
    """One number of a metric; `spread`: a standard deviation, to two significant digits."""
    if v is None or math.isnan(v):
        return "-"
    if metric.endswith("_fraction"):
        return fmt_percent(v)
    if "accuracy" in metric:
        return f"{v:.3f}"
    if spread:
        if v == 0 or not 1e-3 <= abs(v) < 1e6:
            return f"{v:.2g}"
        return f"{v:.{max(0, 1 - math.floor(math.log10(abs(v))))}f}"
    return f"{v:.4g}"


def fmt_percent(v: float) -> str:
    """0.84 -> '84%', 0.052 -> '5.2%', 0.0042 -> '0.42%', 0 -> '0%'."""
    p = 100 * v
    return "0%" if p == 0 else f"{p:.2g}%" if p < 10 else f"{p:.0f}%"


def fmt_stats(row: dict[str, Any] | pd.Series, metric: str) -> tuple[str, str]:
    """('mean ± std', '[min, max]') of one metric of one group; '' where a part says nothing (one run). Ok runs
    without a value are said: 'inf/NaN' for all of them (a loss; '-' where the number is not defined for them),
    'n=1 of 2' for some."""
    mean, std, lo, hi = (row[f"{metric}.{s}"] for s in ("mean", "std", "min", "max"))
    n, ok = row.get(f"{metric}.n", 0), row["ok"]
    if _is_na(mean):
        undefined = metric.endswith(("_fraction", "_precise"))  # ReLU saturation; precise stats without running ones
        return ("inf/NaN" if ok and not undefined else "-"), ""
    centre = fmt_metric(metric, mean) + ("" if _is_na(std) else f" ± {fmt_metric(metric, std, spread=True)}")
    lo, hi = fmt_metric(metric, lo), fmt_metric(metric, hi)
    spread = "" if lo == hi else f"[{lo}, {hi}]"
    if n < ok:
        spread = " ".join(x for x in (spread, f"n={n} of {ok}") if x)
    return centre, spread


def fmt_runs(row: dict[str, Any] | pd.Series) -> tuple[str, str]:
    """('2/4 ok', '1 diverged (step 3), 1 failed') of one group."""
    others = [
        *(
            [
                f"{row['diverged']} diverged"
                + fmt_diverged(row["diverged"], row["diverged_steps"]).removeprefix(str(row["diverged"]))
            ]
            if row["diverged"]
            else []
        ),
        *([f"{row['failed']} failed"] if row["failed"] else []),
        *([f"{row['missing']} not run yet"] if row["missing"] else []),
    ]
    return f"{row['ok']}/{row['runs']} ok", ", ".join(others)


def fmt_diverged(n: int, steps: list[int]) -> str:
    """3, [1, 1, 4] -> '3 (step 1-4)'; 0 -> '0'."""
    if not n:
        return "0"
    if not steps:
        return str(n)
    at = str(steps[0]) if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
    return f"{n} (step {at})"


def aggregate_note(metrics: list[str], *, dropout: bool = False) -> str:
    """What the numbers of a table over seeds are, naming only the columns it has (`metrics`: shown_metrics);
    `dropout`: some run trains with model.dropout."""
    parts = [
        "mean ± std over the ok runs of each group (std: sample, ddof 1), [min, max] below; diverged and failed runs "
        "are counted, never averaged."
    ]
    if any(m.endswith("_fraction") for m in metrics):
        parts.append("Dead and saturated: mean over hidden layers at the last recorded step.")
    train = ["train loss"] + (["train accuracy"] if "final_train_accuracy" in metrics else [])
    if "final_test_loss_train_mode" in metrics:
        train.append("'batch stats'")
    dropped = " (with model.dropout, dropout on)" if dropout else ""
    modes = [f"{' and '.join(train)}: train mode, the batch's statistics{dropped}."]
    if any(m in metrics for m in ("final_test_loss", "final_test_accuracy")):
        modes.append("'running stats': eval mode.")
    if "final_test_loss_precise" in metrics:
        modes.append("'precise BN': eval mode with the running statistics recomputed after training.")
    return " ".join(parts + modes)


def has_dropout(runs: pd.DataFrame, exp_dir: Path) -> bool:
    """Whether some run of the table trains with dropout (a grid value, or the config's model.dropout)."""
    if "model.dropout" in runs:
        return bool((pd.to_numeric(runs["model.dropout"], errors="coerce") > 0).any())

    cfg = folder_config(exp_dir)
    return bool(((cfg.get("model") or {}).get("dropout") or 0) > 0)


def aggregate_table(df: pd.DataFrame, title: str = "", *, dropout: bool = False) -> Group:
    """The groups as a table, followed by the note on what its numbers are."""
    table = Table(title=Text(title), title_justify="left", header_style="bold")
    keys = key_columns(df)
    metrics = shown_metrics(df)
    for k in keys:
        table.add_column(Text(k.split(".")[-1]))
    table.add_column("runs")
    for m in metrics:
        table.add_column(METRICS[m], justify="right")
    for _, row in df.iterrows():
        style = "red" if row.failed else "yellow" if row.diverged else None
        ok, others = fmt_runs(row)
        cells: list[Text] = [Text(value_text(row[k])) for k in keys]
        cells.append(Text(ok) + (Text("\n" + others) if others else Text()))
        for m in metrics:
            centre, spread = fmt_stats(row, m)
            cells.append(Text(centre) + (Text("\n" + spread, style="dim") if spread else Text()))
        table.add_row(*cells, style=style)
    return Group(table, Text(aggregate_note(metrics, dropout=dropout), style="dim"))


LANDSCAPE = ("loss_range", "grad_change", "beta")  # landscape_summary's numbers


def landscape_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and measured step, from the landscape table (Recorder.landscape), Santurkar et al.'s three numbers:
        loss_range      max - min of the loss over the points along the gradient (the start included)
        grad_change     max over the points of ||g(theta) - g(theta - d)||: how much the gradient changes (gradient
                        predictiveness: the smaller, the better the gradient predicts the gradient further on)
        beta            max over the points of ||g(theta) - g(theta - d)|| / ||d||: effective beta-smoothness
    A point along the gradient where the loss or gradient is not finite makes all three +inf: the landscape is as
    rough as can be there (a step of that size blows up). NaN only where the start itself is not finite."""
    keys = [k for k in ("run_id", "step") if k in table.columns]
    moved_by = table.grad_change / table.distance.where(table.distance > 0)
    # A zero gradient moves nowhere: its points are the start, and nothing changes (beta 0, not 0 / 0).
    t = table.assign(ratio=moved_by.mask((table.scale > 0) & (table.distance == 0), 0.0))
    out = t.groupby(keys).agg(
        loss_max=("loss", "max"), loss_min=("loss", "min"), grad_change=("grad_change", "max"), beta=("ratio", "max")
    )
    broken = t.assign(broken=~np.isfinite(t.loss) | ~np.isfinite(t.grad_change))
    moved = broken[broken.scale > 0].groupby(keys).broken.any().reindex(out.index, fill_value=False)
    start = broken[broken.scale == 0].groupby(keys).broken.any().reindex(out.index, fill_value=False)
    out["loss_range"] = out.loss_max - out.loss_min
    for col in LANDSCAPE:
        out[col] = out[col].mask(moved, math.inf).mask(start, math.nan)
    return out[list(LANDSCAPE)].reset_index()

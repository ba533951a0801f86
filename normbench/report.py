"""Run records for people and programs: `normbench summary` (table, csv, json) and the demo's verdicts.

records = summary_records(Path("results/morvan_tf23"))
# [{'run_id': ..., 'status': 'diverged', 'diverged_step': 1, 'final_train_loss': None,
#   'model.norm': 'none', 'model.activation': 'relu', 'dead_fraction': [...], ...}, ...]
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from normbench.store import experiment_axes, jsonable, load_runs

COLUMNS = (
    "run_id",
    "status",
    "diverged_step",
    "final_train_loss",
    "final_test_loss",
    "final_train_accuracy",
    "final_test_accuracy",
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
    table = Table(title=title, title_justify="left", header_style="bold")
    for a in axes:
        table.add_column(a.split(".")[-1])
    for name in ("status", "train loss", "test loss", "dead units / layer", "saturated / layer", "kernel", "run id"):
        table.add_column(name, justify="right" if "loss" in name else "left")
    for r in records:
        style = {"diverged": "yellow", "failed": "red"}.get(r["status"])
        table.add_row(
            *(str(r.get(a)) for a in axes),
            outcome(r),
            fmt_loss(r["final_train_loss"]) if r["status"] != "diverged" else "inf/nan",
            fmt_loss(r["final_test_loss"]),
            fmt_fractions(r["dead_fraction"]),
            fmt_fractions(r["saturated_fraction"]),
            r.get("engine.kernel") or "-",
            r["run_id"],
            style=style,
        )
    return table


def records_csv(records: list[dict[str, Any]]) -> str:
    import pandas as pd

    flat = [
        {k: (" ".join("" if x is None else f"{x:.4g}" for x in v) if isinstance(v, list) else v) for k, v in r.items()}
        for r in records
    ]
    buf = io.StringIO()
    pd.DataFrame(flat).to_csv(buf, index=False)
    return buf.getvalue()

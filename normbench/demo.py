"""`normbench demo dead-neurons`: the tutorial's batch-norm demonstration, run, drawn and judged from the numbers.

It runs three packaged configs (configs/morvan_tf23.yaml, morvan_pt504.yaml, dead_neurons.yaml: 20 seeds each),
writes their figures, prints one row per cell (activation x norm) with the median and range over seeds, then the
verdicts of the claims file's claims on these experiments (configs/claims.yaml: ReLU units die without BN and
stay alive with it, tanh units saturate without BN and not with it, the cost curve disappears, BN reaches a lower
cost). The verdicts are `normbench claims`' own, through the same rules (claims/): the demo has no thresholds of
its own. It writes OUT/demo.json (every number it prints) and OUT/demo.md (the same as a Markdown section; the
README's is this file, from the results in docs/demo.json).
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from normbench.claims import STYLE, Measure, Results, check_claims, load_claims, run_values
from normbench.config import load_experiment
from normbench.results import jsonable, load_runs, load_table
from normbench.safe import esc
from normbench.store import write_text_atomic
from normbench.views.summary import aggregate_runs, fmt_percent

DEMO_CONFIGS = ("morvan_tf23", "morvan_pt504", "dead_neurons")
CELL = ["model.activation", "model.norm"]
NUMBERS = {  # the cells' numbers: name -> heading
    "final_train_loss": "train loss (train mode)",
    "final_test_loss": "test loss (eval mode)",
    "dead_fraction": "dead units",
    "saturated_fraction": "saturated values",
}


def run_dead_neurons(
    out: Path, kernel: str = "auto", force: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Train what is missing, draw the figures, judge the claims; print and write OUT/demo.json and OUT/demo.md.
    Returns the document written to demo.json."""
    from normbench.views.render import plot_experiments

    console = console or Console()
    progress = Console(stderr=True)
    out = Path(out)
    book = load_claims()
    rows = check_claims(book, out, experiments=list(DEMO_CONFIGS), kernel=kernel, force=force, console=progress)
    names = [load_experiment(name).name for name in DEMO_CONFIGS]
    dirs = [out / (name if kernel in ("auto", "both") else f"{name}-{kernel}") for name in names]
    with progress.status("drawing the figures"):
        figures = plot_experiments(dirs)
    doc = document(dirs, rows, kernel)
    for exp, exp_dir in zip(doc["experiments"], dirs, strict=True):
        console.print()
        console.print(cells_table(exp))
        n = sum(exp_dir in p.parents for p in figures)
        console.print(f"[dim]{n} figures in {esc(exp_dir / 'figures')}; every run: normbench summary {esc(exp_dir)}[/]")
        for line in notes(exp):
            console.print(f"  {line}", highlight=False, markup=False)
        for r in exp["claims"]:
            console.print(verdict_line(r))
    write_text_atomic(out / "demo.json", json.dumps(jsonable(doc), indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(out / "demo.md", markdown(doc))
    progress.print(f"-> {out / 'demo.json'}, {out / 'demo.md'}", highlight=False, markup=False)
    return doc


# -- the numbers ---------------------------------------------------------------------------------------------------


def document(dirs: list[Path], rows: list, kernel: str) -> dict[str, Any]:
    """Everything the demo prints, as demo.json holds it."""
    import torch

    from normbench.version import __version__

    experiments = []
    for exp_dir in dirs:
        exp = load_experiment(exp_dir.name.removesuffix(f"-{kernel}"))
        runs = load_runs(exp_dir)
        experiments.append(
            {
                "name": exp_dir.name,
                "description": exp.config.description,
                "seeds": int(runs.seed.nunique()),
                "kernels": sorted(set(runs["engine.kernel"].dropna())),
                "cells": cells(exp_dir, runs),
                "claims": [asdict(r) for r in rows if r.experiment == exp_dir.name.removesuffix(f"-{kernel}")],
            }
        )
    return {
        "command": "normbench demo dead-neurons" + (f" --kernel {kernel}" if kernel != "auto" else ""),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "normbench": __version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {_cpu()}",
        "experiments": experiments,
    }


def cells(exp_dir: Path, runs: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (activation, norm): run counts, divergence steps, and each of NUMBERS as median, min, max
    and n over the cell's ok runs (views.summary.aggregate_runs: the tables of summary --by); for a cell with diverged
    runs, their initial loss and the dead fraction at step 0 (claims' measures), each as median, min, max."""
    groups = aggregate_runs(exp_dir, CELL, runs)
    first_dead = _measured(Measure(quantity="dead_fraction", step="first"), exp_dir, runs)
    initial = _initial_loss(exp_dir, runs)
    out = []
    for _, g in groups.iterrows():
        cell: dict[str, Any] = {
            "activation": g["model.activation"],
            "norm": g["model.norm"],
            **{k: int(g[k]) for k in ("runs", "ok", "diverged", "failed", "missing")},
            "diverged_steps": list(g.diverged_steps),
        }
        for name in NUMBERS:
            cell[name] = {s: _value(g.get(f"{name}.{s}")) for s in ("median", "min", "max", "n")}
        if g.diverged:
            mine = (runs["model.activation"] == g["model.activation"]) & (runs["model.norm"] == g["model.norm"])
            cell["dead_at_step_0"] = _spread(first_dead[mine])
            cell["initial_loss"] = _spread(initial[mine])
        out.append(cell)
    return out


def _measured(m: Measure, exp_dir: Path, runs: pd.DataFrame) -> pd.Series:
    return run_values(m, runs, Results(runs, exp_dir=exp_dir))


def _initial_loss(exp_dir: Path, runs: pd.DataFrame) -> pd.Series:
    """Each run's training loss at step 0 (index: runs')."""
    curves = load_table(exp_dir, "curves")
    first = curves[(curves.step == 0) & (curves.split == "train") & (curves["mode"] == "train")]
    return runs.run_id.map(first.set_index("run_id").loss).astype(float)


def _spread(v: pd.Series) -> dict[str, float]:
    v = v.dropna()
    return {"median": _value(v.median()), "min": _value(v.min()), "max": _value(v.max()), "n": len(v)}


def _value(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -- as text -------------------------------------------------------------------------------------------------------


def fmt_cell(cell: dict[str, Any], name: str) -> str:
    """'57.7 (56.8-59.1)' : the median and the range over the cell's ok runs; 'diverged' where none is ok; '-'
    where the number does not exist (no test split, ReLU's saturation)."""
    v = cell[name]
    if not cell["ok"]:
        return "diverged" if name == "final_train_loss" else "-"
    if v["median"] is None:
        return "-"
    fmt = fmt_percent if name.endswith("_fraction") else _short
    lo, hi = fmt(v["min"]), fmt(v["max"])
    return fmt(v["median"]) if lo == hi else f"{fmt(v['median'])} ({lo}-{hi})"


def _short(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def fmt_runs(cell: dict[str, Any]) -> str:
    """'20 ok' or '20 of 20 diverged (step 1)'."""
    parts = [f"{cell['ok']} ok"] if cell["ok"] else []
    if cell["diverged"]:
        steps = cell["diverged_steps"]
        at = str(steps[0]) if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
        parts.append(f"{cell['diverged']} of {cell['runs']} diverged (step {at})")
    for status in ("failed", "missing"):
        if cell[status]:
            parts.append(f"{cell[status]} {status}")
    return ", ".join(parts)


def notes(exp: dict[str, Any]) -> list[str]:
    """What the numbers show about diverged cells: their initial loss, and the units dead before the divergence."""
    lines = []
    for c in exp["cells"]:
        if c["diverged"]:
            loss, dead = c["initial_loss"], c["dead_at_step_0"]
            lines.append(
                f"{c['activation']} with norm {c['norm']}: {fmt_runs(c)}; initial loss {_sci(loss['min'])} to "
                f"{_sci(loss['max'])}; at step 0, before it diverged, {fmt_percent(dead['median'])} of the hidden "
                f"units were dead (median; {fmt_percent(dead['min'])}-{fmt_percent(dead['max'])})."
            )
    return lines


def _sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def verdict_line(r: dict[str, Any]) -> Text:
    """'  <the claim> [id]' and below it '    <verdict>: <why>'."""
    text = Text("  ")
    text.append(r["claim"], style="bold")
    text.append(f" [{r['claim_id']}]\n    ", style="dim")
    text.append(r["verdict"], style=STYLE[r["verdict"]])
    text.append(f": {short(r)} (mean over seeds); {r['reason']}")
    return text


def short(r: dict[str, Any]) -> str:
    """A row's measured values in a few characters: the quantity and the mean over seeds of each group
    ('dead_fraction 0.877', 'final_train_loss: norm=batch 81, norm=none 613'); 'inf' where a group's values are
    infinite, 'no number' where no seed has one."""
    parts = []
    for group, values in r["values"].items():
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if any(v is not None and math.isinf(v) for v in values):
            text = "inf" if not finite else f"{_short(sum(finite) / len(finite))} and inf"
        else:
            text = _short(sum(finite) / len(finite)) if finite else "no number"
        parts.append(text if len(r["values"]) == 1 else f"{group} {text}")
    return f"{r['measure']} " + ", ".join(parts) if len(parts) == 1 else f"{r['measure']}: " + ", ".join(parts)


def cells_table(exp: dict[str, Any]) -> Table:
    n = exp["seeds"]
    table = Table(title=Text(f"{exp['name']}: {exp['description']}"), title_justify="left", header_style="bold")
    for name in ("activation", "norm", "runs", *(NUMBERS[k] for k in NUMBERS)):
        table.add_column(name, justify="right" if name in NUMBERS.values() else "left")
    for c in exp["cells"]:
        style = "yellow" if c["diverged"] else None
        table.add_row(c["activation"], c["norm"], fmt_runs(c), *(fmt_cell(c, k) for k in NUMBERS), style=style)
    table.caption = f"median (min-max) over the ok runs of {n} seeds"
    return table


def markdown(doc: dict[str, Any]) -> str:
    """The README's section of results: one table of every cell of the three experiments, one of the verdicts
    (claims x experiments), and what the numbers show about diverged cells. Rendered from demo.json alone, so the
    README's numbers are those of a run."""
    lines = [
        f"| config | activation | norm | runs | {' | '.join(NUMBERS.values())} |",
        "|---|---|---|---|" + "---|" * len(NUMBERS),
    ]
    for exp in doc["experiments"]:
        for i, c in enumerate(exp["cells"]):
            name = f"`{exp['name']}`" if i == 0 else ""
            values = " | ".join(fmt_cell(c, k) for k in NUMBERS)
            lines.append(f"| {name} | {c['activation']} | {c['norm']} | {fmt_runs(c)} | {values} |")
    seeds = sorted({e["seeds"] for e in doc["experiments"]})
    kernels = sorted({k for e in doc["experiments"] for k in e["kernels"]})
    lines += [
        "",
        f"Median (min-max) over the ok runs of {'/'.join(map(str, seeds))} seeds, trained by the "
        f"{' and '.join(kernels)} kernel (`{doc['command']}`: normbench {doc['normbench']}, PyTorch {doc['torch']}, "
        f"{doc['machine']}).",
        "",
        "| claim | " + " | ".join(f"`{e['name']}`" for e in doc["experiments"]) + " |",
        "|---|" + "---|" * len(doc["experiments"]),
    ]
    claims = {r["claim_id"]: r["claim"] for e in doc["experiments"] for r in e["claims"]}
    for cid, claim in claims.items():
        cells_ = []
        for e in doc["experiments"]:
            r = next((r for r in e["claims"] if r["claim_id"] == cid), None)
            cells_.append(f"**{r['verdict']}** ({short(r)})" if r else "")
        lines.append(f"| {claim} `{cid}` | " + " | ".join(cells_) + " |")
    checked = [e for e in doc["experiments"] if any(r.get("by_kernel") for r in e["claims"])]
    lines += ["", *(f"- `{e['name']}`, {line}" for e in doc["experiments"] for line in notes(e))]
    if checked:
        lines.append(
            "- Each verdict was also judged on runs trained by the autograd kernel (another float32 rounding of "
            "the same runs, as another CPU gives): "
            + (
                "every one is the same."
                if all(r["verdict"] != "depends on rounding" for e in checked for r in e["claims"])
                else "those marked 'depends on rounding' differ."
            )
        )
    return "\n".join(lines) + "\n"

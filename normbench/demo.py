"""`normbench demo dead-neurons`: the tutorial's batch-norm demonstration, run, drawn and judged from the numbers.

It runs three packaged configs (configs/morvan_tf23.yaml, morvan_pt504.yaml, dead_neurons.yaml), writes their
figures, prints one row per run, then checks the article's four claims against what was measured:
    ReLU without BN: the units die        ReLU with BN: they stay alive
    tanh without BN: the units saturate   tanh with BN: they do not
Every verdict line is computed from the results; where a claim does not hold, it says so with the numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from normbench.config import load_experiment
from normbench.plot import plot_experiments
from normbench.report import run_layer_means, summary_records, summary_table
from normbench.store import ExperimentStore, load_runs, load_table
from normbench.sweep import run_experiment

DEMO_CONFIGS = ("morvan_tf23", "morvan_pt504", "dead_neurons")
DEAD, ALIVE = 0.5, 0.1  # mean dead fraction over hidden layers: above DEAD "dead", below ALIVE "alive"
SATURATED, UNSATURATED = 0.5, 0.25  # mean saturated fraction over hidden layers


def run_dead_neurons(out: Path, force: bool = False, console: Console | None = None) -> list[str]:
    console = console or Console()
    progress = Console(stderr=True)
    verdicts: list[str] = []
    exps = [load_experiment(name) for name in DEMO_CONFIGS]
    for exp in exps:
        run_experiment(exp, out, force=force, console=progress)
    dirs = [ExperimentStore(out, exp.name).dir for exp in exps]
    with progress.status("drawing the figures"):
        figures = plot_experiments(dirs)  # all three at once: they render in parallel
    for exp, exp_dir in zip(exps, dirs, strict=True):
        console.print()
        console.print(summary_table(summary_records(exp_dir), exp.axes, title=f"{exp.name}: {exp.config.description}"))
        n = sum(exp_dir in p.parents for p in figures)
        console.print(f"[dim]{n} figures in {exp_dir / 'figures'}[/]")
        lines = judge(exp_dir)
        for line in lines:
            console.print(f"  {line}", highlight=False)
        verdicts += [f"{exp.name}: {line}" for line in lines]
    return verdicts


def cell_stats(exp_dir: Path) -> pd.DataFrame:
    """One row per (activation, norm): runs, diverged runs and steps, mean final loss, dead and saturated fractions
    (each run's report.layer_mean averaged over the runs: at the last step over the runs that did not diverge, at
    step 0 over all), and each seed's initial loss."""
    runs = load_runs(exp_dir)
    layers = load_table(exp_dir, "layers")
    curves = load_table(exp_dir, "curves")
    initial = curves[(curves.step == 0) & (curves.split == "train") & (curves["mode"] == "train")]
    rows = []
    means = {
        (col, step): run_layer_means(layers, col, step)
        for col, step in (("dead_fraction", "last"), ("dead_fraction", "first"), ("saturated_fraction", "last"))
    }
    for (act, norm), grp in runs.groupby(["model.activation", "model.norm"], sort=False):
        ok = grp.run_id[grp.status == "ok"]  # a diverged net's layers are neither dead nor alive (as the claims check)
        mine = layers[layers.run_id.isin(ok)] if len(layers) else layers
        last = mine[mine.step == mine.groupby("run_id").step.transform("max")] if len(mine) else mine
        finite_loss = grp.final_train_loss[np.isfinite(grp.final_train_loss)]
        rows.append(
            {
                "activation": act,
                "norm": norm,
                "runs": len(grp),
                "diverged": int((grp.status == "diverged").sum()),
                "diverged_steps": sorted(int(s) for s in grp.diverged_step.dropna()),
                "final_loss": float(finite_loss.mean()) if len(finite_loss) else math.nan,
                "dead": _over_runs(means["dead_fraction", "last"], ok),
                "dead_max_layer": float(last.dead_fraction.max()) if len(last) else math.nan,
                "dead_at_init": _over_runs(means["dead_fraction", "first"], grp.run_id),
                "initial_loss": initial.loc[initial.run_id.isin(grp.run_id), "loss"].tolist(),
                "saturated": _over_runs(means["saturated_fraction", "last"], ok),
            }
        )
    return pd.DataFrame(rows)


def _over_runs(per_run: pd.Series, run_ids: pd.Series) -> float:
    """The mean over the given runs of a per-run number (runs without one left out: NaN if none has one)."""
    values = per_run.reindex(run_ids).dropna()
    return float(values.mean()) if len(values) else math.nan


def judge(exp_dir: Path) -> list[str]:
    stats = cell_stats(exp_dir)
    cell = {(r.activation, r.norm): r for r in stats.itertuples()}
    lines = []
    if ("relu", "none") in cell:
        r = cell["relu", "none"]
        if r.diverged:
            lines.append(
                f"ReLU without BN: DIVERGES rather than dies: {r.diverged}/{r.runs} runs' loss became inf/NaN at step "
                f"{_steps(r.diverged_steps)} (initial loss {_span(r.initial_loss)}). The article's empty ReLU "
                f"histograms are NaN values that a fixed-range histogram drops, not dead neurons; "
                f"{r.dead_at_init:.0%} of hidden units were already dead at step 0, before the divergence."
            )
        else:
            verdict = "units die (claim reproduced)" if r.dead > DEAD else "units do NOT die (claim not reproduced)"
            lines.append(
                f"ReLU without BN: {verdict}: {r.dead:.0%} of hidden units dead at the end (worst layer "
                f"{r.dead_max_layer:.0%}); {r.dead_at_init:.0%} were dead already at initialization; "
                f"final loss {r.final_loss:.4g}."
            )
    if ("relu", "batch") in cell:
        r = cell["relu", "batch"]
        alive = r.diverged == 0 and r.dead < ALIVE
        lines.append(
            f"ReLU with BN: units {'stay alive (claim reproduced)' if alive else 'do NOT all stay alive'}: "
            f"{r.dead:.0%} dead on average (worst layer {r.dead_max_layer:.0%}), {_outcome(r)}"
        )
    if ("tanh", "none") in cell:
        r = cell["tanh", "none"]
        sat = r.saturated > SATURATED
        lines.append(
            f"tanh without BN: {'saturates at -1/+1 (claim reproduced)' if sat else 'does NOT saturate much'}: "
            f"{r.saturated:.0%} of values saturated, {_outcome(r)}"
        )
    if ("tanh", "batch") in cell:
        r = cell["tanh", "batch"]
        verdict = "stays unsaturated (claim reproduced)" if r.saturated < UNSATURATED else "still saturates"
        lines.append(f"tanh with BN: {verdict}: {r.saturated:.0%} of values saturated, {_outcome(r)}")
    return lines


def _outcome(r) -> str:
    return f"{r.diverged}/{r.runs} diverged, final loss {r.final_loss:.4g}."


def _span(values: list[float]) -> str:
    return f"{min(values):.2g} to {max(values):.2g}" if values else "not recorded"


def _steps(steps: list[int]) -> str:
    return str(steps[0]) if min(steps) == max(steps) else f"{min(steps)}-{max(steps)}"

"""A run's final numbers: the one definition that summary, report, claims, demo and export read.

Each finished run's numbers are computed once, when the run is committed (`from_tables`, into summary.json and
runs.parquet), from its curves and layers tables:

    final_train_loss            training split, train mode (the batch's statistics; dropout on), last recorded step
    final_test_loss_train_mode  test split, train mode
    final_test_loss             test split, eval mode (running statistics): the number a deployed model gives
    final_test_loss_precise     test split, running statistics recomputed after training (record.precise_bn)
    final_train_accuracy        as final_train_loss, classification only
    final_test_accuracy         as final_test_loss, classification only
    dead_fraction               per hidden layer, at the last recorded step (a list, layer 1 first)
    saturated_fraction          the same

Reading them back (`per_run`) gives one number per run and metric, with the rules every command follows:
a diverged run's losses are +inf (its loss blew up), its accuracies and layer numbers have no value (NaN: a
diverged net's units are neither dead nor alive); a failed or missing run has no numbers at all; dead and
saturated fractions are the mean over hidden layers (`layer_mean`). Tables over seeds (summary --by, the report)
average the ok runs only and count the others; verdicts (claims, demo) read the numbers as they are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

# name -> (split, mode, field) of the curve whose last recorded value it is
CURVE_FINALS: dict[str, tuple[str, str, str]] = {
    "final_train_loss": ("train", "train", "loss"),
    "final_test_loss_train_mode": ("test", "train", "loss"),
    "final_test_loss": ("test", "eval", "loss"),
    "final_test_loss_precise": ("test", "precise", "loss"),
    "final_train_accuracy": ("train", "train", "accuracy"),
    "final_test_accuracy": ("test", "eval", "accuracy"),
}
LAYER_FINALS = ("dead_fraction", "saturated_fraction")
FINALS = (*CURVE_FINALS, *LAYER_FINALS)
LOSSES = tuple(k for k, (_, _, field) in CURVE_FINALS.items() if field == "loss")

# Headings of the tables over seeds (summary --by, the report), in their order.
HEADINGS = {
    "final_train_loss": "train loss",
    "final_test_loss_train_mode": "test loss\nbatch stats",
    "final_test_loss": "test loss\nrunning stats",
    "final_test_loss_precise": "test loss\nprecise BN",
    "final_train_accuracy": "train acc",
    "final_test_accuracy": "test acc\nrunning stats",
    "dead_fraction": "dead units",
    "saturated_fraction": "saturated",
}
FINISHED = ("ok", "diverged")


def from_tables(curves: pd.DataFrame, layers: pd.DataFrame) -> dict[str, Any]:
    """A finished run's final numbers as summary.json holds them: each curve's value at its last recorded step
    (None where the run has no such curve: no test split, regression's accuracy, no precise statistics), the
    last finite training loss, and the dead and saturated fractions of each hidden layer at the last step."""
    out: dict[str, Any] = {}
    for name, (split, mode, field) in CURVE_FINALS.items():
        c = curves[(curves.split == split) & (curves["mode"] == mode)]
        values = c.sort_values("step")[field] if len(c) else pd.Series(dtype=float)
        out[name] = float(values.iloc[-1]) if len(values) else None  # NaN/inf: null in summary.json
    train = curves[(curves.split == "train") & (curves["mode"] == "train")].sort_values("step")
    finite = train.loss[np.isfinite(train.loss.to_numpy(float))]
    out["last_finite_train_loss"] = float(finite.iloc[-1]) if len(finite) else None
    last = layers[layers.step == layers.step.max()].sort_values("layer")
    out["last_step"] = int(layers.step.max())
    for name in LAYER_FINALS:
        out[name] = last[name].tolist()
    return out


def layer_mean(values: Any) -> float:
    """A per-layer quantity (dead or saturated fraction) as one number: its mean over the hidden layers; NaN when
    there is no layer or any layer's value is NaN (a diverged layer is neither dead nor alive; ReLU has no saturated
    region)."""
    arr = np.asarray(values if values is not None else [], dtype=float)
    return float(arr.mean()) if arr.size else math.nan


def per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's final numbers (FINALS, one column each, indexed like `runs`), from runs.parquet's rows, as
    every command reads them: a diverged run's losses +inf, its accuracies and layer numbers NaN; a failed or
    missing run's numbers all NaN. A column the runs table lacks is all NaN. (A test loss of an experiment whose
    every run diverged has no value: nothing shows that it has a test split.)"""
    out = pd.DataFrame(index=runs.index)
    status = runs.status
    finished = status.isin(FINISHED)
    diverged = status == "diverged"
    for name in CURVE_FINALS:
        v = _column(runs, name)
        if name in LOSSES:
            # A diverged run's loss blew up: +inf, where the experiment has that loss at all (a test split,
            # record.precise_bn: some run has a value; the training loss always).
            if name == "final_train_loss" or v[finished].notna().any():
                v = v.mask(diverged, math.inf)
        else:
            v = v.mask(diverged, math.nan)
        out[name] = v.where(finished, math.nan)
    for name in LAYER_FINALS:
        v = runs[name].map(layer_mean) if name in runs else pd.Series(math.nan, runs.index)
        out[name] = v.astype(float).where(status == "ok", math.nan)
    return out


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    if name not in runs:
        return pd.Series(math.nan, index=runs.index, dtype=float)
    return pd.to_numeric(runs[name], errors="coerce").astype(float)


def applicable(values: pd.DataFrame) -> list[str]:
    """The final numbers that say something for these runs (at least one run has a value): a regression has no
    accuracy, an experiment without a test split no test loss, without record.precise_bn no precise loss."""
    return [m for m in FINALS if m in values and values[m].notna().any()]

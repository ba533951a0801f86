"""What a claim measures: a Measure (a quantity of each run, reduced to one number per seed) and the table of
quantities, each one entry: the table it reads, the function that gives a run's number, what it needs of a
Measure."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import model_validator

from normbench.config import Strict
from normbench.finals import CURVE_FINALS, layer_mean, per_run
from normbench.views.summary import LANDSCAPE, landscape_summary

# The quantities a claim may measure, in the order the claims file's schema lists them; each one is an entry of
# QUANTITY (at the end of this module): what it reads and how a run's number is computed.
QUANTITIES = (
    *CURVE_FINALS,
    "dead_fraction",
    "saturated_fraction",
    "diverged",
    "steps_to",
    "generalization_gap",
    "layer_spread",
    "sn_spread",
    "column_mean",
    "landscape",
    "mode_ratio",
    "final_value",
)
SN_COLUMNS = ("sn_mean_in", "sn_mean_ln", "sn_mean_bn", "sn_var_in", "sn_var_ln", "sn_var_bn")


class Passing(Strict):
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Passing:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give at_least or at_most")
        return self

    def test(self, x: float) -> bool:
        if math.isnan(x):
            return False
        return x >= self.at_least if self.at_least is not None else x <= self.at_most


class Measure(Strict):
    quantity: Literal[QUANTITIES]  # type: ignore[valid-type]
    step: Literal["first", "last"] = "last"  # dead_fraction, saturated_fraction, layer_spread
    column: str | None = None  # layer_spread, column_mean: a layers.parquet column; landscape: one of LANDSCAPE
    split: Literal["train", "test"] = "train"  # steps_to, mode_ratio, final_value
    # steps_to, generalization_gap, mode_ratio, final_value (precise and population: the last two only)
    mode: Literal["train", "eval", "precise", "population"] = "train"
    versus: Literal["train", "eval", "precise", "population"] = "population"  # mode_ratio: what `mode` is held against
    field: Literal["loss", "accuracy"] = "loss"  # steps_to, generalization_gap, final_value
    at_least: float | None = None  # steps_to: the level the curve must reach
    at_most: float | None = None
    over: str | None = None  # a grid axis: one number per seed from the runs along it
    reduce: Literal["mean", "min", "max", "range", "share_passing", "largest_passing"] | None = None
    passing: Passing | None = None
    log: bool = False

    @model_validator(mode="after")
    def _complete(self) -> Measure:
        problem = QUANTITY[self.quantity].check(self)
        if problem:
            raise ValueError(problem)
        if self.mode in ("precise", "population") and not QUANTITY[self.quantity].last_step_modes:
            with_them = ", ".join(q for q, spec in QUANTITY.items() if spec.last_step_modes)
            raise ValueError(f"modes precise and population exist at the last step only: use {with_them}")
        if (self.over is None) != (self.reduce is None):
            raise ValueError("over and reduce go together")
        if self.reduce in ("share_passing", "largest_passing") and self.passing is None:
            raise ValueError(f"reduce {self.reduce} needs passing: {{at_least: X}} or {{at_most: X}}")
        return self

    def describe(self) -> str:
        text = self.quantity
        if self.over:
            text += f" ({self.reduce} over {self.over})"
        return f"log10 {text}" if self.log else text


class Results:
    """What the measures read: runs.parquet's rows of an experiment's current grid and its runs' tables."""

    def __init__(self, runs: pd.DataFrame, tables: dict[str, pd.DataFrame] | None = None, exp_dir: Path | None = None):
        self.runs = runs
        self._tables = dict(tables or {})
        self.exp_dir = exp_dir

    def table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            from normbench.results import FINISHED, load_table

            ids = self.runs.loc[self.runs.status.isin(FINISHED), "run_id"].tolist()
            self._tables[name] = load_table(self.exp_dir, name, ids) if self.exp_dir is not None else pd.DataFrame()
        return self._tables[name]


def run_values(m: Measure, runs: pd.DataFrame, res: Results) -> pd.Series:
    """The measured quantity of each run (index: runs'). NaN: no number (a failed run, a diverged run's layer
    statistics, an accuracy of a diverged run); +inf: a diverged run's loss, a level never reached."""
    q = QUANTITY[m.quantity]
    if q.table == "runs" or (q.final and m.step == "last"):
        return q.of_runs(m, runs)
    table = res.table(q.table)
    groups = dict(tuple(table.groupby("run_id"))) if len(table) else {}
    v = pd.Series(
        [q.of_run(m, groups[rid]) if rid in groups else math.nan for rid in runs.run_id], index=runs.index, dtype=float
    )
    if q.table == "layers" and (m.step == "last" or q.last_step_only):
        v[runs.status == "diverged"] = math.nan  # the layers of a diverged net are neither dead nor alive
    return v


def _final(m: Measure, runs: pd.DataFrame) -> pd.Series:
    return per_run(runs)[m.quantity]  # the final numbers every command reads (finals.py)


def _diverged(m: Measure, runs: pd.DataFrame) -> pd.Series:
    v = (runs.status == "diverged").astype(float)
    v[~runs.status.isin(("ok", "diverged"))] = math.nan
    return v


def _at_step(layers: pd.DataFrame, step: str) -> pd.DataFrame:
    s = layers.step.min() if step == "first" else layers.step.max()
    return layers[layers.step == s]


def _layer_mean(m: Measure, layers: pd.DataFrame) -> float:
    return layer_mean(_at_step(layers, m.step)[m.quantity])


def _layer_spread(m: Measure, layers: pd.DataFrame) -> float:
    values = _at_step(layers, m.step)[m.column].to_numpy(float)
    if not len(values) or not np.isfinite(values).all():
        return math.nan
    if values.min() <= 0:
        return math.inf
    return float(np.log10(values.max() / values.min()))


def _column_mean(m: Measure, layers: pd.DataFrame) -> float:
    """Mean of a layers.parquet column over hidden layers 2 and deeper and every step where it was measured (layer
    1 has nothing but an input norm before it: internal covariate shift is 0 there by definition without one)."""
    values = layers.loc[layers.layer >= 2, m.column].to_numpy(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _sn_spread(m: Measure, layers: pd.DataFrame) -> float:
    last = _at_step(layers, "last")
    spreads = [float(last[c].max() - last[c].min()) for c in SN_COLUMNS if c in last and last[c].notna().all()]
    return max(spreads) if spreads else math.nan


def _steps_to(m: Measure, curves: pd.DataFrame) -> float:
    c = curves[(curves.split == m.split) & (curves["mode"] == m.mode)].sort_values("step")
    values = c[m.field].to_numpy(float)
    ok = values >= m.at_least if m.at_least is not None else values <= m.at_most
    ok &= np.isfinite(values)
    return float(c.step.to_numpy()[ok.argmax()]) if ok.any() else math.inf


def _gap(m: Measure, curves: pd.DataFrame) -> float:
    c = curves[curves["mode"] == m.mode]
    last = c[c.step == c.step.max()].set_index("split")[m.field]
    if "test" not in last or "train" not in last:
        return math.nan
    gap = last["train"] - last["test"] if m.field == "accuracy" else last["test"] - last["train"]
    return float(gap) if np.isfinite(gap) else math.nan


def _mode_ratio(m: Measure, curves: pd.DataFrame) -> float:
    """log10 of the loss in mode `mode` over the loss in mode `versus`, on `split` at the last step (modes 'precise'
    and 'population': eval mode with recomputed statistics, record.precise_bn)."""
    c = curves[(curves.split == m.split) & (curves.step == curves.step.max())].set_index("mode").loss
    if m.mode not in c or m.versus not in c:
        return math.nan
    a, b = float(c[m.mode]), float(c[m.versus])
    return math.log10(a / b) if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0 else math.nan


def _final_value(m: Measure, curves: pd.DataFrame) -> float:
    """The curve's `field` on `split` in `mode` at the last step (a diverged run's loss: +inf, as the final losses)."""
    c = curves[(curves.split == m.split) & (curves["mode"] == m.mode)]
    if c.empty:
        return math.nan
    value = float(c.loc[c.step == c.step.max(), m.field].iloc[0])
    return math.inf if m.field == "loss" and not math.isfinite(value) else value


def _landscape(m: Measure, table: pd.DataFrame) -> float:
    """Mean over the measured steps of one of landscape_summary's numbers (record.landscape_every): +inf when
    a step's is (a step along the gradient blew up), NaN when a step has none (its start was not finite)."""
    values = landscape_summary(table)[m.column].to_numpy(float)
    return float(values.mean()) if len(values) and not np.isnan(values).any() else math.nan


def seed_values(m: Measure, runs: pd.DataFrame, values: pd.Series) -> pd.Series:
    """One number per seed (index: seed): the run's value, or with `over` the reduction along that axis."""
    if m.over is None:
        out = pd.Series(values.to_numpy(), index=runs.seed.to_numpy(), dtype=float)
    else:
        df = pd.DataFrame({"seed": runs.seed.to_numpy(), "x": runs[m.over].to_numpy(float), "v": values.to_numpy()})
        out = pd.Series({seed: _reduce(m, g.sort_values("x")) for seed, g in df.groupby("seed")}, dtype=float)
    if m.log:  # -inf (largest_passing: none passed) stays -inf
        with np.errstate(divide="ignore", invalid="ignore"):
            out = out.where(np.isneginf(out), np.log10(out))
    return out.sort_index()


def _reduce(m: Measure, g: pd.DataFrame) -> float:
    v = g.v.to_numpy(float)
    if m.reduce in ("share_passing", "largest_passing"):
        ok = np.array([m.passing.test(x) for x in v])
        if m.reduce == "share_passing":
            return float(ok.mean())
        return float(g.x.to_numpy()[ok].max()) if ok.any() else -math.inf  # below every value tried
    if np.isnan(v).any():
        return math.nan
    return float({"mean": np.mean, "min": np.min, "max": np.max, "range": np.ptp}[m.reduce](v))


# ---------------------------------------------------------------------------------------------------------------
# The table of quantities: a new quantity is one entry here (its name in QUANTITIES above) and its function.


def _needs_level(m: Measure) -> str | None:
    if (m.at_least is None) == (m.at_most is None):
        return f"{m.quantity} needs the level to reach: at_most (a loss) or at_least (an accuracy)"
    return None


def _needs_column(m: Measure) -> str | None:
    return None if m.column else f"{m.quantity} needs column (a layers.parquet column, e.g. backprop_norm)"


def _needs_landscape_column(m: Measure) -> str | None:
    return None if m.column in LANDSCAPE else f"{m.quantity} needs column: one of {', '.join(LANDSCAPE)}"


def _needs_other_mode(m: Measure) -> str | None:
    if m.mode == m.versus:
        return f"{m.quantity} of mode {m.mode} against itself is 0: choose another versus"
    return None


def _nothing(m: Measure) -> str | None:
    return None


@dataclass(frozen=True)
class Quantity:
    """A quantity of a run. table: what it reads ('runs': runs.parquet's rows, through of_runs; 'curves',
    'layers', 'landscape': each run's rows of that table, through of_run). final: at the last step it is one of
    the final numbers (finals.py), read from runs.parquet as every command reads it. check: what a Measure of it
    must give (a message, or None). last_step_modes: it can read the modes precise and population. last_step_only:
    a layer quantity that reads the last step whatever the Measure's step."""

    table: Literal["runs", "curves", "layers", "landscape"]
    of_run: Callable[[Measure, pd.DataFrame], float] | None = None
    of_runs: Callable[[Measure, pd.DataFrame], pd.Series] | None = None
    final: bool = False
    check: Callable[[Measure], str | None] = _nothing
    last_step_modes: bool = False
    last_step_only: bool = False


QUANTITY: dict[str, Quantity] = {
    **{name: Quantity("runs", of_runs=_final) for name in CURVE_FINALS},
    "dead_fraction": Quantity("layers", _layer_mean, _final, final=True),
    "saturated_fraction": Quantity("layers", _layer_mean, _final, final=True),
    "diverged": Quantity("runs", of_runs=_diverged),
    "steps_to": Quantity("curves", _steps_to, check=_needs_level),
    "generalization_gap": Quantity("curves", _gap),
    "layer_spread": Quantity("layers", _layer_spread, check=_needs_column),
    "sn_spread": Quantity("layers", _sn_spread, last_step_only=True),
    "column_mean": Quantity("layers", _column_mean, check=_needs_column),
    "landscape": Quantity("landscape", _landscape, check=_needs_landscape_column),
    "mode_ratio": Quantity("curves", _mode_ratio, check=_needs_other_mode, last_step_modes=True),
    "final_value": Quantity("curves", _final_value, last_step_modes=True),
}
assert tuple(QUANTITY) == QUANTITIES, "every quantity is one entry of QUANTITY, in the order of QUANTITIES"

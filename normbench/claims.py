"""`normbench claims`: every testable claim of the source articles, checked against numbers normbench measures.

    book = load_claims()                                   # configs/claims.yaml, validated
    rows = check_claims(book, out="results", quick=True)   # trains what is missing, one verdict per setting
    write_report(rows, Path("results"), quick=True, seconds=93.0)   # results/claims.md, results/claims.json
    draw_figures(book, Path("results"), True, {"lr_range"}, console)  # results/figures/: the claims' figures

The claims are data (configs/claims.yaml): for each, the experiment that tests it (a packaged config with
overrides), the runs to look at, the quantity measured and the criterion. This module only knows a few
quantities and seven kinds of criterion; every verdict is computed from the results tables.

How a verdict is decided (docs/claims.md says it for readers):
- Each seed gives one number (a run's quantity, or, with `over`, one number from the runs along a grid axis).
  A setting needs MIN_SEEDS seeds with a number on each side it compares; fewer: inconclusive.
- threshold: the CONFIDENCE interval of the mean over seeds (Student's t): supported when it lies entirely on the
  passing side, not supported when entirely on the other, else inconclusive. A seed without a number (a diverged
  run's dead fraction) does not pass; infinite values have no mean, and then every seed must pass (or none).
- less_than / greater_than / equal_within: the 95% confidence interval of the difference of the two means
  (Welch's t). Supported when it lies entirely beyond `margin` in the claimed direction (for equal_within:
  entirely inside +-margin), not supported when it lies entirely on the other side, else inconclusive: an effect
  within seed noise is never supported. not_less_than / not_greater_than claim that a is not worse than b by more
  than the margin (a >= b - margin; a <= b + margin): the same interval, against -margin. Infinite values (a
  diverged run's loss, a threshold never reached) have no mean: then the seeds' ranges decide, supported only
  when every seed of one side beats every seed of the other.
- flat: the largest minus the smallest mean along the axis, with the 95% interval from those two points'
  standard errors: supported when the interval lies below `below`, not supported when above it.
- with --kernel both, a setting judged on the runs of both kernels (two float32 roundings of the same runs) whose
  verdicts differ is 'depends on rounding', with both.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from rich.console import Console
from rich.table import Table
from rich.text import Text

from normbench.config import PACKAGED_CONFIGS, ConfigError, Experiment, Strict, describe, load_experiment
from normbench.finals import CURVE_FINALS, LAYER_FINALS, layer_mean, per_run
from normbench.report import LANDSCAPE, landscape_summary
from normbench.safe import esc, load_yaml
from normbench.store import same_value

MIN_SEEDS = 3  # seeds with a number needed on each side of a comparison (and for a threshold)
CONFIDENCE = 0.95  # of the intervals every verdict reads
VERDICTS = ("supported", "not supported", "inconclusive", "depends on rounding", "not measured yet")
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


# -- the claims file ------------------------------------------------------------------------------------------------


class Source(Strict):
    title: str
    author: str
    link: str | None = None

    def label(self) -> str:
        who = "" if self.author.startswith("not named") else f"{self.author}, "
        return f"{who}{self.title}"


class ExperimentSpec(Strict):
    config: str | None = Field(None, description="a packaged config or a file (default: the experiment's key)")
    set: list[str] = Field(default_factory=list, description="--set overrides, in both modes")
    quick: list[str] = Field(default_factory=list, description="more overrides in quick mode")


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
        if self.quantity == "steps_to" and (self.at_least is None) == (self.at_most is None):
            raise ValueError("steps_to needs the level to reach: at_most (a loss) or at_least (an accuracy)")
        if self.quantity in ("layer_spread", "column_mean") and not self.column:
            raise ValueError(f"{self.quantity} needs column (a layers.parquet column, e.g. backprop_norm)")
        if self.quantity == "landscape" and self.column not in LANDSCAPE:
            raise ValueError(f"landscape needs column: one of {', '.join(LANDSCAPE)}")
        if self.mode in ("precise", "population") and self.quantity not in ("mode_ratio", "final_value"):
            raise ValueError("modes precise and population exist at the last step only: use mode_ratio or final_value")
        if self.quantity == "mode_ratio" and self.mode == self.versus:
            raise ValueError(f"mode_ratio of mode {self.mode} against itself is 0: choose another versus")
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


COMPARISONS = ("less_than", "greater_than", "equal_within", "not_less_than", "not_greater_than")


class Criterion(Strict):
    kind: Literal["threshold", *COMPARISONS, "flat"]
    at_least: float | None = None  # threshold
    at_most: float | None = None
    a: dict[str, Any] | None = None  # the two groups a comparison compares (grid key -> value)
    b: dict[str, Any] | None = None
    margin: float = Field(0.0, ge=0, description="comparisons: the smallest difference that counts")
    over: str | None = None  # flat: the grid axis
    below: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> Criterion:
        if self.kind == "threshold" and (self.at_least is None) == (self.at_most is None):
            raise ValueError("threshold needs at_least or at_most")
        if self.kind in COMPARISONS and not (self.a and self.b):
            raise ValueError(f"{self.kind} needs a and b, the two groups of runs it compares")
        if self.kind in ("equal_within", "not_less_than", "not_greater_than") and self.margin <= 0:
            raise ValueError(f"{self.kind} needs margin > 0")
        if self.kind == "flat" and (self.over is None or self.below is None):
            raise ValueError("flat needs over (a grid axis) and below")
        return self

    def describe(self) -> str:
        if self.kind == "threshold":
            return f">= {_num(self.at_least)}" if self.at_least is not None else f"<= {_num(self.at_most)}"
        if self.kind == "flat":
            return f"flat within {_num(self.below)} along {self.over}"
        if self.kind in ("not_less_than", "not_greater_than"):
            sign = ">=" if self.kind == "not_less_than" else "<="
            return f"{_label(self.a)} {sign} {_label(self.b)} {'-' if sign == '>=' else '+'} {_num(self.margin)}"
        sign = {"less_than": "<", "greater_than": ">", "equal_within": "~"}[self.kind]
        margin = f" (margin {_num(self.margin)})" if self.margin else ""
        return f"{_label(self.a)} {sign} {_label(self.b)}{margin}"


class Setting(Strict):
    setting: str
    experiment: str
    where: dict[str, Any] = Field(default_factory=dict)
    measure: Measure
    criterion: Criterion

    @model_validator(mode="after")
    def _consistent(self) -> Setting:
        if self.criterion.kind == "flat" and self.measure.over:
            raise ValueError("a flat criterion reads every point of its axis: leave over/reduce out of measure")
        return self


class Claim(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    claim: str
    source: str
    status: Literal["testable", "not measured yet"] = "testable"
    reason: str | None = None
    settings: list[Setting] = Field(default_factory=list)

    def of_experiments(self, experiments: list[str]) -> Claim:
        """This claim with the settings of these experiments only (a claim not measured yet has none)."""
        return self.model_copy(update={"settings": [s for s in self.settings if s.experiment in experiments]})

    @model_validator(mode="after")
    def _status(self) -> Claim:
        if self.status == "not measured yet" and (self.settings or not self.reason):
            raise ValueError("a claim not measured yet has a reason and no settings")
        if self.status == "testable" and not self.settings:
            raise ValueError("a testable claim needs at least one setting")
        return self


class ClaimFigure(Strict):
    """A figure of a family of claims: one that `normbench plot` draws for an experiment, copied to OUT/figures/."""

    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.(png|svg|pdf)$", description="its name in OUT/figures/")
    experiment: str
    figure: str = Field(description="the name plot gives its file, without the extension (cost, final_vs_lr, ...)")
    compare: str | None = Field(None, description="plot's --compare (default model.norm)")
    where: dict[str, Any] = Field(default_factory=dict, description="the runs it draws (grid key -> value)")


class ClaimsBook(Strict):
    sources: dict[str, Source]
    experiments: dict[str, ExperimentSpec]
    claims: list[Claim] = Field(min_length=1)
    figures: list[ClaimFigure] = Field(default_factory=list)

    @field_validator("experiments")
    @classmethod
    def _keys(cls, v: dict[str, ExperimentSpec]) -> dict[str, ExperimentSpec]:
        for key in v:
            if not key.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"experiment key {key!r}: letters, digits, _ and - only (it names a folder)")
        return v

    @model_validator(mode="after")
    def _references(self) -> ClaimsBook:
        seen: set[str] = set()
        for c in self.claims:
            if c.id in seen:
                raise ValueError(f"claim id {c.id!r} is given twice")
            seen.add(c.id)
            if c.source not in self.sources:
                raise ValueError(f"claim {c.id}: unknown source {c.source!r} (sources: {', '.join(self.sources)})")
            for s in c.settings:
                if s.experiment not in self.experiments:
                    raise ValueError(
                        f"claim {c.id}, setting {s.setting!r}: unknown experiment {s.experiment!r} "
                        f"(experiments: {', '.join(self.experiments)})"
                    )
        files = [f.file for f in self.figures]
        for f in self.figures:
            if f.experiment not in self.experiments:
                raise ValueError(
                    f"figure {f.file}: unknown experiment {f.experiment!r} (experiments: {', '.join(self.experiments)})"
                )
            if files.count(f.file) > 1:
                raise ValueError(f"figure file {f.file!r} is given twice")
        return self

    def select(self, only: list[str] | None) -> list[Claim]:
        """The claims with these ids (all when None); an unknown id is a ConfigError naming the valid ones."""
        if not only:
            return list(self.claims)
        ids = [c.id for c in self.claims]
        unknown = [i for i in only if i not in ids]
        if unknown:
            raise ConfigError(f"--only {unknown[0]!r}: no such claim; claims: {', '.join(ids)}")
        return [c for c in self.claims if c.id in only]

    def folder(self, key: str, quick: bool, kernel: str | None = None) -> str:
        """OUT/<folder>: the key, `<key>-quick` in quick mode when the quick variant changes anything, and
        `-<kernel>` after it for runs trained on a kernel named by --kernel."""
        name = f"{key}-quick" if quick and self.experiments[key].quick else key
        return f"{name}-{kernel}" if kernel else name

    def experiment(self, key: str, quick: bool, kernel: str | None = None) -> Experiment:
        spec = self.experiments[key]
        overrides = [*spec.set, *(spec.quick if quick else []), f"name={self.folder(key, quick, kernel)}"]
        try:
            return load_experiment(spec.config or key, overrides)
        except ConfigError as e:
            raise ConfigError(f"claims experiment {key!r}{' (quick)' if quick else ''}: {e}") from None


def claims_path() -> Path:
    """The packaged claims file: configs/claims.yaml (normbench/configs/claims.yaml once installed)."""
    for folder in PACKAGED_CONFIGS:
        if (folder / "claims.yaml").is_file():
            return folder / "claims.yaml"
    raise ConfigError("the packaged claims file configs/claims.yaml is missing from this installation")


def load_claims(path: Path | str | None = None) -> ClaimsBook:
    p = Path(path) if path is not None else claims_path()
    try:
        raw = load_yaml(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: YAML syntax error{where}: {getattr(e, 'problem', None) or e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    try:
        return ClaimsBook.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: {describe(e, ClaimsBook)}") from None


def check_references(book: ClaimsBook, claims: list[Claim], quick: bool) -> dict[str, Experiment]:
    """Load every experiment the claims use (ConfigError if a config or override is wrong) and check each setting
    against its grid: the keys it filters on are grid keys with those values, and it leaves one run per seed (per
    seed and axis value with `over`). Returns the experiments by key, in the order the claims use them."""
    exps: dict[str, Experiment] = {}
    for c in claims:
        for s in c.settings:
            if s.experiment not in exps:
                exps[s.experiment] = book.experiment(s.experiment, quick)
            try:
                _check_setting(s, exps[s.experiment])
            except ValueError as e:
                mode = " (quick)" if quick else ""
                raise ConfigError(f"claim {c.id}, setting {s.setting!r}{mode}: {e}") from None
    for c in claims:
        _check_evidence_once(c, exps, quick)
    for f in book.figures:
        if f.experiment in exps:
            exp = exps[f.experiment]
            axes = exp.config.axes()
            params = pd.DataFrame([r.params for r in exp.runs])  # the values as runs.parquet will hold them
            for key in [*f.where, *([f.compare] if f.compare else [])]:
                if key not in axes:
                    raise ConfigError(f"figure {f.file}: {key!r} is not a grid key of {exp.name} ({', '.join(axes)})")
            if not _matches(params, f.where).any():
                raise ConfigError(f"figure {f.file}: where {_label(f.where)} matches no run of {exp.name}")
    return exps


def _check_evidence_once(c: Claim, exps: dict[str, Experiment], quick: bool) -> None:
    """Two settings of one claim that measure the same quantity on shared computations in every group they
    compare (runs that differ only in options without effect in them, RunConfig.computation: the no-BN runs of two
    editions that differ in BN's momentum) count those runs twice: a ConfigError asks to make them one setting."""
    seen: list[tuple[str, tuple, list[frozenset[str]]]] = []
    for s in c.settings:
        exp = exps[s.experiment]
        params = pd.DataFrame([{**r.params, "_computation": r.config.computation()} for r in exp.runs])
        crit = s.criterion
        groups = [{**s.where, **f} for f in (crit.a, crit.b) if f] or [s.where]
        runs = [frozenset(params.loc[_matches(params, flt), "_computation"]) for flt in groups]
        how = (s.measure.model_dump_json(), crit.kind, crit.over)
        for name, other_how, other_runs in seen:
            if other_how == how and all(a & b for a, b in zip(runs, other_runs, strict=True)):
                mode = " (quick)" if quick else ""
                raise ConfigError(
                    f"claim {c.id}{mode}: settings {name!r} and {s.setting!r} measure the same runs (their configs "
                    "differ only in options without effect there): make them one setting"
                )
        seen.append((s.setting, how, runs))


def _check_setting(s: Setting, exp: Experiment) -> None:
    axes = exp.config.axes()
    if "seed" not in axes:
        raise ValueError(f"experiment {exp.name} has no seeds: a verdict needs several")
    params = pd.DataFrame([r.params for r in exp.runs])
    crit = s.criterion
    filters = [s.where, *(f for f in (crit.a, crit.b) if f)]
    for flt in filters:
        for key, value in flt.items():
            if key not in axes:
                raise ValueError(f"{key!r} is not a grid key of {exp.name} (grid keys: {', '.join(axes)})")
            if not any(same_value(v, value) for v in axes[key]):
                raise ValueError(f"{key}={value!r} is not in the grid of {exp.name} ({key}: {axes[key]})")
    over = s.measure.over or crit.over
    if over is not None and over not in axes:
        raise ValueError(f"over {over!r} is not a grid key of {exp.name} (grid keys: {', '.join(axes)})")
    groups = [{**s.where, **f} for f in (crit.a, crit.b) if f] or [s.where]
    for flt in groups:
        runs = params[_matches(params, flt)]
        per = runs.groupby(["seed", over] if over else ["seed"]).size()
        if per.max() > 1:
            varying = [k for k in axes if k not in ("seed", over, *flt) and runs[k].astype(str).nunique() > 1]
            raise ValueError(
                f"{_label(flt) or 'all runs'} leaves {per.max()} runs per seed"
                + (f" and {over}" if over else "")
                + f" of {exp.name}: fix {', '.join(varying)} in where"
            )


def _matches(runs: pd.DataFrame, flt: dict[str, Any]) -> pd.Series:
    keep = pd.Series(True, index=runs.index)
    for key, value in flt.items():
        keep &= runs[key].map(lambda cell, v=value: same_value(cell, v)).astype(bool)
    return keep


def _label(flt: dict[str, Any] | None) -> str:
    """{'model.norm': 'batch', 'model.weight_init.std': 0.1} -> 'norm=batch, weight_init.std=0.1'."""
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in (flt or {}).items())


# -- the numbers: one per run, then one per seed -------------------------------------------------------------------


class Results:
    """What the measures read: runs.parquet's rows of an experiment's current grid and its runs' tables."""

    def __init__(self, runs: pd.DataFrame, tables: dict[str, pd.DataFrame] | None = None, exp_dir: Path | None = None):
        self.runs = runs
        self._tables = dict(tables or {})
        self.exp_dir = exp_dir

    def table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            from normbench.store import FINISHED, load_table

            ids = self.runs.loc[self.runs.status.isin(FINISHED), "run_id"].tolist()
            self._tables[name] = load_table(self.exp_dir, name, ids) if self.exp_dir is not None else pd.DataFrame()
        return self._tables[name]


def run_values(m: Measure, runs: pd.DataFrame, res: Results) -> pd.Series:
    """The measured quantity of each run (index: runs'). NaN: no number (a failed run, a diverged run's layer
    statistics, an accuracy of a diverged run); +inf: a diverged run's loss, a level never reached."""
    status = runs.status
    if m.quantity in CURVE_FINALS or (m.quantity in LAYER_FINALS and m.step == "last"):
        return per_run(runs)[m.quantity]  # the final numbers every command reads (finals.py)
    if m.quantity == "diverged":
        v = (status == "diverged").astype(float)
        v[~status.isin(("ok", "diverged"))] = math.nan
        return v
    of_run = {
        "dead_fraction": _layer_mean,
        "saturated_fraction": _layer_mean,
        "layer_spread": _layer_spread,
        "sn_spread": _sn_spread,
        "column_mean": _column_mean,
        "steps_to": _steps_to,
        "generalization_gap": _gap,
        "mode_ratio": _mode_ratio,
        "final_value": _final_value,
        "landscape": _landscape,
    }[m.quantity]
    curves = ("steps_to", "generalization_gap", "mode_ratio", "final_value")
    name = "curves" if m.quantity in curves else "landscape" if m.quantity == "landscape" else "layers"
    table = res.table(name)
    groups = dict(tuple(table.groupby("run_id"))) if len(table) else {}
    v = pd.Series(
        [of_run(m, groups[rid]) if rid in groups else math.nan for rid in runs.run_id], index=runs.index, dtype=float
    )
    if name == "layers" and (m.step == "last" or m.quantity == "sn_spread"):
        v[status == "diverged"] = math.nan  # the layers of a diverged net are neither dead nor alive
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
    """Mean over the measured steps of one of report.landscape_summary's numbers (record.landscape_every): +inf when
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


# -- verdicts ----------------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    verdict: str
    reason: str


def _t(df: float) -> float:
    """The two-sided CONFIDENCE quantile of Student's t with df degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, max(df, 1.0)))


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a minus mean of b, and the half-width of its CONFIDENCE interval (Welch's t)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    denom = va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)
    df = (va + vb) ** 2 / denom if denom > 0 else len(a) + len(b) - 2
    return float(a.mean() - b.mean()), _t(df) * se


def threshold_verdict(values: np.ndarray, at_least: float | None = None, at_most: float | None = None) -> Verdict:
    """Per-seed values against a threshold: the CONFIDENCE interval of their mean (Student's t) decides, as the
    interval of a difference decides a comparison. Supported when it lies entirely on the passing side (and every
    seed has a number), not supported when entirely on the other side, else inconclusive: a mean within seed
    noise of the threshold is no verdict. A seed without a number (NaN: a diverged run's dead fraction) does not
    pass: none with a number is not supported. Infinite values have no mean: then every seed must pass (supported)
    or none (not supported)."""
    v = np.asarray(values, float)
    bound = f">= {_num(at_least)}" if at_least is not None else f"<= {_num(at_most)}"
    if len(v) < MIN_SEEDS:
        return Verdict("inconclusive", f"{len(v)} seeds, fewer than {MIN_SEEDS}")
    nan = int(np.isnan(v).sum())
    if nan == len(v):
        return Verdict("not supported", f"no seed has a number ({nan} of {nan}), so none is {bound}")
    passing = Passing(at_least=at_least, at_most=at_most)
    finite = v[np.isfinite(v)]
    if np.isinf(v).any() or len(finite) < MIN_SEEDS:
        passes = np.array([passing.test(x) for x in v])
        why = "infinite values: no mean" if np.isinf(v).any() else f"{len(finite)} seeds with a number"
        if passes.all():
            return Verdict("supported", f"every seed {bound} ({len(v)} of {len(v)}; {why})")
        if not passes.any():
            return Verdict("not supported", f"no seed {bound} ({why})")
        return Verdict("inconclusive", f"{int(passes.sum())} of {len(v)} seeds {bound} ({why})")
    mean = float(finite.mean())
    half = _t(len(finite) - 1) * float(finite.std(ddof=1)) / math.sqrt(len(finite))
    lo, hi = mean - half, mean + half
    ci = f"{CONFIDENCE:.0%} interval of the mean over {len(finite)} seeds [{_num(lo)}, {_num(hi)}]"
    good, bad = (lo >= at_least, hi < at_least) if at_least is not None else (hi <= at_most, lo > at_most)
    if bad:
        return Verdict("not supported", f"{ci}: not {bound}")
    if good and nan:
        return Verdict("inconclusive", f"{ci} is {bound}, but {nan} of {len(v)} seeds have no number")
    if good:
        return Verdict("supported", f"{ci}: {bound}")
    edge = at_least if at_least is not None else at_most
    return Verdict("inconclusive", f"{ci} contains {_num(edge)}: within seed noise")


def compare_verdict(
    kind: str, a: np.ndarray, b: np.ndarray, margin: float = 0.0, names: tuple[str, str] = ("a", "b")
) -> Verdict:
    """kind 'less_than' (claim: a < b by more than margin), 'greater_than' (a > b), 'equal_within' (|a - b| <
    margin), 'not_less_than' (a >= b - margin: a is not below b by more than the margin) or 'not_greater_than'
    (a <= b + margin), from the per-seed values of each side (NaN dropped). `names`: the two sides as the reason
    text names them (the groups' labels)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if min(len(a), len(b)) < MIN_SEEDS:
        return Verdict("inconclusive", f"{len(a)} and {len(b)} seeds with a number, fewer than {MIN_SEEDS}")
    m = f" by more than {_num(margin)}" if margin else ""

    def diff(i: int, j: int) -> str:
        one = [n if n in ("a", "b") else f"({n})" for n in names]
        return f"{one[i]} - {one[j]}"

    if kind == "equal_within":
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return Verdict("inconclusive", "infinite values: no difference of means")
        d, half = _welch(a, b)
        ci = f"{CONFIDENCE:.0%} interval of {diff(0, 1)} [{_num(d - half)}, {_num(d + half)}]"
        if abs(d) + half < margin:
            return Verdict("supported", f"{ci} lies within +-{_num(margin)}")
        if abs(d) - half > margin:
            return Verdict("not supported", f"{ci} lies outside +-{_num(margin)}")
        return Verdict("inconclusive", f"{ci} is not within +-{_num(margin)}")
    big, small = (b, a) if kind in ("less_than", "not_greater_than") else (a, b)
    if kind.startswith("not_"):  # the claim: big - small > -margin (big is not worse by more than the margin)
        m = f" or trails it by less than {_num(margin)}"
        margin = -margin
    # else the claim: big - small > margin
    if not (np.isfinite(big).all() and np.isfinite(small).all()):
        if big.min() - small.max() > margin:
            return Verdict("supported", f"every seed of one side beats every seed of the other{m} (infinite values)")
        if big.max() - small.min() < margin:
            return Verdict("not supported", f"no seed of one side beats any seed of the other{m} (infinite values)")
        return Verdict("inconclusive", "the seeds' ranges overlap (infinite values: no difference of means)")
    d, half = _welch(big, small)
    if kind in ("less_than", "not_greater_than"):
        ci = f"{CONFIDENCE:.0%} interval of {diff(1, 0)}: [{_num(d - half)}, {_num(d + half)}]"
    else:
        ci = f"{CONFIDENCE:.0%} interval of {diff(0, 1)}: [{_num(d - half)}, {_num(d + half)}]"
    if d - half > margin:
        return Verdict("supported", f"{ci}, above {_num(margin)}")
    if d + half < margin:
        return Verdict("not supported", f"{ci}, below {_num(margin)}")
    return Verdict("inconclusive", f"{ci} contains {_num(margin)}: within seed noise")


def flat_verdict(points: dict[Any, np.ndarray], below: float) -> Verdict:
    """points: axis value -> per-seed values. Flat: the means vary by less than `below` along the axis."""
    pts = {x: np.asarray(v, float)[~np.isnan(np.asarray(v, float))] for x, v in points.items()}
    short = [x for x, v in pts.items() if len(v) < MIN_SEEDS]
    if short:
        return Verdict("inconclusive", f"fewer than {MIN_SEEDS} seeds with a number at {short}")
    if not all(np.isfinite(v).all() for v in pts.values()):
        if any(np.isfinite(v).all() for v in pts.values()) and any((~np.isfinite(v)).all() for v in pts.values()):
            return Verdict("not supported", "infinite at some points, finite at others")
        return Verdict("inconclusive", "infinite values: no means")
    means = {x: v.mean() for x, v in pts.items()}
    hi, lo = max(means, key=means.get), min(means, key=means.get)
    r, half = _welch(pts[hi], pts[lo])
    interval = f"{CONFIDENCE:.0%} interval [{_num(r - half)}, {_num(r + half)}]"
    ci = f"largest minus smallest mean {_num(r)} ({hi} vs {lo}), {interval}"
    if r + half < below:
        return Verdict("supported", f"{ci}, below {_num(below)}")
    if r - half > below:
        return Verdict("not supported", f"{ci}, above {_num(below)}")
    return Verdict("inconclusive", f"{ci} contains {_num(below)}")


# -- one row per (claim, setting) --------------------------------------------------------------------------------------


@dataclass
class Row:
    claim_id: str
    claim: str
    source: str
    source_link: str | None
    setting: str
    experiment: str
    measure: str
    criterion: str
    measurement: str
    verdict: str
    reason: str
    values: dict[str, list[float | None]] = field(default_factory=dict)  # group -> per-seed values
    by_kernel: dict[str, dict[str, str]] = field(default_factory=dict)  # --kernel both: each kernel's outcome


def evaluate(s: Setting, res: Results) -> tuple[Verdict, str, dict[str, list[float]]]:
    """The verdict, the measurement as text (mean +- std [min, max] over seeds per group) and the per-seed values
    of one setting, from the results of its experiment."""
    crit = s.criterion
    runs = res.runs[_matches(res.runs, s.where)]
    values = run_values(s.measure, runs, res)
    if crit.kind in COMPARISONS:
        sides = {}
        for name, flt in (("a", crit.a), ("b", crit.b)):
            mine = _matches(runs, flt)
            sides[name] = (flt, runs[mine], seed_values(s.measure, runs[mine], values[mine]))
        labels = (_label(crit.a), _label(crit.b))
        verdict = compare_verdict(crit.kind, sides["a"][2].to_numpy(), sides["b"][2].to_numpy(), crit.margin, labels)
        text = "; ".join(f"{_label(flt)}: {describe_values(v, r)}" for flt, r, v in sides.values())
        return verdict, text, {_label(flt): _listed(v) for flt, _, v in sides.values()}
    if crit.kind == "flat":
        points, texts = {}, []
        for x, grp in runs.groupby(crit.over, sort=True):
            v = seed_values(s.measure, grp, values[grp.index])
            points[x] = v.to_numpy()
            texts.append(f"{x}: {_num(v.mean())}")
        verdict = flat_verdict(points, crit.below)
        return (
            verdict,
            f"means by {crit.over.split('.')[-1]}: " + ", ".join(texts),
            {f"{crit.over}={x}": _listed(pd.Series(v)) for x, v in points.items()},
        )
    v = seed_values(s.measure, runs, values)
    verdict = threshold_verdict(v.to_numpy(), crit.at_least, crit.at_most)
    return verdict, describe_values(v, runs), {_label(s.where): _listed(v)}


def describe_values(v: pd.Series, runs: pd.DataFrame | None = None) -> str:
    """'0.84 +- 0.012 [0.83, 0.85], 3 seeds', plus how many of the runs diverged or failed."""
    x = v.to_numpy(float)
    finite = x[np.isfinite(x)]
    parts = []
    if len(finite):
        sd = f" +- {_num(finite.std(ddof=1))}" if len(finite) > 1 else ""
        parts.append(f"{_num(finite.mean())}{sd} [{_num(finite.min())}, {_num(finite.max())}]")
    if np.isinf(x).any():
        parts.append(f"{int(np.isinf(x).sum())} inf")
    if np.isnan(x).any():
        parts.append(f"{int(np.isnan(x).sum())} without a number")
    text = ", ".join(parts) + f" ({len(x)} seeds"
    if runs is not None and len(runs):
        for status in ("diverged", "failed", "missing"):
            n = int((runs.status == status).sum())
            if n:
                text += f", {n}/{len(runs)} runs {status}"
    return text + ")"


def _listed(v: pd.Series) -> list[float | None]:
    return [None if math.isnan(x) else float(x) for x in v.to_numpy(float)]


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def not_measured_row(c: Claim, src: Source) -> Row:
    return Row(
        c.id, c.claim, src.label(), src.link, "-", "-", "-", "-", c.reason or "", "not measured yet", c.reason or ""
    )


# -- running -------------------------------------------------------------------------------------------------------


KERNELS = ("auto", "written-out", "autograd", "both")


def check_claims(
    book: ClaimsBook,
    out: Path | str = "results",
    *,
    quick: bool = False,
    only: list[str] | None = None,
    experiments: list[str] | None = None,
    kernel: str = "auto",
    force: bool = False,
    console: Console | None = None,
) -> list[Row]:
    """Train the runs the claims need that are not finished yet (OUT/<experiment>/, resumed as `normbench run`
    does; `force`: retrain them all), then measure every setting. `experiments`: only the settings of these
    experiments (the demo's). `kernel` 'auto' trains as `normbench run` does; 'written-out' or 'autograd' into
    OUT/<experiment>-<kernel>/; 'both' as 'auto' and again with 'autograd' wherever 'auto' writes some runs out,
    and a setting whose verdict differs between the two roundings gets the verdict 'depends on rounding' with
    both outcomes. ConfigError for a wrong claims file, config, kernel or --out, before any training."""
    from normbench.store import DamagedResults

    console = console or Console(stderr=True)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if kernel not in KERNELS:
        raise ConfigError(f"--kernel {kernel!r}: choose from {', '.join(KERNELS)}")
    claims = book.select(only)
    if experiments is not None:
        claims = [c.of_experiments(experiments) for c in claims if c.of_experiments(experiments).settings]
    exps = check_references(book, claims, quick)
    results = _train(book, claims, exps, out, quick, kernel, force, console)
    rows = []
    for c in claims:
        src = book.sources[c.source]
        if c.status != "testable":
            rows.append(not_measured_row(c, src))
            continue
        for s in c.settings:
            try:
                rows.append(_row(book, c, src, s, results[s.experiment], quick))
            except DamagedResults as e:
                raise ConfigError(str(e)) from None
    return rows


def _train(
    book: ClaimsBook,
    claims: list[Claim],
    exps: dict[str, Experiment],
    out: Path,
    quick: bool,
    kernel: str,
    force: bool,
    console: Console,
) -> dict[str, dict[str, Results]]:
    """Each experiment's results by kernel label (the kernels that computed its runs: 'written-out', 'autograd',
    or both names joined when a grid mixes them)."""
    from normbench.engine import PlanError, kernel_for
    from normbench.store import ExperimentStore
    from normbench.sweep import run_experiment

    for key, exp in exps.items():  # a kernel that cannot train an experiment is refused before any training
        try:
            for r in exp.runs if kernel in ("written-out", "autograd") else []:
                kernel_for(r.config, kernel)
        except PlanError as e:
            raise ConfigError(f"claims experiment {key!r}: {e}") from None
    results: dict[str, dict[str, Results]] = {}
    for i, (key, exp) in enumerate(exps.items(), 1):
        users = [c.id for c in claims if any(s.experiment == key for s in c.settings)]
        console.print(
            f"[bold]claims: experiment {i}/{len(exps)}[/] {esc(key)} (for {esc(', '.join(users))})", highlight=False
        )
        kernels = [kernel] if kernel != "both" else ["auto"]
        if kernel == "both" and any(kernel_for(r.config) == "written-out" for r in exp.runs):
            kernels.append("autograd")  # elsewhere 'auto' is autograd already: the same computations
        results[key] = {}
        for k in kernels:
            start = time.monotonic()
            e = exp if k == "auto" else book.experiment(key, quick, k)
            table = run_experiment(e, out, kernel=k, force=force, console=console)
            used = "+".join(sorted(set(table["engine.kernel"].dropna()))) or k
            results[key][used] = Results(table, exp_dir=ExperimentStore(out, e.name).dir)
            console.print(
                f"  {esc(e.name)}: {len(table)} runs ready in {time.monotonic() - start:.0f} s", highlight=False
            )
    return results


def _row(book: ClaimsBook, c: Claim, src: Source, s: Setting, by_kernel: dict[str, Results], quick: bool) -> Row:
    """One setting's row: its verdict under each kernel; one verdict when they agree, else 'depends on rounding'
    with every kernel's verdict and reason."""
    judged = {k: evaluate(s, res) for k, res in by_kernel.items()}
    (verdict, text, values), *others = judged.values()
    outcomes = {k: {"verdict": v.verdict, "reason": v.reason, "measurement": t} for k, (v, t, _) in judged.items()}
    verdict_text, reason = verdict.verdict, verdict.reason
    if any(v.verdict != verdict.verdict for v, _, _ in others):
        verdict_text = "depends on rounding"
        reason = "; ".join(f"{k}: {o['verdict']} ({o['reason']})" for k, o in outcomes.items())
    elif others:
        reason += f"; the same under {' and '.join(outcomes)}"
    return Row(
        c.id,
        c.claim,
        src.label(),
        src.link,
        s.setting,
        book.folder(s.experiment, quick),
        s.measure.describe(),
        s.criterion.describe(),
        text,
        verdict_text,
        reason,
        values,
        outcomes if len(outcomes) > 1 else {},
    )


def verdicts_for(exp_dir: Path, runs: pd.DataFrame | None = None) -> tuple[list[Row], str]:
    """The packaged claims file's verdicts on an experiment folder that `normbench claims` (or the demo) trained:
    the settings of the claims experiment whose folder has this name, judged on the folder's runs by the rules of
    `normbench claims`, with nothing trained. ([], why) when the claims file says nothing about the folder or the
    folder lacks finished runs those settings need (for `normbench report`); (rows, '') otherwise."""
    from normbench.store import FINISHED, load_runs

    book = load_claims()
    name = Path(exp_dir).name
    found = [
        (key, quick, kernel)
        for key in book.experiments
        for quick in (False, True)
        for kernel in (None, "written-out", "autograd")
        if book.folder(key, quick, kernel) == name and (not quick or book.experiments[key].quick)
    ]
    claims = [c.of_experiments([k for k, _, _ in found]) for c in book.claims]
    claims = [c for c in claims if c.settings and c.status == "testable"]
    if not claims:
        return [], ""
    key, quick, kernel = found[0]
    exp = book.experiment(key, quick, kernel)
    runs = load_runs(exp_dir) if runs is None else runs
    done = set(runs.run_id[runs.status.isin(FINISHED)])
    missing = [r.run_id for r in exp.runs if r.run_id not in done]
    if missing:
        why = (
            f"the claims file judges {len(claims)} claims on the runs of `normbench claims`"
            f"{' --quick' if quick else ''} in a folder named {name}; {len(missing)} of its {len(exp.runs)} runs "
            "are not finished here, so no verdict is given"
        )
        return [], why
    res = Results(runs[runs.run_id.isin({r.run_id for r in exp.runs})].reset_index(drop=True), exp_dir=exp_dir)
    label = "+".join(sorted(set(res.runs["engine.kernel"].dropna()))) or "runs"
    rows = [_row(book, c, book.sources[c.source], s, {label: res}, quick) for c in claims for s in c.settings]
    return rows, ""


# -- output ----------------------------------------------------------------------------------------------------------

STYLE = {
    "supported": "green",
    "not supported": "red",
    "inconclusive": "yellow",
    "depends on rounding": "magenta",
    "not measured yet": "dim",
}


def claims_table(rows: list[Row], title: str = "") -> Table:
    table = Table(title=Text(title), title_justify="left", header_style="bold", show_lines=True)
    for name in ("claim", "source", "setting", "measurement", "verdict"):
        table.add_column(name, overflow="fold")
    previous = None
    for r in rows:
        first = r.claim_id != previous
        previous = r.claim_id
        table.add_row(
            f"[bold]{esc(r.claim_id)}[/]\n{esc(r.claim)}" if first else "",
            esc(r.source) if first else "",
            esc(r.setting),
            f"{esc(r.measurement)}\n[dim]{esc(r.measure)}, {esc(r.criterion)}[/]"
            if r.measure != "-"
            else esc(r.measurement),
            f"[{STYLE[r.verdict]}]{r.verdict}[/]\n[dim]{esc(r.reason)}[/]" if r.measure != "-" else esc(r.verdict),
        )
    return table


def counts(rows: list[Row]) -> str:
    n = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    return ", ".join(f"{k} {v}" for k, v in n.items() if v)


def markdown(rows: list[Row], quick: bool, seconds: float | None = None, kernel: str = "auto") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| claim | source | setting | measurement (mean +- std [min, max] over seeds) | verdict | why |",
        "|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        first = r.claim_id != previous
        previous = r.claim_id
        src = f"[{r.source}]({r.source_link})" if r.source_link else r.source
        lines.append(
            "| "
            + " | ".join(
                cell(x)
                for x in (
                    f"**{r.claim_id}**: {r.claim}" if first else "",
                    src if first else "",
                    r.setting,
                    r.measurement if r.measure == "-" else f"{r.measurement}; {r.measure}, {r.criterion}",
                    f"**{r.verdict}**",
                    r.reason if r.measure != "-" else "",
                )
            )
            + " |"
        )
    mode = "quick" if quick else "full"
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    options = (" --quick" if quick else "") + (f" --kernel {kernel}" if kernel != "auto" else "")
    head = f"`normbench claims{options}` ({mode} mode{took}): {counts(rows)}.\n\n"
    return head + "\n".join(lines) + "\n"


def write_report(
    rows: list[Row], out: Path, quick: bool, seconds: float | None = None, kernel: str = "auto"
) -> list[Path]:
    """OUT/claims.md and OUT/claims.json."""
    from normbench.store import write_text_atomic
    from normbench.version import __version__

    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "claims.md", out / "claims.json"
    write_text_atomic(md, markdown(rows, quick, seconds, kernel))
    doc = {
        "mode": "quick" if quick else "full",
        "kernel": kernel,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "normbench": __version__,
        "min_seeds": MIN_SEEDS,
        "confidence": CONFIDENCE,
        "claims": [asdict(r) for r in rows],
    }
    write_text_atomic(js, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return [md, js]


def draw_figures(
    book: ClaimsBook, out: Path, quick: bool, experiments: set[str], progress: Console, kernel: str = "auto"
) -> list[Path]:
    """The claims' figures whose experiment was checked, each drawn from OUT/<experiment>/ into OUT/figures/ as
    `normbench plot` draws it (docs/claims.md's figures are these, from the full check). A figure the quick variant
    of an experiment does not give (a final_vs figure needs 3 values of its axis) is left out with a note."""
    from normbench.plot import NoSuchFigure, PlotError, draw_figure

    paths = []
    for f in book.figures:
        if f.experiment not in experiments:
            continue
        exp_dir = Path(out) / book.folder(f.experiment, quick, None if kernel in ("auto", "both") else kernel)
        where = (lambda runs, f=f: _matches(runs, f.where)) if f.where else None
        try:
            paths.append(draw_figure(exp_dir, f.figure, Path(out) / "figures" / f.file, compare=f.compare, where=where))
        except NoSuchFigure as e:
            if not (quick and book.experiments[f.experiment].quick):
                raise ConfigError(f"figure {f.file}: {e}") from None
            progress.print(
                f"  {f.file}: not drawn in quick mode ({exp_dir.name} gives no {f.figure})",
                highlight=False,
                markup=False,
            )
        except PlotError as e:
            raise ConfigError(f"figure {f.file}: {e}") from None
    if paths:
        progress.print(f"-> {Path(out) / 'figures'} ({len(paths)} figures)", highlight=False, markup=False)
    return paths


def run_claims(
    out: Path,
    *,
    quick: bool = False,
    only: list[str] | None = None,
    path: Path | None = None,
    kernel: str = "auto",
    console: Console,
    progress: Console,
) -> list[Row]:
    """`normbench claims`: load, run, measure, print the table, write claims.md and claims.json, draw the figures."""
    start = time.monotonic()
    book = load_claims(path)
    rows = check_claims(book, out, quick=quick, only=only, kernel=kernel, console=progress)
    seconds = time.monotonic() - start
    console.print(claims_table(rows, title=f"claims ({'quick' if quick else 'full'} mode): {counts(rows)}"))
    for p in write_report(rows, Path(out), quick, seconds, kernel):
        progress.print(f"-> {p}", highlight=False, markup=False)
    checked = {s.experiment for c in book.select(only) for s in c.settings}
    draw_figures(book, Path(out), quick, checked, progress, kernel)
    progress.print(f"claims checked in {time.monotonic() - start:.0f} s", highlight=False)
    return rows

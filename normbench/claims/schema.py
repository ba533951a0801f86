"""The claims file (configs/claims.yaml): its schema, loading it, and the checks made before any training (the
experiments, the settings' filters and figures, each set of runs counted once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from normbench.claims.measures import Measure
from normbench.claims.statistics import num
from normbench.config import PACKAGED_CONFIGS, ConfigError, Experiment, Strict, describe, load_experiment
from normbench.labels import filter_text
from normbench.results import same_value
from normbench.safe import load_yaml


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
            return f">= {num(self.at_least)}" if self.at_least is not None else f"<= {num(self.at_most)}"
        if self.kind == "flat":
            return f"flat within {num(self.below)} along {self.over}"
        if self.kind in ("not_less_than", "not_greater_than"):
            sign = ">=" if self.kind == "not_less_than" else "<="
            a, b = filter_text(self.a), filter_text(self.b)
            return f"{a} {sign} {b} {'-' if sign == '>=' else '+'} {num(self.margin)}"
        sign = {"less_than": "<", "greater_than": ">", "equal_within": "~"}[self.kind]
        margin = f" (margin {num(self.margin)})" if self.margin else ""
        return f"{filter_text(self.a)} {sign} {filter_text(self.b)}{margin}"


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
            if not matches(params, f.where).any():
                raise ConfigError(f"figure {f.file}: where {filter_text(f.where)} matches no run of {exp.name}")
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
        runs = [frozenset(params.loc[matches(params, flt), "_computation"]) for flt in groups]
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
        runs = params[matches(params, flt)]
        per = runs.groupby(["seed", over] if over else ["seed"]).size()
        if per.max() > 1:
            varying = [k for k in axes if k not in ("seed", over, *flt) and runs[k].astype(str).nunique() > 1]
            raise ValueError(
                f"{filter_text(flt) or 'all runs'} leaves {per.max()} runs per seed"
                + (f" and {over}" if over else "")
                + f" of {exp.name}: fix {', '.join(varying)} in where"
            )


def matches(runs: pd.DataFrame, flt: dict[str, Any]) -> pd.Series:
    keep = pd.Series(True, index=runs.index)
    for key, value in flt.items():
        keep &= runs[key].map(lambda cell, v=value: same_value(cell, v)).astype(bool)
    return keep

"""normbench from Python: what the command line does, as functions a notebook calls.

    import normbench

    runs = normbench.run("morvan_tf23", overrides=["seeds=[1, 2]"])  # runs.parquet's rows, as a DataFrame
    res = normbench.open_results("results/morvan_tf23")
    res.runs                      # one row per run: grid values, status, final numbers
    res.curves()                  # the loss curves (step, split, mode, loss, ...)
    res.layers(where=["norm=batch"])  # per-layer numbers of the runs with batch norm
    normbench.draw("results/morvan_tf23")  # every figure, as `normbench plot` draws them
    rows = normbench.check_claims(only=["relu-dies-without-bn"], quick=True)

A config is a file, a packaged config's name, or a dict of the same sections as a YAML file; `overrides` are
`--set` items. Errors are the command line's: a normbench.UserError (a ConfigError for what the config or options
get wrong, a DamagedResults for a results folder that cannot be read, ...), whose message is one line. Nothing here
imports torch until a run is trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from normbench.config import ConfigError, Experiment, apply_override, experiment_from_dict, load_experiment
from normbench.store import FINISHED, experiment_axes, find_experiments, load_runs, load_table, select_runs

TABLES = ("curves", "layers", "histograms", "landscape", "time")


def load_config(config: str | Path | Mapping[str, Any], overrides: Iterable[str] = ()) -> Experiment:
    """The experiment a config describes, validated as `normbench validate` does, with `--set` overrides."""
    overrides = list(overrides)
    if isinstance(config, Mapping):
        import copy

        raw = copy.deepcopy(dict(config))
        for item in overrides:
            apply_override(raw, item)
        return experiment_from_dict(raw)
    return load_experiment(config, overrides)


def run(
    config: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    out: str | Path = "results",
    *,
    quiet: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Train the config's runs not finished yet into OUT/<name>/, as `normbench run` does, and return
    runs.parquet's rows of its runs. `options` are run's: force, retry_failed, workers, executor, scheduler,
    kernel, stack, compile, device. `quiet`: no progress or log lines."""
    from normbench.sweep import run_experiment

    exp = load_config(config, overrides)
    return run_experiment(exp, out, console=Console(stderr=True, quiet=quiet), **options)


@dataclass(frozen=True)
class Results:
    """One experiment folder's results, read as `normbench summary` and `plot` read them."""

    dir: Path
    runs: pd.DataFrame  # runs.parquet: one row per run listed by the folder's config

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def axes(self) -> list[str]:
        """The grid keys the folder's config varies (model.norm, model.activation, seed, ...)."""
        return [a for a in experiment_axes(self.dir) if a in self.runs.columns]

    def select(self, where: Iterable[str] = ()) -> pd.DataFrame:
        """The runs whose grid values match every `KEY=VALUE` (as `--where`: `norm=batch`, `lr=[0.1, 0.01]`)."""
        where = list(where)
        return select_runs(self.runs, where, self.axes, self.name) if where else self.runs

    def table(self, name: str, where: Iterable[str] = ()) -> pd.DataFrame:
        """A recorded table of the selected runs (one of TABLES), with each run's grid values beside its rows."""
        if name not in TABLES:
            raise ConfigError(f"no table {name!r}: choose from {', '.join(TABLES)}")
        runs = self.select(where)
        runs = runs[runs.status.isin(FINISHED)]  # a failed run recorded no tables
        rows = load_table(self.dir, name, runs.run_id.tolist())
        if rows.empty:
            return rows
        return rows.merge(runs[["run_id", *self.axes]], on="run_id", how="left")

    def curves(self, where: Iterable[str] = ()) -> pd.DataFrame:
        return self.table("curves", where)

    def layers(self, where: Iterable[str] = ()) -> pd.DataFrame:
        return self.table("layers", where)

    def histograms(self, where: Iterable[str] = ()) -> pd.DataFrame:
        return self.table("histograms", where)

    def time(self, where: Iterable[str] = ()) -> pd.DataFrame:
        """A sequence model's statistics at each time step (time.parquet; empty for runs that recorded none)."""
        return self.table("time", where)


def open_results(path: str | Path) -> Results:
    """An experiment folder (results/morvan_tf23), or a results folder that holds exactly one."""
    found = find_experiments(path)
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise ConfigError(f"{path} holds {len(found)} experiments ({names}): open one of them")
    return Results(found[0], load_runs(found[0]))


def draw(
    path: str | Path, compare: str | None = None, where: Iterable[str] = (), point: str = "post_act", **options: Any
) -> list[Path]:
    """Every figure `normbench plot` draws for the experiment(s) at `path`, with its --compare and --where;
    `options` are overlay, animate, ridge, fmt, workers. Returns the paths written."""
    from normbench.labels import where_folder
    from normbench.views.render import plot_experiments

    where = list(where)
    dirs = find_experiments(path)
    keep: set[str] = set()
    if where:
        for d in dirs:
            keep |= set(open_results(d).select(where).run_id)
    return plot_experiments(
        dirs,
        compare=compare,
        point=point,
        where=(lambda runs: runs.run_id.isin(keep)) if where else None,
        subdir=where_folder(where) if where else None,
        **options,
    )


def check_claims(
    out: str | Path = "results", claims_file: str | Path | None = None, *, quiet: bool = False, **options: Any
) -> list[dict[str, Any]]:
    """Train what the claims need and judge each setting, as `normbench claims` does; one dict per row of its
    table (claim, setting, measurement, verdict, reason, values). `options` are quick, only, experiments, kernel,
    force."""
    from normbench.claims import check_claims as check
    from normbench.claims import load_claims

    rows = check(load_claims(claims_file), out, console=Console(stderr=True, quiet=quiet), **options)
    return [asdict(row) for row in rows]

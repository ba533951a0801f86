"""Reading a results folder back: its format, its experiments, their runs, tables and summaries, and the runs a
`--where` selects and the groups figures are drawn for. store.py writes what this module reads; nothing here
writes a file or imports torch.

    OUT/<name>/config.yaml            the resolved experiment config (after --set)
    OUT/<name>/runs.parquet           one row per run of the current grid (docs/results-format.md)
    OUT/<name>/runs/<run_id>/         config.yaml, summary.json, curves/layers/histograms.parquet
                                      (and landscape.parquet when record.landscape_every is set)

Every run (summary.json) and every experiment folder (runs.parquet's schema metadata) says which results format
(RESULTS_FORMAT) wrote it; results of another format are one line naming it, never read as if they were this one's.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from normbench.errors import UserError
from normbench.finals import CURVE_FINALS
from normbench.labels import plain, value_text
from normbench.points import TIME_COLUMNS
from normbench.registry import ACTIVATIONS, DATASETS, INITS, MODELS, NORMS, OPTIMIZERS, UnknownName
from normbench.safe import YAMLLimit, load_yaml, quoted, short

TABLES = ("curves", "layers", "histograms")
OPTIONAL_TABLES = ("landscape", "time")  # written by the runs that record them
# What produced a run (summary.json's "engine", runs.parquet's engine.* columns): see docs/results-format.md.
ENGINE = ("kernel", "compiled", "device", "dtype", "threads", "torch", "stack")
FINISHED = ("ok", "diverged")

# The results format (docs/results-format.md, "Versions"): a new number whenever results written before could no
# longer be read as documented (a column or file removed, renamed or given another meaning, a column every reader
# needs added). 0: no number written (normbench 0.1.x and earlier).
RESULTS_FORMAT = 1
FORMAT_KEY = "results_format"  # summary.json's key
FORMAT_META = b"normbench.results_format"  # runs.parquet's schema metadata key (and b"normbench.version")
FORMAT_WRITERS = {0: "normbench 0.1.x or earlier", 1: "normbench 0.2.0 or later"}
# The columns each table must have in this format: those docs/results-format.md documents (runs.parquet also
# has one column per grid key).
COLUMNS = {
    "runs": (
        "run_id",
        "status",
        "diverged_step",
        "steps_done",
        *CURVE_FINALS,
        "last_finite_train_loss",
        "wall_time_s",
        "dead_fraction",
        "saturated_fraction",
        "error",
        *(f"engine.{k}" for k in ENGINE),
    ),
    "curves": ("run_id", "step", "split", "mode", "loss", "accuracy"),
    "layers": (
        "run_id",
        "step",
        "layer",
        "dead_fraction",
        "saturated_fraction",
        "zero_fraction",
        "grad_norm",
        "backprop_norm",
        "weight_norm",
        "ics_l2",
        "ics_cos",
        *(f"sn_{s}_{n}" for s in ("mean", "var") for n in ("in", "ln", "bn")),
        "running_mean_err",
        "running_var_err",
    ),
    "histograms": (
        "run_id",
        "step",
        "layer",
        "point",
        "counts",
        "lo",
        "hi",
        "below",
        "above",
        "nan",
        "inf",
        "n",
        "mean",
        "std",
        "min",
        "max",
    ),
    "landscape": ("run_id", "step", "scale", "distance", "loss", "grad_change"),
    "time": ("run_id", "step", "layer", "t", "point", *TIME_COLUMNS),
}


jsonable = plain  # results as JSON: NaN and inf are null (a diverged run's loss is reported by its status)


def is_array(v: Any) -> bool:
    """Whether `v` is a numpy array (parquet gives list values back as arrays)."""
    return getattr(v, "ndim", 0) > 0


class DamagedResults(UserError):
    """A results file that cannot be read; the message names the run and what to do."""


class NoResults(UserError):
    """A path that holds no results folder (missing, a file, nothing normbench wrote)."""


class FormatError(DamagedResults):
    """Results of another results format than this normbench reads; the message says which and what to do."""


_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))


def summary_problem(s: Any, run_id: str | None = None) -> str | None:
    """What makes `s` (a parsed summary.json) not one this results format writes, or None: a JSON object with the
    keys every run has and, for a finished run, the ones a finished run has, each of its type. A summary of another
    results format is left to its format's message (only its status is required)."""
    if not isinstance(s, dict):
        return f"summary.json holds {_json_kind(s)}, not an object"
    if not isinstance(s.get("status"), str):
        return "summary.json has no status"
    if run_format(s) != RESULTS_FORMAT:
        return None
    need: dict[str, tuple[type, ...]] = {"run_id": (str,), "params": (dict,), "seed": (int,)}
    if s["status"] in FINISHED:
        need |= {
            "files": (dict,),
            "steps_done": (int,),
            "diverged_step": (int, type(None)),
            "wall_time_s": _NUMBER,
            "engine": (dict,),
            "dead_fraction": (list,),
            "saturated_fraction": (list,),
            **dict.fromkeys(CURVE_FINALS, _OPTIONAL_NUMBER),
            "last_finite_train_loss": _OPTIONAL_NUMBER,
        }
    elif s["status"] == "failed":
        need |= {"error": (str,)}
    else:
        return f"summary.json has status {s['status']!r}, not one of ok, diverged, failed"
    for key, types in need.items():
        if key not in s:
            return f"summary.json lacks {key!r}"
        v = s[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            return f"summary.json's {key!r} is {_json_kind(v)}, not {' or '.join(_JSON_KINDS[t] for t in types)}"
    if run_id is not None and s["run_id"] != run_id:
        return f"summary.json names run {s['run_id']!r}, not its folder's {run_id!r}"
    if s["status"] in FINISHED:
        for name, f in s["files"].items():
            if not (
                isinstance(f, dict) and type(f.get("bytes")) is int and isinstance(f.get("sha256"), str)
            ) or name.removesuffix(".parquet") not in (*TABLES, *OPTIONAL_TABLES):
                return f"summary.json's files entry {name!r} is not a table's size and checksum"
        missing = [t for t in TABLES if f"{t}.parquet" not in s["files"]]
        if missing:
            return f"summary.json lists no checksum for {', '.join(t + '.parquet' for t in missing)}"
        fractions = [*s["dead_fraction"], *s["saturated_fraction"]]
        if not all(isinstance(v, _OPTIONAL_NUMBER) and not isinstance(v, bool) for v in fractions):
            return "summary.json's dead or saturated fractions are not numbers"
    return None


_JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def _json_kind(v: Any) -> str:
    return _JSON_KINDS.get(type(v), type(v).__name__)


def run_format(summary: dict[str, Any]) -> int:
    """The results format a run's summary.json says it was written in (0: none said, an older normbench)."""
    found = summary.get(FORMAT_KEY, 0)
    return found if isinstance(found, int) else -1


def folder_format(exp_dir: Path) -> int:
    """The results format of an experiment folder, from runs.parquet's schema metadata (0: none, an older
    normbench). DamagedResults when runs.parquet cannot be read."""
    import pyarrow.parquet as pq

    path = exp_dir / "runs.parquet"
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as e:
        raise DamagedResults(f"{path} cannot be read ({type(e).__name__}); `normbench run` writes it again") from None
    try:
        return int(meta.get(FORMAT_META, b"0"))
    except ValueError:
        return -1


def format_problem(what: str, found: int, exp_dir: Path) -> str:
    """One line: `what` (a folder, a run) is in results format `found`, which this normbench does not read, and
    what to do about it."""
    from normbench.version import __version__

    upgrade = "upgrade normbench to read it, or " if found > RESULTS_FORMAT else ""
    return (
        f"{what} is in {_format_words(found)}; this normbench {__version__} reads format {RESULTS_FORMAT} only: "
        f"{upgrade}retrain it with `normbench run {exp_dir / 'config.yaml'} --out {exp_dir.parent} --force` (the "
        "config it was made with), or write new results to another folder (--out OTHER)"
    )


def _format_words(found: int) -> str:
    """'results format 0 (written by normbench 0.1.x or earlier)'."""
    written = FORMAT_WRITERS.get(found, "a newer normbench" if found > RESULTS_FORMAT else "an unknown writer")
    return f"results format {found} (written by {written})"


def check_format(exp_dir: Path) -> None:
    """FormatError when the experiment folder is of another results format (DamagedResults when its runs.parquet
    cannot be read)."""
    found = folder_format(exp_dir)
    if found != RESULTS_FORMAT:
        raise FormatError(format_problem(str(exp_dir), found, exp_dir))


def missing_columns(columns: list[str], table: str) -> list[str]:
    """The columns `table` ('runs', 'curves', ...) must have in this results format that `columns` lacks."""
    return [c for c in COLUMNS[table] if c not in columns]


def columns_problem(what: str, table: str, missing: list[str], exp_dir: Path) -> str:
    return (
        f"{what}: {table}.parquet lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)} that results "
        f"format {RESULTS_FORMAT} requires; `normbench check {exp_dir}` lists such runs, and `normbench run CONFIG "
        f"--out {exp_dir.parent} --force` retrains them"
    )


# -- a run's summary.json and files ------------------------------------------------------------------------------


def load_summary(exp_dir: Path, run_id: str) -> dict[str, Any] | None:
    """A run's summary, or None when the run has not finished (or its summary.json is unreadable or not of the
    shape this format writes: summary_problem)."""
    return read_summary(exp_dir, run_id)[0]


def read_summary(exp_dir: Path, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the run's summary, None), or (None, what is wrong with its summary.json); (None, None) when the run
    has no folder (not trained yet)."""
    folder = exp_dir / "runs" / run_id
    path = folder / "summary.json"
    try:
        s = json.loads(path.read_text())
    except FileNotFoundError:
        return None, ("summary.json missing" if folder.is_dir() else None)
    except IsADirectoryError:
        return None, "summary.json is a folder, not a file"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"summary.json cannot be read ({getattr(e, 'strerror', None) or type(e).__name__})"
    except ValueError:
        return None, "summary.json is not valid JSON"
    problem = summary_problem(s, run_id)
    return (None, problem) if problem else (s, None)


def verify_run(exp_dir: Path, run_id: str, summary: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with a committed run's files ([] when nothing): each table as summary.json's sizes and
    SHA-256 say it was written. `summary`: its summary.json when the caller has read it already."""
    if summary is not None:
        s, problem = summary, None
    else:
        s, problem = read_summary(exp_dir, run_id)
    if s is None:
        return [problem or "summary.json missing"]
    problems = []
    files = s.get("files")
    for name, expected in (files if isinstance(files, dict) else {}).items():
        path = exp_dir / "runs" / run_id / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif fingerprint(path.read_bytes()) != expected:
            problems.append(f"{name} changed or damaged since it was written")
    return problems


def fingerprint(data: bytes) -> dict[str, Any]:
    """A table's size and SHA-256, as summary.json's `files` holds them."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# -- reading results back ----------------------------------------------------------------------------------------


def is_experiment_dir(path: Path) -> bool:
    return (path / "runs.parquet").is_file()


def find_experiments(path: Path | str) -> list[Path]:
    """`path` is an experiment folder, or a results folder holding experiment folders."""
    p = Path(path)
    if is_experiment_dir(p):
        return [p]
    if not p.is_dir():
        raise NoResults(f"no such results folder: {p}")
    found = sorted(d for d in p.iterdir() if d.is_dir() and is_experiment_dir(d))
    if not found:
        raise NoResults(f"no experiment results under {p} (run `normbench run CONFIG --out {p}` first)")
    return found


def experiments_to_check(path: Path | str) -> list[Path]:
    """The experiment folders `normbench check` looks at: `path` itself when it looks like one (runs.parquet,
    config.yaml or runs/ in it), else its subfolders that do. NoResults (one line) when there are none."""
    p = Path(path)

    def looks(d: Path) -> bool:
        return any((d / n).exists() for n in ("runs.parquet", "config.yaml", "runs"))

    if p.is_dir() and looks(p):
        return [p]
    if not p.exists():
        raise NoResults(f"no such results folder: {p}")
    if not p.is_dir():
        raise NoResults(f"{p} is a file, not a results folder")
    try:
        found = sorted(d for d in p.iterdir() if d.is_dir() and looks(d))
    except OSError as e:
        raise NoResults(f"{p} cannot be read ({e.strerror or e})") from None
    if not found:
        raise NoResults(f"no experiment results under {p} (run `normbench run CONFIG --out {p}` first)")
    return found


def load_runs(exp_dir: Path) -> pd.DataFrame:
    """runs.parquet, with list-valued grid values (model.norm_noise, train.betas, ...) as tuples: parquet gives them
    back as arrays, which can be neither grouped by nor compared as one value. FormatError for a folder of another
    results format, DamagedResults for a table that cannot be read or lacks a column this format requires."""
    check_format(exp_dir)
    try:
        runs = pd.read_parquet(exp_dir / "runs.parquet")
    except (OSError, ValueError) as e:
        raise DamagedResults(
            f"{exp_dir / 'runs.parquet'} cannot be read ({type(e).__name__}); `normbench run` writes it again"
        ) from None
    missing = missing_columns(list(runs.columns), "runs")
    if missing:
        raise DamagedResults(columns_problem(str(exp_dir), "runs", missing, exp_dir))
    for col in runs.columns:
        if col not in ("dead_fraction", "saturated_fraction") and runs[col].map(is_array).any():
            runs[col] = runs[col].map(lambda v: tuple(v.tolist()) if is_array(v) else v)
    return runs


def run_folders(exp_dir: Path) -> list[str]:
    """The committed run folders of an experiment (runs/<id>/, not the temporary ones), sorted."""
    runs_dir = exp_dir / "runs"
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_summaries(exp_dir: Path) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """read_summary of every committed run folder, read once for the checks that all need them."""
    return {rid: read_summary(exp_dir, rid) for rid in run_folders(exp_dir)}


def unlisted_runs(exp_dir: Path) -> list[str]:
    """The run folders in runs/ that runs.parquet does not list (left by an earlier config of the folder or by
    another normbench version): no command shows them."""
    listed = set(load_runs(exp_dir).run_id)
    return [r for r in run_folders(exp_dir) if r not in listed]


def unlisted_note(exp_dir: Path) -> str | None:
    """One line saying how many run folders runs.parquet does not list, or None when there are none."""
    unlisted = unlisted_runs(exp_dir)
    if not unlisted:
        return None
    n = len(unlisted)
    return (
        f"{exp_dir}: {n} more run folder{'s' * (n > 1)} in runs/ {'are' if n > 1 else 'is'} not listed in "
        "runs.parquet (left by an earlier config or another normbench version) and not shown; a `normbench run` "
        "whose grid includes them lists them again"
    )


def check_experiment(exp_dir: Path) -> list[dict[str, Any]]:
    """Every run folder of an experiment: its status, whether runs.parquet lists it, and what is wrong with it ([]
    when nothing): files that changed since they were written, a table without a column this format requires, or,
    for a listed run, another results format. The folder's own format is check_format's."""
    try:
        listed = set(pd.read_parquet(exp_dir / "runs.parquet", columns=["run_id"]).run_id)
    except (OSError, ValueError, KeyError):
        listed = set()
    rows = []
    for run_id in run_folders(exp_dir):
        s = load_summary(exp_dir, run_id)
        status = s["status"] if s else "damaged"
        found = run_format(s) if s else RESULTS_FORMAT
        if found != RESULTS_FORMAT:
            problems = [f"{_format_words(found)}, not format {RESULTS_FORMAT}"] if run_id in listed else []
        elif s is None or status in FINISHED:
            problems = verify_run(exp_dir, run_id, s) + _table_columns(exp_dir / "runs" / run_id, s)
        else:
            problems = []
        rows.append(
            {"run_id": run_id, "status": status, "format": found, "listed": run_id in listed, "problems": problems}
        )
    return rows


def damaged_note(
    exp_dir: Path, summaries: dict[str, tuple[dict[str, Any] | None, str | None]] | None = None
) -> str | None:
    """One line naming the run folders of an experiment whose summary.json is damaged (missing, unreadable, of the
    wrong shape): they are shown as not finished. None when there are none. `summaries`: the run folders'
    read_summaries when the caller has them."""
    summaries = read_summaries(exp_dir) if summaries is None else summaries
    bad = [(rid, problem) for rid, (_, problem) in summaries.items() if problem]
    if not bad:
        return None
    rid, problem = bad[0]
    more = f" and {len(bad) - 1} more run folders" if len(bad) > 1 else ""
    return (
        f"{exp_dir / 'runs' / rid}: {problem}{more}; shown as not finished: `normbench check {exp_dir}` names every "
        "damaged file, and `normbench run` trains such runs again"
    )


def config_problem(exp_dir: Path) -> str | None:
    """What is wrong with an experiment's config.yaml (unreadable, not YAML, not a config of this shape), or None."""
    try:
        folder_config(exp_dir)
    except DamagedResults as e:
        return str(e)
    return None


def _table_columns(run_dir: Path, summary: dict[str, Any] | None) -> list[str]:
    """What each of a finished run's tables lacks of the columns this results format requires."""
    import pyarrow.parquet as pq

    problems = []
    files = (summary or {}).get("files")
    for name in files if isinstance(files, dict) else {}:
        table = name.removesuffix(".parquet")
        try:
            missing = missing_columns(pq.read_schema(run_dir / name).names, table) if table in COLUMNS else []
        except (OSError, ValueError):
            continue  # verify() names it
        if missing:
            problems.append(f"{name} lacks {', '.join(missing)}")
    return problems


def load_table(exp_dir: Path, name: str, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One of TABLES or OPTIONAL_TABLES, for the given runs (default: every finished run of runs.parquet),
    concatenated; a run without an optional table adds no rows."""
    if run_ids is None:
        runs = load_runs(exp_dir)
        run_ids = runs.loc[runs.status.isin(FINISHED), "run_id"].tolist()
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for rid in run_ids:
        _check_run_format(exp_dir, rid)
        path = exp_dir / "runs" / rid / f"{name}.parquet"
        if name in OPTIONAL_TABLES and not path.exists():
            continue
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise DamagedResults(
                f"run {rid} of {exp_dir.name}: {name}.parquet cannot be read ({type(e).__name__}); "
                f"`normbench check {exp_dir}` lists damaged runs, `normbench run` trains them again"
            ) from None
        missing = missing_columns(table.column_names, name)
        if missing:
            raise DamagedResults(columns_problem(f"run {rid} of {exp_dir.name}", name, missing, exp_dir))
        tables.append(table)
    tables = [t for t in tables if t.num_rows]
    # One conversion to pandas for all runs: half the time of a DataFrame per run, concatenated.
    return pa.concat_tables(tables, promote_options="default").to_pandas() if tables else pd.DataFrame()


def _check_run_format(exp_dir: Path, run_id: str) -> None:
    """FormatError when the run's summary.json says another results format (an unreadable one is left to the
    table's own read)."""
    try:
        s = json.loads((exp_dir / "runs" / run_id / "summary.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(s, dict) and run_format(s) != RESULTS_FORMAT:
        raise FormatError(format_problem(f"run {run_id} of {exp_dir}", run_format(s), exp_dir))


def experiment_axes(exp_dir: Path) -> list[str]:
    """The grid's dotted keys, read back from the resolved config: each key of a zip group is an axis of its own
    (a column of runs.parquet), then `seed` when the config has `seeds:`."""
    from normbench.config import grid_keys

    cfg = folder_config(exp_dir)
    axes = grid_keys(cfg.get("grid"))
    if cfg.get("seeds") is not None:
        axes.append("seed")
    return axes


def experiment_axis_groups(exp_dir: Path) -> list[list[str]]:
    """The axes as they vary: one list per plain axis, one per zip group (keys that change together, so a figure
    against one of them must not hold the others fixed), in grid order, `seed` last when given by `seeds:`."""
    from normbench.config import grid_keys, is_zip_key

    cfg = folder_config(exp_dir)  # its grid's keys already checked
    grid = cfg.get("grid") or {}
    groups = [grid_keys({k: v}) if is_zip_key(k) else [k] for k, v in grid.items()]
    return groups + ([["seed"]] if cfg.get("seeds") is not None else [])


def folder_config(exp_dir: Path) -> dict[str, Any]:
    """An experiment folder's config.yaml as a dict (its grid a dict, its keys checked by grid_keys), read within
    normbench.safe's limits; DamagedResults naming the file when it is missing, unreadable, refused (an alias
    bomb), not YAML, or not a mapping."""
    from normbench.config import grid_keys

    path = exp_dir / "config.yaml"
    try:
        cfg = load_yaml(path.read_text())
    except FileNotFoundError:
        raise DamagedResults(_config_damaged(exp_dir, "it is missing")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedResults(
            _config_damaged(exp_dir, f"it cannot be read ({getattr(e, 'strerror', None) or e})")
        ) from None
    except YAMLLimit as e:
        raise DamagedResults(_config_damaged(exp_dir, f"it cannot be read (YAMLLimit: {short(str(e), 120)})")) from None
    except yaml.YAMLError:
        raise DamagedResults(_config_damaged(exp_dir, "it is not valid YAML")) from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("grid") or {}, dict):
        raise DamagedResults(_config_damaged(exp_dir, "it is not an experiment config"))
    try:
        grid_keys(cfg.get("grid"))
    except Exception:
        raise DamagedResults(_config_damaged(exp_dir, "its grid is not one normbench writes")) from None
    return cfg


def _config_damaged(exp_dir: Path, why: str) -> str:
    return (
        f"{exp_dir / 'config.yaml'} is damaged: {why}; `normbench check {exp_dir}` lists what else is, and running "
        "the experiment's config again with `normbench run CONFIG` writes it anew"
    )


def default_compare(axes: list[str]) -> str | None:
    """The grid key figures compare side by side unless told otherwise: model.norm where the grid varies it, else
    the first grid key."""
    return "model.norm" if "model.norm" in axes else (axes[0] if axes else None)


def tied_with(groups: list[list[str]], key: str | None) -> list[str]:
    """`key` and the keys zipped with it (groups: experiment_axis_groups)."""
    return next((g for g in groups if key in g), [key] if key else [])


def group_keys(axes: list[str], groups: list[list[str]], compare: str | None) -> list[str]:
    """The grid keys whose values split the runs into figure groups: all but the compared one (with the keys
    zipped with it, which vary along) and seed."""
    held = [*tied_with(groups, compare), "seed"]
    return [a for a in axes if a not in held]


# -- selecting runs: --where KEY=VALUE ------------------------------------------------------------------------------


class SelectionError(UserError):
    """A --where that is malformed, names no grid key (or several), or matches no run; one line for the user."""


def resolve_axis(key: str, axes: list[str], option: str, experiment: str) -> str:
    """A grid key by its dotted name or an unambiguous dotted tail: 'norm' -> 'model.norm', 'weight_init.std' ->
    'model.weight_init.std'."""
    found = [key] if key in axes else [a for a in axes if a.endswith("." + key)]
    if len(found) == 1:
        return found[0]
    what = "matches several grid keys" if found else "is not a grid key"
    valid = ", ".join(found or axes) or "none (the experiment has no grid)"
    raise SelectionError(f"{option} {quoted(key)} {what} of {experiment}; grid keys: {valid}")


def parse_where(items: list[str] | tuple[str, ...]) -> list[tuple[str, Any, str]]:
    """`model.norm=batch` -> ('model.norm', 'batch', the item as typed); the value is read as YAML (numbers,
    booleans, a list meaning any of its values)."""
    parsed = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise SelectionError(f"--where {quoted(item)}: expected KEY=VALUE, e.g. --where model.norm=batch")
        try:
            value = load_yaml(text)
        except yaml.YAMLError:
            raise SelectionError(f"--where {quoted(item)}: the value is not valid YAML") from None
        parsed.append((key, value, item))
    return parsed


def select_runs(
    runs: pd.DataFrame, where: list[str] | tuple[str, ...], axes: list[str], experiment: str = ""
) -> pd.DataFrame:
    """The rows of runs.parquet whose grid values match every `KEY=VALUE` of `where` (`normbench summary`, `plot`,
    `report --where`). KEY: a grid key, or an unambiguous last part of one (`norm`); VALUE is read as YAML, and a
    list, or the same KEY given again, matches any of its values (for a key whose values are lists, a list is one
    value and a list of lists any of them); numbers match at 1e-9 relative, so `1e-2` (which
    YAML reads as text) finds 0.01. SelectionError for an unknown key (naming the valid ones) or no match."""
    experiment = experiment or "the experiment"
    wanted: dict[str, list[Any]] = {}
    typed: dict[str, list[str]] = {}
    for key, value, item in parse_where(where):
        axis = resolve_axis(key, [a for a in axes if a in runs.columns], "--where", experiment)
        listed = runs[axis].map(lambda c: isinstance(c, tuple)).any()  # load_runs gives list values as tuples
        if listed and isinstance(value, list) and not any(isinstance(v, list) for v in value):
            value = [value]  # a list-valued key (norm_noise=[1, 3]): the list is one value
        wanted.setdefault(axis, []).extend(value if isinstance(value, list) else [value])
        typed.setdefault(axis, []).append(item)
    keep = pd.Series(True, index=runs.index)
    for axis, values in wanted.items():
        values = [registered_name(axis, v, runs[axis]) for v in values]
        match = runs[axis].map(lambda cell, values=values: any(same_value(cell, v) for v in values))
        if not match.any():
            have = ", ".join(dict.fromkeys(value_text(v) for v in runs[axis])) or "none"
            given = " ".join(f"--where {t}" for t in typed[axis])
            raise SelectionError(f"{given} matches no run of {experiment} ({axis} values: {have})")
        keep &= match.astype(bool)
    if not keep.any():
        given = " ".join(f"--where {w}" for w in where)
        raise SelectionError(f"no run of {experiment} matches all of {given}")
    return runs[keep]


# The grid keys whose values are registered names, which a config may spell in several ways (`bn` for `batch`).
NAMED_AXES = {
    "model.norm": NORMS,
    "model.activation": ACTIVATIONS,
    "model.name": MODELS,
    "model.weight_init.name": INITS,
    "train.optimizer": OPTIMIZERS,
    "data.name": DATASETS,
}


def registered_name(axis: str, value: Any, cells: pd.Series) -> Any:
    """`value` as runs.parquet stores it: on a grid key of registered names, a spelling the config accepts (`bn`,
    `BatchNorm`) becomes the registered name (`batch`). The registry (which imports its provider, torch for the
    norms) is asked only when the value as written matches no run."""
    registry = NAMED_AXES.get(axis)
    if registry is None or not isinstance(value, str) or any(same_value(c, value) for c in cells):
        return value
    try:
        return registry.canonical(value)
    except UnknownName:
        return value


def same_value(cell: Any, want: Any) -> bool:
    """Whether a grid value (from runs.parquet or a config) equals a value a user wrote (--where, a claim's where)."""
    if hasattr(cell, "tolist"):  # numpy scalars and the arrays parquet gives list values back as
        cell = cell.tolist()
    if isinstance(cell, tuple):  # a list value as load_runs gives it
        cell = list(cell)
    if isinstance(cell, list) or isinstance(want, list):
        return (
            isinstance(cell, list)
            and isinstance(want, list)
            and len(cell) == len(want)
            and all(same_value(c, w) for c, w in zip(cell, want, strict=True))
        )
    if isinstance(cell, bool) or isinstance(want, bool):
        return cell is want or (isinstance(want, str) and str(cell).lower() == want.lower())
    if isinstance(cell, int | float):
        try:
            w = float(want)
        except (TypeError, ValueError):
            return False
        return math.isclose(float(cell), w, rel_tol=1e-9, abs_tol=0.0)
    return str(cell) == str(want)

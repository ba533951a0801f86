"""The results folder: atomic writes, one self-explaining folder per run, one table per experiment.

    OUT/<name>/config.yaml            the resolved experiment config (after --set)
    OUT/<name>/runs.parquet           one row per run of the current grid (docs/results-format.md)
    OUT/<name>/runs/<run_id>/         config.yaml, summary.json, curves/layers/histograms.parquet
                                      (and landscape.parquet when record.landscape_every is set,
                                      time.parquet for a sequence model with record.time)
    OUT/<name>/figures/               written by `normbench plot`

A run folder is built under a temporary name and renamed into place whole, so a run is either finished or
absent: a killed sweep never leaves a half-written run, and the next `normbench run` does only what is missing.
Every file is written to a temporary file and renamed over its target (os.replace is atomic on POSIX).

Every run (summary.json) and every experiment folder (runs.parquet's schema metadata) says which results format
(RESULTS_FORMAT) wrote it; results of another format are one line naming it, never read as if they were this one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from normbench.errors import UserError
from normbench.finals import CURVE_FINALS, from_tables
from normbench.labels import value_text
from normbench.points import TIME_COLUMNS
from normbench.registry import ACTIVATIONS, DATASETS, INITS, MODELS, NORMS, OPTIMIZERS, UnknownName
from normbench.safe import YAMLLimit, load_yaml, quoted, short

if TYPE_CHECKING:
    from normbench.config import Experiment, Run
    from normbench.engine.driver import RunFailure, RunResult

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


def _tmp(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary name beside `path` a write goes to: .NAME.tmp-PID (.NAME.tmp-PID.SUFFIX with keep_suffix, for
    writers that take the format from the suffix, as matplotlib does)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix if keep_suffix else ''}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    write_file_atomic(path, write)


def write_file_atomic(path: Path, write: Any, *, keep_suffix: bool = False) -> None:
    """`write(tmp)` writes the file to a temporary name beside `path` (_tmp), which is then renamed over it: a
    reader never sees a partial file (a figure cut by a full disk), and on any failure (disk full, Ctrl-C) the
    temporary file is removed and the target is as it was. A `write` that writes nothing replaces nothing."""
    tmp = _tmp(path, keep_suffix)
    remove_stale_temps(path.parent, path.name)
    try:
        write(tmp)
        if tmp.exists():
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: Path, name: str = "*") -> None:
    """Remove the temporary files `.<name>.tmp-<pid>` (of one target, or all) in `folder` whose writer is gone (a
    process killed while writing)."""
    import glob

    try:
        stale = list(folder.glob(f".{glob.escape(name) if name != '*' else '*'}.tmp-*"))
    except OSError:
        return
    for path in stale:
        pid = re.search(r"\.tmp-(\d+)(\.\w+)?$", path.name)  # .NAME.tmp-PID, or .NAME.tmp-PID.png (figures)
        if pid and path.is_file() and not _pid_alive(pid.group(1)):
            with contextlib.suppress(OSError):
                path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_parquet_atomic(df: pd.DataFrame, path: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    """`df` to `path`, with `metadata` added to the file's schema metadata."""

    def write(tmp: Path) -> None:
        if metadata:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata}), tmp)
        else:
            df.to_parquet(tmp, index=False)

    write_file_atomic(path, write)


def format_metadata() -> dict[bytes, bytes]:
    """runs.parquet's schema metadata: the results format, and the normbench that wrote it."""
    from normbench.version import __version__

    return {FORMAT_META: str(RESULTS_FORMAT).encode(), b"normbench.version": __version__.encode()}


def jsonable(obj: Any) -> Any:
    """NaN and inf are not JSON: they become null (a diverged run's loss is reported by its status instead)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if _is_array(obj):  # a numpy array (a list read back from parquet)
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):  # numpy / torch scalars
        return jsonable(obj.item())
    return obj


def to_json(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"


def environment() -> dict[str, str]:
    import torch  # here, not at the top: reading results (summary, plot, report) needs no torch

    from normbench.version import __version__

    return {
        "normbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class ExperimentStore:
    def __init__(self, out: Path | str, name: str):
        self.dir = Path(out) / name
        self.runs_dir = self.dir / "runs"

    # -- reading ---------------------------------------------------------------------------------------------

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """A run's summary, or None when the run has not finished (or its summary.json is unreadable or not of
        the shape this format writes: summary_problem)."""
        return self.read_summary(run_id)[0]

    def read_summary(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the run's summary, None), or (None, what is wrong with its summary.json); (None, None) when the run
        has no folder (not trained yet)."""
        folder = self.runs_dir / run_id
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

    def is_done(self, run_id: str, retry_failed: bool = False, summary: dict[str, Any] | None = None) -> bool:
        """Whether `run_id` needs no training: finished with its files intact, or failed (unless retry_failed).
        `summary`: its summary.json when the caller has read it already."""
        s = summary if summary is not None else self.summary(run_id)
        if s is None or run_format(s) != RESULTS_FORMAT:  # another format's run is trained again
            return False
        if s["status"] in FINISHED:
            return not self.verify(run_id, s)
        return s["status"] == "failed" and not retry_failed

    def verify(self, run_id: str, summary: dict[str, Any] | None = None) -> list[str]:
        """What is wrong with a committed run's files ([] when nothing): each table as summary.json's sizes and
        SHA-256 say it was written."""
        if summary is not None:
            s, problem = summary, None
        else:
            s, problem = self.read_summary(run_id)
        if s is None:
            return [problem or "summary.json missing"]
        problems = []
        files = s.get("files")
        for name, expected in (files if isinstance(files, dict) else {}).items():
            path = self.runs_dir / run_id / name
            if not path.is_file():
                problems.append(f"{name} missing")
            elif _fingerprint(path.read_bytes()) != expected:
                problems.append(f"{name} changed or damaged since it was written")
        return problems

    # -- claims: two `normbench run` on one folder never train the same run ------------------------------------

    def claim(self, run_id: str) -> bool:
        """Take run `run_id` for this process: an atomically created runs/.claim-<id> holding pid and host. A claim
        whose process is gone (on this host) is taken over; a live one, or one from another host, is respected."""
        path = self.runs_dir / f".claim-{run_id}"
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _stale_claim(path):  # its process was killed, or it was released meanwhile
                    path.unlink(missing_ok=True)
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return True
        return False

    def release(self, run_id: str) -> None:
        path = self.runs_dir / f".claim-{run_id}"
        try:
            if path.read_text().partition(" ")[0] == str(os.getpid()):
                path.unlink()
        except OSError:
            pass

    # -- writing ---------------------------------------------------------------------------------------------

    def prepare(self, exp: Experiment, keep_config: bool = False) -> None:
        """Make the folder ready for `exp`'s runs: stale temporary folders and claims removed, config.yaml written
        (unless keep_config: a grid within the folder's leaves the folder's config as it is)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.dir)
        for claim in self.runs_dir.glob(".claim-*"):
            if _stale_claim(claim):
                claim.unlink(missing_ok=True)
        if not keep_config:
            text = f"# resolved from {self._source(exp)}\n" + yaml.safe_dump(config_dict(exp), sort_keys=False)
            write_text_atomic(self.dir / "config.yaml", text)

    def _source(self, exp: Experiment) -> str:
        """Where exp's config came from; for the folder's own config.yaml (retrained with --force), the source it
        names."""
        path = self.dir / "config.yaml"
        try:
            if Path(exp.source).resolve() == path.resolve():
                first = path.read_text().partition("\n")[0]
                return first.removeprefix("# resolved from ") if first.startswith("# resolved from ") else exp.source
        except OSError:
            pass
        return exp.source

    def write_run(self, run: Run, outcome: RunResult | RunFailure) -> dict[str, Any]:
        """Commit one run: a finished one (a RunResult) or a failed one (a RunFailure). Returns its summary."""
        tmp = self.runs_dir / f".tmp-{run.run_id}-{os.getpid()}"
        try:
            return self._write_run(run, outcome, tmp)
        except BaseException:  # disk full, Ctrl-C: the run stays as it was (absent, or its earlier folder)
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_run(self, run: Run, outcome: RunResult | RunFailure, tmp: Path) -> dict[str, Any]:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "config.yaml").write_text(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
        summary = {"run_id": run.run_id, "params": run.params, "seed": run.config.seed, FORMAT_KEY: RESULTS_FORMAT}
        from normbench.engine.driver import RunFailure

        if isinstance(outcome, RunFailure):
            summary |= {"status": "failed", "error": outcome.error, "traceback": outcome.traceback}
        else:
            # What verify() checks: a finished run counts as finished only while its files are these.
            summary["files"] = {}
            for name in TABLES + tuple(t for t in OPTIONAL_TABLES if t in outcome.tables):
                df = outcome.tables.get(name, pd.DataFrame()).copy()
                df.insert(0, "run_id", run.run_id)
                data = df.to_parquet(index=False)
                (tmp / f"{name}.parquet").write_bytes(data)
                summary["files"][f"{name}.parquet"] = _fingerprint(data)
            summary |= run_summary(outcome)
        summary |= {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(),
        }
        text = to_json(summary)
        (tmp / "summary.json").write_text(text)
        replace_dir(tmp, self.runs_dir / run.run_id)
        # As summary.json holds it (an infinite loss as null): runs.parquet written from it during the sweep is the
        # table rebuilt from the run folders, which `check` and the commands that read results compare it with.
        return json.loads(text)

    def write_runs_table(
        self,
        exp: Experiment,
        known: dict[str, dict | None] | None = None,
        listed: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> pd.DataFrame:
        """runs.parquet: one row per run of the experiment's current grid, finished or not. `known`: the runs'
        summaries when the caller has them (None: not finished), instead of reading every summary.json again.
        `listed`: the runs to list as (run id, grid values) when not exp's (a grid within the folder's keeps the
        folder's). A run of another results format is listed `missing`: `normbench run` trains it again."""
        df = self.runs_frame(exp, known, listed)
        write_parquet_atomic(df, self.dir / "runs.parquet", format_metadata())
        return df

    def runs_frame(
        self,
        exp: Experiment | None,
        known: dict[str, dict | None] | None = None,
        listed: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> pd.DataFrame:
        """runs.parquet's rows as write_runs_table writes them (exp may be None when `listed` is given)."""
        rows = []
        if listed is None:
            listed = [(r.run_id, r.params) for r in exp.runs]  # type: ignore[union-attr]
        for run_id, params in listed:
            s = known[run_id] if known is not None else self.summary(run_id)
            if s is None or run_format(s) != RESULTS_FORMAT:
                s = {"status": "missing"}
            rows.append(
                {
                    "run_id": run_id,
                    **params,
                    "status": s["status"],
                    "diverged_step": s.get("diverged_step"),
                    "steps_done": s.get("steps_done"),
                    **{k: _as_float(s.get(k)) for k in CURVE_FINALS},
                    "last_finite_train_loss": _as_float(s.get("last_finite_train_loss")),
                    "wall_time_s": _as_float(s.get("wall_time_s")),
                    "dead_fraction": [_as_float(v) for v in s.get("dead_fraction", [])],
                    "saturated_fraction": [_as_float(v) for v in s.get("saturated_fraction", [])],
                    "error": s.get("error"),
                    **{f"engine.{k}": (s.get("engine") or {}).get(k) for k in ENGINE},
                }
            )
        df = pd.DataFrame(rows)
        df["diverged_step"] = df["diverged_step"].astype("Int64")
        df["steps_done"] = df["steps_done"].astype("Int64")
        for col in ("engine.threads", "engine.stack"):
            df[col] = df[col].astype("Int64")
        df["engine.compiled"] = df["engine.compiled"].astype("boolean")
        return df

    # -- what a config does to the folder's runs -------------------------------------------------------------

    def change(self, exp: Experiment, force: bool = False) -> FolderChange:
        """What writing `exp` into this folder does to the runs it lists (its runs.parquet; its config.yaml's grid
        when that table cannot be read), compared as sets of run ids: nothing there yet ('new'), the same runs
        ('same'), more runs ('extends': exp becomes the folder's config), fewer ('within': the folder's config and
        list stay), or a grid that would no longer list some of them ('refused'). A folder of another results
        format is 'refused' too, or with `force` 'retrain': every run of exp is trained again and the folder starts
        over from exp. Reads only."""
        if not (self.dir / "runs.parquet").is_file() and not (self.dir / "config.yaml").is_file():
            return FolderChange("new", f"{self.dir}: a new experiment folder")
        new_ids = [r.run_id for r in exp.runs]
        found = self._format_or_current()
        if found != RESULTS_FORMAT:
            if not force:
                return FolderChange("refused", format_problem(str(self.dir), found, self.dir))
            gone = len(set(self._listed_ids(quiet=True)) - set(new_ids))
            left = f"; {gone} runs of its earlier grid are not in this one: they stay in runs/, unlisted" * bool(gone)
            return FolderChange(
                "retrain",
                f"{self.dir}: results format {found} -> {RESULTS_FORMAT} (--force): every run of the grid is trained "
                f"again and the folder's config.yaml and runs.parquet are this config's{left}",
            )
        old_ids = self._listed_ids()
        old, new = set(old_ids), set(new_ids)
        diff = config_changes(self.dir / "config.yaml", config_dict(exp))
        diff = f" ({diff})" if diff else ""
        if old == new:
            return FolderChange("same", f"{self.dir}: the same {len(new)} runs as the folder lists")
        if old <= new:
            kept = sum((self.summary(r) or {}).get("status") in FINISHED for r in old)
            return FolderChange(
                "extends",
                f"{self.dir}: extends its grid from {len(old)} to {len(new)} runs{diff}; "
                f"its {kept} finished runs are kept",
            )
        if new <= old:
            return FolderChange(
                "within",
                f"{self.dir}: the {len(new)} runs asked for are within its grid of {len(old)}{diff}; its config.yaml "
                f"is kept and runs.parquet lists all {len(old)}",
                self._listed_rows(),
            )
        return FolderChange(
            "refused",
            f"{self.dir}: this config would no longer list {len(old - new)} of the folder's {len(old)} runs{diff}; "
            f"nothing was written. Run it into a folder of its own (--set name=NEW or --out OTHER), or remove "
            f"{self.dir} to start over",
        )

    def _format_or_current(self) -> int:
        """The folder's results format; the current one when runs.parquet is missing or unreadable (its runs are
        then known from config.yaml, and each run's own format decides whether it is trained again)."""
        try:
            return folder_format(self.dir)
        except (OSError, DamagedResults):
            return RESULTS_FORMAT

    def _listed_ids(self, quiet: bool = False) -> list[str]:
        """The run ids runs.parquet lists; config.yaml's grid when runs.parquet cannot be read. ConfigError when
        neither can (quiet: [])."""
        from normbench.config import ConfigError, experiment_from_dict

        try:
            return pd.read_parquet(self.dir / "runs.parquet", columns=["run_id"]).run_id.tolist()
        except (OSError, ValueError, KeyError):
            pass
        try:
            raw = load_yaml((self.dir / "config.yaml").read_text())
            return [r.run_id for r in experiment_from_dict(raw, str(self.dir / "config.yaml")).runs]
        except (OSError, ValueError, AttributeError):  # ConfigError and yaml's errors are ValueErrors
            if quiet:
                return []
            raise ConfigError(
                f"{self.dir}: neither runs.parquet nor config.yaml can be read, so which runs it holds is unknown; "
                "remove the folder to start over, or write to another one (--set name=NEW or --out OTHER)"
            ) from None

    def _listed_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(run id, grid values) of each run runs.parquet lists, to list them again."""
        runs = load_runs(self.dir)
        axes = [a for a in experiment_axes(self.dir) if a in runs.columns]
        return [(row["run_id"], {a: _plain(row[a]) for a in axes}) for row in runs.to_dict("records")]


@dataclass
class FolderChange:
    """What writing an experiment into its folder does (ExperimentStore.change): `case` is 'new', 'same',
    'extends', 'within', 'retrain' or 'refused'; `message` the one line that says so;
    `listed`: for 'within', the folder's runs, which runs.parquet goes on listing."""

    case: str
    message: str = ""
    listed: list[tuple[str, dict[str, Any]]] | None = field(default=None, repr=False)


def config_dict(exp: Experiment) -> dict[str, Any]:
    """The resolved experiment config as config.yaml holds it."""
    return exp.config.model_dump(mode="json")


def config_changes(old_path: Path, new: dict[str, Any], limit: int = 3) -> str:
    """The keys whose values differ between the config in `old_path` (a folder's config.yaml) and `new`, as
    'train.lr 0.001 -> 0.01; seeds [1, 2, 3] -> [1..20]': at most `limit`, values shortened; '' when the old one
    cannot be read or nothing but the description differs."""
    try:
        old = load_yaml(old_path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(old, dict):
        return ""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if k != "description" and a.get(k, _ABSENT) != b.get(k, _ABSENT)]
    shown = [f"{k} {_short(a.get(k, _ABSENT))} -> {_short(b.get(k, _ABSENT))}" for k in keys[:limit]]
    more = f"; {len(keys) - limit} more keys" if len(keys) > limit else ""
    return "; ".join(shown) + more


_ABSENT = object()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}, 'grid': {'model.norm': [...]}} -> {'train.lr': 0.1, 'grid.model.norm': [...]}."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if k == "grid" and not prefix and v is None:
            v = {}
        if isinstance(v, dict):
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _short(v: Any, width: int = 40) -> str:
    """A config value in a message: absent, a run of consecutive integers as [1..20], long values cut."""
    if v is _ABSENT:
        return "(none)"
    if isinstance(v, list) and len(v) > 3 and all(type(x) is int for x in v) and v == list(range(v[0], v[-1] + 1)):
        return f"[{v[0]}..{v[-1]}]"
    text = json.dumps(v, separators=(", ", ": ")) if isinstance(v, list | dict) else str(v)
    text = text.replace('"', "")
    if len(text) > width:
        count = f" ({len(v)} values)" if isinstance(v, list) else ""
        text = text[: width - len(count) - 3] + "..." + count
    return text


def _plain(v: Any) -> Any:
    """A value read back from parquet as a config holds it: tuples and arrays as lists, numpy scalars as Python's."""
    if isinstance(v, tuple) or _is_array(v):
        return [_plain(x) for x in v]
    return v.item() if hasattr(v, "item") else v


def run_summary(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "diverged_step": result.diverged_step,
        "steps_done": result.steps_done,
        **from_tables(result.tables["curves"], result.tables["layers"]),
        "wall_time_s": result.wall_time_s,
        "engine": result.provenance,
    }


def _fingerprint(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


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


def _columns_problem(what: str, table: str, missing: list[str], exp_dir: Path) -> str:
    return (
        f"{what}: {table}.parquet lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)} that results "
        f"format {RESULTS_FORMAT} requires; `normbench check {exp_dir}` lists such runs, and `normbench run CONFIG "
        f"--out {exp_dir.parent} --force` retrains them"
    )


def _as_float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def remove_stale(folder: Path, name: str = "") -> None:
    """Remove the .tmp-/.old- folders (of `name`, or all) that a killed process left in `folder`: those whose
    writer's pid, the last part of their name, is gone."""
    prefix = f"{name}-" if name else ""
    for stale in [*folder.glob(f".tmp-{prefix}*"), *folder.glob(f".old-{prefix}*")]:
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)


def remove_leftovers(exp_dir: Path) -> None:
    """What killed processes left in an experiment folder: temporary files (.runs.parquet.tmp-PID, .report.html.tmp-
    PID, a figure's) beside it, in it and in figures/, and temporary run folders in runs/."""
    for folder in (exp_dir.parent, exp_dir, exp_dir / "figures"):
        remove_stale_temps(folder)
    if (exp_dir / "runs").is_dir():
        remove_stale(exp_dir / "runs")


def replace_dir(src: Path, dst: Path) -> None:
    """Put the folder `src` in place of `dst` by renames: a reader sees the old folder or the new one, whole."""
    if dst.exists():
        old = dst.with_name(f".old-{dst.name}-{os.getpid()}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


def _stale_claim(path: Path) -> bool:
    """Whether a claim file is gone, or held by a process of this host that no longer exists."""
    try:
        pid, _, host = path.read_text().partition(" ")
    except OSError:
        return True
    return host.strip() == socket.gethostname() and not _pid_alive(pid)


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


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
        raise DamagedResults(_columns_problem(str(exp_dir), "runs", missing, exp_dir))
    for col in runs.columns:
        if col not in ("dead_fraction", "saturated_fraction") and runs[col].map(_is_array).any():
            runs[col] = runs[col].map(lambda v: tuple(v.tolist()) if _is_array(v) else v)
    return runs


def _is_array(v: Any) -> bool:
    return getattr(v, "ndim", 0) > 0


def run_folders(exp_dir: Path) -> list[str]:
    """The committed run folders of an experiment (runs/<id>/, not the temporary ones), sorted."""
    runs_dir = exp_dir / "runs"
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_summaries(exp_dir: Path) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """ExperimentStore.read_summary of every committed run folder, read once for the checks that all need them."""
    store = ExperimentStore(exp_dir.parent, exp_dir.name)
    return {rid: store.read_summary(rid) for rid in run_folders(exp_dir)}


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
    store = ExperimentStore(exp_dir.parent, exp_dir.name)
    try:
        listed = set(pd.read_parquet(exp_dir / "runs.parquet", columns=["run_id"]).run_id)
    except (OSError, ValueError, KeyError):
        listed = set()
    rows = []
    for run_id in run_folders(exp_dir):
        s = store.summary(run_id)
        status = s["status"] if s else "damaged"
        found = run_format(s) if s else RESULTS_FORMAT
        if found != RESULTS_FORMAT:
            problems = [f"{_format_words(found)}, not format {RESULTS_FORMAT}"] if run_id in listed else []
        elif s is None or status in FINISHED:
            problems = store.verify(run_id, s) + _table_columns(store.runs_dir / run_id, s)
        else:
            problems = []
        rows.append(
            {"run_id": run_id, "status": status, "format": found, "listed": run_id in listed, "problems": problems}
        )
    return rows


def rebuilt_runs_table(
    exp_dir: Path, summaries: dict[str, tuple[dict[str, Any] | None, str | None]] | None = None
) -> tuple[pd.DataFrame, bool]:
    """runs.parquet as the run folders say it should be (the same runs and grid values, every other column from
    the runs' summary.json), and whether the file on disk differs from it. runs.parquet is derived: an edited
    value, a row of a run whose folder changed since, must never be shown as a result. DamagedResults when
    runs.parquet cannot be read at all."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = exp_dir / "runs.parquet"
    try:
        on_disk = pq.read_table(path)
        runs = on_disk.to_pandas()
    except (OSError, ValueError) as e:
        raise DamagedResults(f"{path} cannot be read ({type(e).__name__}); `normbench run` writes it again") from None
    missing = missing_columns(list(runs.columns), "runs")
    if missing:
        raise DamagedResults(_columns_problem(str(exp_dir), "runs", missing, exp_dir))
    store = ExperimentStore(exp_dir.parent, exp_dir.name)
    axes = [c for c in runs.columns if c not in COLUMNS["runs"]]
    listed, known = [], {}
    if summaries is None:
        summaries = read_summaries(exp_dir)
    for row in runs.to_dict("records"):
        rid = str(row["run_id"])
        s = summaries.get(rid, (None, None))[0]
        params = {a: _plain(row[a]) for a in axes}
        if s is not None and run_format(s) != RESULTS_FORMAT:
            # a run of another results format is named by its own message (check, load_table), never rebuilt away
            return runs, False
        if s is not None:
            params |= {k: v for k, v in s["params"].items() if k in params}
        listed.append((rid, params))
        known[rid] = s
    rebuilt = store.runs_frame(None, known, listed) if listed else runs

    def written(table: pa.Table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(None), buf)
        return buf.getvalue()

    try:  # compared as parquet writes them, read back (list columns are named as a file names them)
        expected = pq.read_table(io.BytesIO(written(pa.Table.from_pandas(rebuilt, preserve_index=False))))
        differs = written(on_disk) != written(expected)
    except (pa.ArrowException, ValueError, TypeError):
        differs = True
    return rebuilt, differs


def repair_runs_table(
    exp_dir: Path, summaries: dict[str, tuple[dict[str, Any] | None, str | None]] | None = None
) -> str | None:
    """Rebuild runs.parquet from the run folders when it disagrees with them; one line saying so, or None when
    it agrees. DamagedResults when it disagrees and cannot be rewritten, or cannot be read. `summaries`: the run
    folders' read_summaries when the caller has them."""
    rebuilt, differs = rebuilt_runs_table(exp_dir, summaries)
    if not differs:
        return None
    path = exp_dir / "runs.parquet"
    try:
        write_parquet_atomic(rebuilt, path, format_metadata())
    except OSError as e:
        raise DamagedResults(
            f"{path} disagrees with the run folders' summary.json and cannot be rebuilt ({e.strerror or e}); "
            f"`normbench check {exp_dir}` names what differs"
        ) from None
    return f"{path} disagreed with the run folders' summary.json (edited or damaged); rebuilt from them"


def damaged_note(
    exp_dir: Path, summaries: dict[str, tuple[dict[str, Any] | None, str | None]] | None = None
) -> str | None:
    """One line naming the run folders of an experiment whose summary.json is damaged (missing, unreadable, of the
    wrong shape): they are shown as not finished. None when there are none. `summaries`: the run folders'
    read_summaries when the caller has them."""
    store = ExperimentStore(exp_dir.parent, exp_dir.name)
    summaries = read_summaries(exp_dir) if summaries is None else summaries
    bad = [(rid, problem) for rid, (_, problem) in summaries.items() if problem]
    if not bad:
        return None
    rid, problem = bad[0]
    more = f" and {len(bad) - 1} more run folders" if len(bad) > 1 else ""
    return (
        f"{store.runs_dir / rid}: {problem}{more}; shown as not finished: `normbench check {exp_dir}` names every "
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
            raise DamagedResults(_columns_problem(f"run {rid} of {exp_dir.name}", name, missing, exp_dir))
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
